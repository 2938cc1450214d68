//! Optimizers (`tf.train.*Optimizer`): `compute_gradients` asks the host
//! for gradients, `apply_gradients` adds one fused update op per variable
//! (run on the variable's task, atomic there) and bumps the global step.
//!
//! Slot variables are created beside their variable (same device) with
//! TensorFlow's names (`W/RMSProp`, `W/RMSProp_1`, `W/Adam`, `W/Momentum`),
//! so every worker that builds the same optimizer shares them by name. Build
//! optimizers outside name scopes: a scope would prefix the slots' names.

use std::collections::HashMap;

use crate::error::{Code, Error, Result};
use crate::graph::{AttrValue, Graph, Op, Output};
use crate::tensor::{DType, Tensor};
use crate::variable::{Variable, VariableOptions};

/// A scalar of `dtype` (f32 or f64).
fn scalar(g: &Graph, dtype: DType, v: f64) -> Result<Output> {
    match dtype {
        DType::F64 => g.constant(v),
        _ => g.constant(v as f32),
    }
}

fn var_type(g: &Graph, var: &Variable) -> Result<(DType, Vec<i64>)> {
    g.output_type(var.output())
}

/// `var`'s dtype, if optimizers can train it (f32 or f64).
fn trainable_dtype(g: &Graph, var: &Variable) -> Result<DType> {
    let dtype = var_type(g, var)?.0;
    if matches!(dtype, DType::F32 | DType::F64) {
        return Ok(dtype);
    }
    let name = crate::tensor::dtype_name(dtype);
    Err(Error::new(
        Code::InvalidArgument,
        format!("cannot optimize variable '{}': it is {name}; optimizers train f32 and f64 variables", var.name()),
    ))
}

/// A slot of `var`: a non-trainable variable `<var>/<suffix>` of its type,
/// filled with `init`, on its device.
fn slot(g: &Graph, var: &Variable, suffix: &str, init: f64) -> Result<Variable> {
    let dtype = trainable_dtype(g, var)?;
    let shape = var_type(g, var)?.1;
    let value: Tensor = if dtype == DType::F64 { init.into() } else { (init as f32).into() };
    let initial = g.fill(&shape, value)?;
    let device = g.operation(var.output()).map(|o| o.device).filter(|d| !d.is_empty());
    let name = format!("{}/{suffix}", var.name());
    Variable::with_options(g, initial, &name, VariableOptions { device, trainable: false })
}

/// What every optimizer does; implement [`Optimizer::apply_dense`] (and
/// [`Optimizer::finish`] if it keeps state beyond slots) for a new one.
pub trait Optimizer {
    /// TensorFlow's name for it (`GradientDescent`, `RMSProp`): the name
    /// scope of its ops and the suffix of its slots.
    fn name(&self) -> &'static str;

    /// Creates the slots of `var` (outside any name scope), if it has none yet.
    fn create_slots(&mut self, g: &Graph, var: &Variable) -> Result<()>;

    /// Adds the fused update of `var` by `grad`.
    fn apply_dense(&mut self, g: &Graph, grad: Output, var: &Variable) -> Result<Op>;

    /// Adds what runs after every update; returns the op that completes a step.
    fn finish(&mut self, g: &Graph, updates: &[Op]) -> Result<Op> {
        g.group(updates)
    }

    /// `compute_gradients(loss, var_list)`: the gradient of `loss` for each
    /// variable, `None` where the loss does not depend on it.
    fn compute_gradients<'v>(
        &self,
        g: &Graph,
        loss: Output,
        var_list: &[&'v Variable],
    ) -> Result<Vec<(Option<Output>, &'v Variable)>> {
        if var_list.is_empty() {
            return Err(Error::new(Code::InvalidArgument, "compute_gradients: var_list is empty"));
        }
        for var in var_list {
            trainable_dtype(g, var)?;
        }
        let xs: Vec<Output> = var_list.iter().map(|v| v.output()).collect();
        let grads = g.gradients(&[loss], &xs)?;
        Ok(grads.into_iter().zip(var_list.iter().copied()).collect())
    }

