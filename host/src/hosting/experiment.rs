//! One experiment as a host holds it: the tasks it serves here (each with
//! its own devices, hence its own variables, and a gRPC client that carries
//! the experiment's token to its other tasks), its limits, the modules it
//! uploaded, and its programs.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use super::limits::EffectiveLimits;
use super::programs::ProgramRecord;
use crate::cluster::{ClusterSpec, TaskId};
use crate::error::{Code, Error, Result};
use crate::exec::{Budgets, ByteBudget, HostFiles, LocalDevices};
use crate::rpc::{Credentials, GrpcRemote, ServedTask};
use crate::task::Task;
use crate::tls::ClientTls;

/// Finished programs an experiment keeps records of; older ones are forgotten.
pub const MAX_FINISHED_RECORDS: usize = 128;

/// Tasks one experiment may have on one host.
pub const MAX_TASKS_PER_HOST: usize = 64;

/// What it takes to create an experiment on a host.
#[derive(Clone, Debug)]
pub struct ExperimentSpec {
    /// Its name: letters, digits, `-`, `_`, `.`; at most 64.
    pub name: String,
    /// The bearer token its clients must present (at least 16 characters).
    pub token: String,
    /// Every task of the experiment, by job, at the address of its host.
    pub cluster: ClusterSpec,
    /// The tasks this host serves.
    pub tasks: Vec<TaskId>,
    /// Its limits (unset fields take the host's).
    pub limits: super::Limits,
    /// The data directory it asks for (a subdirectory of the host's data
    /// root), which its programs may read as `/data`.
    pub data_dir: Option<String>,
}

/// An experiment on this host.
pub struct Experiment {
    spec: ExperimentSpec,
    name: String,
    token: String,
    cluster: ClusterSpec,
    limits: EffectiveLimits,
    data_dir: Option<PathBuf>,
    tasks: BTreeMap<TaskId, Arc<ServedTask>>,
    budget: Arc<ByteBudget>,
    modules: Mutex<HashSet<String>>,
    programs: Mutex<Programs>,
    /// Log streams of its programs open on this host at once.
    log_streams: Arc<tokio::sync::Semaphore>,
}

/// Log streams one experiment may keep open on a host at once.
pub const MAX_LOG_STREAMS: usize = 16;

#[derive(Default)]
struct Programs {
    by_id: BTreeMap<u64, Arc<ProgramRecord>>,
    /// CPU time of the finished programs it forgot (to make room).
    forgotten_cpu: std::time::Duration,
    /// Set when the experiment is deleted: no program starts after that.
    closed: bool,
}

impl std::fmt::Debug for Experiment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Experiment")
            .field("name", &self.name)
            .field("tasks", &self.tasks.keys())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `<dir>/experiments/<name>`: apart from the host's own task directories
/// (`<dir>/<job>-<task>`), whatever the experiment is called.
pub fn experiment_dir(dir: &std::path::Path, name: &str) -> PathBuf {
    dir.join("experiments").join(name)
}

/// Checks an experiment's name: it travels in a header and shows in logs.
pub fn check_name(name: &str) -> Result<()> {
    // Names are directory names (state, checkpoints): no '.' or '..'.
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "experiment name '{name}' is not valid: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"
        )))
    }
}

