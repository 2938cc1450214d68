//! Running graphs on one task's CPU device: plans (which nodes, in which
//! order, cached per graph version), placement checks, kernels, variable
//! refs and step stats.

mod kernels;
mod variables;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;

pub use variables::{Variable, VariableStore};

use crate::cluster::{ClusterSpec, TaskId};
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

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PlanKey {
    version: u64,
    fetches: Vec<Output>,
    fed: Vec<Output>,
    targets: Vec<NodeId>,
}

/// The nodes a step runs, in dependency order.
#[derive(Debug)]
struct Plan {
    order: Vec<NodeId>,
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

/// Runs steps of graphs for one session on one device. Keeps the session's
/// plan cache and the state of its random ops.
#[derive(Debug)]
pub struct Executor {
    device: Arc<Device>,
    cluster: ClusterSpec,
    default_task: TaskId,
    plans: HashMap<PlanKey, Arc<Plan>>,
    rngs: HashMap<NodeId, Option<StdRng>>,
}

impl Executor {
    /// An executor for `device`, which must be the only task any node of a
    /// plan resolves to; `default_task` is where unconstrained ops go.
    pub fn new(device: Arc<Device>, cluster: ClusterSpec, default_task: TaskId) -> Self {
        Executor { device, cluster, default_task, plans: HashMap::new(), rngs: HashMap::new() }
    }

    /// The device it runs on.
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    fn plan(&mut self, graph: &Graph, req: &RunRequest) -> Result<Arc<Plan>> {
        let mut fed: Vec<Output> = req.feeds.iter().map(|(o, _)| *o).collect();
        fed.sort_unstable();
        let key = PlanKey { version: graph.version(), fetches: req.fetches.clone(), fed, targets: req.targets.clone() };
        if let Some(plan) = self.plans.get(&key) {
            return Ok(plan.clone());
        }
        let plan = Arc::new(self.build_plan(graph, req)?);
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

    fn build_plan(&self, graph: &Graph, req: &RunRequest) -> Result<Plan> {
        let fed_nodes: std::collections::HashSet<NodeId> = req.feeds.iter().map(|(o, _)| o.node).collect();
        let mut needed = vec![false; graph.nodes().len()];
        let mut stack: Vec<NodeId> = Vec::new();
        for out in &req.fetches {
            graph.output_type(*out)?;
            stack.push(out.node);
        }
        for &t in &req.targets {
            graph.node(t)?;
            stack.push(t);
        }
        while let Some(id) = stack.pop() {
            if needed[id as usize] || fed_nodes.contains(&id) {
                continue;
            }
            needed[id as usize] = true;
            let node = graph.node(id)?;
            stack.extend(node.inputs.iter().map(|o| o.node));
            stack.extend(node.control_inputs.iter().copied());
        }
        // Inputs always have smaller ids than their consumers, so id order is
        // a topological order.
        let order: Vec<NodeId> = (0..needed.len() as NodeId).filter(|&i| needed[i as usize]).collect();
        for &id in &order {
            let node = &graph.nodes()[id as usize];
            if node.op == OpType::Placeholder {
                return Err(Error::invalid(format!(
                    "placeholder '{}' ({}) must be fed a value",
                    node.name, node.outputs[0]
                )));
            }
            self.check_placement(graph, node)?;
        }
        Ok(Plan { order })
    }

    fn check_placement(&self, graph: &Graph, node: &Node) -> Result<()> {
        let spec = match node.colocate_with {
            Some(var) => &graph.node(var)?.device,
            None => &node.device,
        };
        let task = self
            .cluster
            .resolve(spec, &self.default_task)
            .map_err(|e| Error::invalid(format!("op '{}': {}", node.name, e.message())))?;
        if task != *self.device.task() {
            return Err(Error::unavailable(format!(
                "op '{}' is placed on {task}, which this host cannot reach: it serves only {}",
                node.name,
                self.device.task()
            )));
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
        let mut stats = Vec::new();
        if req.trace {
            stats.push(NodeStats { node_name: "_SOURCE".into(), start_micros: micros(clock), duration_micros: 0 });
        }
        let feeds: HashMap<Output, &Tensor> = req.feeds.iter().map(|(o, t)| (*o, t)).collect();
        let mut values: HashMap<NodeId, Value> = HashMap::with_capacity(plan.order.len());
        for &id in &plan.order {
            let node = &graph.nodes()[id as usize];
            let start = Instant::now();
            let value = self.run_node(graph, node, &feeds, &values)?;
            if let Some(v) = value {
                values.insert(id, v);
            }
            if req.trace {
                stats.push(NodeStats {
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
        let step_stats = if req.trace {
            vec![DeviceStats { device: self.device.name().to_string(), nodes: stats }]
        } else {
            Vec::new()
        };
        Ok(RunResult { values: out, step_stats })
    }

    fn run_node(
        &mut self,
        graph: &Graph,
        node: &Node,
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
            OpType::VariableV2 => Value::Var(self.device.variables().get_or_create(&node.name, &node.outputs[0])?),
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
