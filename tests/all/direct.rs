//! Tensors straight between tasks (issue 10, item 1): a tensor that one
//! task makes and another uses goes from the one to the other, whatever
//! task the session runs on. Clusters of this process, over real gRPC on
//! loopback (and, once, by calls in process); the master's traffic
//! counters show what went through it, each task's delivery counter what
//! reached it.

use std::sync::Arc;

use weft_host::cluster::{ClusterSpec, TaskId};
use weft_host::device::DeviceSpec;
use weft_host::error::Code;
use weft_host::exec::{HostFiles, RunRequest};
use weft_host::graph::{NodeRequest, OpType, Output};
use weft_host::local_cluster::LocalCluster;
use weft_host::rpc::{GrpcRemote, ServedTask};

use crate::data_plane::{LIMIT, big_variable, initialize, master, run, runtime};

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
    let g = v.graph_mut();
    g.push_device_scope(&DeviceSpec::parse(device).unwrap()).unwrap();
    let node = g.add(NodeRequest::new(op).inputs(inputs.iter().copied())).unwrap();
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
        let mut cluster = cluster(true).await;
        let spec = cluster.spec().clone();
        let remote = Arc::new(GrpcRemote::new(spec.clone()).in_process(false));
        let mut e = master(&spec, &remote);
        let mut v = big_variable("w", &[ROWS, 16]);
        let read = Output::of(v.var.read);
        let sum = on(&mut v, "/job:worker/task:1", OpType::Sum, &[read]);
        initialize(&mut e, &v, 2.0).await;
        let req = RunRequest { fetches: vec![sum], ..Default::default() };
        run(&mut e, v.graph(), req.clone()).await.unwrap();
        let worker1 = TaskId::new("worker", 1);
        tokio::time::timeout(LIMIT, cluster.stop(&worker1)).await.expect("stopped in time").unwrap();
        let err = run(&mut e, v.graph(), req.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        assert!(err.message().contains("/job:worker/task:1"), "{err}");
        assert!(err.message().contains("delivering"), "{err}");
        tokio::time::timeout(LIMIT, cluster.restart(&worker1)).await.expect("restarted in time").unwrap();
        let total = run(&mut e, v.graph(), req).await.unwrap().remove(0);
        assert_eq!(total.as_f32_vec().unwrap(), vec![(ROWS * 16) as f32 * 2.0]);
        cluster.shutdown().await;
    });
}
