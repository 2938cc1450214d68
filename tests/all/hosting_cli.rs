//! Hosting as a new user tries it, with real `weft` processes: two hosts
//! started with `weft serve --listen`, experiments created from files,
//! modules submitted to them, logs followed, tenants kept apart.

use std::time::Duration;

use weft_tests::{example, fixture};

use crate::process::{Finished, Spawned, Stream, TempDir, free_ports, open_hosts, run, weft};

const LIMIT: Duration = Duration::from_secs(90);

struct Tenant {
    name: &'static str,
    token: String,
}

impl Tenant {
    fn new(name: &'static str) -> Self {
        Tenant { name, token: format!("{name}-secret-token-0123456789") }
    }

    /// `weft VERB --host HOST --experiment NAME --token TOKEN REST...`.
    fn weft(&self, dir: &TempDir, verb: &str, host: &str, rest: &[&str]) -> Finished {
        let mut args = vec![verb, "--host", host, "--experiment", self.name, "--token", &self.token];
        args.extend_from_slice(rest);
        run(weft(&args, &dir.0), LIMIT)
    }

    fn submit(&self, dir: &TempDir, host: &str, job: &str, task: &str, module: &str, args: &[&str]) -> u64 {
        let mut rest = vec!["--job", job, "--task", task, module, "--"];
        rest.extend_from_slice(args);
        let out = self.weft(dir, "submit", host, &rest);
        assert!(out.status.success(), "{}", out.stderr);
        out.stdout.trim().parse().expect("submit prints the program id")
    }
}

