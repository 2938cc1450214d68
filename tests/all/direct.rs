//! Tensors straight between tasks (issue 10, item 1): a tensor that one
//! task makes and another uses goes from the one to the other, whatever
//! task the session runs on. Clusters of this process, over real gRPC on
//! loopback (and, once, by calls in process), where each task's delivery
//! counter shows what reached it; and `weft serve` processes, through
//! shared memory or TCP. The master's traffic counters show what went
//! through it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_host::cluster::{ClusterSpec, TaskId};
use weft_host::device::DeviceSpec;
use weft_host::error::Code;
use weft_host::exec::{Executor, HostFiles, RunRequest};
use weft_host::graph::{NodeRequest, OpType, Output};
use weft_host::local_cluster::LocalCluster;
use weft_host::rpc::{GrpcRemote, ServedTask};

use crate::data_plane::{LIMIT, big_variable, initialize, master, placeholder, run, runtime, sigkill, wait_until};
use crate::process::{Spawned, Stream, TempDir, free_ports, weft};

/// 64 MiB of f32.
const ROWS: usize = 4096;
const BYTES64: u64 = 64 << 20;

async fn cluster(over_grpc: bool) -> LocalCluster {
    let jobs = [("ps", 1), ("worker", 2)];
    let start = async {
        if over_grpc {
            LocalCluster::start_on_free_ports_over_grpc(&jobs, HostFiles::default()).await
        } else {
            LocalCluster::start_on_free_ports(&jobs).await
        }
    };
    tokio::time::timeout(LIMIT, start).await.expect("started in time").unwrap()
}

/// [`cluster`] over gRPC, and a master on worker 0 that reaches the other
/// tasks over the network.
async fn grpc_cluster_and_master() -> (LocalCluster, Arc<GrpcRemote>, Executor) {
    let cluster = cluster(true).await;
    let remote = Arc::new(GrpcRemote::new(cluster.spec().clone()).in_process(false));
    let e = master(cluster.spec(), &remote);
    (cluster, remote, e)
}

/// The served task `id` of `spec` (served in this process).
fn served(spec: &ClusterSpec, id: &TaskId) -> Arc<ServedTask> {
    weft_host::rpc::in_process::find(spec.address(id), id).expect("served in this process")
}

/// Bytes delivered to `id` so far.
fn delivered(spec: &ClusterSpec, id: &TaskId) -> u64 {
    served(spec, id).deliveries().0
}

/// Adds `op` of `input` on `device`, returning its output.
fn on(v: &mut crate::data_plane::BigVariable, device: &str, op: OpType, inputs: &[Output]) -> Output {
    place(v, device, NodeRequest::new(op).inputs(inputs.iter().copied()))
}

/// Adds the node `req` asks for on `device`, returning its output.
fn place(v: &mut crate::data_plane::BigVariable, device: &str, req: NodeRequest) -> Output {
    let g = v.graph_mut();
    g.push_device_scope(&DeviceSpec::parse(device).unwrap()).unwrap();
    let node = g.add(req).unwrap();
    g.pop_device_scope().unwrap();
    Output::of(node)
}

/// A session on worker 0 sums, on worker 1, a 64 MiB variable of the ps:
/// the variable goes from the ps to worker 1, and worker 0 (the session's
/// task) carries none of it — over gRPC and between tasks of one process.
#[test]
fn a_tensor_between_two_other_tasks_goes_straight_and_the_session_task_carries_none_of_it() {
    for over_grpc in [true, false] {
        runtime().block_on(async {
            let cluster = cluster(over_grpc).await;
            let spec = cluster.spec().clone();
            let remote = Arc::new(GrpcRemote::new(spec.clone()).in_process(!over_grpc));
            let mut e = master(&spec, &remote);
            let mut v = big_variable("w", &[ROWS, ROWS]);
            let read = Output::of(v.var.read);
            let sum = on(&mut v, "/job:worker/task:1", OpType::Sum, &[read]);
            initialize(&mut e, &v, 1.0).await;
            let t = remote.traffic();
            let before = (t.shared_bytes() + t.streamed_bytes(), t.in_process_calls());
            let worker1 = TaskId::new("worker", 1);
            for step in 1..=2u64 {
                let req = RunRequest { fetches: vec![sum], ..Default::default() };
                let total = run(&mut e, v.graph(), req).await.unwrap().remove(0);
                assert_eq!(total.as_f32_vec().unwrap(), vec![(ROWS * ROWS) as f32], "step {step}");
                assert_eq!(delivered(&spec, &worker1), step * BYTES64, "worker 1 got the variable, step {step}");
            }
            let carried = t.shared_bytes() + t.streamed_bytes() - before.0;
            assert!(carried <= 64, "over gRPC: {over_grpc}; the session's task carried {carried} bytes");
            if !over_grpc {
                assert_eq!(t.in_process_calls() - before.1, 4, "two calls a step, each in process");
            }
            assert_eq!(served(&spec, &worker1).deliveries().1, (0, 0), "nothing left held");
            cluster.shutdown().await;
        });
    }
}

