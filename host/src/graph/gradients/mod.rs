//! Symbolic gradients (`tf.gradients`): walks back from `ys` to `xs` and adds
//! each op's gradient rule as ordinary graph nodes, named as TensorFlow names
//! them (`gradients/MatMul_grad/MatMul`) and placed with their forward op, so
//! placement, partitioning and traces treat them like any other node.
//!
//! Contract (TensorFlow's): the result for each x is the sum of dy/dx over
//! all ys; `grad_ys` default to ones of each y's shape; an x with no path to
//! any y gets `None`; gradients do not flow through `StopGradient`, through
//! the outputs named in `stop_gradients`, through ops without a rule, or into
//! integer and boolean tensors.

pub(crate) mod rules;

use std::collections::{HashMap, HashSet};

use super::catalogue::{self, Gradient};
use super::{AttrValue, Graph, NameRequest, Node, NodeId, NodeRequest, OpType, Output};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor, TensorType};

/// A gradient rule: given the forward node and the gradient of each of its
/// outputs (`None` where nothing flows back), adds nodes computing the
/// gradient of each input (`None` for inputs that get none).
pub type GradFn = fn(&mut GradCtx<'_>, &Node, &[Option<Output>]) -> Result<Vec<Option<Output>>>;

/// What a rule builds with: adds nodes in the forward op's gradient scope,
/// on the forward op's device.
pub struct GradCtx<'g> {
    graph: &'g mut Graph,
    /// The forward op's requested device and the variable it is placed with.
    forward: (crate::device::DeviceSpec, Option<NodeId>),
}

impl GradCtx<'_> {
    /// Adds `op` on `inputs` with `attrs`, named after its type in the current scope.
    pub fn op(&mut self, op: OpType, inputs: &[Output], attrs: &[(&str, AttrValue)]) -> Result<Output> {
        let mut req = NodeRequest::new(op).inputs(inputs.iter().copied());
        for (k, v) in attrs {
            req = req.attr(k, v.clone());
        }
        let colocate = self.forward.1;
        req.device = Some(self.forward.0.clone());
        let id = self.graph.add(req)?;
        if colocate.is_some() {
            self.graph.nodes[id as usize].colocate_with = colocate;
        }
        Ok(Output::of(id))
    }

    /// The static type of `x`.
    pub fn ty(&self, x: Output) -> Result<TensorType> {
        self.graph.output_type(x).cloned()
    }

    /// A scalar constant of `dtype` (a float dtype).
    pub fn scalar(&mut self, dtype: DType, v: f64) -> Result<Output> {
        let t = match dtype {
            DType::F64 => Tensor::F64(ndarray::arr0(v).into_dyn().into_shared()),
            _ => Tensor::scalar_f32(v as f32),
        };
        self.op(OpType::Const, &[], &[("value", AttrValue::Tensor(t))])
    }

    /// `g` reduced to `x`'s shape where `x` was broadcast; `g` itself when
    /// both shapes are known and equal.
    pub fn reduce_to(&mut self, g: Output, x: Output) -> Result<Output> {
        let (gt, xt) = (self.ty(g)?, self.ty(x)?);
        let known = |t: &TensorType| t.shape.iter().all(Option::is_some);
        if known(&gt) && gt.shape == xt.shape {
            return Ok(g);
        }
        self.op(OpType::SumToShapeOf, &[g, x], &[])
    }
}

impl Graph {
    /// `tf.gradients(ys, xs, grad_ys, stop_gradients)`: for each x, the sum
    /// of dy/dx over `ys` (`None` if no y depends on it).
    pub fn gradients(
        &mut self,
        ys: &[Output],
        xs: &[Output],
        grad_ys: Option<&[Output]>,
        stop_gradients: &[Output],
    ) -> Result<Vec<Option<Output>>> {
        self.check_gradient_args(ys, xs, grad_ys, stop_gradients)?;
        let stopped: HashSet<NodeId> = stop_gradients.iter().map(|o| o.node).collect();
        let between = self.between(ys, xs, &stopped);

        // Taken out so gradient nodes land exactly on their forward op's device.
        let device_scopes = std::mem::take(&mut self.device_scopes);
        let control_scopes = std::mem::take(&mut self.control_scopes);
        let scope = self.push_name_scope("gradients");
        let result = self.backprop(ys, xs, grad_ys, &between);
        let _ = self.pop_name_scope();
        self.device_scopes = device_scopes;
        self.control_scopes = control_scopes;
        result.map_err(|e| Error::status(e.code(), format!("{scope}: {}", e.message())))
    }

