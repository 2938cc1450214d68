//! The data plane between hosts on one machine: a `weft serve` ps process
//! and a master in this test process move big tensors through shared memory
//! (counted by the master's traffic counters, and seen as a mapping in the
//! ps process), fall back to TCP when the ps turns it off, and a ps that
//! dies mid-transfer is `unavailable` with no segment left behind. Tasks
//! of one process (`weft launch`) call each other directly, moving no bytes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_host::cluster::{ClusterSpec, TaskId};
use weft_host::device::DeviceSpec;
use weft_host::error::Code;
use weft_host::exec::{Executor, RunRequest};
use weft_host::graph::{AttrValue, Graph, NodeRequest, OpType, Operand, Output, VariableDecl, VariableNodes};
use weft_host::rpc::GrpcRemote;
use weft_host::runtime::{Runtime, RuntimeConfig};
use weft_host::task::Task;
use weft_host::tensor::{DType, Tensor};

use crate::process::{Spawned, Stream, TempDir, free_ports, weft};

pub(crate) const LIMIT: Duration = Duration::from_secs(60);

pub(crate) struct Cluster {
    _dir: TempDir,
    pub(crate) ps: Spawned,
    pub(crate) spec: ClusterSpec,
}

/// A ps task served by its own `weft serve` process (with `env` set), and
/// the spec of a cluster of it and one worker (this test).
pub(crate) fn ps_process(tag: &str, env: &[(&str, &str)]) -> Cluster {
    ps_process_with(tag, env, &[])
}

/// [`ps_process`], with more `weft serve` flags.
pub(crate) fn ps_process_with(tag: &str, env: &[(&str, &str)], flags: &[&str]) -> Cluster {
    let dir = TempDir::new(tag);
    let ports = free_ports(2);
    let jobs = BTreeMap::from([
        ("ps".to_string(), vec![format!("127.0.0.1:{}", ports[0])]),
        ("worker".to_string(), vec![format!("127.0.0.1:{}", ports[1])]),
    ]);
    let file = dir.0.join("cluster.json");
    let json = format!(r#"{{"ps": ["{}"], "worker": ["{}"]}}"#, jobs["ps"][0], jobs["worker"][0]);
    std::fs::write(&file, json).unwrap();
    let mut args = vec!["serve", "--cluster", file.to_str().unwrap(), "--job", "ps", "--task", "0"];
    args.extend_from_slice(flags);
    let mut cmd = weft(&args, &dir.0);
    cmd.envs(env.iter().copied());
    let mut ps = Spawned::start(cmd);
    ps.expect(Stream::Err, "serving /job:ps/task:0", LIMIT);
    Cluster { _dir: dir, ps, spec: ClusterSpec::new(jobs).unwrap() }
}

/// A variable of f32 of `shape` on the ps, initialized from a placeholder
/// fed on the worker.
pub(crate) struct BigVariable {
    graph: Graph,
    pub(crate) var: VariableNodes,
    fed: Output,
    init: weft_host::graph::NodeId,
    shape: Vec<usize>,
}

impl BigVariable {
    pub(crate) fn graph(&self) -> &Graph {
        &self.graph
    }

    pub(crate) fn graph_mut(&mut self) -> &mut Graph {
        &mut self.graph
    }
}

/// A placeholder of `dtype` and `shape` (-1 for an unknown dimension).
pub(crate) fn placeholder(dtype: DType, shape: &[i64]) -> NodeRequest {
    NodeRequest::new(OpType::Placeholder)
        .attr("dtype", AttrValue::DType(dtype))
        .attr("shape", AttrValue::Ints(shape.to_vec()))
}

pub(crate) fn big_variable(name: &str, shape: &[usize]) -> BigVariable {
    let mut graph = Graph::new();
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let x = graph.add(placeholder(DType::F32, &dims)).unwrap();
    let decl = VariableDecl {
        name: Some(name.into()),
        device: Some(DeviceSpec::parse("/job:ps/task:0").unwrap()),
        trainable: false,
    };
    let var = graph.declare_variable(Operand::Node(Output::of(x)), decl).unwrap();
    let init = graph.global_variables_initializer().unwrap();
    BigVariable { graph, var, fed: Output::of(x), init, shape: shape.to_vec() }
}

/// The worker's master: a task of `spec` reaching the ps through `remote`.
pub(crate) fn master(spec: &ClusterSpec, remote: &Arc<GrpcRemote>) -> Executor {
    let task = Task::new(spec.clone(), TaskId::new("worker", 0)).unwrap().with_remote(remote.clone());
    task.session_executor("", true).unwrap().0
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

pub(crate) async fn run(e: &mut Executor, g: &Graph, req: RunRequest) -> weft_host::error::Result<Vec<Tensor>> {
    match tokio::time::timeout(LIMIT, e.run(g, &req)).await {
        Ok(r) => r.map(|r| r.values),
        Err(_) => panic!("a run did not finish within {LIMIT:?}"),
    }
}

pub(crate) async fn initialize(e: &mut Executor, v: &BigVariable, value: f32) {
    let n = v.shape.iter().product();
    let feed = Tensor::from_f32(&v.shape, vec![value; n]).unwrap();
    let req = RunRequest { targets: vec![v.init], feeds: vec![(v.fed, feed)], ..Default::default() };
    run(e, &v.graph, req).await.unwrap();
}

pub(crate) async fn fetch(e: &mut Executor, v: &BigVariable) -> weft_host::error::Result<Tensor> {
    let req = RunRequest { fetches: vec![Output::of(v.var.read)], ..Default::default() };
    Ok(run(e, &v.graph, req).await?.remove(0))
}

/// Open file descriptors of this process that are memfds named `name`.
fn open_memfds(name: &str) -> usize {
    let wanted = format!("/memfd:{name}");
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with(&wanted))
        .count()
}

/// Shared-memory mappings in process `pid`.
fn mapped_segments(pid: u32) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines().filter(|l| l.contains("/memfd:weft-shm-")).count()
}