/// In-graph replication (S5) with the parameters on the ps and a part on
/// each worker: the parameters go to each worker once, straight from the
/// ps, and only the parts come back to the session's task (here, a client
/// outside the workers' jobs).
#[test]
fn in_graph_replication_moves_each_tensor_once() {
    runtime().block_on(async {
        let cluster = cluster(true).await;
        let mut jobs = cluster.spec().jobs().clone();
        jobs.insert("client".into(), vec!["127.0.0.1:1".into()]);
        let spec = ClusterSpec::new(jobs).unwrap();
        let remote = Arc::new(GrpcRemote::new(spec.clone()).in_process(false));
        let task =
            weft_host::task::Task::new(spec.clone(), TaskId::new("client", 0)).unwrap().with_remote(remote.clone());
        let mut e = task.session_executor("", true).unwrap().0;
        let mut v = big_variable("params", &[ROWS, ROWS / 4]); // 16 MiB
        let read = Output::of(v.var.read);
        let parts: Vec<Output> =
            (0..2).map(|w| on(&mut v, &format!("/job:worker/task:{w}"), OpType::Sum, &[read])).collect();
        let total = on(&mut v, "/job:client/task:0", OpType::Add, &parts);
        initialize(&mut e, &v, 0.5).await;
        let t = remote.traffic();
        let before = t.shared_bytes() + t.streamed_bytes();
        let req = RunRequest { fetches: vec![parts[0], parts[1], total], ..Default::default() };
        let out = run(&mut e, v.graph(), req).await.unwrap();
        let part = (ROWS * ROWS / 4) as f32 * 0.5;
        assert_eq!(out.iter().map(|t| t.as_f32_vec().unwrap()[0]).collect::<Vec<_>>(), vec![part, part, 2.0 * part]);
        let params = BYTES64 / 4;
        for w in 0..2 {
            assert_eq!(delivered(&spec, &TaskId::new("worker", w)), params, "worker {w} got the parameters once");
        }
        assert_eq!(delivered(&spec, &TaskId::new("ps", 0)), 0);
        let carried = t.shared_bytes() + t.streamed_bytes() - before;
        assert_eq!(carried, 8, "only the two parts came to the client");
        cluster.shutdown().await;
    });
}

