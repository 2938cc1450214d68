//! Python guests beside Rust guests, in one sitting (issue 12, item 6):
//!
//! - compiling the ~18 MB Python component cold, and loading it from the
//!   `.cwasm` cache;
//! - instantiating a program and running it to its first output, Python
//!   and Rust;
//! - `assign_add` per run from inside a guest, local and cross-task with
//!   both tasks in this process (TensorFlow's X1 row), Python and Rust;
//! - resident memory per idle Python program.
//!
//! Needs componentize-py: `WEFT_PYTHON` names the Python that has it (the
//! README's test command installs it into `.venv`). Prints a Markdown table
//! of medians; docs/BENCHMARKS.md has the figures beside TensorFlow's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_host::cluster::TaskId;
use weft_host::runtime::{LoadedModule, OutputFollower, Runtime, RuntimeConfig, StreamKind};
use weft_host::task::Task;
use weft_host::testing::build_component;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn values(stdout: &str, key: &str) -> Vec<f64> {
    stdout.lines().filter_map(|l| l.strip_prefix(key)).map(|v| v.trim().parse().expect("a number")).collect()
}

/// tests/python/bench-assign-add built with componentize-py, as `weft
/// build-python` builds it (the SDK and WIT from this checkout).
fn python_guest(root: &Path) -> anyhow::Result<PathBuf> {
    let out = root.join("target/weft-guests/py-bench-assign-add-bench.wasm");
    std::fs::create_dir_all(out.parent().unwrap())?;
    let python = std::env::var("WEFT_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; script()";
    let status = Command::new(&python)
        .args(["-c", script, "-d"])
        .arg(root.join("wit"))
        .args(["-w", "task-worker", "componentize", "-p"])
        .arg(root.join("guest-sdk/python"))
        .arg("-p")
        .arg(root.join("tests/python/bench-assign-add"))
        .args(["app", "-o"])
        .arg(&out)
        .status()?;
    anyhow::ensure!(
        status.success(),
        "componentize-py failed; set WEFT_PYTHON to a Python that has componentize-py 0.25.1"
    );
    Ok(out)
}

async fn run(runtime: &Runtime, worker: &LoadedModule, task: &Arc<Task>, args: &[&str]) -> anyhow::Result<String> {
    let args = args.iter().map(|s| s.to_string()).collect();
    let out = runtime.run(worker, task.clone(), args, None).await?;
    anyhow::ensure!(out.status.success(), "bench guest failed: {:?}", out.status);
    Ok(String::from_utf8(out.stdout)?)
}

fn resident_bytes() -> anyhow::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/self/status"))?;
    Ok(kb * 1024)
}

/// Counts programs that printed their first line.
struct Started(Arc<std::sync::atomic::AtomicUsize>);

