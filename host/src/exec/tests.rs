//! Executor tests on graphs built directly (no guest).

use std::collections::BTreeMap;

use super::*;
use crate::cluster::ClusterSpec;
use crate::device::DeviceSpec;
use crate::error::Result;
use crate::graph::{AttrValue, NodeRequest, Operand, VariableDecl};
use crate::graph::{Graph, OpType};
use crate::tensor::{DType, TensorType};

fn executor(cluster: &ClusterSpec, home: &TaskId, devices: &Arc<LocalDevices>) -> Executor {
    let placement = Placement {
        cluster: cluster.clone(),
        default_task: cluster.default_task(),
        devices: devices.clone(),
        remote: None,
    };
    Executor::new(home.cpu_device(), placement)
}

pub(super) fn local_executor() -> Executor {
    let cluster = ClusterSpec::single("in-process");
    let task = cluster.default_task();
    executor(&cluster, &task, &Arc::new(LocalDevices::new([task.clone()])))
}

fn two_task_cluster() -> (ClusterSpec, Arc<LocalDevices>) {
    let cluster = ClusterSpec::new(BTreeMap::from([("local".to_string(), vec!["a".into(), "b".into()])])).unwrap();
    let devices = Arc::new(LocalDevices::new([TaskId::new("local", 0), TaskId::new("local", 1)]));
    (cluster, devices)
}

fn scalar_var(g: &mut Graph, name: &str) -> crate::graph::VariableNodes {
    let decl = VariableDecl { name: Some(name.into()), ..Default::default() };
    g.declare_variable(Operand::Literal(Tensor::scalar_f32(0.0)), decl).unwrap()
}

/// Runs a step to completion on a throwaway runtime.
pub(super) fn step(e: &mut Executor, g: &Graph, req: &RunRequest) -> Result<RunResult> {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(e.run(g, req))
}

fn fetch(e: &mut Executor, g: &Graph, out: Output) -> Result<Tensor> {
    let req = RunRequest { fetches: vec![out], ..Default::default() };
    Ok(step(e, g, &req)?.values.remove(0))
}

fn target(e: &mut Executor, g: &Graph, node: NodeId) -> Result<()> {
    step(e, g, &RunRequest { targets: vec![node], ..Default::default() }).map(drop)
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
        step(e, &g, &RunRequest { fetches: vec![Output::of(y)], feeds: vec![(Output::of(x), t)], ..Default::default() })
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
    let stats = step(&mut e, &g, &req).unwrap().step_stats;
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].device, "/job:localhost/replica:0/task:0/device:CPU:0");
    let names: Vec<&str> = stats[0].nodes.iter().map(|n| n.node_name.as_str()).collect();
    assert_eq!(names, ["_SOURCE", "AssignAdd_1/value", "var", "AssignAdd_1"]);
}

#[test]
fn unknown_devices_fail_at_run_naming_the_op() {
    let mut g = Graph::new();
    g.push_device_scope(&DeviceSpec::parse("/job:ps/task:0").unwrap()).unwrap();
    let n = g.add(NodeRequest::new(OpType::NoOp)).unwrap();
    let err = target(&mut local_executor(), &g, n).unwrap_err().to_string();
    assert!(err.contains("op 'NoOp'") && err.contains("no job 'ps'") && err.contains("jobs: localhost"), "{err}");
}

#[test]
fn remote_tasks_are_unavailable_on_a_single_host() {
    let cluster = ClusterSpec::new(BTreeMap::from([("local".to_string(), vec!["a".into(), "b".into()])])).unwrap();
    let me = TaskId::new("local", 0);
    let mut e = executor(&cluster, &me, &Arc::new(LocalDevices::new([me.clone()])));
    let mut g = Graph::new();
    g.push_device_scope(&DeviceSpec::parse("/job:local/task:1").unwrap()).unwrap();
    let n = g.add(NodeRequest::new(OpType::NoOp)).unwrap();
    let err = target(&mut e, &g, n).unwrap_err();
    assert_eq!(err.code(), crate::error::Code::Unavailable);
    assert!(err.to_string().contains("/job:local/task:1"), "{err}");
}

