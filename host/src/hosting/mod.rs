//! Hosting: one set of hosts serving many experiments side by side. A host
//! takes module uploads (kept by content hash, compiled off the async
//! threads), starts them as programs of an experiment's tasks under the
//! experiment's limits, and keeps every experiment's variables, graphs,
//! programs and logs apart. Credentials are checked for every call, control
//! and data alike ([`Hosting`] is the host's [`Authenticator`]).

mod client;
mod control;
mod experiment;
mod limits;
mod peers;
mod persist;
mod programs;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tonic::Status;
use tonic::metadata::MetadataMap;

pub use client::{ControlClient, LogStream};
pub use control::ControlService;
pub(crate) use control::limits_to_pb;
pub use experiment::{Experiment, ExperimentSpec, check_name};
pub use limits::{EffectiveLimits, Limits};
pub use peers::PeerAllowList;
pub use programs::{LogCursor, ProgramRecord, ProgramState};

use crate::cluster::TaskId;
use crate::error::{Code, Error, Result};
use crate::rpc::auth::{bearer_token, experiment_of, same_token};
use crate::rpc::{Authenticator, Caller, ServedTask, SingleTask, TaskDirectory};
use crate::runtime::{LoadedModule, Runtime, RuntimeConfig, module_hash};

/// A host's hosting settings.
#[derive(Clone, Debug)]
pub struct HostingConfig {
    /// The wasmtime runtime (cache directory, pooling slots, memory ceiling).
    pub runtime: RuntimeConfig,
    /// The host's limits: defaults and ceilings of every experiment's.
    pub limits: EffectiveLimits,
    /// Lets its holder create, list and delete any experiment.
    pub admin_token: Option<String>,
    /// Whether callers without the admin token may create experiments (the
    /// host's admin opts in; such experiments get no `data_dir`).
    pub open_experiments: bool,
    /// Addresses experiments' tasks may dial their peers at, unless the host
    /// reaches peers over TLS (`client_tls`), where they prove who they are.
    pub allowed_peers: PeerAllowList,
    /// How experiments' tasks reach their other hosts: over TLS trusting this
    /// CA, or in plaintext.
    pub client_tls: Option<crate::tls::ClientTls>,
    /// Directories experiments may be granted, read-only, as `/data`: each
    /// experiment names one subdirectory of this.
    pub data_root: Option<std::path::PathBuf>,
    /// Where experiments' checkpoints and event files go: each under
    /// `<dir>/<experiment>/`, checkpoints within its `checkpoint_mib`.
    pub files: crate::exec::HostFiles,
    /// Where experiments and their modules are kept across restarts; `None`
    /// keeps them in memory only.
    pub state_dir: Option<std::path::PathBuf>,
    /// Bytes of uploaded modules the state directory keeps, over all
    /// experiments.
    pub module_store_bytes: u64,
    /// Bytes of compiled modules the cache directory keeps: past it, the
    /// least recently used that no experiment uploaded are deleted.
    pub cache_bytes: u64,
}

