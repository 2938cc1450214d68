//! CPU kernels of the training ops: log-softmax and cross-entropy (computed
//! stably, shifting by each row's maximum), the gradient helpers, and the
//! fused optimizer updates, which change a variable and its slots in place
//! under their locks.

use ndarray::{ArrayD, Axis, IxDyn, Zip};
use num_traits::Float;

use super::kernels::{Arr, node_err};
use crate::error::Result;
use crate::graph::{Node, OpType};
use crate::tensor::{DType, Tensor};

macro_rules! floats {
    ($node:expr, $x:expr, $a:ident => $body:expr) => {
        match $x {
            Tensor::F32($a) => Tensor::F32($body.into_shared()),
            Tensor::F64($a) => Tensor::F64($body.into_shared()),
            other => return Err(node_err($node, format!("needs f32 or f64, got {}", other.dtype()))),
        }
    };
}

fn log_softmax_of<T: Float + 'static>(a: &Arr<T>) -> ArrayD<T> {
    let mut out = a.to_owned();
    for mut lane in out.lanes_mut(Axis(a.ndim() - 1)) {
        let max = lane.fold(T::neg_infinity(), |m, &x| m.max(x));
        let max = if max.is_finite() { max } else { T::zero() };
        let log_sum = lane.fold(T::zero(), |s, &x| s + (x - max).exp()).ln();
        lane.mapv_inplace(|x| x - max - log_sum);
    }
    out
}

/// Log-softmax over the last axis.
pub fn log_softmax(node: &Node, x: &Tensor) -> Result<Tensor> {
    Ok(floats!(node, x, a => log_softmax_of(a)))
}

/// −Σ labels · log_softmax(logits) over the last axis.
pub fn softmax_cross_entropy(node: &Node, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    if logits.shape() != labels.shape() {
        return Err(node_err(
            node,
            format!("logits {:?} and labels {:?} differ in shape", logits.shape(), labels.shape()),
        ));
    }
    fn go<T: Float + 'static>(logits: &Arr<T>, labels: &Arr<T>) -> ArrayD<T> {
        let last = Axis(logits.ndim() - 1);
        let prod = log_softmax_of(logits) * labels;
        prod.map_axis(last, |lane| -lane.fold(T::zero(), |s, &x| s + x))
    }
    Ok(match (logits, labels) {
        (Tensor::F32(a), Tensor::F32(b)) => Tensor::F32(go(a, b).into_shared()),
        (Tensor::F64(a), Tensor::F64(b)) => Tensor::F64(go(a, b).into_shared()),
        _ => return Err(node_err(node, "logits and labels must both be f32 or both f64")),
    })
}

/// `x` summed over the axes along which `like` was broadcast to reach it.
pub fn sum_to_shape_of(node: &Node, x: &Tensor, like: &Tensor) -> Result<Tensor> {
    let (xs, target) = (x.shape().to_vec(), like.shape().to_vec());
    if xs == target {
        return Ok(x.clone());
    }
    let lead = xs.len().checked_sub(target.len()).ok_or_else(|| node_err(node, "x has lower rank than like"))?;
    macro_rules! go {
        ($a:expr, $zero:expr) => {{
            let mut out = $a.to_owned();
            for _ in 0..lead {
                out = out.sum_axis(Axis(0));
            }
            for (i, &d) in target.iter().enumerate() {
                if d == 1 && out.shape()[i] != 1 {
                    out = out.sum_axis(Axis(i)).insert_axis(Axis(i));
                }
            }
            if out.shape() != &target[..] {
                return Err(node_err(node, format!("{xs:?} cannot be reduced to {target:?}")));
            }
            out
        }};
    }
    Ok(match x {
        Tensor::F32(a) => Tensor::F32(go!(a, 0.0).into_shared()),
        Tensor::F64(a) => Tensor::F64(go!(a, 0.0).into_shared()),
        Tensor::I32(a) => Tensor::I32(go!(a, 0).into_shared()),
        Tensor::I64(a) => Tensor::I64(go!(a, 0).into_shared()),
        other => return Err(node_err(node, format!("needs a numeric input, got {}", other.dtype()))),
    })
}

