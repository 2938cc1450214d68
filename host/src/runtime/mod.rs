//! The wasmtime runtime: one engine per host (Cranelift, pooling allocator,
//! epoch interruption, no component-model concurrency), a compiled-module
//! cache, and running a worker component as a program of a task.
//!
//! A program's failures are its own: a trap, a panic or an `Err` from its
//! `run` export ends that program with an [`ExitStatus`] that says why, and
//! the runtime carries on.

mod bindings;
mod cache;
mod convert;
mod host_device;
mod host_graph;
mod host_session;
mod host_variable;
mod output;
mod resources;
mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

pub use cache::{ModuleCache, Source, module_hash};
pub use output::{OutputFollower, OutputSink, StreamKind};

use crate::error::{Error, Result};
use crate::exec::ComputeMeter;
use crate::task::Task;
use bindings::{TaskWorker, TaskWorkerPre};
use state::StoreState;

impl bindings::types::Host for StoreState {}

/// How often the epoch advances; a running guest yields to the async
/// executor at least this often, so it can be timed out or cancelled.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Settings of a host's runtime.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Where compiled modules are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Program instances the pooling allocator holds slots for.
    pub max_programs: u32,
    /// Linear memory one program may grow to.
    pub max_memory_bytes: usize,
    /// Bytes of each output stream kept per program.
    pub max_output_bytes: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { cache_dir: None, max_programs: 64, max_memory_bytes: 512 << 20, max_output_bytes: 16 << 20 }
    }
}

impl RuntimeConfig {
    /// The default cache directory: `$WEFT_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/weft/modules`, else `~/.cache/weft/modules`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("WEFT_CACHE_DIR") {
            return Some(dir.into());
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("weft").join("modules"))
    }
}

/// A module (a worker component), compiled and linked, ready to instantiate
/// as programs.
#[derive(Clone)]
pub struct LoadedModule {
    name: String,
    hash: String,
    source: Source,
    load_time: Duration,
    pre: TaskWorkerPre<StoreState>,
}

impl std::fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModule")
            .field("name", &self.name)
            .field("hash", &self.hash)
            .field("source", &self.source)
            .field("load_time", &self.load_time)
            .finish_non_exhaustive()
    }
}

impl LoadedModule {
    /// The name it was loaded under (usually its file name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sha256 of its bytes.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Whether it was compiled now or loaded from the cache.
    pub fn source(&self) -> Source {
        self.source
    }

    /// How long compiling (or loading) and linking took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }
}

/// How a program ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// `run` returned `ok`.
    Success,
    /// `run` returned `err` with this message.
    Failed(String),
    /// The program trapped (a panic, `unreachable`, out of bounds, ...).
    Trapped(String),
    /// The program hit one of its limits (memory, CPU time), named in the message.
    ResourceExhausted(String),
}

impl ExitStatus {
    /// Whether the program succeeded.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Success
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Success => f.write_str("succeeded"),
            ExitStatus::Failed(m) => write!(f, "failed: {m}"),
            ExitStatus::Trapped(m) => write!(f, "trapped: {m}"),
            ExitStatus::ResourceExhausted(m) => write!(f, "resource-exhausted: {m}"),
        }
    }
}

/// A program's sandbox beyond the runtime's defaults: its limits (`None`
/// takes the runtime's setting) and what it is granted. Every program gets
/// no network, no host environment (only `WEFT_JOB` and `WEFT_TASK`) and no
/// filesystem, except `data_dir` when granted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramSandbox {
    /// Linear memory it may grow to (at most the runtime's `max_memory_bytes`).
    pub memory_bytes: Option<usize>,
    /// Time it may spend running guest code and the kernels of its steps
    /// (on this host, and those other hosts report back for it). Time in
    /// other host calls, such as waiting for another task or sleeping, and at
    /// epoch yields does not count; time the OS preempts a running guest
    /// does. Checked every [`EPOCH_TICK`] of guest code and before every
    /// kernel.
    pub cpu_time: Option<Duration>,
    /// A host directory the program may read (not write) as `/data`.
    pub data_dir: Option<PathBuf>,
}

/// The trap a program's CPU-time limit raises.
#[derive(Debug)]
struct CpuTimeExceeded {
    limit: Duration,
    guest: Duration,
    kernels: Duration,
}

