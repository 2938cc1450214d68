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
//! [`TestHost`] is an in-process host: a real wasmtime runtime and a real
//! task (its device and variables), no processes or network. Its methods
//! block, so call them from ordinary `#[test]` functions, not from inside an
//! async runtime. Every run has a timeout (60 s unless changed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::runtime::{ExitStatus, Runtime, RuntimeConfig, Worker};
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

/// An in-process host serving one task (`/job:localhost/task:0`).
pub struct TestHost {
    runtime: Arc<Runtime>,
    task: Arc<Task>,
    tokio: tokio::runtime::Runtime,
    timeout: Duration,
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
    /// A host with a fresh task and no variables.
    pub fn new() -> Result<Self> {
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the test host's tokio runtime", e))?;
        Ok(TestHost {
            runtime: shared_runtime()?,
            task: Arc::new(Task::standalone()),
            tokio,
            timeout: Duration::from_secs(60),
        })
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
    pub fn load(&self, wasm: impl AsRef<Path>) -> Result<Worker> {
        static WORKERS: OnceLock<Mutex<HashMap<PathBuf, Worker>>> = OnceLock::new();
        let path = wasm.as_ref().to_path_buf();
        let workers = WORKERS.get_or_init(Default::default);
        if let Some(w) = workers.lock().unwrap_or_else(|p| p.into_inner()).get(&path) {
            return Ok(w.clone());
        }
        let worker = self.runtime.load_file(&path)?;
        workers.lock().unwrap_or_else(|p| p.into_inner()).insert(path, worker.clone());
        Ok(worker)
    }

    /// Runs the component at `wasm` with `args` as a program of this host's task.
    pub fn run(&self, wasm: impl AsRef<Path>, args: &[&str]) -> Result<TestOutput> {
        let worker = self.load(wasm)?;
        self.run_worker(&worker, args)
    }

    /// Runs an already loaded worker.
    pub fn run_worker(&self, worker: &Worker, args: &[&str]) -> Result<TestOutput> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let run = self.runtime.run(worker, self.task.clone(), args, None);
        let out = self.tokio.block_on(async { tokio::time::timeout(self.timeout, run).await }).map_err(|_| {
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

    /// The value of variable `name` on this host's task, if it has one.
    pub fn variable(&self, name: &str) -> Option<Tensor> {
        self.task.device().variables().get(name)?.read().ok()
    }

    /// All initialized variables of this host's task, sorted by name.
    pub fn variables(&self) -> Vec<(String, Tensor)> {
        self.task.device().variables().snapshot()
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
