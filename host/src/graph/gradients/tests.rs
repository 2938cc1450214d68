//! The gradient contract on graphs (no execution): names, placement, `None`
//! where there is no path, stop-gradients and argument errors. Numeric checks
//! of every rule are in `exec::gradient_check`.

use crate::device::DeviceSpec;
use crate::graph::{AttrValue, Graph, NodeRequest, OpType, Output};
use crate::tensor::{DType, Tensor};

fn placeholder(g: &mut Graph, dtype: DType, shape: &[i64]) -> Output {
    let req = NodeRequest::new(OpType::Placeholder)
        .attr("dtype", AttrValue::DType(dtype))
        .attr("shape", AttrValue::Ints(shape.to_vec()));
    Output::of(g.add(req).unwrap())
}

fn op(g: &mut Graph, op: OpType, inputs: &[Output]) -> Output {
    Output::of(g.add(NodeRequest::new(op).inputs(inputs.iter().copied())).unwrap())
}

fn name(g: &Graph, o: Output) -> &str {
    &g.node(o.node).unwrap().name
}

#[test]
fn gradient_nodes_are_named_and_placed_like_tensorflows() {
    let mut g = Graph::new();
    let x = placeholder(&mut g, DType::F32, &[2, 3]);
    let w = placeholder(&mut g, DType::F32, &[3, 4]);
    g.push_device_scope(&DeviceSpec::parse("/job:worker/task:1").unwrap()).unwrap();
    let y = op(&mut g, OpType::MatMul, &[x, w]);
    g.pop_device_scope().unwrap();
    g.push_device_scope(&DeviceSpec::parse("/job:ps").unwrap()).unwrap();
    let grads = g.gradients(&[y], &[x, w], None, &[]).unwrap();
    g.pop_device_scope().unwrap();
    let (dx, dw) = (grads[0].unwrap(), grads[1].unwrap());
    assert_eq!(name(&g, dx), "gradients/MatMul_grad/MatMul");
    assert_eq!(name(&g, dw), "gradients/MatMul_grad/MatMul_1");
    assert_eq!(g.node(dx.node).unwrap().device.to_string(), "/job:worker/task:1", "placed with the forward op");
    assert!(g.find("gradients/grad_ys_0").is_some());
    assert_eq!(g.output_type(dw).unwrap().to_string(), "f32[3, 4]");
    let again = g.gradients(&[y], &[x], None, &[]).unwrap();
    assert!(name(&g, again[0].unwrap()).starts_with("gradients_1/"), "{}", name(&g, again[0].unwrap()));
}

#[test]
fn no_path_gives_none_and_stop_gradients_cut_paths() {
    let mut g = Graph::new();
    let a = placeholder(&mut g, DType::F32, &[3]);
    let b = placeholder(&mut g, DType::F32, &[3]);
    let c = placeholder(&mut g, DType::F32, &[3]);
    let stopped = op(&mut g, OpType::StopGradient, &[b]);
    let ab = op(&mut g, OpType::Mul, &[a, stopped]);
    let y = op(&mut g, OpType::Add, &[ab, b]);
    let grads = g.gradients(&[y], &[a, b, c], None, &[]).unwrap();
    assert!(grads[0].is_some() && grads[1].is_some(), "b reaches y through the Add");
    assert!(grads[2].is_none(), "c has no path to y");
    let cut = g.gradients(&[y], &[a, b], None, &[ab]).unwrap();
    assert!(cut[0].is_none(), "a reaches y only through the stopped product");
    assert!(cut[1].is_some());
}

#[test]
fn gradients_of_several_ys_are_summed() {
    let mut g = Graph::new();
    let x = placeholder(&mut g, DType::F32, &[2]);
    let y1 = op(&mut g, OpType::Square, &[x]);
    let y2 = op(&mut g, OpType::Exp, &[x]);
    let dx = g.gradients(&[y1, y2], &[x], None, &[]).unwrap()[0].unwrap();
    assert_eq!(g.node(dx.node).unwrap().op, OpType::AddN);
}

#[test]
fn bad_gradient_requests_name_the_tensor() {
    let mut g = Graph::new();
    let i = placeholder(&mut g, DType::I32, &[2]);
    let x = placeholder(&mut g, DType::F32, &[2]);
    let err = g.gradients(&[i], &[x], None, &[]).unwrap_err().to_string();
    assert!(err.contains("y 'Placeholder' is i32[2]") && err.contains("f32 and f64"), "{err}");
    let y = op(&mut g, OpType::Square, &[x]);
    let err = g.gradients(&[y], &[i], None, &[]).unwrap_err().to_string();
    assert!(err.contains("x 'Placeholder' is i32[2]"), "{err}");
    let err = g.gradients(&[y], &[Output { node: 999, index: 0 }], None, &[]).unwrap_err().to_string();
    assert!(err.contains("no node with id 999"), "{err}");
    let wrong = placeholder(&mut g, DType::F32, &[5]);
    let err = g.gradients(&[y], &[x], Some(&[wrong]), &[]).unwrap_err().to_string();
    assert!(err.contains("grad_y") && err.contains("f32[5]"), "{err}");
    let c = Output::of(
        g.add(NodeRequest::new(OpType::Const).attr("value", AttrValue::Tensor(Tensor::scalar_f32(1.0)))).unwrap(),
    );
    assert!(g.gradients(&[y], &[c], None, &[]).unwrap()[0].is_none());
}
