//! The hosting verbs of `weft`: `experiment create|list|delete`, `submit`,
//! `ps`, `logs`, `kill`. Each is a client of hosts' `ControlService`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cluster::TaskId;
use crate::error::{Error, Result};
use crate::hosting::{ControlClient, Limits, check_name};
use crate::rpc::Credentials;
use crate::rpc::pb;
use crate::tls::ClientTls;

/// Which host, and which experiment with which token.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// The host's address.
    #[arg(long, env = "WEFT_HOST", default_value = "127.0.0.1:7070")]
    host: String,
    /// The experiment.
    #[arg(long, env = "WEFT_EXPERIMENT")]
    experiment: String,
    /// The experiment's token.
    #[arg(long, env = "WEFT_TOKEN", hide_env_values = true)]
    token: String,
    /// CA certificate (PEM) that signed the host's certificate: connect over TLS.
    #[arg(long, value_name = "FILE", env = "WEFT_TLS_CA")]
    tls_ca: Option<PathBuf>,
}

/// `weft experiment ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ExperimentCommand {
    /// Create an experiment on every host its file names: a TOML file with
    /// `name`, optional `token` and `data_dir`, `[cluster]` (job = [host
    /// addresses]) and `[limits]`.
    Create {
        /// The experiment file.
        file: PathBuf,
        /// The hosts' admin token, if they have one.
        #[arg(long, env = "WEFT_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// CA certificate (PEM) that signed the hosts' certificates: connect over TLS.
        #[arg(long, value_name = "FILE", env = "WEFT_TLS_CA")]
        tls_ca: Option<PathBuf>,
    },
    /// List the experiments a host holds: yours with your token, all with the admin token.
    List {
        /// The host's address.
        #[arg(long, env = "WEFT_HOST", default_value = "127.0.0.1:7070")]
        host: String,
        /// An experiment's token (with --experiment) or the admin token.
        #[arg(long, env = "WEFT_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The experiment whose token --token is.
        #[arg(long, env = "WEFT_EXPERIMENT")]
        experiment: Option<String>,
        /// CA certificate (PEM) that signed the hosts' certificates: connect over TLS.
        #[arg(long, value_name = "FILE", env = "WEFT_TLS_CA")]
        tls_ca: Option<PathBuf>,
    },
    /// Delete an experiment on every host its file names: stops its
    /// programs and frees its variables, graphs and logs.
    Delete {
        /// The experiment file it was created from.
        file: PathBuf,
        /// Its token (default: the file's).
        #[arg(long, env = "WEFT_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// CA certificate (PEM) that signed the hosts' certificates: connect over TLS.
        #[arg(long, value_name = "FILE", env = "WEFT_TLS_CA")]
        tls_ca: Option<PathBuf>,
    },
}

/// `weft submit`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    remote: Remote,
    /// The task's job.
    #[arg(long)]
    job: String,
    /// The task's index.
    #[arg(long, default_value_t = 0)]
    task: u32,
    /// A name for `weft ps` (default: the module's hash prefix).
    #[arg(long)]
    name: Option<String>,
    /// Stream the program's output until it ends; exit with its status.
    #[arg(long, short)]
    follow: bool,
    /// The worker component.
    module: PathBuf,
    /// Arguments passed to the program's `run`.
    #[arg(last = true)]
    args: Vec<String>,
}

/// An experiment file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentFile {
    name: String,
    token: Option<String>,
    cluster: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    limits: Limits,
    /// A subdirectory of each host's data root, readable as `/data`.
    data_dir: Option<String>,
}

impl ExperimentFile {
    fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let file: ExperimentFile =
            toml::from_str(&text).map_err(|e| Error::invalid(format!("experiment file {}: {e}", path.display())))?;
        check_name(&file.name)?;
        if file.cluster.is_empty() || file.cluster.values().any(Vec::is_empty) {
            return Err(Error::invalid(format!("experiment file {}: every job needs a host", path.display())));
        }
        Ok(file)
    }

    /// Each host address with the tasks it serves.
    fn hosts(&self) -> BTreeMap<&str, Vec<TaskId>> {
        let mut hosts: BTreeMap<&str, Vec<TaskId>> = BTreeMap::new();
        for (job, addresses) in &self.cluster {
            for (i, a) in addresses.iter().enumerate() {
                hosts.entry(a.as_str()).or_default().push(TaskId::new(job.clone(), i as u32));
            }
        }
        hosts
    }
}