    /// `apply_gradients(grads_and_vars, global_step)`: one op that applies
    /// every update and then adds one to `global_step`.
    fn apply_gradients(
        &mut self,
        g: &Graph,
        grads_and_vars: &[(Option<Output>, &Variable)],
        global_step: Option<&Variable>,
    ) -> Result<Op> {
        let present: Vec<(Output, &Variable)> = grads_and_vars.iter().filter_map(|(g, v)| g.map(|g| (g, *v))).collect();
        if present.is_empty() {
            let names: Vec<String> = grads_and_vars.iter().map(|(_, v)| v.name()).collect();
            return Err(Error::new(
                Code::InvalidArgument,
                format!("no gradients for any variable ({}): check that the loss depends on them", names.join(", ")),
            ));
        }
        for (_, var) in &present {
            self.create_slots(g, var)?;
        }
        let name = self.name();
        let done = g.name_scope(name, |g| {
            let mut updates = Vec::with_capacity(present.len());
            for (grad, var) in &present {
                let scope = format!("update_{}", var.name().replace('/', "_"));
                updates.push(g.name_scope(&scope, |g| self.apply_dense(g, *grad, var))?);
            }
            self.finish(g, &updates)
        })?;
        match global_step {
            None => Ok(done),
            Some(step) => g.control_dependencies(&[done], |_| Ok(step.assign_add(1i64)?.op())),
        }
    }

    /// `minimize(loss, var_list, global_step)`: compute and apply in one.
    fn minimize(
        &mut self,
        g: &Graph,
        loss: Output,
        var_list: &[&Variable],
        global_step: Option<&Variable>,
    ) -> Result<Op> {
        let grads = self.compute_gradients(g, loss, var_list)?;
        self.apply_gradients(g, &grads, global_step)
    }
}

/// `tf.train.GradientDescentOptimizer`: `var -= learning_rate * grad`.
#[derive(Debug, Clone)]
pub struct GradientDescent {
    learning_rate: f64,
}

impl GradientDescent {
    /// Plain SGD with a fixed learning rate.
    pub fn new(learning_rate: f64) -> Self {
        GradientDescent { learning_rate }
    }
}

impl Optimizer for GradientDescent {
    fn name(&self) -> &'static str {
        "GradientDescent"
    }

    fn create_slots(&mut self, g: &Graph, var: &Variable) -> Result<()> {
        trainable_dtype(g, var).map(drop)
    }

    fn apply_dense(&mut self, g: &Graph, grad: Output, var: &Variable) -> Result<Op> {
        let lr = scalar(g, var_type(g, var)?.0, self.learning_rate)?;
        g.op("ApplyGradientDescent").input(var.output()).input(lr).input(grad).build_op()
    }
}

/// `tf.train.MomentumOptimizer`: slot `<var>/Momentum`.
#[derive(Debug)]
pub struct Momentum {
    learning_rate: f64,
    momentum: f64,
    nesterov: bool,
    slots: HashMap<String, Variable>,
}

impl Momentum {
    /// Momentum SGD; `nesterov` for Nesterov's variant.
    pub fn new(learning_rate: f64, momentum: f64, nesterov: bool) -> Self {
        Momentum { learning_rate, momentum, nesterov, slots: HashMap::new() }
    }
}

impl Optimizer for Momentum {
    fn name(&self) -> &'static str {
        "Momentum"
    }

    fn create_slots(&mut self, g: &Graph, var: &Variable) -> Result<()> {
        if let std::collections::hash_map::Entry::Vacant(e) = self.slots.entry(var.name()) {
            e.insert(slot(g, var, "Momentum", 0.0)?);
        }
        Ok(())
    }

    fn apply_dense(&mut self, g: &Graph, grad: Output, var: &Variable) -> Result<Op> {
        let dtype = var_type(g, var)?.0;
        let accum = &self.slots[&var.name()];
        g.op("ApplyMomentum")
            .input(var.output())
            .input(accum.output())
            .input(scalar(g, dtype, self.learning_rate)?)
            .input(grad)
            .input(scalar(g, dtype, self.momentum)?)
            .attr("use_nesterov", AttrValue::Boolean(self.nesterov))
            .build_op()
    }
}

/// `tf.train.RMSPropOptimizer`: slots `<var>/RMSProp` (mean square, starts
/// at ones) and `<var>/RMSProp_1` (momentum).
#[derive(Debug)]
pub struct RmsProp {
    learning_rate: f64,
    decay: f64,
    momentum: f64,
    epsilon: f64,
    slots: HashMap<String, (Variable, Variable)>,
}

impl RmsProp {
    /// RMSProp with TensorFlow's defaults: decay 0.9, momentum 0, epsilon 1e-10.
    pub fn new(learning_rate: f64) -> Self {
        Self::with(learning_rate, 0.9, 0.0, 1e-10)
    }

    /// RMSProp with every setting (A3C uses decay 0.99, epsilon 0.1).
    pub fn with(learning_rate: f64, decay: f64, momentum: f64, epsilon: f64) -> Self {
        RmsProp { learning_rate, decay, momentum, epsilon, slots: HashMap::new() }
    }
}

