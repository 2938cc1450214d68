//! What a host keeps across restarts when it has a state directory: each
//! experiment's spec (with its token: the host needs it to call the
//! experiment's other hosts) and the modules it uploaded, so that after a
//! restart the same tokens work and a submit of an uploaded module is still
//! only a hash check. Programs, logs and variables do not survive.
//!
//! Layout: `DIR/experiments/NAME.json`, `DIR/modules/SHA.wasm`, all owner
//! only and written atomically ([`crate::atomic_file`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ExperimentSpec, Limits};
use crate::atomic_file::{self, Access};
use crate::cluster::{ClusterSpec, TaskId};
use crate::error::{Error, Result};

/// An experiment as written to disk.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedExperiment {
    pub name: String,
    pub token: String,
    pub cluster: BTreeMap<String, Vec<String>>,
    pub tasks: Vec<(String, u32)>,
    pub limits: Limits,
    pub data_dir: Option<String>,
    /// sha256 of every module it uploaded.
    pub modules: Vec<String>,
}

impl SavedExperiment {
    /// The record of `spec` with `modules`.
    pub fn new(spec: &ExperimentSpec, modules: Vec<String>) -> Self {
        SavedExperiment {
            name: spec.name.clone(),
            token: spec.token.clone(),
            cluster: spec.cluster.jobs().clone(),
            tasks: spec.tasks.iter().map(|t| (t.job.clone(), t.index)).collect(),
            limits: spec.limits.clone(),
            data_dir: spec.data_dir.clone(),
            modules,
        }
    }

    /// The spec to create it again from.
    pub fn spec(&self) -> Result<ExperimentSpec> {
        Ok(ExperimentSpec {
            name: self.name.clone(),
            token: self.token.clone(),
            cluster: ClusterSpec::new(self.cluster.clone())?,
            tasks: self.tasks.iter().map(|(j, i)| TaskId::new(j.clone(), *i)).collect(),
            limits: self.limits.clone(),
            data_dir: self.data_dir.clone(),
        })
    }
}

/// A host's state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
}

fn io(what: impl std::fmt::Display, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let context = format!("{what} {}", path.display());
    move |e| Error::io(context, e)
}

impl StateDir {
    /// Opens (creating) a state directory.
    pub fn open(dir: &Path) -> Result<Self> {
        for sub in ["experiments", "modules"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(io("creating", &d))?;
            let stale = atomic_file::remove_stale_temporaries(&d);
            if stale > 0 {
                tracing::info!(dir = %d.display(), stale, "removed temporary files an earlier run left");
            }
        }
        Ok(StateDir { dir: dir.to_path_buf() })
    }

    fn experiment_path(&self, name: &str) -> PathBuf {
        self.dir.join("experiments").join(format!("{name}.json"))
    }

    fn module_path(&self, sha: &str) -> PathBuf {
        self.dir.join("modules").join(format!("{sha}.wasm"))
    }

    /// Saves (replaces) an experiment's record.
    pub fn save(&self, saved: &SavedExperiment) -> Result<()> {
        let json = serde_json::to_vec_pretty(saved).map_err(|e| Error::internal(format!("encoding state: {e}")))?;
        let path = self.experiment_path(&saved.name);
        atomic_file::write(&path, &json, Access::Owner).map_err(io("writing", &path))
    }

    /// Forgets an experiment.
    pub fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.experiment_path(name));
    }

    /// Keeps a module's bytes, unless already kept.
    pub fn keep_module(&self, sha: &str, bytes: &[u8]) -> Result<()> {
        let path = self.module_path(sha);
        if path.exists() {
            Ok(())
        } else {
            atomic_file::write(&path, bytes, Access::Owner).map_err(io("writing", &path))
        }
    }

    /// Whether module `sha` is kept.
    pub fn has_module(&self, sha: &str) -> bool {
        self.module_path(sha).exists()
    }

    /// Forgets a kept module.
    pub fn remove_module(&self, sha: &str) {
        let _ = std::fs::remove_file(self.module_path(sha));
    }

    /// A kept module's bytes.
    pub fn module(&self, sha: &str) -> Result<Vec<u8>> {
        let path = self.module_path(sha);
        std::fs::read(&path).map_err(io("reading", &path))
    }

    /// Deletes kept modules not in `used`.
    pub fn prune_modules(&self, used: &std::collections::HashSet<String>) {
        let Ok(entries) = std::fs::read_dir(self.dir.join("modules")) else { return };
        for e in entries.flatten() {
            let path = e.path();
            let sha = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            if path.extension().is_some_and(|x| x == "wasm") && !used.contains(&sha) {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Every saved experiment; unreadable records are skipped with a warning.
    pub fn experiments(&self) -> Vec<SavedExperiment> {
        let dir = self.dir.join("experiments");
        let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match std::fs::read(&path).map(|b| serde_json::from_slice::<SavedExperiment>(&b)) {
                Ok(Ok(saved)) => out.push(saved),
                Ok(Err(e)) => tracing::warn!("skipping {}: {e}", path.display()),
                Err(e) => tracing::warn!("skipping {}: {e}", path.display()),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experiments_and_modules_round_trip() {
        let dir = std::env::temp_dir().join(format!("weft-state-test-{}", std::process::id()));
        let state = StateDir::open(&dir).unwrap();
        let spec = ExperimentSpec {
            name: "alice".into(),
            token: "token-of-alice-0123456789".into(),
            cluster: ClusterSpec::new(BTreeMap::from([("w".to_string(), vec!["h:1".to_string()])])).unwrap(),
            tasks: vec![TaskId::new("w", 0)],
            limits: Limits { programs: Some(3), ..Default::default() },
            data_dir: None,
        };
        state.save(&SavedExperiment::new(&spec, vec!["ab".into()])).unwrap();
        state.keep_module("ab", b"bytes").unwrap();
        state.keep_module("cd", b"other").unwrap();
        let saved = state.experiments();
        assert_eq!(saved.len(), 1);
        let again = saved[0].spec().unwrap();
        assert_eq!(
            (again.name, again.token, again.tasks, again.limits),
            (spec.name, spec.token, spec.tasks, spec.limits)
        );
        state.prune_modules(&["ab".to_string()].into());
        assert_eq!(state.module("ab").unwrap(), b"bytes");
        assert!(state.module("cd").is_err());
        state.remove("alice");
        assert!(state.experiments().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