fn traced(e: &mut Executor, g: &Graph, out: Output) -> Vec<(String, Vec<String>)> {
    let req = RunRequest { fetches: vec![out], trace: true, ..Default::default() };
    step(e, g, &req)
        .unwrap()
        .step_stats
        .into_iter()
        .map(|d| (d.device, d.nodes.into_iter().map(|n| n.node_name).collect()))
        .collect()
}

/// S2 and S3 in one process: an unplaced `var` lives on the cluster's first
/// task, so sessions on both tasks share it, and traces show where it ran.
#[test]
fn in_process_cluster_shares_unplaced_variables_and_traces_devices() {
    let (cluster, devices) = two_task_cluster();
    let (t0, t1) = (TaskId::new("local", 0), TaskId::new("local", 1));
    let mut g = Graph::new();
    let v = scalar_var(&mut g, "var");
    let init = g.global_variables_initializer().unwrap();
    let inc = g.assign_op(OpType::AssignAdd, v.var, Operand::Literal(Tensor::scalar_f32(1.0))).unwrap();
    let mut s1 = executor(&cluster, &t0, &devices);
    let mut s2 = executor(&cluster, &t1, &devices);
    target(&mut s1, &g, init).unwrap();
    target(&mut s2, &g, init).unwrap();
    fetch(&mut s1, &g, inc).unwrap();
    assert_eq!(fetch(&mut s2, &g, Output::of(v.var)).unwrap(), Tensor::scalar_f32(1.0));
    let d = |t: &TaskId| t.cpu_device();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(traced(&mut s1, &g, Output::of(v.var)), vec![(d(&t0), s(&["_SOURCE", "var"]))]);
    assert_eq!(
        traced(&mut s2, &g, Output::of(v.var)),
        vec![(d(&t1), s(&["_SOURCE"])), (d(&t0), s(&["_SOURCE", "var"]))]
    );
    assert!(devices.device(&t1).unwrap().variables().get("var").is_none());
}

/// Pinned variables run where they are pinned, whichever session reads them.
#[test]
fn pinned_variables_run_on_their_task() {
    let (cluster, devices) = two_task_cluster();
    let (t0, t1) = (TaskId::new("local", 0), TaskId::new("local", 1));
    let mut g = Graph::new();
    let pinned = |g: &mut Graph, name: &str, dev: &str| {
        let decl =
            VariableDecl { name: Some(name.into()), device: Some(DeviceSpec::parse(dev).unwrap()), trainable: true };
        g.declare_variable(Operand::Literal(Tensor::scalar_f32(0.0)), decl).unwrap()
    };
    let v1 = pinned(&mut g, "var1", "/job:local/task:0");
    let v2 = pinned(&mut g, "var2", "/job:local/task:1");
    let init = g.global_variables_initializer().unwrap();
    let mut s1 = executor(&cluster, &t0, &devices);
    target(&mut s1, &g, init).unwrap();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        traced(&mut s1, &g, Output::of(v2.var)),
        vec![(t0.cpu_device(), s(&["_SOURCE"])), (t1.cpu_device(), s(&["_SOURCE", "var2"]))]
    );
    let mut s2 = executor(&cluster, &t1, &devices);
    assert_eq!(
        traced(&mut s2, &g, Output::of(v1.var)),
        vec![(t1.cpu_device(), s(&["_SOURCE"])), (t0.cpu_device(), s(&["_SOURCE", "var1"]))]
    );
    assert!(devices.device(&t1).unwrap().variables().get("var2").unwrap().is_initialized());
}
#[test]
fn variables_with_the_same_name_share_a_device_slot() {
    let cluster = ClusterSpec::single("x");
    let task = cluster.default_task();
    let devices = Arc::new(LocalDevices::new([task.clone()]));
    let device = devices.device(&task).unwrap();
    let mut g1 = Graph::new();
    let v1 = scalar_var(&mut g1, "var");
    let set = g1.assign_op(OpType::Assign, v1.var, Operand::Literal(Tensor::scalar_f32(5.0))).unwrap();
    let mut g2 = Graph::new();
    let v2 = scalar_var(&mut g2, "var");
    let mut e1 = executor(&cluster, &task, &devices);
    let mut e2 = executor(&cluster, &task, &devices);
    fetch(&mut e1, &g1, set).unwrap();
    assert_eq!(fetch(&mut e2, &g2, Output::of(v2.var)).unwrap(), Tensor::scalar_f32(5.0));
    assert_eq!(device.variables().get("var").unwrap().tensor_type(), &TensorType::scalar(DType::F32));
}