fn experiment_file(dir: &TempDir, tenant: &Tenant, hosts: &[String], limits: &str) -> String {
    let path = dir.0.join(format!("{}.toml", tenant.name));
    let text = format!(
        "name = \"{}\"\ntoken = \"{}\"\n\n[cluster]\nps = [\"{h0}\"]\nworker = [\"{h0}\", \"{h1}\"]\n\n[limits]\n{limits}\n",
        tenant.name,
        tenant.token,
        h0 = hosts[0],
        h1 = hosts[1]
    );
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn two_tenants_share_two_hosts_while_a_hostile_one_is_stopped() {
    let dir = TempDir::new("hosting");
    let (hosts, mut servers) = open_hosts(2, &dir.0, LIMIT);
    let (alice, bob, mallory) = (Tenant::new("alice"), Tenant::new("bob"), Tenant::new("mallory"));
    for (t, limits) in [(&alice, ""), (&bob, ""), (&mallory, "cpu_seconds = 1.0\nmemory_mib = 32")] {
        let file = experiment_file(&dir, t, &hosts, limits);
        let out = run(weft(&["experiment", "create", &file], &dir.0), LIMIT);
        assert!(out.status.success(), "{}", out.stderr);
        assert!(
            out.stdout.contains(&format!("created experiment '{}' on {} (ps:0, worker:0)", t.name, hosts[0])),
            "{}",
            out.stdout
        );
    }

    let ps = example("parameter-server");
    let ps = ps.to_str().unwrap();
    let mut ids = Vec::new();
    for t in [&alice, &bob] {
        let p = t.submit(&dir, &hosts[0], "ps", "0", ps, &["100"]);
        let w0 = t.submit(&dir, &hosts[0], "worker", "0", ps, &["100"]);
        let w1 = t.submit(&dir, &hosts[1], "worker", "1", ps, &["100"]);
        ids.push((p, w0, w1));
    }
    // Meanwhile a hostile program spins on the first host.
    let bad = fixture("misbehave");
    let hostile =
        mallory.weft(&dir, "submit", &hosts[0], &["--follow", "--job", "ps", bad.to_str().unwrap(), "--", "loop"]);
    assert_eq!(hostile.status.code(), Some(1), "{}", hostile.stderr);
    assert!(hostile.stdout.contains("looping forever"), "{}", hostile.stdout);
    assert!(
        hostile.stderr.contains("resource-exhausted") && hostile.stderr.contains("cpu-time limit"),
        "{}",
        hostile.stderr
    );

    for (t, (p, _, w1)) in [&alice, &bob].into_iter().zip(&ids) {
        let story = t.weft(&dir, "logs", &hosts[0], &["-f", &p.to_string()]);
        assert!(story.status.success(), "{}", story.stderr);
        assert!(story.stdout.contains("Parameter server: variables initialized"), "{}", story.stdout);
        assert!(story.stdout.contains("Parameter server: final value of var: 10.0"), "{}: {}", t.name, story.stdout);
        let worker = t.weft(&dir, "logs", &hosts[1], &["-f", &w1.to_string()]);
        assert!(worker.status.success() && worker.stdout.contains("Worker 1: done"), "{}", worker.stdout);
        let listing = t.weft(&dir, "ps", &hosts[0], &[]);
        assert_eq!(listing.stdout.matches("succeeded").count(), 2, "{}", listing.stdout);
        assert!(listing.stdout.lines().next().is_some_and(|h| h.contains(" CPU ")), "{}", listing.stdout);
    }

    // Tenants cannot reach each other, and nothing changes when they try.
    let forged = Tenant { name: "alice", token: bob.token.clone() };
    let denied = forged.weft(&dir, "ps", &hosts[0], &[]);
    assert_eq!(denied.status.code(), Some(2));
    assert!(denied.stderr.contains("permission-denied") && denied.stderr.contains("'alice'"), "{}", denied.stderr);
    let alice_ps = ids[0].0.to_string();
    let denied = mallory.weft(&dir, "kill", &hosts[0], &[&alice_ps]);
    assert!(denied.stderr.contains("permission-denied: program"), "{}", denied.stderr);
    let denied = mallory.weft(&dir, "logs", &hosts[0], &[&alice_ps]);
    assert!(denied.stderr.contains("permission-denied"), "{}", denied.stderr);
    let story = alice.weft(&dir, "logs", &hosts[0], &[&alice_ps]);
    assert!(story.stdout.contains("final value of var: 10.0"), "{}", story.stdout);

    let list = run(
        weft(&["experiment", "list", "--host", &hosts[0], "--experiment", "alice", "--token", &alice.token], &dir.0),
        LIMIT,
    );
    assert!(list.stdout.contains("alice") && !list.stdout.contains("bob"), "{}", list.stdout);
    assert!(list.stdout.lines().next().is_some_and(|h| h.ends_with(" CPU")), "{}", list.stdout);

    let mallory_file = dir.0.join("mallory.toml");
    let deleted = run(weft(&["experiment", "delete", mallory_file.to_str().unwrap()], &dir.0), LIMIT);
    assert!(deleted.status.success(), "{}", deleted.stderr);
    assert_eq!(deleted.stdout.matches("deleted experiment 'mallory'").count(), 2, "{}", deleted.stdout);

    // Compiled modules are on disk; a restarted host loads them from there.
    let cached = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "cwasm"));
    assert_eq!(cached.count(), 2, "parameter_server and misbehave");
    drop(servers.remove(0));
    let mut again = weft(&["serve", "--listen", &hosts[0], "--open-experiments", "--allow-peers", "127.0.0.1"], &dir.0);
    again.env("RUST_LOG", "weft_host=info");
    let mut again = Spawned::start(again);
    again.expect(Stream::Err, "serving experiments on", LIMIT);
    let carol = Tenant::new("carol");
    let file = experiment_file(&dir, &carol, &[hosts[0].clone(), hosts[0].clone()], "");
    assert!(run(weft(&["experiment", "create", &file], &dir.0), LIMIT).status.success());
    let out = carol.weft(&dir, "submit", &hosts[0], &["--follow", "--job", "ps", bad.to_str().unwrap(), "--", "ok"]);
    assert!(out.status.success() && out.stdout.contains("fine"), "{}", out.stderr);
    let ready = again.expect(Stream::Err, "module ready", LIMIT);
    assert!(ready.contains("source=Cache"), "{ready}");
}

