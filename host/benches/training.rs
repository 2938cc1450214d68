//! Training benchmarks: `cargo bench -p weft-host --bench training`.
//!
//! - The peers' workload (`examples/ps-linear-regression`: W 1024×1024 + b
//!   on the ps, batch 64, SGD 0.01) with 1 ps + 2 workers as three separate
//!   `weft` processes (`weft serve` for the ps, `weft run` for each worker):
//!   total steps/s, eval loss before and after, and the peak resident memory
//!   (VmHWM) of each process.
//! - The same model in one process without a cluster (`weft run`), as
//!   TensorFlow's single-process baseline.
//! - A3C on CartPole (`examples/a3c-cartpole`, 1 ps + 3 workers with `weft
//!   launch`): env steps/s and wall time to solve, over 5 seeds.
//!
//! `cargo bench -p weft-host --bench training -- WORD` runs only the
//! measurements whose name contains WORD (`cluster`, `single`, `a3c`);
//! `WEFT_BENCH_RUNS` sets the runs per measurement (default 3),
//! `WEFT_BENCH_STEPS` the steps per worker (default 1500).
//! Figures: docs/BENCHMARKS.md.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weft_host::testing::build_component;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn weft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weft"))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Peak resident set (VmHWM) of a live process, in MB.
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The number after `key` in a line.
fn number_after(line: &str, key: &str) -> Option<f64> {
    line.split(key).nth(1)?.split([' ', ',']).find(|s| !s.is_empty())?.parse().ok()
}

/// A worker's result: steps/s, first and last eval loss.
#[derive(Debug, Default)]
struct WorkerResult {
    rate: f64,
    first: f64,
    last: f64,
}

fn parse_worker(stdout: &str) -> WorkerResult {
    let mut r = WorkerResult::default();
    for line in stdout.lines() {
        if line.contains("at the start") {
            r.first = number_after(line, "eval loss ").unwrap_or(f64::NAN);
        }
        if let Some(l) = number_after(line, "eval loss ") {
            r.last = l;
        }
        if let Some(rate) =
            line.strip_suffix(" steps/s").and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
        {
            r.rate = rate;
        }
    }
    r
}

/// Runs `cmd` to its end, sampling its peak RSS while it runs.
fn run_sampled(mut cmd: Command) -> anyhow::Result<(String, f64)> {
    let mut child = Kill(cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?);
    let pid = child.0.id();
    let stdout = child.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let mut peak = 0.0f64;
    loop {
        let now = peak_rss_mb(pid);
        if now.is_finite() {
            peak = peak.max(now);
        }
        if let Some(status) = child.0.try_wait()? {
            anyhow::ensure!(status.success(), "{cmd:?} failed: {status}");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((reader.join().unwrap(), peak))
}

fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    Ok(listeners.iter().map(|l| l.local_addr().unwrap().port()).collect())
}

fn cluster_run(wasm: &Path, dir: &Path, steps: &str) -> anyhow::Result<(f64, Vec<WorkerResult>, Vec<f64>)> {
    let ports = free_ports(3)?;
    let spec = dir.join("cluster.json");
    let addr = |p: u16| format!("127.0.0.1:{p}");
    std::fs::write(
        &spec,
        serde_json::json!({"ps": [addr(ports[0])], "worker": [addr(ports[1]), addr(ports[2])]}).to_string(),
    )?;
    let spec = spec.to_str().unwrap().to_string();
    let mut ps =
        Kill(weft().args(["serve", "--cluster", &spec, "--job", "ps", "--task", "0"]).stderr(Stdio::piped()).spawn()?);
    let mut lines = BufReader::new(ps.0.stderr.take().unwrap()).lines();
    while let Some(line) = lines.next().transpose()? {
        if line.contains("serving") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let started = Instant::now();
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let mut cmd = weft();
            let task = i.to_string();
            cmd.args(["run", "--cluster", &spec, "--job", "worker", "--task", &task, wasm.to_str().unwrap()]);
            cmd.args(["--", "0.0", steps, "100", "1024"]);
            std::thread::spawn(move || run_sampled(cmd))
        })
        .collect();
    let mut results = Vec::new();
    let mut rss = Vec::new();
    for w in workers {
        let (out, peak) = w.join().unwrap()?;
        results.push(parse_worker(&out));
        rss.push(peak);
    }
    let wall = started.elapsed().as_secs_f64();
    rss.insert(0, peak_rss_mb(ps.0.id()));
    Ok((wall, results, rss))
}

