//! Python workers: built by `weft build-python` (componentize-py 0.25.1
//! from PyPI, run by `$WEFT_PYTHON`, default `python3`; the README's test
//! command installs it into `.venv`), then run on the test host, on
//! in-process clusters, with `weft launch`, beside Rust workers, and
//! uploaded to a running `weft serve --listen` host.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use weft_host::testing::{TestHost, TestOutput};
use weft_tests::{example, workspace_root};

use crate::process::{Spawned, Stream, TempDir, free_ports, run, weft};

const LIMIT: Duration = Duration::from_secs(240);

/// The newest modification time of the files under `dir`.
fn newest(dir: &Path) -> SystemTime {
    let mut latest = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let t = match entry.file_type().unwrap().is_dir() {
            true => newest(&entry.path()),
            false => entry.metadata().unwrap().modified().unwrap(),
        };
        latest = latest.max(t);
    }
    latest
}

/// The component of the Python worker in `dir` (relative to the
/// workspace), built with `weft build-python` unless a build newer than
/// the app, the SDK and the WIT is there; once per process and app.
fn python(dir: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, Arc<OnceLock<PathBuf>>>>> = OnceLock::new();
    let slot = BUILT.get_or_init(Mutex::default).lock().unwrap().entry(dir.to_string()).or_default().clone();
    slot.get_or_init(|| {
        let root = workspace_root();
        let out_dir =
            std::env::var_os("CARGO_TARGET_DIR").map_or(root.join("target"), PathBuf::from).join("weft-guests");
        std::fs::create_dir_all(&out_dir).unwrap();
        let out = out_dir.join(format!("py-{}.wasm", dir.replace('/', "-")));
        let inputs = [root.join(dir), root.join("guest-sdk/python/weft"), root.join("wit")];
        let fresh = std::fs::metadata(&out)
            .and_then(|m| m.modified())
            .is_ok_and(|built| inputs.iter().all(|d| newest(d) < built));
        if !fresh {
            let app = root.join(dir);
            // Built beside, then renamed: a build cut short leaves no
            // partial component that a later run would take as fresh.
            let part = out.with_extension("wasm.part");
            let argv = ["build-python", app.to_str().unwrap(), "-o", part.to_str().unwrap()];
            let built = run(weft(&argv, &out_dir), LIMIT);
            assert!(
                built.status.success(),
                "weft build-python {dir} failed; is componentize-py installed for $WEFT_PYTHON? \
                 (`python3 -m pip install componentize-py==0.25.1`)\n{}",
                built.stderr
            );
            std::fs::rename(&part, &out).unwrap();
        }
        out
    })
    .clone()
}

fn ok(out: &TestOutput) -> &str {
    assert!(out.status.success(), "{:?}\nstdout:\n{}\nstderr:\n{}", out.status, out.stdout, out.stderr);
    &out.stdout
}

#[test]
fn a_python_guest_builds_graphs_trains_and_gets_typed_errors() {
    let wasm = python("tests/python/python-tour");
    let host = TestHost::new().unwrap().with_timeout(LIMIT);
    let out = host.run(&wasm, &[]).unwrap();
    assert_eq!(ok(&out), "var = 4.0\nd(var^2)/dvar = 8.0\nerror: Error_InvalidArgument: unknown op type 'NoSuchOp'\n");
}

/// S1 in Python prints what the seed (and the Rust example) prints.
#[test]
fn python_s1_local_sessions_print_what_the_seed_prints() {
    let host = TestHost::new().unwrap().with_timeout(LIMIT);
    let out = host.run(python("examples/python/local-sessions"), &[]).unwrap();
    assert_eq!(
        ok(&out),
        "Initial value of var in session 1: 0.0\n\
         Initial value of var in session 2: 0.0\n\
         Incremented var in session 1\n\
         Value of var in session 1: 1.0\n\
         Value of var in session 2: 0.0\n"
    );
}

/// S2 in Python, from task 1 of an in-process gRPC cluster: `var` lives on
/// task 0 and both sessions see it change.
#[test]
fn python_s2_sessions_on_two_tasks_share_var() {
    let host = TestHost::grpc_cluster(&[("local", 2)]).unwrap().with_timeout(LIMIT);
    let out = host.run_on("/job:local/task:1", python("examples/python/shared-variable"), &[]).unwrap();
    assert_eq!(ok(&out), crate::scenarios::S2_OUTPUT);
    assert!(host.variable_on("/job:local/task:0", "var").unwrap().is_some());
    assert_eq!(host.variable_on("/job:local/task:1", "var").unwrap(), None);
}