pub(crate) fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A 16 MiB f32 variable: rows × columns.
const ROWS: usize = 1024;
const COLS: usize = 4096;
const MIB16: usize = ROWS * COLS;
const BYTES16: u64 = 16 << 20;

#[test]
fn big_tensors_between_colocated_processes_go_through_shared_memory() {
    let cluster = ps_process("shm", &[]);
    let remote = Arc::new(GrpcRemote::new(cluster.spec.clone()));
    let mut e = master(&cluster.spec, &remote);
    let ps = TaskId::new("ps", 0);
    let traffic = || (remote.traffic().shared_bytes(), remote.traffic().streamed_bytes());
    runtime().block_on(async {
        // In: the fed 16 MiB go to the ps in the call's segment.
        let known = big_variable("known", &[ROWS, COLS]);
        initialize(&mut e, &known, 1.5).await;
        assert_eq!(traffic(), (BYTES16, 0));
        // Out: a statically known output has space from the first call on.
        for i in 0..3 {
            let value = fetch(&mut e, &known).await.unwrap();
            assert_eq!(value.as_f32_vec().unwrap(), vec![1.5; ROWS * COLS], "fetch {i}");
        }
        assert_eq!(traffic(), (4 * BYTES16, 0));
        // An output whose shape is known only at run time (rows gathered
        // on the ps) is streamed the first time; the calls after offer the
        // space it took.
        let mut v = known;
        let rows = v.graph.add(placeholder(DType::I32, &[-1])).unwrap();
        let mut gather = NodeRequest::new(OpType::Gather).inputs([Output::of(v.var.read), Output::of(rows)]);
        gather.device = Some(DeviceSpec::parse("/job:ps/task:0").unwrap());
        let gather = Output::of(v.graph.add(gather).unwrap());
        let row_bytes: Vec<u8> = (0..ROWS as i32).flat_map(i32::to_le_bytes).collect();
        let all_rows = Tensor::from_le_bytes(DType::I32, &[ROWS], &row_bytes).unwrap();
        for i in 0..3 {
            let req = RunRequest {
                fetches: vec![gather],
                feeds: vec![(Output::of(rows), all_rows.clone())],
                ..Default::default()
            };
            let value = run(&mut e, &v.graph, req).await.unwrap().remove(0);
            assert_eq!(value.shape(), &[ROWS, COLS]);
            assert_eq!(value.as_f32_vec().unwrap(), vec![1.5; ROWS * COLS], "gather {i}");
        }
        // (The first call, with no output space to offer, is too small for
        // a segment: its 4 KiB of row numbers are streamed too.)
        let row_bytes = (ROWS * 4) as u64;
        assert_eq!(traffic(), (6 * BYTES16 + 2 * row_bytes, BYTES16 + row_bytes));
        // Both in one call (a new partition): the variable's value in the
        // space offered for it, the gathered rows streamed beside it the
        // first time, then both shared.
        let before = traffic();
        for i in 0..2 {
            let req = RunRequest {
                fetches: vec![Output::of(v.var.read), gather],
                feeds: vec![(Output::of(rows), all_rows.clone())],
                ..Default::default()
            };
            let values = run(&mut e, &v.graph, req).await.unwrap();
            assert_eq!(values[0].as_f32_vec().unwrap(), vec![1.5; ROWS * COLS], "read {i}");
            assert_eq!(values[1].as_f32_vec().unwrap(), vec![1.5; ROWS * COLS], "gather {i}");
        }
        let after = traffic();
        assert_eq!(
            (after.0 - before.0, after.1 - before.1),
            (3 * BYTES16 + 2 * row_bytes, BYTES16),
            "first call: one output shared, one streamed; second: both shared"
        );
        let (name, segments) = remote.shared_segments(&ps).await.expect("memory shared with the ps");
        // 16 MiB for the calls of one variable, 32 MiB for the gathers (16
        // MiB and the row numbers), 64 MiB for both at once, each reused
        // call after call.
        assert_eq!(segments, 3);
        assert_eq!(open_memfds(&name), 3);
    });
    let pid = cluster.ps.child.0.id();
    assert_eq!(mapped_segments(pid), 3, "the ps maps the master's segments");
    // The master goes: the ps unmaps what it shared.
    drop(e);
    drop(remote);
    wait_until("the ps unmapped the segments", || mapped_segments(pid) == 0);
}

