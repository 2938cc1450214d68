//! Reading cluster specs the ways TensorFlow users write them: JSON
//! (`{"local": ["127.0.0.1:2222", "127.0.0.1:2223"]}`), TOML (a `[cluster]`
//! table, or jobs at the top level), and the `TF_CONFIG` environment
//! variable (`{"cluster": {...}, "task": {"type": "worker", "index": 0}}`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;

use super::{ClusterSpec, TaskId};
use crate::error::{Error, Result};

/// A cluster spec, and the task this process is, when the source says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The cluster.
    pub spec: ClusterSpec,
    /// This process's task (from `TF_CONFIG`'s `task`), if given.
    pub task: Option<TaskId>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Document {
    /// `{"cluster": {...}, "task": {...}}` (TF_CONFIG) or `[cluster]` in TOML.
    Wrapped { cluster: BTreeMap<String, Vec<String>>, task: Option<TaskRef> },
    /// Jobs at the top level (TensorFlow's `ClusterSpec` dict).
    Bare(BTreeMap<String, Vec<String>>),
}

#[derive(Deserialize)]
struct TaskRef {
    #[serde(rename = "type")]
    job: String,
    index: u32,
}

impl ClusterConfig {
    /// Parses JSON (TensorFlow's dict or a whole `TF_CONFIG`).
    pub fn from_json(text: &str) -> Result<Self> {
        let doc: Document =
            serde_json::from_str(text).map_err(|e| Error::invalid(format!("cluster spec is not valid JSON: {e}")))?;
        Self::from_document(doc)
    }

    /// Parses TOML: a `[cluster]` table of jobs (optionally `[task]` with
    /// `type` and `index`), or jobs at the top level.
    pub fn from_toml(text: &str) -> Result<Self> {
        let doc: Document =
            toml::from_str(text).map_err(|e| Error::invalid(format!("cluster spec is not valid TOML: {e}")))?;
        Self::from_document(doc)
    }

    /// Reads a file: `.toml` as TOML, anything else as JSON.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading cluster spec {}", path.display()), e))?;
        let parsed =
            if path.extension().is_some_and(|e| e == "toml") { Self::from_toml(&text) } else { Self::from_json(&text) };
        parsed.map_err(|e| Error::invalid(format!("{}: {}", path.display(), e.message())))
    }

    /// Reads `TF_CONFIG` from the environment, if it is set.
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var("TF_CONFIG") {
            Ok(text) => {
                Self::from_json(&text).map(Some).map_err(|e| Error::invalid(format!("TF_CONFIG: {}", e.message())))
            }
            Err(_) => Ok(None),
        }
    }

    /// A spec from job names and addresses, with the same checks as a file.
    pub fn from_jobs(jobs: BTreeMap<String, Vec<String>>) -> Result<ClusterSpec> {
        validated(jobs)
    }

    /// An experiment's spec, from a caller over the network: the checks of a
    /// file, except that tasks may share an address (one host serves
    /// several of an experiment's tasks), and at most
    /// [`MAX_EXPERIMENT_TASKS`] tasks.
    pub fn from_experiment_jobs(jobs: BTreeMap<String, Vec<String>>) -> Result<ClusterSpec> {
        let tasks: usize = jobs.values().map(Vec::len).sum();
        if tasks > MAX_EXPERIMENT_TASKS {
            return Err(Error::invalid(format!(
                "the cluster spec has {tasks} tasks; an experiment may have at most {MAX_EXPERIMENT_TASKS}"
            )));
        }
        checked(jobs, false)
    }

    fn from_document(doc: Document) -> Result<Self> {
        let (jobs, task) = match doc {
            Document::Wrapped { cluster, task } => (cluster, task),
            Document::Bare(jobs) => (jobs, None),
        };
        let spec = validated(jobs)?;
        let task = task.map(|t| TaskId::new(t.job, t.index));
        if let Some(t) = &task {
            spec.check_task(t).map_err(|e| Error::invalid(format!("task {t}: {}", e.message())))?;
        }
        Ok(ClusterConfig { spec, task })
    }
}

/// Tasks an experiment's cluster spec may list.
pub const MAX_EXPERIMENT_TASKS: usize = 4096;

/// Checks job names, addresses and duplicates, then builds the spec.
fn validated(jobs: BTreeMap<String, Vec<String>>) -> Result<ClusterSpec> {
    checked(jobs, true)
}

