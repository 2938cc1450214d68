//! A cluster of machines: each `weft` host in its own Linux network
//! namespace (its own network stack, interface and address), the hosts
//! joined by veth pairs to a bridge in a "switch" namespace, so every byte
//! between them crosses a network link and nothing is shared through
//! loopback or abstract Unix sockets (shared memory needs the latter, so it
//! is not used). Taking a host's link down is pulling its cable.
//!
//! Needs root and `ip` (iproute2): elsewhere each test says why it is
//! skipped and passes. As root with `ip`, a network that cannot be set up
//! fails the test, saying why.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use weft_tests::example;

use crate::process::{Spawned, Stream, TempDir};

const LIMIT: Duration = Duration::from_secs(120);
/// The hosts' subnet, inside the test's own namespaces (so it cannot clash
/// with the machine's networks).
const SUBNET: &str = "10.250.0";
const PORT: u16 = 2222;

/// Runs `ip ARGS`, returning its stderr on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Namespaces `<prefix>sw` (the switch) and one per host, removed (with
/// their links) when dropped. Drop it after the processes in it.
struct Network {
    prefix: String,
    hosts: Vec<String>,
}

impl Network {
    /// A switch and `hosts` machines on it, host i at `10.250.0.(i+1)`; or
    /// why this machine cannot have them.
    fn new(hosts: usize) -> Result<Network, String> {
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| l.strip_prefix("Uid:").map(|r| r.split_whitespace().next().map(str::to_string)))
            })
            .flatten();
        if uid.as_deref() != Some("0") {
            return Err(format!("network namespaces need root; this test runs as uid {}", uid.unwrap_or_default()));
        }
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("weft{}-{n}-", std::process::id());
        let mut net = Network { prefix, hosts: Vec::new() };
        let switch = net.switch();
        ip(&["netns", "add", &switch])?;
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for i in 0..hosts {
            let ns = format!("{}h{i}", net.prefix);
            ip(&["netns", "add", &ns])?;
            net.hosts.push(ns.clone());
            let port = format!("p{i}");
            ip(&["link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port, "netns", &switch])?;
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", net.address(i)), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn switch(&self) -> String {
        format!("{}sw", self.prefix)
    }

    /// Host i's IP address.
    fn address(&self, i: usize) -> String {
        format!("{SUBNET}.{}", i + 1)
    }

    /// `weft ARGS...` on host i (private module cache in `cache`).
    fn weft(&self, i: usize, args: &[&str], cache: &Path) -> Command {
        let mut cmd = crate::process::weft(args, cache);
        let mut in_ns = Command::new("ip");
        // `ip netns exec` execs the program: the child's handle is weft's own.
        in_ns.args(["netns", "exec", &self.hosts[i], cmd.get_program().to_str().unwrap()]).args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(v) => in_ns.env(key, v),
                None => in_ns.env_remove(key),
            };
        }
        cmd = in_ns;
        cmd
    }

    /// Takes host i's cable out of the switch (`up: false`) or puts it back.
    fn link(&self, i: usize, up: bool) {
        ip(&["-n", &self.switch(), "link", "set", &format!("p{i}"), if up { "up" } else { "down" }]).unwrap();
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.switch())) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Why this machine cannot make network namespaces, if it cannot: not
/// root, or no `ip`.
fn cannot() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:")?.split_whitespace().next().map(str::to_string)));
    if uid.as_deref() != Some("0") {
        return Some(format!("network namespaces need root; this test runs as uid {}", uid.unwrap_or_default()));
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => None,
        _ => Some("no `ip` command (iproute2) on this machine".to_string()),
    }
}

/// The network, or `None` after saying plainly why this machine cannot
/// have one.
fn network(hosts: usize) -> Option<Network> {
    if let Some(why) = cannot() {
        eprintln!("SKIPPED (no network namespaces here): {why}");
        return None;
    }
    Some(Network::new(hosts).unwrap_or_else(|e| panic!("setting up the network namespaces: {e}")))
}

/// A cluster spec of ps 0 on host 0 and workers on hosts 1 and 2, written to `dir`.
fn cluster_file(net: &Network, dir: &Path) -> String {
    let at = |i: usize| format!("\"{}:{PORT}\"", net.address(i));
    let path = dir.join("cluster.json");
    std::fs::write(&path, format!("{{\"ps\": [{}], \"worker\": [{}, {}]}}", at(0), at(1), at(2))).unwrap();
    path.to_str().unwrap().to_string()
}