/// S9 in Python with one `weft launch`: every task's story with its
/// prefix, and exactly 10.0 at the end.
#[test]
fn python_s9_parameter_server_with_weft_launch() {
    let dir = TempDir::new("py-s9");
    let wasm = python("examples/python/parameter-server");
    let file = dir.0.join("launch.toml");
    let text = format!(
        "[cluster]\nworker = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\nps = [\"127.0.0.1:3\"]\n\n[program]\nmodule = {:?}\nargs = [\"50\"]\n",
        wasm.to_str().unwrap()
    );
    std::fs::write(&file, text).unwrap();
    let mut launch = Spawned::start(weft(&["launch", "--free-ports", file.to_str().unwrap()], &dir.0));
    let status = launch.wait(LIMIT);
    assert!(status.success(), "{:#?}", launch.seen);
    let out = launch.lines(Stream::Out);
    assert!(out.contains(&"[ps:0] Parameter server: final value of var: 10.0"), "{out:#?}");
    for w in 0..2 {
        let increments =
            out.iter().filter(|l| l.starts_with(&format!("[worker:{w}] Worker {w}: incrementing var"))).count();
        assert_eq!(increments, 5, "{out:#?}");
    }
}

/// A cluster where a Rust ps and a Rust worker share `var` by name with a
/// Python worker: each adds 1.0 five times, and the ps reads 10.0.
#[test]
fn rust_and_python_workers_share_variables_by_name() {
    let host = TestHost::grpc_cluster(&[("ps", 1), ("worker", 2)]).unwrap().with_timeout(LIMIT);
    let (rust, py) = (example("parameter-server"), python("examples/python/parameter-server"));
    let args: &[&str] = &["50"];
    let outs = host
        .run_all(&[
            ("/job:ps/task:0", rust.as_path(), args),
            ("/job:worker/task:0", py.as_path(), args),
            ("/job:worker/task:1", rust.as_path(), args),
        ])
        .unwrap();
    assert!(ok(&outs[0]).contains("Parameter server: final value of var: 10.0"), "{}", outs[0].stdout);
    assert_eq!(ok(&outs[1]).matches("Worker 0: incrementing var").count(), 5, "{}", outs[1].stdout);
    assert_eq!(ok(&outs[2]).matches("Worker 1: incrementing var").count(), 5, "{}", outs[2].stdout);
}

/// Bad input from Python gets the same named errors as from Rust, as
/// exceptions named like TensorFlow's; an escaping error fails the
/// program with it, a Python exception traps it with its traceback, an
/// endless loop is stopped, and the host carries on.
#[test]
fn bad_input_from_python_gets_named_errors_and_the_host_carries_on() {
    let wasm = python("tests/python/python-misbehave");
    let host = TestHost::new().unwrap().with_timeout(LIMIT);
    let say = |mode: &str| ok(&host.run(&wasm, &[mode]).unwrap()).to_string();
    let out = say("shapes");
    assert!(out.starts_with("InvalidArgumentError: MatMul 'MatMul': inner dimensions differ"), "{out}");
    let out = say("device");
    assert!(out.starts_with("InvalidArgumentError: ") && out.contains("device '/job:nowhere/task:3'"), "{out}");
    let out = say("uninitialized");
    assert!(out.starts_with("FailedPreconditionError: variable 'v' on /job:localhost"), "{out}");
    let out = say("feed");
    assert!(out.starts_with("InvalidArgumentError: feed for 'Placeholder' is f32[3]"), "{out}");
    let out = say("int-float");
    assert!(
        out.starts_with("InvalidArgumentError: cannot make a int64 tensor of 0.5: it holds non-integral floats"),
        "{out}"
    );
    let out = say("two-graphs");
    assert!(out.starts_with("InvalidArgumentError: tensor Const:0 is from another graph"), "{out}");

    let escaped = host.run(&wasm, &["escape"]).unwrap();
    let status = format!("{:?}", escaped.status);
    assert!(status.contains("Failed") && status.contains("failed-precondition: variable 'v'"), "{status}");
    let raised = host.run(&wasm, &["raise"]).unwrap();
    assert!(format!("{:?}", raised.status).contains("Trapped"), "{:?}", raised.status);
    assert!(raised.stderr.contains("ZeroDivisionError: division by zero"), "{}", raised.stderr);

    let short = TestHost::new().unwrap().with_timeout(Duration::from_millis(500));
    let err = short.run(&wasm, &["loop"]).unwrap_err();
    assert_eq!(err.code(), weft_host::Code::DeadlineExceeded, "{err}");
    assert_eq!(say("ok"), "fine\n");
}

