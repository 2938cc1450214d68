//! The `weft` command line. `main.rs` only calls [`main`]; the tests run the
//! same code through a wrapper binary. Hosting verbs (experiments, submit,
//! ps, logs, kill) are in [`hosting`].

mod build_python;
mod hosting;
mod metrics_flag;
mod say;
mod signals;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use tokio::net::TcpListener;

use crate::cluster::{ClusterConfig, ClusterSpec, TaskId};
use crate::error::Error;
use crate::exec::{DEFAULT_TENSOR_BYTES, HostFiles};
use crate::hosting::{EffectiveLimits, Hosting, HostingConfig, PeerAllowList};
use crate::launch::LaunchFile;
use crate::metrics::HostMetrics;
use crate::rpc::GrpcRemote;
use crate::runtime::{ExitStatus, OutputFollower, Runtime, RuntimeConfig, StreamKind};
use crate::server::{self, HostServices};
use crate::task::Task;
use metrics_flag::{MetricsArgs, spawn_metrics};
use say::LogFormat;
use signals::shutdown_signal;

/// weft: distributed TensorFlow-style graphs, with every program a sandboxed
/// WebAssembly component.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about)]
pub struct Cli {
    /// How weft writes its own log and status lines on stderr (a program's output is passed through as is).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a worker component, streaming its output: on an embedded
    /// single-task host (`/job:localhost/task:0`), or as task J/N of a
    /// cluster, serving that task while it runs.
    Run(RunArgs),
    /// Serve one task of a cluster (TensorFlow's `tf.train.Server`) until
    /// SIGTERM or ctrl-c.
    Serve(ServeArgs),
    /// Start every task of a cluster on this machine, each running the
    /// launch file's program, with output prefixed by task (`[ps:0] ...`).
    Launch(LaunchArgs),
    /// Create, list or delete experiments on running hosts.
    Experiment {
        #[command(subcommand)]
        command: hosting::ExperimentCommand,
    },
    /// Upload a worker module to a host (once per content) and start it as a
    /// program of one of the experiment's tasks.
    Submit(hosting::SubmitArgs),
    /// List the experiment's programs on a host.
    Ps(hosting::Remote),
    /// Print a program's output; `-f` follows it until it ends.
    Logs {
        #[command(flatten)]
        remote: hosting::Remote,
        /// The program's id (from `weft submit` or `weft ps`).
        id: u64,
        /// Keep printing output as it comes, until the program ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Build a Python worker (a directory with `app.py`) into a component,
    /// with componentize-py and the `weft` Python package this binary carries.
    BuildPython(build_python::BuildPythonArgs),
    /// Stop a program.
    Kill {
        #[command(flatten)]
        remote: hosting::Remote,
        /// The program's id.
        id: u64,
    },
}

#[derive(Debug, clap::Args)]
struct LaunchArgs {
    /// Launch file: `[cluster]` jobs and a `[program]` with `module` and `args`.
    file: PathBuf,
    /// Arguments for every program, replacing the file's `args`.
    #[arg(last = true)]
    args: Vec<String>,
    /// Ignore the file's addresses and serve on free loopback ports.
    #[arg(long)]
    free_ports: bool,
    #[command(flatten)]
    files: HostFileArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// Where a host writes what its programs ask for (programs have no files).
#[derive(Debug, Clone, Default, clap::Args)]
struct HostFileArgs {
    /// Write checkpoints (`Saver`) under DIR/<job>-<task>/, and restore from there.
    #[arg(long, value_name = "DIR")]
    checkpoint_dir: Option<PathBuf>,
    /// Write TensorBoard event files (scalar summaries) under DIR/<job>-<task>/.
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
}

impl HostFileArgs {
    fn host_files(&self) -> HostFiles {
        HostFiles { checkpoint_dir: self.checkpoint_dir.clone(), checkpoint_quota: None, log_dir: self.log_dir.clone() }
    }
}

/// Which cluster, and which task of it this process is.
#[derive(Debug, Clone, clap::Args)]
struct ClusterArgs {
    /// Cluster spec: JSON (`{"local": ["127.0.0.1:2222", ...]}`) or TOML. Without it, `TF_CONFIG` is used if set.
    #[arg(long, value_name = "FILE")]
    cluster: Option<PathBuf>,
    /// This task's job (default: TF_CONFIG's task type).
    #[arg(long, value_name = "NAME")]
    job: Option<String>,
    /// This task's index in its job (default: TF_CONFIG's task index, else 0).
    #[arg(long, value_name = "N")]
    task: Option<u32>,
    /// Listen here instead of on the task's address in the cluster spec: in
    /// a container, `0.0.0.0:PORT`, where the spec names the task by a DNS
    /// name that may not resolve yet when it starts (as TensorFlow's
    /// servers listen on every interface).
    #[arg(long, value_name = "ADDR")]
    bind: Option<String>,
}

impl ClusterArgs {
    /// The cluster and this task, if a cluster was given (flag or TF_CONFIG).
    fn resolve(&self) -> Result<Option<(ClusterSpec, TaskId)>, Error> {
        let config = match &self.cluster {
            Some(path) => Some(ClusterConfig::from_file(path)?),
            None => ClusterConfig::from_env()?,
        };
        let Some(config) = config else {
            if self.job.is_some() || self.task.is_some() || self.bind.is_some() {
                return Err(Error::invalid("--job, --task and --bind need --cluster FILE (or TF_CONFIG)"));
            }
            return Ok(None);
        };
        let job = self.job.clone().or_else(|| config.task.as_ref().map(|t| t.job.clone()));
        let Some(job) = job else {
            let jobs: Vec<&str> = config.spec.jobs().keys().map(String::as_str).collect();
            return Err(Error::invalid(format!("which task is this? pass --job (one of: {})", jobs.join(", "))));
        };
        let index = self.task.or(config.task.as_ref().map(|t| t.index)).unwrap_or(0);
        let id = TaskId::new(job, index);
        config.spec.check_task(&id)?;
        Ok(Some((config.spec, id)))
    }
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    /// Serve experiments only, on this address (no cluster task of its own).
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["cluster", "job", "task", "bind"])]
    listen: Option<String>,
    /// Token (16+ characters) that may create, list and delete any
    /// experiment, and grant data directories. Without one, a `--cluster`
    /// host takes no uploads at all.
    #[arg(long, env = "WEFT_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Let anyone who reaches this host create experiments (without a data
    /// directory), not only the admin token's holder.
    #[arg(long)]
    open_experiments: bool,
    /// Addresses experiments' tasks may dial their other tasks at, comma
    /// separated: `*`, `HOST`, `HOST:PORT` or `ADDR/BITS` (e.g.
    /// `10.0.0.0/8,127.0.0.1`). Not needed with `--tls-ca`, where peers prove
    /// with a certificate who they are. Without either, an experiment's
    /// tasks must all be on this host.
    #[arg(long, value_name = "LIST")]
    allow_peers: Option<String>,
    /// Where compiled modules are cached [default: $WEFT_CACHE_DIR or ~/.cache/weft/modules].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Programs this host holds at once, over all experiments.
    #[arg(long, value_name = "N", default_value_t = 1100)]
    max_programs: u32,
    /// Linear memory of one program, in MiB (experiments may ask for less).
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    memory_mib: u64,
    /// CPU time one program may use, in seconds [default: no limit].
    #[arg(long, value_name = "SECS")]
    cpu_seconds: Option<f64>,
    /// Programs one experiment may run at once on this host.
    #[arg(long, value_name = "N", default_value_t = 64)]
    programs_per_experiment: u32,
    /// Bytes one experiment's variables may hold on this host, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    variable_mib: u64,
    /// Size of one uploaded module, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    upload_mib: u64,
    /// Bytes an experiment's checkpoints may take on this host, in MiB (under `--checkpoint-dir`).
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    checkpoint_mib: u64,
    /// Bytes the tensors of one experiment's (or, with `--cluster`, this
    /// task's) running steps may hold at once on this host, in MiB (charged
    /// before each op runs).
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    tensor_mib: u64,
    /// Directory whose subdirectories experiments may be granted (their
    /// `data_dir`), read-only, as `/data`. Without it, programs see no files.
    #[arg(long, value_name = "DIR")]
    data_root: Option<PathBuf>,
    /// Keep experiments (with their tokens) and their uploaded modules here,
    /// so they survive a restart. Programs, logs and variables do not.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Bytes of uploaded modules the state directory keeps, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 4096)]
    module_store_mib: u64,
    /// Bytes of compiled modules the cache directory keeps, in MiB: past it,
    /// the least recently used that no experiment uploaded are deleted.
    #[arg(long, value_name = "MIB", default_value_t = 4096)]
    cache_mib: u64,
    #[command(flatten)]
    files: HostFileArgs,
    #[command(flatten)]
    tls: TlsArgs,
}