impl Experiment {
    /// Creates `spec` under the host's limits.
    /// Its tasks reach their other hosts over TLS when `tls` is given; its
    /// programs may read `data_dir` (the host resolved and checked it).
    pub fn new(
        spec: ExperimentSpec,
        host_limits: &EffectiveLimits,
        tls: Option<ClientTls>,
        data_dir: Option<PathBuf>,
        host_files: &HostFiles,
    ) -> Result<Self> {
        check_name(&spec.name)?;
        if spec.token.len() < 16 || !spec.token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid(format!(
                "the token of experiment '{}' must be at least 16 printable ASCII characters",
                spec.name
            )));
        }
        if spec.tasks.len() > MAX_TASKS_PER_HOST {
            return Err(Error::invalid(format!(
                "experiment '{}' asks this host to serve {} tasks; at most {MAX_TASKS_PER_HOST}",
                spec.name,
                spec.tasks.len()
            )));
        }
        if spec.tasks.is_empty() {
            return Err(Error::invalid(format!("experiment '{}' gives this host no tasks to serve", spec.name)));
        }
        for t in &spec.tasks {
            spec.cluster.check_task(t)?;
        }
        let limits = host_limits.narrowed_by(&spec.limits);
        let budget = Arc::new(ByteBudget::new(format!("experiment '{}'", spec.name), limits.variable_bytes));
        // The experiment's own checkpoint and event directories, its quota.
        let files = HostFiles {
            checkpoint_dir: host_files.checkpoint_dir.as_ref().map(|d| experiment_dir(d, &spec.name)),
            checkpoint_quota: Some(limits.checkpoint_bytes as u64),
            log_dir: host_files.log_dir.as_ref().map(|d| experiment_dir(d, &spec.name)),
        };
        let budgets = Budgets {
            variables: Some(budget.clone()),
            tensors: Some(Arc::new(ByteBudget::tensors(format!("experiment '{}'", spec.name), limits.tensor_bytes))),
        };
        let devices = Arc::new(LocalDevices::with_files(spec.tasks.iter().cloned(), &budgets, &files));
        let remote = Arc::new(
            GrpcRemote::new(spec.cluster.clone())
                .with_credentials(Credentials::experiment(&spec.name, &spec.token))
                .with_tls(tls),
        );
        let mut tasks = BTreeMap::new();
        for id in &spec.tasks {
            let task =
                Task::with_devices(spec.cluster.clone(), id.clone(), devices.clone())?.with_remote(remote.clone());
            tasks.insert(id.clone(), Arc::new(ServedTask::new(Arc::new(task))));
        }
        Ok(Experiment {
            name: spec.name.clone(),
            token: spec.token.clone(),
            cluster: spec.cluster.clone(),
            spec,
            limits,
            data_dir,
            tasks,
            budget,
            modules: Mutex::default(),
            programs: Mutex::default(),
            log_streams: Arc::new(tokio::sync::Semaphore::new(MAX_LOG_STREAMS)),
        })
    }

    /// Room for one more open log stream, held until the stream ends; past
    /// [`MAX_LOG_STREAMS`], `resource-exhausted`.
    pub fn log_stream(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        self.log_streams.clone().try_acquire_owned().map_err(|_| {
            Error::status(
                Code::ResourceExhausted,
                format!(
                    "log-streams limit: experiment '{}' already has {MAX_LOG_STREAMS} log streams open on this host",
                    self.name
                ),
            )
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `token` is its token (compared in constant time).
    pub fn accepts(&self, token: &str) -> bool {
        crate::rpc::auth::same_token(token, &self.token)
    }

    /// All its tasks, by job.
    pub fn cluster(&self) -> &ClusterSpec {
        &self.cluster
    }

    /// The limits in force.
    pub fn limits(&self) -> &EffectiveLimits {
        &self.limits
    }

    /// The host directory its programs read as `/data`, if granted.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.data_dir.as_deref()
    }

    /// The tasks served here.
    pub fn tasks(&self) -> impl Iterator<Item = &TaskId> {
        self.tasks.keys()
    }

    /// The served task `id`, or `not-found` naming what is served.
    pub fn served(&self, id: &TaskId) -> Result<Arc<ServedTask>> {
        self.tasks.get(id).cloned().ok_or_else(|| {
            let here: Vec<String> = self.tasks.keys().map(ToString::to_string).collect();
            Error::not_found(format!(
                "experiment '{}' has no task {id} on this host (it serves {})",
                self.name,
                here.join(", ")
            ))
        })
    }

    /// Its tasks on this host, as served.
    pub fn served_tasks(&self) -> impl Iterator<Item = &Arc<ServedTask>> {
        self.tasks.values()
    }

    /// Bytes its variables hold on this host.
    pub fn variable_bytes(&self) -> usize {
        self.budget.used()
    }

    /// What it was created from.
    pub fn spec(&self) -> &ExperimentSpec {
        &self.spec
    }

    /// The sha256 of every module it uploaded, sorted.
    pub fn modules(&self) -> Vec<String> {
        let mut m: Vec<String> = lock(&self.modules).iter().cloned().collect();
        m.sort();
        m
    }

    /// Whether it uploaded the module with this sha256.
    pub fn has_module(&self, sha256: &str) -> bool {
        lock(&self.modules).contains(sha256)
    }

    /// Records that it uploaded the module with this sha256.
    pub fn add_module(&self, sha256: &str) {
        lock(&self.modules).insert(sha256.to_string());
    }

    /// Whether it was deleted.
    pub fn is_closed(&self) -> bool {
        lock(&self.programs).closed
    }

    /// Its program `id`, if it has one.
    pub fn program(&self, id: u64) -> Option<Arc<ProgramRecord>> {
        lock(&self.programs).by_id.get(&id).cloned()
    }

    /// Its programs, oldest first.
    pub fn programs(&self) -> Vec<Arc<ProgramRecord>> {
        lock(&self.programs).by_id.values().cloned().collect()
    }

    /// CPU time of its programs on this host ([`ProgramRecord::cpu_time`]),
    /// forgotten ones included.
    pub fn cpu_time(&self) -> std::time::Duration {
        let programs = lock(&self.programs);
        programs.forgotten_cpu + programs.by_id.values().map(|p| p.cpu_time()).sum::<std::time::Duration>()
    }

    /// Programs still compiling or running, or killed with host work for
    /// them not yet stopped.
    pub fn running(&self) -> usize {
        lock(&self.programs).by_id.values().filter(|p| p.holds_slot()).count()
    }

    /// Adds a program, unless the experiment was deleted or that would exceed
    /// its programs limit. Returns the ids of finished programs it forgot to
    /// make room.
    pub fn add_program(&self, record: Arc<ProgramRecord>) -> Result<Vec<u64>> {
        let mut programs = lock(&self.programs);
        if programs.closed {
            return Err(Error::not_found(format!("experiment '{}' was deleted", self.name)));
        }
        let running = programs.by_id.values().filter(|p| p.holds_slot()).count();
        if running >= self.limits.programs as usize {
            return Err(Error::status(
                Code::ResourceExhausted,
                format!(
                    "programs limit: experiment '{}' already runs {running} programs on this host, its limit",
                    self.name
                ),
            ));
        }
        let finished: Vec<u64> = programs.by_id.iter().filter(|(_, p)| !p.holds_slot()).map(|(&id, _)| id).collect();
        let forget: Vec<u64> =
            finished.iter().copied().take(finished.len().saturating_sub(MAX_FINISHED_RECORDS - 1)).collect();
        for id in &forget {
            if let Some(p) = programs.by_id.remove(id) {
                programs.forgotten_cpu += p.cpu_time();
            }
        }
        programs.by_id.insert(record.id, record);
        Ok(forget)
    }

    /// Stops every program; returns how many were still going.
    pub fn stop_all(&self) -> usize {
        let programs: Vec<Arc<ProgramRecord>> = {
            let mut p = lock(&self.programs);
            p.closed = true;
            p.by_id.values().cloned().collect()
        };
        programs.iter().filter(|p| p.kill()).count()
    }
}
