//! Programs an experiment started on a host: their state, their output
//! (kept up to a cap, and followed live), and how to stop them.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::cluster::TaskId;
use crate::exec::ComputeMeter;
use crate::runtime::{ExitStatus, StreamKind};

/// Where a program is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgramState {
    /// Its module is being compiled (or loaded from the cache).
    Compiling,
    /// It is running.
    Running,
    /// It ended: how.
    Exited(ExitStatus),
    /// It never ran: the error's code and message (e.g. instantiation failed).
    Failed(crate::error::Code, String),
    /// `weft kill` (or deleting its experiment) stopped it.
    Killed,
}

impl ProgramState {
    /// Whether it has ended.
    pub fn is_final(&self) -> bool {
        !matches!(self, ProgramState::Compiling | ProgramState::Running)
    }
}

/// A program's kept output: runs of one stream each, consecutive writes
/// to a stream sharing a run, so many small writes cost one entry.
#[derive(Debug, Default)]
struct Log {
    chunks: Vec<(StreamKind, Vec<u8>)>,
    bytes: usize,
    dropped: usize,
}

/// Bytes one run of output holds at most.
const LOG_RUN_BYTES: usize = 64 << 10;
/// Runs one program's log keeps at most (a program alternating between
/// stdout and stderr a byte at a time makes one per byte).
pub const MAX_LOG_RUNS: usize = 4096;

/// How far a reader of a log has got: a run, and a byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogCursor {
    run: usize,
    offset: usize,
}

impl Log {
    fn append(&mut self, stream: StreamKind, bytes: &[u8], cap: usize) {
        let room = cap.saturating_sub(self.bytes);
        let mut rest = &bytes[..room.min(bytes.len())];
        self.dropped += bytes.len() - rest.len();
        while !rest.is_empty() {
            let runs = self.chunks.len();
            let fits = match self.chunks.last_mut() {
                Some((kind, run)) if *kind == stream && run.len() < LOG_RUN_BYTES => {
                    let n = (LOG_RUN_BYTES - run.len()).min(rest.len());
                    run.extend_from_slice(&rest[..n]);
                    n
                }
                _ if runs < MAX_LOG_RUNS => {
                    let n = LOG_RUN_BYTES.min(rest.len());
                    self.chunks.push((stream, rest[..n].to_vec()));
                    n
                }
                _ => break,
            };
            self.bytes += fits;
            rest = &rest[fits..];
        }
        self.dropped += rest.len();
    }
}

/// One program of an experiment.
#[derive(Debug)]
pub struct ProgramRecord {
    /// Unique on this host.
    pub id: u64,
    /// What `weft ps` shows.
    pub name: String,
    /// The sha256 of its module.
    pub module: String,
    /// The task it runs as.
    pub task: TaskId,
    /// When it was submitted.
    pub started: SystemTime,
    state: Mutex<ProgramState>,
    log: Mutex<Log>,
    log_cap: usize,
    /// Bumped on every change of state or output, for followers.
    changed: watch::Sender<u64>,
    abort: Mutex<Option<AbortHandle>>,
    /// Its compute, once it is instantiated: a kill stops its kernels.
    compute: Mutex<Option<Arc<ComputeMeter>>>,
}

impl crate::runtime::OutputFollower for ProgramRecord {
    fn output(&self, stream: StreamKind, bytes: &[u8]) {
        self.append(stream, bytes);
    }
}

impl ProgramRecord {
    /// A program about to compile, keeping at most `log_cap` bytes of output.
    pub fn new(id: u64, name: String, module: String, task: TaskId, log_cap: usize) -> Self {
        ProgramRecord {
            id,
            name,
            module,
            task,
            started: SystemTime::now(),
            state: Mutex::new(ProgramState::Compiling),
            log: Mutex::default(),
            log_cap,
            changed: watch::Sender::new(0),
            abort: Mutex::default(),
            compute: Mutex::default(),
        }
    }

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Its state now.
    pub fn state(&self) -> ProgramState {
        Self::lock(&self.state).clone()
    }

