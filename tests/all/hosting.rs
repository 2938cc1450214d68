//! Hosting on a real gRPC host in this process: uploads, credentials,
//! tenants side by side, and sandbox limits. After every bad input the host
//! still serves and other experiments' programs and variables are untouched.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use weft_host::cluster::TaskId;
use weft_host::hosting::{ControlClient, EffectiveLimits, Hosting, HostingConfig};
use weft_host::rpc::pb::{self, control_service_client::ControlServiceClient, task_service_client::TaskServiceClient};
use weft_host::rpc::{Credentials, status_from_error};
use weft_host::runtime::{RuntimeConfig, module_hash};
use weft_host::server::{HostServices, serve_host};
use weft_tests::{example, fixture};

const LIMIT: Duration = Duration::from_secs(90);

/// Runs a test body on a multi-threaded runtime, failing it after [`LIMIT`].
fn run_test<F: Future<Output = ()>>(body: F) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async { tokio::time::timeout(LIMIT, body).await.expect("test finished in time") });
}

/// A host serving experiments only, on a free loopback port.
struct Host {
    address: String,
    hosting: Arc<Hosting>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The test hosts' admin token: only its holder grants data directories.
const ADMIN: &str = "the-test-hosts-admin-token";

async fn start_host() -> Host {
    start_host_with(None).await
}

async fn start_host_with(data_root: Option<std::path::PathBuf>) -> Host {
    start_host_with_files(data_root, Default::default()).await
}

async fn start_host_with_files(data_root: Option<std::path::PathBuf>, files: weft_host::exec::HostFiles) -> Host {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let config = HostingConfig {
        runtime: RuntimeConfig { max_programs: 24, ..RuntimeConfig::default() },
        limits: EffectiveLimits::host_defaults(),
        admin_token: Some(ADMIN.into()),
        open_experiments: true,
        allowed_peers: weft_host::hosting::PeerAllowList::parse("127.0.0.1").unwrap(),
        client_tls: None,
        data_root,
        files,
        state_dir: None,
        ..HostingConfig::default()
    };
    let hosting = Arc::new(tokio::task::spawn_blocking(move || Hosting::new(config, None)).await.unwrap().unwrap());
    let services = HostServices::hosting(&hosting, None);
    let hosting = hosting.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move { serve_host(listener, services, "test host", async move { drop(stopped.await) }).await });
    Host { address, hosting, _stop: stop }
}

/// A tenant: a client of one host, acting for one experiment: the typed
/// client for what a user does, the raw one for malformed calls.
#[derive(Clone, Debug)]
struct Tenant {
    control: ControlClient,
    client: ControlServiceClient<Channel>,
    credentials: Credentials,
}

fn req<T>(t: &Tenant, message: T) -> Request<T> {
    let mut r = Request::new(message);
    t.credentials.attach(&mut r, None).unwrap();
    r
}

async fn tenant(host: &Host, name: &str, limits: pb::Limits, jobs: &[(&str, u32)]) -> Tenant {
    try_tenant(host, name, limits, jobs, "").await.unwrap()
}

async fn try_tenant(
    host: &Host,
    name: &str,
    limits: pb::Limits,
    jobs: &[(&str, u32)],
    data_dir: &str,
) -> Result<Tenant, Status> {
    let token = format!("token-of-{name}-0123456789");
    let client = ControlServiceClient::connect(format!("http://{}", host.address)).await.unwrap();
    let cluster: HashMap<String, pb::Job> = jobs
        .iter()
        .map(|&(job, n)| (job.to_string(), pb::Job { addresses: vec![host.address.clone(); n as usize] }))
        .collect();
    let tasks =
        jobs.iter().flat_map(|&(job, n)| (0..n).map(move |i| pb::TaskRef { job: job.into(), index: i })).collect();
    let limits = Some(limits);
    let data_dir = data_dir.into();
    let create =
        pb::CreateExperimentRequest { name: name.into(), token: token.clone(), cluster, tasks, limits, data_dir };
    create_tenant(host, create, client).await
}