/// A task the step's tensor goes to that is gone fails the step
/// `unavailable`, naming it; once it is back, the session goes on.
#[test]
fn a_delivery_to_a_task_that_is_gone_fails_naming_it() {
    runtime().block_on(async {
        let (mut cluster, remote, mut e) = grpc_cluster_and_master().await;
        let mut v = big_variable("w", &[ROWS, 16]);
        let read = Output::of(v.var.read);
        let sum = on(&mut v, "/job:worker/task:1", OpType::Sum, &[read]);
        initialize(&mut e, &v, 2.0).await;
        let req = RunRequest { fetches: vec![sum], ..Default::default() };
        run(&mut e, v.graph(), req.clone()).await.unwrap();
        let worker1 = TaskId::new("worker", 1);
        let ps = TaskId::new("ps", 0);
        let pool_before = remote.shared_segments(&ps).await.expect("memory shared with the ps").0;
        tokio::time::timeout(LIMIT, cluster.stop(&worker1)).await.expect("stopped in time").unwrap();
        let err = run(&mut e, v.graph(), req.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        assert!(err.message().contains("/job:worker/task:1"), "{err}");
        assert!(err.message().contains("/job:ps/task:0, delivering its outputs to"), "{err}");
        // The ps answered: its master keeps its connection (and memory) to it.
        let pool_after = remote.shared_segments(&ps).await.map(|(name, _)| name);
        assert_eq!(pool_after, Some(pool_before), "the master kept what it shares with the ps");
        tokio::time::timeout(LIMIT, cluster.restart(&worker1)).await.expect("restarted in time").unwrap();
        let total = run(&mut e, v.graph(), req).await.unwrap().remove(0);
        assert_eq!(total.as_f32_vec().unwrap(), vec![(ROWS * 16) as f32 * 2.0]);
        cluster.shutdown().await;
    });
}

/// A cluster of a ps and two workers whose ps and worker 1 are `weft serve`
/// processes (worker 1 with `worker_env`); worker 0 is the test's master.
struct Processes {
    _dir: TempDir,
    ps: Spawned,
    worker1: Spawned,
    spec: ClusterSpec,
}

fn processes(tag: &str, worker_env: &[(&str, &str)]) -> Processes {
    let dir = TempDir::new(tag);
    let ports = free_ports(3);
    let [ps, w0, w1] = [0, 1, 2].map(|i| format!("127.0.0.1:{}", ports[i]));
    let file = dir.0.join("cluster.json");
    std::fs::write(&file, format!(r#"{{"ps": ["{ps}"], "worker": ["{w0}", "{w1}"]}}"#)).unwrap();
    let serve = |job: &str, task: &str, env: &[(&str, &str)]| {
        let mut cmd = weft(&["serve", "--cluster", file.to_str().unwrap(), "--job", job, "--task", task], &dir.0);
        cmd.envs(env.iter().copied());
        let mut s = Spawned::start(cmd);
        s.expect(Stream::Err, &format!("serving /job:{job}/task:{task}"), LIMIT);
        s
    };
    let (ps_process, worker1) = (serve("ps", "0", &[]), serve("worker", "1", worker_env));
    let jobs = std::collections::BTreeMap::from([("ps".to_string(), vec![ps]), ("worker".to_string(), vec![w0, w1])]);
    Processes { _dir: dir, ps: ps_process, worker1, spec: ClusterSpec::new(jobs).unwrap() }
}

/// Memfds open in process `pid` other than those named `except`.
fn memfds_of(pid: u32, except: &str) -> usize {
    let except = format!("/memfd:{except}");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .map(|t| t.to_string_lossy().into_owned())
                .filter(|t| t.starts_with("/memfd:weft-shm-") && !t.starts_with(&except))
                .count()
        })
        .unwrap_or(0)
}

/// Between two `weft serve` processes the variable goes from the ps to
/// worker 1 through shared memory, or over TCP when worker 1 has none;
/// either way the master carries none of it.
#[test]
fn between_processes_a_tensor_goes_straight_through_shared_memory_or_tcp() {
    for worker_env in [&[][..], &[("WEFT_SHM", "0")][..]] {
        let cluster = processes("direct-processes", worker_env);
        let remote = Arc::new(GrpcRemote::new(cluster.spec.clone()));
        let mut e = master(&cluster.spec, &remote);
        let mut v = big_variable("w", &[ROWS, ROWS]);
        let read = Output::of(v.var.read);
        let sum = on(&mut v, "/job:worker/task:1", OpType::Sum, &[read]);
        runtime().block_on(async {
            initialize(&mut e, &v, 1.0).await;
            let t = remote.traffic();
            let before = t.shared_bytes() + t.streamed_bytes();
            for _ in 0..3 {
                let req = RunRequest { fetches: vec![sum], ..Default::default() };
                let total = run(&mut e, v.graph(), req).await.unwrap().remove(0);
                assert_eq!(total.as_f32_vec().unwrap(), vec![(ROWS * ROWS) as f32], "{worker_env:?}");
            }
            let carried = t.shared_bytes() + t.streamed_bytes() - before;
            assert!(carried <= 64, "{worker_env:?}: the session's task carried {carried} bytes");
        });
        // The ps holds a segment of its own (for worker 1) only when worker 1
        // shares memory.
        let (name, _) = runtime().block_on(remote.shared_segments(&TaskId::new("ps", 0))).expect("shared with the ps");
        let own = memfds_of(cluster.ps.child.0.id(), &name);
        assert_eq!(own > 0, worker_env.is_empty(), "{worker_env:?}: {own} memfds of the ps's own");
    }
}

/// Worker 1, killed while steps deliver to it from the ps (the kill lands
/// mid-delivery or between deliveries), through shared memory and, with
/// worker 1 offering none, over TCP: the step fails `unavailable` naming
/// it; the ps carries on and keeps no segment for it.
#[test]
fn a_task_killed_while_steps_deliver_to_it_is_unavailable_and_the_sender_keeps_no_segment() {
    for worker_env in [&[][..], &[("WEFT_SHM", "0")][..]] {
        killed_while_steps_deliver(worker_env);
    }
}

fn killed_while_steps_deliver(worker_env: &[(&str, &str)]) {
    let shared = worker_env.is_empty();
    let mut cluster = processes("direct-kill", worker_env);
    let remote = Arc::new(GrpcRemote::new(cluster.spec.clone()));
    let mut e = master(&cluster.spec, &remote);
    let mut v = big_variable("w", &[ROWS, ROWS]);
    let read = Output::of(v.var.read);
    let sum = on(&mut v, "/job:worker/task:1", OpType::Sum, &[read]);
    let req = RunRequest { fetches: vec![sum], ..Default::default() };
    let ps_pid = cluster.ps.child.0.id();
    // One runtime throughout: the master's channels live on it.
    let rt = runtime();
    let (err, name) = rt.block_on(async {
        initialize(&mut e, &v, 1.0).await;
        run(&mut e, v.graph(), req.clone()).await.unwrap();
        let (name, _) = remote.shared_segments(&TaskId::new("ps", 0)).await.expect("shared with the ps");
        let own = memfds_of(ps_pid, &name);
        assert_eq!(own > 0, shared, "{worker_env:?}: the ps delivers to worker 1 through shared memory or not");
        let pid = cluster.worker1.child.0.id();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            sigkill(pid);
        });
        let deadline = Instant::now() + LIMIT;
        let err = loop {
            assert!(Instant::now() < deadline, "steps kept working after worker 1 was killed");
            if let Err(e) = run(&mut e, v.graph(), req.clone()).await {
                break e;
            }
        };
        killer.join().unwrap();
        (err, name)
    });
    let _ = cluster.worker1.wait(LIMIT);
    assert_eq!(err.code(), Code::Unavailable, "{worker_env:?}: {err}");
    assert!(err.message().contains("/job:worker/task:1"), "{worker_env:?}: {err}");
    // Without another step: the ps notices the dead worker's connections.
    wait_until("the ps holds no segment for the dead worker", || memfds_of(ps_pid, &name) == 0);
    // The ps itself is fine.
    let read_req = RunRequest { fetches: vec![read], ..Default::default() };
    let value = rt.block_on(run(&mut e, v.graph(), read_req)).unwrap().remove(0);
    assert_eq!(value.len(), ROWS * ROWS);
}