impl Default for HostingConfig {
    fn default() -> Self {
        HostingConfig {
            runtime: RuntimeConfig { max_programs: 1100, ..RuntimeConfig::default() },
            limits: EffectiveLimits::host_defaults(),
            admin_token: None,
            open_experiments: false,
            allowed_peers: PeerAllowList::default(),
            client_tls: None,
            data_root: None,
            files: crate::exec::HostFiles::default(),
            state_dir: None,
            module_store_bytes: DEFAULT_MODULE_STORE_BYTES,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// Default of [`HostingConfig::module_store_bytes`].
pub const DEFAULT_MODULE_STORE_BYTES: u64 = 4 << 30;
/// Default of [`HostingConfig::cache_bytes`].
pub const DEFAULT_CACHE_BYTES: u64 = 4 << 30;
/// Modules one experiment may upload to a host.
pub const MAX_MODULES_PER_EXPERIMENT: usize = 64;

/// The hosting side of a host.
pub struct Hosting {
    runtime: Arc<Runtime>,
    limits: EffectiveLimits,
    admin_token: Option<String>,
    open_experiments: bool,
    allowed_peers: PeerAllowList,
    client_tls: Option<crate::tls::ClientTls>,
    data_root: Option<std::path::PathBuf>,
    files: crate::exec::HostFiles,
    state: Option<persist::StateDir>,
    module_store_bytes: u64,
    cache_bytes: u64,
    own: Option<Arc<ServedTask>>,
    /// Compiled modules by sha256, with their size: what experiments start.
    workers: Mutex<HashMap<String, (LoadedModule, u64)>>,
    compile_slots: Arc<tokio::sync::Semaphore>,
    experiments: RwLock<BTreeMap<String, Arc<Experiment>>>,
    owners: Mutex<HashMap<u64, String>>,
    next_program: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bytes of output kept per program (an experiment keeps the records of at
/// most [`experiment::MAX_FINISHED_RECORDS`] finished programs).
const LOG_CAP: usize = 1 << 20;

/// Experiments one host holds.
const MAX_EXPERIMENTS: usize = 256;

/// Modules compiled at once.
const COMPILES_AT_ONCE: usize = 2;

/// Output a program's runtime keeps beside its log, to explain how it ended
/// (a panic message, an allocation that hit the memory limit).
const TRAP_CONTEXT_BYTES: usize = 64 << 10;

impl Hosting {
    /// A host with no experiments yet; `own` is the cluster task it serves to
    /// callers without credentials, if it has one (`weft serve --cluster`).
    /// Creates the wasmtime engine: call it off the async threads.
    pub fn new(config: HostingConfig, own: Option<Arc<crate::task::Task>>) -> Result<Self> {
        let mut limits = config.limits;
        limits.memory_bytes = limits.memory_bytes.min(config.runtime.max_memory_bytes);
        if config.admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(Error::invalid("the admin token must be at least 16 characters"));
        }
        let runtime = RuntimeConfig { max_output_bytes: TRAP_CONTEXT_BYTES, ..config.runtime };
        let state = config.state_dir.as_deref().map(persist::StateDir::open).transpose()?;
        let hosting = Hosting {
            runtime: Arc::new(Runtime::new(runtime)?),
            limits,
            admin_token: config.admin_token,
            open_experiments: config.open_experiments,
            allowed_peers: config.allowed_peers,
            client_tls: config.client_tls,
            data_root: config.data_root,
            files: config.files,
            module_store_bytes: config.module_store_bytes,
            cache_bytes: config.cache_bytes,
            own: own.map(|t| Arc::new(ServedTask::new(t))),
            workers: Mutex::default(),
            compile_slots: Arc::new(tokio::sync::Semaphore::new(COMPILES_AT_ONCE)),
            experiments: RwLock::default(),
            owners: Mutex::default(),
            next_program: AtomicU64::new(1),
            state,
        };
        hosting.restore();
        Ok(hosting)
    }

    /// Creates the experiments of the state directory again, with the
    /// modules they uploaded (compiled from the cache when it has them).
    /// Blocking. What cannot be restored is logged and skipped.
    fn restore(&self) {
        let Some(state) = &self.state else { return };
        for saved in state.experiments() {
            let experiment = match saved.spec().and_then(|spec| self.insert_experiment(spec)) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(experiment = saved.name, "not restored: {e}");
                    continue;
                }
            };
            for sha in &saved.modules {
                let loaded = state.module(sha).and_then(|bytes| {
                    self.runtime.load(&format!("module {sha:.12}"), &bytes).map(|w| (w, bytes.len() as u64))
                });
                match loaded.and_then(|w| self.publish(&experiment, sha, Some(w), None)) {
                    Ok(_) => {}
                    Err(e) => tracing::warn!(experiment = saved.name, module = sha, "module not restored: {e}"),
                }
            }
            tracing::info!(experiment = saved.name, modules = saved.modules.len(), "restored");
        }
    }

    /// Writes an experiment's record to the state directory, if any.
    fn save(&self, experiment: &Experiment) -> Result<()> {
        match &self.state {
            Some(state) => state.save(&persist::SavedExperiment::new(experiment.spec(), experiment.modules())),
            None => Ok(()),
        }
    }

    /// The runtime programs run in.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The cluster task this host serves itself (`weft serve --cluster`), if any.
    pub fn own_task(&self) -> Option<&Arc<crate::task::Task>> {
        self.own.as_ref().map(|s| s.task())
    }

    /// The host's limits.
    pub fn limits(&self) -> &EffectiveLimits {
        &self.limits
    }

    /// Whether `token` is the admin token.
    pub fn is_admin(&self, token: &str) -> bool {
        self.admin_token.as_deref().is_some_and(|a| same_token(token, a))
    }

    /// Whether callers without the admin token may create experiments.
    pub fn open_experiments(&self) -> bool {
        self.open_experiments
    }

    /// Creates an experiment; `failed-precondition` if the name is taken.
    pub fn create_experiment(&self, spec: ExperimentSpec) -> Result<Arc<Experiment>> {
        let experiment = self.insert_experiment(spec)?;
        if let Err(e) = self.save(&experiment) {
            self.experiments.write().unwrap_or_else(|p| p.into_inner()).remove(experiment.name());
            return Err(e);
        }
        Ok(experiment)
    }

    fn insert_experiment(&self, spec: ExperimentSpec) -> Result<Arc<Experiment>> {
        let served = &spec.tasks;
        let peers = spec.cluster.jobs().iter().flat_map(|(job, addresses)| {
            addresses.iter().enumerate().filter_map(move |(i, address)| {
                let task = TaskId::new(job.clone(), i as u32);
                (!served.contains(&task)).then(|| (task.to_string(), address.as_str()))
            })
        });
        self.allowed_peers.check(&spec.name, self.client_tls.is_some(), peers)?;
        let data_dir = spec.data_dir.as_deref().map(|d| self.grant(d)).transpose()?;
        let experiment = Arc::new(Experiment::new(spec, &self.limits, self.client_tls.clone(), data_dir, &self.files)?);
        let mut all = self.experiments.write().unwrap_or_else(|p| p.into_inner());
        if all.contains_key(experiment.name()) {
            return Err(Error::precondition(format!("experiment '{}' already exists on this host", experiment.name())));
        }
        if all.len() >= MAX_EXPERIMENTS {
            return Err(Error::status(
                Code::ResourceExhausted,
                format!("this host holds {MAX_EXPERIMENTS} experiments, its most; delete one first"),
            ));
        }
        all.insert(experiment.name().to_string(), experiment.clone());
        tracing::info!(experiment = experiment.name(), "created");
        Ok(experiment)
    }

    /// The host directory behind the data directory `name`: a direct
    /// subdirectory of the host's data root.
    fn grant(&self, name: &str) -> Result<std::path::PathBuf> {
        let root = self.data_root.as_ref().ok_or_else(|| {
            Error::invalid(format!("this host grants no data directories (asked for '{name}'; see --data-root)"))
        })?;
        let single = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\']);
        let dir = root.join(name);
        if !single || !dir.is_dir() {
            return Err(Error::invalid(format!("no data directory '{name}' under this host's data root")));
        }
        Ok(dir)
    }

    /// The experiment `name`.
    pub fn experiment(&self, name: &str) -> Result<Arc<Experiment>> {
        let all = self.experiments.read().unwrap_or_else(|p| p.into_inner());
        all.get(name).cloned().ok_or_else(|| Error::not_found(format!("no experiment '{name}' on this host")))
    }

    /// Every experiment, by name.
    pub fn experiments(&self) -> Vec<Arc<Experiment>> {
        self.experiments.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Deletes an experiment: stops its programs and drops its tasks, hence
    /// its variables and registered graphs. Returns how many programs it stopped.
    pub fn delete_experiment(&self, name: &str) -> Result<usize> {
        let removed = self.experiments.write().unwrap_or_else(|p| p.into_inner()).remove(name);
        let experiment = removed.ok_or_else(|| Error::not_found(format!("no experiment '{name}' on this host")))?;
        let stopped = experiment.stop_all();
        lock(&self.owners).retain(|_, owner| owner != name);
        // Compiled modules no other experiment uploaded go too (their
        // `.cwasm` stays in the on-disk cache).
        let others = self.experiments();
        {
            // Under the modules lock: an upload publishing (and keeping) a
            // module meanwhile is either seen as in use or comes after.
            let mut workers = lock(&self.workers);
            workers.retain(|sha, _| !experiment.has_module(sha) || others.iter().any(|e| e.has_module(sha)));
            if let Some(state) = &self.state {
                state.remove(name);
                state.prune_modules(&workers.keys().cloned().collect());
            }
        }
        // Its checkpoints and event files go with it: a later experiment of
        // the same name (perhaps another tenant's) must not inherit them.
        for dir in [&self.files.checkpoint_dir, &self.files.log_dir].into_iter().flatten() {
            let _ = std::fs::remove_dir_all(experiment::experiment_dir(dir, name));
        }
        tracing::info!(experiment = name, stopped, "deleted");
        Ok(stopped)
    }

    /// Checks an uploaded module (sha256, size, header, world), compiles it
    /// unless this host already has it, and lets `experiment` start it.
    /// Returns its sha256 and the time spent compiling (zero if cached).
    pub async fn add_module(
        &self,
        experiment: &Experiment,
        expected: &str,
        bytes: Vec<u8>,
    ) -> Result<(String, Duration)> {
        let limit = experiment.limits().upload_bytes;
        if bytes.len() > limit {
            return Err(upload_too_big(bytes.len(), limit));
        }
        let sha = module_hash(&bytes);
        if sha != expected {
            return Err(Error::invalid(format!(
                "upload damaged: its sha256 is {sha}, but the client announced {expected}"
            )));
        }
        if self.publish(experiment, &sha, None, None)? {
            self.save(experiment)?;
            return Ok((sha, Duration::ZERO));
        }
        self.check_room(experiment, &sha, bytes.len() as u64)?;
        // Compiling takes a core for ~50 ms per 150 KB: a few at a time, so
        // uploads cannot starve running programs. The permit goes with the
        // compile, which runs on even if the uploader goes away. Only a
        // module that compiles is kept.
        let slot =
            self.compile_slots.clone().acquire_owned().await.map_err(|_| Error::internal("the host is stopping"))?;
        let runtime = self.runtime.clone();
        let name = format!("module {}", &sha[..12]);
        let start = Instant::now();
        let (worker, bytes) = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            runtime.load(&name, &bytes).map(|w| (w, bytes))
        })
        .await
        .map_err(|e| Error::internal(format!("compiling panicked: {e}")))??;
        let took = start.elapsed();
        tracing::info!(module = &sha[..12], source = ?worker.source(), ?took, "module ready");
        // Written before it is published (not under the modules lock); a
        // publish that fails after all takes the file back.
        if let Some(state) = &self.state {
            state.keep_module(&sha, &bytes)?;
        }
        if let Err(e) = self.publish(experiment, &sha, Some((worker, bytes.len() as u64)), Some(&bytes)) {
            let workers = lock(&self.workers);
            if let Some(state) = &self.state
                && !workers.contains_key(&sha)
            {
                state.remove_module(&sha);
            }
            return Err(e);
        }
        self.save(experiment)?;
        self.evict_compiled();
        Ok((sha, took))
    }

    /// Whether the host may take module `sha` of `bytes` for `experiment`:
    /// within the experiment's modules and the host's module store.
    fn check_room(&self, experiment: &Experiment, sha: &str, bytes: u64) -> Result<()> {
        let workers = lock(&self.workers);
        Self::room(&workers, experiment, sha, bytes, self.module_store_bytes)
    }

    fn room(
        workers: &HashMap<String, (LoadedModule, u64)>,
        experiment: &Experiment,
        sha: &str,
        bytes: u64,
        store: u64,
    ) -> Result<()> {
        if !experiment.has_module(sha) && experiment.modules().len() >= MAX_MODULES_PER_EXPERIMENT {
            return Err(Error::status(
                Code::ResourceExhausted,
                format!(
                    "modules limit: experiment '{}' uploaded {MAX_MODULES_PER_EXPERIMENT} modules to this host, its \
                     most",
                    experiment.name()
                ),
            ));
        }
        let held: u64 = workers.values().map(|(_, b)| b).sum();
        if !workers.contains_key(sha) && held + bytes > store {
            return Err(Error::status(
                Code::ResourceExhausted,
                format!(
                    "module-store limit: this host holds {held} bytes of modules and at most {store}; a module of \
                     {bytes} bytes does not fit"
                ),
            ));
        }
        Ok(())
    }

    /// Keeps the compiled-module cache within its bytes, deleting the least
    /// recently used modules no experiment uploaded.
    fn evict_compiled(&self) {
        let Some(cache) = self.runtime.cache() else { return };
        let in_use: std::collections::HashSet<String> = lock(&self.workers).keys().cloned().collect();
        let freed = cache.evict(self.cache_bytes, &in_use);
        if freed > 0 {
            tracing::info!(freed, "evicted compiled modules no experiment uses");
        }
    }

    /// Lets `experiment` start module `sha`, adding its compiled `worker`
    /// (and its size) if given; returns whether the host has the module.
    /// Under the modules lock, with the limits checked again, so a deletion's
    /// eviction and a concurrent upload see either all of this or none.
    fn publish(
        &self,
        experiment: &Experiment,
        sha: &str,
        worker: Option<(LoadedModule, u64)>,
        bytes: Option<&[u8]>,
    ) -> Result<bool> {
        let mut workers = lock(&self.workers);
        if experiment.is_closed() {
            return Err(Error::not_found(format!("experiment '{}' was deleted", experiment.name())));
        }
        if worker.is_none() && !workers.contains_key(sha) {
            return Ok(false);
        }
        let size = worker.as_ref().map_or(0, |(_, b)| *b);
        Self::room(&workers, experiment, sha, size, self.module_store_bytes)?;
        // A deletion may have pruned the file written for this upload
        // before it was published: write it again (rare, under the lock).
        if let (Some(state), Some(bytes)) = (&self.state, bytes)
            && !state.has_module(sha)
        {
            state.keep_module(sha, bytes)?;
        }
        if let Some(w) = worker {
            workers.entry(sha.to_string()).or_insert(w);
        }
        experiment.add_module(sha);
        Ok(true)
    }

    /// Starts `module` (uploaded by `experiment`) as a program of `task`.
    pub fn start_program(
        &self,
        experiment: &Arc<Experiment>,
        module: &str,
        name: Option<String>,
        task: &TaskId,
        args: Vec<String>,
    ) -> Result<Arc<ProgramRecord>> {
        let worker = match lock(&self.workers).get(module) {
            Some((w, _)) if experiment.has_module(module) => w.clone(),
            _ => {
                return Err(Error::not_found(format!(
                    "module {module} was not uploaded to experiment '{}' on this host",
                    experiment.name()
                )));
            }
        };
        let served = experiment.served(task)?;
        let id = self.next_program.fetch_add(1, Ordering::Relaxed);
        let name = name.filter(|n| !n.is_empty()).unwrap_or_else(|| module[..12.min(module.len())].to_string());
        let record = Arc::new(ProgramRecord::new(id, name, module.to_string(), task.clone(), LOG_CAP));

        let log: Arc<dyn crate::runtime::OutputFollower> = record.clone();
        let runtime = self.runtime.clone();
        let sandbox = experiment.limits().sandbox(experiment.data_dir().map(Into::into));
        let rec = record.clone();
        let task = served.task().clone();
        // The program waits for `go`: it starts only once it is counted
        // against its experiment's limit and can be killed.
        let (go, ready) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            if ready.await.is_err() {
                return;
            }
            rec.set_state(ProgramState::Running);
            let outcome = programs::outcome_of(async {
                match runtime.instantiate_sandboxed(&worker, task, args, Some(log), &sandbox).await {
                    Ok(program) => {
                        rec.set_compute(program.compute().clone());
                        ProgramState::Exited(program.call().await.status)
                    }
                    Err(e) => ProgramState::Failed(e.code(), e.message()),
                }
            })
            .await;
            rec.set_state(outcome);
        });
        record.set_abort(handle.abort_handle());
        // Owned before it is visible: a deletion in between removes it.
        lock(&self.owners).insert(id, experiment.name().to_string());
        match experiment.add_program(record.clone()) {
            Ok(forgotten) => {
                let mut owners = lock(&self.owners);
                for old in forgotten {
                    owners.remove(&old);
                }
            }
            Err(e) => {
                handle.abort();
                lock(&self.owners).remove(&id);
                return Err(e);
            }
        }
        let _ = go.send(());
        Ok(record)
    }

    /// Program `id` of `experiment`: `permission-denied` if it belongs to
    /// another experiment, `not-found` if there is no such program.
    pub fn program(&self, experiment: &Experiment, id: u64) -> Result<Arc<ProgramRecord>> {
        if let Some(p) = experiment.program(id) {
            return Ok(p);
        }
        match lock(&self.owners).get(&id) {
            Some(_) => Err(Error::status(
                Code::PermissionDenied,
                format!("program {id} belongs to another experiment than '{}'", experiment.name()),
            )),
            None => Err(Error::not_found(format!("experiment '{}' has no program {id}", experiment.name()))),
        }
    }
}