/// A Python worker uploaded to a running shared host, as a new user would:
/// `weft serve --listen`, an experiment, `weft submit --follow` streams
/// its output.
#[test]
fn a_python_worker_uploaded_to_a_running_host_runs_and_streams_its_output() {
    let dir = TempDir::new("py-upload");
    let wasm = python("examples/python/local-sessions");
    let host = format!("127.0.0.1:{}", free_ports(1)[0]);
    let mut server = Spawned::start(weft(&["serve", "--listen", &host, "--open-experiments"], &dir.0));
    server.expect(Stream::Err, "serving experiments on", LIMIT);
    let token = "pia-secret-token-0123456789";
    let file = dir.0.join("pia.toml");
    std::fs::write(&file, format!("name = \"pia\"\ntoken = \"{token}\"\n\n[cluster]\nworker = [\"{host}\"]\n"))
        .unwrap();
    let created = run(weft(&["experiment", "create", file.to_str().unwrap()], &dir.0), LIMIT);
    assert!(created.status.success(), "{}", created.stderr);
    let argv = ["submit", "--host", &host, "--experiment", "pia", "--token", token, "--follow", "--job", "worker"];
    let out = run(weft(&[&argv[..], &[wasm.to_str().unwrap()]].concat(), &dir.0), LIMIT);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.ends_with("Value of var in session 1: 1.0\nValue of var in session 2: 0.0\n"), "{}", out.stdout);
}

/// The last eval loss a worker printed.
fn last_loss(text: &str) -> f32 {
    let after = text.rsplit("eval loss ").next().unwrap();
    after.split([' ', ',']).next().unwrap().parse().unwrap_or_else(|_| panic!("no eval loss in:\n{text}"))
}

/// Parameter-server training in Python on an in-process gRPC cluster:
/// both workers print what the Rust twin prints and reach the target, and
/// the ps counts every update.
#[test]
fn python_ps_training_reaches_the_target_and_prints_like_its_rust_twin() {
    let host = TestHost::grpc_cluster(&[("ps", 1), ("worker", 2)]).unwrap().with_timeout(LIMIT);
    let wasm = python("examples/python/ps-linear-regression");
    let args: &[&str] = &["0.05", "3000", "50", "32"];
    let p = wasm.as_path();
    let outs = host
        .run_all(&[("/job:ps/task:0", p, args), ("/job:worker/task:0", p, args), ("/job:worker/task:1", p, args)])
        .unwrap();
    assert!(
        ok(&outs[0]).starts_with("Parameter server: holding W [32, 32] and b [32] for 2 workers\n"),
        "{}",
        outs[0].stdout
    );
    assert!(outs[0].stdout.contains("Parameter server: training done after "), "{}", outs[0].stdout);
    assert!(
        ok(&outs[1])
            .starts_with("TrainingSession: no checkpoint to restore; initialized the variables\nWorker 0: eval loss ")
    );
    for (i, out) in outs[1..].iter().enumerate() {
        let text = ok(out);
        assert!(
            text.contains(&format!("Worker {i}: reached eval loss ")) && text.contains("updates in all), "),
            "{text}"
        );
        assert!(last_loss(text) <= 0.05, "{text}");
    }
    let w = host.variable_on("/job:ps/task:0", "W").unwrap().expect("W lives on the ps");
    assert_eq!(w.shape(), [32, 32]);
}

