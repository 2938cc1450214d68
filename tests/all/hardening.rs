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