/// The seed's S9 with every task a `weft run` on its own machine: the
/// workers' increments reach the ps across the network, and the ps reads
/// 10.0 at the end.
#[test]
fn s9_parameter_server_across_network_namespaces() {
    let Some(net) = network(3) else { return };
    let dir = TempDir::new("netns-s9");
    let cluster = cluster_file(&net, &dir.0);
    let wasm = example("parameter-server");
    let module = wasm.to_str().unwrap();
    let task = |i: usize, job: &str, index: &str| {
        Spawned::start(net.weft(
            i,
            &["run", "--cluster", &cluster, "--job", job, "--task", index, module, "--", "50"],
            &dir.0,
        ))
    };
    let mut tasks = [task(0, "ps", "0"), task(1, "worker", "0"), task(2, "worker", "1")];
    for t in &mut tasks {
        let status = t.wait(LIMIT);
        assert!(status.success(), "{:#?}", t.seen);
    }
    assert!(
        tasks[0].lines(Stream::Out).contains(&"Parameter server: final value of var: 10.0"),
        "{:#?}",
        tasks[0].seen
    );
    for (i, t) in tasks[1..].iter().enumerate() {
        assert_eq!(
            t.lines(Stream::Out).iter().filter(|l| l.starts_with(&format!("Worker {i}: incrementing var"))).count(),
            5
        );
    }
}

/// Parameter-server training across three machines; the ps's cable is
/// pulled mid-run: each worker's step fails `unavailable` naming the ps,
/// its training session waits, and once the cable is back both workers
/// train to their step budget and a low loss, and every update of both
/// reached the ps.
#[test]
fn training_survives_a_pulled_cable_to_the_ps() {
    let Some(net) = network(3) else { return };
    let dir = TempDir::new("netns-train");
    let cluster = cluster_file(&net, &dir.0);
    let wasm = example("ps-linear-regression");
    let module = wasm.to_str().unwrap();
    let args = ["0.0", "3000", "20", "64"];
    let mut ps = Spawned::start(net.weft(
        0,
        &[&["run", "--cluster", &cluster, "--job", "ps", "--task", "0", module, "--"][..], &args].concat(),
        &dir.0,
    ));
    let worker = |i: usize| {
        let index = (i - 1).to_string();
        let argv =
            [&["run", "--cluster", &cluster, "--job", "worker", "--task", &index, module, "--"][..], &args].concat();
        let mut cmd = net.weft(i, &argv, &dir.0);
        // A silent peer fails a step after 2 s rather than the default 10.
        cmd.env("WEFT_PEER_TIMEOUT", "2");
        Spawned::start(cmd)
    };
    let mut workers = [worker(1), worker(2)];
    workers[0].expect(Stream::Out, "step 40:", LIMIT);
    net.link(0, false);
    for w in &mut workers {
        let line = w.expect(Stream::Out, "TrainingSession: waiting for a task to come back", LIMIT);
        assert!(line.contains("unavailable") && line.contains("/job:ps/task:0"), "{line}");
    }
    net.link(0, true);
    for w in &mut workers {
        let status = w.wait(LIMIT);
        assert!(status.success(), "{:#?}", w.seen);
        let out = w.lines(Stream::Out).join("\n");
        assert!(out.contains("stopped at the step budget (3000 steps)"), "{out}");
        let loss: f32 =
            out.rsplit("eval loss ").next().and_then(|r| r.split([' ', ',']).next()).unwrap().parse().unwrap();
        assert!(loss < 0.05, "training went on after the outage: {out}");
    }
    // Every update of both workers reached the ps (a step retried after
    // the outage may have been applied twice, never zero times).
    let status = ps.wait(LIMIT);
    assert!(status.success(), "{:#?}", ps.seen);
    let lines = ps.lines(Stream::Out);
    let done =
        lines.iter().find(|l| l.starts_with("Parameter server: training done after ")).expect("the ps's summary");
    let updates: u64 = done.split("after ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
    assert!(updates >= 6000, "{done}");
}