/// Creates the experiment `create` asks for on `host`, and its tenant there.
async fn create_tenant(
    host: &Host,
    create: pb::CreateExperimentRequest,
    client: ControlServiceClient<Channel>,
) -> Result<Tenant, Status> {
    // Only the admin grants a data directory.
    let creator = match create.data_dir.is_empty() {
        true => Credentials::default(),
        false => Credentials { admin: Some(ADMIN.into()), ..Default::default() },
    };
    let credentials = Credentials::experiment(&create.name, &create.token);
    let mut control = ControlClient::connect(&host.address, None, creator).await.unwrap();
    control.create_experiment(create).await.map_err(status_from_error)?;
    Ok(Tenant { control: control.acting_as(credentials.clone()), client, credentials })
}

fn chunk(sha256: &str, total: usize, data: &[u8]) -> pb::UploadChunk {
    pb::UploadChunk { sha256: sha256.into(), total_bytes: total as u64, data: data.to_vec().into() }
}

async fn upload_chunks(t: &Tenant, chunks: Vec<pb::UploadChunk>) -> Result<pb::UploadResponse, Status> {
    let mut c = t.client.clone();
    c.upload_module(req(t, futures_util::stream::iter(chunks))).await.map(|r| r.into_inner())
}

async fn upload(t: &Tenant, bytes: &[u8]) -> Result<String, Status> {
    t.control.clone().upload(bytes).await.map_err(status_from_error)
}

async fn start(t: &Tenant, sha: &str, task: (&str, u32), args: &[&str]) -> Result<pb::ProgramInfo, Status> {
    let task = Some(pb::TaskRef { job: task.0.into(), index: task.1 });
    let args = args.iter().map(|s| s.to_string()).collect();
    let start = pb::StartProgramRequest { module_sha256: sha.into(), name: String::new(), task, args };
    t.control.clone().start(start).await.map_err(status_from_error)
}

/// Follows a program to its end: its final info and its stdout.
async fn finish(t: &Tenant, id: u64) -> (pb::ProgramInfo, String) {
    let mut stream = t.control.clone().logs(id, true).await.unwrap();
    let (mut out, mut end) = (Vec::new(), None);
    while let Some(c) = stream.next().await.unwrap() {
        if c.stream == 1 {
            out.extend_from_slice(&c.data);
        }
        end = c.end.or(end);
    }
    (end.expect("a final state"), String::from_utf8_lossy(&out).into_owned())
}

async fn state(t: &Tenant, id: u64) -> pb::ProgramState {
    let programs = t.control.clone().programs().await.unwrap();
    let p = programs.iter().find(|p| p.id == id).expect("listed");
    pb::ProgramState::try_from(p.state).unwrap()
}

fn read(path: std::path::PathBuf) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn assert_status(r: Result<impl std::fmt::Debug, Status>, code: Code, needle: &str) {
    let s = r.expect_err("the call must fail");
    assert_eq!(s.code(), code, "{s:?}");
    assert!(s.message().contains(needle), "{:?} should contain {needle:?}", s.message());
}

/// A program of `t` that keeps running (the parameter server's ps, waiting
/// for workers that never come), with `var` initialized on ps:0.
async fn long_runner(t: &Tenant) -> u64 {
    let sha = upload(t, &read(example("parameter-server"))).await.unwrap();
    let p = start(t, &sha, ("ps", 0), &["1000"]).await.unwrap();
    p.id
}