/// TLS of a host: what it presents, and the CA it trusts when it calls
/// other hosts.
#[derive(Debug, Clone, clap::Args)]
struct TlsArgs {
    /// This host's certificate chain (PEM): serve TLS only.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA certificate (PEM) that signed the other hosts' certificates: reach them over TLS.
    #[arg(long, value_name = "FILE", env = "WEFT_TLS_CA")]
    tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    fn server(&self) -> Result<Option<crate::tls::ServerTls>, Error> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => crate::tls::ServerTls::from_files(cert, key).map(Some),
            _ => Ok(None),
        }
    }

    fn client(&self) -> Result<Option<crate::tls::ClientTls>, Error> {
        self.tls_ca.as_deref().map(crate::tls::ClientTls::from_file).transpose()
    }
}

impl ServeArgs {
    fn hosting_config(&self) -> Result<HostingConfig, Error> {
        let cpu_time = self
            .cpu_seconds
            .map(Duration::try_from_secs_f64)
            .transpose()
            .map_err(|e| Error::invalid(format!("--cpu-seconds: {e}")))?;
        let mib = |m: u64| usize::try_from(m.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        Ok(HostingConfig {
            runtime: RuntimeConfig {
                cache_dir: self.cache_dir.clone().or_else(RuntimeConfig::default_cache_dir),
                max_programs: self.max_programs,
                max_memory_bytes: mib(self.memory_mib),
                ..RuntimeConfig::default()
            },
            limits: EffectiveLimits {
                memory_bytes: mib(self.memory_mib),
                cpu_time,
                programs: self.programs_per_experiment,
                variable_bytes: mib(self.variable_mib),
                upload_bytes: mib(self.upload_mib),
                checkpoint_bytes: mib(self.checkpoint_mib),
                tensor_bytes: mib(self.tensor_mib),
            },
            admin_token: self.admin_token.clone(),
            open_experiments: self.open_experiments,
            allowed_peers: PeerAllowList::parse(self.allow_peers.as_deref().unwrap_or(""))?,
            client_tls: self.tls.client()?,
            data_root: self.data_root.clone(),
            files: self.files.host_files(),
            state_dir: self.state_dir.clone(),
            module_store_bytes: self.module_store_mib.saturating_mul(1 << 20),
            cache_bytes: self.cache_mib.saturating_mul(1 << 20),
        })
    }
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    /// With a cluster: keep serving the task after the program ends, until SIGTERM or ctrl-c.
    #[arg(long)]
    keep_serving: bool,
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
    #[command(flatten)]
    files: HostFileArgs,
}

/// MatMul threads per process, unless `MATMUL_NUM_THREADS` says: what
/// matrixmultiply chooses (the physical cores, at most 4) for one standalone program (`weft run` without a cluster), one for
/// a cluster's processes, which share the machine's cores with each other
/// (measured: 1 ps + 2 workers ran 126 total steps/s with one thread each,
/// 111 with two).
fn default_matmul_threads(cli: &Cli) {
    // matrixmultiply treats an empty value as unset, and so does this.
    if std::env::var_os("MATMUL_NUM_THREADS").is_some_and(|v| !v.is_empty()) {
        return;
    }
    let standalone = matches!(&cli.command, Command::Run(args)
        if args.cluster.cluster.is_none() && std::env::var_os("TF_CONFIG").is_none());
    if !standalone {
        // SAFETY: called first thing in `main`, before any other thread exists.
        unsafe { std::env::set_var("MATMUL_NUM_THREADS", "1") };
    }
}

/// Exit codes: 0 success, 1 the program failed or trapped, 2 weft could not
/// run it (bad module, bad flags), 124 timed out, 130 interrupted.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    default_matmul_threads(&cli);
    say::init(cli.log_format);
    let tokio = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = match cli.command {
        Command::Run(args) => tokio.block_on(run(args)),
        Command::Serve(args) => tokio.block_on(serve(args)),
        Command::Launch(args) => tokio.block_on(launch(args)),
        Command::BuildPython(args) => build_python::build_python(args),
        verb => tokio.block_on(hosting::run_verb(verb)),
    };
    // Work still going (a host interrupted while it compiled modules on
    // blocking threads) does not keep the process alive.
    tokio.shutdown_timeout(server::SHUTDOWN_GRACE);
    code
}

