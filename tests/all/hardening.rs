//! A shared host that no tenant can bring down (issue 9), attacked from
//! outside: real `weft serve --listen` processes and hostile programs
//! submitted to them as a tenant would, checking that the attacker gets an
//! error naming the limit and the host and the other tenants carry on.

use std::time::Duration;

use weft_tests::fixture;

use crate::process::{Spawned, Stream, TempDir, free_ports, run, weft};

const LIMIT: Duration = Duration::from_secs(90);

/// The host's peak resident memory so far, in MB (`VmHWM`).
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kb / 1000.0
}

fn create(dir: &TempDir, host: &str, name: &str, limits: &str) -> String {
    let token = format!("{name}-secret-token-0123456789");
    let file = dir.0.join(format!("{name}.toml"));
    let text =
        format!("name = \"{name}\"\ntoken = \"{token}\"\n\n[cluster]\nlocal = [\"{host}\"]\n\n[limits]\n{limits}\n");
    std::fs::write(&file, text).unwrap();
    let out = run(weft(&["experiment", "create", file.to_str().unwrap()], &dir.0), LIMIT);
    assert!(out.status.success(), "{}", out.stderr);
    token
}

/// The attack of issue 9: two zero-size constants, tiny on the wire, whose
/// MatMul is 30000 x 30000 floats (3.6 GB). Before, the host allocated it.
#[test]
fn a_matmul_of_zero_size_constants_fails_with_a_named_limit_and_the_host_stays_small() {
    let dir = TempDir::new("hardening-matmul");
    let host = format!("127.0.0.1:{}", free_ports(1)[0]);
    let mut server = Spawned::start(weft(&["serve", "--listen", &host], &dir.0));
    server.expect(Stream::Err, "serving experiments on", LIMIT);
    let mallory = create(&dir, &host, "mallory", "memory_mib = 128");
    let alice = create(&dir, &host, "alice", "");
    let bad = fixture("misbehave");
    let submit = |name: &str, token: &str, args: &[&str]| {
        let mut all = vec!["submit", "--host", &host, "--experiment", name, "--token", token, "--follow"];
        all.extend_from_slice(&["--job", "local", bad.to_str().unwrap(), "--"]);
        all.extend_from_slice(args);
        run(weft(&all, &dir.0), LIMIT)
    };

    let out = submit("mallory", &mallory, &["zero-size-matmul", "30000"]);
    assert_eq!(out.status.code(), Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(!out.stdout.contains("computed"), "{}", out.stdout);
    for needle in ["resource-exhausted", "tensor-bytes limit", "op 'MatMul' (MatMul)", "3600000000 more bytes"] {
        assert!(out.stderr.contains(needle), "missing '{needle}' in {}", out.stderr);
    }
    // Past the per-tensor element cap, the error says so instead.
    let out = submit("mallory", &mallory, &["zero-size-matmul", "100000"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("MatMul") && out.stderr.contains("more than 1073741824 elements"), "{}", out.stderr);

    let peak = peak_rss_mb(server.child.0.id());
    assert!(peak < 200.0, "the host's peak resident memory reached {peak} MB");
    // The host carries on, for the attacker within its limits and for others.
    let out = submit("mallory", &mallory, &["zero-size-matmul", "1000"]);
    assert!(out.status.success() && out.stdout.contains("computed [1000, 1000]"), "{}", out.stderr);
    let out = submit("alice", &alice, &["ok"]);
    assert!(out.status.success() && out.stdout.contains("fine"), "{}", out.stderr);
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig} {pid}");
}

/// Issue 9's frozen peer: a ps process stopped with SIGSTOP makes a run
/// that has no session timeout fail `unavailable`, naming the task, within
/// a bound set by the peer timeout; after SIGCONT the same session works.
#[test]
fn a_stopped_peer_fails_a_run_without_a_timeout_and_the_session_works_once_it_resumes() {
    use crate::data_plane::{big_variable, fetch, initialize, master, ps_process, runtime};
    use std::sync::Arc;
    use weft_host::error::Code;
    use weft_host::rpc::GrpcRemote;
    use weft_host::tensor::Tensor;

    let cluster = ps_process("frozen-peer", &[]);
    let pid = cluster.ps.child.0.id();
    let peer_timeout = Duration::from_secs(2);
    runtime().block_on(async {
        let remote = Arc::new(GrpcRemote::new(cluster.spec.clone()).with_peer_timeout(peer_timeout));
        let mut session = master(&cluster.spec, &remote);
        let v = big_variable("frozen", &[4]);
        initialize(&mut session, &v, 3.0).await;
        let threes = Tensor::from_f32(&[4], vec![3.0; 4]).unwrap();
        assert_eq!(fetch(&mut session, &v).await.unwrap(), threes);

        signal(pid, "-STOP");
        let started = std::time::Instant::now();
        let err = fetch(&mut session, &v).await.unwrap_err();
        let waited = started.elapsed();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        assert!(err.to_string().contains("task /job:ps/task:0 at 127.0.0.1:"), "{err}");
        assert!(err.to_string().contains("keep-alive timed out"), "{err}");
        // Keepalive (half the timeout between pings, half to answer), with
        // room for a loaded machine; far below the run's own 60 s guard.
        assert!(waited < peer_timeout * 10, "the run took {waited:?} to fail");
        // A second run while it is still stopped fails the same way: the
        // new connection's status call is bounded too.
        let err = fetch(&mut session, &v).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        assert!(err.to_string().contains("no answer within 2s"), "{err}");

        signal(pid, "-CONT");
        assert_eq!(fetch(&mut session, &v).await.unwrap(), threes, "the same session works again");
    });
}
