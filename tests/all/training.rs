//! Training: gradients, optimizers and the replica device setter from a real
//! guest (tests/fixtures/train-tour), and the parameter-server training
//! example on an in-process cluster talking gRPC.

use weft_host::testing::{TestHost, TestOutput};
use weft_tests::{example, fixture};

fn ok(out: &TestOutput) -> &str {
    assert!(out.status.success(), "{:?}\nstdout:\n{}\nstderr:\n{}", out.status, out.stdout, out.stderr);
    &out.stdout
}

fn tour(mode: &str) -> String {
    let host = TestHost::new().unwrap();
    ok(&host.run(fixture("train-tour"), &[mode]).unwrap()).to_string()
}

#[test]
fn gradients_from_a_guest_match_the_hand_derivative() {
    assert_eq!(tour("gradients"), "grad [6.0, 12.0]\nother none\nname gradients/Square_grad/Mul_1\n");
}

#[test]
fn every_optimizer_minimizes_and_names_its_slots_like_tensorflow() {
    let out = tour("optimizers");
    let lines: Vec<&str> = out.lines().collect();
    for (line, name) in lines.iter().zip(["GradientDescent", "Momentum", "Adam", "RMSProp"]) {
        let after: f32 = line.split("-> ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
        assert!(line.starts_with(&format!("{name}: loss 18.0 -> ")), "{line}");
        assert!(after < 1e-2, "{name} did not converge: {line}");
        assert!(line.ends_with("in 300 steps"), "{line}");
    }
    assert_eq!(
        lines[4],
        "variables w0,step0,w1,step1,w1/Momentum,w2,step2,beta1_power,beta2_power,w2/Adam,w2/Adam_1,w3,step3,\
         w3/RMSProp,w3/RMSProp_1"
    );
}

#[test]
fn replica_device_setter_spreads_variables_and_slots_follow_them() {
    let host = TestHost::grpc_cluster(&[("ps", 2), ("worker", 1)]).unwrap();
    let out = host.run_on("/job:worker/task:0", fixture("train-tour"), &["setter"]).unwrap();
    assert_eq!(
        ok(&out),
        "A on /job:ps/task:0\nB on /job:ps/task:1\nC on /job:ps/task:0\nstep 1\n\
         update RMSProp/update_A/ApplyRMSProp on /job:worker/task:0\n"
    );
    // The update ran where A lives: its slots are beside it, A moved, B did not.
    let get = |task: &str, name: &str| host.variable_on(task, name).unwrap().map(|t| t.as_f32_vec().unwrap());
    let ps0 = "/job:ps/task:0";
    assert!(get(ps0, "A/RMSProp").is_some() && get(ps0, "A/RMSProp_1").is_some());
    assert!(get("/job:ps/task:1", "A/RMSProp").is_none());
    assert_ne!(get(ps0, "A").unwrap(), vec![1.0, 2.0]);
    assert_eq!(get("/job:ps/task:1", "B").unwrap(), vec![3.0]);
    assert!(host.variable_on("/job:ps/task:1", "global_step").unwrap().is_some(), "the fourth pick is ps1");
}

#[test]
fn bad_training_requests_get_named_errors() {
    let out = tour("bad");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("integer y: invalid-argument: gradients: y 'Sum_1' is i32[]"), "{}", lines[0]);
    assert!(lines[1].starts_with("integer x: invalid-argument: gradients: x 'ints' is i32[2]"), "{}", lines[1]);
    assert!(lines[2].contains("cannot optimize variable 'ints': it is i32"), "{}", lines[2]);
    assert!(
        lines[3].contains("unknown attr 'transpose_x'") && lines[3].contains("transpose_a, transpose_b"),
        "{}",
        lines[3]
    );
    assert!(lines[4].starts_with("no gradients: invalid-argument: no gradients for any variable (f)"), "{}", lines[4]);
    assert!(
        lines[5].starts_with("another graph: invalid-argument: gradients: x (node ")
            && lines[5].contains("of another graph"),
        "{}",
        lines[5]
    );
}

/// Runs `wasm` with `args` on every task of a fresh 1 ps + 2 workers cluster
/// talking gRPC; outputs in the order ps, worker 0, worker 1.
fn run_ps_and_two_workers(example_name: &str, args: &[&str]) -> (TestHost, Vec<TestOutput>) {
    let host = TestHost::grpc_cluster(&[("ps", 1), ("worker", 2)]).unwrap();
    let wasm = example(example_name);
    let tasks = ["/job:ps/task:0", "/job:worker/task:0", "/job:worker/task:1"];
    let programs: Vec<(&str, &std::path::Path, &[&str])> = tasks.iter().map(|&t| (t, wasm.as_path(), args)).collect();
    let outs = host.run_all(&programs).unwrap();
    (host, outs)
}

/// The ps-linear-regression example at width 64: both workers train the
/// shared W and b on the ps until the eval loss is at most 0.05.
#[test]
fn parameter_server_training_reaches_its_target_loss() {
    let (host, outs) = run_ps_and_two_workers("ps-linear-regression", &["0.05", "5000", "50", "64"]);
    let ps = ok(&outs[0]);
    assert!(ps.contains("Parameter server: training done after"), "{ps}");
    let mut starts = Vec::new();
    for (i, out) in outs[1..].iter().enumerate() {
        let text = ok(out);
        let start: f32 = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("Worker {i}: eval loss ")))
            .and_then(|r| r.split(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{text}"));
        let initialized = text.contains("no checkpoint to restore; initialized the variables");
        assert_eq!(initialized, i == 0, "only the chief initializes: {text}");
        starts.push(start);
        let last = text.lines().last().unwrap();
        assert!(last.starts_with(&format!("Worker {i}: reached eval loss 0.0")), "{text}");
    }
    // Workers are asynchronous: the second to look may see a model the first
    // already trained, but the first saw it untrained.
    assert!(starts.iter().any(|&s| s > 50.0), "the untrained loss is large: {starts:?}");
    let w = host.variable_on("/job:ps/task:0", "W").unwrap().unwrap();
    assert_eq!(w.shape(), [64, 64]);
    assert!(host.variable_on("/job:worker/task:0", "W").unwrap().is_none(), "W lives on the ps only");
}

/// A3C on CartPole with a small env-step budget: the workers play, update
/// the shared network and stop at the budget, saying so (solving it is
/// measured in docs/BENCHMARKS.md, not asserted in a test).
#[test]
fn a3c_stops_at_its_step_budget_saying_so() {
    let (host, outs) = run_ps_and_two_workers("a3c-cartpole", &["1", "3000", "0.003", "16"]);
    let ps = ok(&outs[0]);
    assert!(ps.contains("ps: NOT solved"), "{ps}");
    for out in &outs[1..] {
        let text = ok(out);
        assert!(text.contains("NOT solved, the budget of 3000 env steps is used up"), "{text}");
    }
    let steps = host.variable_on("/job:ps/task:0", "env_steps").unwrap().expect("env_steps on the ps");
    let weft_host::tensor::Tensor::I64(steps) = steps else { panic!("env_steps is i64") };
    assert!(steps.iter().all(|&n| n >= 3000), "the budget was used up: {steps:?}");
    assert!(host.variable_on("/job:ps/task:0", "W1/RMSProp").unwrap().is_some(), "shared RMSProp slots on the ps");
}