/// The error for a module over the upload limit.
pub fn upload_too_big(size: usize, limit: usize) -> Error {
    Error::status(
        Code::ResourceExhausted,
        format!("upload-size limit: the module is {size} bytes, the limit is {limit} bytes"),
    )
}

impl Authenticator for Hosting {
    fn authenticate(&self, metadata: &MetadataMap) -> std::result::Result<Caller, Status> {
        let token = bearer_token(metadata)?;
        let Some(name) = experiment_of(metadata)? else {
            return match token {
                Some(t) if self.is_admin(t) => Ok(Caller::Admin),
                Some(_) => Err(Status::permission_denied(
                    "the token is not this host's admin token (to act for an experiment, name it: --experiment)",
                )),
                None => Ok(Caller::Anonymous),
            };
        };
        // Without a valid token, a missing experiment and a forbidden one
        // look the same: names cannot be probed.
        let Some(token) = token else {
            return Err(Status::unauthenticated(format!(
                "experiment '{name}' needs its token (--token or WEFT_TOKEN)"
            )));
        };
        let experiment = self.experiment(name).ok();
        let valid = experiment.as_ref().is_some_and(|e| e.accepts(token));
        if valid || (self.is_admin(token) && experiment.is_some()) {
            return Ok(Caller::Experiment(name.to_string()));
        }
        if self.is_admin(token) {
            return Err(Status::not_found(format!("no experiment '{name}' on this host")));
        }
        Err(Status::permission_denied(format!("the token is not valid for experiment '{name}' on this host")))
    }
}

impl TaskDirectory for Hosting {
    fn served(&self, caller: &Caller, task: Option<&TaskId>) -> std::result::Result<Arc<ServedTask>, Status> {
        match caller {
            Caller::Experiment(name) => {
                let experiment = self.experiment(name).map_err(|e| Status::not_found(e.message()))?;
                let task = task.ok_or_else(|| {
                    Status::invalid_argument(format!("a call for experiment '{name}' must name its task (weft-task)"))
                })?;
                experiment.served(task).map_err(|e| Status::not_found(e.message()))
            }
            Caller::Anonymous | Caller::Admin => match &self.own {
                Some(own) => SingleTask(own.clone()).served(caller, task),
                None => Err(Status::unauthenticated(
                    "this host serves experiments only: calls need weft-experiment and the experiment's token",
                )),
            },
        }
    }
}
