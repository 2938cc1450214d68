//! The gradient checker: every op with a gradient rule, on f64 inputs of
//! several shapes (broadcasting included), against central finite
//! differences of `L = Σ y·r` for a fixed random `r`; and the list of ops
//! that have no gradient on purpose.

use std::collections::BTreeSet;

use ndarray::{ArrayD, IxDyn};

use super::*;
use crate::cluster::ClusterSpec;
use crate::graph::catalogue::{CATALOGUE, Gradient};
use crate::graph::{AttrValue, Graph, NodeRequest, OpType};
use crate::tensor::DType;

type Build = fn(&mut Graph, &[Output]) -> crate::error::Result<Output>;

struct Case {
    /// The op whose rule this case checks.
    op: OpType,
    /// f64 inputs, fed through placeholders; the gradient is checked for each.
    inputs: Vec<Tensor>,
    build: Build,
    /// Finite-difference step and tolerance.
    eps: f64,
    tol: f64,
}

fn t(shape: &[usize], seed: u64, lo: f64, hi: f64) -> Tensor {
    // A small deterministic generator: the checker must not depend on luck.
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let values = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect();
    Tensor::F64(ArrayD::from_shape_vec(IxDyn(shape), values).unwrap().into_shared())
}

fn op(g: &mut Graph, op: OpType, inputs: &[Output], attrs: &[(&str, AttrValue)]) -> crate::error::Result<Output> {
    let mut req = NodeRequest::new(op).inputs(inputs.iter().copied());
    for (k, v) in attrs {
        req = req.attr(k, v.clone());
    }
    Ok(Output::of(g.add(req)?))
}

fn constant(g: &mut Graph, t: Tensor) -> crate::error::Result<Output> {
    op(g, OpType::Const, &[], &[("value", AttrValue::Tensor(t))])
}

fn ints(v: &[i64]) -> AttrValue {
    AttrValue::Ints(v.to_vec())
}

fn case(op: OpType, inputs: Vec<Tensor>, build: Build) -> Case {
    Case { op, inputs, build, eps: 1e-6, tol: 1e-6 }
}