/// Checkpoints and recovery from Python: the chief saves every 20 steps;
/// the ps task is stopped and started empty mid-training; a worker's
/// training session restores its variables from the latest checkpoint and
/// both workers finish their budget with a low loss.
#[test]
fn python_training_session_restores_a_restarted_ps_from_its_checkpoint() {
    let dir = TempDir::new("py-recover");
    let files = weft_host::testing::HostFiles { checkpoint_dir: Some(dir.0.clone()), ..Default::default() };
    let host = TestHost::grpc_cluster_with_files(&[("ps", 1), ("worker", 2)], files).unwrap().with_timeout(LIMIT);
    let wasm = python("examples/python/ps-linear-regression");
    let args: &[&str] = &["0.0", "400", "20", "64", "--checkpoint", "model.ckpt", "--save-every", "20"];
    let state = dir.0.join("ps-0/checkpoint");
    let outs = std::thread::scope(|s| {
        let workers = s.spawn(|| {
            host.run_all(&[("/job:worker/task:0", wasm.as_path(), args), ("/job:worker/task:1", wasm.as_path(), args)])
        });
        let start = std::time::Instant::now();
        while !state.exists() {
            assert!(start.elapsed() < LIMIT, "no checkpoint on the ps");
            std::thread::sleep(Duration::from_millis(20));
        }
        host.stop_task("/job:ps/task:0").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        host.restart_task("/job:ps/task:0").unwrap();
        workers.join().unwrap().unwrap()
    });
    let all: String = outs.iter().map(|o| ok(o).to_string()).collect::<Vec<_>>().join("\n");
    assert!(all.contains("lost its variables; restored them from its latest checkpoint at global step"), "{all}");
    for out in &outs {
        assert!(out.stdout.contains("stopped at the step budget (400 steps)"), "{}", out.stdout);
        assert!(last_loss(&out.stdout) < 0.05, "{}", out.stdout);
    }
    assert!(ok(&outs[0]).contains("Worker 0: saved model.ckpt-"), "{}", outs[0].stdout);
}

/// Hosting Python: the ~18 MB module uploads within the default limit and
/// compiles once per host (a second experiment uploading it starts it
/// without compiling); a Python program's memory counts against its
/// experiment's limit, which stops one given too little, naming the limit.
#[test]
fn a_python_module_compiles_once_per_host_and_its_memory_counts_against_its_limit() {
    use weft_host::cluster::{ClusterSpec, TaskId};
    use weft_host::hosting::{EffectiveLimits, ExperimentSpec, Hosting, HostingConfig, Limits, ProgramState};
    use weft_host::runtime::{ExitStatus, RuntimeConfig};

    let bytes = std::fs::read(python("examples/python/local-sessions")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let config = HostingConfig {
            runtime: RuntimeConfig { cache_dir: None, max_programs: 8, ..RuntimeConfig::default() },
            limits: EffectiveLimits::host_defaults(),
            ..HostingConfig::default()
        };
        let host = tokio::task::spawn_blocking(move || Hosting::new(config, None)).await.unwrap().unwrap();
        let spec = |name: &str, memory_mib: Option<u64>| ExperimentSpec {
            name: name.into(),
            token: format!("{name}-secret-token-0123456789"),
            cluster: ClusterSpec::new([("worker".to_string(), vec!["127.0.0.1:1".to_string()])].into()).unwrap(),
            tasks: vec![TaskId::new("worker", 0)],
            limits: Limits { memory_mib, ..Limits::default() },
            data_dir: None,
        };
        let roomy = host.create_experiment(spec("roomy", None)).unwrap();
        let tight = host.create_experiment(spec("tight", Some(8))).unwrap();
        let sha = weft_host::runtime::module_hash(&bytes);
        let (_, first) = host.add_module(&roomy, &sha, bytes.clone()).await.unwrap();
        assert!(first > Duration::ZERO, "the first upload compiles");
        let (_, again) = host.add_module(&tight, &sha, bytes.clone()).await.unwrap();
        assert_eq!(again, Duration::ZERO, "the host compiled it already");

        let task = TaskId::new("worker", 0);
        let finished = |p: Arc<weft_host::hosting::ProgramRecord>| async move {
            let deadline = std::time::Instant::now() + LIMIT;
            while !p.state().is_final() {
                assert!(std::time::Instant::now() < deadline, "program {} did not end", p.id);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            p
        };
        let ran = finished(host.start_program(&roomy, &sha, None, &task, vec![]).unwrap()).await;
        assert_eq!(ran.state(), ProgramState::Exited(ExitStatus::Success), "{}", ran.stdout_text());
        assert!(ran.stdout_text().ends_with("Value of var in session 2: 0.0\n"), "{}", ran.stdout_text());
        let starved = finished(host.start_program(&tight, &sha, None, &task, vec![]).unwrap()).await;
        let state = format!("{:?}", starved.state());
        assert!(state.contains("ResourceExhausted") || state.contains("resource-exhausted"), "{state}");
        assert!(state.contains("memory"), "{state}");
    });
}

