//! Plans: which nodes a step runs, where, and in which stage. Built once per
//! (graph version, fetches, fed outputs, targets) and cached by the session.
//!
//! Every node gets a location: this process (any device of its
//! [`DeviceSet`]) or a remote task. Its stage is the largest stage among the
//! nodes it depends on, plus one where that dependency is in another
//! location. Nodes of one (stage, location) form a partition; a stage's
//! partitions run once every earlier stage is done, so each remote partition
//! is one call per step. A variable node is repeated into every partition
//! on its task that uses it, so references never cross partitions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::future::BoxFuture;

use super::route::{Route, routes};
use super::{Device, DeviceSet, DeviceStats, PartitionDef, RunRequest};
use crate::cluster::{ClusterSpec, TaskId};
use crate::error::{Error, Result};
use crate::graph::{Graph, Node, NodeId, OpType, Output};
use crate::tensor::Tensor;

/// A partition placed on another task, with an id unique in this process
/// (task servers cache registrations by it).
#[derive(Debug)]
pub struct RemotePartition {
    /// Unique id.
    pub id: u64,
    /// The task that runs it.
    pub task: TaskId,
    /// Its nodes and boundary.
    pub def: PartitionDef,
    /// Which of its tensors go straight to or come straight from other
    /// tasks, not through the master.
    pub route: Route,
}

/// What a remote partition returns.
#[derive(Debug, Default)]
pub struct PartitionResult {
    /// Values of the partition's returned outputs ([`Route::returned`]), in order.
    pub outputs: Vec<Tensor>,
    /// Step stats, when traced.
    pub stats: Vec<DeviceStats>,
    /// CPU time its kernels took on the other task.
    pub host_time: std::time::Duration,
}

/// Runs partitions on tasks of other processes.
pub trait RemoteTasks: Send + Sync + std::fmt::Debug {
    /// Runs `part` on its task for step `step` with `inputs` (values of
    /// the inputs its route has the master send, in order), within what
    /// `meter` (the program's) has left.
    #[allow(clippy::too_many_arguments)]
    fn run_partition(
        &self,
        part: Arc<RemotePartition>,
        step: u64,
        inputs: Vec<Tensor>,
        trace: bool,
        timeout: Option<std::time::Duration>,
        meter: Option<Arc<super::ComputeMeter>>,
    ) -> BoxFuture<'static, Result<PartitionResult>>;

    /// Whether the tasks it reaches deliver tensors to each other: then a
    /// plan routes a tensor between two of them straight from one to the
    /// other. `false` (the default) sends everything through the master.
    fn delivers_directly(&self) -> bool {
        false
    }

    /// Delivers `tensors` to `task` for step `step` of `master` (a task
    /// forwarding its outputs, [`Route::deliveries`]).
    fn deliver(
        &self,
        task: &TaskId,
        master: u64,
        step: u64,
        tensors: Vec<Delivered>,
    ) -> BoxFuture<'static, Result<()>> {
        let _ = (master, step, tensors);
        let task = task.clone();
        Box::pin(async move { Err(Error::unavailable(format!("this host cannot deliver tensors to {task}"))) })
    }

    /// Tells `task` that step `step` of this master failed: it drops what
    /// was delivered to it for the step and refuses what still arrives.
    /// Best effort (the default does nothing): what is not forgotten
    /// expires.
    fn forget_step(&self, task: &TaskId, step: u64) -> BoxFuture<'static, Result<()>> {
        let _ = (task, step);
        Box::pin(async { Ok(()) })
    }

    /// The tensor bytes moved to and from each task it has reached (none
    /// by default), for a host's metrics.
    fn peer_traffic(&self) -> Vec<PeerTraffic> {
        Vec::new()
    }
}

/// Tensor bytes a master moved to and from one peer task, by path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerTraffic {
    /// The peer task (`/job:ps/task:0`).
    pub task: String,
    /// Its address.
    pub address: String,
    /// Bytes sent in gRPC messages.
    pub sent_streamed: u64,
    /// Bytes sent through shared memory.
    pub sent_shared: u64,
    /// Bytes received in gRPC messages.
    pub received_streamed: u64,
    /// Bytes received through shared memory.
    pub received_shared: u64,
}

/// A tensor one task delivers to another for a step: the output it is
/// the value of, and how many of the step's calls there take it.
#[derive(Clone, Debug)]
pub struct Delivered {
    /// The output (its node and index in the master's graph).
    pub key: Output,
    /// Calls of the step that take it.
    pub uses: u32,
    /// Its value.
    pub tensor: Tensor,
}

/// Where a session's ops go.
#[derive(Clone, Debug)]
pub struct Placement {
    /// The cluster the session's task belongs to.
    pub cluster: ClusterSpec,
    /// Where unconstrained ops go (the cluster's first task, or the session's own).
    pub default_task: TaskId,
    /// Devices of this process.
    pub devices: Arc<dyn DeviceSet>,
    /// How to reach the other tasks; `None` makes them unavailable.
    pub remote: Option<Arc<dyn RemoteTasks>>,
}