/// A guest on the worker fetches big tensors of a ps served by another
/// process: they come back through shared memory and are lowered into the
/// guest from the segment they lie in, every value intact.
#[test]
fn a_guest_fetches_big_tensors_of_a_colocated_process_through_shared_memory() {
    let cluster = ps_process("guest-shm", &[]);
    let remote = Arc::new(GrpcRemote::new(cluster.spec.clone()));
    let task = Task::new(cluster.spec.clone(), TaskId::new("worker", 0)).unwrap().with_remote(remote.clone());
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let worker = rt.load_file(&weft_tests::fixture("api-tour")).unwrap();
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let args = vec!["big".to_string(), "300000".to_string()];
    let out = tokio.block_on(async { tokio::time::timeout(LIMIT, rt.run(&worker, Arc::new(task), args, None)).await });
    let out = out.expect("the guest finished in time").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout, "before: 300000 values, 0 wrong\nafter: 300000 values, 0 wrong\ni64: 300000 values, 0 wrong\n");
    // Two f32 fetches and an i64 one came back (the initial value is a
    // constant placed with the variable on the ps, so it never travels).
    let shared = remote.traffic().shared_bytes();
    assert!(shared >= 4 * 1_200_000, "only {shared} bytes went through shared memory");
}

#[test]
fn a_big_output_is_read_where_it_lies_and_stays_intact_while_later_calls_run() {
    let cluster = ps_process("in-place", &[]);
    let remote = Arc::new(GrpcRemote::new(cluster.spec.clone()));
    let mut e = master(&cluster.spec, &remote);
    let ps = TaskId::new("ps", 0);
    runtime().block_on(async {
        let v = big_variable("kept", &[ROWS, COLS]);
        initialize(&mut e, &v, 1.5).await;
        let first = fetch(&mut e, &v).await.unwrap();
        assert!(matches!(first, Tensor::Mapped(_)), "a 16 MiB f32 output stays in the segment the ps wrote");
        // While `first` lies in its segment, no later call may write there:
        // new values go in and out through another one.
        initialize(&mut e, &v, 2.5).await;
        let second = fetch(&mut e, &v).await.unwrap();
        assert_eq!(second.as_f32_vec().unwrap(), vec![2.5; MIB16]);
        assert_eq!(first.as_f32_vec().unwrap(), vec![1.5; MIB16], "the kept output is unchanged");
        let (_, segments) = remote.shared_segments(&ps).await.expect("memory shared with the ps");
        assert_eq!(segments, 2, "one held by the kept output, one for the calls after it");
        // Dropped, its segment is reused: no third one.
        drop((first, second));
        for value in [3.5, 4.5] {
            initialize(&mut e, &v, value).await;
            assert_eq!(fetch(&mut e, &v).await.unwrap().as_f32_vec().unwrap(), vec![value; MIB16]);
        }
        assert_eq!(remote.shared_segments(&ps).await.expect("still shared").1, 2);
    });
}

