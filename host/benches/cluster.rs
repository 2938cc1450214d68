//! Cluster benchmarks: `cargo bench -p weft-host --bench cluster`.
//!
//! Task 0 is a separate `weft serve` process; the guests run in this
//! process as programs of tasks 1 and 2, reaching task 0 over gRPC on
//! loopback. Reports medians:
//! - cross-task `assign_add` per run, from inside a guest;
//! - a 64 MiB f32 variable on task 0 fetched into a guest (GB/s);
//! - `reduce_sum` on task 1 of that variable (GB/s moved between processes);
//! - worker to worker: `reduce_sum` on task 3 (a second `weft serve`
//!   process) of that variable, the session on task 1 carrying none of it;
//! - two worker programs hammering `assign_add` on one variable (total ops/s,
//!   final value checked);
//! - yardsticks measured in the same run: `memcpy` and loopback TCP for
//!   64 MiB, and round trips (a 1-byte TCP ping-pong, a unary gRPC call
//!   to task 0) under `assign_add`'s.
//!
//! `cargo bench -p weft-host --bench cluster -- WORD` runs only the
//! measurements whose name contains WORD (`assign`, `fetch`, `reduce`,
//! `relay`, `hammer`, `memcpy`, `tcp`, `rtt`); `WEFT_BENCH_ROUNDS` changes
//! the 64 MiB rounds (default 7).
//!
//! Figures: docs/BENCHMARKS.md.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use weft_host::cluster::{ClusterSpec, TaskId};
use weft_host::rpc::GrpcRemote;
use weft_host::runtime::{LoadedModule, Runtime, RuntimeConfig};
use weft_host::task::Task;
use weft_host::testing::build_component;

/// The same allocator as the `weft` binary (see host/src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

const BIG: usize = 64 << 20;
const YARDSTICK_ROUNDS: usize = 7;

/// Median seconds of a 64 MiB copy into a buffer reused round after round.
fn memcpy_seconds() -> f64 {
    let src = vec![1u8; BIG];
    let mut dst = vec![0u8; BIG];
    let times = (0..YARDSTICK_ROUNDS)
        .map(|_| {
            let start = std::time::Instant::now();
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&dst);
            start.elapsed().as_secs_f64()
        })
        .collect();
    median(times)
}

/// Median seconds to move 64 MiB through a loopback TCP connection, 1 MiB
/// writes on one thread, 1 MiB reads on another, out of and into buffers of
/// `buffer` bytes reused round after round: 1 MiB ones stay in the CPU's
/// caches, 64 MiB ones (a tensor's memory to a tensor's memory) do not.
fn loopback_tcp_seconds(buffer: usize) -> anyhow::Result<f64> {
    use std::io::{Read, Write};
    const PIECE: usize = 1 << 20;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let mut tx = std::net::TcpStream::connect(listener.local_addr()?)?;
    let (mut rx, _) = listener.accept()?;
    tx.set_nodelay(true)?;
    let reader = std::thread::spawn(move || -> std::io::Result<Vec<f64>> {
        let mut buf = vec![0u8; buffer];
        let mut times = Vec::new();
        for _ in 0..YARDSTICK_ROUNDS {
            let mut got = 0;
            let mut start = None;
            while got < BIG {
                let at = got % buffer;
                let n = rx.read(&mut buf[at..(at + PIECE).min(buffer)])?;
                start.get_or_insert_with(std::time::Instant::now);
                got += n;
            }
            times.push(start.expect("read something").elapsed().as_secs_f64());
        }
        std::hint::black_box(&buf);
        Ok(times)
    });
    let source = vec![1u8; buffer];
    for _ in 0..YARDSTICK_ROUNDS {
        for i in 0..BIG / PIECE {
            let at = (i * PIECE) % buffer;
            tx.write_all(&source[at..at + PIECE])?;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let times = reader.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
    Ok(median(times))
}

/// Round trips timed per round (mean µs of `iters`), `rounds` rounds.
const RTT_ROUNDS: usize = 15;
const RTT_ITERS: usize = 500;

/// Median µs of a 1-byte ping-pong over loopback TCP between two threads:
/// the floor under any RPC on this machine.
fn tcp_ping_pong_micros() -> anyhow::Result<f64> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let mut client = std::net::TcpStream::connect(listener.local_addr()?)?;
    let (mut server, _) = listener.accept()?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let mut b = [0u8; 1];
        for _ in 0..(RTT_ROUNDS * RTT_ITERS + 100) {
            server.read_exact(&mut b)?;
            server.write_all(&b)?;
        }
        Ok(())
    });
    let mut b = [0u8; 1];
    for _ in 0..100 {
        client.write_all(&b)?;
        client.read_exact(&mut b)?;
    }
    let mut rounds = Vec::new();
    for _ in 0..RTT_ROUNDS {
        let start = std::time::Instant::now();
        for _ in 0..RTT_ITERS {
            client.write_all(&b)?;
            client.read_exact(&mut b)?;
        }
        rounds.push(start.elapsed().as_secs_f64() * 1e6 / RTT_ITERS as f64);
    }
    echo.join().map_err(|_| anyhow::anyhow!("echo thread panicked"))??;
    Ok(median(rounds))
}