/// The cache key of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct PlanKey {
    version: u64,
    fetches: Vec<Output>,
    fed: Vec<Output>,
    targets: Vec<NodeId>,
}

impl PlanKey {
    pub fn of(graph: &Graph, req: &RunRequest) -> Self {
        let mut fed: Vec<Output> = req.feeds.iter().map(|(o, _)| *o).collect();
        fed.sort_unstable();
        PlanKey { version: graph.version(), fetches: req.fetches.clone(), fed, targets: req.targets.clone() }
    }
}

/// A partition of this process.
#[derive(Debug)]
pub(super) struct LocalPart {
    pub def: PartitionDef,
    /// For each node, an index into [`Plan::devices`].
    pub node_device: Vec<usize>,
}

/// The partitions of one stage.
#[derive(Debug, Default)]
pub(super) struct Stage {
    pub local: Option<LocalPart>,
    pub remote: Vec<Arc<RemotePartition>>,
}

/// A step's stages.
#[derive(Debug)]
pub(super) struct Plan {
    pub stages: Vec<Stage>,
    /// Local devices the step uses.
    pub devices: Vec<Arc<Device>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Location {
    Local,
    Remote(TaskId),
}

static NEXT_PARTITION: AtomicU64 = AtomicU64::new(1);

impl Plan {
    /// Nodes over all its partitions.
    pub fn node_count(&self) -> usize {
        self.stages
            .iter()
            .map(|s| {
                s.local.as_ref().map_or(0, |l| l.def.nodes.len())
                    + s.remote.iter().map(|r| r.def.nodes.len()).sum::<usize>()
            })
            .sum()
    }

    /// About what its copies of nodes take (see [`crate::graph::node_copy_bytes`]).
    pub fn copy_bytes(&self) -> usize {
        let partition = |def: &PartitionDef| def.nodes.iter().map(crate::graph::node_copy_bytes).sum::<usize>();
        self.stages
            .iter()
            .map(|s| {
                s.local.as_ref().map_or(0, |l| partition(&l.def))
                    + s.remote.iter().map(|r| partition(&r.def)).sum::<usize>()
            })
            .sum()
    }

