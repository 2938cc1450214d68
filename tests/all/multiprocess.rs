//! S6, S7 and S9 with real `weft` processes, as a user runs them: hosts
//! that start late, hosts killed and restarted on the same port, and
//! `weft launch` of the parameter-server example.

use std::time::Duration;

use weft_tests::example;

use crate::process::{Spawned, Stream, TempDir, free_ports, weft};

const LIMIT: Duration = Duration::from_secs(60);

/// A `{"local": [...]}` cluster file on free ports.
fn local_cluster(dir: &TempDir, tasks: usize) -> (String, Vec<u16>) {
    let ports = free_ports(tasks);
    let addresses: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let path = dir.0.join("cluster.json");
    std::fs::write(&path, format!("{{\"local\": [{}]}}", addresses.join(", "))).unwrap();
    (path.to_str().unwrap().to_string(), ports)
}

fn run_task(dir: &TempDir, cluster: &str, task: &str, extra: &[&str], module: &str, args: &[&str]) -> Spawned {
    let mut argv = vec!["run", "--cluster", cluster, "--job", "local", "--task", task];
    argv.extend_from_slice(extra);
    argv.push(module);
    if !args.is_empty() {
        argv.push("--");
        argv.extend_from_slice(args);
    }
    Spawned::start(weft(&argv, &dir.0))
}

/// S6: task 0's run waits for task 1, saying so, and succeeds once task 1's
/// host is up.
#[test]
fn s6_run_waits_for_a_late_task() {
    let dir = TempDir::new("s6");
    let (cluster, ports) = local_cluster(&dir, 2);
    let wasm = example("wait-for-cluster");
    let module = wasm.to_str().unwrap();
    let mut task0 = run_task(&dir, &cluster, "0", &[], module, &[]);
    task0.expect(Stream::Out, "server 1: running no-op...", LIMIT);
    let waiting = task0.expect(Stream::Err, "waiting for /job:local/task:1", LIMIT);
    assert!(waiting.contains(&format!("127.0.0.1:{}", ports[1])), "{waiting}");

    let mut task1 = run_task(&dir, &cluster, "1", &["--keep-serving"], module, &[]);
    task1.expect(Stream::Out, "server 2: connected!", LIMIT);
    task0.expect(Stream::Out, "server 1: no-op run!", LIMIT);
    assert!(task0.wait(LIMIT).success(), "{:#?}", task0.seen);
}

/// S6 with a session timeout: `deadline-exceeded`, naming the missing task.
#[test]
fn s6_timeout_names_the_missing_task() {
    let dir = TempDir::new("s6t");
    let (cluster, _) = local_cluster(&dir, 2);
    let wasm = example("wait-for-cluster");
    let mut task0 = run_task(&dir, &cluster, "0", &[], wasm.to_str().unwrap(), &["300"]);
    let status = task0.wait(LIMIT);
    assert_eq!(status.code(), Some(1), "{:#?}", task0.seen);
    let err = task0.lines(Stream::Err).join("\n");
    assert!(err.contains("deadline-exceeded") && err.contains("/job:local/task:1"), "{err}");
}

/// S7: kill task 1's host process: runs placed there fail fast with
/// `unavailable` naming it while runs on task 0 go on; restart it on the
/// same port and the same session works again.
#[test]
fn s7_killed_host_fails_fast_and_comes_back() {
    let dir = TempDir::new("s7");
    let (cluster, _) = local_cluster(&dir, 2);
    let serve_task1 = || {
        let mut s = Spawned::start(weft(&["serve", "--cluster", &cluster, "--job", "local", "--task", "1"], &dir.0));
        s.expect(Stream::Err, "serving /job:local/task:1", LIMIT);
        s
    };
    let mut task1 = serve_task1();
    let wasm = example("server-leaves");
    let mut task0 = run_task(&dir, &cluster, "0", &[], wasm.to_str().unwrap(), &["100000", "50"]);
    task0.expect(Stream::Out, "success!", LIMIT);

    task1.child.0.kill().unwrap();
    task1.wait(LIMIT);
    let failure = task0.expect(Stream::Out, "unavailable", LIMIT);
    assert!(failure.contains("/job:local/task:1"), "{failure}");

    let _task1 = serve_task1();
    task0.expect(Stream::Out, "success!", LIMIT);
    assert!(task0.child.0.try_wait().unwrap().is_none(), "task 0's program is still running its loop");
}