fn cases() -> Vec<Case> {
    use OpType::*;
    let m = |s: u64| t(&[2, 3], s, -2.0, 2.0);
    let pos = |s: u64| t(&[2, 3], s, 0.5, 2.0);
    let unary = |o: OpType, x: Tensor| -> Case {
        // The op is found again from the case in `build`, so each unary case
        // is its own function; a table keeps them short.
        let build: Build = match o {
            Neg => |g, x| op(g, Neg, &[x[0]], &[]),
            Square => |g, x| op(g, Square, &[x[0]], &[]),
            Sqrt => |g, x| op(g, Sqrt, &[x[0]], &[]),
            Exp => |g, x| op(g, Exp, &[x[0]], &[]),
            Log => |g, x| op(g, Log, &[x[0]], &[]),
            Relu => |g, x| op(g, Relu, &[x[0]], &[]),
            Sigmoid => |g, x| op(g, Sigmoid, &[x[0]], &[]),
            Tanh => |g, x| op(g, Tanh, &[x[0]], &[]),
            Identity => |g, x| op(g, Identity, &[x[0]], &[]),
            Softmax => |g, x| op(g, Softmax, &[x[0]], &[]),
            LogSoftmax => |g, x| op(g, LogSoftmax, &[x[0]], &[]),
            _ => unreachable!(),
        };
        case(o, vec![x], build)
    };
    let mut v = vec![
        case(Add, vec![m(1), t(&[3], 2, -1.0, 1.0)], |g, x| op(g, Add, x, &[])),
        case(Add, vec![t(&[2, 1], 3, -1.0, 1.0), t(&[1, 4], 4, -1.0, 1.0)], |g, x| op(g, Add, x, &[])),
        case(Add, vec![t(&[], 5, -1.0, 1.0), t(&[3], 6, -1.0, 1.0)], |g, x| op(g, Add, x, &[])),
        case(Sub, vec![m(7), t(&[2, 1], 8, -1.0, 1.0)], |g, x| op(g, Sub, x, &[])),
        case(Mul, vec![t(&[3, 1], 9, -1.0, 1.0), t(&[1, 2], 10, -1.0, 1.0)], |g, x| op(g, Mul, x, &[])),
        case(Mul, vec![m(11), t(&[], 12, -1.0, 1.0)], |g, x| op(g, Mul, x, &[])),
        case(Div, vec![m(13), t(&[3], 14, 0.5, 2.0)], |g, x| op(g, Div, x, &[])),
        case(Div, vec![t(&[], 15, 0.5, 2.0), pos(16)], |g, x| op(g, Div, x, &[])),
        unary(Neg, m(17)),
        unary(Square, m(18)),
        unary(Sqrt, pos(19)),
        unary(Exp, m(20)),
        unary(Log, pos(21)),
        unary(
            Relu,
            Tensor::F64(ArrayD::from_shape_vec(IxDyn(&[4]), vec![-1.5, -0.3, 0.4, 2.0]).unwrap().into_shared()),
        ),
        unary(Sigmoid, m(22)),
        unary(Tanh, m(23)),
        unary(Identity, m(24)),
        unary(Softmax, m(25)),
        unary(Softmax, t(&[4], 26, -3.0, 3.0)),
        unary(LogSoftmax, m(27)),
        unary(LogSoftmax, t(&[2, 2, 3], 28, -3.0, 3.0)),
        case(MatMul, vec![m(29), t(&[3, 4], 30, -1.0, 1.0)], |g, x| op(g, MatMul, x, &[])),
        case(MatMul, vec![t(&[3, 2], 31, -1.0, 1.0), t(&[3, 4], 32, -1.0, 1.0)], |g, x| {
            op(g, MatMul, x, &[("transpose_a", AttrValue::Bool(true))])
        }),
        case(MatMul, vec![m(33), t(&[4, 3], 34, -1.0, 1.0)], |g, x| {
            op(g, MatMul, x, &[("transpose_b", AttrValue::Bool(true))])
        }),
        case(MatMul, vec![t(&[3, 2], 35, -1.0, 1.0), t(&[4, 3], 36, -1.0, 1.0)], |g, x| {
            op(g, MatMul, x, &[("transpose_a", AttrValue::Bool(true)), ("transpose_b", AttrValue::Bool(true))])
        }),
        case(Sum, vec![m(37)], |g, x| op(g, Sum, x, &[])),
        case(Sum, vec![t(&[2, 3, 4], 38, -1.0, 1.0)], |g, x| op(g, Sum, x, &[("axis", ints(&[1]))])),
        case(Sum, vec![m(39)], |g, x| op(g, Sum, x, &[("axis", ints(&[0])), ("keep_dims", AttrValue::Bool(true))])),
        case(Mean, vec![m(40)], |g, x| op(g, Mean, x, &[])),
        case(Mean, vec![t(&[2, 3, 4], 41, -1.0, 1.0)], |g, x| op(g, Mean, x, &[("axis", ints(&[-1, 0]))])),
        case(Reshape, vec![m(42)], |g, x| op(g, Reshape, x, &[("shape", ints(&[3, -1]))])),
        case(Fill, vec![t(&[], 43, -1.0, 1.0)], |g, x| op(g, Fill, x, &[("shape", ints(&[2, 3]))])),
        case(SoftmaxCrossEntropyWithLogits, vec![m(44), pos(45)], |g, x| op(g, SoftmaxCrossEntropyWithLogits, x, &[])),
        case(AddN, vec![m(46), m(47), m(48)], |g, x| op(g, AddN, x, &[])),
        case(Maximum, vec![m(49), t(&[3], 50, -1.0, 1.0)], |g, x| op(g, Maximum, x, &[])),
        case(Minimum, vec![m(51), t(&[2, 1], 52, -1.0, 1.0)], |g, x| op(g, Minimum, x, &[])),
        case(Select, vec![m(53), t(&[3], 54, -1.0, 1.0)], |g, x| {
            let cond = Tensor::Bool(
                ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![true, false, true, false, false, true])
                    .unwrap()
                    .into_shared(),
            );
            let c = constant(g, cond)?;
            op(g, Select, &[c, x[0], x[1]], &[])
        }),
        Case {
            eps: 1e-2,
            tol: 1e-4,
            ..case(Cast, vec![m(55)], |g, x| {
                let narrow = op(g, Cast, x, &[("dtype", AttrValue::DType(DType::F32))])?;
                let wide = op(g, Cast, &[narrow], &[("dtype", AttrValue::DType(DType::F64))])?;
                let three = constant(g, Tensor::F64(ndarray::arr0(3.0).into_dyn().into_shared()))?;
                op(g, Mul, &[wide, three], &[])
            })
        },
        case(Gather, vec![t(&[4, 3], 56, -1.0, 1.0)], |g, x| {
            let idx =
                constant(g, Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[3]), vec![3, 1, 3]).unwrap().into_shared()))?;
            op(g, Gather, &[x[0], idx], &[])
        }),
        case(UnsortedSegmentSum, vec![t(&[4, 3], 57, -1.0, 1.0)], |g, x| {
            let ids = constant(
                g,
                Tensor::I32(ArrayD::from_shape_vec(IxDyn(&[4]), vec![0, 2, -1, 1]).unwrap().into_shared()),
            )?;
            op(g, UnsortedSegmentSum, &[x[0], ids], &[("num_segments", AttrValue::Int(3))])
        }),
        case(Concat, vec![m(58), t(&[2, 2], 59, -1.0, 1.0)], |g, x| op(g, Concat, x, &[("axis", AttrValue::Int(1))])),
        case(Concat, vec![t(&[1, 3], 60, -1.0, 1.0), m(61)], |g, x| op(g, Concat, x, &[("axis", AttrValue::Int(-2))])),
        case(Slice, vec![t(&[3, 4], 62, -1.0, 1.0)], |g, x| {
            op(g, Slice, x, &[("begin", ints(&[1, 1])), ("size", ints(&[2, -1]))])
        }),
        case(Pad, vec![m(63)], |g, x| op(g, Pad, x, &[("paddings", ints(&[1, 0, 0, 2]))])),
        case(ExpandDims, vec![m(64)], |g, x| op(g, ExpandDims, x, &[("axis", ints(&[1]))])),
        case(Squeeze, vec![t(&[2, 1, 3], 65, -1.0, 1.0)], |g, x| op(g, Squeeze, x, &[("axis", ints(&[-2]))])),
    ];
    // A composite: a two-layer network's loss, through every common rule at once.
    v.push(case(MatMul, vec![t(&[4, 3], 66, -1.0, 1.0), t(&[3, 5], 67, -1.0, 1.0), t(&[5], 68, -0.5, 0.5)], |g, x| {
        let h = op(g, MatMul, &[x[0], x[1]], &[])?;
        let h = op(g, Add, &[h, x[2]], &[])?;
        let h = op(g, Tanh, &[h], &[])?;
        let p = op(g, Softmax, &[h], &[])?;
        let l = op(g, Log, &[p], &[])?;
        op(g, Mean, &[l], &[("axis", ints(&[1]))])
    }));
    v
}

