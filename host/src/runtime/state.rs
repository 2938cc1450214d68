//! The per-program store state: WASI context, resource table, the task the
//! program runs as, and its limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::budget::ByteBudget;
use crate::exec::ComputeMeter;
use crate::task::Task;

/// What a running program's store holds.
pub struct StoreState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) task: Arc<Task>,
    pub(crate) limits: Limiter,
    pub(crate) cpu: CpuMeter,
    /// Its steps' kernel time, and the stop that ends them.
    pub(crate) compute: Arc<ComputeMeter>,
}

impl StoreState {
    /// Runs `work` (host work for the program, such as adding an op or
    /// differentiating a graph), charging its time to the program's compute.
    pub(crate) fn metered<T>(&self, work: impl FnOnce() -> T) -> T {
        let start = std::time::Instant::now();
        let out = work();
        self.compute.charge(start.elapsed());
        out
    }
}

/// Core instances one program's component may create (the pooling
/// allocator reserves ten per program on average).
pub const MAX_CORE_INSTANCES: usize = 32;
/// Linear memories of one program, over all its core instances.
pub const MAX_MEMORIES: usize = 4;
/// Tables of one program, over all its core instances.
pub const MAX_TABLES: usize = 32;
/// What the host holds per table element (a reference).
const TABLE_ELEMENT_BYTES: usize = 8;

/// The store's limits: the memory limit covers every linear memory and
/// table of every core instance of the program together, not each on its
/// own, and what the host holds for the program (its graphs) as well: all
/// are charged to one [`ByteBudget`]. Remembers a refused growth, so that a
/// program that trapped after running out of memory is told apart from
/// other traps, whatever it printed.
pub struct Limiter {
    memory: Arc<ByteBudget>,
    /// What the whole program would have held had a refused `memory.grow`
    /// (or a memory at instantiation) been allowed.
    pub(crate) refused_memory: Option<usize>,
}

impl Limiter {
    /// A limit of `bytes` for all of program `name`'s memories and tables
    /// and what the host holds for it.
    pub fn new(name: &str, bytes: usize) -> Self {
        Limiter { memory: Arc::new(ByteBudget::memory(format!("program '{name}'"), bytes)), refused_memory: None }
    }

    /// The budget the program's memories, tables and host-held bytes share.
    pub fn budget(&self) -> &Arc<ByteBudget> {
        &self.memory
    }

    /// Grants growth from `current` to `desired` bytes if the program's total
    /// stays within the limit; else says what the total would have been. A
    /// grant wasmtime then fails to carry out stays counted: over-counting
    /// errs on the safe side, and such failures are rare (a pool with no
    /// room).
    fn grow(&mut self, current: usize, desired: usize) -> Result<(), usize> {
        let more = desired.saturating_sub(current);
        self.memory.try_charge(more).map_err(|used| used.saturating_add(more))
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        match self.grow(current, desired) {
            Ok(()) => Ok(true),
            Err(total) => {
                self.refused_memory = Some(total);
                Ok(false)
            }
        }
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let bytes = |elements: usize| elements.saturating_mul(TABLE_ELEMENT_BYTES);
        Ok(self.grow(bytes(current), bytes(desired)).is_ok())
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod limiter_tests {
    use super::*;

    #[test]
    fn memories_and_tables_share_one_limit() {
        let mut l = Limiter::new("p", 100);
        assert!(l.memory_growing(0, 60, None).unwrap(), "a first memory");
        assert!(!l.memory_growing(0, 60, None).unwrap(), "a second one would make 120 together");
        assert_eq!(l.refused_memory, Some(120));
        assert!(l.table_growing(0, 4, None).unwrap(), "32 bytes of table");
        assert_eq!(l.budget().used(), 92);
        assert!(l.memory_growing(60, 68, None).unwrap());
        assert_eq!(l.budget().used(), 100);
        assert!(!l.table_growing(4, 6, None).unwrap(), "a table past the limit is refused too");
        assert!(!l.memory_growing(68, 69, None).unwrap());
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

impl WasiView for StoreState {
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