/// A stand-in for another process: runs remote partitions on its own
/// devices and counts the calls.
#[derive(Debug)]
struct OtherProcess {
    devices: LocalDevices,
    calls: std::sync::atomic::AtomicUsize,
}

impl RemoteTasks for OtherProcess {
    fn run_partition(
        &self,
        part: Arc<RemotePartition>,
        _step: u64,
        inputs: Vec<Tensor>,
        trace: bool,
        _timeout: Option<std::time::Duration>,
        _meter: Option<Arc<ComputeMeter>>,
    ) -> futures_util::future::BoxFuture<'static, Result<PartitionResult>> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let device = self.devices.device(&part.task).expect("task of the other process");
        let inputs: HashMap<Output, Tensor> = part.def.inputs.iter().copied().zip(inputs).collect();
        let mut t = trace.then(Trace::default);
        let node_device = vec![0; part.def.nodes.len()];
        let result = run_partition(&part.def, &[device], &node_device, &inputs, &mut HashMap::new(), t.as_mut(), None)
            .map(|outputs| PartitionResult {
                outputs,
                stats: t.map(Trace::finish).unwrap_or_default(),
                host_time: Default::default(),
            });
        Box::pin(async move { result })
    }
}

/// An executor for a session on task 1 of `{"local": [t0, t1]}`, with t0 in
/// "another process"; returns this process's devices and that process.
fn split_cluster_executor() -> (Executor, Arc<LocalDevices>, Arc<OtherProcess>) {
    let (cluster, _) = two_task_cluster();
    let other =
        Arc::new(OtherProcess { devices: LocalDevices::new([TaskId::new("local", 0)]), calls: Default::default() });
    let mine = Arc::new(LocalDevices::new([TaskId::new("local", 1)]));
    let placement = Placement {
        cluster: cluster.clone(),
        default_task: cluster.default_task(),
        devices: mine.clone(),
        remote: Some(other.clone()),
    };
    (Executor::new(TaskId::new("local", 1).cpu_device(), placement), mine, other)
}

/// Session on task 1 of `{"local": [t0, t1]}` where t0 lives in another
/// process: reads and assign_adds of the unplaced `var` (on t0) cost one
/// remote call per step, and a read of it feeds a computation on t1.
#[test]
fn remote_partitions_cost_one_call_per_step() {
    let (t0, t1) = (TaskId::new("local", 0), TaskId::new("local", 1));
    let (mut e, mine, other) = split_cluster_executor();
    let mut g = Graph::new();
    let v = scalar_var(&mut g, "var");
    let init = g.global_variables_initializer().unwrap();
    let inc = g.assign_op(OpType::AssignAdd, v.var, Operand::Literal(Tensor::scalar_f32(1.0))).unwrap();
    g.push_device_scope(&DeviceSpec::parse("/job:local/task:1").unwrap()).unwrap();
    let two = g.add(NodeRequest::new(OpType::Const).attr("value", AttrValue::Tensor(Tensor::scalar_f32(2.0)))).unwrap();
    let doubled = g.add(NodeRequest::new(OpType::Mul).inputs([Output::of(v.read), Output::of(two)])).unwrap();
    g.pop_device_scope().unwrap();
    let calls = || other.calls.load(std::sync::atomic::Ordering::SeqCst);

    target(&mut e, &g, init).unwrap();
    assert_eq!(calls(), 1);
    for expected in [1.0, 2.0, 3.0] {
        assert_eq!(fetch(&mut e, &g, inc).unwrap(), Tensor::scalar_f32(expected));
    }
    assert_eq!(calls(), 4, "one call per step");
    assert_eq!(fetch(&mut e, &g, Output::of(doubled)).unwrap(), Tensor::scalar_f32(6.0));
    assert_eq!(calls(), 5, "the read runs remotely, the Mul here, in one call");
    assert!(mine.device(&t1).unwrap().variables().get("var").is_none());
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        traced(&mut e, &g, Output::of(v.var)),
        vec![(t1.cpu_device(), s(&["_SOURCE"])), (t0.cpu_device(), s(&["_SOURCE", "var"]))]
    );
}