#[test]
fn tasks_of_one_process_call_each_other_directly_and_see_a_restart_as_over_the_network() {
    runtime().block_on(async {
        let mut cluster =
            tokio::time::timeout(LIMIT, weft_host::local_cluster::LocalCluster::start_on_free_ports(&[("ps", 1)]))
                .await
                .expect("started in time")
                .unwrap();
        let ps = TaskId::new("ps", 0);
        let mut jobs: BTreeMap<String, Vec<String>> = cluster.spec().jobs().clone();
        jobs.insert("worker".into(), vec!["127.0.0.1:1".into()]);
        let spec = ClusterSpec::new(jobs).unwrap();
        let remote = Arc::new(GrpcRemote::new(spec.clone()));
        let mut e = master(&spec, &remote);
        let v = big_variable("direct", &[ROWS, COLS]);
        initialize(&mut e, &v, 1.5).await;
        for i in 0..3 {
            let value = fetch(&mut e, &v).await.unwrap();
            assert_eq!(value.as_f32_vec().unwrap(), vec![1.5; MIB16], "fetch {i}");
        }
        let t = remote.traffic();
        assert_eq!((t.shared_bytes(), t.streamed_bytes()), (0, 0), "no byte went over gRPC or shared memory");
        assert_eq!(t.in_process_calls(), 4);

        // Stopped: unavailable, as its closed socket would say.
        tokio::time::timeout(LIMIT, cluster.stop(&ps)).await.expect("stopped in time").unwrap();
        let err = fetch(&mut e, &v).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        assert!(err.message().contains("/job:ps/task:0"), "{err}");
        // Restarted on its address: a new start with no variables, which
        // the error says, and which takes the partitions anew.
        tokio::time::timeout(LIMIT, cluster.restart(&ps)).await.expect("restarted in time").unwrap();
        let err = fetch(&mut e, &v).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
        assert!(err.message().contains("uninitialized") && err.message().contains("restarted"), "{err}");
        initialize(&mut e, &v, 2.5).await;
        assert_eq!(fetch(&mut e, &v).await.unwrap().as_f32_vec().unwrap(), vec![2.5; MIB16]);
        assert_eq!(remote.traffic().streamed_bytes(), 0, "the restarted task is called directly too");
        cluster.shutdown().await;
    });
}

#[test]
fn a_host_without_shared_memory_gets_its_tensors_over_tcp() {
    let cluster = ps_process("no-shm", &[("WEFT_SHM", "0")]);
    let remote = Arc::new(GrpcRemote::new(cluster.spec.clone()));
    let mut e = master(&cluster.spec, &remote);
    let v = big_variable("big", &[MIB16]);
    runtime().block_on(async {
        initialize(&mut e, &v, 2.0).await;
        for _ in 0..2 {
            assert_eq!(fetch(&mut e, &v).await.unwrap().as_f32_vec().unwrap(), vec![2.0; MIB16]);
        }
        assert_eq!((remote.traffic().shared_bytes(), remote.traffic().streamed_bytes()), (0, 3 * BYTES16));
        assert!(remote.shared_segments(&TaskId::new("ps", 0)).await.is_none());
    });
    assert_eq!(mapped_segments(cluster.ps.child.0.id()), 0);
}

#[test]
fn a_ps_that_dies_mid_transfer_is_unavailable_and_leaves_no_segment() {
    let mut cluster = ps_process("shm-kill", &[]);
    let remote = Arc::new(GrpcRemote::new(cluster.spec.clone()));
    let mut e = master(&cluster.spec, &remote);
    let v = big_variable("big", &[16 << 20]); // 64 MiB
    let ps = TaskId::new("ps", 0);
    let (name, err) = runtime().block_on(async {
        initialize(&mut e, &v, 3.0).await;
        fetch(&mut e, &v).await.unwrap();
        let (name, _) = remote.shared_segments(&ps).await.expect("memory shared with the ps");
        // Kill the ps while fetches run back to back.
        let pid = cluster.ps.child.0.id();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            sigkill(pid);
        });
        let deadline = Instant::now() + LIMIT;
        let err = loop {
            assert!(Instant::now() < deadline, "fetches kept working after the ps was killed");
            if let Err(e) = fetch(&mut e, &v).await {
                break e;
            }
        };
        killer.join().unwrap();
        (name, err)
    });
    let _ = cluster.ps.wait(LIMIT);
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.to_string().contains("/job:ps/task:0"), "{err}");
    let segments = runtime().block_on(remote.shared_segments(&ps));
    assert!(segments.is_none(), "the dead host's segments were dropped: {segments:?}");
    assert_eq!(open_memfds(&name), 0, "no memfd of the dead host's pool is open");
}

/// SIGKILL, from another thread than the one holding the child's handle.
pub(crate) fn sigkill(pid: u32) {
    let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
}