/// What a raw gRPC peer of a `--cluster` host can get wrong about
/// deliveries, each refused naming what is wrong: a tensor without its key,
/// more than the task's tensor limit (refused before it is allocated), a
/// route that does not fit its partition, a delivered input of the wrong
/// shape, and one nobody delivered. The host then serves a good delivery.
#[test]
fn a_raw_peer_gets_each_bad_delivery_refused_and_the_host_carries_on() {
    use crate::data_plane::ps_process_with;
    use crate::hardening::{RawClient, register};
    use weft_host::exec::PartitionDef;
    use weft_host::graph::Graph;
    use weft_host::rpc::{partition_to_pb, pb};
    use weft_host::tensor::{DType, TensorType};

    let cluster = ps_process_with("raw-deliveries", &[], &["--tensor-mib", "64"]);
    let address = cluster.spec.jobs()["ps"][0].clone();
    // Neg(x), x an f32[3] delivered by another task.
    let mut g = Graph::new();
    let x = g.add(placeholder(DType::F32, &[3])).unwrap();
    let neg = g.add(NodeRequest::new(OpType::Neg).inputs([Output::of(x)])).unwrap();
    let def = PartitionDef {
        nodes: vec![g.node(neg).unwrap().clone()],
        inputs: vec![Output::of(x)],
        input_types: vec![TensorType::known(DType::F32, &[3])],
        outputs: vec![Output::of(neg)],
    };
    let key = Some(pb::OutputRef { node: x, index: 0 });
    let meta = |shape: &[u64]| pb::TensorMeta {
        dtype: 1,
        shape: shape.to_vec(),
        byte_length: 4 * shape.iter().product::<u64>(),
    };
    let tensor = |step: u64, shape: &[u64], with_key: bool| {
        let n = shape.iter().product::<u64>() as usize;
        let data: Vec<u8> = (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect();
        pb::DeliverTensorsRequest {
            master: 7,
            step,
            key: key.filter(|_| with_key),
            uses: 1,
            meta: Some(meta(shape)),
            data: data.into(),
            ..Default::default()
        }
    };
    let deliver = |client: &RawClient, m: pb::DeliverTensorsRequest| {
        let mut client = client.clone();
        async move { client.deliver_tensors(futures_util::stream::iter([m])).await.map(drop) }
    };
    let run_step = |client: &RawClient, step: u64, delivered: Vec<u32>| {
        let mut client = client.clone();
        async move {
            let first = pb::RunPartitionRequest {
                master: 7,
                partition_id: 1,
                step,
                delivered_inputs: delivered,
                ..Default::default()
            };
            let mut stream = client.run_partition(futures_util::stream::iter([first])).await?.into_inner();
            let mut data = Vec::new();
            while let Some(chunk) = stream.message().await? {
                data.extend_from_slice(&chunk.data);
            }
            Ok::<_, tonic::Status>(data)
        }
    };
    runtime().block_on(async {
        let connect = pb::task_service_client::TaskServiceClient::connect(format!("http://{address}"));
        let client = tokio::time::timeout(LIMIT, connect).await.unwrap().unwrap();
        register(&mut client.clone(), 1, prost::Message::encode_to_vec(&partition_to_pb(&def))).await.unwrap();

        let keyless = within(deliver(&client, tensor(1, &[3], false))).await.unwrap_err();
        assert_eq!(keyless.code(), tonic::Code::InvalidArgument, "{keyless:?}");
        assert!(keyless.message().contains("without its key"), "{keyless:?}");

        let huge = pb::DeliverTensorsRequest { data: Default::default(), ..tensor(1, &[1 << 25], true) };
        let refused = within(deliver(&client, huge)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
        assert!(
            refused.message().contains("delivered for output") && refused.message().contains("67108864"),
            "{refused:?}"
        );

        let past = within(run_step(&client, 1, vec![4])).await.unwrap_err();
        assert_eq!(past.code(), tonic::Code::InvalidArgument, "{past:?}");
        assert!(past.message().contains("route of partition 1"), "{past:?}");

        within(deliver(&client, tensor(2, &[4], true))).await.unwrap();
        let misshapen = within(run_step(&client, 2, vec![0])).await.unwrap_err();
        assert_eq!(misshapen.code(), tonic::Code::InvalidArgument, "{misshapen:?}");
        assert!(misshapen.message().contains("partition 1"), "{misshapen:?}");

        let missing = within(run_step(&client, 3, vec![0])).await.unwrap_err();
        assert_eq!(missing.code(), tonic::Code::FailedPrecondition, "{missing:?}");
        assert!(missing.message().contains("was not delivered to /job:ps/task:0"), "{missing:?}");

        within(deliver(&client, tensor(4, &[3], true))).await.unwrap();
        let out = within(run_step(&client, 4, vec![0])).await.unwrap();
        let values: Vec<f32> = out.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(values, vec![-0.0, -1.0, -2.0], "the host carries on");
        let again = within(run_step(&client, 4, vec![0])).await.unwrap_err();
        assert_eq!(again.code(), tonic::Code::FailedPrecondition, "a delivery is taken once: {again:?}");
    });
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("answered in time")
}

/// A variable whose output is read on another task and also used by a
/// later partition of its own task (which repeats it) is delivered from
/// its own partition, the one that runs first.
#[test]
fn a_variable_read_elsewhere_and_used_again_at_home_in_one_step() {
    runtime().block_on(async {
        let (cluster, _, mut e) = grpc_cluster_and_master().await;
        let mut v = big_variable("w", &[ROWS, 16]);
        let var = Output::of(v.var.var);
        let there = on(&mut v, "/job:worker/task:1", OpType::Sum, &[var]);
        let scaled = on(&mut v, "/job:ps/task:0", OpType::Mul, &[var, there]);
        let total = on(&mut v, "/job:ps/task:0", OpType::Sum, &[scaled]);
        initialize(&mut e, &v, 1.0).await;
        let req = RunRequest { fetches: vec![total], ..Default::default() };
        let out = run(&mut e, v.graph(), req).await.unwrap().remove(0);
        let n = (ROWS * 16) as f32;
        assert_eq!(out.as_f32_vec().unwrap(), vec![n * n]);
        cluster.shutdown().await;
    });
}

/// A variable updated on its task mid-step and read on another task after
/// the update gets the updated value (what it would get through the
/// master): from the latest partition holding it before the reader.
#[test]
fn a_variable_read_after_its_update_in_the_same_step_is_the_updated_value() {
    use weft_host::graph::Operand;
    runtime().block_on(async {
        let (cluster, _, mut e) = grpc_cluster_and_master().await;
        let mut v = big_variable("small", &[4]);
        let var = Output::of(v.var.var);
        let s = on(&mut v, "/job:worker/task:1", OpType::Sum, &[var]); // 4, stage 1
        let m = on(&mut v, "/job:ps/task:0", OpType::Mul, &[var, s]); // [4; 4], stage 2
        let node = v.var.var;
        let upd = v.graph_mut().assign_op(OpType::AssignAdd, node, Operand::Node(m)).unwrap(); // var = [5; 4]
        let c = on(&mut v, "/job:ps/task:0", OpType::Sum, &[upd]); // 20, stage 2
        let r = on(&mut v, "/job:worker/task:1", OpType::Mul, &[var, c]); // stage 3
        let total = on(&mut v, "/job:worker/task:1", OpType::Sum, &[r]);
        initialize(&mut e, &v, 1.0).await;
        let req = RunRequest { fetches: vec![total], ..Default::default() };
        let out = run(&mut e, v.graph(), req).await.unwrap().remove(0);
        assert_eq!(out.as_f32_vec().unwrap(), vec![400.0], "5 x 20, four times");
        cluster.shutdown().await;
    });
}

/// A big input the ps reads where it lies in its master's segment, passed
/// on by an Identity and kept for two later partitions of the ps, is a copy
/// by then: the master's next call writes into that segment.
#[test]
fn an_input_read_in_place_and_kept_for_later_stages_is_a_copy() {
    use weft_host::graph::{AttrValue, Graph};
    use weft_host::tensor::{DType, Tensor};

    let cluster = processes("direct-kept", &[]);
    let remote = Arc::new(GrpcRemote::new(cluster.spec.clone()));
    let mut e = master(&cluster.spec, &remote);
    let n = 256 << 10; // 1 MiB of f32
    let mut g = Graph::new();
    let ps = DeviceSpec::parse("/job:ps/task:0").unwrap();
    let w1 = DeviceSpec::parse("/job:worker/task:1").unwrap();
    let add = |g: &mut Graph, device: &DeviceSpec, req: NodeRequest| {
        g.push_device_scope(device).unwrap();
        let id = g.add(req).unwrap();
        g.pop_device_scope().unwrap();
        Output::of(id)
    };
    let x = add(&mut g, &ps, placeholder(DType::F32, &[n as i64]));
    let y = add(&mut g, &ps, NodeRequest::new(OpType::Identity).inputs([x]));
    let two = NodeRequest::new(OpType::Const).attr("value", AttrValue::Tensor(Tensor::scalar_f32(2.0)));
    let b = add(&mut g, &w1, two);
    let z1 = add(&mut g, &ps, NodeRequest::new(OpType::Add).inputs([y, b]));
    let c = add(&mut g, &w1, NodeRequest::new(OpType::Neg).inputs([z1]));
    let z2 = add(&mut g, &ps, NodeRequest::new(OpType::Add).inputs([y, c]));
    let feed = Tensor::from_f32(&[n], vec![1.0; n]).unwrap();
    let req = RunRequest { fetches: vec![z1, z2], feeds: vec![(x, feed)], ..Default::default() };
    let out = runtime().block_on(run(&mut e, &g, req)).unwrap();
    let wrong = |t: &Tensor, want: f32| t.as_f32_vec().unwrap().iter().filter(|&&v| v != want).count();
    assert_eq!(wrong(&out[0], 3.0), 0, "z1 = x + 2");
    assert_eq!(wrong(&out[1], -2.0), 0, "z2 = y - z1: y is still x, not what was written over it");
    assert!(remote.traffic().shared_bytes() > 0, "the calls went through shared memory");
}

/// A step that fails after a tensor was delivered for a later stage of it:
/// the master tells the receiver to forget the step, which drops what it
/// held for it (and its charge) at once instead of a minute later.
#[test]
fn a_failed_steps_deliveries_are_dropped_at_once() {
    runtime().block_on(async {
        let (cluster, _, mut e) = grpc_cluster_and_master().await;
        let spec = cluster.spec().clone();
        let mut v = big_variable("w", &[ROWS, ROWS]);
        let read = Output::of(v.var.read);
        // Stage 1: the ps sums the variable (and delivers it to worker 1).
        // Stage 2: the session's task adds that sum to `u`, which was never
        // initialized, and fails. Stage 3, on worker 1, never runs.
        let ps_sum = on(&mut v, "/job:ps/task:0", OpType::Sum, &[read]);
        let decl = weft_host::graph::VariableDecl {
            name: Some("u".into()),
            device: Some(DeviceSpec::parse("/job:worker/task:0").unwrap()),
            trainable: false,
        };
        let literal = weft_host::graph::Operand::Literal(weft_host::tensor::Tensor::scalar_f32(0.0));
        let u = v.graph_mut().declare_variable(literal, decl).unwrap();
        // Read only once the ps's sum is in (a control input), so in stage 2.
        let mut late_read = NodeRequest::new(OpType::Identity).inputs([Output::of(u.var)]);
        late_read.control_inputs = vec![ps_sum.node];
        let late_read = place(&mut v, "/job:worker/task:0", late_read);
        let shifted = on(&mut v, "/job:worker/task:0", OpType::Add, &[late_read, ps_sum]);
        let moved = on(&mut v, "/job:worker/task:1", OpType::Add, &[read, shifted]);
        let total = on(&mut v, "/job:worker/task:1", OpType::Sum, &[moved]);
        initialize(&mut e, &v, 1.0).await;
        let worker1 = TaskId::new("worker", 1);
        let req = RunRequest { fetches: vec![total], ..Default::default() };
        let err = run(&mut e, v.graph(), req).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
        assert!(err.message().contains("variable 'u'"), "{err}");
        assert_eq!(delivered(&spec, &worker1), BYTES64, "worker 1 was delivered the variable in stage 1");
        let deadline = Instant::now() + Duration::from_secs(10);
        while served(&spec, &worker1).deliveries().1 != (0, 0) {
            assert!(Instant::now() < deadline, "worker 1 still holds {:?}", served(&spec, &worker1).deliveries().1);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::timeout(LIMIT, cluster.shutdown()).await.expect("shut down in time");
    });
}