    pub fn build(graph: &Graph, req: &RunRequest, placement: &Placement) -> Result<Plan> {
        /// How many nodes planning visits between checks of the program's meter.
        const PLAN_CHECK_EVERY: usize = 4096;
        let fed: HashSet<Output> = req.feeds.iter().map(|(o, _)| *o).collect();
        let fed_nodes: HashSet<NodeId> = fed.iter().map(|o| o.node).collect();
        let order = needed_nodes(graph, req, &fed_nodes)?;
        // A program killed (or out of CPU) while a big graph is planned stops
        // here too, not only at its first kernel.
        let stopped = |i: usize| match &req.meter {
            Some(m) if i.is_multiple_of(PLAN_CHECK_EVERY) => m.check(),
            _ => Ok(()),
        };

        let mut devices = Vec::new();
        let mut location: HashMap<NodeId, (Location, usize)> = HashMap::new();
        for (i, &id) in order.iter().enumerate() {
            stopped(i)?;
            let node = &graph.nodes()[id as usize];
            if node.op == OpType::Placeholder {
                return Err(Error::invalid(format!(
                    "placeholder '{}' ({}) must be fed a value",
                    node.name, node.outputs[0]
                )));
            }
            location.insert(id, place(graph, node, placement, &mut devices)?);
        }

        // A dependency on a variable node in the same location is free: the
        // variable node is repeated where it is used.
        let is_var = |id: NodeId| graph.nodes()[id as usize].op == OpType::VariableV2;
        let mut stage: HashMap<NodeId, usize> = HashMap::new();
        for (i, &id) in order.iter().enumerate() {
            stopped(i)?;
            let node = &graph.nodes()[id as usize];
            let here = &location[&id].0;
            let deps = node
                .inputs
                .iter()
                .filter(|o| !fed.contains(o))
                .map(|o| o.node)
                .chain(node.control_inputs.iter().copied());
            let s = deps
                .filter_map(|d| {
                    let (there, _) = location.get(&d)?;
                    let free = is_var(d) && graph.nodes()[d as usize].control_inputs.is_empty();
                    match (there == here, free) {
                        (true, true) => None,
                        (true, false) => Some(stage[&d]),
                        (false, _) => Some(stage[&d] + 1),
                    }
                })
                .max()
                .unwrap_or(0);
            stage.insert(id, s);
        }

        // Which outputs cross partition boundaries, and which variable nodes
        // must run on their own (fetched, or read from another location).
        let group_of = |id: NodeId| (stage[&id], location[&id].0.clone());
        let fetched: HashSet<Output> = req.fetches.iter().copied().filter(|o| !fed.contains(o)).collect();
        let mut group_nodes: BTreeMap<(usize, Location), Vec<NodeId>> = BTreeMap::new();
        let mut group_inputs: BTreeMap<(usize, Location), Vec<Output>> = BTreeMap::new();
        let mut exported: HashSet<Output> = fetched.clone();
        for (i, &id) in order.iter().enumerate() {
            stopped(i)?;
            let node = &graph.nodes()[id as usize];
            if is_var(id) {
                continue;
            }
            let g = group_of(id);
            for &input in &node.inputs {
                if fed.contains(&input) {
                    group_inputs.entry(g.clone()).or_default().push(input);
                } else if location[&input.node].0 == g.1 && is_var(input.node) {
                    group_nodes.entry(g.clone()).or_default().push(input.node);
                } else if group_of(input.node) != g {
                    group_inputs.entry(g.clone()).or_default().push(input);
                    exported.insert(input);
                }
            }
            group_nodes.entry(g).or_default().push(id);
        }
        for &id in order.iter().filter(|&&id| is_var(id)) {
            if exported.contains(&Output::of(id)) || req.targets.contains(&id) {
                group_nodes.entry(group_of(id)).or_default().push(id);
            }
        }

        let mut parts: Vec<(usize, Location, PartitionDef, Vec<NodeId>)> = Vec::new();
        for ((s, loc), mut ids) in group_nodes {
            ids.sort_unstable();
            ids.dedup();
            let members: HashSet<NodeId> = ids.iter().copied().collect();
            // Constants go first, as in TensorFlow's traces (`AssignAdd_1/value`
            // before `var`); they have no inputs, so the order stays topological.
            ids.sort_by_key(|&id| {
                let n = &graph.nodes()[id as usize];
                (!(n.op == OpType::Const && n.control_inputs.is_empty()), id)
            });
            let key = (s, loc.clone());
            let mut inputs = group_inputs.remove(&key).unwrap_or_default();
            inputs.sort_unstable();
            inputs.dedup();
            let mut outputs: Vec<Output> = exported.iter().copied().filter(|o| members.contains(&o.node)).collect();
            outputs.sort_unstable();
            let input_types = inputs.iter().map(|&o| graph.output_type(o).cloned()).collect::<Result<_>>()?;
            let def = PartitionDef {
                nodes: ids.iter().map(|&id| graph.nodes()[id as usize].clone()).collect(),
                inputs,
                input_types,
                outputs,
            };
            parts.push((s, loc, def, ids));
        }

        // Tensors between two remote tasks go straight, when they can.
        let direct = placement.remote.as_ref().is_some_and(|r| r.delivers_directly());
        let mut routed = if direct {
            let located: Vec<(usize, Option<&TaskId>, &PartitionDef)> = parts
                .iter()
                .map(|(s, loc, def, _)| match loc {
                    Location::Local => (*s, None, def),
                    Location::Remote(task) => (*s, Some(task), def),
                })
                .collect();
            routes(&located, &fetched)
        } else {
            vec![Route::default(); parts.len()]
        }
        .into_iter();

        let mut stages: Vec<Stage> = Vec::new();
        for (s, loc, def, ids) in parts {
            let route = routed.next().unwrap_or_default();
            while stages.len() <= s {
                stages.push(Stage::default());
            }
            match loc {
                Location::Local => {
                    let node_device = ids.iter().map(|id| location[id].1).collect();
                    stages[s].local = Some(LocalPart { def, node_device });
                }
                Location::Remote(task) => {
                    let id = NEXT_PARTITION.fetch_add(1, Ordering::Relaxed);
                    stages[s].remote.push(Arc::new(RemotePartition { id, task, def, route }));
                }
            }
        }
        Ok(Plan { stages, devices })
    }
}

/// The nodes the fetches and targets need, in id order (a topological
/// order: inputs always have smaller ids than their consumers).
fn needed_nodes(graph: &Graph, req: &RunRequest, fed_nodes: &HashSet<NodeId>) -> Result<Vec<NodeId>> {
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
    Ok((0..needed.len() as NodeId).filter(|&i| needed[i as usize]).collect())
}

/// A node's location: its own device request, or its variable's when it
/// reads or writes one, gaps filled from the default task.
fn place(
    graph: &Graph,
    node: &Node,
    placement: &Placement,
    devices: &mut Vec<Arc<Device>>,
) -> Result<(Location, usize)> {
    let spec = match node.colocate_with {
        Some(var) => &graph.node(var)?.device,
        None => &node.device,
    };
    let task = placement
        .cluster
        .resolve(spec, &placement.default_task)
        .map_err(|e| Error::invalid(format!("op '{}': {}", node.name, e.message())))?;
    if let Some(device) = placement.devices.device(&task) {
        let index = match devices.iter().position(|d| Arc::ptr_eq(d, &device)) {
            Some(i) => i,
            None => {
                devices.push(device);
                devices.len() - 1
            }
        };
        return Ok((Location::Local, index));
    }
    if placement.remote.is_some() {
        return Ok((Location::Remote(task), 0));
    }
    Err(Error::unavailable(format!("op '{}' is placed on {task}, which this host cannot reach", node.name)))
}
