//! Checkpoints and recovery: a parameter server that restarts mid-training
//! is restored from the latest checkpoint while every worker carries on —
//! in-process (the task server restarted) and with real processes (the ps
//! host killed with SIGKILL and started again on its port).

use std::path::Path;
use std::time::{Duration, Instant};

use weft_host::testing::{HostFiles, TestHost, TestOutput};
use weft_tests::example;

use crate::process::{Spawned, Stream, TempDir, free_ports, weft};

const LIMIT: Duration = Duration::from_secs(120);

fn ok(out: &TestOutput) -> &str {
    assert!(out.status.success(), "{:?}\nstdout:\n{}\nstderr:\n{}", out.status, out.stdout, out.stderr);
    &out.stdout
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last eval loss a worker printed.
fn last_loss(text: &str) -> f32 {
    text.lines()
        .rev()
        .find_map(|l| l.split("eval loss ").nth(1))
        .and_then(|r| r.split([' ', ',']).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no eval loss in:\n{text}"))
}

/// Workers train at width 64 for a fixed budget, the chief saving every 20
/// steps; once a checkpoint exists the ps task server is stopped and started
/// again empty. Some worker restores it, both finish, and the loss is low.
#[test]
fn a_restarted_ps_is_restored_and_training_carries_on() {
    let dir = TempDir::new("recover");
    let files = HostFiles { checkpoint_dir: Some(dir.0.clone()), ..Default::default() };
    let host = TestHost::grpc_cluster_with_files(&[("ps", 1), ("worker", 2)], files).unwrap().with_timeout(LIMIT);
    let wasm = example("ps-linear-regression");
    let args: &[&str] = &["0.0", "400", "20", "64", "--checkpoint", "model.ckpt", "--save-every", "20"];
    let state = dir.0.join("ps-0/checkpoint");
    let outs = std::thread::scope(|s| {
        let workers = s.spawn(|| {
            host.run_all(&[("/job:worker/task:0", wasm.as_path(), args), ("/job:worker/task:1", wasm.as_path(), args)])
        });
        wait_for("the first checkpoint", LIMIT, || state.exists());
        host.stop_task("/job:ps/task:0").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        host.restart_task("/job:ps/task:0").unwrap();
        workers.join().unwrap().unwrap()
    });
    let texts: Vec<&str> = outs.iter().map(ok).collect();
    let all = texts.join("\n");
    assert!(all.contains("TrainingSession: no checkpoint to restore; initialized the variables"), "{all}");
    assert!(
        all.contains("/job:ps/replica:0/task:0/device:CPU:0 lost its variables; restored them from its latest checkpoint at global step"),
        "{all}"
    );
    for text in &texts {
        assert!(text.contains("stopped at the step budget (400 steps)"), "{text}");
        assert!(last_loss(text) < 0.05, "training went on after the restore:\n{text}");
    }
    let w = host.variable_on("/job:ps/task:0", "W").unwrap().expect("W is back on the ps");
    assert_eq!(w.shape(), [64, 64]);
    assert!(
        Path::new(&dir.0.join("ps-0"))
            .read_dir()
            .unwrap()
            .any(|e| { e.unwrap().file_name().to_string_lossy().ends_with(".safetensors") })
    );
}

/// The test: real processes; the ps host is killed with SIGKILL
/// mid-training and started again on the same port. No worker restarts.
#[test]
fn sigkilled_ps_process_restarts_and_training_finishes_from_the_checkpoint() {
    let dir = TempDir::new("sigkill");
    let ports = free_ports(3);
    let cluster = dir.0.join("cluster.json");
    std::fs::write(
        &cluster,
        format!(
            "{{\"ps\": [\"127.0.0.1:{}\"], \"worker\": [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]}}",
            ports[0], ports[1], ports[2]
        ),
    )
    .unwrap();
    let cluster = cluster.to_str().unwrap().to_string();
    let ckpt = dir.0.join("ckpt");
    let ckpt_arg = ckpt.to_str().unwrap().to_string();
    let serve_ps = || {
        let argv = ["serve", "--cluster", &cluster, "--job", "ps", "--task", "0", "--checkpoint-dir", &ckpt_arg];
        let mut s = Spawned::start(weft(&argv, &dir.0));
        s.expect(Stream::Err, "serving /job:ps/task:0", LIMIT);
        s
    };
    let mut ps = serve_ps();
    let wasm = example("ps-linear-regression");
    let module = wasm.to_str().unwrap();
    let worker = |i: &str| {
        let argv = [
            "run",
            "--cluster",
            &cluster,
            "--job",
            "worker",
            "--task",
            i,
            "--checkpoint-dir",
            &ckpt_arg,
            module,
            "--",
            "0.0",
            "600",
            "20",
            "64",
            "--checkpoint",
            "model.ckpt",
            "--save-every",
            "20",
        ];
        Spawned::start(weft(&argv, &dir.0))
    };
    let mut w0 = worker("0");
    let mut w1 = worker("1");
    w0.expect(Stream::Out, "step 40:", LIMIT);
    wait_for("a checkpoint on the ps", LIMIT, || ckpt.join("ps-0/checkpoint").exists());
    ps.child.0.kill().unwrap();
    ps.wait(LIMIT);
    std::thread::sleep(Duration::from_millis(500));
    let _ps = serve_ps();
    for w in [&mut w0, &mut w1] {
        let status = w.wait(LIMIT);
        assert!(status.success(), "{:#?}", w.seen);
    }
    let out: Vec<String> = [&w0, &w1].iter().map(|w| w.lines(Stream::Out).join("\n")).collect();
    let all = out.join("\n");
    assert!(all.contains("lost its variables; restored them from its latest checkpoint at global step"), "{all}");
    for text in &out {
        assert!(text.contains("stopped at the step budget (600 steps)"), "{text}");
        assert!(last_loss(text) < 0.05, "{text}");
    }
}

/// A cluster of `tasks` tasks of job `local` in this process, its hosts
/// keeping checkpoints under `dir`.
fn checkpointing_cluster(dir: &TempDir, tasks: u32) -> TestHost {
    let files = HostFiles { checkpoint_dir: Some(dir.0.clone()), ..Default::default() };
    TestHost::grpc_cluster_with_files(&[("local", tasks)], files).unwrap()
}

/// Bad checkpoints from a guest: each a named error, and the variable keeps
/// the value it had.
#[test]
fn bad_checkpoints_are_refused_and_change_nothing() {
    let dir = TempDir::new("badckpt");
    let host = checkpointing_cluster(&dir, 1);
    let tour = weft_tests::fixture("train-tour");
    let run = |mode: &str| ok(&host.run(&tour, &[mode]).unwrap()).to_string();
    assert_eq!(run("save"), "saved model\nw [5.0, 6.0] v [8.0]\n");
    assert_eq!(run("restore"), "restored Some(0)\nw [5.0, 6.0] v [8.0]\n");

    let file = dir.0.join("local-0/model.safetensors");
    let good = std::fs::read(&file).unwrap();
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    std::fs::write(&file, &flipped).unwrap();
    let out = run("restore");
    assert!(out.contains("restore: invalid-argument: checkpoint") && out.contains("fails its checksum"), "{out}");
    assert!(out.ends_with("w [1.0, 2.0] v [7.0]\n"), "a refused restore changes nothing: {out}");

    std::fs::write(&file, &good[..good.len() - 3]).unwrap();
    let out = run("restore");
    assert!(out.contains("is damaged"), "{out}");
    assert!(out.ends_with("w [1.0, 2.0] v [7.0]\n"), "{out}");

    std::fs::write(&file, &good).unwrap();
    // A new host (the old one holds w as f32[2]) over the same checkpoints.
    let fresh = checkpointing_cluster(&dir, 1);
    let out = ok(&fresh.run(&tour, &["restore-shape"]).unwrap()).to_string();
    // w fits, v does not: neither is restored (all or nothing per task).
    assert!(out.contains("holds 'v' as f32[1], but the variable is f32[3]"), "{out}");
    assert!(out.ends_with("w [1.0, 2.0] v [7.0, 7.0, 7.0]\n"), "{out}");

    let out = run("escape");
    assert!(out.contains("checkpoint prefix '../outside/model' must be a relative path"), "{out}");
    assert!(!dir.0.join("outside").exists());
}

/// A save that failed on one task leaves its latest checkpoint older than
/// the other task's: restoring must not mix the two steps.
#[test]
fn tasks_whose_latest_checkpoints_differ_restore_one_step() {
    let dir = TempDir::new("ckpt-steps");
    let host = checkpointing_cluster(&dir, 2);
    let tour = weft_tests::fixture("train-tour");
    let run = |mode: &str| ok(&host.run(&tour, &[mode]).unwrap()).to_string();
    assert_eq!(run("save-steps"), "saved model-1\nsaved model-2\na [2.0] b [2.0]\n");
    // Task 1's save at step 2 failed: nothing of it reached its directory
    // (writes are atomic, and the `checkpoint` file is written last).
    let task1 = dir.0.join("local-1");
    for ext in ["safetensors", "index"] {
        std::fs::remove_file(task1.join(format!("model-2.{ext}"))).unwrap();
    }
    std::fs::write(
        task1.join("checkpoint"),
        "model_checkpoint_path: \"model-1\"\nall_model_checkpoint_paths: \"model-1\"\n",
    )
    .unwrap();
    let out = run("restore-steps");
    assert_eq!(out, "restored Some(1)\na [1.0] b [1.0]\n", "both at step 1, not a from 2 and b from 1");
    // Task 0 no longer keeps step 1: no step is common to both, and
    // nothing is restored (the step is chosen before anything is assigned).
    let task0 = dir.0.join("local-0");
    for ext in ["safetensors", "index"] {
        std::fs::remove_file(task0.join(format!("model-1.{ext}"))).unwrap();
    }
    let out = run("restore-steps");
    assert!(out.contains("restore: failed-precondition: no checkpoint step of 'model' that every task keeps"), "{out}");
    assert!(
        out.contains("task:0/device:CPU:0 keeps steps [2]") && out.contains("task:1/device:CPU:0 keeps steps [1]"),
        "{out}"
    );
    assert!(out.ends_with("a [0.0] b [0.0]\n"), "nothing restored: {out}");
}