/// A variable on this process, read by a remote op whose result is then
/// added back to it locally in the same step: the local assign must see the
/// variable itself, not the value an earlier stage exported.
#[test]
fn local_variable_read_remotely_then_updated_locally() {
    let t1 = TaskId::new("local", 1);
    let (mut e, mine, _) = split_cluster_executor();
    let mut g = Graph::new();
    let decl = VariableDecl {
        name: Some("w".into()),
        device: Some(DeviceSpec::parse("/job:local/task:1").unwrap()),
        trainable: true,
    };
    let w = g.declare_variable(Operand::Literal(Tensor::scalar_f32(3.0)), decl).unwrap();
    let init = g.global_variables_initializer().unwrap();
    g.push_device_scope(&DeviceSpec::parse("/job:local/task:0").unwrap()).unwrap();
    let two = g.add(NodeRequest::new(OpType::Const).attr("value", AttrValue::Tensor(Tensor::scalar_f32(2.0)))).unwrap();
    let doubled = g.add(NodeRequest::new(OpType::Mul).inputs([Output::of(w.var), Output::of(two)])).unwrap();
    g.pop_device_scope().unwrap();
    let update = g.assign_op(OpType::AssignAdd, w.var, Operand::Node(Output::of(doubled))).unwrap();
    target(&mut e, &g, init).unwrap();
    assert_eq!(fetch(&mut e, &g, update).unwrap(), Tensor::scalar_f32(9.0));
    assert_eq!(mine.device(&t1).unwrap().variables().get("w").unwrap().read().unwrap(), Tensor::scalar_f32(9.0));
}

/// A device whose steps may hold `limit` tensor bytes, alone in its cluster.
fn budgeted_executor(limit: usize) -> (Executor, Arc<ByteBudget>) {
    let cluster = ClusterSpec::single("in-process");
    let task = cluster.default_task();
    let budget = Arc::new(ByteBudget::tensors("experiment 'm'", limit));
    let budgets = Budgets { variables: None, tensors: Some(budget.clone()) };
    let devices = Arc::new(LocalDevices::with_files([task.clone()], &budgets, &HostFiles::default()));
    (executor(&cluster, &task, &devices), budget)
}

fn const_node(g: &mut Graph, t: Tensor) -> NodeId {
    g.add(NodeRequest::new(OpType::Const).attr("value", AttrValue::Tensor(t))).unwrap()
}

#[test]
fn an_op_whose_outputs_would_pass_the_tensor_budget_fails_before_its_kernel_runs() {
    // The MatMul of f32[30000, 0] and f32[0, 30000] is 3.6 GB of zeros.
    let (mut e, budget) = budgeted_executor(64 << 20);
    let mut g = Graph::new();
    let a = const_node(&mut g, Tensor::from_f32(&[30000, 0], vec![]).unwrap());
    let b = const_node(&mut g, Tensor::from_f32(&[0, 30000], vec![]).unwrap());
    let mm = g.add(NodeRequest::new(OpType::MatMul).inputs([Output::of(a), Output::of(b)])).unwrap();
    let err = fetch(&mut e, &g, Output::of(mm)).unwrap_err();
    assert_eq!(err.code(), crate::error::Code::ResourceExhausted, "{err}");
    let text = err.to_string();
    assert!(text.contains("tensor-bytes limit") && text.contains("'MatMul' (MatMul)"), "{text}");
    assert!(text.contains(&format!("needs {} more bytes", 30000u64 * 30000 * 4)), "{text}");
    assert_eq!(budget.used(), 0, "nothing stays charged after a failed step");

    // A step within the budget runs, and gives its bytes back when it ends.
    let c = const_node(&mut g, Tensor::from_f32(&[1000, 0], vec![]).unwrap());
    let d = const_node(&mut g, Tensor::from_f32(&[0, 1000], vec![]).unwrap());
    let small = g.add(NodeRequest::new(OpType::MatMul).inputs([Output::of(c), Output::of(d)])).unwrap();
    assert_eq!(fetch(&mut e, &g, Output::of(small)).unwrap().shape(), &[1000, 1000]);
    assert_eq!(budget.used(), 0);

    // Every intermediate of a step counts: two 3 MiB products fit in 4 MiB
    // one at a time, not together.
    let (mut e, _) = budgeted_executor(4 << 20);
    let mut g = Graph::new();
    let x = const_node(&mut g, Tensor::from_f32(&[1024, 0], vec![]).unwrap());
    let y = const_node(&mut g, Tensor::from_f32(&[0, 768], vec![]).unwrap());
    let p = g.add(NodeRequest::new(OpType::MatMul).inputs([Output::of(x), Output::of(y)])).unwrap();
    assert!(fetch(&mut e, &g, Output::of(p)).is_ok());
    let q = g.add(NodeRequest::new(OpType::Neg).inputs([Output::of(p)])).unwrap();
    let err = fetch(&mut e, &g, Output::of(q)).unwrap_err();
    assert!(err.to_string().contains("op 'Neg' (Neg)"), "{err}");
}

