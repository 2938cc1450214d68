//! The per-program store state: WASI context, resource table, the task the
//! program runs as, and its limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::task::Task;

/// What a running program's store holds.
pub struct ProgramState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) task: Arc<Task>,
    pub(crate) limits: Limiter,
    pub(crate) cpu: CpuMeter,
}

/// The store's limits, remembering a refused memory growth: how a program
/// that trapped after running out of memory is told apart from other traps,
/// whatever it printed.
pub struct Limiter {
    limits: StoreLimits,
    /// The size a refused `memory.grow` asked for.
    pub(crate) refused_memory: Option<usize>,
}

impl Limiter {
    /// `limits`, watched.
    pub fn new(limits: StoreLimits) -> Self {
        Limiter { limits, refused_memory: None }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if !allowed {
            self.refused_memory = Some(desired);
        }
        Ok(allowed)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// Time a program has spent running guest code: from each entry into wasm
/// (a call, or a host call returning) to the next exit (a host call, or
/// returning). Time spent in host calls, such as waiting for another task or
/// sleeping, does not count, nor does time suspended at an epoch yield
/// (wasmtime runs that as a host call); time the OS preempts a running
/// guest does.
#[derive(Debug, Default)]
pub struct CpuMeter {
    used: Duration,
    since: Option<Instant>,
}

impl CpuMeter {
    /// The guest starts (or resumes) running.
    pub fn enter_guest(&mut self) {
        self.since.get_or_insert_with(Instant::now);
    }

    /// The guest stops running (calls the host, or returns).
    pub fn leave_guest(&mut self) {
        if let Some(since) = self.since.take() {
            self.used += since.elapsed();
        }
    }

    /// Guest time so far.
    pub fn used(&self) -> Duration {
        self.used + self.since.map_or(Duration::ZERO, |s| s.elapsed())
    }
}

impl WasiView for ProgramState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_time_inside_the_guest_counts() {
        let mut m = CpuMeter::default();
        m.enter_guest();
        std::thread::sleep(Duration::from_millis(20));
        m.leave_guest();
        let inside = m.used();
        assert!(inside >= Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(m.used(), inside, "time in the host is not charged");
        m.enter_guest();
        m.enter_guest(); // re-entering keeps the first start
        assert!(m.used() >= inside);
    }
}