impl Optimizer for RmsProp {
    fn name(&self) -> &'static str {
        "RMSProp"
    }

    fn create_slots(&mut self, g: &Graph, var: &Variable) -> Result<()> {
        if let std::collections::hash_map::Entry::Vacant(e) = self.slots.entry(var.name()) {
            let ms = slot(g, var, "RMSProp", 1.0)?;
            e.insert((ms, slot(g, var, "RMSProp_1", 0.0)?));
        }
        Ok(())
    }

    fn apply_dense(&mut self, g: &Graph, grad: Output, var: &Variable) -> Result<Op> {
        let dtype = var_type(g, var)?.0;
        let (ms, mom) = &self.slots[&var.name()];
        g.op("ApplyRMSProp")
            .input(var.output())
            .input(ms.output())
            .input(mom.output())
            .input(scalar(g, dtype, self.learning_rate)?)
            .input(scalar(g, dtype, self.decay)?)
            .input(scalar(g, dtype, self.momentum)?)
            .input(scalar(g, dtype, self.epsilon)?)
            .input(grad)
            .build_op()
    }
}

/// `tf.train.AdamOptimizer`: slots `<var>/Adam` (m) and `<var>/Adam_1` (v),
/// and `beta1_power` / `beta2_power` beside the first variable.
#[derive(Debug)]
pub struct Adam {
    learning_rate: f64,
    beta1: f64,
    beta2: f64,
    epsilon: f64,
    slots: HashMap<String, (Variable, Variable)>,
    powers: Option<(Variable, Variable)>,
}

impl Adam {
    /// Adam with TensorFlow's defaults: beta1 0.9, beta2 0.999, epsilon 1e-8.
    pub fn new(learning_rate: f64) -> Self {
        Self::with(learning_rate, 0.9, 0.999, 1e-8)
    }

    /// Adam with every setting.
    pub fn with(learning_rate: f64, beta1: f64, beta2: f64, epsilon: f64) -> Self {
        Adam { learning_rate, beta1, beta2, epsilon, slots: HashMap::new(), powers: None }
    }
}

impl Optimizer for Adam {
    fn name(&self) -> &'static str {
        "Adam"
    }

    fn create_slots(&mut self, g: &Graph, var: &Variable) -> Result<()> {
        if self.powers.is_none() {
            let dtype = var_type(g, var)?.0;
            let device = g.operation(var.output()).map(|o| o.device).filter(|d| !d.is_empty());
            let opts = || VariableOptions { device: device.clone(), trainable: false };
            let power = |v: f64| -> Tensor { if dtype == DType::F64 { v.into() } else { (v as f32).into() } };
            let b1 = Variable::with_options(g, power(self.beta1), "beta1_power", opts())?;
            let b2 = Variable::with_options(g, power(self.beta2), "beta2_power", opts())?;
            self.powers = Some((b1, b2));
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.slots.entry(var.name()) {
            let m = slot(g, var, "Adam", 0.0)?;
            e.insert((m, slot(g, var, "Adam_1", 0.0)?));
        }
        Ok(())
    }

    fn apply_dense(&mut self, g: &Graph, grad: Output, var: &Variable) -> Result<Op> {
        let dtype = var_type(g, var)?.0;
        let (m, v) = &self.slots[&var.name()];
        let (b1p, b2p) = self.powers.as_ref().expect("created with the slots");
        g.op("ApplyAdam")
            .input(var.output())
            .input(m.output())
            .input(v.output())
            .input(b1p.value())
            .input(b2p.value())
            .input(scalar(g, dtype, self.learning_rate)?)
            .input(scalar(g, dtype, self.beta1)?)
            .input(scalar(g, dtype, self.beta2)?)
            .input(scalar(g, dtype, self.epsilon)?)
            .input(grad)
            .build_op()
    }

    fn finish(&mut self, g: &Graph, updates: &[Op]) -> Result<Op> {
        let (b1p, b2p) = self.powers.as_ref().expect("created with the slots");
        let (beta1, beta2) = (self.beta1, self.beta2);
        g.control_dependencies(updates, |g| {
            let dtype = g.output_type(b1p.output())?.0;
            let next1 = g.mul(b1p.value(), scalar(g, dtype, beta1)?)?;
            let next2 = g.mul(b2p.value(), scalar(g, dtype, beta2)?)?;
            let a = b1p.assign(next1)?.op();
            let b = b2p.assign(next2)?.op();
            g.group(&[a, b])
        })
    }
}