fn run(e: &mut Executor, g: &Graph, fetches: Vec<Output>, feeds: Vec<(Output, Tensor)>) -> Vec<Tensor> {
    let req = RunRequest { fetches, feeds, ..Default::default() };
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(e.run(g, &req)).unwrap().values
}

fn f64s(t: &Tensor) -> Vec<f64> {
    match t {
        Tensor::F64(a) => a.iter().copied().collect(),
        other => panic!("expected f64, got {}", other.dtype()),
    }
}

fn check(c: &Case) -> Result<(), String> {
    let mut g = Graph::new();
    let xs: Vec<Output> = c
        .inputs
        .iter()
        .map(|x| {
            let shape: Vec<i64> = x.shape().iter().map(|&d| d as i64).collect();
            op(&mut g, OpType::Placeholder, &[], &[("dtype", AttrValue::DType(DType::F64)), ("shape", ints(&shape))])
                .unwrap()
        })
        .collect();
    let y = (c.build)(&mut g, &xs).map_err(|e| e.to_string())?;
    let mut e = {
        let cluster = ClusterSpec::single("in-process");
        let task = cluster.default_task();
        let devices = Arc::new(LocalDevices::new([task.clone()]));
        let placement = Placement { cluster: cluster.clone(), default_task: task.clone(), devices, remote: None };
        Executor::new(task.cpu_device(), placement)
    };
    let feeds = |values: &[Tensor]| xs.iter().copied().zip(values.iter().cloned()).collect::<Vec<_>>();
    let y_value = run(&mut e, &g, vec![y], feeds(&c.inputs)).remove(0);
    let r = t(y_value.shape(), 99, -1.0, 1.0);
    let rank = y_value.shape().len();
    let r_in = op(
        &mut g,
        OpType::Placeholder,
        &[],
        &[("dtype", AttrValue::DType(DType::F64)), ("shape", ints(&vec![-1; rank]))],
    )
    .unwrap();
    let yr = op(&mut g, OpType::Mul, &[y, r_in], &[]).unwrap();
    let loss = op(&mut g, OpType::Sum, &[yr], &[]).unwrap();
    let grads = g.gradients(&[y], &xs, Some(&[r_in]), &[]).map_err(|e| e.to_string())?;
    let with_r = |values: &[Tensor]| {
        let mut f = feeds(values);
        f.push((r_in, r.clone()));
        f
    };
    let fetches: Vec<Output> = grads
        .iter()
        .enumerate()
        .map(|(i, g)| g.ok_or(format!("input {i} got no gradient")))
        .collect::<Result<_, _>>()?;
    let analytic = run(&mut e, &g, fetches, with_r(&c.inputs));
    for (i, x) in c.inputs.iter().enumerate() {
        if analytic[i].shape() != x.shape() {
            return Err(format!("gradient of input {i} has shape {:?}, input {:?}", analytic[i].shape(), x.shape()));
        }
        let a = f64s(&analytic[i]);
        let base = f64s(x);
        for j in 0..base.len() {
            let mut at = |delta: f64| {
                let mut inputs = c.inputs.clone();
                let mut v = base.clone();
                v[j] += delta;
                inputs[i] = Tensor::F64(ArrayD::from_shape_vec(IxDyn(x.shape()), v).unwrap().into_shared());
                f64s(&run(&mut e, &g, vec![loss], with_r(&inputs))[0])[0]
            };
            let (plus, minus) = (at(c.eps), at(-c.eps));
            let numeric = (plus - minus) / (2.0 * c.eps);
            if (numeric - a[j]).abs() > c.tol * numeric.abs().max(1.0) {
                return Err(format!("input {i} element {j}: analytic {} vs numeric {numeric}", a[j]));
            }
        }
    }
    Ok(())
}