#[test]
fn bad_uploads_are_refused_with_a_named_error_and_change_nothing() {
    run_test(async {
        let host = start_host().await;
        let limits = pb::Limits { upload_mib: Some(1), ..Default::default() };
        let t = tenant(&host, "uploader", limits, &[("ps", 1), ("worker", 1)]).await;
        let bystander = tenant(&host, "bystander", pb::Limits::default(), &[("ps", 1), ("worker", 1)]).await;
        let running = long_runner(&bystander).await;

        let good = read(fixture("api-tour"));
        let sha = module_hash(&good);
        let big = vec![0u8; (1 << 20) + 1];
        assert_status(upload(&t, &big).await, Code::ResourceExhausted, "upload-size limit");
        let truncated = upload_chunks(&t, vec![chunk(&sha, good.len(), &good[..good.len() / 2])]).await;
        assert_status(truncated, Code::InvalidArgument, "truncated upload");
        let damaged = upload_chunks(&t, vec![chunk(&module_hash(b"other"), good.len(), &good)]).await;
        assert_status(damaged, Code::InvalidArgument, "upload damaged");
        assert_status(upload(&t, b"hello, not wasm").await, Code::InvalidArgument, "not a WebAssembly binary");
        let wrong_world = upload(&t, &read(fixture("other-world"))).await;
        assert_status(wrong_world, Code::InvalidArgument, "not a weft:runtime/task-worker component");
        assert_status(start(&t, &sha, ("ps", 0), &[]).await, Code::NotFound, "was not uploaded");

        // A good module in chunks, then again: the second time is only a check.
        let chunks: Vec<pb::UploadChunk> = good
            .chunks(64 << 10)
            .enumerate()
            .map(|(i, c)| if i == 0 { chunk(&sha, good.len(), c) } else { chunk("", 0, c) })
            .collect();
        assert_eq!(upload_chunks(&t, chunks).await.unwrap().sha256, sha);
        let has = t.client.clone().has_module(req(&t, pb::HasModuleRequest { sha256: sha.clone() })).await.unwrap();
        assert!(has.into_inner().present);
        // Another experiment does not see it: it must prove it has the bytes.
        let mut other = bystander.client.clone();
        let seen = other.has_module(req(&bystander, pb::HasModuleRequest { sha256: sha.clone() })).await.unwrap();
        assert!(!seen.into_inner().present);

        assert_eq!(state(&bystander, running).await, pb::ProgramState::Running);
    });
}

#[test]
fn credentials_are_checked_and_tenants_cannot_reach_each_other() {
    run_test(async {
        let host = start_host().await;
        let alice = tenant(&host, "alice", pb::Limits::default(), &[("ps", 1), ("worker", 1)]).await;
        let bob = tenant(&host, "bob", pb::Limits::default(), &[("ps", 1), ("worker", 1)]).await;
        let tour = read(fixture("api-tour"));
        let (a_sha, b_sha) = (upload(&alice, &tour).await.unwrap(), upload(&bob, &tour).await.unwrap());

        // Both set `var` (on worker:0) under the same name, concurrently.
        const ON: &str = "/job:worker/task:0";
        let (a, b) = tokio::join!(
            start(&alice, &a_sha, ("worker", 0), &["set-on", ON, "5"]),
            start(&bob, &b_sha, ("worker", 0), &["set-on", ON, "7"])
        );
        let (a, b) = tokio::join!(finish(&alice, a.unwrap().id), finish(&bob, b.unwrap().id));
        assert_eq!(a.0.state, pb::ProgramState::Succeeded as i32, "{:?}", a.0);
        assert_eq!(b.0.state, pb::ProgramState::Succeeded as i32, "{:?}", b.0);
        let a_get = start(&alice, &a_sha, ("worker", 0), &["get-on", ON]).await.unwrap();
        assert_eq!(finish(&alice, a_get.id).await.1.trim(), "var = 5.0");
        let b_get = start(&bob, &b_sha, ("worker", 0), &["get-on", ON]).await.unwrap();
        assert_eq!(finish(&bob, b_get.id).await.1.trim(), "var = 7.0");

        let running = long_runner(&alice).await;
        // No token; a wrong token; bob's token for alice's experiment.
        let mut anon = alice.client.clone();
        let mut no_token = Request::new(pb::ListProgramsRequest {});
        no_token.metadata_mut().insert("weft-experiment", "alice".parse().unwrap());
        assert_status(anon.list_programs(no_token).await, Code::Unauthenticated, "needs its token");
        let forged = Tenant { credentials: Credentials::experiment("alice", "token-of-bob-0123456789"), ..bob.clone() };
        assert_status(
            forged.client.clone().list_programs(req(&forged, pb::ListProgramsRequest {})).await,
            Code::PermissionDenied,
            "not valid for experiment 'alice'",
        );
        assert_status(
            forged.client.clone().kill_program(req(&forged, pb::KillProgramRequest { id: running })).await,
            Code::PermissionDenied,
            "not valid",
        );
        // Bob's own credentials, aimed at alice's program.
        assert_status(
            bob.client.clone().kill_program(req(&bob, pb::KillProgramRequest { id: running })).await,
            Code::PermissionDenied,
            "belongs to another experiment",
        );
        let logs = bob.client.clone().stream_logs(req(&bob, pb::LogsRequest { id: running, follow: false })).await;
        assert_status(logs, Code::PermissionDenied, "belongs to another experiment");
        let delete =
            bob.client.clone().delete_experiment(req(&bob, pb::DeleteExperimentRequest { name: "alice".into() })).await;
        assert_status(delete, Code::PermissionDenied, "cannot delete experiment 'alice'");

        // The data plane: alice's task, with bob's token or none.
        let mut tasks = TaskServiceClient::connect(format!("http://{}", host.address)).await.unwrap();
        let mut status = Request::new(pb::GetStatusRequest {});
        forged.credentials.attach(&mut status, Some(&TaskId::new("ps", 0))).unwrap();
        assert_status(tasks.get_status(status).await, Code::PermissionDenied, "not valid for experiment 'alice'");
        assert_status(
            tasks.get_status(pb::GetStatusRequest {}).await,
            Code::Unauthenticated,
            "serves experiments only",
        );

        // Nothing changed: alice's program runs, her variable holds 5.
        assert_eq!(state(&alice, running).await, pb::ProgramState::Running);
        let a_get = start(&alice, &a_sha, ("worker", 0), &["get-on", ON]).await.unwrap();
        assert_eq!(finish(&alice, a_get.id).await.1.trim(), "var = 5.0");
        let killed =
            alice.client.clone().kill_program(req(&alice, pb::KillProgramRequest { id: running })).await.unwrap();
        assert_eq!(killed.into_inner().state, pb::ProgramState::Killed as i32);
        // Deleting bob ends his experiment on this host; alice's value stays.
        bob.client
            .clone()
            .delete_experiment(req(&bob, pb::DeleteExperimentRequest { name: String::new() }))
            .await
            .unwrap();
        assert_status(
            bob.client.clone().list_programs(req(&bob, pb::ListProgramsRequest {})).await,
            Code::PermissionDenied,
            "the token is not valid for experiment 'bob'",
        );
        let a_get = start(&alice, &a_sha, ("worker", 0), &["get-on", ON]).await.unwrap();
        assert_eq!(finish(&alice, a_get.id).await.1.trim(), "var = 5.0");
    });
}

