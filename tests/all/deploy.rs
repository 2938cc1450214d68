//! The container image and Kubernetes manifests (`Dockerfile`, `deploy/`),
//! checked against the `weft` binary they run: every flag a container passes
//! is one its subcommand takes (`weft SUB --help`), the address it listens
//! on is the port its Service and probes use, the module it runs is one the
//! image holds, the TF_CONFIG built from a StatefulSet pod's ordinal names
//! the StatefulSets' own DNS names and parses, and everything runs as the
//! image's non-root user. (No Kubernetes here: this is what can be checked
//! without one.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

use crate::process::{TempDir, run, weft};

const LIMIT: Duration = Duration::from_secs(60);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn documents(file: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(root().join("deploy").join(file)).unwrap();
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn kind(doc: &Yaml) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn name(doc: &Yaml) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

/// The pod templates of a workload: one for a StatefulSet or Deployment,
/// one per replica type of a TFJob (with its name).
fn pod_templates(doc: &Yaml) -> Vec<(String, &Yaml)> {
    match kind(doc) {
        "StatefulSet" | "Deployment" => vec![(name(doc).to_string(), &doc["spec"]["template"])],
        "TFJob" => doc["spec"]["tfReplicaSpecs"]
            .as_hash()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str().unwrap().to_string(), &v["template"]))
            .collect(),
        _ => Vec::new(),
    }
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec().unwrap().iter().map(|a| a.as_str().expect("a string").to_string()).collect()
}

/// The flags `weft SUB --help` lists.
fn flags_of(sub: &str, dir: &TempDir) -> String {
    let out = run(weft(&[sub, "--help"], &dir.0), LIMIT);
    assert!(out.status.success(), "{}", out.stderr);
    out.stdout
}

fn lists_flag(help: &str, flag: &str) -> bool {
    help.split(|c: char| c.is_whitespace() || matches!(c, ',' | '[' | ']' | '=')).any(|w| w == flag)
}

/// Checks one container: its flags, its listening port (and metrics port)
/// against its container ports and probes, its module and its mounts.
/// Returns its metrics port, if it serves metrics.
fn check_container(what: &str, c: &Yaml, image: &Image, dir: &TempDir) -> Option<i64> {
    assert_eq!(c["image"].as_str(), Some("weft:latest"), "{what}");
    let args = strings(&c["args"]);
    let sub = args[0].as_str();
    assert!(matches!(sub, "run" | "serve"), "{what}: {sub}");
    let help = flags_of(sub, dir);
    let ours = args.iter().take_while(|a| a.as_str() != "--");
    for flag in ours.clone().filter(|a| a.starts_with("--")) {
        assert!(lists_flag(&help, flag), "{what}: `weft {sub}` takes no {flag}");
    }
    let value_of = |flag: &str| ours.clone().skip_while(|a| a.as_str() != flag).nth(1).cloned();
    let listen =
        value_of("--bind").or_else(|| value_of("--listen")).unwrap_or_else(|| panic!("{what}: listens where?"));
    let port_of = |address: &str| -> i64 { address.rsplit_once(':').unwrap().1.parse().unwrap() };
    let port = port_of(&listen);
    let metrics = value_of("--metrics").map(|a| port_of(&a));
    let ports: Vec<i64> = c["ports"].as_vec().unwrap().iter().map(|p| p["containerPort"].as_i64().unwrap()).collect();
    let expected: Vec<i64> = std::iter::once(port).chain(metrics).collect();
    assert_eq!(ports, expected, "{what}: container ports");
    for probe in ["readinessProbe", "livenessProbe"] {
        let p = &c[probe];
        let probed = p["grpc"]["port"].as_i64().or_else(|| p["tcpSocket"]["port"].as_i64());
        assert_eq!(probed, Some(port), "{what}: {probe}");
    }
    for module in ours.clone().filter(|a| a.ends_with(".wasm")) {
        assert!(image.files.contains(&module.as_str()), "{what}: the image holds no {module}");
    }
    // Every file flag points into a volume the container mounts.
    let mounts: Vec<&str> =
        c["volumeMounts"].as_vec().map_or(Vec::new(), |v| v.iter().map(|m| m["mountPath"].as_str().unwrap()).collect());
    for flag in ["--state-dir", "--checkpoint-dir", "--cache-dir", "--tls-cert", "--tls-key"] {
        if let Some(path) = value_of(flag) {
            assert!(mounts.iter().any(|m| path.starts_with(m)), "{what}: {flag} {path} is in no mounted volume");
        }
    }
    // On a read-only root, the module cache must be a mounted volume.
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true), "{what}");
    let cache = value_of("--cache-dir").unwrap_or_else(|| image.cache_dir.to_string());
    assert!(mounts.iter().any(|m| cache.starts_with(m)), "{what}: the module cache {cache} is in no mounted volume");
    metrics
}

/// What the image holds: the files its final stage copies in
/// (`COPY --from=build SRC DST`), and its module cache (`WEFT_CACHE_DIR`).
struct Image<'a> {
    files: Vec<&'a str>,
    cache_dir: &'a str,
}

fn image(dockerfile: &str) -> Image<'_> {
    let last_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    let files =
        last_stage.lines().filter_map(|l| l.strip_prefix("COPY --from=build ")?.split_whitespace().nth(1)).collect();
    let cache_dir = last_stage.lines().find_map(|l| l.strip_prefix("ENV WEFT_CACHE_DIR=")).expect("WEFT_CACHE_DIR");
    Image { files, cache_dir }
}

