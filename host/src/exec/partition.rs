//! Running one partition: a set of nodes (in id order) on this process's
//! devices, with the values it needs from outside supplied, returning the
//! values others need from it. Masters run their local partitions with it;
//! task servers run the partitions masters register with them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::{ComputeMeter, Device, DeviceStats, NodeStats, StepCharges, Variable, kernels, kernels_train};
use crate::checkpoint::DEFAULT_MAX_TO_KEEP;
use crate::error::{Error, Result};
use crate::graph::{Node, NodeId, OpType, Output};
use crate::tensor::{Tensor, TensorType};

/// The nodes of one partition and its boundary.
#[derive(Clone, Debug)]
pub struct PartitionDef {
    /// Nodes in a topological order (a node's inputs come before it).
    pub nodes: Vec<Node>,
    /// Outputs whose values come from outside (feeds, other partitions).
    pub inputs: Vec<Output>,
    /// The static type of each input, in order.
    pub input_types: Vec<TensorType>,
    /// Outputs whose values it returns (variables read, not referenced).
    pub outputs: Vec<Output>,
}

/// Step stats being collected: per device, `_SOURCE` first.
#[derive(Debug)]
pub struct Trace {
    wall: std::time::Duration,
    clock: Instant,
    devices: Vec<DeviceStats>,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            wall: SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default(),
            clock: Instant::now(),
            devices: Vec::new(),
        }
    }
}

impl Trace {
    fn micros(&self, at: Instant) -> u64 {
        (self.wall + at.duration_since(self.clock)).as_micros() as u64
    }

    /// The stats of `device`, started with `_SOURCE` if it is new.
    pub fn device(&mut self, device: &str) -> &mut Vec<NodeStats> {
        let i = match self.devices.iter().position(|d| d.device == device) {
            Some(i) => i,
            None => {
                let source = NodeStats {
                    node_name: "_SOURCE".into(),
                    start_micros: self.micros(self.clock),
                    duration_micros: 0,
                };
                self.devices.push(DeviceStats { device: device.to_string(), nodes: vec![source] });
                self.devices.len() - 1
            }
        };
        &mut self.devices[i].nodes
    }

    fn record(&mut self, device: &str, node: &str, start: Instant) {
        let stats = NodeStats {
            node_name: node.to_string(),
            start_micros: self.micros(start),
            duration_micros: start.elapsed().as_micros() as u64,
        };
        self.device(device).push(stats);
    }

    /// Adds stats another process collected.
    pub fn merge(&mut self, stats: Vec<DeviceStats>) {
        for d in stats {
            // `device` starts a new device with its own `_SOURCE`.
            let mine = self.device(&d.device);
            mine.extend(d.nodes.into_iter().filter(|n| n.node_name != "_SOURCE"));
        }
    }

    /// The collected stats.
    pub fn finish(self) -> Vec<DeviceStats> {
        self.devices
    }
}

/// A value flowing between nodes: a tensor, or a reference to a variable.
#[derive(Clone, Debug)]
enum Value {
    Tensor(Tensor),
    Var(Arc<Variable>),
}

impl Value {
    /// The tensor, as it is: possibly in shared memory
    /// ([`Tensor::Mapped`]), for kernels that take it so and for outputs.
    fn tensor(&self) -> Result<Tensor> {
        match self {
            Value::Tensor(t) => Ok(t.clone()),
            Value::Var(v) => v.read(),
        }
    }

    /// The tensor in ordinary storage, for what keeps it (a variable) or
    /// reads it by variant.
    fn owned_tensor(&self) -> Result<Tensor> {
        self.tensor().map(Tensor::materialize)
    }
}

/// Whether `op` hands back its first input's buffer.
fn shares_input_buffer(op: OpType) -> bool {
    matches!(op, OpType::Identity | OpType::StopGradient)
}