/// `x` broadcast to `like`'s shape; with `mean`, divided by how many times
/// each element was repeated.
pub fn broadcast_to_shape_of(node: &Node, x: &Tensor, like: &Tensor) -> Result<Tensor> {
    let mean = node.attrs.bool(&node.name, "mean")?.unwrap_or(false);
    let target = IxDyn(like.shape());
    let ratio = if x.is_empty() { 1 } else { like.len() / x.len() };
    fn go<T: Float + 'static>(node: &Node, a: &Arr<T>, target: &IxDyn, scale: Option<usize>) -> Result<ArrayD<T>> {
        let b = a
            .broadcast(target.clone())
            .ok_or_else(|| node_err(node, format!("{:?} cannot be broadcast to {:?}", a.shape(), target)))?;
        Ok(match scale {
            Some(n) => {
                let n = T::from(n).unwrap_or_else(T::one);
                b.mapv(|v| v / n)
            }
            None => b.to_owned(),
        })
    }
    let scale = mean.then_some(ratio);
    Ok(floats!(node, x, a => go(node, a, &target, scale)?))
}

/// ReluGrad, SigmoidGrad and TanhGrad.
pub fn activation_grad(node: &Node, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape() != b.shape() {
        return Err(node_err(node, format!("inputs differ in shape: {:?} and {:?}", a.shape(), b.shape())));
    }
    fn go<T: Float + 'static>(op: OpType, a: &Arr<T>, b: &Arr<T>) -> ArrayD<T> {
        Zip::from(a).and(b).map_collect(|&a, &b| match op {
            // (dy, x)
            OpType::ReluGrad => {
                if b > T::zero() {
                    a
                } else {
                    T::zero()
                }
            }
            // (y, dy)
            OpType::SigmoidGrad => b * a * (T::one() - a),
            _ => b * (T::one() - a * a),
        })
    }
    match (a, b) {
        (Tensor::F32(x), Tensor::F32(y)) => Ok(Tensor::F32(go(node.op, x, y).into_shared())),
        (Tensor::F64(x), Tensor::F64(y)) => Ok(Tensor::F64(go(node.op, x, y).into_shared())),
        (Tensor::I32(x), Tensor::I32(y)) if node.op == OpType::ReluGrad => {
            Ok(Tensor::I32(Zip::from(x).and(y).map_collect(|&g, &v| if v > 0 { g } else { 0 }).into_shared()))
        }
        (Tensor::I64(x), Tensor::I64(y)) if node.op == OpType::ReluGrad => {
            Ok(Tensor::I64(Zip::from(x).and(y).map_collect(|&g, &v| if v > 0 { g } else { 0 }).into_shared()))
        }
        _ => Err(node_err(node, format!("unsupported dtypes {} and {}", a.dtype(), b.dtype()))),
    }
}

fn scalar<T: Float>(node: &Node, t: &Tensor, i: usize) -> Result<T> {
    let v = match t {
        Tensor::F32(a) if a.len() == 1 => a.iter().next().map(|&v| v as f64),
        Tensor::F64(a) if a.len() == 1 => a.iter().next().copied(),
        _ => None,
    };
    v.and_then(T::from).ok_or_else(|| node_err(node, format!("input {i} must be a float scalar")))
}

/// Applies a fused optimizer update in place: `vars` are the variable and
/// its slots (locked by the caller), `rest` the remaining inputs. Everything
/// is checked before anything changes.
pub fn apply(node: &Node, vars: &mut [&mut Tensor], rest: &[Tensor]) -> Result<()> {
    let refs = vars.len();
    // The gradient is the last input, but for ApplyMomentum (var, accum, lr, grad, momentum).
    let grad_at = if node.op == OpType::ApplyMomentum { 1 } else { rest.len().saturating_sub(1) };
    // The gradient is read in place (it may lie in shared memory); the
    // hyperparameters are scalars, copied out if they are not.
    let grad = rest.get(grad_at).ok_or_else(|| node_err(node, "no gradient input"))?;
    let scalars: Vec<(usize, Tensor)> =
        rest.iter().enumerate().filter(|(i, _)| *i != grad_at).map(|(i, t)| (i, t.clone().materialize())).collect();
    for (i, v) in vars.iter().enumerate() {
        if v.shape() != grad.shape() || v.dtype() != grad.dtype() {
            return Err(node_err(
                node,
                format!(
                    "input {i} is {}{:?} but the gradient is {}{:?}",
                    v.dtype(),
                    v.shape(),
                    grad.dtype(),
                    grad.shape()
                ),
            ));
        }
    }
    macro_rules! arrays {
        ($v:ident, $t:ty) => {{
            let g = grad.float_view::<$t>().expect("dtype matched");
            let hp = scalars.iter().map(|(i, t)| scalar(node, t, refs + i)).collect::<Result<Vec<_>>>()?;
            let mut arrs: Vec<&mut Arr<_>> = vars
                .iter_mut()
                .map(|t| match &mut **t {
                    Tensor::$v(a) => a,
                    _ => unreachable!("dtypes checked"),
                })
                .collect();
            update(node, &mut arrs, &hp, g)
        }};
    }
    match grad.dtype() {
        DType::F32 => arrays!(F32, f32),
        DType::F64 => arrays!(F64, f64),
        other => Err(node_err(node, format!("optimizers update f32 and f64 only, got {other}"))),
    }
}

