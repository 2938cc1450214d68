//! The seed's scenarios S2-S9 on in-process clusters of task servers that
//! talk real gRPC on loopback (`TestHost::grpc_cluster`): every variable
//! lives in the server of the task it is placed on.

use std::time::Duration;

use weft_host::runtime::ExitStatus;
use weft_host::testing::{TestHost, TestOutput};
use weft_tests::{example, fixture};

fn ok(out: &TestOutput) -> &str {
    assert!(out.status.success(), "{:?}\nstdout:\n{}\nstderr:\n{}", out.status, out.stdout, out.stderr);
    &out.stdout
}

fn f32_var(host: &TestHost, task: &str, name: &str) -> Vec<f32> {
    host.variable_on(task, name).unwrap().unwrap_or_else(|| panic!("{name} on {task}")).as_f32_vec().unwrap()
}

/// What S2 prints, in Rust and in Python (the seed's output).
pub(crate) const S2_OUTPUT: &str = "Initial value of var in session 1: 0.0\n\
     Initial value of var in session 2: 0.0\n\
     Incremented var in session 1\n\
     Value of var in session 1: 1.0\n\
     Value of var in session 2: 1.0\n";

/// What S3 prints, in Rust and in Python: the seed's traces, device by device.
pub(crate) fn s3_traces() -> String {
    let t0 = "/job:local/replica:0/task:0/device:CPU:0";
    let t1 = "/job:local/replica:0/task:1/device:CPU:0";
    format!(
        "# sess1.run(var)\n{t0}\n   _SOURCE\n   var\n\
         # sess1.run(var.assign_add(1.0))\n{t0}\n   _SOURCE\n   AssignAdd_1/value\n   var\n   AssignAdd_1\n\
         # sess2.run(var)\n{t1}\n   _SOURCE\n{t0}\n   _SOURCE\n   var\n\
         # sess1.run(var1)\n{t0}\n   _SOURCE\n   var1\n\
         # sess1.run(var2)\n{t0}\n   _SOURCE\n{t1}\n   _SOURCE\n   var2\n\
         # sess2.run(var2)\n{t1}\n   _SOURCE\n   var2\n\
         # sess2.run(var1)\n{t1}\n   _SOURCE\n{t0}\n   _SOURCE\n   var1\n"
    )
}

/// S2: run from task 1, so `var` (on task 0) is read and updated over gRPC.
#[test]
fn s2_sessions_on_two_tasks_share_var() {
    let host = TestHost::grpc_cluster(&[("local", 2)]).unwrap();
    let out = host.run_on("/job:local/task:1", example("shared-variable"), &[]).unwrap();
    assert_eq!(ok(&out), S2_OUTPUT);
    assert_eq!(f32_var(&host, "/job:local/task:0", "var"), vec![1.0]);
    assert_eq!(host.variable_on("/job:local/task:1", "var").unwrap(), None);
}

/// Tensors bigger than a chunk cross tasks in both directions: a 4 MiB
/// tensor made on task 1 is a partition input on task 0 (streamed in
/// 1 MiB chunks), and a 4 MiB variable on task 0 comes back the same way.
#[test]
fn big_tensors_stream_between_tasks_in_chunks() {
    let host = TestHost::grpc_cluster(&[("local", 2)]).unwrap();
    let out = host.run_on("/job:local/task:1", fixture("bench-cluster"), &["push", "4"]).unwrap();
    assert_eq!(ok(&out), "sum 1048576\n");
    let out = host.run_on("/job:local/task:1", fixture("bench-cluster"), &["reduce", "4", "1"]).unwrap();
    assert!(ok(&out).starts_with("seconds "), "{}", out.stdout);
    assert_eq!(f32_var(&host, "/job:local/task:0", "big").len(), 1 << 20);
}

/// S3: the traces the seed prints, device by device.
#[test]
fn s3_placement_traces_match_the_seed() {
    let host = TestHost::grpc_cluster(&[("local", 2)]).unwrap();
    let out = host.run_on("/job:local/task:0", example("placement"), &[]).unwrap();
    assert_eq!(ok(&out), s3_traces());
}