/// Median µs of a unary `GetStatus` from this process to task 0 (a `weft
/// serve` process) on a tonic channel: what gRPC itself costs per call.
async fn grpc_round_trip_micros(address: &str) -> anyhow::Result<f64> {
    use weft_host::rpc::pb::{GetStatusRequest, task_service_client::TaskServiceClient};
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{address}"))?.tcp_nodelay(true).connect().await?;
    let mut client = TaskServiceClient::new(channel);
    let task = TaskId::new("local", 0);
    let mut call = async || -> anyhow::Result<()> {
        let mut request = tonic::Request::new(GetStatusRequest::default());
        weft_host::rpc::Credentials::default().attach(&mut request, Some(&task))?;
        client.get_status(request).await?;
        Ok(())
    };
    for _ in 0..100 {
        call().await?;
    }
    let mut rounds = Vec::new();
    for _ in 0..RTT_ROUNDS {
        let start = std::time::Instant::now();
        for _ in 0..RTT_ITERS {
            call().await?;
        }
        rounds.push(start.elapsed().as_secs_f64() * 1e6 / RTT_ITERS as f64);
    }
    Ok(median(rounds))
}

/// User and system CPU seconds of process `pid` ("self" for this one),
/// its finished threads included (`/proc/PID/stat`, in clock ticks).
fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks =
        |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).ok_or_else(|| anyhow::anyhow!("no field {i}"));
    // utime and stime: fields 14 and 15 of stat, 0-based 11 and 12 after the
    // name; USER_HZ is 100 on Linux.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

fn values(stdout: &str, key: &str) -> Vec<f64> {
    stdout.lines().filter_map(|l| l.strip_prefix(key)).map(|v| v.trim().parse().expect("a number")).collect()
}