#[test]
fn limits_stop_the_program_at_fault_and_nothing_else() {
    run_test(async {
        let host = start_host().await;
        let victim = tenant(&host, "victim", pb::Limits::default(), &[("ps", 1), ("worker", 1)]).await;
        let running = long_runner(&victim).await;
        let limits = pb::Limits {
            memory_mib: Some(32),
            cpu_seconds: Some(0.5),
            programs: Some(2),
            variable_mib: Some(1),
            upload_mib: None,
            checkpoint_mib: None,
            tensor_mib: None,
        };
        let m = tenant(&host, "mallory", limits, &[("local", 2), ("ps", 1), ("worker", 1)]).await;
        let misbehave = upload(&m, &read(fixture("misbehave"))).await.unwrap();

        let spin = start(&m, &misbehave, ("local", 0), &["loop"]).await.unwrap();
        let (end, _) = finish(&m, spin.id).await;
        assert_eq!((end.state, end.code.as_str()), (pb::ProgramState::Failed as i32, "resource-exhausted"), "{end:?}");
        assert!(end.detail.contains("cpu-time limit"), "{end:?}");
        // Its usage is what its limit counted: at least the 0.5 s it ran
        // out of, and its experiment's usage includes it.
        assert!(end.cpu_micros >= 500_000, "{end:?}");
        let list = m.client.clone().list_experiments(req(&m, pb::ListExperimentsRequest {})).await.unwrap();
        let mallory = list.into_inner().experiments.remove(0);
        assert!(mallory.cpu_micros >= end.cpu_micros, "{mallory:?}");

        let bomb = start(&m, &misbehave, ("local", 0), &["memory-bomb"]).await.unwrap();
        let (end, _) = finish(&m, bomb.id).await;
        assert_eq!(end.code, "resource-exhausted", "{end:?}");
        assert!(end.detail.contains("memory limit") && end.detail.contains("32 MiB"), "{end:?}");

        // A 2 MiB variable against a 1 MiB budget.
        let bench = upload(&m, &read(fixture("bench-cluster"))).await.unwrap();
        let hog = start(&m, &bench, ("local", 1), &["fetch", "2", "1"]).await.unwrap();
        let (end, _) = finish(&m, hog.id).await;
        // The refused write is an error the program sees; this one gives up with it.
        assert_eq!((end.state, end.code.as_str()), (pb::ProgramState::Failed as i32, "failed"), "{end:?}");
        assert!(end.detail.starts_with("resource-exhausted: variable-bytes limit"), "{end:?}");

        let list = victim.client.clone().list_experiments(req(&victim, pb::ListExperimentsRequest {})).await.unwrap();
        let names: Vec<String> = list.into_inner().experiments.into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["victim"], "a tenant lists only its own experiment, though mallory's exists");

        // Two programs at once (both waiting, using no CPU), not three.
        let a = long_runner(&m).await;
        let b = long_runner(&m).await;
        assert_status(start(&m, &misbehave, ("local", 0), &["ok"]).await, Code::ResourceExhausted, "programs limit");
        assert_eq!((state(&m, a).await, state(&m, b).await), (pb::ProgramState::Running, pb::ProgramState::Running));
        let deleted =
            m.client.clone().delete_experiment(req(&m, pb::DeleteExperimentRequest { name: String::new() })).await;
        assert_eq!(deleted.unwrap().into_inner().programs_stopped, 2);

        // The victim never noticed.
        assert_eq!(state(&victim, running).await, pb::ProgramState::Running);
    });
}

