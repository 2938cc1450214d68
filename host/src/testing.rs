//! A harness for component tests of worker programs, from plain `cargo test`.
//!
//! ```no_run
//! use weft_host::testing::{TestHost, build_component};
//!
//! #[test]
//! fn my_worker_counts_to_one() {
//!     let wasm = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
//!     let host = TestHost::new().unwrap();
//!     let out = host.run(&wasm, &["--steps", "1"]).unwrap();
//!     assert!(out.status.success(), "{}", out.stderr);
//!     assert_eq!(host.variable("counter").unwrap().as_f32_vec().unwrap(), vec![1.0]);
//! }
//! ```
//!
//! [`TestHost`] is an in-process host: a real wasmtime runtime and real
//! tasks (their devices and variables), no processes or network.
//! [`TestHost::cluster`] gives a cluster of in-process tasks sharing one
//! process's devices: ops placed on any of them run there directly.
//! [`TestHost::grpc_cluster`] gives task servers that talk real gRPC on
//! loopback ports, each with its own variables, that a test can stop and
//! restart. Programs run on any task, one at a time or concurrently
//! ([`TestHost::run_all`]).
//!
//! Its methods block, so call them from ordinary `#[test]` functions, not
//! from inside an async runtime. Every run has a timeout (60 s unless changed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use std::collections::BTreeMap;

use crate::cluster::{ClusterSpec, TaskId};
use crate::device::DeviceSpec;
use crate::error::{Error, Result};
pub use crate::exec::HostFiles;
use crate::exec::LocalDevices;
use crate::local_cluster::LocalCluster;
use crate::runtime::{ExitStatus, LoadedModule, Runtime, RuntimeConfig};
use crate::task::Task;
use crate::tensor::Tensor;

/// What a program run under the harness produced.
#[derive(Clone, Debug)]
pub struct TestOutput {
    /// How it ended.
    pub status: ExitStatus,
    /// Its standard output, as UTF-8 (lossy).
    pub stdout: String,
    /// Its standard error, as UTF-8 (lossy).
    pub stderr: String,
}

/// An in-process host serving one task, or a whole cluster of tasks.
pub struct TestHost {
    runtime: Arc<Runtime>,
    tasks: Tasks,
    default_task: TaskId,
    tokio: tokio::runtime::Runtime,
    timeout: Duration,
}

enum Tasks {
    /// Tasks sharing this process's devices.
    Shared(BTreeMap<TaskId, Arc<Task>>),
    /// Task servers talking gRPC.
    Grpc(tokio::sync::Mutex<LocalCluster>),
}

fn test_tokio() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the test host's tokio runtime", e))
}

/// One runtime per test process: engines are cheap to share and compiled
/// components are cached across hosts.
fn shared_runtime() -> Result<Arc<Runtime>> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    if let Some(r) = RUNTIME.get() {
        return Ok(r.clone());
    }
    let config = RuntimeConfig { max_programs: 32, ..RuntimeConfig::default() };
    let runtime = Arc::new(Runtime::new(config)?);
    Ok(RUNTIME.get_or_init(|| runtime).clone())
}

impl TestHost {
    /// A host with one fresh task, `/job:localhost/task:0`, and no variables.
    pub fn new() -> Result<Self> {
        Self::build(ClusterSpec::single("in-process"))
    }

    /// A cluster of in-process tasks: `&[("ps", 1), ("worker", 2)]` gives
    /// `/job:ps/task:0`, `/job:worker/task:0` and `/job:worker/task:1`.
    /// Programs run on the first task in sorted order unless told otherwise.
    pub fn cluster(jobs: &[(&str, u32)]) -> Result<Self> {
        let spec = jobs
            .iter()
            .map(|&(job, n)| (job.to_string(), (0..n).map(|i| format!("in-process:{job}:{i}")).collect()))
            .collect();
        Self::build(ClusterSpec::new(spec)?)
    }

    fn build(cluster: ClusterSpec) -> Result<Self> {
        let ids: Vec<TaskId> = cluster
            .jobs()
            .iter()
            .flat_map(|(job, tasks)| (0..tasks.len() as u32).map(move |i| TaskId::new(job.clone(), i)))
            .collect();
        let devices = Arc::new(LocalDevices::new(ids.clone()));
        let tasks = ids
            .iter()
            .map(|id| Ok((id.clone(), Arc::new(Task::with_devices(cluster.clone(), id.clone(), devices.clone())?))))
            .collect::<Result<BTreeMap<_, _>>>()?;
        Ok(TestHost {
            runtime: shared_runtime()?,
            tasks: Tasks::Shared(tasks),
            default_task: cluster.default_task(),
            tokio: test_tokio()?,
            timeout: Duration::from_secs(60),
        })
    }