#[test]
fn a_step_frees_each_intermediate_once_its_last_reader_ran() {
    // Ten chained 3 MiB Negs in 8 MiB: each holds its input and output, not
    // the whole chain. A value read twice (by the chain and by the final
    // Add) stays until both have run.
    let (mut e, budget) = budgeted_executor(8 << 20);
    let mut g = Graph::new();
    let x = const_node(&mut g, Tensor::from_f32(&[768, 1024], vec![1.0; 768 * 1024]).unwrap());
    let first = g.add(NodeRequest::new(OpType::Neg).inputs([Output::of(x)])).unwrap();
    let mut last = first;
    for _ in 0..9 {
        last = g.add(NodeRequest::new(OpType::Neg).inputs([Output::of(last)])).unwrap();
    }
    let sum = g.add(NodeRequest::new(OpType::Add).inputs([Output::of(last), Output::of(first)])).unwrap();
    let err = fetch(&mut e, &g, Output::of(sum)).unwrap_err();
    assert!(err.to_string().contains("op 'Neg_2' (Neg)"), "first stays for the Add, beside Neg_2's input: {err}");
    let (mut e, budget_big) = budgeted_executor(12 << 20);
    let out = fetch(&mut e, &g, Output::of(sum)).unwrap();
    // first = -1; nine more negations make last = 1; their sum is 0.
    assert!(out.as_f32_vec().unwrap().iter().all(|&v| v == 0.0));
    assert_eq!((budget.used(), budget_big.used()), (0, 0));
    let (mut e, _) = budgeted_executor(8 << 20);
    assert!(fetch(&mut e, &g, Output::of(last)).is_ok(), "the chain alone fits: intermediates were freed");
}

#[test]
fn cached_plans_are_charged_to_the_plan_budget_and_given_back() {
    let budget = Arc::new(ByteBudget::memory("program 'p'", 1 << 20));
    let mut e = local_executor().with_plan_budget(budget.clone());
    let mut g = Graph::new();
    let x = const_node(&mut g, Tensor::scalar_f32(1.0));
    let mut last = x;
    for _ in 0..10 {
        last = g.add(NodeRequest::new(OpType::Neg).inputs([Output::of(last)])).unwrap();
    }
    fetch(&mut e, &g, Output::of(last)).unwrap();
    let one = budget.used();
    assert!(one > 10 * 256, "a plan of 11 nodes costs {one}");
    fetch(&mut e, &g, Output::of(x)).unwrap();
    assert!(budget.used() > one, "a second plan is cached and charged");
    fetch(&mut e, &g, Output::of(last)).unwrap();
    let two = budget.used();
    assert_eq!(budget.used(), two, "a cached plan is not charged again");
    drop(e);
    assert_eq!(budget.used(), 0);
    // A plan that does not fit even alone fails naming the limit.
    let tiny = Arc::new(ByteBudget::memory("program 'p'", 100));
    let mut e = local_executor().with_plan_budget(tiny);
    let err = fetch(&mut e, &g, Output::of(last)).unwrap_err().to_string();
    assert!(err.contains("memory limit: the plan of a run (11 nodes)"), "{err}");
}