impl std::fmt::Display for CpuTimeExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::exec::over_cpu_limit(self.limit, self.guest, self.kernels))
    }
}

impl std::error::Error for CpuTimeExceeded {}

/// A finished program's status and output.
#[derive(Clone, Debug)]
pub struct ProgramOutput {
    /// How it ended.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
}

struct EpochTicker(Arc<AtomicBool>);

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A host's wasmtime engine, linker and module cache.
pub struct Runtime {
    engine: Engine,
    linker: Linker<StoreState>,
    cache: Option<ModuleCache>,
    config: RuntimeConfig,
    _ticker: EpochTicker,
}

impl Runtime {
    /// A runtime with the given settings.
    pub fn new(config: RuntimeConfig) -> Result<Self> {
        let mut cfg = Config::new();
        // Component-model concurrency (WASIp3) doubles call costs; weft's WIT
        // has no async functions. Baked into `.cwasm`, hence into cache keys.
        cfg.concurrency_support(false);
        cfg.epoch_interruption(true);
        let n = config.max_programs.max(1);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(n)
            .total_core_instances(n * 10)
            .total_memories(n * 2)
            .total_tables(n * 10)
            .total_stacks(n)
            .max_memory_size(config.max_memory_bytes);
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg).map_err(|e| Error::wasm("creating the wasmtime engine", &e))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| Error::wasm("linking WASI", &e))?;
        TaskWorker::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(|e| Error::wasm("linking weft:runtime", &e))?;

        let cache = config.cache_dir.as_ref().map(|d| ModuleCache::new(d, &engine)).transpose()?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.clone();
        let ticker_stop = stop.clone();
        std::thread::Builder::new()
            .name("weft-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(|e| Error::io("starting the epoch thread", e))?;
        Ok(Runtime { engine, linker, cache, config, _ticker: EpochTicker(stop) })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The module cache, if any.
    pub fn cache(&self) -> Option<&ModuleCache> {
        self.cache.as_ref()
    }

    /// Reads and loads a worker component from a file.
    pub fn load_file(&self, path: &Path) -> Result<LoadedModule> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        self.load(&name, &bytes)
    }

    /// Checks, compiles (or loads from the cache) and links a worker
    /// component. Blocking: call it off the async threads.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<LoadedModule> {
        let start = Instant::now();
        check_component_header(name, bytes)?;
        let hash = module_hash(bytes);
        let compile = || {
            Component::new(&self.engine, bytes).map_err(|e| Error::InvalidModule {
                module: name.to_string(),
                reason: format!("it does not compile as a component: {e:#}"),
            })
        };
        let (component, source) = match &self.cache {
            Some(cache) => cache.get_or_compile(&self.engine, &hash, compile)?,
            None => (compile()?, Source::Compiled),
        };
        let world_error = |e: wasmtime::Error| Error::InvalidModule {
            module: name.to_string(),
            reason: format!("it is not a weft:runtime/task-worker component: {e:#}"),
        };
        let pre = self.linker.instantiate_pre(&component).map_err(world_error)?;
        let pre = TaskWorkerPre::new(pre).map_err(world_error)?;
        Ok(LoadedModule { name: name.to_string(), hash, source, load_time: start.elapsed(), pre })
    }

    /// Runs `worker` as a program of `task` with `args`. Output is captured
    /// and, if `follow` is given, forwarded as it is written. Cancel-safe:
    /// dropping the future stops the program within one epoch tick.
    pub async fn run(
        &self,
        worker: &LoadedModule,
        task: Arc<Task>,
        args: Vec<String>,
        follow: Option<Arc<dyn OutputFollower>>,
    ) -> Result<ProgramOutput> {
        Ok(self.instantiate(worker, task, args, follow).await?.call().await)
    }

    /// Creates a program's store (WASI context, limits, epoch yielding) and
    /// instantiates `worker` in it, without calling `run` yet.
    pub async fn instantiate(
        &self,
        worker: &LoadedModule,
        task: Arc<Task>,
        args: Vec<String>,
        follow: Option<Arc<dyn OutputFollower>>,
    ) -> Result<Program> {
        self.instantiate_sandboxed(worker, task, args, follow, &ProgramSandbox::default()).await
    }

    /// [`Runtime::instantiate`] in a per-program `sandbox`.
    pub async fn instantiate_sandboxed(
        &self,
        worker: &LoadedModule,
        task: Arc<Task>,
        args: Vec<String>,
        follow: Option<Arc<dyn OutputFollower>>,
        sandbox: &ProgramSandbox,
    ) -> Result<Program> {
        let stdout = OutputSink::new(StreamKind::Stdout, self.config.max_output_bytes, follow.clone());
        let stderr = OutputSink::new(StreamKind::Stderr, self.config.max_output_bytes, follow);
        let mut argv = vec![worker.name.clone()];
        argv.extend(args.iter().cloned());
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .args(&argv)
            .env("WEFT_JOB", &task.id().job)
            .env("WEFT_TASK", task.id().index.to_string())
            // No sockets at all (the default address check denies every
            // address too; this says so twice).
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Some(dir) = &sandbox.data_dir {
            wasi.preopened_dir(dir, "/data", wasmtime_wasi::FsPerms::ReadOnly)
                .map_err(|e| Error::wasm(format!("granting {} as /data", dir.display()), &e))?;
        }
        let wasi = wasi.build();
        let memory_limit = sandbox.memory_bytes.unwrap_or(usize::MAX).min(self.config.max_memory_bytes);
        let limits = state::Limiter::new(&worker.name, memory_limit);
        let compute = Arc::new(ComputeMeter::new(sandbox.cpu_time));
        let state = StoreState {
            wasi,
            table: Default::default(),
            task,
            limits,
            cpu: Default::default(),
            compute: compute.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // What one call may copy from the guest to the host (wasmtime's
        // default is 128 MiB): never more than the program may hold, so that
        // lists aliasing one buffer cannot make the host copy it many times.
        store.set_hostcall_fuel(memory_limit);
        store.set_epoch_deadline(1);
        // Meter guest time at every crossing between wasm and the host, and
        // at every epoch tick the guest is running, into the program's
        // compute meter (its usage, as `weft ps` shows it); check it against
        // the limit, if any, at every tick.
        store.call_hook(|mut ctx, hook| {
            let state = ctx.data_mut();
            if hook.exiting_host() {
                state.cpu.enter_guest()
            } else {
                state.cpu.leave_guest();
                state.compute.set_guest_time(state.cpu.used());
            }
            Ok(())
        });
        let limit = sandbox.cpu_time;
        store.epoch_deadline_callback(move |ctx| {
            let (guest, kernels) = (ctx.data().cpu.used(), ctx.data().compute.kernel_time());
            ctx.data().compute.set_guest_time(guest);
            if let Some(limit) = limit
                && guest + kernels > limit
            {
                return Err(CpuTimeExceeded { limit, guest, kernels }.into());
            }
            Ok(UpdateDeadline::Yield(1))
        });
        let instance = match worker.pre.instantiate_async(&mut store).await {
            Ok(instance) => instance,
            Err(e) => return Err(instantiation_failed(&worker.name, &e, &store.data().limits, memory_limit)),
        };
        Ok(Program { store, instance, args, stdout, stderr, memory_limit, compute })
    }
}

