//! Plans: which nodes a step runs, in which order, on which device. Built
//! once per (graph version, fetches, fed outputs, targets) and cached.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Device, DeviceSet, RunRequest};
use crate::cluster::{ClusterSpec, TaskId};
use crate::error::{Error, Result};
use crate::graph::{Graph, Node, NodeId, OpType, Output};

/// Where a session's ops go: the cluster, the task unconstrained ops go to,
/// and the devices this process can run ops on.
#[derive(Clone, Debug)]
pub struct Placement {
    /// The cluster the session's task belongs to.
    pub cluster: ClusterSpec,
    /// Where unconstrained ops go (the cluster's first task, or the session's own).
    pub default_task: TaskId,
    /// Devices reachable from here.
    pub devices: Arc<dyn DeviceSet>,
}

/// The cache key of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct PlanKey {
    pub version: u64,
    pub fetches: Vec<Output>,
    pub fed: Vec<Output>,
    pub targets: Vec<NodeId>,
}

impl PlanKey {
    pub fn of(graph: &Graph, req: &RunRequest) -> Self {
        let mut fed: Vec<Output> = req.feeds.iter().map(|(o, _)| *o).collect();
        fed.sort_unstable();
        PlanKey { version: graph.version(), fetches: req.fetches.clone(), fed, targets: req.targets.clone() }
    }
}

/// The nodes a step runs, in dependency order, each with its device.
#[derive(Debug)]
pub(super) struct Plan {
    /// Node ids in an order where inputs come first.
    pub order: Vec<NodeId>,
    /// For each entry of `order`, an index into `devices`.
    pub node_device: Vec<usize>,
    /// Devices the step touches; index 0 is the session's home device.
    pub devices: Vec<Arc<Device>>,
}

impl Plan {
    pub fn build(graph: &Graph, req: &RunRequest, home: &Arc<Device>, placement: &Placement) -> Result<Plan> {
        let fed_nodes: HashSet<NodeId> = req.feeds.iter().map(|(o, _)| o.node).collect();
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
        let mut devices = vec![home.clone()];
        let mut node_device = Vec::with_capacity(order.len());
        for &id in &order {
            let node = &graph.nodes()[id as usize];
            if node.op == OpType::Placeholder {
                return Err(Error::invalid(format!(
                    "placeholder '{}' ({}) must be fed a value",
                    node.name, node.outputs[0]
                )));
            }
            let device = place(graph, node, placement)?;
            let index = match devices.iter().position(|d| Arc::ptr_eq(d, &device)) {
                Some(i) => i,
                None => {
                    devices.push(device);
                    devices.len() - 1
                }
            };
            node_device.push(index);
        }
        Ok(Plan { order, node_device, devices })
    }
}

/// The device a node runs on: its own request, or its variable's when it
/// reads or writes one, gaps filled from the default task.
fn place(graph: &Graph, node: &Node, placement: &Placement) -> Result<Arc<Device>> {
    let spec = match node.colocate_with {
        Some(var) => &graph.node(var)?.device,
        None => &node.device,
    };
    let task = placement
        .cluster
        .resolve(spec, &placement.default_task)
        .map_err(|e| Error::invalid(format!("op '{}': {}", node.name, e.message())))?;
    placement.devices.device(&task).ok_or_else(|| {
        Error::unavailable(format!("op '{}' is placed on {task}, which this host cannot reach", node.name))
    })
}