#[test]
fn a_stopped_program_stops_while_its_graph_is_planned() {
    let mut g = Graph::new();
    let w = const_node(&mut g, Tensor::from_f32(&[2, 2], vec![0.5; 4]).unwrap());
    let mut x = Output::of(w);
    for _ in 0..10_000 {
        x = Output::of(g.add(NodeRequest::new(OpType::MatMul).inputs([x, Output::of(w)])).unwrap());
    }
    let meter = Arc::new(ComputeMeter::new(None));
    meter.stop("killed by its owner");
    let req = RunRequest { fetches: vec![x], meter: Some(meter), ..Default::default() };
    let Err(err) = local_executor().prepare(&g, req) else { panic!("planning went on") };
    assert_eq!(err.code(), crate::error::Code::Aborted, "{err}");
    assert!(err.to_string().contains("killed by its owner"), "{err}");
}

/// A stand-in for other processes whose calls never answer; it delivers
/// directly and records the steps it is told to forget.
#[derive(Debug, Default)]
struct Stalled {
    forgotten: std::sync::Mutex<Vec<(TaskId, u64)>>,
}

impl RemoteTasks for Stalled {
    fn run_partition(
        &self,
        _part: Arc<RemotePartition>,
        _step: u64,
        _inputs: Vec<Tensor>,
        _trace: bool,
        _timeout: Option<std::time::Duration>,
        _meter: Option<Arc<ComputeMeter>>,
    ) -> futures_util::future::BoxFuture<'static, Result<PartitionResult>> {
        Box::pin(std::future::pending())
    }

    fn delivers_directly(&self) -> bool {
        true
    }

    fn forget_step(&self, task: &TaskId, step: u64) -> futures_util::future::BoxFuture<'static, Result<()>> {
        self.forgotten.lock().unwrap().push((task.clone(), step));
        Box::pin(async { Ok(()) })
    }
}

/// A step whose future is dropped mid-way (a timeout or a stop from
/// outside, not an error) still tells the tasks its started stages deliver
/// to to forget it: here `var` goes from t0 straight to t1, the session
/// on t2, and t0's call never answers.
#[test]
fn a_step_dropped_midway_tells_its_receivers_to_forget_it() {
    let addresses = vec!["a".to_string(), "b".into(), "c".into()];
    let cluster = ClusterSpec::new(BTreeMap::from([("local".to_string(), addresses)])).unwrap();
    let (t1, t2) = (TaskId::new("local", 1), TaskId::new("local", 2));
    let remote = Arc::new(Stalled::default());
    let placement = Placement {
        cluster: cluster.clone(),
        default_task: cluster.default_task(),
        devices: Arc::new(LocalDevices::new([t2.clone()])),
        remote: Some(remote.clone()),
    };
    let mut e = Executor::new(t2.cpu_device(), placement);
    let mut g = Graph::new();
    let v = scalar_var(&mut g, "var");
    g.push_device_scope(&DeviceSpec::parse("/job:local/task:1").unwrap()).unwrap();
    let two = g.add(NodeRequest::new(OpType::Const).attr("value", AttrValue::Tensor(Tensor::scalar_f32(2.0)))).unwrap();
    let doubled = g.add(NodeRequest::new(OpType::Mul).inputs([Output::of(v.read), Output::of(two)])).unwrap();
    g.pop_device_scope().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let step = e.prepare(&g, RunRequest { fetches: vec![Output::of(doubled)], ..Default::default() }).unwrap();
        let run = tokio::time::timeout(std::time::Duration::from_millis(50), e.execute(step, None)).await;
        assert!(run.is_err(), "a step whose calls never answer cannot finish");
    });
    let forgotten = remote.forgotten.lock().unwrap().clone();
    assert_eq!(forgotten.iter().map(|(t, _)| t).collect::<Vec<_>>(), vec![&t1], "{forgotten:?}");
}
