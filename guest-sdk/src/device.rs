//! Device names and this program's task identity.

use crate::error::Result;
use crate::wit::device as raw;

/// A parsed device name; absent fields are unconstrained.
pub use crate::wit::device::DeviceSpec;

/// Parses `/job:ps/replica:0/task:0/device:CPU:0` or a partial spec.
pub fn parse(spec: &str) -> Result<DeviceSpec> {
    Ok(raw::parse(spec)?)
}

/// Formats a spec the way TensorFlow does.
pub fn format(spec: &DeviceSpec) -> String {
    raw::to_string(spec)
}

/// Which task this program runs as, and its cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskIdentity {
    /// The job, e.g. `worker`.
    pub job: String,
    /// The task index within the job.
    pub task: u32,
    /// Every job with its task addresses, sorted by job name.
    pub cluster: Vec<(String, Vec<String>)>,
}

/// This program's task.
pub fn identity() -> TaskIdentity {
    let id = raw::identity();
    TaskIdentity { job: id.job, task: id.task, cluster: id.cluster.into_iter().map(|j| (j.name, j.tasks)).collect() }
}
