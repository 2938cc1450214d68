//! Cluster specs and task identities, and resolving a (partial) device
//! request to the task that runs it.
//!
//! TensorFlow 1.x's placement rule: an unconstrained op goes to the cluster's
//! first device in sorted order (job name, then task index); a partial spec
//! fills its gaps from that default.

mod spec_file;

use std::collections::BTreeMap;
use std::fmt;

use crate::device::DeviceSpec;
use crate::error::{Error, Result};

pub use spec_file::ClusterConfig;

/// A job and task index: `/job:J/task:N`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    /// Job name.
    pub job: String,
    /// Task index.
    pub index: u32,
}

impl TaskId {
    /// `/job:J/task:N`.
    pub fn new(job: impl Into<String>, index: u32) -> Self {
        TaskId { job: job.into(), index }
    }

    /// The task's CPU device, `/job:J/replica:0/task:N/device:CPU:0`.
    pub fn cpu_device(&self) -> String {
        DeviceSpec::cpu_of(&self.job, self.index).to_string()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/job:{}/task:{}", self.job, self.index)
    }
}

/// Jobs, each an ordered list of task addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSpec {
    jobs: BTreeMap<String, Vec<String>>,
}

impl ClusterSpec {
    /// A spec from job names and task addresses; rejects empty jobs.
    pub fn new(jobs: BTreeMap<String, Vec<String>>) -> Result<Self> {
        if jobs.is_empty() {
            return Err(Error::invalid("cluster spec has no jobs"));
        }
        if let Some((name, _)) = jobs.iter().find(|(_, tasks)| tasks.is_empty()) {
            return Err(Error::invalid(format!("job '{name}' in the cluster spec has no tasks")));
        }
        Ok(ClusterSpec { jobs })
    }

    /// The one-task cluster of a standalone host: `{"localhost": [address]}`,
    /// TensorFlow's name for a process's own task.
    pub fn single(address: impl Into<String>) -> Self {
        ClusterSpec { jobs: BTreeMap::from([("localhost".to_string(), vec![address.into()])]) }
    }

    /// Jobs in name order.
    pub fn jobs(&self) -> &BTreeMap<String, Vec<String>> {
        &self.jobs
    }

    /// Every task, job by job in name order, then by index.
    pub fn tasks(&self) -> Vec<TaskId> {
        self.jobs
            .iter()
            .flat_map(|(job, tasks)| (0..tasks.len() as u32).map(move |i| TaskId::new(job.clone(), i)))
            .collect()
    }

    /// The address of a task of this cluster. Panics if there is no such task.
    pub fn address(&self, task: &TaskId) -> &str {
        &self.jobs[&task.job][task.index as usize]
    }

    /// The first task in sorted order: where unconstrained ops go.
    pub fn default_task(&self) -> TaskId {
        let job = self.jobs.keys().next().expect("non-empty by construction");
        TaskId::new(job.clone(), 0)
    }

    fn job_list(&self) -> String {
        self.jobs.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
    }

    /// Checks that a task exists; the error names the cluster's jobs or the job's size.
    pub fn check_task(&self, task: &TaskId) -> Result<()> {
        let tasks = self.jobs.get(&task.job).ok_or_else(|| {
            Error::invalid(format!("the cluster has no job '{}' (jobs: {})", task.job, self.job_list()))
        })?;
        if task.index as usize >= tasks.len() {
            return Err(Error::invalid(format!(
                "job '{}' has {} task(s), so there is no task {}",
                task.job,
                tasks.len(),
                task.index
            )));
        }
        Ok(())
    }

    /// The task a device request runs on: the request's fields, gaps filled
    /// from `default`. Unknown jobs, tasks, replicas and devices are errors.
    pub fn resolve(&self, spec: &DeviceSpec, default: &TaskId) -> Result<TaskId> {
        let task = match (&spec.job, spec.task) {
            (Some(job), Some(index)) => TaskId::new(job.clone(), index),
            (Some(job), None) => TaskId::new(job.clone(), 0),
            (None, Some(index)) => TaskId::new(default.job.clone(), index),
            (None, None) => default.clone(),
        };
        self.check_task(&task).map_err(|e| Error::invalid(format!("device '{spec}': {}", e.message())))?;
        if let Some(r) = spec.replica.filter(|&r| r != 0) {
            return Err(Error::invalid(format!("device '{spec}': replica {r} does not exist (tasks have replica 0)")));
        }
        if let Some(ty) = spec.device_type.as_deref().filter(|&t| t != "CPU") {
            return Err(Error::invalid(format!("device '{spec}': no {ty} devices; tasks have only /device:CPU:0")));
        }
        if let Some(i) = spec.device_index.filter(|&i| i != 0) {
            return Err(Error::invalid(format!("device '{spec}': no CPU:{i}; tasks have only /device:CPU:0")));
        }
        Ok(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_jobs() -> ClusterSpec {
        ClusterSpec::new(BTreeMap::from([
            ("worker".to_string(), vec!["a:1".into(), "a:2".into()]),
            ("ps".to_string(), vec!["b:1".into()]),
        ]))
        .unwrap()
    }

    #[test]
    fn default_task_is_first_sorted_job() {
        assert_eq!(two_jobs().default_task(), TaskId::new("ps", 0));
        assert_eq!(
            ClusterSpec::single("x").default_task().cpu_device(),
            "/job:localhost/replica:0/task:0/device:CPU:0"
        );
    }

    #[test]
    fn partial_specs_fill_from_default() {
        let c = two_jobs();
        let d = TaskId::new("worker", 1);
        let p = |s: &str| c.resolve(&DeviceSpec::parse(s).unwrap(), &d).unwrap();
        assert_eq!(p(""), d);
        assert_eq!(p("/job:ps"), TaskId::new("ps", 0));
        assert_eq!(p("/task:0"), TaskId::new("worker", 0));
        assert_eq!(p("/job:worker/task:1/device:CPU:0"), d);
    }

    #[test]
    fn unknown_job_task_or_device_is_named() {
        let c = two_jobs();
        let d = c.default_task();
        let e = |s: &str| c.resolve(&DeviceSpec::parse(s).unwrap(), &d).unwrap_err().to_string();
        let msg = e("/job:nope");
        assert!(msg.contains("no job 'nope'") && msg.contains("jobs: ps, worker"), "{msg}");
        assert!(e("/job:worker/task:2").contains("has 2 task(s), so there is no task 2"));
        assert!(e("/device:GPU:0").contains("no GPU devices"));
        assert!(e("/device:CPU:1").contains("no CPU:1"));
    }

    #[test]
    fn empty_specs_are_rejected() {
        assert!(ClusterSpec::new(BTreeMap::new()).is_err());
        let err = ClusterSpec::new(BTreeMap::from([("ps".to_string(), vec![])])).unwrap_err();
        assert!(err.to_string().contains("job 'ps'"));
    }
}