    /// Task servers for `jobs`, on free loopback ports, talking gRPC to each
    /// other: variables live in the server of the task they are placed on.
    pub fn grpc_cluster(jobs: &[(&str, u32)]) -> Result<Self> {
        Self::grpc_cluster_with_files(jobs, HostFiles::default())
    }

    /// [`TestHost::grpc_cluster`] whose tasks write checkpoints and
    /// summaries where `files` says (restarted tasks find theirs again).
    pub fn grpc_cluster_with_files(jobs: &[(&str, u32)], files: HostFiles) -> Result<Self> {
        let tokio = test_tokio()?;
        let cluster = tokio.block_on(LocalCluster::start_on_free_ports_over_grpc(jobs, files))?;
        Ok(TestHost {
            runtime: shared_runtime()?,
            default_task: cluster.spec().default_task(),
            tasks: Tasks::Grpc(tokio::sync::Mutex::new(cluster)),
            tokio,
            timeout: Duration::from_secs(60),
        })
    }

    /// The cluster spec of a [`TestHost::grpc_cluster`], with its real addresses.
    pub fn spec(&self) -> Option<ClusterSpec> {
        match &self.tasks {
            Tasks::Grpc(c) => Some(self.tokio.block_on(c.lock()).spec().clone()),
            Tasks::Shared(_) => None,
        }
    }

    /// Stops a task server of a [`TestHost::grpc_cluster`]: its variables are gone.
    pub fn stop_task(&self, task: &str) -> Result<()> {
        let id = self.task_id(task)?;
        match &self.tasks {
            Tasks::Grpc(c) => self.tokio.block_on(async { c.lock().await.stop(&id).await }),
            Tasks::Shared(_) => Err(Error::invalid("only grpc_cluster tasks can be stopped")),
        }
    }

    /// Starts a stopped (or running) task server again on its address.
    pub fn restart_task(&self, task: &str) -> Result<()> {
        let id = self.task_id(task)?;
        match &self.tasks {
            Tasks::Grpc(c) => self.tokio.block_on(async { c.lock().await.restart(&id).await }),
            Tasks::Shared(_) => Err(Error::invalid("only grpc_cluster tasks can be restarted")),
        }
    }

    fn task_id(&self, task: &str) -> Result<TaskId> {
        let spec = DeviceSpec::parse(task)?;
        Ok(TaskId::new(spec.job.unwrap_or_else(|| self.default_task.job.clone()), spec.task.unwrap_or(0)))
    }

    fn task(&self, task: &str) -> Result<Arc<Task>> {
        let id = self.task_id(task)?;
        match &self.tasks {
            Tasks::Shared(tasks) => tasks.get(&id).cloned().ok_or_else(|| {
                let known: Vec<String> = tasks.keys().map(|t| t.to_string()).collect();
                Error::not_found(format!("this test host has no task {id} (tasks: {})", known.join(", ")))
            }),
            Tasks::Grpc(c) => self.tokio.block_on(c.lock()).task(&id),
        }
    }

    /// Sets the per-run timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The runtime, for loading workers once and running them many times.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Loads the component at `wasm` (compiling it once per process).
    pub fn load(&self, wasm: impl AsRef<Path>) -> Result<LoadedModule> {
        static WORKERS: OnceLock<Mutex<HashMap<PathBuf, LoadedModule>>> = OnceLock::new();
        let path = wasm.as_ref().to_path_buf();
        let workers = WORKERS.get_or_init(Default::default);
        if let Some(w) = workers.lock().unwrap_or_else(|p| p.into_inner()).get(&path) {
            return Ok(w.clone());
        }
        let worker = self.runtime.load_file(&path)?;
        workers.lock().unwrap_or_else(|p| p.into_inner()).insert(path, worker.clone());
        Ok(worker)
    }

    /// Runs the component at `wasm` with `args` as a program of the first task.
    pub fn run(&self, wasm: impl AsRef<Path>, args: &[&str]) -> Result<TestOutput> {
        let worker = self.load(wasm)?;
        self.run_worker(&worker, args)
    }

    /// Runs the component at `wasm` as a program of `task` (`/job:worker/task:1`).
    pub fn run_on(&self, task: &str, wasm: impl AsRef<Path>, args: &[&str]) -> Result<TestOutput> {
        let worker = self.load(wasm)?;
        let task = self.task(task)?;
        self.tokio.block_on(self.run_program(&worker, task, args))
    }

