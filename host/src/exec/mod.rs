//! Running graphs: devices and the variables they hold, plans (which nodes
//! run where, cached per graph version), partitions, kernels and step stats.
//!
//! A step's nodes are placed on tasks; the tasks of this process form one
//! local partition per stage, every other task one remote partition per
//! stage, run through [`RemoteTasks`]. Stages order partitions so that each
//! runs once its inputs exist: a remote partition costs one call per step.

mod budget;
mod cost;
mod executor;
mod kernels;
mod kernels_array;
mod kernels_train;
mod meter;
mod partition;
mod partition_check;
mod plan;
mod route;
mod variables;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use budget::{ByteBudget, DEFAULT_TENSOR_BYTES, StepCharges, VARIABLE_OVERHEAD};
pub use cost::inputs_are_small;
pub use executor::{Executor, PreparedStep};
pub use kernels::OpRng;
pub use meter::{ComputeMeter, over_cpu_limit};
pub use partition::{PartitionDef, Trace, run_partition};
pub use partition_check::MAX_PARTITION_NODES;
pub use plan::{Delivered, PartitionResult, PeerTraffic, Placement, RemotePartition, RemoteTasks};
pub use route::{Delivery, MAX_USES, Route};
pub use variables::{Variable, VariableStore};

use crate::checkpoint::CheckpointDir;
use crate::cluster::TaskId;
use crate::error::Result;
use crate::graph::{NodeId, Output};
use crate::summary::EventLog;
use crate::tensor::Tensor;