/// S3 in Python: the seed's `run_with_location_trace` (RunOptions
/// FULL_TRACE, RunMetadata.step_stats) prints what the Rust example prints.
#[test]
fn python_s3_traces_show_which_device_ran_which_node() {
    let host = TestHost::grpc_cluster(&[("local", 2)]).unwrap().with_timeout(LIMIT);
    let out = host.run_on("/job:local/task:0", python("examples/python/placement"), &[]).unwrap();
    assert_eq!(ok(&out), crate::scenarios::s3_traces());
}

/// S8 in Python: task 0 waits on `report_uninitialized_variables` until
/// task 1 initializes, printing what the Rust example prints.
#[test]
fn python_s8_one_task_initializes_the_other_waits() {
    let host = TestHost::grpc_cluster(&[("local", 2)]).unwrap().with_timeout(LIMIT);
    let wasm = python("examples/python/wait-for-init");
    let args: &[&str] = &["2", "100"];
    let outs = host
        .run_all(&[("/job:local/task:0", wasm.as_path(), args), ("/job:local/task:1", wasm.as_path(), args)])
        .unwrap();
    let waiter = ok(&outs[0]);
    assert!(
        waiter.starts_with("Server 1: waiting for connection...\nServer 1: uninitialized: [\"var\"]\n"),
        "{waiter}"
    );
    assert!(waiter.contains("Server 1: waiting for initialization...\n"), "{waiter}");
    assert!(waiter.ends_with("Server 1: variables initialized!\n"), "{waiter}");
    assert_eq!(
        ok(&outs[1]),
        "Server 2: waiting 2 seconds before initializing...\nServer 2: waiting 1 seconds before initializing...\nServer 2: variables initialized\n"
    );
}

/// More of the Python op library, each op's result exact.
#[test]
fn python_ops_compute_what_tensorflow_computes() {
    let host = TestHost::new().unwrap().with_timeout(LIMIT);
    let out = host.run(python("tests/python/python-optimizers"), &["ops"]).unwrap();
    assert_eq!(
        ok(&out),
        "relu [0.0, 2.0]\n\
         sigmoid tanh [0.5, 0.0]\n\
         softmax [0.5, 0.5]\n\
         argmax 1\n\
         concat [1.0, 2.0, 3.0]\n\
         filled [[7.0, 7.0], [7.0, 7.0]]\n\
         reshaped [[1, 2], [3, 4]]\n\
         same op True found\n"
    );
}

/// Every Python optimizer trains (fused update ops on the host), bumps the
/// global step once per step, and names its slots as TensorFlow does.
#[test]
fn python_optimizers_train_and_name_their_slots_as_tensorflow() {
    let host = TestHost::new().unwrap().with_timeout(LIMIT);
    let out = host.run(python("tests/python/python-optimizers"), &[]).unwrap();
    assert_eq!(
        ok(&out),
        // One step from w = 0 (gradient -6): GD 0.1 * 6; Momentum 0.05 * 6;
        // RMSProp 0.05 * 6 / sqrt(0.9 * 1 + 0.1 * 36); Adam exactly its
        // rate, its powers then at 0.9^2 and 0.999^2.
        "GradientDescent: after one step w=0.6000\n\
         GradientDescent: w=3.00 step=300 slots=[]\n\
         Momentum: after one step w=0.3000\n\
         Momentum: w=3.00 step=300 slots=['w/Momentum']\n\
         RMSProp: after one step w=0.1414\n\
         RMSProp: w=3.00 step=300 slots=['w/RMSProp', 'w/RMSProp_1']\n\
         Adam: after one step w=0.1000 beta powers=0.8100 0.998001\n\
         Adam: w=3.00 step=300 slots=['beta1_power', 'beta2_power', 'w/Adam', 'w/Adam_1']\n"
    );
}
