//! Shape and dtype inference for the training ops: cross-entropy, the
//! gradient helpers and the fused optimizer updates.

use super::infer::{InferCtx, shapes_compatible};
use super::op::OpType;
use crate::error::Result;
use crate::tensor::{ShapeDisplay, TensorType};

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
        other => Err(cx.err(format!("{} is not a training op", other.name()))),
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