fn update<T: Float + Send + Sync + 'static>(
    node: &Node,
    v: &mut [&mut Arr<T>],
    hp: &[T],
    g: ndarray::ArrayViewD<'_, T>,
) -> Result<()>
where
    Arr<T>: Send,
{
    let one = T::one();
    match (node.op, v) {
        (OpType::ApplyGradientDescent, [var]) => {
            let alpha = hp[0];
            Zip::from(var.view_mut()).and(&g).for_each(|w, &g| *w = *w - alpha * g);
        }
        (OpType::ApplyMomentum, [var, accum]) => {
            let (lr, momentum) = (hp[0], hp[1]);
            let nesterov = node.attrs.bool(&node.name, "use_nesterov")?.unwrap_or(false);
            Zip::from(var.view_mut()).and(accum.view_mut()).and(&g).for_each(|w, a, &g| {
                *a = *a * momentum + g;
                *w = if nesterov { *w - (g * lr + *a * momentum * lr) } else { *w - lr * *a };
            });
        }
        (OpType::ApplyAdam, [var, m, v]) => {
            let [b1p, b2p, lr, b1, b2, eps] = [hp[0], hp[1], hp[2], hp[3], hp[4], hp[5]];
            let lr_t = lr * (one - b2p).sqrt() / (one - b1p);
            Zip::from(var.view_mut()).and(m.view_mut()).and(v.view_mut()).and(&g).for_each(|w, m, v, &g| {
                *m = *m + (g - *m) * (one - b1);
                *v = *v + (g * g - *v) * (one - b2);
                *w = *w - lr_t * *m / (v.sqrt() + eps);
            });
        }
        (OpType::ApplyRMSProp, [var, ms, mom]) => {
            let [lr, rho, momentum, eps] = [hp[0], hp[1], hp[2], hp[3]];
            Zip::from(var.view_mut()).and(ms.view_mut()).and(mom.view_mut()).and(&g).for_each(|w, ms, mom, &g| {
                *ms = *ms + (g * g - *ms) * (one - rho);
                *mom = *mom * momentum + lr * g / (*ms + eps).sqrt();
                *w = *w - *mom;
            });
        }
        (op, v) => return Err(node_err(node, format!("{} cannot update {} variables", op.name(), v.len()))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{AttrValue, Graph, NodeRequest, Output};
    use crate::tensor::DType;

    fn scalar(v: f32) -> Tensor {
        Tensor::scalar_f32(v)
    }

    fn vec(v: &[f32]) -> Tensor {
        Tensor::from_f32(&[v.len()], v.to_vec()).unwrap()
    }

    /// A node of `op` whose first `refs` inputs are variables, the rest f32 placeholders.
    fn apply_node(op: OpType, refs: usize, scalars: usize) -> Node {
        let mut g = Graph::new();
        let var = |g: &mut Graph, name: &str| {
            let req = NodeRequest::new(OpType::VariableV2)
                .named(crate::graph::NameRequest::Exact(name.into()))
                .attr("dtype", AttrValue::DType(DType::F32))
                .attr("shape", AttrValue::Ints(vec![2]));
            Output::of(g.add(req).unwrap())
        };
        let ph = |g: &mut Graph, shape: Vec<i64>| {
            let req = NodeRequest::new(OpType::Placeholder)
                .attr("dtype", AttrValue::DType(DType::F32))
                .attr("shape", AttrValue::Ints(shape));
            Output::of(g.add(req).unwrap())
        };
        let mut inputs: Vec<Output> = (0..refs).map(|i| var(&mut g, &format!("v{i}"))).collect();
        inputs.extend((0..scalars).map(|_| ph(&mut g, vec![])));
        inputs.push(ph(&mut g, vec![2]));
        if op == OpType::ApplyMomentum {
            // (var, accum, lr, grad, momentum): the gradient comes before momentum.
            inputs.swap(3, 4);
        }
        let id = g.add(NodeRequest::new(op).inputs(inputs)).unwrap();
        g.node(id).unwrap().clone()
    }

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.as_f32_vec().unwrap()
    }

    #[test]
    fn gradient_descent_and_momentum_by_hand() {
        let node = apply_node(OpType::ApplyGradientDescent, 1, 1);
        let mut w = vec(&[1.0, 2.0]);
        apply(&node, &mut [&mut w], &[scalar(0.5), vec(&[2.0, -2.0])]).unwrap();
        assert_eq!(f32s(&w), [0.0, 3.0]);
        // A gradient in shared memory is read where it lies.
        let grad = crate::tensor::mapped::mapped_copy(&vec(&[2.0, -2.0]));
        apply(&node, &mut [&mut w], &[scalar(0.5), grad]).unwrap();
        assert_eq!(f32s(&w), [-1.0, 4.0]);

        let node = apply_node(OpType::ApplyMomentum, 2, 2);
        let (mut w, mut accum) = (vec(&[1.0, 1.0]), vec(&[1.0, 0.0]));
        // accum = 0.9·accum + g = [1.9, 1]; w -= 0.1·accum.
        apply(&node, &mut [&mut w, &mut accum], &[scalar(0.1), vec(&[1.0, 1.0]), scalar(0.9)]).unwrap();
        assert_eq!(f32s(&accum), [1.9, 1.0]);
        let w = f32s(&w);
        assert!((w[0] - 0.81).abs() < 1e-6 && (w[1] - 0.9).abs() < 1e-6, "{w:?}");
    }

    #[test]
    fn adam_and_rmsprop_by_hand() {
        let node = apply_node(OpType::ApplyAdam, 3, 6);
        let (mut w, mut m, mut v) = (vec(&[1.0, 1.0]), vec(&[0.0, 0.0]), vec(&[0.0, 0.0]));
        let hp = [scalar(0.9), scalar(0.999), scalar(0.1), scalar(0.9), scalar(0.999), scalar(1e-8)];
        let mut rest = hp.to_vec();
        rest.push(vec(&[0.5, -2.0]));
        apply(&node, &mut [&mut w, &mut m, &mut v], &rest).unwrap();
        // First Adam step moves each weight by about lr, against the gradient's sign.
        let w = f32s(&w);
        assert!((w[0] - 0.9).abs() < 1e-4 && (w[1] - 1.1).abs() < 1e-4, "{w:?}");
        let m = f32s(&m);
        assert!((m[0] - 0.05).abs() < 1e-6 && (m[1] + 0.2).abs() < 1e-6, "{m:?}");

        let node = apply_node(OpType::ApplyRMSProp, 3, 4);
        let (mut w, mut ms, mut mom) = (vec(&[1.0, 1.0]), vec(&[1.0, 1.0]), vec(&[0.0, 0.0]));
        let rest = [scalar(0.1), scalar(0.5), scalar(0.0), scalar(0.0), vec(&[2.0, 0.0])];
        apply(&node, &mut [&mut w, &mut ms, &mut mom], &rest).unwrap();
        // ms = 0.5·1 + 0.5·g² = [2.5, 0.5]; mom = 0.1·g/√ms; w -= mom.
        assert_eq!(f32s(&ms), [2.5, 0.5]);
        let w = f32s(&w);
        assert!((w[0] - (1.0 - 0.2 / 2.5f32.sqrt())).abs() < 1e-6 && w[1] == 1.0, "{w:?}");
    }

    #[test]
    fn a_mismatched_gradient_changes_nothing() {
        let node = apply_node(OpType::ApplyGradientDescent, 1, 1);
        let mut w = vec(&[1.0, 2.0]);
        let err = apply(&node, &mut [&mut w], &[scalar(0.5), vec(&[1.0, 1.0, 1.0])]).unwrap_err().to_string();
        assert!(err.contains("gradient is f32[3]"), "{err}");
        assert_eq!(f32s(&w), [1.0, 2.0]);
    }
}