    fn check_gradient_args(
        &self,
        ys: &[Output],
        xs: &[Output],
        grad_ys: Option<&[Output]>,
        stop: &[Output],
    ) -> Result<()> {
        if ys.is_empty() {
            return Err(Error::invalid("gradients: ys is empty"));
        }
        let float = |what: &str, o: Output| -> Result<()> {
            let node = self.node(o.node).map_err(|e| Error::invalid(format!("gradients: {what}: {}", e.message())))?;
            let ty = self.output_type(o).map_err(|e| Error::invalid(format!("gradients: {what}: {}", e.message())))?;
            if ty.dtype.is_float() {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "gradients: {what} '{}' is {ty}; gradients are defined for f32 and f64 tensors only",
                    node.name
                )))
            }
        };
        for &y in ys {
            float("y", y)?;
        }
        for &x in xs {
            float("x", x)?;
        }
        for &s in stop {
            self.output_type(s).map_err(|e| Error::invalid(format!("gradients: stop_gradients: {}", e.message())))?;
        }
        if let Some(gys) = grad_ys {
            if gys.len() != ys.len() {
                return Err(Error::invalid(format!(
                    "gradients: {} grad_ys for {} ys; give one per y",
                    gys.len(),
                    ys.len()
                )));
            }
            for (&gy, &y) in gys.iter().zip(ys) {
                float("grad_y", gy)?;
                let (gt, yt) = (self.output_type(gy)?, self.output_type(y)?);
                if gt.dtype != yt.dtype || !super::infer::shapes_compatible(&gt.shape, &yt.shape) {
                    return Err(Error::invalid(format!(
                        "gradients: grad_y '{}' is {gt} but y '{}' is {yt}",
                        self.nodes[gy.node as usize].name, self.nodes[y.node as usize].name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Nodes on a path from some x to some y along which gradients can flow.
    fn between(&self, ys: &[Output], xs: &[Output], stopped: &HashSet<NodeId>) -> HashSet<NodeId> {
        let passes = |n: &Node| !stopped.contains(&n.id) && matches!(catalogue::def(n.op).gradient, Gradient::Rule(_));
        // Backward from ys.
        let mut reaches_y: HashSet<NodeId> = HashSet::new();
        let mut stack: Vec<NodeId> = ys.iter().map(|y| y.node).collect();
        while let Some(id) = stack.pop() {
            if !reaches_y.insert(id) {
                continue;
            }
            let node = &self.nodes[id as usize];
            if passes(node) {
                stack.extend(node.inputs.iter().map(|o| o.node));
            }
        }
        // Forward from xs, within what reaches a y.
        let mut consumers: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
        for n in &self.nodes {
            if reaches_y.contains(&n.id) && passes(n) {
                for i in &n.inputs {
                    consumers.entry(i.node).or_default().push(n.id);
                }
            }
        }
        let mut between: HashSet<NodeId> = HashSet::new();
        let mut stack: Vec<NodeId> = xs.iter().map(|x| x.node).filter(|id| reaches_y.contains(id)).collect();
        while let Some(id) = stack.pop() {
            if !between.insert(id) {
                continue;
            }
            if let Some(c) = consumers.get(&id) {
                stack.extend(c.iter().copied());
            }
        }
        between
    }

    fn backprop(
        &mut self,
        ys: &[Output],
        xs: &[Output],
        grad_ys: Option<&[Output]>,
        between: &HashSet<NodeId>,
    ) -> Result<Vec<Option<Output>>> {
        let mut pending: HashMap<Output, Vec<Output>> = HashMap::new();
        for (i, &y) in ys.iter().enumerate() {
            if !between.contains(&y.node) {
                continue;
            }
            let g = match grad_ys {
                Some(gys) => gys[i],
                None => Output::of(self.add(
                    NodeRequest::new(OpType::OnesLike).named(NameRequest::Unique(format!("grad_ys_{i}"))).inputs([y]),
                )?),
            };
            pending.entry(y).or_default().push(g);
        }
        let wanted: HashSet<Output> = xs.iter().copied().collect();
        let mut done: HashMap<Output, Output> = HashMap::new();
        let mut order: Vec<NodeId> = between.iter().copied().collect();
        order.sort_unstable_by(|a, b| b.cmp(a));
        for id in order {
            let node = self.nodes[id as usize].clone();
            let mut dys = Vec::with_capacity(node.outputs.len());
            for index in 0..node.outputs.len() as u32 {
                let out = Output { node: id, index };
                let g = match pending.remove(&out) {
                    Some(gs) => Some(self.sum_gradients(gs)?),
                    None => None,
                };
                if let (Some(g), true) = (g, wanted.contains(&out)) {
                    done.insert(out, g);
                }
                dys.push(g);
            }
            if dys.iter().all(Option::is_none) || node.inputs.is_empty() {
                continue;
            }
            let Gradient::Rule(rule) = catalogue::def(node.op).gradient else { continue };
            let input_grads = self.apply_rule(rule, &node, &dys)?;
            if input_grads.len() != node.inputs.len() {
                return Err(Error::internal(format!(
                    "gradient of {} '{}' gave {} input gradients for {} inputs",
                    node.op.name(),
                    node.name,
                    input_grads.len(),
                    node.inputs.len()
                )));
            }
            for (input, g) in node.inputs.iter().zip(input_grads) {
                let Some(g) = g else { continue };
                if between.contains(&input.node) && self.output_type(*input)?.dtype.is_float() {
                    pending.entry(*input).or_default().push(g);
                }
            }
        }
        Ok(xs.iter().map(|x| done.get(x).copied()).collect())
    }

    fn apply_rule(&mut self, rule: GradFn, node: &Node, dys: &[Option<Output>]) -> Result<Vec<Option<Output>>> {
        let scope = format!("{}_grad", node.name);
        self.push_name_scope(&scope);
        let colocate = node.colocate_with;
        let mut cx = GradCtx { graph: self, forward: (node.device.clone(), colocate) };
        let result = rule(&mut cx, node, dys);
        self.pop_name_scope()?;
        result.map_err(|e| {
            Error::status(e.code(), format!("gradient of {} '{}': {}", node.op.name(), node.name, e.message()))
        })
    }

    /// One gradient from several contributions (`AddN`), placed with the first.
    fn sum_gradients(&mut self, gs: Vec<Output>) -> Result<Output> {
        if gs.len() == 1 {
            return Ok(gs[0]);
        }
        let first = self.nodes[gs[0].node as usize].clone();
        let mut cx = GradCtx { graph: self, forward: (first.device, first.colocate_with) };
        cx.op(OpType::AddN, &gs, &[])
    }
}

#[cfg(test)]
mod tests;