/// An instantiated program, ready to run once.
pub struct Program {
    store: Store<StoreState>,
    instance: TaskWorker,
    args: Vec<String>,
    stdout: OutputSink,
    stderr: OutputSink,
    memory_limit: usize,
    compute: Arc<ComputeMeter>,
}

impl Program {
    /// Its compute on this host: stopping it ends its in-flight step at the
    /// next kernel.
    pub fn compute(&self) -> &Arc<ComputeMeter> {
        &self.compute
    }

    /// Calls the program's `run` export and collects how it ended.
    pub async fn call(mut self) -> ProgramOutput {
        let status = match self.instance.call_run(&mut self.store, &self.args).await {
            Ok(Ok(())) => ExitStatus::Success,
            Ok(Err(error)) => ExitStatus::Failed(convert::describe_wit_error(&error)),
            Err(trap) => {
                let refused = self.store.data().limits.refused_memory;
                describe_trap(&trap, &self.stderr.contents(), self.memory_limit, refused)
            }
        };
        ProgramOutput { status, stdout: self.stdout.contents(), stderr: self.stderr.contents() }
    }
}

/// Rejects bytes that are not a component before Cranelift sees them, with
/// a message that says what they are instead.
fn check_component_header(name: &str, bytes: &[u8]) -> Result<()> {
    let invalid = |reason: String| Error::InvalidModule { module: name.to_string(), reason };
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        let start: String = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(invalid(format!("it is not a WebAssembly binary (starts with 0x{start}, expected 0x0061736d)")));
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(invalid(
            "it is a core WebAssembly module, not a component: build the worker with \
             `cargo build --target wasm32-wasip2`"
                .into(),
        )),
        _ => Err(invalid(format!("unsupported WebAssembly version/layer {:02x?}", &bytes[4..8]))),
    }
}

