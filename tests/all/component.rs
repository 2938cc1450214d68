//! Component tests: real guests (tests/fixtures/api-tour) on the in-process
//! test host, checking what the SDK and host interfaces do.

use weft_host::testing::{TestHost, TestOutput};
use weft_tests::fixture;

fn tour(mode: &str) -> (TestHost, TestOutput) {
    let host = TestHost::new().unwrap();
    let out = host.run(fixture("api-tour"), &[mode]).unwrap();
    assert!(out.status.success(), "{mode}: {:?}\n{}", out.status, out.stderr);
    (host, out)
}

/// S4: an empty graph lists nothing; `tf.Variable` adds its four nodes with
/// TensorFlow's names; names are made unique and scoped.
#[test]
fn node_names_follow_tensorflow() {
    let (_, out) = tour("names");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "empty: []");
    assert_eq!(lines[1], "var: var/initial_value,var,var/Assign,var/read");
    assert_eq!(lines[2], "types: Const,VariableV2,Assign,Identity");
    assert_eq!(lines[3], "second: var_1");
    assert_eq!(lines[4], "scoped: layer/Relu");
    assert_eq!(lines[5], "last: layer/Relu,layer/Const,AssignAdd_1,AssignAdd_1/value,AssignAdd,AssignAdd/value");
}

/// S3 on one task: a traced read runs `_SOURCE`, `var`; a traced
/// `assign_add` runs `_SOURCE`, `AssignAdd_1/value`, `var`, `AssignAdd_1` (the seed's order),
/// all on the task's device with its full TensorFlow name.
#[test]
fn traces_name_devices_and_nodes() {
    let (_, out) = tour("trace");
    let dev = "/job:localhost/replica:0/task:0/device:CPU:0";
    let expected =
        format!("{dev}\n   _SOURCE\n   var\n{dev}\n   _SOURCE\n   AssignAdd_1/value\n   var\n   AssignAdd_1\n");
    assert_eq!(out.stdout, expected);
}

/// Sessions on the program's own task share its variables; a `local`
/// session is private. The task's value is visible to the harness.
#[test]
fn own_task_sessions_share_variables() {
    let (host, out) = tour("shared");
    assert_eq!(out.stdout.lines().next(), Some("s1 5.0 s2 5.0 local 0.0"));
    assert_eq!(
        out.stdout.lines().nth(1),
        Some("targets /job:localhost/replica:0/task:0 /job:localhost/replica:0/task:0 local")
    );
    assert_eq!(host.variable("var").unwrap().as_f32_vec().unwrap(), vec![5.0]);
}

/// Big tensors go into the guest straight from the host's memory (one copy,
/// no byte vector first): every value of f32 and of i64 tensors arrives, in
/// order, before and after an update of the variable they come from.
#[test]
fn big_fetches_arrive_whole_value_by_value() {
    let host = TestHost::new().unwrap();
    let out = host.run(fixture("api-tour"), &["big", "300000"]).unwrap();
    assert!(out.status.success(), "{:?}\n{}", out.status, out.stderr);
    assert_eq!(
        out.stdout,
        "before: 300000 values, 0 wrong\nafter: 300000 values, 0 wrong\ni64: 300000 values, 0 wrong\n"
    );
}

/// S8's building block: report-uninitialized-variables names them until the
/// initializer runs.
#[test]
fn report_uninitialized_variables_lists_names() {
    let (_, out) = tour("report");
    assert_eq!(out.stdout, "before: [\"var\", \"w\"]\nafter: []\n");
}

/// The program sees its task identity, device strings and its args.
#[test]
fn identity_and_args_reach_the_guest() {
    let host = TestHost::new().unwrap();
    let out = host.run(fixture("api-tour"), &["identity", "extra"]).unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "localhost 0 [(\"localhost\", [\"in-process\"])]");
    assert_eq!(lines[1], "/job:ps/task:1");
    assert_eq!(lines[2], "args [\"api_tour.wasm\", \"identity\", \"extra\"]");
}

