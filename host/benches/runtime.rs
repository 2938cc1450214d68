//! Runtime benchmarks: `cargo bench -p weft-host --bench runtime`.
//!
//! Reports medians of repeated measurements, all in one process:
//! - a guest running `sess.run(var.assign_add(1.0))` in a local session,
//!   timed inside the guest (tests/fixtures/bench-assign-add);
//! - compiling a release example component (Cranelift), and loading it from
//!   the `.cwasm` cache instead;
//! - instantiating a loaded component (store, WASI context, instance).
//!
//! Figures and the machine they were taken on: docs/BENCHMARKS.md.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_host::runtime::{Runtime, RuntimeConfig};
use weft_host::task::Task;
use weft_host::testing::build_component;

/// The same allocator as the `weft` binary (see host/src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let bench_guest = build_component(root.join("tests/fixtures/bench-assign-add"))?;
    let example = build_component(root.join("examples/local-sessions"))?;
    let example_bytes = std::fs::read(&example)?;
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let task = Arc::new(Task::standalone());

    println!("| measurement | median | samples |");
    println!("|---|---|---|");

    // 1. assign_add from inside a guest.
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let worker = runtime.load_file(&bench_guest)?;
    let (rounds, iters) = (31, 2000);
    let out = tokio.block_on(runtime.run(&worker, task.clone(), vec![rounds.to_string(), iters.to_string()], None))?;
    anyhow::ensure!(out.status.success(), "bench guest failed: {:?}", out.status);
    let stdout = String::from_utf8(out.stdout)?;
    let per_run: Vec<f64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ns_per_run "))
        .map(|v| v.parse::<f64>().map(|ns| ns / 1e3))
        .collect::<Result<_, _>>()?;
    let expected_final = format!("final {}.0", rounds * iters + 1);
    anyhow::ensure!(stdout.contains(&expected_final), "assign_add lost updates: {stdout}");
    println!(
        "| guest `sess.run(var.assign_add(1.0))`, local session | {:.2} µs | {rounds} rounds x {iters} runs |",
        median(per_run)
    );

    // 2. Compiling the release example, cold (no cache), 10 times.
    let compile: Vec<f64> = (0..10)
        .map(|_| {
            let (c, d) = time(|| wasmtime::component::Component::new(runtime.engine(), &example_bytes));
            c.expect("example compiles");
            ms(d)
        })
        .collect();
    println!(
        "| compile {} ({} KB) with Cranelift, no cache | {:.1} ms | 10 |",
        example.file_name().unwrap().to_string_lossy(),
        example_bytes.len() / 1000,
        median(compile)
    );
    let cold_load: Vec<f64> =
        (0..10).map(|_| ms(time(|| runtime.load("local_sessions.wasm", &example_bytes).expect("loads")).1)).collect();
    println!("| `Runtime::load` cold (check + sha256 + compile + link) | {:.1} ms | 10 |", median(cold_load));

    // 3. The same from the .cwasm cache.
    let cache_dir = std::env::temp_dir().join(format!("weft-bench-cache-{}", std::process::id()));
    let cached = Runtime::new(RuntimeConfig { cache_dir: Some(cache_dir.clone()), ..RuntimeConfig::default() })?;
    cached.load("local_sessions.wasm", &example_bytes)?;
    let warm_load: Vec<f64> = (0..20)
        .map(|_| {
            let (w, d) = time(|| cached.load("local_sessions.wasm", &example_bytes).expect("loads"));
            assert_eq!(w.source(), weft_host::runtime::Source::Cache);
            ms(d)
        })
        .collect();
    println!("| `Runtime::load` from the `.cwasm` cache (sha256 + mmap + link) | {:.2} ms | 20 |", median(warm_load));
    let _ = std::fs::remove_dir_all(&cache_dir);

    // 4. Instantiation of a loaded component (pooling allocator, InstancePre).
    let worker = runtime.load("local_sessions.wasm", &example_bytes)?;
    let inst: Vec<f64> = tokio.block_on(async {
        let mut v = Vec::new();
        for _ in 0..500 {
            let start = Instant::now();
            let program = runtime.instantiate(&worker, task.clone(), Vec::new(), None).await.expect("instantiates");
            v.push(start.elapsed().as_secs_f64() * 1e6);
            drop(program);
        }
        v
    });
    println!("| instantiate (store + WASI ctx + instance) | {:.1} µs | 500 |", median(inst));

    // 5. A whole short program: instantiate, run S1, tear down.
    let whole: Vec<f64> = tokio.block_on(async {
        let mut v = Vec::new();
        for _ in 0..200 {
            let start = Instant::now();
            let out = runtime.run(&worker, task.clone(), Vec::new(), None).await.expect("runs");
            assert!(out.status.success());
            v.push(start.elapsed().as_secs_f64() * 1e6);
        }
        v
    });
    println!("| run the S1 program end to end (instantiate + run + drop) | {:.1} µs | 200 |", median(whole));
    Ok(())
}
