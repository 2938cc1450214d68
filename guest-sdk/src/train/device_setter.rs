//! `tf.train.replica_device_setter`: variables on parameter-server tasks,
//! round-robin in creation order or greedily by bytes, everything else on
//! the worker's own device.

use std::cell::RefCell;

use crate::error::Result;
use crate::graph::Graph;
use crate::variable::{Operand, Variable, VariableOptions};

/// How variables are spread over the ps tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsStrategy {
    /// ps0, ps1, ps0, ... in creation order (TensorFlow's default).
    RoundRobin,
    /// The ps task holding the fewest bytes so far (`GreedyLoadBalancingStrategy`).
    GreedyByBytes,
}

/// Places variables on `/job:<ps_job>/task:k` and other ops on the worker device.
#[derive(Debug)]
pub struct ReplicaDeviceSetter {
    ps_job: String,
    worker_device: String,
    strategy: PsStrategy,
    load: RefCell<Vec<u64>>,
    next: RefCell<usize>,
}

impl ReplicaDeviceSetter {
    /// Round-robin over `ps_tasks` tasks of job `ps`; `worker_device` (e.g.
    /// `/job:worker/task:0`) for everything else.
    pub fn new(ps_tasks: u32, worker_device: &str) -> Self {
        Self::with_strategy("ps", ps_tasks, worker_device, PsStrategy::RoundRobin)
    }

    /// Any ps job name and strategy.
    pub fn with_strategy(ps_job: &str, ps_tasks: u32, worker_device: &str, strategy: PsStrategy) -> Self {
        ReplicaDeviceSetter {
            ps_job: ps_job.to_string(),
            worker_device: worker_device.to_string(),
            strategy,
            load: RefCell::new(vec![0; ps_tasks.max(1) as usize]),
            next: RefCell::new(0),
        }
    }

    /// The device for non-variable ops: use it as `g.device(setter.worker_device(), ...)`.
    pub fn worker_device(&self) -> &str {
        &self.worker_device
    }

    /// The ps task index the next variable of `bytes` bytes goes to.
    pub fn choose(&self, bytes: u64) -> u32 {
        let mut load = self.load.borrow_mut();
        let task = match self.strategy {
            PsStrategy::RoundRobin => {
                let mut next = self.next.borrow_mut();
                let t = *next % load.len();
                *next += 1;
                t
            }
            PsStrategy::GreedyByBytes => (0..load.len()).min_by_key(|&i| (load[i], i)).unwrap_or(0),
        };
        load[task] += bytes;
        task as u32
    }

    /// The device string of ps task `task`.
    pub fn ps_device(&self, task: u32) -> String {
        format!("/job:{}/task:{task}", self.ps_job)
    }

    /// A variable (as [`Variable::new`]) placed on the next ps task.
    pub fn variable(&self, g: &Graph, initial: impl Into<Operand>, name: &str) -> Result<Variable> {
        self.variable_with(g, initial, name, VariableOptions::default())
    }

    /// [`ReplicaDeviceSetter::variable`] with options (their device is replaced).
    pub fn variable_with(
        &self,
        g: &Graph,
        initial: impl Into<Operand>,
        name: &str,
        options: VariableOptions,
    ) -> Result<Variable> {
        let initial = initial.into();
        let bytes = match &initial {
            Operand::Literal(t) => (t.len() * t.dtype_width()) as u64,
            Operand::Output(o) => {
                let (dtype, shape) = g.output_type(*o)?;
                shape.iter().map(|&d| d.max(1) as u64).product::<u64>() * crate::tensor::width_of(dtype) as u64
            }
        };
        let device = self.ps_device(self.choose(bytes));
        Variable::with_options(g, initial, name, VariableOptions { device: Some(device), ..options })
    }

    /// Runs `f` with variables it creates through [`crate::Variable`]
    /// placed on the next ps task (one task for all of them): for helpers
    /// such as [`super::global_step`].
    pub fn place<T>(&self, g: &Graph, f: impl FnOnce(&Graph) -> Result<T>) -> Result<T> {
        let device = self.ps_device(self.choose(8));
        g.device(&device, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_cycles_over_ps_tasks() {
        let s = ReplicaDeviceSetter::new(2, "/job:worker/task:0");
        let picks: Vec<u32> = [4, 4_000_000, 4].iter().map(|&b| s.choose(b)).collect();
        assert_eq!(picks, [0, 1, 0]);
        assert_eq!(s.ps_device(1), "/job:ps/task:1");
    }

    #[test]
    fn greedy_balances_bytes() {
        let s = ReplicaDeviceSetter::with_strategy("ps", 2, "/job:worker/task:0", PsStrategy::GreedyByBytes);
        // A big variable first: the next two small ones both go to the other task.
        let picks: Vec<u32> = [4_000_000, 4, 4, 5_000_000].iter().map(|&b| s.choose(b)).collect();
        assert_eq!(picks, [0, 1, 1, 1]);
        assert_eq!(*s.load.borrow(), vec![4_000_000, 5_000_008]);
    }
}