/// Runs `def`: node `i` on `devices[node_device[i]]`, outside values from
/// `inputs`. Returns the values of `def.outputs`, in order.
pub fn run_partition(
    def: &PartitionDef,
    devices: &[Arc<Device>],
    node_device: &[usize],
    inputs: &HashMap<Output, Tensor>,
    rngs: &mut HashMap<NodeId, Option<crate::exec::OpRng>>,
    mut trace: Option<&mut Trace>,
    meter: Option<&ComputeMeter>,
) -> Result<Vec<Tensor>> {
    // An input in shared memory that some node cannot read in place is
    // copied out once here, not once per node that reads it.
    let copied;
    if let Some(m) = meter {
        m.check()?;
    }
    let start = Instant::now();
    let inputs = match copy_mapped_inputs(def, inputs) {
        Some(c) => {
            copied = c;
            &copied
        }
        None => inputs,
    };
    if let Some(m) = meter {
        m.charge(start.elapsed());
    }
    let mut values: HashMap<NodeId, Value> = HashMap::with_capacity(def.nodes.len());
    // Each value's tensor charges, dropped (released) with the value once
    // the last node that reads it has run, as TensorFlow frees a tensor when
    // its consumers are done: a deep chain holds two activations, not all.
    // An op that hands back its input's buffer shares the input's charges.
    let mut charges: HashMap<NodeId, Arc<StepCharges>> = HashMap::with_capacity(def.nodes.len());
    let mut readers: HashMap<NodeId, usize> = HashMap::new();
    for input in def.nodes.iter().flat_map(|n| &n.inputs).filter(|o| !inputs.contains_key(o)) {
        *readers.entry(input.node).or_default() += 1;
    }
    let returned: HashSet<NodeId> = def.outputs.iter().filter(|o| !inputs.contains_key(o)).map(|o| o.node).collect();
    for (node, &dev) in def.nodes.iter().zip(node_device) {
        let device = &devices[dev];
        if let Some(m) = meter {
            m.check()?;
        }
        let start = Instant::now();
        let mut own = StepCharges::default();
        let value = run_node(node, device, inputs, &values, rngs, &mut own);
        if let Some(m) = meter {
            m.charge(start.elapsed());
        }
        let needed = readers.contains_key(&node.id) || returned.contains(&node.id);
        if let Some(v) = value?.filter(|_| needed) {
            values.insert(node.id, v);
            let shared = shares_input_buffer(node.op).then(|| node.inputs.first().and_then(|o| charges.get(&o.node)));
            match shared {
                Some(Some(input)) => charges.insert(node.id, input.clone()),
                _ => charges.insert(node.id, Arc::new(own)),
            };
        }
        for input in node.inputs.iter().filter(|o| !inputs.contains_key(o)) {
            let left = readers.get_mut(&input.node).map(|r| {
                *r -= 1;
                *r
            });
            if left == Some(0) && !returned.contains(&input.node) {
                values.remove(&input.node);
                charges.remove(&input.node);
            }
        }
        if let Some(t) = trace.as_deref_mut() {
            t.record(device.name(), &node.name, start);
        }
    }
    def.outputs
        .iter()
        .map(|out| match inputs.get(out) {
            Some(t) => Ok(t.clone()),
            None => values
                .get(&out.node)
                .ok_or_else(|| Error::internal(format!("output of node {} was not computed", out.node)))?
                .tensor(),
        })
        .collect()
}