/// S3, beyond the seed: the same trace as Chrome trace JSON.
#[test]
fn s3_trace_exports_as_chrome_trace_json() {
    let host = TestHost::grpc_cluster(&[("local", 2)]).unwrap();
    let out = host.run_on("/job:local/task:0", example("placement"), &["--chrome-trace"]).unwrap();
    let json = ok(&out).lines().last().unwrap();
    assert!(json.starts_with(r#"{"traceEvents":["#) && json.ends_with('}'), "{json}");
    assert!(json.contains(r#""args":{"name":"/job:local/replica:0/task:0/device:CPU:0"}"#), "{json}");
    assert!(json.contains(r#"{"name":"var1","cat":"op","ph":"X""#), "{json}");
}

/// S4: each program builds its own graph; variables are shared by name,
/// within one program and across two programs on two hosts.
#[test]
fn s4_own_graphs_share_variables_by_name() {
    let host = TestHost::grpc_cluster(&[("local", 2)]).unwrap();
    let out = host.run_on("/job:local/task:1", example("own-graphs"), &[]).unwrap();
    assert_eq!(
        ok(&out),
        "graph 1: ['var/initial_value' (Const), 'var' (VariableV2), 'var/Assign' (Assign), 'var/read' (Identity)]\n\
         graph 2: []\n\
         sess2.run(var2) = 1.0\n"
    );
    let host = TestHost::grpc_cluster(&[("local", 2)]).unwrap();
    ok(&host.run_on("/job:local/task:0", example("own-graphs"), &["set"]).unwrap());
    let get = host.run_on("/job:local/task:1", example("own-graphs"), &["get"]).unwrap();
    assert_eq!(ok(&get), "var = 1.0\n");
}

/// S5: in-graph replication computes every worker's part on its worker;
/// between-graph replication has each worker add its part on the ps.
#[test]
fn s5_in_graph_and_between_graph_replication() {
    let host = TestHost::grpc_cluster(&[("ps", 1), ("worker", 2)]).unwrap();
    let out = host.run_on("/job:ps/task:0", example("replication"), &["in-graph"]).unwrap();
    let text = ok(&out);
    assert!(text.starts_with("in-graph: worker parts 7.0 and 15.0, total 22.0\n"), "{text}");
    assert!(
        text.contains("/job:worker/replica:0/task:0/device:CPU:0: ")
            && text.contains("/job:worker/replica:0/task:1/device:CPU:0: "),
        "{text}"
    );

    let host = TestHost::grpc_cluster(&[("ps", 1), ("worker", 2)]).unwrap();
    let wasm = example("replication");
    let args: &[&str] = &["between-graph"];
    let outs = host
        .run_all(&[("/job:worker/task:0", wasm.as_path(), args), ("/job:worker/task:1", wasm.as_path(), args)])
        .unwrap();
    for out in &outs {
        ok(out);
    }
    assert_eq!(f32_var(&host, "/job:ps/task:0", "total"), vec![22.0]);
}

/// S8: task 0 waits on `report_uninitialized_variables` until task 1 initializes.
#[test]
fn s8_one_task_initializes_the_other_waits() {
    let host = TestHost::grpc_cluster(&[("local", 2)]).unwrap();
    let wasm = example("wait-for-init");
    let args: &[&str] = &["2", "100"];
    let outs = host
        .run_all(&[("/job:local/task:0", wasm.as_path(), args), ("/job:local/task:1", wasm.as_path(), args)])
        .unwrap();
    let waiter = ok(&outs[0]);
    assert!(waiter.contains("Server 1: uninitialized: [\"var\"]\n"), "{waiter}");
    assert!(waiter.contains("Server 1: waiting for initialization...\n"), "{waiter}");
    assert!(waiter.ends_with("Server 1: variables initialized!\n"), "{waiter}");
    assert!(ok(&outs[1]).ends_with("Server 2: variables initialized\n"));
}

/// S9: the parameter server sees `var` rise and ends at exactly 10.0.
#[test]
fn s9_parameter_server_and_two_workers() {
    let host = TestHost::grpc_cluster(&[("ps", 1), ("worker", 2)]).unwrap();
    let wasm = example("parameter-server");
    let args: &[&str] = &["50"];
    let outs = host
        .run_all(&[
            ("/job:ps/task:0", wasm.as_path(), args),
            ("/job:worker/task:0", wasm.as_path(), args),
            ("/job:worker/task:1", wasm.as_path(), args),
        ])
        .unwrap();
    let ps = ok(&outs[0]);
    let values: Vec<f32> = ps
        .lines()
        .filter_map(|l| l.strip_prefix("Parameter server: var has value "))
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(values.len(), 5, "{ps}");
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "{values:?}");
    assert!(ps.ends_with("Parameter server: final value of var: 10.0\n"), "{ps}");
    for w in &outs[1..] {
        assert_eq!(ok(w).matches("incrementing var").count(), 5);
    }
    assert_eq!(f32_var(&host, "/job:ps/task:0", "var"), vec![10.0]);
}

/// Waits until variable `name` on `task` is at least `at_least`.
fn wait_for(host: &TestHost, task: &str, name: &str, at_least: f32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let value = host.variable_on(task, name).unwrap().map(|t| t.as_f32_vec().unwrap()[0]);
        if value.is_some_and(|v| v >= at_least) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{name} on {task} never reached {at_least}: {value:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// S7 in one process: while a program loops, task 1's server stops (runs
/// placed there fail at once with `unavailable` naming it), then restarts
/// (the same session works again). The test acts on what the program has
/// counted, not on timings.
#[test]
fn s7_task_leaves_and_comes_back() {
    let host = TestHost::grpc_cluster(&[("local", 2)]).unwrap();
    let tour = fixture("api-tour");
    let out = std::thread::scope(|s| {
        let program = s.spawn(|| host.run_on("/job:local/task:0", &tour, &["leave-loop", "100000"]).unwrap());
        wait_for(&host, "/job:local/task:0", "ok", 2.0);
        host.stop_task("/job:local/task:1").unwrap();
        wait_for(&host, "/job:local/task:0", "failed", 2.0);
        host.restart_task("/job:local/task:1").unwrap();
        program.join().unwrap()
    });
    let lines: Vec<&str> = ok(&out).lines().collect();
    let first_err = lines.iter().position(|l| *l != "success!").expect("some runs failed while task 1 was down");
    assert!(lines[first_err].starts_with("unavailable: task /job:local/task:1"), "{}", lines[first_err]);
    assert!(lines[..first_err].len() >= 2, "{lines:?}");
    assert_eq!(lines[lines.len() - 3..], ["success!"; 3], "the same session works again: {lines:?}");
}

/// After a restart, a variable that lived on the task is gone: reading it is
/// `failed-precondition` saying so, not "graph handle not found".
#[test]
fn restarted_task_reports_uninitialized_variable() {
    let host = TestHost::grpc_cluster(&[("local", 2)]).unwrap();
    let tour = fixture("api-tour");
    ok(&host.run_on("/job:local/task:0", &tour, &["set-on", "/job:local/task:1", "3"]).unwrap());
    let read = host.run_on("/job:local/task:0", &tour, &["get-on", "/job:local/task:1"]).unwrap();
    assert_eq!(ok(&read), "var = 3.0\n");
    host.restart_task("/job:local/task:1").unwrap();
    let out = host.run_on("/job:local/task:0", &tour, &["get-on", "/job:local/task:1"]).unwrap();
    let ExitStatus::Failed(message) = &out.status else { panic!("{:?}", out.status) };
    assert!(message.starts_with("failed-precondition: variable 'var' on /job:local/replica:0/task:1"), "{message}");
    assert!(message.contains("uninitialized") && message.contains("task /job:local/task:1 restarted at"), "{message}");
}

/// The session option for TensorFlow 2's rule: unconstrained ops (and so
/// unplaced variables) go to the session's own task.
#[test]
fn place_on_own_task_keeps_unplaced_variables_local() {
    let host = TestHost::grpc_cluster(&[("local", 2)]).unwrap();
    let out = host.run_on("/job:local/task:1", fixture("api-tour"), &["own-task"]).unwrap();
    assert_eq!(ok(&out), "var = 7.0 on /job:local/replica:0/task:1/device:CPU:0\n");
    assert_eq!(f32_var(&host, "/job:local/task:1", "var"), vec![7.0]);
    assert_eq!(host.variable_on("/job:local/task:0", "var").unwrap(), None);
}
