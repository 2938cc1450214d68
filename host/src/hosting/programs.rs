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

#[derive(Debug, Default)]
struct Log {
    chunks: Vec<(StreamKind, Bytes)>,
    bytes: usize,
    dropped: usize,
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

    /// Remembers its compute meter; stops it at once if it was killed first.
    pub fn set_compute(&self, meter: Arc<ComputeMeter>) {
        if self.state() == ProgramState::Killed {
            meter.stop(format!("program {} was killed", self.id));
        }
        *Self::lock(&self.compute) = Some(meter);
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
        if let Some(meter) = Self::lock(&self.compute).as_ref() {
            meter.stop(format!("program {} was killed", self.id));
        }
        let handle = Self::lock(&self.abort).clone();
        match handle {
            // Its task ended without recording how: it panicked.
            Some(h) if h.is_finished() => self.set_state(ProgramState::Failed(
                crate::error::Code::Internal,
                "the program's host task panicked".into(),
            )),
            Some(h) => {
                h.abort();
                self.set_state(ProgramState::Killed);
            }
            None => self.set_state(ProgramState::Killed),
        }
        true
    }

    /// Appends output, keeping at most the cap.
    pub fn append(&self, stream: StreamKind, bytes: Bytes) {
        {
            let mut log = Self::lock(&self.log);
            let room = self.log_cap.saturating_sub(log.bytes);
            if room < bytes.len() {
                log.dropped += bytes.len() - room;
            }
            let keep = bytes.slice(..room.min(bytes.len()));
            if !keep.is_empty() {
                log.bytes += keep.len();
                log.chunks.push((stream, keep));
            }
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Output chunks from index `from` on, and the note about dropped bytes.
    pub fn output_since(&self, from: usize) -> (Vec<(StreamKind, Bytes)>, usize) {
        let log = Self::lock(&self.log);
        (log.chunks.get(from..).unwrap_or_default().to_vec(), log.dropped)
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
        p.append(StreamKind::Stdout, Bytes::from_static(b"hello "));
        p.append(StreamKind::Stdout, Bytes::from_static(b"world"));
        assert_eq!(p.stdout_text(), "hello wo");
        assert_eq!(p.output_since(0).1, 3);
        assert!(p.kill());
        p.set_state(ProgramState::Exited(ExitStatus::Success));
        assert_eq!(p.state(), ProgramState::Killed);
        assert!(!p.kill());
    }
}