/// `inputs` with every mapped tensor that a node of `def` would copy
/// anyway copied out now, or `None` when none is.
fn copy_mapped_inputs(def: &PartitionDef, inputs: &HashMap<Output, Tensor>) -> Option<HashMap<Output, Tensor>> {
    // What `kernels::compute` reads in place (or passes on), and the
    // optimizers (their gradient; their scalars are small).
    let in_place = |op: OpType| {
        kernels::reads_mapped_in_place(op)
            || matches!(
                op,
                OpType::ApplyGradientDescent | OpType::ApplyMomentum | OpType::ApplyAdam | OpType::ApplyRMSProp
            )
    };
    let copy: HashSet<Output> = def
        .nodes
        .iter()
        .filter(|n| !in_place(n.op))
        .flat_map(|n| &n.inputs)
        .filter(|o| matches!(inputs.get(o), Some(Tensor::Mapped(_))))
        .copied()
        .collect();
    if copy.is_empty() {
        return None;
    }
    Some(inputs.iter().map(|(o, t)| (*o, if copy.contains(o) { t.clone().materialize() } else { t.clone() })).collect())
}

/// The bytes `node`'s outputs will take for these inputs, from inference
/// over their concrete types (checked arithmetic, capped per tensor), or
/// `None` where inference cannot say.
fn planned_output_bytes(node: &Node, inputs: &[Tensor]) -> Result<Option<usize>> {
    let types: Vec<_> = inputs.iter().map(Tensor::tensor_type).collect();
    let bad = |why: &str| Error::invalid(format!("{} '{}': {why}", node.op.name(), node.name));
    let mut total = 0usize;
    for t in node.infer_outputs(&types)? {
        let Some(bytes) = t.checked_byte_length().map_err(|e| bad(&e.message()))? else {
            return Ok(None);
        };
        total = total.checked_add(bytes).ok_or_else(|| bad("its outputs' byte count overflows"))?;
    }
    Ok(Some(total))
}

fn scalar_i64(node: &Node, t: &Tensor) -> Result<i64> {
    match t {
        Tensor::I64(a) if a.len() == 1 => Ok(*a.iter().next().expect("one element")),
        other => Err(Error::invalid(format!("'{}': the step must be an i64 scalar, got {}", node.name, other.dtype()))),
    }
}