/// This task of `cluster`, reaching the other tasks over gRPC, and its
/// server, listening on the task's address.
async fn start_task(
    cluster: ClusterSpec,
    id: TaskId,
    bind: Option<&str>,
    tls: Option<crate::tls::ClientTls>,
    files: &HostFiles,
    tensor_bytes: usize,
) -> Result<(Arc<Task>, TcpListener), Error> {
    let budgets = crate::exec::Budgets::task(&id, tensor_bytes);
    let task = Task::with_budgets(cluster.clone(), id, &budgets, files)?
        .with_remote(Arc::new(GrpcRemote::new(cluster).with_tls(tls)));
    let address = bind.unwrap_or(task.address()).to_string();
    let listener = TcpListener::bind(&address)
        .await
        .map_err(|e| Error::io(format!("listening on {address} for {}", task.id()), e))?;
    Ok((Arc::new(task), listener))
}

async fn launch(args: LaunchArgs) -> ExitCode {
    // Caught from here on, compiling included (see `serve`).
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let loaded = async {
        let mut file = LaunchFile::read(&args.file)?;
        if !args.args.is_empty() {
            file.args = args.args.clone();
        }
        let config = RuntimeConfig {
            cache_dir: RuntimeConfig::default_cache_dir(),
            max_programs: file.cluster.tasks().len() as u32 + 2,
            ..RuntimeConfig::default()
        };
        let module = file.module.clone();
        let metrics_listener = args.metrics.bind().await?;
        let (runtime, worker) = tokio::task::spawn_blocking(move || {
            let runtime = Runtime::new(config)?;
            let worker = runtime.load_file(&module)?;
            Ok::<_, Error>((runtime, worker))
        })
        .await
        .map_err(|e| Error::internal(format!("loading panicked: {e}")))??;
        Ok::<_, Error>((file, runtime, worker, metrics_listener))
    };
    let loaded = tokio::select! {
        r = loaded => r,
        () = &mut stop => {
            say::warn("interrupted while loading");
            return ExitCode::from(130);
        }
    };
    let (file, runtime, worker, metrics_listener) = match loaded {
        Ok(t) => t,
        Err(e) => {
            say::error(e);
            return ExitCode::from(2);
        }
    };
    let files = args.files.host_files();
    let metrics = Arc::new(HostMetrics::new(None));
    spawn_metrics(metrics_listener, &metrics);
    let report = tokio::select! {
        r = crate::launch::launch(&runtime, &worker, &file, args.free_ports, &files, Some(&metrics)) => r,
        () = &mut stop => {
            say::warn(format_args!("interrupted; stopped every task"));
            return ExitCode::from(130);
        }
    };
    match report {
        Err(e) => {
            say::error(e);
            ExitCode::from(2)
        }
        Ok(report) => {
            for (task, status) in &report.tasks {
                match status {
                    Ok(ExitStatus::Success) => {}
                    Ok(status) => say::error(format_args!("program on {task} {status}")),
                    Err(e) => say::error(format_args!("program on {task} could not run: {e}")),
                }
            }
            if report.success() { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    // Caught from here on: a SIGTERM while the host restores its
    // experiments (which may compile modules) stops it too.
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let started = async {
        let config = args.hosting_config()?;
        let server_tls = args.tls.server()?;
        let metrics_listener = args.metrics.bind().await?;
        let (own, listener, label) = match &args.listen {
            Some(address) => {
                let listener =
                    TcpListener::bind(address).await.map_err(|e| Error::io(format!("listening on {address}"), e))?;
                (None, listener, "experiments".to_string())
            }
            None => {
                let Some((cluster, id)) = args.cluster.resolve()? else {
                    return Err(Error::invalid(
                        "weft serve needs --listen ADDR, or --cluster FILE --job NAME --task N (or TF_CONFIG)",
                    ));
                };
                let (task, listener) = start_task(
                    cluster,
                    id,
                    args.cluster.bind.as_deref(),
                    config.client_tls.clone(),
                    &args.files.host_files(),
                    config.limits.tensor_bytes,
                )
                .await?;
                let label = task.id().to_string();
                (Some(task), listener, label)
            }
        };
        let hosting = tokio::task::spawn_blocking(move || Hosting::new(config, own))
            .await
            .map_err(|e| Error::internal(format!("starting the runtime panicked: {e}")))??;
        Ok::<_, Error>((Arc::new(hosting), listener, label, server_tls, metrics_listener))
    };
    let started = tokio::select! {
        r = started => r,
        () = &mut stop => {
            say::warn("interrupted while starting");
            return ExitCode::from(130);
        }
    };
    let (hosting, listener, label, tls, metrics_listener) = match started {
        Ok(t) => t,
        Err(e) => {
            say::error(e);
            return ExitCode::from(2);
        }
    };
    let address = listener.local_addr().map_or_else(|_| "?".to_string(), |a| a.to_string());
    say::info(format_args!("serving {label} on {address}"));
    if args.listen.is_some() && args.admin_token.is_none() && !args.open_experiments {
        say::warn(
            "no --admin-token and no --open-experiments: nobody can create experiments on this host \
             (only those kept in --state-dir run)",
        );
    }
    let metrics = Arc::new(HostMetrics::new(Some(hosting.clone())));
    spawn_metrics(metrics_listener, &metrics);
    let mut services = HostServices::hosting(&hosting, tls);
    services.rpc = metrics.rpc().clone();
    if args.listen.is_none() && args.admin_token.is_none() {
        // A cluster task server takes uploads only when an admin token guards them.
        services.control = None;
    }
    match server::serve_host(listener, services, &label, stop).await {
        Ok(()) => {
            say::info(format_args!("{label} stopped"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            say::error(e);
            ExitCode::from(1)
        }
    }
}

async fn run(args: RunArgs) -> ExitCode {
    // Caught from here on, loading included: at PID 1 in a container an
    // unhandled SIGTERM would be ignored. `after` ends a --keep-serving
    // server once the program is done.
    let interrupted = shutdown_signal();
    let after = shutdown_signal();
    let mut server: Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)> = None;
    let cache_dir = if args.no_cache { None } else { args.cache_dir.clone().or_else(RuntimeConfig::default_cache_dir) };
    let config = RuntimeConfig {
        cache_dir,
        max_programs: 4,
        max_memory_bytes: args.max_memory_mib.saturating_mul(1 << 20),
        ..RuntimeConfig::default()
    };
    let module = args.module.clone();
    let loading = tokio::task::spawn_blocking(move || {
        let runtime = Runtime::new(config)?;
        let worker = runtime.load_file(&module)?;
        Ok::<_, Error>((runtime, worker))
    });
    tokio::pin!(interrupted);
    let loaded = tokio::select! {
        r = loading => r,
        () = &mut interrupted => {
            say::warn(format_args!("interrupted while loading {}", args.module.display()));
            return ExitCode::from(130);
        }
    };
    let (runtime, worker) = match loaded {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            say::error(e);
            return ExitCode::from(2);
        }
        Err(e) => {
            say::error(format_args!("loading {} panicked: {e}", args.module.display()));
            return ExitCode::from(2);
        }
    };
    tracing::info!(module = worker.name(), sha256 = worker.hash(), source = ?worker.source(), load = ?worker.load_time(), "loaded");
    let metrics_listener = match args.metrics.bind().await {
        Ok(l) => l,
        Err(e) => {
            say::error(e);
            return ExitCode::from(2);
        }
    };

    let metrics_rpc = Arc::new(crate::metrics::RpcMetrics::default());
    let task = match args.cluster.resolve() {
        Ok(None) => Arc::new(Task::standalone_with_files(&args.files.host_files())),
        Ok(Some((cluster, id))) => {
            let bind = args.cluster.bind.as_deref();
            match start_task(cluster, id, bind, None, &args.files.host_files(), DEFAULT_TENSOR_BYTES).await {
                Ok((task, listener)) => {
                    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                    let served = task.clone();
                    let rpc = metrics_rpc.clone();
                    let keep = args.keep_serving;
                    let handle = tokio::spawn(async move {
                        let until = async move {
                            let _ = stopped.await;
                            if keep {
                                after.await;
                            }
                        };
                        if let Err(e) = server::serve_measured(listener, served, rpc, until).await {
                            say::error(e);
                        }
                    });
                    server = Some((stop, handle));
                    task
                }
                Err(e) => {
                    say::error(e);
                    return ExitCode::from(2);
                }
            }
        }
        Err(e) => {
            say::error(e);
            return ExitCode::from(2);
        }
    };

    let metrics = Arc::new(HostMetrics::with_rpc(None, metrics_rpc));
    metrics.add_task(task.clone());
    let task_id = task.id().clone();
    metrics.set_program_state(&task_id, "running");
    spawn_metrics(metrics_listener, &metrics);
    let program = runtime.run(&worker, task, args.args.clone(), Some(Arc::new(Terminal)));
    let timeout = match args.timeout.map(Duration::try_from_secs_f64).transpose() {
        Ok(t) => t.unwrap_or(Duration::MAX),
        Err(e) => {
            say::error(format_args!("--timeout {}: {e}", args.timeout.unwrap_or_default()));
            return ExitCode::from(2);
        }
    };
    // SIGTERM (Kubernetes stopping a pod) stops the program as ctrl-c does.
    let outcome = tokio::select! {
        r = tokio::time::timeout(timeout, program) => r,
        _ = interrupted => {
            say::warn(format_args!("interrupted; stopped {}", worker.name()));
            return ExitCode::from(130);
        }
    };
    let _ = std::io::stdout().flush();
    metrics.set_program_state(
        &task_id,
        match &outcome {
            Ok(Ok(out)) => {
                crate::metrics::collect::state_label(&crate::hosting::ProgramState::Exited(out.status.clone()))
            }
            Ok(Err(_)) => "not-started",
            Err(_) => "killed",
        },
    );
    let code = exit_code(&worker, timeout, outcome);
    if let Some((stop, handle)) = server {
        if args.keep_serving {
            say::info(format_args!("program ended; still serving until SIGTERM or ctrl-c"));
        }
        // Without --keep-serving the server stops now; with it, on the signal.
        let _ = stop.send(());
        let _ = handle.await;
    }
    code
}

fn exit_code(
    worker: &crate::runtime::LoadedModule,
    timeout: Duration,
    outcome: Result<Result<crate::runtime::ProgramOutput, Error>, tokio::time::error::Elapsed>,
) -> ExitCode {
    match outcome {
        Err(_) => {
            say::error(format_args!("{} did not finish within {:?}; stopped it", worker.name(), timeout));
            ExitCode::from(124)
        }
        Ok(Err(e)) => {
            say::error(e);
            ExitCode::from(2)
        }
        Ok(Ok(out)) => match out.status {
            ExitStatus::Success => ExitCode::SUCCESS,
            status => {
                say::error(format_args!("program {} {status}", worker.name()));
                ExitCode::from(1)
            }
        },
    }
}

/// `weft run`'s program output: straight to this process's stdout and
/// stderr as the program writes it.
struct Terminal;

impl OutputFollower for Terminal {
    fn output(&self, stream: StreamKind, bytes: &[u8]) {
        let _ = match stream {
            StreamKind::Stdout => std::io::stdout().lock().write_all(bytes),
            StreamKind::Stderr => std::io::stderr().lock().write_all(bytes),
        };
    }
}