    /// Moves it to `state`, unless it already ended (a kill is not undone
    /// by the program's task finishing afterwards).
    pub fn set_state(&self, state: ProgramState) {
        {
            let mut s = Self::lock(&self.state);
            if s.is_final() {
                return;
            }
            *s = state;
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Remembers how to stop the task running it.
    pub fn set_abort(&self, handle: AbortHandle) {
        *Self::lock(&self.abort) = Some(handle);
    }

    /// CPU time as its limit counts it: its guest code here plus the
    /// kernels of its steps wherever they ran (other hosts report theirs
    /// back).
    pub fn cpu_time(&self) -> std::time::Duration {
        Self::lock(&self.compute).as_ref().map_or(std::time::Duration::ZERO, |m| m.used())
    }

    /// Remembers its compute meter; stops it at once if it was killed first.
    pub fn set_compute(&self, meter: Arc<ComputeMeter>) {
        // Stored first, checked second (and `kill` does the reverse), so a
        // kill in between is seen by one side or the other.
        *Self::lock(&self.compute) = Some(meter.clone());
        if self.state() == ProgramState::Killed {
            meter.stop(format!("program {} was killed", self.id));
        }
    }

    /// Whether it still counts against its experiment's programs limit:
    /// until it has ended and the host's work for it has stopped (a killed
    /// program's kernel runs to its end first).
    pub fn holds_slot(&self) -> bool {
        !self.state().is_final() || Self::lock(&self.abort).as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Stops it if it is still going; returns whether it was. Its in-flight
    /// step ends at its next kernel.
    pub fn kill(&self) -> bool {
        if self.state().is_final() {
            return false;
        }
        let handle = Self::lock(&self.abort).clone();
        match handle {
            // Its task ended without recording how: it panicked.
            Some(h) if h.is_finished() => self.set_state(ProgramState::Failed(
                crate::error::Code::Internal,
                "the program's host task panicked".into(),
            )),
            Some(h) => {
                self.set_state(ProgramState::Killed);
                h.abort();
            }
            None => self.set_state(ProgramState::Killed),
        }
        if let Some(meter) = Self::lock(&self.compute).as_ref() {
            meter.stop(format!("program {} was killed", self.id));
        }
        true
    }

    /// Appends output, keeping at most the cap in bytes and runs.
    pub fn append(&self, stream: StreamKind, bytes: &[u8]) {
        Self::lock(&self.log).append(stream, bytes, self.log_cap);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Output after `from`, in runs of one stream, where a reader that got
    /// it is now, and how many bytes were not kept.
    pub fn output_since(&self, from: LogCursor) -> (Vec<(StreamKind, Bytes)>, LogCursor, usize) {
        let log = Self::lock(&self.log);
        let mut out = Vec::new();
        let mut at = from;
        for (i, (kind, run)) in log.chunks.iter().enumerate().skip(from.run) {
            let start = if i == from.run { from.offset.min(run.len()) } else { 0 };
            if start < run.len() {
                out.push((*kind, Bytes::copy_from_slice(&run[start..])));
            }
            at = LogCursor { run: i, offset: run.len() };
        }
        (out, at, log.dropped)
    }

    /// All its standard output so far, as text.
    pub fn stdout_text(&self) -> String {
        let log = Self::lock(&self.log);
        let bytes: Vec<u8> =
            log.chunks.iter().filter(|(k, _)| *k == StreamKind::Stdout).flat_map(|(_, b)| b.iter().copied()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A receiver that sees every change of state or output.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// How a program's run ends: its own outcome, or `Failed` with an internal
/// error naming the panic if the host panicked running it (a host bug must
/// not leave the program shown as running, holding its slot).
pub async fn outcome_of(run: impl std::future::Future<Output = ProgramState>) -> ProgramState {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(run).catch_unwind().await {
        Ok(state) => state,
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            tracing::error!("the host panicked running a program: {why}");
            ProgramState::Failed(crate::error::Code::Internal, format!("the host panicked running this program: {why}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_while_running_a_program_ends_it_as_failed_naming_the_panic() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let state = rt.block_on(outcome_of(async { panic!("kernel index out of bounds") }));
        assert_eq!(
            state,
            ProgramState::Failed(
                crate::error::Code::Internal,
                "the host panicked running this program: kernel index out of bounds".into()
            )
        );
        let fine = rt.block_on(outcome_of(async { ProgramState::Exited(ExitStatus::Success) }));
        assert_eq!(fine, ProgramState::Exited(ExitStatus::Success));
    }

    #[test]
    fn small_writes_share_a_run_and_readers_resume_where_they_were() {
        let p = ProgramRecord::new(1, "p".into(), "abc".into(), TaskId::new("w", 0), 1 << 20);
        for _ in 0..1000 {
            p.append(StreamKind::Stdout, b"x");
        }
        let (runs, at, dropped) = p.output_since(LogCursor::default());
        assert_eq!((runs.len(), runs[0].1.len(), dropped), (1, 1000, 0), "a thousand writes, one run");
        p.append(StreamKind::Stdout, b"yz");
        p.append(StreamKind::Stderr, b"oops");
        let (runs, at, _) = p.output_since(at);
        let texts: Vec<(StreamKind, &[u8])> = runs.iter().map(|(k, b)| (*k, &b[..])).collect();
        assert_eq!(texts, [(StreamKind::Stdout, &b"yz"[..]), (StreamKind::Stderr, &b"oops"[..])]);
        assert!(p.output_since(at).0.is_empty(), "nothing new");
    }

    #[test]
    fn a_log_keeps_at_most_its_runs_however_its_writes_alternate() {
        let p = ProgramRecord::new(1, "p".into(), "abc".into(), TaskId::new("w", 0), 1 << 20);
        for i in 0..(2 * MAX_LOG_RUNS) {
            let stream = if i % 2 == 0 { StreamKind::Stdout } else { StreamKind::Stderr };
            p.append(stream, b"a");
        }
        let (runs, _, dropped) = p.output_since(LogCursor::default());
        // Once full, writes to the last run's stream (stderr) still join it;
        // the other stream's are not kept.
        assert_eq!((runs.len(), dropped), (MAX_LOG_RUNS, MAX_LOG_RUNS / 2));
    }

    #[test]
    fn a_killed_program_holds_its_slot_until_its_work_has_stopped() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        let (release, kernel) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        let p = ProgramRecord::new(1, "p".into(), "abc".into(), TaskId::new("w", 0), 8);
        // A "kernel" that runs until released, as a step's does, deaf to aborts.
        let handle = rt.spawn(async move {
            tokio::task::block_in_place(|| {
                started.send(()).unwrap();
                kernel.recv().ok()
            });
        });
        p.set_abort(handle.abort_handle());
        p.set_state(ProgramState::Running);
        running.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert!(p.kill());
        assert_eq!(p.state(), ProgramState::Killed);
        assert!(p.holds_slot(), "its kernel still runs");
        release.send(()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while p.holds_slot() {
            assert!(std::time::Instant::now() < deadline, "the slot was never freed");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn a_killed_program_stays_killed_and_output_is_capped() {
        let p = ProgramRecord::new(1, "p".into(), "abc".into(), TaskId::new("w", 0), 8);
        p.set_state(ProgramState::Running);
        p.append(StreamKind::Stdout, b"hello ");
        p.append(StreamKind::Stdout, b"world");
        assert_eq!(p.stdout_text(), "hello wo");
        assert_eq!(p.output_since(LogCursor::default()).2, 3);
        assert!(p.kill());
        p.set_state(ProgramState::Exited(ExitStatus::Success));
        assert_eq!(p.state(), ProgramState::Killed);
        assert!(!p.kill());
    }
}