/// Feeds, MatMul, broadcasting and a device scope, checked by hand:
/// [[1,2,3],[4,5,6]] · [1,10,100]ᵀ + 0.5 = [[321.5],[654.5]].
#[test]
fn feeds_and_kernels_compute_by_hand_values() {
    let (_, out) = tour("math");
    assert_eq!(out.stdout, "[[321.5], [654.5]]\ndevice /job:localhost/task:0\n");
}

/// Two hosts are two tasks: a variable set on one is not on the other.
#[test]
fn test_hosts_are_isolated() {
    let (a, _) = tour("shared");
    let b = TestHost::new().unwrap();
    assert!(a.variable("var").is_some());
    assert!(b.variable("var").is_none());
}

/// S2 and S3 on an in-process cluster `{"local": [t0, t1]}`: sessions on
/// both tasks see one `var` (initial 0.0 / 0.0, then 1.0 / 1.0), and a read
/// through task 1 runs only `_SOURCE` there and `var` on task 0.
#[test]
fn in_process_cluster_shares_variables_across_tasks() {
    let host = TestHost::cluster(&[("local", 2)]).unwrap();
    let out = host.run_on("/job:local/task:1", fixture("api-tour"), &["cluster"]).unwrap();
    assert!(out.status.success(), "{:?}\n{}", out.status, out.stderr);
    assert_eq!(
        out.stdout,
        "initial 0.0 0.0\nafter 1.0 1.0\n\
         /job:local/replica:0/task:1/device:CPU:0 _SOURCE\n\
         /job:local/replica:0/task:0/device:CPU:0 _SOURCE,var\n"
    );
    assert_eq!(host.variable_on("/job:local/task:0", "var").unwrap().unwrap().as_f32_vec().unwrap(), vec![1.0]);
    assert!(host.variable_on("/job:local/task:1", "var").unwrap().is_none());
}

/// S4 across programs: a program on task 0 assigns `var`; a different
/// program on task 1, with its own graph, reads 1.0.
#[test]
fn programs_on_different_tasks_share_variables_by_name() {
    let host = TestHost::cluster(&[("local", 2)]).unwrap();
    let set = host.run_on("/job:local/task:0", fixture("api-tour"), &["set", "1"]).unwrap();
    assert!(set.status.success(), "{:?}", set.status);
    let get = host.run_on("/job:local/task:1", fixture("api-tour"), &["get"]).unwrap();
    assert_eq!(get.stdout, "var = 1.0\n", "{:?}", get.status);
}

/// Two programs on two worker tasks, run at once, increment a variable on
/// the ps task: the total is exact. (Atomicity under real threads is
/// checked by `exec::variables` unit tests.)
#[test]
fn concurrent_programs_lose_no_increment() {
    let host = TestHost::cluster(&[("ps", 1), ("worker", 2)]).unwrap();
    let tour = fixture("api-tour");
    assert!(host.run_on("/job:ps/task:0", &tour, &["set", "0"]).unwrap().status.success());
    let count: &[&str] = &["count", "3000"];
    let outs = host
        .run_all(&[("/job:worker/task:0", tour.as_path(), count), ("/job:worker/task:1", tour.as_path(), count)])
        .unwrap();
    for out in &outs {
        assert!(out.status.success(), "{:?}", out.status);
    }
    assert_eq!(host.variable_on("/job:ps/task:0", "var").unwrap().unwrap().as_f32_vec().unwrap(), vec![6000.0]);
}

/// Unknown tasks are named, with the tasks the host has.
#[test]
fn running_on_an_unknown_task_is_an_error() {
    let host = TestHost::cluster(&[("local", 2)]).unwrap();
    let err = host.run_on("/job:local/task:5", fixture("api-tour"), &["get"]).unwrap_err().to_string();
    assert!(err.contains("no task /job:local/task:5") && err.contains("/job:local/task:1"), "{err}");
}