impl OutputFollower for Started {
    fn output(&self, stream: StreamKind, bytes: &[u8]) {
        if stream == StreamKind::Stdout && bytes.starts_with(b"sleeping") {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let py_path = python_guest(root)?;
    let py_bytes = std::fs::read(&py_path)?;
    let rust_local = build_component(root.join("tests/fixtures/bench-assign-add"))?;
    let rust_cluster = build_component(root.join("tests/fixtures/bench-cluster"))?;
    let cache = std::env::temp_dir().join(format!("weft-bench-python-{}", std::process::id()));
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;

    println!("| measurement | median | samples |");
    println!("|---|---|---|");

    // Compile cold (no cache), then load from the .cwasm cache.
    let mut cold = Vec::new();
    for _ in 0..3 {
        let rt = Runtime::new(RuntimeConfig { cache_dir: None, ..RuntimeConfig::default() })?;
        let start = Instant::now();
        rt.load("bench.wasm", &py_bytes)?;
        cold.push(start.elapsed().as_secs_f64());
    }
    println!(
        "| compile the Python component ({:.1} MB), no cache | {:.2} s | {} |",
        py_bytes.len() as f64 / 1e6,
        median(cold.clone()),
        cold.len()
    );
    let cached = RuntimeConfig { cache_dir: Some(cache.clone()), max_programs: 64, ..RuntimeConfig::default() };
    Runtime::new(cached.clone())?.load("bench.wasm", &py_bytes)?;
    let mut warm = Vec::new();
    for _ in 0..5 {
        let rt = Runtime::new(cached.clone())?;
        let start = Instant::now();
        rt.load("bench.wasm", &py_bytes)?;
        warm.push(start.elapsed().as_secs_f64());
    }
    println!(
        "| load the Python component from the .cwasm cache (new runtime) | {:.1} ms | {} |",
        median(warm.clone()) * 1e3,
        warm.len()
    );

    let runtime = Runtime::new(cached)?;
    let python = runtime.load("bench.wasm", &py_bytes)?;
    let rust = runtime.load_file(&rust_local)?;
    let rust_x1 = runtime.load_file(&rust_cluster)?;
    tokio.block_on(async {
        let task = Arc::new(Task::standalone());
        for (name, worker, args) in
            [("Python", &python, &["local", "1", "1"][..]), ("Rust", &rust, &["1", "1"][..])]
        {
            let mut times = Vec::new();
            for _ in 0..10 {
                let start = Instant::now();
                run(&runtime, worker, &task, args).await?;
                times.push(start.elapsed().as_secs_f64());
            }
            println!(
                "| {name} program: instantiate, build a graph, run one step, exit | {:.1} ms | {} |",
                median(times.clone()) * 1e3,
                times.len()
            );
        }

        let (rounds, iters) = (15, 2000);
        let out = run(&runtime, &python, &task, &["local", &rounds.to_string(), &iters.to_string()]).await?;
        anyhow::ensure!(out.contains(&format!("final {}.0", rounds * iters + 1)), "lost updates: {out}");
        println!(
            "| local `assign_add` per run, Python guest | {:.2} µs | {rounds} rounds x {iters} runs |",
            median(values(&out, "us_per_run "))
        );
        let out = run(&runtime, &rust, &task, &[&rounds.to_string(), &iters.to_string()]).await?;
        println!(
            "| local `assign_add` per run, Rust guest | {:.2} µs | {rounds} rounds x {iters} runs |",
            median(values(&out, "ns_per_run ")) / 1e3
        );

        let local = weft_host::local_cluster::LocalCluster::start_on_free_ports(&[("local", 2)]).await?;
        let task1 = local.task(&TaskId::new("local", 1))?;
        for (name, worker) in [("Python", &python), ("Rust", &rust_x1)] {
            let out = run(&runtime, worker, &task1, &["assign-add", &rounds.to_string(), &iters.to_string()]).await?;
            println!(
                "| cross-task `assign_add`, both tasks in this process (TF's X1), {name} guest | {:.2} µs | {rounds} rounds x {iters} runs |",
                median(values(&out, "us_per_run "))
            );
            // Each run reset nothing: the variable is shared by name.
            anyhow::ensure!(out.contains("final "), "{out}");
        }

        // Idle Python programs: resident memory each. The programs run
        // inside the select; ending it drops (stops) them.
        let n = 16;
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sleep_args = || vec!["sleep".to_string(), "600".to_string()];
        let follower = || -> Option<Arc<dyn OutputFollower>> { Some(Arc::new(Started(started.clone()))) };
        let mut first = Box::pin(runtime.run(&python, task.clone(), sleep_args(), follower()));
        let ready = |k: usize| {
            let started = started.clone();
            async move {
                while started.load(std::sync::atomic::Ordering::SeqCst) < k {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        tokio::select! {
            _ = &mut first => anyhow::bail!("the first idle program ended"),
            () = ready(1) => {}
        }
        let before = resident_bytes()?;
        let rest = futures_util::future::join_all((0..n).map(|_| runtime.run(&python, task.clone(), sleep_args(), follower())));
        let measured = tokio::select! {
            _ = &mut first => anyhow::bail!("the first idle program ended"),
            _ = rest => anyhow::bail!("idle programs ended"),
            r = async {
                ready(n + 1).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                resident_bytes()
            } => r?,
        };
        println!(
            "| host resident memory per idle Python program (RSS growth / {n}) | {:.1} MiB | 1 |",
            measured.saturating_sub(before) as f64 / n as f64 / (1 << 20) as f64
        );
        local.shutdown().await;
        Ok::<_, anyhow::Error>(())
    })?;
    let _ = std::fs::remove_dir_all(&cache);
    Ok(())
}
