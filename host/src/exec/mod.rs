//! Running graphs: devices and the variables they hold, plans (which nodes
//! run where, in which order, cached per graph version), kernels, variable
//! refs and step stats. Every device a plan uses must be reachable from this
//! process (a [`DeviceSet`]); ops placed elsewhere are `unavailable`.

mod kernels;
mod plan;
mod variables;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;

pub use plan::Placement;
pub use variables::{Variable, VariableStore};

use plan::{Plan, PlanKey};

use crate::cluster::TaskId;
use crate::error::{Error, Result};
use crate::graph::{Graph, Node, NodeId, OpType, Output};
use crate::tensor::Tensor;

/// A task's CPU device: its name and the variables it holds.
#[derive(Debug)]
pub struct Device {
    task: TaskId,
    name: String,
    variables: VariableStore,
}

impl Device {
    /// The CPU device of `task`, with no variables.
    pub fn new(task: TaskId) -> Self {
        let name = task.cpu_device();
        Device { variables: VariableStore::new(name.clone()), task, name }
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

/// A value flowing between nodes: a tensor, or a reference to a variable.
#[derive(Clone, Debug)]
enum Value {
    Tensor(Tensor),
    Var(Arc<Variable>),
}

impl Value {
    fn tensor(&self) -> Result<Tensor> {
        match self {
            Value::Tensor(t) => Ok(t.clone()),
            Value::Var(v) => v.read(),
        }
    }
}

/// Runs steps of graphs for one session. Keeps the session's plan cache and
/// the state of its random ops.
#[derive(Debug)]
pub struct Executor {
    home: Arc<Device>,
    placement: Placement,
    plans: HashMap<PlanKey, Arc<Plan>>,
    rngs: HashMap<NodeId, Option<StdRng>>,
}

impl Executor {
    /// An executor for a session whose master is `home`'s task.
    pub fn new(home: Arc<Device>, placement: Placement) -> Self {
        Executor { home, placement, plans: HashMap::new(), rngs: HashMap::new() }
    }

    /// The session's home device.
    pub fn device(&self) -> &Arc<Device> {
        &self.home
    }

    fn plan(&mut self, graph: &Graph, req: &RunRequest) -> Result<Arc<Plan>> {
        let key = PlanKey::of(graph, req);
        if let Some(plan) = self.plans.get(&key) {
            return Ok(plan.clone());
        }
        let plan = Arc::new(Plan::build(graph, req, &self.home, &self.placement)?);
        if self.plans.len() > 1024 {
            self.plans.clear();
        }
        self.plans.insert(key, plan.clone());
        Ok(plan)
    }

    /// Feeds are checked on every run: the plan cache is keyed by which
    /// outputs are fed, not by the values.
    fn check_feeds(graph: &Graph, req: &RunRequest) -> Result<()> {
        for (out, value) in &req.feeds {
            let node = graph.node(out.node)?;
            let ty = graph.output_type(*out)?;
            if !ty.accepts(value) {
                return Err(Error::invalid(format!(
                    "feed for '{}' is {} but '{}' ({}) expects {ty}",
                    node.name,
                    value.tensor_type(),
                    node.name,
                    node.op.name()
                )));
            }
        }
        Ok(())
    }

    /// Runs one step of `graph`.
    pub fn run(&mut self, graph: &Graph, req: &RunRequest) -> Result<RunResult> {
        Self::check_feeds(graph, req)?;
        let plan = self.plan(graph, req)?;
        let wall_start = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let clock = Instant::now();
        let micros = |at: Instant| (wall_start + at.duration_since(clock)).as_micros() as u64;
        // Every device the step touches starts with `_SOURCE`, as in TensorFlow's step stats.
        let mut stats: Vec<Vec<NodeStats>> = if req.trace {
            let source = || NodeStats { node_name: "_SOURCE".into(), start_micros: micros(clock), duration_micros: 0 };
            plan.devices.iter().map(|_| vec![source()]).collect()
        } else {
            Vec::new()
        };
        let feeds: HashMap<Output, &Tensor> = req.feeds.iter().map(|(o, t)| (*o, t)).collect();
        let mut values: HashMap<NodeId, Value> = HashMap::with_capacity(plan.order.len());
        for (&id, &dev) in plan.order.iter().zip(&plan.node_device) {
            let node = &graph.nodes()[id as usize];
            let start = Instant::now();
            if let Some(v) = self.run_node(graph, node, &plan.devices[dev], &feeds, &values)? {
                values.insert(id, v);
            }
            if req.trace {
                stats[dev].push(NodeStats {
                    node_name: node.name.clone(),
                    start_micros: micros(start),
                    duration_micros: start.elapsed().as_micros() as u64,
                });
            }
        }
        let mut out = Vec::with_capacity(req.fetches.len());
        for fetch in &req.fetches {
            let value = match feeds.get(fetch) {
                Some(t) => (*t).clone(),
                None => values.get(&fetch.node).ok_or_else(|| Error::internal("fetched node did not run"))?.tensor()?,
            };
            out.push(value);
        }
        let step_stats = stats
            .into_iter()
            .zip(&plan.devices)
            .map(|(nodes, d)| DeviceStats { device: d.name().to_string(), nodes })
            .collect();
        Ok(RunResult { values: out, step_stats })
    }

    fn run_node(
        &mut self,
        graph: &Graph,
        node: &Node,
        device: &Device,
        feeds: &HashMap<Output, &Tensor>,
        values: &HashMap<NodeId, Value>,
    ) -> Result<Option<Value>> {
        let input = |i: usize| -> Result<Value> {
            let out = node.inputs[i];
            match feeds.get(&out) {
                Some(t) => Ok(Value::Tensor((*t).clone())),
                None => values
                    .get(&out.node)
                    .cloned()
                    .ok_or_else(|| Error::internal(format!("input {i} of '{}' was not computed", node.name))),
            }
        };
        let var_input = |i: usize| -> Result<Arc<Variable>> {
            match input(i)? {
                Value::Var(v) => Ok(v),
                Value::Tensor(_) => {
                    Err(Error::invalid(format!("input {i} of '{}' must be a variable, but was fed a value", node.name)))
                }
            }
        };
        let value = match node.op {
            OpType::NoOp => return Ok(None),
            OpType::VariableV2 => Value::Var(device.variables().get_or_create(&node.name, &node.outputs[0])?),
            OpType::Assign => Value::Tensor(var_input(0)?.assign(input(1)?.tensor()?)?),
            OpType::AssignAdd | OpType::AssignSub => {
                let delta = input(1)?.tensor()?;
                let var = var_input(0)?;
                Value::Tensor(var.update(|old| kernels::assign_update(node, old, &delta))?)
            }
            OpType::IsVariableInitialized => Value::Tensor(bool_scalar(var_input(0)?.is_initialized())),
            OpType::ReportUninitializedVariables => {
                let mut names = Vec::new();
                for i in 0..node.inputs.len() {
                    let v = var_input(i)?;
                    if !v.is_initialized() {
                        names.push(graph.node(node.inputs[i].node)?.name.clone());
                    }
                }
                Value::Tensor(Tensor::strings(&names))
            }
            _ => {
                let inputs = (0..node.inputs.len()).map(|i| input(i)?.tensor()).collect::<Result<Vec<_>>>()?;
                let rng = self.rngs.entry(node.id).or_default();
                Value::Tensor(kernels::compute(node, &inputs, rng)?)
            }
        };
        Ok(Some(value))
    }
}

fn bool_scalar(b: bool) -> Tensor {
    Tensor::Bool(ndarray::ArrayD::from_elem(ndarray::IxDyn(&[]), b).into_shared())
}

#[cfg(test)]
mod tests;
