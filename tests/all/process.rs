//! Running the `weft` binary as a child process, with a timeout, killed by
//! its handle when the test is done with it (even on panic).

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The output of a finished `weft` process.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A child process that is killed when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `weft ARGS...`, with a private module cache in `cache`.
pub fn weft(args: &[&str], cache: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft-under-test"));
    cmd.args(args).env("WEFT_CACHE_DIR", cache).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// Runs `cmd` to completion with stdout and stderr captured; panics (after
/// killing it) if it takes longer than `limit`.
pub fn run(mut cmd: Command, limit: Duration) -> Finished {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = KillOnDrop(cmd.spawn().expect("weft starts"));
    let mut out = child.0.stdout.take().expect("piped");
    let mut err = child.0.stderr.take().expect("piped");
    let readers = (
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        }),
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        }),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait works") {
            break status;
        }
        assert!(start.elapsed() < limit, "weft did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished { status, stdout: readers.0.join().unwrap(), stderr: readers.1.join().unwrap() }
}

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weft-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `n` loopback ports that were free a moment ago (bound, then released).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// `n` hosts taking experiments (`weft serve --listen`, open experiments,
/// peers on loopback allowed), each started and serving within `limit`:
/// their addresses, and their processes.
pub fn open_hosts(n: usize, cache: &Path, limit: Duration) -> (Vec<String>, Vec<Spawned>) {
    let hosts: Vec<String> = free_ports(n).iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut servers: Vec<Spawned> = hosts
        .iter()
        .map(|h| {
            Spawned::start(weft(&["serve", "--listen", h, "--open-experiments", "--allow-peers", "127.0.0.1"], cache))
        })
        .collect();
    for s in &mut servers {
        s.expect(Stream::Err, "serving experiments on", limit);
    }
    (hosts, servers)
}

/// Which stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

/// A running `weft` process whose output is read line by line as it comes.
pub struct Spawned {
    pub child: KillOnDrop,
    lines: std::sync::mpsc::Receiver<(Stream, String)>,
    pub seen: Vec<(Stream, String)>,
}

impl Spawned {
    pub fn start(mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("weft starts");
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for (stream, pipe) in [(Stream::Out, Box::new(out) as Box<dyn Read + Send>), (Stream::Err, Box::new(err))] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((stream, line)).is_err() {
                        break;
                    }
                }
            });
        }
        Spawned { child: KillOnDrop(child), lines: rx, seen: Vec::new() }
    }

    /// Reads lines until one on `stream` contains `needle`; panics after `limit`.
    pub fn expect(&mut self, stream: Stream, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((s, line)) => {
                    self.seen.push((s, line.clone()));
                    if s == stream && line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no {stream:?} line with {needle:?} within {limit:?}; saw {:#?}", self.seen),
            }
        }
    }

    /// Waits for the process to exit; panics (killing it) after `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.0.try_wait().expect("wait works") {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return status;
            }
            assert!(start.elapsed() < limit, "process did not exit within {limit:?}; saw {:#?}", self.seen);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// All lines seen so far on `stream`.
    pub fn lines(&self, stream: Stream) -> Vec<&str> {
        self.seen.iter().filter(|(s, _)| *s == stream).map(|(_, l)| l.as_str()).collect()
    }
}
