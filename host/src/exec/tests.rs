//! Executor tests on graphs built directly (no guest).

use std::collections::BTreeMap;

use super::*;
use crate::device::DeviceSpec;
use crate::graph::{AttrValue, NodeRequest, Operand, VariableDecl};
use crate::tensor::{DType, TensorType};

fn local_executor() -> Executor {
    let cluster = ClusterSpec::single("in-process");
    let task = cluster.default_task();
    Executor::new(Arc::new(Device::new(task.clone())), cluster, task)
}

fn scalar_var(g: &mut Graph, name: &str) -> crate::graph::VariableNodes {
    let decl = VariableDecl { name: Some(name.into()), ..Default::default() };
    g.declare_variable(Operand::Literal(Tensor::scalar_f32(0.0)), decl).unwrap()
}

fn fetch(e: &mut Executor, g: &Graph, out: Output) -> Result<Tensor> {
    let req = RunRequest { fetches: vec![out], ..Default::default() };
    Ok(e.run(g, &req)?.values.remove(0))
}

fn target(e: &mut Executor, g: &Graph, node: NodeId) -> Result<()> {
    e.run(g, &RunRequest { targets: vec![node], ..Default::default() }).map(drop)
}

#[test]
fn separate_devices_do_not_share_state() {
    let mut g = Graph::new();
    let v = scalar_var(&mut g, "var");
    let init = g.global_variables_initializer().unwrap();
    let inc = g.assign_op(OpType::AssignAdd, v.var, Operand::Literal(Tensor::scalar_f32(1.0))).unwrap();
    let (mut s1, mut s2) = (local_executor(), local_executor());
    target(&mut s1, &g, init).unwrap();
    target(&mut s2, &g, init).unwrap();
    assert_eq!(fetch(&mut s1, &g, inc).unwrap(), Tensor::scalar_f32(1.0));
    assert_eq!(fetch(&mut s1, &g, Output::of(v.var)).unwrap(), Tensor::scalar_f32(1.0));
    assert_eq!(fetch(&mut s2, &g, Output::of(v.var)).unwrap(), Tensor::scalar_f32(0.0));
}

#[test]
fn reading_before_init_is_failed_precondition() {
    let mut g = Graph::new();
    let v = scalar_var(&mut g, "var");
    let err = fetch(&mut local_executor(), &g, Output::of(v.read)).unwrap_err();
    assert_eq!(err.code(), crate::error::Code::FailedPrecondition);
    assert!(err.to_string().contains("variable 'var'"), "{err}");
}

#[test]
fn report_uninitialized_lists_names_until_initialized() {
    let mut g = Graph::new();
    scalar_var(&mut g, "var");
    let report = g.report_uninitialized_variables().unwrap();
    let init = g.global_variables_initializer().unwrap();
    let mut e = local_executor();
    assert_eq!(fetch(&mut e, &g, report).unwrap(), Tensor::strings(&["var"]));
    target(&mut e, &g, init).unwrap();
    assert_eq!(fetch(&mut e, &g, report).unwrap(), Tensor::strings::<&str>(&[]));
}

#[test]
fn placeholders_need_feeds_of_the_right_shape() {
    let mut g = Graph::new();
    let x = g
        .add(
            NodeRequest::new(OpType::Placeholder)
                .attr("dtype", AttrValue::DType(DType::F32))
                .attr("shape", AttrValue::Ints(vec![-1, 2])),
        )
        .unwrap();
    let y = g.add(NodeRequest::new(OpType::Sum).inputs([Output::of(x)])).unwrap();
    let mut e = local_executor();
    let err = fetch(&mut e, &g, Output::of(y)).unwrap_err().to_string();
    assert!(err.contains("placeholder 'Placeholder'") && err.contains("must be fed"), "{err}");
    let run = |e: &mut Executor, t: Tensor| {
        e.run(&g, &RunRequest { fetches: vec![Output::of(y)], feeds: vec![(Output::of(x), t)], ..Default::default() })
    };
    let ok = run(&mut e, Tensor::from_f32(&[3, 2], vec![1.0; 6]).unwrap()).unwrap();
    assert_eq!(ok.values[0], Tensor::scalar_f32(6.0));
    let err = run(&mut e, Tensor::from_f32(&[2, 3], vec![1.0; 6]).unwrap()).unwrap_err().to_string();
    assert!(err.contains("f32[2, 3]") && err.contains("expects f32[?, 2]"), "{err}");
}