#[test]
fn every_gradient_rule_matches_finite_differences() {
    let mut failures = Vec::new();
    for (n, c) in cases().iter().enumerate() {
        if let Err(e) = check(c) {
            failures.push(format!("case {n} ({}): {e}", c.op.name()));
        }
    }
    assert!(failures.is_empty(), "gradient checks failed:\n{}", failures.join("\n"));
}

#[test]
fn every_op_with_a_rule_has_a_checker_case() {
    let with_rule: BTreeSet<&str> =
        CATALOGUE.iter().filter(|d| matches!(d.gradient, Gradient::Rule(_))).map(|d| d.op.name()).collect();
    let checked: BTreeSet<&str> = cases().iter().map(|c| c.op.name()).collect();
    assert_eq!(with_rule, checked);
}

#[test]
fn ops_without_a_gradient_are_listed_on_purpose() {
    let none: Vec<&str> =
        CATALOGUE.iter().filter(|d| matches!(d.gradient, Gradient::None(_))).map(|d| d.op.name()).collect();
    assert_eq!(
        none,
        [
            "Const",
            "Placeholder",
            "VariableV2",
            "Assign",
            "AssignAdd",
            "AssignSub",
            "NoOp",
            "IsVariableInitialized",
            "ReportUninitializedVariables",
            "RandomNormal",
            "RandomUniform",
            "StopGradient",
            "Equal",
            "NotEqual",
            "Less",
            "LessEqual",
            "Greater",
            "GreaterEqual",
            "LogicalNot",
            "OneHot",
            "ArgMax",
            "ZerosLike",
            "OnesLike",
            "SumToShapeOf",
            "BroadcastToShapeOf",
            "ReluGrad",
            "SigmoidGrad",
            "TanhGrad",
            "ApplyGradientDescent",
            "ApplyMomentum",
            "ApplyAdam",
            "ApplyRMSProp",
            "SaveV2",
            "RestoreV2",
            "CheckpointSteps",
            "WriteScalarSummary",
        ]
    );
}