/// Why instantiating failed: a limit of the program's (its memories and
/// tables together, its core instances) by name, else wasmtime's reason.
fn instantiation_failed(name: &str, e: &wasmtime::Error, limits: &state::Limiter, memory_limit: usize) -> Error {
    let text = format!("{e:#}");
    if let Some(desired) = limits.refused_memory {
        return Error::status(
            crate::error::Code::ResourceExhausted,
            format!(
                "memory limit: instantiating {name} needs {desired} bytes of memories and tables over all its \
                 instances; the limit is {} MiB",
                memory_limit >> 20
            ),
        );
    }
    if text.contains("resource limit exceeded") {
        return Error::status(
            crate::error::Code::ResourceExhausted,
            format!(
                "instance limit: {name} needs more core instances, memories or tables than a program may have \
                 (at most {} core instances, {} memories, {} tables): {text}",
                state::MAX_CORE_INSTANCES,
                state::MAX_MEMORIES,
                state::MAX_TABLES
            ),
        );
    }
    Error::wasm(format!("instantiating {name}"), e)
}

/// How a trapped program ended. Limits are named from what the host saw (a
/// refused `memory.grow`, the CPU meter), not from what the guest printed;
/// its output only adds detail: the trap's reason, plus a panic message or
/// the allocation that hit the memory limit.
/// How wasmtime's trap reads when one call would copy more than the
/// store's hostcall fuel from the guest (its type is private).
const HOSTCALL_FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";

fn describe_trap(
    trap: &wasmtime::Error,
    stderr: &[u8],
    memory_limit: usize,
    refused_memory: Option<usize>,
) -> ExitStatus {
    if let Some(cpu) = trap.downcast_ref::<CpuTimeExceeded>() {
        return ExitStatus::ResourceExhausted(cpu.to_string());
    }
    let reason = match trap.downcast_ref::<wasmtime::Trap>() {
        Some(t) => t.to_string(),
        None => format!("{trap:#}"),
    };
    if format!("{trap:#}").contains(HOSTCALL_FUEL_EXHAUSTED) {
        return ExitStatus::ResourceExhausted(format!(
            "memory limit: one call to the host passed it more than the program may hold ({memory_limit} bytes, \
             its memory limit; lists in guest memory are counted each time they are passed); {reason}"
        ));
    }
    let text = String::from_utf8_lossy(stderr);
    if let Some(desired) = refused_memory {
        let detail = text.lines().find(|l| l.starts_with("memory allocation of")).map(str::trim);
        return ExitStatus::ResourceExhausted(format!(
            "memory limit: the program ran out of memory (it asked to grow its memory to {desired} bytes{}; \
             the limit is {} MiB); {reason}",
            detail.map(|d| format!(": {d}")).unwrap_or_default(),
            memory_limit >> 20
        ));
    }
    ExitStatus::Trapped(match text.lines().find(|l| l.contains("panicked at")) {
        Some(line) => {
            let detail = text.lines().skip_while(|l| !l.contains("panicked at")).nth(1).unwrap_or("").trim();
            format!("program panicked ({}: {detail}); {reason}", line.trim().trim_end_matches(':'))
        }
        None => reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_names_what_the_bytes_are() {
        let err = check_component_header("notes.txt", b"hello world").unwrap_err().to_string();
        assert!(err.contains("notes.txt") && err.contains("not a WebAssembly binary"), "{err}");
        let err = check_component_header("core.wasm", b"\0asm\x01\0\0\0").unwrap_err().to_string();
        assert!(err.contains("core WebAssembly module, not a component"), "{err}");
        assert!(check_component_header("c.wasm", b"\0asm\x0d\0\x01\0").is_ok());
        assert!(check_component_header("empty", b"").is_err());
    }

    #[test]
    fn module_hash_is_sha256_hex() {
        assert_eq!(module_hash(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