#[test]
fn trace_lists_source_then_nodes_on_the_device() {
    let mut g = Graph::new();
    let v = scalar_var(&mut g, "var");
    let init = g.global_variables_initializer().unwrap();
    g.assign_op(OpType::AssignAdd, v.var, Operand::Literal(Tensor::scalar_f32(1.0))).unwrap();
    let inc = g.assign_op(OpType::AssignAdd, v.var, Operand::Literal(Tensor::scalar_f32(1.0))).unwrap();
    let mut e = local_executor();
    target(&mut e, &g, init).unwrap();
    let req = RunRequest { fetches: vec![inc], trace: true, ..Default::default() };
    let stats = e.run(&g, &req).unwrap().step_stats;
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].device, "/job:localhost/replica:0/task:0/device:CPU:0");
    let names: Vec<&str> = stats[0].nodes.iter().map(|n| n.node_name.as_str()).collect();
    assert_eq!(names, ["_SOURCE", "var", "AssignAdd_1/value", "AssignAdd_1"]);
}

#[test]
fn unknown_devices_fail_at_run_naming_the_op() {
    let mut g = Graph::new();
    g.push_device_scope(&DeviceSpec::parse("/job:ps/task:0").unwrap());
    let n = g.add(NodeRequest::new(OpType::NoOp)).unwrap();
    let err = target(&mut local_executor(), &g, n).unwrap_err().to_string();
    assert!(err.contains("op 'NoOp'") && err.contains("no job 'ps'") && err.contains("jobs: localhost"), "{err}");
}

#[test]
fn remote_tasks_are_unavailable_on_a_single_host() {
    let cluster = ClusterSpec::new(BTreeMap::from([("local".to_string(), vec!["a".into(), "b".into()])])).unwrap();
    let me = TaskId::new("local", 0);
    let mut e = Executor::new(Arc::new(Device::new(me.clone())), cluster, me);
    let mut g = Graph::new();
    g.push_device_scope(&DeviceSpec::parse("/job:local/task:1").unwrap());
    let n = g.add(NodeRequest::new(OpType::NoOp)).unwrap();
    let err = target(&mut e, &g, n).unwrap_err();
    assert_eq!(err.code(), crate::error::Code::Unavailable);
    assert!(err.to_string().contains("/job:local/task:1"), "{err}");
}

#[test]
fn variables_with_the_same_name_share_a_device_slot() {
    let device = Arc::new(Device::new(TaskId::new("localhost", 0)));
    let cluster = ClusterSpec::single("x");
    let task = cluster.default_task();
    let mut g1 = Graph::new();
    let v1 = scalar_var(&mut g1, "var");
    let set = g1.assign_op(OpType::Assign, v1.var, Operand::Literal(Tensor::scalar_f32(5.0))).unwrap();
    let mut g2 = Graph::new();
    let v2 = scalar_var(&mut g2, "var");
    let mut e1 = Executor::new(device.clone(), cluster.clone(), task.clone());
    let mut e2 = Executor::new(device.clone(), cluster, task);
    fetch(&mut e1, &g1, set).unwrap();
    assert_eq!(fetch(&mut e2, &g2, Output::of(v2.var)).unwrap(), Tensor::scalar_f32(5.0));
    assert_eq!(device.variables().get("var").unwrap().tensor_type(), &TensorType::scalar(DType::F32));
}
