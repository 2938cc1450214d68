//! `/metrics` as an operator scrapes it: real `weft` processes started with
//! `--metrics`, read over plain HTTP while a cluster trains, and on a
//! shared host while an experiment's programs run and after it is deleted.

use std::io::{Read, Write};
use std::time::Duration;

use weft_tests::example;

use crate::process::{Spawned, Stream, TempDir, free_ports, run, weft};

const LIMIT: Duration = Duration::from_secs(90);

/// `GET path` from `address`: the status line, and the headers and body.
fn http_get(address: &str, path: &str) -> (String, String) {
    let mut conn = std::net::TcpStream::connect(address).expect("the metrics port answers");
    conn.set_read_timeout(Some(LIMIT)).unwrap();
    write!(conn, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    let (status, rest) = text.split_once("\r\n").unwrap_or((&text, ""));
    (status.to_string(), rest.to_string())
}

/// The address a process printed for its metrics (`--metrics 127.0.0.1:0`).
fn metrics_address(process: &mut Spawned) -> String {
    let line = process.expect(Stream::Err, "metrics on http://", LIMIT);
    line.split("http://").nth(1).and_then(|r| r.strip_suffix("/metrics")).expect("an address").to_string()
}

/// A 200 scrape of `/metrics` at `address`, in OpenMetrics text.
fn scrape(address: &str) -> String {
    let (status, response) = http_get(address, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{response}");
    assert!(response.to_lowercase().contains("content-type: application/openmetrics-text"), "{response}");
    assert!(response.trim_end().ends_with("# EOF"), "{response}");
    response
}

/// The value of the series `name{labels}` exactly, if the scrape has it.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn cluster_file(dir: &TempDir, ports: &[u16]) -> String {
    let path = dir.0.join("cluster.json");
    let at = |p: u16| format!("\"127.0.0.1:{p}\"");
    std::fs::write(&path, format!("{{\"ps\": [{}], \"worker\": [{}, {}]}}", at(ports[0]), at(ports[1]), at(ports[2])))
        .unwrap();
    path.to_str().unwrap().to_string()
}

/// A ps (`weft serve`) and two workers (`weft run`) train; the ps's and a
/// worker's `/metrics` show the RPCs the ps answered with their latencies,
/// the ps's variable bytes, the worker's steps, its bytes to and from the
/// ps, and its program running.
#[test]
fn cluster_hosts_show_rpcs_variables_steps_and_peer_bytes_while_training() {
    let dir = TempDir::new("metrics");
    let ports = free_ports(3);
    let cluster = cluster_file(&dir, &ports);
    let serve = ["serve", "--cluster", &cluster, "--job", "ps", "--task", "0", "--metrics", "127.0.0.1:0"];
    let mut ps = Spawned::start(weft(&serve, &dir.0));
    let ps_metrics = metrics_address(&mut ps);
    let wasm = example("ps-linear-regression");
    let module = wasm.to_str().unwrap();
    let worker = |i: &str, extra: &[&str]| {
        let argv = [
            &["run", "--cluster", &cluster, "--job", "worker", "--task", i][..],
            extra,
            &[module, "--"][..],
            &["0.0", "100000", "20", "64"],
        ]
        .concat();
        Spawned::start(weft(&argv, &dir.0))
    };
    let mut w0 = worker("0", &["--metrics", "127.0.0.1:0"]);
    let w0_metrics = metrics_address(&mut w0);
    let _w1 = worker("1", &[]);
    w0.expect(Stream::Out, "step 40:", LIMIT);

    let text = scrape(&ps_metrics);
    let run_partition = r#"{service="weft.v1.TaskService",method="RunPartition""#;
    let ok_calls = sample(&text, &format!("weft_rpc_server_calls_total{run_partition},code=\"OK\"}}")).unwrap_or(0.0);
    assert!(ok_calls >= 40.0, "{text}");
    let answered = sample(&text, &format!("weft_rpc_server_seconds_count{run_partition}}}")).unwrap();
    assert!(answered >= ok_calls, "{text}");
    // 14 bounds and +Inf, counts rising to the calls answered.
    let labels = &run_partition[1..];
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("weft_rpc_server_seconds_bucket{le=") && l.contains(&format!(",{labels}}} ")))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 15, "{text}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]) && buckets[14] == answered, "{text}");
    // W (64x64), b (64) and the counters live on the ps.
    let ps_vars = sample(&text, r#"weft_variable_bytes{experiment="",task="/job:ps/task:0"}"#).unwrap();
    assert!(ps_vars >= (64.0 * 64.0 + 64.0) * 4.0, "{text}");
    assert!(text.contains("# TYPE weft_programs gauge"), "{text}");

    let text = scrape(&w0_metrics);
    let steps = sample(&text, r#"weft_steps_total{experiment="",task="/job:worker/task:0"}"#).unwrap();
    assert!(steps >= 40.0, "{text}");
    assert_eq!(sample(&text, r#"weft_programs{experiment="",state="running"}"#), Some(1.0), "{text}");
    let peer =
        format!(r#"weft_peer_bytes_total{{experiment="",peer="/job:ps/task:0",address="127.0.0.1:{}""#, ports[0]);
    let moved = |direction: &str| -> f64 {
        ["grpc", "shm"]
            .iter()
            .map(|path| sample(&text, &format!("{peer},direction=\"{direction}\",path=\"{path}\"}}")).unwrap())
            .sum()
    };
    // Every step sends a batch-sized gradient's worth at least, and reads back losses.
    assert!(moved("sent") > 0.0 && moved("received") > 0.0, "{text}");

    let (status, _) = http_get(&w0_metrics, "/elsewhere");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}

/// A shared host's `/metrics` shows each experiment's programs by state,
/// CPU time, steps and variable bytes; a deleted experiment's series go.
#[test]
fn a_shared_host_shows_each_experiments_usage_until_it_is_deleted() {
    let dir = TempDir::new("metrics-hosting");
    let host = format!("127.0.0.1:{}", free_ports(1)[0]);
    let argv = ["serve", "--listen", &host, "--open-experiments", "--metrics", "127.0.0.1:0"];
    let mut server = Spawned::start(weft(&argv, &dir.0));
    server.expect(Stream::Err, "serving experiments on", LIMIT);
    let address = metrics_address(&mut server);
    let file = dir.0.join("erin.toml");
    let token = "erin-secret-token-0123456789";
    std::fs::write(
        &file,
        format!("name = \"erin\"\ntoken = \"{token}\"\n\n[cluster]\nps = [\"{host}\"]\nworker = [\"{host}\"]\n"),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let created = run(weft(&["experiment", "create", file], &dir.0), LIMIT);
    assert!(created.status.success(), "{}", created.stderr);
    let text = scrape(&address);
    assert_eq!(sample(&text, "weft_experiments"), Some(1.0), "{text}");

    let wasm = example("parameter-server");
    let module = wasm.to_str().unwrap();
    let as_erin = |verb: &str, rest: &[&str]| {
        let argv = [&[verb, "--host", &host, "--experiment", "erin", "--token", token][..], rest].concat();
        run(weft(&argv, &dir.0), LIMIT)
    };
    let ps = as_erin("submit", &["--job", "ps", module, "--", "20"]);
    assert!(ps.status.success(), "{}", ps.stderr);
    let worker = as_erin("submit", &["--follow", "--job", "worker", module, "--", "20"]);
    assert!(worker.status.success() && worker.stdout.contains("Worker 0: done"), "{}", worker.stderr);
    let ps_log = as_erin("logs", &["--follow", ps.stdout.trim()]);
    assert!(ps_log.stdout.contains("final value of var: 5.0"), "{}", ps_log.stdout);

    let text = scrape(&address);
    assert_eq!(sample(&text, r#"weft_programs{experiment="erin",state="succeeded"}"#), Some(2.0), "{text}");
    assert!(sample(&text, r#"weft_experiment_cpu_seconds_total{experiment="erin"}"#).unwrap() > 0.0, "{text}");
    // The worker ran its initializer check, five increments and its "done".
    assert!(
        sample(&text, r#"weft_steps_total{experiment="erin",task="/job:worker/task:0"}"#).unwrap() >= 6.0,
        "{text}"
    );
    // var and workers_done: two f32 scalars on the ps.
    assert_eq!(sample(&text, r#"weft_variable_bytes{experiment="erin",task="/job:ps/task:0"}"#), Some(8.0), "{text}");
    let control = r#"weft_rpc_server_calls_total{service="weft.v1.ControlService",method="StartProgram",code="OK"}"#;
    assert_eq!(sample(&text, control), Some(2.0), "{text}");
    // A refused call is counted under its own code.
    let argv = ["ps", "--host", &host, "--experiment", "erin", "--token", "not-erins-token-0123456789"];
    assert!(!run(weft(&argv, &dir.0), LIMIT).status.success());
    let text = scrape(&address);
    let refused = r#"weft_rpc_server_calls_total{service="weft.v1.ControlService",method="ListPrograms",code="PermissionDenied"}"#;
    assert_eq!(sample(&text, refused), Some(1.0), "{text}");

    let deleted = run(weft(&["experiment", "delete", file], &dir.0), LIMIT);
    assert!(deleted.status.success(), "{}", deleted.stderr);
    let text = scrape(&address);
    assert_eq!(sample(&text, "weft_experiments"), Some(0.0), "{text}");
    assert!(!text.contains("experiment=\"erin\""), "{text}");
}

/// Every stderr line of `process` so far, each parsed as a JSON object
/// (panics on a line that is not one).
fn json_lines(process: &Spawned) -> Vec<serde_json::Value> {
    process
        .lines(Stream::Err)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect()
}

fn says(events: &[serde_json::Value], level: &str, text: &str) -> bool {
    events.iter().any(|e| {
        e["level"] == level
            && e["target"] == "weft"
            && e["fields"]["message"].as_str().is_some_and(|m| m.contains(text))
    })
}

/// `--log-format json`: a server's and a failing program's status lines
/// are JSON objects a log collector reads (level, target, message), and
/// the program's own output is passed through as it wrote it.
#[test]
fn log_format_json_makes_every_status_line_a_json_object() {
    let dir = TempDir::new("jsonlog");
    let cluster = cluster_file(&dir, &free_ports(3));
    let argv = ["--log-format", "json", "serve", "--cluster", &cluster, "--job", "ps", "--task", "0"];
    let mut ps = Spawned::start(weft(&argv, &dir.0));
    ps.expect(Stream::Err, "serving /job:ps/task:0", LIMIT);
    let pid = ps.child.0.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(ps.wait(LIMIT).success(), "{:#?}", ps.seen);
    let events = json_lines(&ps);
    assert!(says(&events, "INFO", "serving /job:ps/task:0 on 127.0.0.1:"), "{events:#?}");
    assert!(says(&events, "INFO", "/job:ps/task:0 stopped"), "{events:#?}");

    let bad = weft_tests::fixture("misbehave");
    let failed = run(weft(&["run", "--log-format", "json", bad.to_str().unwrap(), "--", "error"], &dir.0), LIMIT);
    assert_eq!(failed.status.code(), Some(1), "{}", failed.stderr);
    let events: Vec<serde_json::Value> =
        failed.stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert!(says(&events, "ERROR", "the worker returned an error"), "{events:#?}");
    let fine = run(weft(&["run", "--log-format", "json", bad.to_str().unwrap(), "--", "ok"], &dir.0), LIMIT);
    assert!(fine.status.success(), "{}", fine.stderr);
    assert_eq!(fine.stdout, "fine\n");
}
