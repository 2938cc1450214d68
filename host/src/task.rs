//! A task as programs see it: its identity in a cluster, its CPU device
//! (which holds its variables), and how session targets resolve against it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cluster::{ClusterSpec, TaskId};
use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::exec::{Budgets, Device, DeviceSet, Executor, HostFiles, LocalDevices, Placement, RemoteTasks};

/// One task of a cluster, served by this host.
#[derive(Debug)]
pub struct Task {
    cluster: ClusterSpec,
    id: TaskId,
    device: Arc<Device>,
    devices: Arc<dyn DeviceSet>,
    remote: Option<Arc<dyn RemoteTasks>>,
    /// Steps its programs' sessions ran to the end.
    steps: AtomicU64,
}

/// The session target `local`: a private in-process engine.
pub const LOCAL_TARGET: &str = "local";

impl Task {
    /// Task `id` of `cluster`, alone in this process; fails if the cluster
    /// has no such task.
    pub fn new(cluster: ClusterSpec, id: TaskId) -> Result<Self> {
        Self::with_files(cluster, id, &HostFiles::default())
    }

    /// [`Task::new`], writing checkpoints and summaries where `files` says.
    pub fn with_files(cluster: ClusterSpec, id: TaskId, files: &HostFiles) -> Result<Self> {
        let budgets = Budgets::standalone(&id);
        Self::with_budgets(cluster, id, &budgets, files)
    }

    /// [`Task::with_files`], charging what its steps and variables hold to `budgets`.
    pub fn with_budgets(cluster: ClusterSpec, id: TaskId, budgets: &Budgets, files: &HostFiles) -> Result<Self> {
        cluster.check_task(&id)?;
        let devices = Arc::new(LocalDevices::with_files([id.clone()], budgets, files));
        Self::with_devices(cluster, id, devices)
    }

    /// Task `id` of `cluster`, whose programs can run ops on every device in
    /// `devices` (tasks sharing this process). `devices` must include `id`.
    pub fn with_devices(cluster: ClusterSpec, id: TaskId, devices: Arc<dyn DeviceSet>) -> Result<Self> {
        cluster.check_task(&id)?;
        let device =
            devices.device(&id).ok_or_else(|| Error::internal(format!("no device for {id} in its own process")))?;
        Ok(Task { cluster, id, device, devices, remote: None, steps: AtomicU64::new(0) })
    }

    /// This task, reaching the cluster's other tasks through `remote`.
    pub fn with_remote(mut self, remote: Arc<dyn RemoteTasks>) -> Self {
        self.remote = Some(remote);
        self
    }

    /// A standalone host's task: `/job:localhost/task:0` of a one-task cluster.
    pub fn standalone() -> Self {
        Self::standalone_with_files(&HostFiles::default())
    }

    /// [`Task::standalone`], writing checkpoints and summaries where `files` says.
    pub fn standalone_with_files(files: &HostFiles) -> Self {
        let cluster = ClusterSpec::single("in-process");
        let id = cluster.default_task();
        Task::with_files(cluster, id, files).expect("the single task exists")
    }

    /// This task's id.
    pub fn id(&self) -> &TaskId {
        &self.id
    }

    /// How it reaches the cluster's other tasks, if it does.
    pub fn remote(&self) -> Option<&Arc<dyn RemoteTasks>> {
        self.remote.as_ref()
    }

    /// The cluster it belongs to.
    pub fn cluster(&self) -> &ClusterSpec {
        &self.cluster
    }

    /// Counts a step one of its programs' sessions ran to the end.
    pub fn count_step(&self) {
        self.steps.fetch_add(1, Ordering::Relaxed);
    }

    /// Steps its programs' sessions ran to the end.
    pub fn steps(&self) -> u64 {
        self.steps.load(Ordering::Relaxed)
    }

    /// Its CPU device.
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// This task's address in its cluster spec.
    pub fn address(&self) -> &str {
        &self.cluster.jobs()[&self.id.job][self.id.index as usize]
    }