/// Checks job names and addresses (and, if `distinct`, that no two tasks
/// share an address), then builds the spec.
fn checked(jobs: BTreeMap<String, Vec<String>>, distinct: bool) -> Result<ClusterSpec> {
    let mut seen: HashMap<&str, TaskId> = HashMap::new();
    for (job, tasks) in &jobs {
        let valid_name = job.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && job.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid_name {
            return Err(Error::invalid(format!(
                "job name '{}' must be letters, digits, '_' or '-', starting with a letter",
                job.escape_debug()
            )));
        }
        for (i, address) in tasks.iter().enumerate() {
            let id = TaskId::new(job.clone(), i as u32);
            let port = address.rsplit_once(':').map(|(host, port)| (host, port.parse::<u16>()));
            let printable = address.len() <= 255 && address.chars().all(|c| c.is_ascii_graphic());
            if !printable || !matches!(port, Some((host, Ok(_))) if !host.is_empty()) {
                return Err(Error::invalid(format!("address '{}' of {id} is not HOST:PORT", address.escape_debug())));
            }
            if !distinct {
                continue;
            }
            if let Some(other) = seen.insert(address, id.clone()) {
                return Err(Error::invalid(format!("address '{address}' is used by both {other} and {id}")));
            }
        }
    }
    ClusterSpec::new(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensorflow_json_dict() {
        let c = ClusterConfig::from_json(r#"{"local": ["127.0.0.1:2222", "127.0.0.1:2223"]}"#).unwrap();
        assert_eq!(c.spec.jobs()["local"].len(), 2);
        assert_eq!(c.task, None);
    }

    #[test]
    fn tf_config_names_the_task() {
        let text = r#"{"cluster": {"worker": ["h:1", "h:2"], "ps": ["h:3"]}, "task": {"type": "worker", "index": 1}}"#;
        let c = ClusterConfig::from_json(text).unwrap();
        assert_eq!(c.task, Some(TaskId::new("worker", 1)));
        assert_eq!(c.spec.default_task(), TaskId::new("ps", 0));
    }

    /// What Kubeflow's TFJob operator injects (deploy/tfjob.yaml): DNS
    /// names of the replicas' Services, and `"environment": "cloud"`.
    #[test]
    fn tfjob_tf_config_is_read_as_is() {
        let text = r#"{"cluster": {"ps": ["weft-ps-0.ml.svc:2222"], "worker": ["weft-worker-0.ml.svc:2222",
            "weft-worker-1.ml.svc:2222"]}, "task": {"type": "worker", "index": 1}, "environment": "cloud"}"#;
        let c = ClusterConfig::from_json(text).unwrap();
        assert_eq!(c.task, Some(TaskId::new("worker", 1)));
        assert_eq!(c.spec.jobs()["worker"][1], "weft-worker-1.ml.svc:2222");
    }

    #[test]
    fn toml_with_and_without_cluster_table() {
        let a = ClusterConfig::from_toml("[cluster]\nps = [\"h:1\"]\nworker = [\"h:2\", \"h:3\"]\n").unwrap();
        let b = ClusterConfig::from_toml("ps = [\"h:1\"]\nworker = [\"h:2\", \"h:3\"]\n").unwrap();
        assert_eq!(a, b);
        let t = ClusterConfig::from_toml("[cluster]\nps = [\"h:1\"]\n[task]\ntype = \"ps\"\nindex = 0\n").unwrap();
        assert_eq!(t.task, Some(TaskId::new("ps", 0)));
    }

    #[test]
    fn an_experiments_tasks_may_share_a_host_but_not_hold_odd_text() {
        let jobs = |pairs: &[(&str, &[&str])]| -> BTreeMap<String, Vec<String>> {
            pairs.iter().map(|(j, a)| (j.to_string(), a.iter().map(|s| s.to_string()).collect())).collect()
        };
        let shared = jobs(&[("ps", &["h:1"]), ("worker", &["h:1", "h:1"])]);
        assert!(ClusterConfig::from_experiment_jobs(shared.clone()).is_ok());
        assert!(ClusterConfig::from_jobs(shared).is_err(), "a file's tasks each have their own address");
        let quoted = ClusterConfig::from_experiment_jobs(jobs(&[("ps\"}\n", &["h:1"])])).unwrap_err();
        assert!(quoted.message().contains(r#"job name 'ps\"}\n'"#), "{}", quoted.message());
        let spaced = ClusterConfig::from_experiment_jobs(jobs(&[("ps", &["h x:1"])])).unwrap_err();
        assert!(spaced.message().contains("is not HOST:PORT"), "{}", spaced.message());
        let many: Vec<String> = (0..=MAX_EXPERIMENT_TASKS).map(|i| format!("h:{}", i % 60000 + 1)).collect();
        let too_many = ClusterConfig::from_experiment_jobs(BTreeMap::from([("w".to_string(), many)])).unwrap_err();
        assert!(too_many.message().contains("at most 4096"), "{}", too_many.message());
    }

    #[test]
    fn errors_name_the_problem() {
        let e = |t: &str| ClusterConfig::from_json(t).unwrap_err().to_string();
        assert!(e(r#"{"ps": []}"#).contains("job 'ps' in the cluster spec has no tasks"));
        assert!(e(r#"{}"#).contains("no jobs"));
        assert!(e(r#"{"a": ["h:1"], "b": ["h:1"]}"#).contains("'h:1' is used by both /job:a/task:0 and /job:b/task:0"));
        assert!(e(r#"{"a": ["nohost"]}"#).contains("'nohost' of /job:a/task:0 is not HOST:PORT"));
        assert!(e(r#"{"a": ["h:99999"]}"#).contains("not HOST:PORT"));
        let out_of_range = r#"{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": 3}}"#;
        assert!(e(out_of_range).contains("has 1 task(s), so there is no task 3"));
        let unknown = r#"{"cluster": {"worker": ["h:1"]}, "task": {"type": "chief", "index": 0}}"#;
        assert!(e(unknown).contains("no job 'chief' (jobs: worker)"));
        assert!(e("not json").contains("not valid JSON"));
    }
}