#[test]
fn programs_see_no_network_no_host_environment_and_only_a_granted_read_only_directory() {
    run_test(async {
        let root = std::env::temp_dir().join(format!("weft-data-root-{}", std::process::id()));
        std::fs::create_dir_all(root.join("shared")).unwrap();
        std::fs::write(root.join("shared/hello.txt"), "hello from the host").unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        let host = start_host_with(Some(root.clone())).await;
        let jobs = [("ps", 1), ("worker", 1)];
        let escape = try_tenant(&host, "escape", pb::Limits::default(), &jobs, "..").await;
        assert_status(escape, Code::InvalidArgument, "no data directory '..'");
        let granted = try_tenant(&host, "granted", pb::Limits::default(), &jobs, "shared").await.unwrap();
        let plain = tenant(&host, "plain", pb::Limits::default(), &jobs).await;

        let mut outputs = Vec::new();
        for t in [&granted, &plain] {
            let sha = upload(t, &read(fixture("misbehave"))).await.unwrap();
            let p = start(t, &sha, ("worker", 0), &["sandbox", &port]).await.unwrap();
            let (end, out) = finish(t, p.id).await;
            assert_eq!(end.state, pb::ProgramState::Succeeded as i32, "{end:?}");
            outputs.push(out);
        }
        let (granted_out, plain_out) = (&outputs[0], &outputs[1]);
        for out in [granted_out, plain_out] {
            assert!(out.contains("env: WEFT_JOB,WEFT_TASK\n"), "{out}");
            assert!(out.contains("write /data/new.txt: denied"), "{out}");
            assert!(out.contains("read /etc/passwd: denied"), "{out}");
            assert!(out.contains("connect: denied"), "{out}");
        }
        assert!(granted_out.contains("read /data/hello.txt: ok hello from the host"), "{granted_out}");
        assert!(plain_out.contains("read /data/hello.txt: denied"), "{plain_out}");
        assert!(!root.join("shared/new.txt").exists());
        drop(listener);
        let _ = std::fs::remove_dir_all(&root);
    });
}