/// The same story over TLS: clients and host-to-host traffic alike. A
/// client that does not speak TLS, or does not trust the hosts' CA, gets a
/// clear error and changes nothing.
#[test]
fn hosts_serve_tls_to_clients_and_to_each_other() {
    let dir = TempDir::new("tls");
    let tls = weft_tests::workspace_root().join("tests/tls");
    let (cert, key, ca) = (tls.join("host.pem"), tls.join("host.key"), tls.join("ca.pem"));
    let (cert, key, ca) = (cert.to_str().unwrap(), key.to_str().unwrap(), ca.to_str().unwrap());
    let hosts: Vec<String> = free_ports(2).iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut servers: Vec<Spawned> = hosts
        .iter()
        .map(|h| {
            let args =
                ["serve", "--listen", h, "--open-experiments", "--tls-cert", cert, "--tls-key", key, "--tls-ca", ca];
            Spawned::start(weft(&args, &dir.0))
        })
        .collect();
    for s in &mut servers {
        s.expect(Stream::Err, "serving experiments on", LIMIT);
    }
    let alice = Tenant::new("alice");
    let file = experiment_file(&dir, &alice, &hosts, "");
    let plaintext = run(weft(&["experiment", "create", &file], &dir.0), LIMIT);
    assert_eq!(plaintext.status.code(), Some(2), "{}", plaintext.stdout);
    assert!(plaintext.stderr.contains("if the host serves TLS, pass --tls-ca"), "{}", plaintext.stderr);
    let created = run(weft(&["experiment", "create", &file, "--tls-ca", ca], &dir.0), LIMIT);
    assert!(created.status.success(), "{}", created.stderr);

    let ps = example("parameter-server");
    let ps = ps.to_str().unwrap();
    let with_tls = |host: &str, job: &str, task: &str| {
        let rest = ["--tls-ca", ca, "--job", job, "--task", task, ps, "--", "50"];
        let out = alice.weft(&dir, "submit", host, &rest);
        assert!(out.status.success(), "{}", out.stderr);
        out.stdout.trim().to_string()
    };
    let p = with_tls(&hosts[0], "ps", "0");
    with_tls(&hosts[0], "worker", "0");
    with_tls(&hosts[1], "worker", "1");
    let story = alice.weft(&dir, "logs", &hosts[0], &["--tls-ca", ca, "-f", &p]);
    assert!(story.status.success(), "{}", story.stderr);
    assert!(story.stdout.contains("Parameter server: final value of var: 10.0"), "{}", story.stdout);

    // Trusting the wrong CA (the host's own leaf is not a CA) fails to connect.
    let distrust = alice.weft(&dir, "ps", &hosts[0], &["--tls-ca", cert]);
    assert_eq!(distrust.status.code(), Some(2), "{}", distrust.stdout);
    assert!(distrust.stderr.contains("cannot reach host"), "{}", distrust.stderr);
}

/// With `--state-dir`, a restarted host still has its experiments, their
/// tokens and their modules: a submit after the restart needs no upload.
/// Deleting removes them for good.
#[test]
fn a_host_with_a_state_dir_keeps_experiments_across_restarts() {
    let dir = TempDir::new("state");
    let state = dir.0.join("state");
    let host = free_ports(1).iter().map(|p| format!("127.0.0.1:{p}")).next().unwrap();
    let serve = || {
        let mut cmd =
            weft(&["serve", "--listen", &host, "--open-experiments", "--state-dir", state.to_str().unwrap()], &dir.0);
        cmd.env("RUST_LOG", "weft_host=info");
        let mut s = Spawned::start(cmd);
        s.expect(Stream::Err, "serving experiments on", LIMIT);
        s
    };
    let mut first = serve();
    let dora = Tenant::new("dora");
    let file = experiment_file(&dir, &dora, &[host.clone(), host.clone()], "programs = 4");
    assert!(run(weft(&["experiment", "create", &file], &dir.0), LIMIT).status.success());
    let bad = fixture("misbehave");
    let module = bad.to_str().unwrap();
    let out = dora.weft(&dir, "submit", &host, &["--follow", "--job", "worker", module, "--", "ok"]);
    assert!(out.status.success() && out.stdout.contains("fine"), "{}", out.stderr);
    first.expect(Stream::Err, "module ready", LIMIT);
    drop(first);

    // It restores before it serves.
    let second = serve();
    let restored = second.lines(Stream::Err).into_iter().find(|l| l.contains("restored"));
    assert!(restored.is_some_and(|l| l.contains("dora") && l.contains("modules=1")), "{:#?}", second.seen);
    let listing = dora.weft(&dir, "ps", &host, &[]);
    assert!(listing.status.success(), "the same token works: {}", listing.stderr);
    let out = dora.weft(&dir, "submit", &host, &["--follow", "--job", "worker", module, "--", "ok"]);
    assert!(out.status.success() && out.stdout.contains("fine"), "{}", out.stderr);
    let wrong = Tenant { name: "dora", token: "not-dora-token-0123456789".into() };
    assert!(wrong.weft(&dir, "ps", &host, &[]).stderr.contains("permission-denied"));

    let deleted = run(weft(&["experiment", "delete", &file], &dir.0), LIMIT);
    assert!(deleted.status.success(), "{}", deleted.stderr);
    drop(second);
    let _third = serve();
    let gone = dora.weft(&dir, "ps", &host, &[]);
    // Its token no longer opens anything (nor tells that it is gone).
    assert!(gone.stderr.contains("the token is not valid for experiment 'dora'"), "{}", gone.stderr);
    let kept: Vec<_> = std::fs::read_dir(state.join("modules")).unwrap().collect();
    assert!(kept.is_empty(), "modules of deleted experiments are deleted too");
}