fn main() -> anyhow::Result<()> {
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-')).unwrap_or_default();
    let wanted = |name: &str| name.contains(only.as_str());
    let runs: usize = std::env::var("WEFT_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let steps = std::env::var("WEFT_BENCH_STEPS").unwrap_or_else(|_| "1500".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
    let dir: PathBuf = std::env::temp_dir().join(format!("weft-bench-training-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    if wanted("cluster") || wanted("single") {
        let wasm = build_component(root.join("examples/ps-linear-regression"))?;
        if wanted("cluster") {
            let mut totals = Vec::new();
            for run in 0..runs {
                let (wall, results, rss) = cluster_run(&wasm, &dir, &steps)?;
                let total: f64 = results.iter().map(|r| r.rate).sum();
                println!(
                    "cluster run {run}: steps/s per worker {:?}, total {total:.1}; eval loss {:.1} -> {:?}; peak RSS MB ps {:.0}, \
                     workers {:.0} {:.0}; wall {wall:.1} s",
                    results.iter().map(|r| (r.rate * 10.0).round() / 10.0).collect::<Vec<_>>(),
                    results[0].first,
                    results.iter().map(|r| r.last).collect::<Vec<_>>(),
                    rss[0],
                    rss[1],
                    rss[2]
                );
                totals.push(total);
            }
            println!(
                "ps training, 1 ps + 2 worker processes: median total {:.1} steps/s over {runs} runs",
                median(totals)
            );
        }
        if wanted("single") {
            let mut rates = Vec::new();
            for run in 0..runs {
                let mut cmd = weft();
                cmd.args(["run", wasm.to_str().unwrap(), "--", "0.0", &steps, "100", "1024"]);
                let (out, peak) = run_sampled(cmd)?;
                let r = parse_worker(&out);
                println!(
                    "single run {run}: {:.1} steps/s, eval loss {:.1} -> {:.4}, peak RSS {peak:.0} MB",
                    r.rate, r.first, r.last
                );
                rates.push(r.rate);
            }
            println!("ps training in one process (no cluster): median {:.1} steps/s over {runs} runs", median(rates));
        }
    }

    if wanted("a3c") {
        let wasm = build_component(root.join("examples/a3c-cartpole"))?;
        let mut walls = Vec::new();
        let mut rates = Vec::new();
        for seed in 1..=5 {
            let ports = free_ports(4)?;
            let file = dir.join("a3c.toml");
            let addr = |p: u16| format!("\"127.0.0.1:{p}\"");
            std::fs::write(
                &file,
                format!(
                    "[cluster]\nworker = [{}, {}, {}]\nps = [{}]\n[program]\nmodule = {:?}\nargs = [\"{seed}\", \"2000000\", \"0.003\", \"64\"]\n",
                    addr(ports[0]),
                    addr(ports[1]),
                    addr(ports[2]),
                    addr(ports[3]),
                    wasm.to_str().unwrap()
                ),
            )?;
            let started = Instant::now();
            let out = weft().args(["launch", file.to_str().unwrap()]).stderr(Stdio::null()).output()?;
            let wall = started.elapsed().as_secs_f64();
            let text = String::from_utf8_lossy(&out.stdout);
            let summary = text.lines().filter(|l| l.contains("[ps:0] ps:")).collect::<Vec<_>>().join(" | ");
            let solved = text.contains("ps: SOLVED");
            let rate = text
                .lines()
                .filter(|l| l.ends_with("env steps/s)"))
                .find_map(|l| l.rsplit('(').next()?.split(' ').next()?.parse().ok())
                .unwrap_or(f64::NAN);
            println!(
                "a3c seed {seed}: {} in {wall:.1} s, {rate:.0} env steps/s | {summary}",
                if solved { "solved" } else { "NOT solved" }
            );
            if solved {
                walls.push(wall);
            }
            rates.push(rate);
        }
        println!(
            "a3c cartpole, 1 ps + 3 workers: solved {}/5, median wall time to solve {:.1} s, median {:.0} env steps/s",
            walls.len(),
            if walls.is_empty() { f64::NAN } else { median(walls) },
            median(rates)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