/// S9 with one command: `weft launch` prints every task's story with its
/// prefix, and the final value is exactly 10.0.
#[test]
fn s9_launch_parameter_server() {
    let dir = TempDir::new("s9");
    let wasm = example("parameter-server");
    let file = dir.0.join("launch.toml");
    std::fs::write(
        &file,
        format!(
            "[cluster]\nworker = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\nps = [\"127.0.0.1:3\"]\n\n[program]\nmodule = {:?}\nargs = [\"50\"]\n",
            wasm.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut launch = Spawned::start(weft(&["launch", "--free-ports", file.to_str().unwrap()], &dir.0));
    let status = launch.wait(LIMIT);
    assert!(status.success(), "{:#?}", launch.seen);
    let out = launch.lines(Stream::Out);
    assert!(
        out.iter().all(|l| l.starts_with("[ps:0] ") || l.starts_with("[worker:0] ") || l.starts_with("[worker:1] ")),
        "{out:#?}"
    );
    assert!(out.contains(&"[ps:0] Parameter server: final value of var: 10.0"), "{out:#?}");
    assert_eq!(out.iter().filter(|l| l.starts_with("[worker:1] Worker 1: incrementing var")).count(), 5);
}

/// A task server serves gRPC health and stops cleanly on SIGTERM.
#[test]
fn serve_answers_health_checks_and_stops_on_sigterm() {
    let dir = TempDir::new("term");
    let (cluster, ports) = local_cluster(&dir, 1);
    let mut server = Spawned::start(weft(&["serve", "--cluster", &cluster, "--job", "local", "--task", "0"], &dir.0));
    server.expect(Stream::Err, "serving /job:local/task:0", LIMIT);

    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = tokio.block_on(async {
        let check = async {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", ports[0]))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            let req = tonic_health::pb::HealthCheckRequest { service: "weft.v1.TaskService".into() };
            health.check(req).await.unwrap().into_inner().status
        };
        tokio::time::timeout(LIMIT, check).await.expect("health check answers")
    });
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    let pid = server.child.0.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exit = server.wait(LIMIT);
    assert!(exit.success(), "{:#?}", server.seen);
    assert!(server.lines(Stream::Err).contains(&"weft: /job:local/task:0 stopped"), "{:#?}", server.seen);
}

/// `--bind`: a task whose address in the spec this machine cannot listen
/// on (in Kubernetes, a DNS name that resolves to the pod only once it is
/// ready) listens where it is told instead, and answers the overall gRPC
/// health check that Kubernetes' `grpc` probes make. Without it, the
/// error names the address and the task.
#[test]
fn serve_listens_on_bind_instead_of_the_specs_address() {
    let dir = TempDir::new("bind");
    let port = free_ports(1)[0];
    let elsewhere = format!("192.0.2.1:{port}"); // TEST-NET-1: never this machine
    let path = dir.0.join("cluster.json");
    std::fs::write(&path, format!("{{\"ps\": [\"{elsewhere}\"]}}")).unwrap();
    let spec = path.to_str().unwrap();

    let out = crate::process::run(weft(&["serve", "--cluster", spec, "--job", "ps", "--task", "0"], &dir.0), LIMIT);
    assert!(!out.status.success(), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("listening on {elsewhere} for /job:ps/task:0")), "{}", out.stderr);

    let bind = format!("127.0.0.1:{port}");
    let args = ["serve", "--cluster", spec, "--job", "ps", "--task", "0", "--bind", &bind];
    let mut server = Spawned::start(weft(&args, &dir.0));
    server.expect(Stream::Err, &format!("serving /job:ps/task:0 on {bind}"), LIMIT);
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = tokio.block_on(async {
        let check = async {
            let channel =
                tonic::transport::Endpoint::from_shared(format!("http://{bind}")).unwrap().connect().await.unwrap();
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            let req = tonic_health::pb::HealthCheckRequest { service: String::new() };
            health.check(req).await.unwrap().into_inner().status
        };
        tokio::time::timeout(LIMIT, check).await.expect("health check answers")
    });
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    // Without a cluster, --bind means nothing: said so.
    let out = crate::process::run(weft(&["serve", "--bind", &bind], &dir.0), LIMIT);
    assert!(!out.status.success() && out.stderr.contains("--bind need --cluster"), "{}", out.stderr);
}

/// SIGTERM (how Kubernetes stops a pod) stops a running program of a
/// cluster task, which says so, and the process exits.
#[test]
fn run_stops_its_program_on_sigterm() {
    let dir = TempDir::new("run-term");
    let (cluster, _) = local_cluster(&dir, 1);
    let wasm = weft_tests::fixture("misbehave");
    let args =
        ["run", "--cluster", &cluster, "--job", "local", "--task", "0", wasm.to_str().unwrap(), "--", "sleep", "60"];
    let mut program = Spawned::start(weft(&args, &dir.0));
    program.expect(Stream::Out, "sleeping", LIMIT);
    let pid = program.child.0.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exit = program.wait(LIMIT);
    assert_eq!(exit.code(), Some(130), "{:#?}", program.seen);
    assert!(program.lines(Stream::Err).contains(&"weft: interrupted; stopped misbehave.wasm"), "{:#?}", program.seen);
}

/// Bad cluster specs and task choices exit 2 naming the problem.
#[test]
fn bad_cluster_specs_are_named() {
    let dir = TempDir::new("spec");
    let dup = dir.0.join("dup.json");
    std::fs::write(&dup, r#"{"a": ["127.0.0.1:5"], "b": ["127.0.0.1:5"]}"#).unwrap();
    let (cluster, _) = local_cluster(&dir, 2);
    for (args, needle) in [
        (
            vec!["serve", "--cluster", dup.to_str().unwrap(), "--job", "a"],
            "used by both /job:a/task:0 and /job:b/task:0",
        ),
        (vec!["serve", "--cluster", &cluster, "--job", "local", "--task", "2"], "has 2 task(s), so there is no task 2"),
        (vec!["serve", "--cluster", &cluster, "--job", "ps"], "no job 'ps' (jobs: local)"),
        (vec!["serve", "--cluster", &cluster], "pass --job (one of: local)"),
    ] {
        let out = crate::process::run(weft(&args, &dir.0), LIMIT);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
    }
}
