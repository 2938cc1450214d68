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