async fn connect(host: &str, tls_ca: Option<&Path>, credentials: Credentials) -> Result<ControlClient> {
    let tls = tls_ca.map(ClientTls::from_file).transpose()?;
    ControlClient::connect(host, tls.as_ref(), credentials).await
}

fn admin(token: Option<&str>) -> Credentials {
    Credentials { experiment: None, admin: token.map(str::to_string) }
}

async fn create(file: &Path, admin_token: Option<String>, tls_ca: Option<&Path>) -> Result<()> {
    let file = ExperimentFile::read(file)?;
    let token = file.token.clone().unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
    let cluster: std::collections::HashMap<String, pb::Job> =
        file.cluster.iter().map(|(j, a)| (j.clone(), pb::Job { addresses: a.clone() })).collect();
    let limits = crate::hosting::limits_to_pb(&file.limits);
    // First, so that it is known even if a later host refuses.
    println!("token: {token}");
    for (host, tasks) in file.hosts() {
        let req = pb::CreateExperimentRequest {
            name: file.name.clone(),
            token: token.clone(),
            cluster: cluster.clone(),
            tasks: tasks.iter().map(|t| pb::TaskRef { job: t.job.clone(), index: t.index }).collect(),
            limits: Some(limits),
            data_dir: file.data_dir.clone().unwrap_or_default(),
        };
        connect(host, tls_ca, admin(admin_token.as_deref())).await?.create_experiment(req).await?;
        let names: Vec<String> = tasks.iter().map(|t| format!("{}:{}", t.job, t.index)).collect();
        println!("created experiment '{}' on {host} ({})", file.name, names.join(", "));
    }
    Ok(())
}

async fn list(host: &str, experiment: Option<String>, token: Option<String>, tls_ca: Option<&Path>) -> Result<()> {
    let credentials = match (experiment, token) {
        (Some(e), Some(t)) => Credentials::experiment(e, t),
        (None, t) => admin(t.as_deref()),
        (Some(e), None) => return Err(Error::invalid(format!("--experiment {e} needs --token (or WEFT_TOKEN)"))),
    };
    let experiments = connect(host, tls_ca, credentials).await?.list_experiments().await?;
    println!("{:<24} {:<28} {:>8} {:>14} {:>10}", "EXPERIMENT", "TASKS HERE", "RUNNING", "VARIABLE BYTES", "CPU");
    for e in experiments {
        let tasks: Vec<String> = e.tasks.iter().map(|t| format!("{}:{}", t.job, t.index)).collect();
        let cpu = cpu_text(e.cpu_micros);
        println!("{:<24} {:<28} {:>8} {:>14} {cpu:>10}", e.name, tasks.join(","), e.programs_running, e.variable_bytes);
    }
    Ok(())
}

async fn delete(file: &Path, token: Option<String>, tls_ca: Option<&Path>) -> Result<()> {
    let file = ExperimentFile::read(file)?;
    let token = token
        .or(file.token.clone())
        .ok_or_else(|| Error::invalid(format!("deleting '{}' needs its token (--token or WEFT_TOKEN)", file.name)))?;
    let credentials = Credentials::experiment(&file.name, token);
    for host in file.hosts().keys() {
        let stopped = connect(host, tls_ca, credentials.clone()).await?.delete_experiment(&file.name).await?;
        println!("deleted experiment '{}' on {host} ({stopped} programs stopped)", file.name);
    }
    Ok(())
}

impl Remote {
    fn credentials(&self) -> Credentials {
        Credentials::experiment(&self.experiment, &self.token)
    }

    async fn connect(&self) -> Result<ControlClient> {
        connect(&self.host, self.tls_ca.as_deref(), self.credentials()).await
    }
}

/// A state as `weft ps` shows it.
fn state_text(p: &pb::ProgramInfo) -> String {
    let state = pb::ProgramState::try_from(p.state).unwrap_or(pb::ProgramState::Unspecified);
    let name = state.as_str_name().trim_start_matches("PROGRAM_STATE_").to_lowercase();
    if p.detail.is_empty() {
        name
    } else if p.code.is_empty() || p.code == name {
        format!("{name}: {}", p.detail)
    } else {
        format!("{name}: {}: {}", p.code, p.detail)
    }
}

