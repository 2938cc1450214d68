//! Hosting benchmarks: `cargo bench -p weft-host --bench hosting`.
//!
//! - cold submit: a fresh host (no compiled-module cache) on loopback gRPC;
//!   upload the release `local-sessions` example, compile, start it, and
//!   receive its first line of output (printed after its first op);
//! - warm submit: the same module again on the same host (the upload is
//!   only a hash check);
//! - density: idle programs (`misbehave sleep`) started on one host, and
//!   the host's resident memory per program.
//!
//! Figures: docs/BENCHMARKS.md.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use weft_host::cluster::{ClusterSpec, TaskId};
use weft_host::hosting::{
    ControlClient, EffectiveLimits, ExperimentSpec, Hosting, HostingConfig, Limits, ProgramState,
};
use weft_host::rpc::Credentials;
use weft_host::rpc::pb;
use weft_host::runtime::{RuntimeConfig, module_hash};
use weft_host::server::{HostServices, serve_host};
use weft_host::testing::build_component;

/// The same allocator as the `weft` binary (see host/src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TOKEN: &str = "bench-token-0123456789";

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn hosting(max_programs: u32) -> anyhow::Result<Arc<Hosting>> {
    let config = HostingConfig {
        runtime: RuntimeConfig { max_programs, ..RuntimeConfig::default() },
        limits: EffectiveLimits { programs: max_programs, ..EffectiveLimits::host_defaults() },
        admin_token: None,
        open_experiments: false,
        allowed_peers: Default::default(),
        client_tls: None,
        data_root: None,
        files: Default::default(),
        state_dir: None,
        ..HostingConfig::default()
    };
    Ok(Arc::new(Hosting::new(config, None)?))
}

fn spec(name: &str, address: &str) -> ExperimentSpec {
    let cluster = ClusterSpec::new([("worker".to_string(), vec![address.to_string()])].into()).unwrap();
    ExperimentSpec {
        name: name.into(),
        token: TOKEN.into(),
        cluster,
        tasks: vec![TaskId::new("worker", 0)],
        limits: Limits::default(),
        data_dir: None,
    }
}

/// Serves `hosting` on a free port; returns a client and the stop handle.
async fn serve(hosting: Arc<Hosting>) -> anyhow::Result<(ControlClient, tokio::sync::oneshot::Sender<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    hosting.create_experiment(spec("bench", &address))?;
    let services = HostServices::hosting(&hosting, None);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move { serve_host(listener, services, "bench host", async move { drop(stopped.await) }).await });
    let client = ControlClient::connect(&address, None, Credentials::experiment("bench", TOKEN)).await?;
    Ok((client, stop))
}

/// What `weft submit` does, up to the program's first line of output.
async fn submit_until_first_output(client: &mut ControlClient, module: &[u8]) -> anyhow::Result<()> {
    let module_sha256 = client.upload(module).await?;
    let task = Some(pb::TaskRef { job: "worker".into(), index: 0 });
    let info = client.start(pb::StartProgramRequest { module_sha256, name: String::new(), task, args: vec![] }).await?;
    let mut logs = client.logs(info.id, true).await?;
    while let Some(chunk) = logs.next().await? {
        if chunk.stream == 1 && !chunk.data.is_empty() {
            return Ok(());
        }
        if let Some(end) = chunk.end {
            anyhow::bail!("the program ended without output: {end:?}");
        }
    }
    anyhow::bail!("no output")
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

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let example = std::fs::read(build_component(root.join("examples/local-sessions"))?)?;
    let sleeper = std::fs::read(build_component(root.join("tests/fixtures/misbehave"))?)?;
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;

    println!("| measurement | median | samples |");
    println!("|---|---|---|");
    tokio.block_on(async {
        // Density first, while this process has freed nothing its
        // allocator could hand back without growing: N idle programs.
        let n: usize = std::env::var("WEFT_BENCH_PROGRAMS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
        let host = tokio::task::spawn_blocking(move || hosting(n as u32 + 8)).await??;
        let experiment = host.create_experiment(spec("density", "127.0.0.1:1"))?;
        host.add_module(&experiment, &module_hash(&sleeper), sleeper.clone()).await?;
        let sha = module_hash(&sleeper);
        // One program first, so the engine, module and pools are warm.
        let task = TaskId::new("worker", 0);
        let first = host.start_program(&experiment, &sha, None, &task, vec!["sleep".into(), "600".into()])?;
        while first.stdout_text().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let before = resident_bytes()?;
        let start = Instant::now();
        let mut programs = Vec::new();
        for _ in 0..n {
            programs.push(host.start_program(&experiment, &sha, None, &task, vec!["sleep".into(), "600".into()])?);
        }
        for p in &programs {
            while p.stdout_text().is_empty() {
                anyhow::ensure!(p.state() == ProgramState::Running, "program {} is {:?}", p.id, p.state());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let took = start.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = resident_bytes()?;
        let running = programs.iter().filter(|p| p.state() == ProgramState::Running).count();
        anyhow::ensure!(running == n, "only {running} of {n} programs are running");
        println!(
            "| idle programs held by one host (each started, printed, now sleeping) | {n} in {:.2} s | 1 |",
            took.as_secs_f64()
        );
        println!(
            "| host resident memory per idle program (RSS growth / {n}, guest linear memory included) | {:.1} KiB | 1 |",
            (after.saturating_sub(before)) as f64 / n as f64 / 1024.0
        );
        host.delete_experiment("density")?;

        // Cold: a new host each time, nothing compiled or cached.
        let mut cold = Vec::new();
        for _ in 0..10 {
            let host = tokio::task::spawn_blocking(|| hosting(8)).await??;
            let (mut client, _stop) = serve(host).await?;
            let start = Instant::now();
            submit_until_first_output(&mut client, &example).await?;
            cold.push(start.elapsed().as_secs_f64());
        }
        println!(
            "| cold submit of local_sessions.wasm ({} KB): upload + compile + instantiate + first op | {:.1} ms | {} |",
            example.len() / 1000,
            median(cold.clone()) * 1e3,
            cold.len()
        );

        let host = tokio::task::spawn_blocking(|| hosting(64)).await??;
        let (mut client, _stop) = serve(host).await?;
        submit_until_first_output(&mut client, &example).await?;
        let mut warm = Vec::new();
        for _ in 0..50 {
            let start = Instant::now();
            submit_until_first_output(&mut client, &example).await?;
            warm.push(start.elapsed().as_secs_f64());
        }
        println!("| warm submit of the same module (hash check + start + first op) | {:.2} ms | {} |", median(warm.clone()) * 1e3, warm.len());

        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}