fn run_node(
    node: &Node,
    device: &Device,
    inputs: &HashMap<Output, Tensor>,
    values: &HashMap<NodeId, Value>,
    rngs: &mut HashMap<NodeId, Option<crate::exec::OpRng>>,
    charges: &mut StepCharges,
) -> Result<Option<Value>> {
    let input = |i: usize| -> Result<Value> {
        let out = node.inputs[i];
        match inputs.get(&out) {
            Some(t) => Ok(Value::Tensor(t.clone())),
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
        OpType::Assign => Value::Tensor(var_input(0)?.assign(input(1)?.owned_tensor()?)?),
        OpType::AssignAdd | OpType::AssignSub => {
            let delta = input(1)?.owned_tensor()?;
            let var = var_input(0)?;
            Value::Tensor(var.update(|old| kernels::assign_update(node, old, &delta))?)
        }
        OpType::ApplyGradientDescent | OpType::ApplyMomentum | OpType::ApplyAdam | OpType::ApplyRMSProp => {
            let refs = node.op.variable_ref_inputs(node.inputs.len());
            let vars = (0..refs).map(var_input).collect::<Result<Vec<_>>>()?;
            let rest = (refs..node.inputs.len()).map(|i| input(i)?.tensor()).collect::<Result<Vec<_>>>()?;
            Value::Tensor(Variable::update_together(&vars, |values| kernels_train::apply(node, values, &rest))?)
        }
        OpType::SaveV2 => {
            let n = node.inputs.len() - 1;
            let vars = (0..n).map(var_input).collect::<Result<Vec<_>>>()?;
            let step = scalar_i64(node, &input(n)?.owned_tensor()?)?;
            let prefix = node.attrs.str(&node.name, "prefix")?.unwrap_or_default();
            let keep = node.attrs.int(&node.name, "max_to_keep")?.map_or(DEFAULT_MAX_TO_KEEP, |k| k as usize);
            let values = Variable::read_together(&vars)?;
            let name = device.checkpoints()?.save(device.task(), prefix, (step >= 0).then_some(step), &values, keep)?;
            Value::Tensor(Tensor::strings(&[name]))
        }
        OpType::RestoreV2 => {
            let vars = (0..node.inputs.len()).map(var_input).collect::<Result<Vec<_>>>()?;
            let only_if_uninitialized = node.attrs.bool(&node.name, "only_if_uninitialized")?.unwrap_or(false);
            if only_if_uninitialized && vars.iter().any(|v| v.is_initialized()) {
                return Ok(Some(Value::Tensor(Tensor::scalar_i64(-1))));
            }
            let mut loaded = device.checkpoints()?.load(
                device.task(),
                node.attrs.str(&node.name, "checkpoint")?,
                node.attrs.str(&node.name, "prefix")?,
            )?;
            let mut values = Vec::with_capacity(vars.len());
            for v in &vars {
                let t = loaded.tensors.remove(v.name()).ok_or_else(|| {
                    Error::not_found(format!("checkpoint '{}' has no variable '{}'", loaded.name, v.name()))
                })?;
                if !v.tensor_type().accepts(&t) {
                    return Err(Error::invalid(format!(
                        "checkpoint '{}' holds '{}' as {}, but the variable is {}",
                        loaded.name,
                        v.name(),
                        t.tensor_type(),
                        v.tensor_type()
                    )));
                }
                values.push(t);
            }
            let restored = Variable::assign_together(&vars, values, only_if_uninitialized)?;
            let step = if restored { loaded.step.unwrap_or(0) } else { -1 };
            Value::Tensor(Tensor::scalar_i64(step))
        }
        OpType::CheckpointSteps => {
            let prefix = node.attrs.str(&node.name, "prefix")?.unwrap_or_default();
            let steps = device.checkpoints()?.steps(device.task(), prefix)?;
            let bytes: Vec<u8> = steps.iter().flat_map(|s| s.to_le_bytes()).collect();
            Value::Tensor(Tensor::from_le_bytes(crate::tensor::DType::I64, &[steps.len()], &bytes)?)
        }
        OpType::WriteScalarSummary => {
            let step = scalar_i64(node, &input(0)?.owned_tensor()?)?;
            let value = match input(1)?.owned_tensor()? {
                Tensor::F32(a) => a.iter().next().map(|&v| v as f64),
                Tensor::F64(a) => a.iter().next().copied(),
                _ => None,
            }
            .ok_or_else(|| Error::invalid(format!("'{}': the value must be a float scalar", node.name)))?;
            let tag = node.attrs.str(&node.name, "tag")?.unwrap_or_default();
            device.events()?.scalar(tag, value as f32, step)?;
            return Ok(None);
        }
        OpType::IsVariableInitialized => Value::Tensor(Tensor::Bool(
            ndarray::ArrayD::from_elem(ndarray::IxDyn(&[]), var_input(0)?.is_initialized()).into_shared(),
        )),
        _ => {
            let inputs = (0..node.inputs.len()).map(|i| input(i)?.tensor()).collect::<Result<Vec<_>>>()?;
            // Identity, StopGradient and Const hand back a buffer that exists
            // already (an input, a variable's value, an attribute): nothing
            // new to charge.
            let shares = shares_input_buffer(node.op) || node.op == OpType::Const;
            let budget = device.tensor_budget().filter(|_| !shares);
            let planned = match budget {
                Some(budget) => {
                    let bytes = planned_output_bytes(node, &inputs)?;
                    charges.charge(budget, node, bytes.unwrap_or(0))?;
                    bytes
                }
                None => Some(0),
            };
            let rng = rngs.entry(node.id).or_default();
            let out = kernels::compute(node, &inputs, rng)?;
            if let (None, Some(budget)) = (planned, budget) {
                // Sizes inference cannot know ahead (strings, data-dependent
                // shapes) are small by construction; they count once made.
                charges.charge(budget, node, crate::budget::byte_size(&out))?;
            }
            Value::Tensor(out)
        }
    };
    Ok(Some(value))
}