/// Prints a program's output, following it if asked; returns its final info.
async fn print_logs(client: &mut ControlClient, id: u64, follow: bool) -> Result<Option<pb::ProgramInfo>> {
    let mut stream = client.logs(id, follow).await?;
    let mut end = None;
    while let Some(chunk) = stream.next().await? {
        let _ = match chunk.stream {
            1 => std::io::stdout().lock().write_all(&chunk.data),
            2 => std::io::stderr().lock().write_all(&chunk.data),
            _ => Ok(()),
        };
        if chunk.end.is_some() {
            end = chunk.end;
        }
    }
    let _ = std::io::stdout().flush();
    Ok(end)
}

fn exit_for(info: Option<&pb::ProgramInfo>) -> ExitCode {
    match info {
        Some(p) if p.state == pb::ProgramState::Succeeded as i32 => ExitCode::SUCCESS,
        Some(p) => {
            super::say::error(format_args!("program {} {}", p.id, state_text(p)));
            ExitCode::from(1)
        }
        None => ExitCode::from(1),
    }
}

async fn submit(args: SubmitArgs) -> Result<ExitCode> {
    let bytes = std::fs::read(&args.module).map_err(|e| Error::io(format!("reading {}", args.module.display()), e))?;
    let mut client = args.remote.connect().await?;
    let sha256 = client.upload(&bytes).await?;
    let name = args.name.clone().or_else(|| args.module.file_stem().map(|s| s.to_string_lossy().into_owned()));
    let req = pb::StartProgramRequest {
        module_sha256: sha256,
        name: name.unwrap_or_default(),
        task: Some(pb::TaskRef { job: args.job.clone(), index: args.task }),
        args: args.args.clone(),
    };
    let info = client.start(req).await?;
    super::say::info(format_args!("program {} started on {} as {}:{}", info.id, args.remote.host, args.job, args.task));
    if !args.follow {
        println!("{}", info.id);
        return Ok(ExitCode::SUCCESS);
    }
    let end = print_logs(&mut client, info.id, true).await?;
    Ok(exit_for(end.as_ref()))
}

async fn ps(remote: Remote) -> Result<ExitCode> {
    let programs = remote.connect().await?.programs().await?;
    println!("{:>6} {:<20} {:<12} {:>10} STATE", "ID", "NAME", "TASK", "CPU");
    for p in programs {
        let task = p.task.as_ref().map(|t| format!("{}:{}", t.job, t.index)).unwrap_or_default();
        println!("{:>6} {:<20} {:<12} {:>10} {}", p.id, p.name, task, cpu_text(p.cpu_micros), state_text(&p));
    }
    Ok(ExitCode::SUCCESS)
}

/// CPU time as `weft ps` and `experiment list` show it: seconds, to the
/// millisecond.
fn cpu_text(micros: u64) -> String {
    format!("{:.3}s", micros as f64 / 1e6)
}

async fn kill(remote: Remote, id: u64) -> Result<ExitCode> {
    let info = remote.connect().await?.kill(id).await?;
    println!("{} {}", info.id, state_text(&info));
    Ok(ExitCode::SUCCESS)
}

/// Runs a hosting verb; errors print as `weft: ...` with exit code 2.
pub(super) async fn run_verb(verb: super::Command) -> ExitCode {
    let result = match verb {
        super::Command::Experiment { command } => match command {
            ExperimentCommand::Create { file, admin_token, tls_ca } => {
                create(&file, admin_token, tls_ca.as_deref()).await.map(|()| ExitCode::SUCCESS)
            }
            ExperimentCommand::List { host, token, experiment, tls_ca } => {
                list(&host, experiment, token, tls_ca.as_deref()).await.map(|()| ExitCode::SUCCESS)
            }
            ExperimentCommand::Delete { file, token, tls_ca } => {
                delete(&file, token, tls_ca.as_deref()).await.map(|()| ExitCode::SUCCESS)
            }
        },
        super::Command::Submit(args) => submit(args).await,
        super::Command::Ps(remote) => ps(remote).await,
        super::Command::Logs { remote, id, follow } => match remote.connect().await {
            Ok(mut client) => match print_logs(&mut client, id, follow).await {
                Ok(end) if follow => Ok(exit_for(end.as_ref())),
                Ok(_) => Ok(ExitCode::SUCCESS),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        super::Command::Kill { remote, id } => kill(remote, id).await,
        _ => unreachable!("not a hosting verb"),
    };
    result.unwrap_or_else(|e| {
        super::say::error(e.message());
        ExitCode::from(2)
    })
}
