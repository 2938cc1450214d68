//! Shape and dtype inference for the training ops: cross-entropy, the
//! gradient helpers and the fused optimizer updates.

use super::infer::{InferCtx, shapes_compatible};
use super::op::OpType;
use crate::error::Result;
use crate::tensor::{DType, ShapeDisplay, TensorType};

/// Output types of the ops this file covers.
pub fn infer(cx: &InferCtx<'_>) -> Result<Vec<TensorType>> {
    use OpType::*;
    match cx.op {
        SoftmaxCrossEntropyWithLogits => {
            cx.arity(2)?;
            let dtype = cx.float(0)?;
            cx.same_dtype(0, 1)?;
            let (logits, labels) = (&cx.inputs[0].shape, &cx.inputs[1].shape);
            if logits.is_empty() || !shapes_compatible(logits, labels) {
                return Err(cx.err(format!(
                    "logits {} and labels {} must have one shape of rank >= 1",
                    ShapeDisplay(logits),
                    ShapeDisplay(labels)
                )));
            }
            Ok(vec![TensorType { dtype, shape: logits[..logits.len() - 1].to_vec() }])
        }
        SumToShapeOf | BroadcastToShapeOf => {
            cx.arity(2)?;
            cx.numeric(0)?;
            cx.same_dtype(0, 1)?;
            let like = &cx.inputs[1].shape;
            let x = &cx.inputs[0].shape;
            let fits = if cx.op == SumToShapeOf { x.len() >= like.len() } else { x.len() <= like.len() };
            if !fits {
                return Err(cx.err(format!("{} cannot be shaped like {}", cx.input_desc(0), cx.input_desc(1))));
            }
            if cx.op == BroadcastToShapeOf {
                cx.attrs.bool(cx.name, "mean")?;
            }
            Ok(vec![cx.inputs[1].clone()])
        }
        ReluGrad => {
            cx.arity(2)?;
            cx.numeric(0)?;
            cx.same_dtype(0, 1)?;
            same_shape(cx, 0, 1)?;
            Ok(vec![cx.inputs[0].clone()])
        }
        SigmoidGrad | TanhGrad => {
            cx.arity(2)?;
            cx.float(0)?;
            cx.same_dtype(0, 1)?;
            same_shape(cx, 0, 1)?;
            Ok(vec![cx.inputs[0].clone()])
        }
        ApplyGradientDescent => apply(cx, 1, &[1], 2),
        // TensorFlow's order: (var, accum, lr, grad, momentum).
        ApplyMomentum => apply(cx, 2, &[2, 4], 3),
        ApplyAdam => apply(cx, 3, &[3, 4, 5, 6, 7, 8], 9),
        ApplyRMSProp => apply(cx, 3, &[3, 4, 5, 6], 7),
        SaveV2 => {
            if cx.inputs.len() < 2 {
                return Err(cx.err("takes the variables to save, then the step"));
            }
            let step = cx.inputs.len() - 1;
            if cx.inputs[step] != TensorType::scalar(DType::I64) {
                return Err(cx.err(format!("the step, {}, must be an i64 scalar", cx.input_desc(step))));
            }
            checkpoint_attrs(cx, "prefix", true)?;
            no_strings(cx, step)?;
            Ok(vec![TensorType { dtype: DType::String, shape: vec![Some(1)] }])
        }
        RestoreV2 => {
            if cx.inputs.is_empty() {
                return Err(cx.err("takes the variables to restore"));
            }
            checkpoint_attrs(cx, "checkpoint", false)?;
            checkpoint_attrs(cx, "prefix", false)?;
            no_strings(cx, cx.inputs.len())?;
            Ok(vec![TensorType::scalar(DType::I64)])
        }
        CheckpointSteps => {
            cx.arity(0)?;
            checkpoint_attrs(cx, "prefix", true)?;
            Ok(vec![TensorType { dtype: DType::I64, shape: vec![None] }])
        }
        WriteScalarSummary => {
            cx.arity(2)?;
            if cx.inputs[0] != TensorType::scalar(DType::I64) {
                return Err(cx.err(format!("the step, {}, must be an i64 scalar", cx.input_desc(0))));
            }
            cx.float(1)?;
            if !cx.inputs[1].shape.is_empty() {
                return Err(cx.err(format!("{} must be a scalar", cx.input_desc(1))));
            }
            match cx.attrs.str(cx.name, "tag")? {
                Some(t) if !t.is_empty() && t.len() <= 256 => Ok(vec![]),
                _ => Err(cx.err("needs attr 'tag', a string of 1 to 256 bytes")),
            }
        }
        other => Err(cx.err(format!("{} is not a training op", other.name()))),
    }
}

/// The checkpoint name attr `name` (required or not) must be a safe relative path.
fn checkpoint_attrs(cx: &InferCtx<'_>, name: &str, required: bool) -> Result<()> {
    match cx.attrs.str(cx.name, name)? {
        Some(p) => crate::checkpoint::CheckpointDir::check_prefix(p).map_err(|e| cx.err(e.message()))?,
        None if !required => {}
        None => return Err(cx.err(format!("needs attr '{name}', a relative path"))),
    }
    if let Some(n) = cx.attrs.int(cx.name, "max_to_keep")?
        && !(1..=1000).contains(&n)
    {
        return Err(cx.err(format!("max_to_keep {n} must be 1 to 1000")));
    }
    Ok(())
}

fn no_strings(cx: &InferCtx<'_>, vars: usize) -> Result<()> {
    match (0..vars).find(|&i| cx.inputs[i].dtype == DType::String) {
        Some(i) => Err(cx.err(format!("{} is a string tensor; checkpoints hold numbers", cx.input_desc(i)))),
        None => Ok(()),
    }
}

fn same_shape(cx: &InferCtx<'_>, a: usize, b: usize) -> Result<()> {
    if shapes_compatible(&cx.inputs[a].shape, &cx.inputs[b].shape) {
        Ok(())
    } else {
        Err(cx.err(format!("{} and {} differ in shape", cx.input_desc(a), cx.input_desc(b))))
    }
}

/// A fused update: `refs` variables of one type (the variable, then its
/// slots), scalar hyperparameters at `scalars`, the gradient at `grad`.
fn apply(cx: &InferCtx<'_>, refs: usize, scalars: &[usize], grad: usize) -> Result<Vec<TensorType>> {
    cx.arity(refs + scalars.len() + 1)?;
    let var = &cx.inputs[0];
    if !var.dtype.is_float() {
        return Err(
            cx.err(format!("variable {} is {}; optimizers update f32 and f64 variables only", cx.input_names[0], var))
        );
    }
    for i in 1..refs {
        if cx.inputs[i] != *var {
            return Err(cx.err(format!("slot {} must have the variable's type {var}", cx.input_desc(i))));
        }
    }
    for &i in scalars {
        cx.same_dtype(0, i)?;
        if !cx.inputs[i].shape.is_empty() {
            return Err(cx.err(format!("{} must be a scalar", cx.input_desc(i))));
        }
    }
    cx.same_dtype(0, grad)?;
    if !shapes_compatible(&var.shape, &cx.inputs[grad].shape) {
        return Err(cx.err(format!(
            "gradient {} does not match variable '{}' of type {var}",
            cx.input_desc(grad),
            cx.input_names[0]
        )));
    }
    Ok(vec![var.clone()])
}