/// Runs `work`, which blocks (kernels, a short registration): on a
/// multi-threaded tokio runtime it tells the runtime so and runs right here
/// (no thread hop for small steps); elsewhere (no runtime, or a
/// current-thread one) it just runs.
pub fn run_blocking<R>(work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// Where a host writes what programs ask of it: checkpoints (with an
/// optional byte quota) and TensorBoard summaries. Programs have no files.
#[derive(Clone, Debug, Default)]
pub struct HostFiles {
    /// `--checkpoint-dir`.
    pub checkpoint_dir: Option<PathBuf>,
    /// Bytes the checkpoints under it may take.
    pub checkpoint_quota: Option<u64>,
    /// `--log-dir`, for event files.
    pub log_dir: Option<PathBuf>,
}

/// What the owner of a set of devices (an experiment, a standalone task)
/// may make this host hold; `None` for no limit of that kind.
#[derive(Clone, Debug, Default)]
pub struct Budgets {
    /// Bytes its variables hold between steps.
    pub variables: Option<Arc<ByteBudget>>,
    /// Bytes the ops of its running steps hold.
    pub tensors: Option<Arc<ByteBudget>>,
}

impl Budgets {
    /// A standalone task's: variables unlimited (they are the job), step
    /// tensors up to [`DEFAULT_TENSOR_BYTES`].
    pub fn standalone(task: &TaskId) -> Self {
        Self::task(task, DEFAULT_TENSOR_BYTES)
    }

    /// A task's of its own (no experiment): variables unlimited, step
    /// tensors up to `tensor_bytes`.
    pub fn task(task: &TaskId, tensor_bytes: usize) -> Self {
        Budgets { variables: None, tensors: Some(Arc::new(ByteBudget::tensors(format!("task {task}"), tensor_bytes))) }
    }
}

/// A task's CPU device: its name, the variables it holds, what its steps
/// may hold, and where its checkpoints and summaries go.
#[derive(Debug)]
pub struct Device {
    task: TaskId,
    name: String,
    variables: VariableStore,
    tensors: Option<Arc<ByteBudget>>,
    checkpoints: Option<CheckpointDir>,
    events: Option<EventLog>,
}

impl Device {
    /// The CPU device of `task`, with no variables and no budgets.
    pub fn new(task: TaskId) -> Self {
        Self::with_files(task, &Budgets::default(), &HostFiles::default())
    }

    /// The CPU device of `task`, charging `budgets`, writing where `files` says.
    pub fn with_files(task: TaskId, budgets: &Budgets, files: &HostFiles) -> Self {
        let name = task.cpu_device();
        let variables = match &budgets.variables {
            Some(b) => VariableStore::with_budget(name.clone(), b.clone()),
            None => VariableStore::new(name.clone()),
        };
        let checkpoints = files.checkpoint_dir.as_ref().map(|d| CheckpointDir::new(d, files.checkpoint_quota));
        let events = files.log_dir.as_ref().map(|d| EventLog::new(d, &task));
        Device { variables, tensors: budgets.tensors.clone(), checkpoints, events, task, name }
    }

    /// The budget its steps' tensors are charged to, if any.
    pub fn tensor_budget(&self) -> Option<&Arc<ByteBudget>> {
        self.tensors.as_ref()
    }

    /// The budgets it charges: another device charging them draws on the
    /// same limits.
    pub fn budgets(&self) -> Budgets {
        Budgets { variables: self.variables.budget().cloned(), tensors: self.tensors.clone() }
    }

    /// Where its checkpoints go, if its host has a checkpoint directory.
    pub fn checkpoints(&self) -> Result<&CheckpointDir> {
        self.checkpoints.as_ref().ok_or_else(|| {
            crate::error::Error::precondition(format!(
                "{} cannot save or restore checkpoints: start its host with --checkpoint-dir DIR",
                self.name
            ))
        })
    }

    /// Its TensorBoard event log, if its host has a log directory.
    pub fn events(&self) -> Result<&EventLog> {
        self.events.as_ref().ok_or_else(|| {
            crate::error::Error::precondition(format!(
                "{} cannot write summaries: start its host with --log-dir DIR",
                self.name
            ))
        })
    }

    /// The full device name, e.g. `/job:localhost/replica:0/task:0/device:CPU:0`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The task it belongs to.
    pub fn task(&self) -> &TaskId {
        &self.task
    }

    /// Its variables.
    pub fn variables(&self) -> &VariableStore {
        &self.variables
    }
}

/// The devices this process can run ops on, by task.
pub trait DeviceSet: Send + Sync + std::fmt::Debug {
    /// The CPU device of `task`, if it is served here.
    fn device(&self, task: &TaskId) -> Option<Arc<Device>>;
}

/// Devices of tasks that live in this process, by task id.
#[derive(Debug, Default)]
pub struct LocalDevices(HashMap<TaskId, Arc<Device>>);

impl LocalDevices {
    /// A set holding a new device for each of `tasks`.
    pub fn new(tasks: impl IntoIterator<Item = TaskId>) -> Self {
        LocalDevices(tasks.into_iter().map(|t| (t.clone(), Arc::new(Device::new(t)))).collect())
    }

    /// A set holding a new device for each of `tasks`, all charging the
    /// same `budgets`, writing where `files` says.
    pub fn with_files(tasks: impl IntoIterator<Item = TaskId>, budgets: &Budgets, files: &HostFiles) -> Self {
        LocalDevices(tasks.into_iter().map(|t| (t.clone(), Arc::new(Device::with_files(t, budgets, files)))).collect())
    }
}

impl DeviceSet for LocalDevices {
    fn device(&self, task: &TaskId) -> Option<Arc<Device>> {
        self.0.get(task).cloned()
    }
}

/// What to compute in one step.
#[derive(Clone, Debug, Default)]
pub struct RunRequest {
    /// Outputs whose values to return.
    pub fetches: Vec<Output>,
    /// Outputs replaced by given values.
    pub feeds: Vec<(Output, Tensor)>,
    /// Nodes to run for their effects.
    pub targets: Vec<NodeId>,
    /// Whether to record step stats.
    pub trace: bool,
    /// The program whose step this is: its kernels are timed against its
    /// limit, and stop when it is stopped.
    pub meter: Option<Arc<ComputeMeter>>,
}

/// One node's execution in a traced step.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeStats {
    /// Node name (`_SOURCE` marks the start).
    pub node_name: String,
    /// Start, microseconds since the Unix epoch.
    pub start_micros: u64,
    /// Duration, microseconds.
    pub duration_micros: u64,
}

/// The nodes one device ran in a traced step.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceStats {
    /// Full device name.
    pub device: String,
    /// Nodes in the order they ran.
    pub nodes: Vec<NodeStats>,
}

/// The result of one step.
#[derive(Clone, Debug, Default)]
pub struct RunResult {
    /// One value per fetch.
    pub values: Vec<Tensor>,
    /// Step stats per device, when traced.
    pub step_stats: Vec<DeviceStats>,
}

#[cfg(test)]
mod gradient_check;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
