//! The `weft` command line. `main.rs` only calls [`main`]; the tests run the
//! same code through a wrapper binary.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::runtime::{ExitStatus, OutputChunk, Runtime, RuntimeConfig, StreamKind};
use crate::task::Task;

/// weft: distributed TensorFlow-style graphs, with every program a sandboxed
/// WebAssembly component.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a worker component on an embedded single-task host
    /// (`/job:localhost/task:0`), streaming its output.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The worker component (built with `--target wasm32-wasip2`).
    module: PathBuf,
    /// Arguments passed to the program's `run`.
    #[arg(last = true)]
    args: Vec<String>,
    /// Stop the program after this many seconds.
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Where compiled modules are cached [default: $WEFT_CACHE_DIR or ~/.cache/weft/modules].
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    cache_dir: Option<PathBuf>,
    /// Compile every time; do not read or write the module cache.
    #[arg(long)]
    no_cache: bool,
    /// Linear memory the program may use, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 512)]
    max_memory_mib: usize,
}

/// Exit codes: 0 success, 1 the program failed or trapped, 2 weft could not
/// run it (bad module, bad flags), 124 timed out, 130 interrupted.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let tokio = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Run(args) => tokio.block_on(run(args)),
    }
}

async fn run(args: RunArgs) -> ExitCode {
    let cache_dir = if args.no_cache { None } else { args.cache_dir.clone().or_else(RuntimeConfig::default_cache_dir) };
    let config = RuntimeConfig {
        cache_dir,
        max_programs: 4,
        max_memory_bytes: args.max_memory_mib << 20,
        ..RuntimeConfig::default()
    };
    let module = args.module.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let runtime = Runtime::new(config)?;
        let worker = runtime.load_file(&module)?;
        Ok::<_, Error>((runtime, worker))
    })
    .await;
    let (runtime, worker) = match loaded {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            eprintln!("weft: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("weft: loading {} panicked: {e}", args.module.display());
            return ExitCode::from(2);
        }
    };
    tracing::info!(module = worker.name(), sha256 = worker.hash(), source = ?worker.source(), load = ?worker.load_time(), "loaded");

    let (tx, mut rx) = mpsc::unbounded_channel::<OutputChunk>();
    let printer = tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            // Output goes to the terminal as the program writes it.
            let _ = match chunk.stream {
                StreamKind::Stdout => std::io::stdout().lock().write_all(&chunk.bytes),
                StreamKind::Stderr => std::io::stderr().lock().write_all(&chunk.bytes),
            };
        }
        let _ = std::io::stdout().flush();
    });
    let task = Arc::new(Task::standalone());
    let program = runtime.run(&worker, task, args.args.clone(), Some(tx));
    let timeout = args.timeout.map(Duration::from_secs_f64).unwrap_or(Duration::MAX);
    let outcome = tokio::select! {
        r = tokio::time::timeout(timeout, program) => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("weft: interrupted; stopped {}", worker.name());
            return ExitCode::from(130);
        }
    };
    // The program and its output senders are gone; drain what it wrote.
    let _ = printer.await;
    match outcome {
        Err(_) => {
            eprintln!("weft: {} did not finish within {:?}; stopped it", worker.name(), timeout);
            ExitCode::from(124)
        }
        Ok(Err(e)) => {
            eprintln!("weft: {e}");
            ExitCode::from(2)
        }
        Ok(Ok(out)) => match out.status {
            ExitStatus::Success => ExitCode::SUCCESS,
            ExitStatus::Failed(message) => {
                eprintln!("weft: program {} failed: {message}", worker.name());
                ExitCode::from(1)
            }
            ExitStatus::Trapped(message) => {
                eprintln!("weft: program {} trapped: {message}", worker.name());
                ExitCode::from(1)
            }
        },
    }
}