    /// Runs an already loaded worker on the first task.
    pub fn run_worker(&self, worker: &LoadedModule, args: &[&str]) -> Result<TestOutput> {
        let task = self.task(&self.default_task.to_string())?;
        self.tokio.block_on(self.run_program(worker, task, args))
    }

    /// Runs several programs at once, each `(task, wasm, args)`, and returns
    /// their outputs in the same order; the timeout applies to each.
    pub fn run_all(&self, programs: &[(&str, &Path, &[&str])]) -> Result<Vec<TestOutput>> {
        let mut prepared = Vec::with_capacity(programs.len());
        for &(task, wasm, args) in programs {
            prepared.push((self.load(wasm)?, self.task(task)?, args));
        }
        self.tokio.block_on(async {
            let runs = prepared.iter().map(|(w, t, a)| self.run_program(w, t.clone(), a));
            let mut outputs = Vec::with_capacity(prepared.len());
            for out in futures_util::future::join_all(runs).await {
                outputs.push(out?);
            }
            Ok(outputs)
        })
    }

    async fn run_program(&self, worker: &LoadedModule, task: Arc<Task>, args: &[&str]) -> Result<TestOutput> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let run = self.runtime.run(worker, task, args, None);
        let out = tokio::time::timeout(self.timeout, run).await.map_err(|_| {
            Error::status(
                crate::error::Code::DeadlineExceeded,
                format!("program {} did not finish within {:?}", worker.name(), self.timeout),
            )
        })??;
        Ok(TestOutput {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// The value of variable `name` on the first task, if it has one.
    pub fn variable(&self, name: &str) -> Option<Tensor> {
        self.task(&self.default_task.to_string()).ok()?.device().variables().get(name)?.read().ok()
    }

    /// The value of variable `name` on `task`, if it has one.
    pub fn variable_on(&self, task: &str, name: &str) -> Result<Option<Tensor>> {
        Ok(self.task(task)?.device().variables().get(name).and_then(|v| v.read().ok()))
    }

    /// All initialized variables of the first task, sorted by name.
    pub fn variables(&self) -> Vec<(String, Tensor)> {
        self.task(&self.default_task.to_string()).map(|t| t.device().variables().snapshot()).unwrap_or_default()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Tasks::Grpc(c) = &mut self.tasks {
            let cluster = std::mem::replace(c.get_mut(), LocalCluster::empty());
            self.tokio.block_on(cluster.shutdown());
        }
    }
}

/// Builds the guest crate at `crate_dir` for `wasm32-wasip2` (release) and
/// returns the path of its `.wasm`. Builds go to `target/weft-guests` of the
/// enclosing workspace (or `$CARGO_TARGET_DIR/weft-guests`), separate from the
/// test's own target dir, and each crate is built once per process.
pub fn build_component(crate_dir: impl AsRef<Path>) -> Result<PathBuf> {
    static BUILT: OnceLock<Mutex<HashMap<PathBuf, PathBuf>>> = OnceLock::new();
    let dir = crate_dir.as_ref().to_path_buf();
    let built = BUILT.get_or_init(Default::default);
    // Holding the lock serialises builds: cargo would serialise them anyway.
    let mut built = built.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(path) = built.get(&dir) {
        return Ok(path.clone());
    }
    let path = cargo_build_wasm(&dir)?;
    built.insert(dir, path.clone());
    Ok(path)
}

fn guest_target_dir(crate_dir: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("weft-guests");
    }
    let root = crate_dir.ancestors().find(|d| d.join("Cargo.lock").exists()).unwrap_or(crate_dir);
    root.join("target").join("weft-guests")
}

fn cargo_build_wasm(crate_dir: &Path) -> Result<PathBuf> {
    let package = crate_dir.display().to_string();
    let fail = |reason: String| Error::GuestBuild { package: package.clone(), reason };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--message-format", "json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(crate_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(guest_target_dir(crate_dir))
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .output()
        .map_err(|e| fail(format!("could not run cargo: {e}")))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        if stderr.contains("target may not be installed") || stderr.contains("can't find crate for `core`") {
            return Err(fail(
                "the wasm32-wasip2 target is not installed: run `rustup target add wasm32-wasip2`".into(),
            ));
        }
        return Err(fail(stderr.into_owned()));
    }
    // The last compiler-artifact with a .wasm file is the crate's component.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let wasm = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .flat_map(|m| m["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .rfind(|f| f.extension().is_some_and(|e| e == "wasm"));
    wasm.ok_or_else(|| fail(format!("cargo produced no .wasm file (is the crate a cdylib?)\n{stderr}")))
}