#[test]
fn the_image_and_manifests_match_the_binary() {
    let dir = TempDir::new("deploy");
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let image = image(&dockerfile);
    assert!(image.files.contains(&"/usr/local/bin/weft"), "{:?}", image.files);
    assert!(dockerfile.contains("\nUSER 10001:10001\n") && dockerfile.contains("ENTRYPOINT [\"weft\"]"));
    let ignored = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    assert!(ignored.lines().any(|l| l == "target/"), "the build context leaves target/ out");

    for file in ["cluster.yaml", "tfjob.yaml", "hosting.yaml"] {
        let docs = documents(file);
        let mut containers = 0;
        for doc in &docs {
            for (workload, template) in pod_templates(doc) {
                let pod = &template["spec"];
                let user = &pod["securityContext"];
                assert_eq!(user["runAsUser"].as_i64(), Some(10001), "{file} {workload}: the image's user");
                assert_eq!(user["runAsNonRoot"].as_bool(), Some(true), "{file} {workload}");
                assert_eq!(user["seccompProfile"]["type"].as_str(), Some("RuntimeDefault"), "{file} {workload}");
                assert!(pod["terminationGracePeriodSeconds"].as_i64().is_some_and(|s| s > 0), "{file} {workload}");
                for c in pod["containers"].as_vec().unwrap() {
                    let what = format!("{file} {workload}");
                    let metrics = check_container(&what, c, &image, &dir);
                    // Prometheus finds the scrape port by the pod's annotations.
                    let annotations = &template["metadata"]["annotations"];
                    let scraped = annotations["prometheus.io/port"].as_str().map(|p| p.parse::<i64>().unwrap());
                    assert_eq!(scraped, metrics, "{what}: the scrape annotation names the --metrics port");
                    if metrics.is_some() {
                        assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"), "{what}");
                        assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"), "{what}");
                    }
                    assert!(!c["resources"]["requests"]["cpu"].is_badvalue(), "{what}: resource requests");
                    if kind(doc) == "TFJob" {
                        // The operator finds the port by these names.
                        assert_eq!(c["name"].as_str(), Some("tensorflow"), "{what}");
                        assert_eq!(c["ports"][0]["name"].as_str(), Some("tfjob-port"), "{what}");
                    }
                    containers += 1;
                }
            }
        }
        assert!(containers > 0, "{file} runs no container");
    }
}

/// deploy/cluster.yaml: a headless Service per StatefulSet, and each pod's
/// TF_CONFIG (its ordinal substituted) names exactly the tasks the
/// StatefulSets make, by their stable DNS names, and parses as weft reads it.
#[test]
fn the_statefulset_cluster_names_its_own_pods() {
    let docs = documents("cluster.yaml");
    let services: BTreeMap<&str, &Yaml> = docs.iter().filter(|d| kind(d) == "Service").map(|d| (name(d), d)).collect();
    let sets: Vec<&Yaml> = docs.iter().filter(|d| kind(d) == "StatefulSet").collect();
    assert_eq!(sets.len(), 2, "a StatefulSet per job");
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for set in &sets {
        let service = set["spec"]["serviceName"].as_str().unwrap();
        let svc = services.get(service).unwrap_or_else(|| panic!("no Service {service}"));
        assert_eq!(svc["spec"]["clusterIP"].as_str(), Some("None"), "{service} is headless");
        assert_eq!(svc["spec"]["publishNotReadyAddresses"].as_bool(), Some(true), "{service}");
        assert_eq!(
            svc["spec"]["selector"], set["spec"]["template"]["metadata"]["labels"],
            "{service} selects its pods"
        );
        let job = set["spec"]["template"]["metadata"]["labels"]["weft.dev/job"].as_str().unwrap();
        let replicas = set["spec"]["replicas"].as_i64().unwrap();
        let port = svc["spec"]["ports"][0]["port"].as_i64().unwrap();
        let tasks = (0..replicas).map(|i| format!("{}-{i}.{service}:{port}", name(set))).collect();
        expected.insert(job.to_string(), tasks);
    }
    for set in &sets {
        let c = &set["spec"]["template"]["spec"]["containers"][0];
        let names: Vec<&str> = c["env"].as_vec().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
        // Kubernetes expands $(TASK_INDEX) only from a variable set before.
        assert_eq!(names, ["TASK_INDEX", "TF_CONFIG"], "{}", name(set));
        let env: BTreeMap<&str, &Yaml> =
            c["env"].as_vec().unwrap().iter().map(|e| (e["name"].as_str().unwrap(), e)).collect();
        let index = &env["TASK_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"];
        assert_eq!(index.as_str(), Some("metadata.labels['apps.kubernetes.io/pod-index']"));
        let job = set["spec"]["template"]["metadata"]["labels"]["weft.dev/job"].as_str().unwrap();
        for ordinal in 0..set["spec"]["replicas"].as_i64().unwrap() {
            let tf_config = env["TF_CONFIG"]["value"].as_str().unwrap().replace("$(TASK_INDEX)", &ordinal.to_string());
            let parsed: serde_json::Value = serde_json::from_str(&tf_config).unwrap();
            let cluster: BTreeMap<String, Vec<String>> = serde_json::from_value(parsed["cluster"].clone()).unwrap();
            assert_eq!(cluster, expected, "{} pod {ordinal}", name(set));
            let config = weft_host::cluster::ClusterConfig::from_json(&tf_config).unwrap();
            assert_eq!(config.task, Some(weft_host::cluster::TaskId::new(job, ordinal as u32)));
        }
    }
}