async fn run(runtime: &Runtime, worker: &LoadedModule, task: &Arc<Task>, args: &[&str]) -> anyhow::Result<String> {
    let args = args.iter().map(|s| s.to_string()).collect();
    let out = runtime.run(worker, task.clone(), args, None).await?;
    anyhow::ensure!(out.status.success(), "bench guest failed: {:?}", out.status);
    Ok(String::from_utf8(out.stdout)?)
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; the first other argument filters.
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-')).unwrap_or_default();
    let wanted = |name: &str| name.contains(only.as_str());
    let big_rounds = std::env::var("WEFT_BENCH_ROUNDS").unwrap_or_else(|_| "7".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let wasm = build_component(root.join("tests/fixtures/bench-cluster"))?;
    let ports: Vec<u16> = (0..4)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").map(|l| l.local_addr().unwrap().port()))
        .collect::<Result<_, _>>()?;
    let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let dir = std::env::temp_dir().join(format!("weft-bench-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let spec_path = dir.join("cluster.json");
    std::fs::write(&spec_path, serde_json::json!({ "local": addresses }).to_string())?;

    // Tasks 0 and 3 are `weft serve` processes; 1 and 2 live here.
    let serve = |task: &str| -> anyhow::Result<Kill> {
        let mut server = Kill(
            Command::new(env!("CARGO_BIN_EXE_weft"))
                .args(["serve", "--cluster", spec_path.to_str().unwrap(), "--job", "local", "--task", task])
                .stderr(Stdio::piped())
                .spawn()?,
        );
        let mut lines = BufReader::new(server.0.stderr.take().unwrap()).lines();
        anyhow::ensure!(lines.next().transpose()?.is_some_and(|l| l.contains("serving")), "task {task} did not start");
        // Keep draining the server's log so it can never block on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(server)
    };
    let servers = [serve("0")?, serve("3")?];

    let spec = ClusterSpec::new(std::collections::BTreeMap::from([("local".to_string(), addresses.clone())]))?;
    let task = |i: u32| -> anyhow::Result<(Arc<Task>, Arc<GrpcRemote>)> {
        let remote = Arc::new(GrpcRemote::new(spec.clone()));
        let t = Task::new(spec.clone(), TaskId::new("local", i))?.with_remote(remote.clone());
        Ok((Arc::new(t), remote))
    };
    let ((task1, remote1), (task2, _)) = (task(1)?, task(2)?);
    let carried = || remote1.traffic().shared_bytes() + remote1.traffic().streamed_bytes();
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let worker = runtime.load_file(&wasm)?;
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;

    println!("| measurement | median | samples |");
    println!("|---|---|---|");
    let gbps = |secs: f64| BIG as f64 / secs / 1e9;
    if wanted("memcpy") {
        let secs = memcpy_seconds();
        println!(
            "| yardstick: `memcpy` of 64 MiB into a reused buffer | {:.2} GB/s ({:.1} ms) | {YARDSTICK_ROUNDS} |",
            gbps(secs),
            secs * 1e3
        );
    }
    if wanted("tcp") {
        for (buffer, what) in [(1 << 20, "1 MiB buffers (in cache)"), (BIG, "64 MiB buffers")] {
            let secs = loopback_tcp_seconds(buffer)?;
            println!(
                "| yardstick: 64 MiB through loopback TCP between two threads, {what} | {:.2} GB/s ({:.1} ms) | {YARDSTICK_ROUNDS} |",
                gbps(secs),
                secs * 1e3
            );
        }
    }
    if wanted("rtt") {
        println!(
            "| yardstick: 1-byte ping-pong over loopback TCP between two threads | {:.1} µs | {RTT_ROUNDS} rounds x {RTT_ITERS} |",
            tcp_ping_pong_micros()?
        );
    }
    tokio.block_on(async {
        if wanted("rtt") {
            println!(
                "| yardstick: unary gRPC `GetStatus` to task 0 (another process), tonic channel | {:.1} µs | {RTT_ROUNDS} rounds x {RTT_ITERS} |",
                grpc_round_trip_micros(&addresses[0]).await?
            );
        }
        if wanted("assign") {
            let (rounds, iters) = (15, 500);
            let out = run(&runtime, &worker, &task1, &["assign-add", &rounds.to_string(), &iters.to_string()]).await?;
            anyhow::ensure!(out.contains(&format!("final {}.0", rounds * iters + 1)), "lost updates: {out}");
            println!(
                "| cross-task `assign_add` (guest on task 1, `var` on task 0 in another process) | {:.1} µs | {rounds} rounds x {iters} runs |",
                median(values(&out, "us_per_run "))
            );
        }

        // Both tasks in this process (TensorFlow's X1 row: two servers in
        // one process): the master calls task 0 directly.
        let (assign_in_process, fetch_in_process) = (wanted("assign-in-process"), wanted("fetch-in-process"));
        if assign_in_process || fetch_in_process {
            let local = weft_host::local_cluster::LocalCluster::start_on_free_ports(&[("local", 2)]).await?;
            let task1 = local.task(&TaskId::new("local", 1))?;
            if assign_in_process {
                let (rounds, iters) = (15, 2000);
                let args = ["assign-add", &rounds.to_string(), &iters.to_string()];
                let out = run(&runtime, &worker, &task1, &args).await?;
                anyhow::ensure!(out.contains(&format!("final {}.0", rounds * iters + 1)), "lost updates: {out}");
                println!(
                    "| cross-task `assign_add`, both tasks in this process (as TF's X1) | {:.2} µs | {rounds} rounds x {iters} runs |",
                    median(values(&out, "us_per_run "))
                );
            }
            if fetch_in_process {
                let out = run(&runtime, &worker, &task1, &["fetch", "64", &big_rounds]).await?;
                let all = values(&out, "seconds ");
                let runs: Vec<String> = all.iter().map(|s| format!("{:.0}", s * 1e3)).collect();
                let secs = median(all);
                println!(
                    "| fetch a 64 MiB variable from task 0 into a guest on task 1, both in this process | {:.2} GB/s ({:.1} ms; runs in order: {} ms) | {big_rounds} |",
                    BIG as f64 / secs / 1e9,
                    secs * 1e3,
                    runs.join(", ")
                );
            }
            local.shutdown().await;
        }

        let bytes = 64.0 * 1024.0 * 1024.0;
        for (name, mode, on, what) in [
            ("fetch", "fetch", "1", "fetch a 64 MiB f32 variable from task 0 into a guest on task 1"),
            ("reduce", "reduce", "1", "`reduce_sum` on task 1 of the 64 MiB variable on task 0"),
            (
                "relay",
                "reduce",
                "3",
                "worker to worker: `reduce_sum` on task 3 (another process) of the 64 MiB variable on task 0, session on task 1",
            ),
        ] {
            if !wanted(name) {
                continue;
            }
            let before = carried();
            let cpu_before = (cpu_seconds("self")?, cpu_seconds(&servers[0].0.id().to_string())?);
            let out = run(&runtime, &worker, &task1, &[mode, "64", &big_rounds, on]).await?;
            let cpu = (cpu_seconds("self")? - cpu_before.0, cpu_seconds(&servers[0].0.id().to_string())? - cpu_before.1);
            let through = carried() - before;
            if name == "relay" && std::env::var("WEFT_DIRECT").as_deref() != Ok("0") {
                // The session's task carried none of the variable.
                anyhow::ensure!(through < 1 << 20, "{through} bytes went through task 1");
            }
            let all = values(&out, "seconds ");
            let runs: Vec<String> = all.iter().map(|s| format!("{:.0}", s * 1e3)).collect();
            let secs = median(all);
            println!(
                "| {what} | {:.2} GB/s ({:.1} ms; runs in order: {} ms; {:.0} MiB through task 1; CPU of the whole program: this process {:.2} s, task 0 {:.2} s) | {big_rounds} |",
                bytes / secs / 1e9,
                secs * 1e3,
                runs.join(", "),
                through as f64 / f64::from(1 << 20),
                cpu.0,
                cpu.1
            );
        }

        let n = 3000;
        let mut rates = Vec::new();
        for _ in 0..if wanted("hammer") { 5 } else { 0 } {
            run(&runtime, &worker, &task1, &["hammer-init"]).await?;
            let ns = n.to_string();
            let args = ["hammer", ns.as_str()];
            let (a, b) = tokio::join!(run(&runtime, &worker, &task1, &args), run(&runtime, &worker, &task2, &args));
            let slowest = values(&a?, "seconds ")[0].max(values(&b?, "seconds ")[0]);
            let read = run(&runtime, &worker, &task1, &["hammer-read"]).await?;
            anyhow::ensure!(read.contains(&format!("final {}.0", 2 * n)), "lost increments: {read}");
            rates.push(2.0 * n as f64 / slowest);
        }
        if !rates.is_empty() {
            println!("| two worker programs hammering `assign_add` on one task-0 variable (final value exact) | {:.0} ops/s total | 5 x 2 x {n} |", median(rates));
        }
        Ok(())
    })?;
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