#[test]
fn several_tenants_submitting_at_once_each_see_only_their_own_values() {
    run_test(async {
        let host = start_host().await;
        let tour = read(fixture("api-tour"));
        let names = ["t0", "t1", "t2", "t3", "t4", "t5"];
        let runs = names.iter().enumerate().map(|(i, name)| {
            let (host, tour) = (&host, &tour);
            async move {
                let t = tenant(host, name, pb::Limits::default(), &[("ps", 1), ("worker", 1)]).await;
                let sha = upload(&t, tour).await.unwrap();
                let set = start(&t, &sha, ("worker", 0), &["set", &i.to_string()]).await.unwrap();
                assert_eq!(finish(&t, set.id).await.0.state, pb::ProgramState::Succeeded as i32);
                let get = start(&t, &sha, ("worker", 0), &["get"]).await.unwrap();
                finish(&t, get.id).await.1
            }
        });
        let got = futures_util::future::join_all(runs).await;
        for (i, out) in got.iter().enumerate() {
            assert_eq!(out.trim(), format!("var = {i}.0"), "tenant t{i}");
        }
    });
}

/// Checkpoints on a shared host: each experiment's under its own
/// directory, within its `checkpoint_mib`; a save over the quota is
/// `resource-exhausted` for that experiment only.
#[test]
fn experiments_checkpoint_into_their_own_directories_within_their_quota() {
    run_test(async {
        let dir = std::env::temp_dir().join(format!("weft-hosting-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = weft_host::exec::HostFiles { checkpoint_dir: Some(dir.clone()), ..Default::default() };
        let host = start_host_with_files(None, files).await;
        let small = pb::Limits { checkpoint_mib: Some(1), ..Default::default() };
        let alice = tenant(&host, "alice", small, &[("local", 1)]).await;
        let bob = tenant(&host, "bob", pb::Limits::default(), &[("local", 1)]).await;
        let tour = read(fixture("train-tour"));
        for t in [&alice, &bob] {
            let sha = upload(t, &tour).await.unwrap();
            let info = start(t, &sha, ("local", 0), &["save"]).await.unwrap();
            let (end, out) = finish(t, info.id).await;
            assert_eq!(out, "saved model\nw [5.0, 6.0] v [8.0]\n", "{end:?}");
        }
        assert!(dir.join("experiments/alice/local-0/model.safetensors").is_file());
        assert!(dir.join("experiments/bob/local-0/model.safetensors").is_file());
        let sha = module_hash(&tour);
        let info = start(&alice, &sha, ("local", 0), &["save-big"]).await.unwrap();
        let (_, out) = finish(&alice, info.id).await;
        assert!(out.contains("resource-exhausted: checkpoint quota"), "{out}");
        let info = start(&bob, &sha, ("local", 0), &["save-big"]).await.unwrap();
        let (_, out) = finish(&bob, info.id).await;
        assert!(out.starts_with("saved big"), "bob's quota is the host's: {out}");
        // Deleting an experiment deletes its checkpoints: a later one of that name starts empty.
        alice
            .client
            .clone()
            .delete_experiment(req(&alice, pb::DeleteExperimentRequest { name: "alice".into() }))
            .await
            .unwrap();
        assert!(!dir.join("experiments/alice").exists());
        assert!(dir.join("experiments/bob/local-0/model.safetensors").is_file());
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// A component that is nothing but `instances` core instances of one module
/// with a memory of `pages` 64 KiB pages each, exporting a `run` that
/// succeeds: what no Rust guest can be, written in the text format.
fn many_instances(instances: usize, pages: u32) -> Vec<u8> {
    let memory = if pages > 0 { format!("(memory (export \"memory\") {pages})") } else { String::new() };
    let cases = [
        "invalid-argument",
        "not-found",
        "failed-precondition",
        "unavailable",
        "deadline-exceeded",
        "aborted",
        "resource-exhausted",
        "permission-denied",
        "unimplemented",
        "internal",
    ];
    let error: String = cases.iter().map(|c| format!("(case \"{c}\" string)")).collect();
    let copies: String = (1..instances).map(|i| format!("(core instance $i{i} (instantiate $m))\n")).collect();
    let text = format!(
        r#"(component
          (core module $entry
            (memory (export "memory") 1)
            (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
            (func (export "run") (param i32 i32) (result i32) (i32.const 2048)))
          (core module $m {memory})
          (core instance $e (instantiate $entry))
          {copies}
          (type $error-def (variant {error}))
          (export $error "error" (type $error-def))
          (type $run (func (param "args" (list string)) (result (result (error $error)))))
          (func $run (type $run)
            (canon lift (core func $e "run") (memory (core memory $e "memory")) (realloc (core func $e "realloc"))))
          (export "run" (func $run)))"#
    );
    wat::parse_str(text).expect("the component parses")
}

/// A program's memory limit covers all its memories together, and its core
/// instances are capped: each of three 16 MiB memories is under a 32 MiB
/// limit, the three are not; forty instances are past the cap.
#[test]
fn the_memory_limit_covers_every_instance_of_a_component_together() {
    run_test(async {
        let host = start_host().await;
        let limits = pb::Limits { memory_mib: Some(32), ..Default::default() };
        let m = tenant(&host, "instances", limits, &[("local", 1)]).await;

        let fine = upload(&m, &many_instances(2, 256)).await.unwrap();
        let p = start(&m, &fine, ("local", 0), &[]).await.unwrap();
        let (end, _) = finish(&m, p.id).await;
        assert_eq!(end.state, pb::ProgramState::Succeeded as i32, "one 16 MiB memory fits: {end:?}");

        let three = upload(&m, &many_instances(4, 256)).await.unwrap();
        let p = start(&m, &three, ("local", 0), &[]).await.unwrap();
        let (end, _) = finish(&m, p.id).await;
        assert_eq!((end.state, end.code.as_str()), (pb::ProgramState::Failed as i32, "resource-exhausted"), "{end:?}");
        assert!(end.detail.contains("memory limit") && end.detail.contains("the limit is 32 MiB"), "{end:?}");

        let forty = upload(&m, &many_instances(41, 0)).await.unwrap();
        let p = start(&m, &forty, ("local", 0), &[]).await.unwrap();
        let (end, _) = finish(&m, p.id).await;
        assert_eq!(end.code, "resource-exhausted", "{end:?}");
        assert!(end.detail.contains("instance limit") && end.detail.contains("32 core instances"), "{end:?}");

        // The host carries on: the first module runs again.
        let p = start(&m, &fine, ("local", 0), &[]).await.unwrap();
        assert_eq!(finish(&m, p.id).await.0.state, pb::ProgramState::Succeeded as i32);
    });
}

/// An experiment's tasks deliver to each other directly, as a cluster's
/// do: over three hosts, a program on task 1 sums on task 2 a variable of
/// task 0, and task 2 received it from task 0 (through task 1, the star, it
/// would have received nothing).
#[test]
fn an_experiments_tasks_deliver_tensors_to_each_other_directly() {
    run_test(async {
        let hosts = [start_host().await, start_host().await, start_host().await];
        let addresses = hosts.iter().map(|h| h.address.clone()).collect::<Vec<_>>();
        let cluster = HashMap::from([("local".to_string(), pb::Job { addresses })]);
        let token = "token-of-direct-0123456789";
        let mut tenants = Vec::new();
        for (index, host) in hosts.iter().enumerate() {
            let create = pb::CreateExperimentRequest {
                name: "direct".into(),
                token: token.into(),
                cluster: cluster.clone(),
                tasks: vec![pb::TaskRef { job: "local".into(), index: index as u32 }],
                limits: Some(pb::Limits::default()),
                data_dir: String::new(),
            };
            let client = ControlServiceClient::connect(format!("http://{}", host.address)).await.unwrap();
            tenants.push(create_tenant(host, create, client).await.unwrap());
        }
        let sha = upload(&tenants[1], &read(fixture("bench-cluster"))).await.unwrap();
        let info = start(&tenants[1], &sha, ("local", 1), &["reduce", "4", "2", "2"]).await.unwrap();
        let (end, out) = finish(&tenants[1], info.id).await;
        assert_eq!(end.state, pb::ProgramState::Succeeded as i32, "{end:?}\n{out}");
        assert_eq!(out.lines().filter(|l| l.starts_with("seconds ")).count(), 2, "{out}");
        let receiver = hosts[2].hosting.experiment("direct").unwrap().served(&TaskId::new("local", 2)).unwrap();
        let (delivered, _) = receiver.deliveries();
        assert!(delivered >= 2 * (4 << 20), "task 2 was delivered only {delivered} bytes");
    });
}