    /// An executor for a session opened by a program of this task, with the
    /// target's canonical name. `place_on_own_task` puts unconstrained ops
    /// here instead of on the cluster's first task.
    pub fn session_executor(&self, target: &str, place_on_own_task: bool) -> Result<(Executor, String)> {
        if target == LOCAL_TARGET {
            // A private engine, but not a private allowance: its variables
            // and step tensors count against this task's budgets.
            let cluster = ClusterSpec::single("in-process");
            let id = cluster.default_task();
            let mut budgets = self.device.budgets();
            if budgets.tensors.is_none() {
                budgets.tensors = Budgets::standalone(&id).tensors;
            }
            let private = Task::with_budgets(cluster, id, &budgets, &HostFiles::default())?;
            let placement = Placement {
                cluster: private.cluster.clone(),
                default_task: private.id.clone(),
                devices: private.devices.clone(),
                remote: None,
            };
            return Ok((Executor::new(private.device.name(), placement), LOCAL_TARGET.to_string()));
        }
        let master = self.resolve_target(target)?;
        if self.devices.device(&master).is_none() && self.remote.is_none() {
            return Err(Error::unavailable(format!(
                "session target '{target}' is task {master}, which this host cannot reach (it serves {})",
                self.id
            )));
        }
        let default_task = if place_on_own_task { master.clone() } else { self.cluster.default_task() };
        let placement = Placement {
            cluster: self.cluster.clone(),
            default_task,
            devices: self.devices.clone(),
            remote: self.remote.clone(),
        };
        Ok((
            Executor::new(master.cpu_device(), placement),
            format!("/job:{}/replica:0/task:{}", master.job, master.index),
        ))
    }

    fn resolve_target(&self, target: &str) -> Result<TaskId> {
        if target.is_empty() {
            return Ok(self.id.clone());
        }
        if let Some(address) = target.strip_prefix("grpc://") {
            for (job, tasks) in self.cluster.jobs() {
                if let Some(i) = tasks.iter().position(|a| a == address) {
                    return Ok(TaskId::new(job.clone(), i as u32));
                }
            }
            return Err(Error::not_found(format!("no task of the cluster has address '{address}'")));
        }
        if target.starts_with('/') {
            let spec = DeviceSpec::parse(target)?;
            let (Some(job), task) = (spec.job, spec.task) else {
                return Err(Error::invalid(format!(
                    "session target '{target}' must name a job, e.g. /job:worker/task:0"
                )));
            };
            let id = TaskId::new(job, task.unwrap_or(0));
            self.cluster.check_task(&id)?;
            return Ok(id);
        }
        Err(Error::invalid(format!(
            "invalid session target '{target}': use 'local', '' (this task), /job:NAME/task:N or grpc://HOST:PORT"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_session_draws_on_its_tasks_budgets() {
        use crate::graph::{AttrValue, Graph, NodeRequest, OpType, Output};
        let cluster = ClusterSpec::single("in-process");
        let id = cluster.default_task();
        let task =
            Task::with_budgets(cluster, id.clone(), &Budgets::task(&id, 1 << 20), &HostFiles::default()).unwrap();
        let (mut local, _) = task.session_executor(LOCAL_TARGET, false).unwrap();
        let mut g = Graph::new();
        let one = crate::tensor::Tensor::scalar_f32(1.0);
        let one = g.add(NodeRequest::new(OpType::Const).attr("value", AttrValue::Tensor(one))).unwrap();
        let fill =
            NodeRequest::new(OpType::Fill).inputs([Output::of(one)]).attr("shape", AttrValue::Ints(vec![1 << 19]));
        let big = g.add(fill).unwrap();
        let req = crate::exec::RunRequest { fetches: vec![Output::of(big)], ..Default::default() };
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let err = rt.block_on(local.run(&g, &req)).unwrap_err().to_string();
        assert!(err.contains("tensor-bytes limit") && err.contains("2097152 more bytes"), "{err}");
    }

    #[test]
    fn targets_resolve_to_own_task() {
        let task = Task::standalone();
        for t in ["", "/job:localhost/task:0", "/job:localhost", "grpc://in-process"] {
            let (_, name) = task.session_executor(t, false).unwrap();
            assert_eq!(name, "/job:localhost/replica:0/task:0", "{t}");
        }
        assert_eq!(task.session_executor("local", false).unwrap().1, "local");
    }

    #[test]
    fn local_sessions_get_private_devices() {
        let task = Task::standalone();
        let (a, _) = task.session_executor("local", false).unwrap();
        let (b, _) = task.session_executor("local", false).unwrap();
        let own_task = TaskId::new("localhost", 0);
        let device = |e: &Executor| e.placement().devices.device(&own_task).unwrap();
        assert!(!Arc::ptr_eq(&device(&a), &device(&b)));
        let (own, _) = task.session_executor("", false).unwrap();
        assert!(Arc::ptr_eq(&device(&own), task.device()));
    }

    #[test]
    fn bad_targets_are_named() {
        let task = Task::standalone();
        let err = |t: &str| task.session_executor(t, false).unwrap_err().to_string();
        assert!(err("/job:ps/task:0").contains("no job 'ps'"));
        assert!(err("grpc://10.0.0.1:2222").contains("'10.0.0.1:2222'"));
        assert!(err("tcp:x").contains("invalid session target 'tcp:x'"));
        assert!(err("/task:0").contains("must name a job"));
    }
}
