//! Checkpoints on disk: each task's variables in one safetensors file per
//! save, with a CRC32C per tensor in the file's metadata, a JSON index, and
//! a `checkpoint` file naming the latest save and the ones kept, all under
//! `<checkpoint-dir>/<job>-<task>/` so tasks never write each other's files
//! (and a restarted task finds its own).
//!
//! Writes are atomic: a uniquely named temporary file, fsync, rename, then
//! fsync of the directory. Programs name checkpoints by a relative prefix
//! (`model.ckpt`, `run1/model.ckpt`); one that escapes the directory is
//! refused. Loads check the file, every checksum, and the shapes and dtypes
//! the caller expects, before anything is assigned.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use safetensors::{Dtype, SafeTensors, View};

use crate::cluster::TaskId;
use crate::error::{Code, Error, Result};
use crate::tensor::{DType, Tensor};

/// Checkpoints kept by default (TensorFlow's `max_to_keep`).
pub const DEFAULT_MAX_TO_KEEP: usize = 5;

/// Where one host keeps checkpoints, and how many bytes they may take.
#[derive(Clone, Debug)]
pub struct CheckpointDir {
    root: PathBuf,
    quota: Option<u64>,
}

/// A loaded checkpoint: its name, the step it was saved at, its tensors.
#[derive(Debug)]
pub struct Loaded {
    /// `prefix-step`.
    pub name: String,
    /// The step, if it was saved with one.
    pub step: Option<i64>,
    /// The tensors by variable name.
    pub tensors: HashMap<String, Tensor>,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::status(Code::Internal, format!("{what} {}: {e}", path.display()))
}

fn st_dtype(d: DType) -> Option<Dtype> {
    Some(match d {
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        DType::Bool => Dtype::BOOL,
        DType::String => return None,
    })
}

fn from_st_dtype(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::I32 => DType::I32,
        Dtype::I64 => DType::I64,
        Dtype::BOOL => DType::Bool,
        _ => return None,
    })
}

/// A tensor as safetensors sees it.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: bytes::Bytes,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Serialises saves in this process (quota check, files, `checkpoint` state),
/// so concurrent saves cannot pass a quota together or lose each other's entries.
static STATE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Whether `name` is a save of `prefix`: `prefix` itself or `prefix-<step>`.
fn is_save_of(name: &str, prefix: &str) -> bool {
    name == prefix
        || name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('-'))
            .is_some_and(|step| !step.is_empty() && step.trim_start_matches('-').chars().all(|c| c.is_ascii_digit()))
}

/// Writes `bytes` to `path` atomically (see [`crate::atomic_file`]).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::atomic_file::write(path, bytes, crate::atomic_file::Access::Owner).map_err(|e| io_err("writing", path, e))
}

impl CheckpointDir {
    /// Checkpoints under `root`, at most `quota` bytes in all if given.
    pub fn new(root: impl Into<PathBuf>, quota: Option<u64>) -> Self {
        CheckpointDir { root: root.into(), quota }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<job>-<task>`: one task's checkpoints.
    pub fn task_dir(&self, task: &TaskId) -> PathBuf {
        self.root.join(format!("{}-{}", task.job, task.index))
    }

    /// Checks that `prefix` is a relative path that stays inside the directory.
    pub fn check_prefix(prefix: &str) -> Result<()> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 200
            && !prefix.chars().any(|c| c == '\\' || c == '"' || c.is_control())
            && prefix.split('/').all(|c| !c.is_empty() && !c.starts_with('.'))
            && Path::new(prefix).components().all(|c| matches!(c, Component::Normal(_)));
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "checkpoint prefix '{prefix}' must be a relative path inside the checkpoint directory \
                 (no '..', no absolute path, no component starting with '.')"
            )))
        }
    }

    fn bytes_used(dir: &Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
        entries
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => Self::bytes_used(&e.path()),
                Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => 0,
            })
            .sum()
    }

    /// Saves `vars` of `task` as `prefix-step`; keeps the newest
    /// `max_to_keep` saves of that prefix. Returns the checkpoint's name.
    pub fn save(
        &self,
        task: &TaskId,
        prefix: &str,
        step: Option<i64>,
        vars: &[(String, Tensor)],
        max_to_keep: usize,
    ) -> Result<String> {
        Self::check_prefix(prefix)?;
        let name = match step {
            Some(s) => format!("{prefix}-{s}"),
            None => prefix.to_string(),
        };
        let dir = self.task_dir(task);
        let file = dir.join(format!("{name}.safetensors"));
        let parent = file.parent().expect("has a parent").to_path_buf();

        let mut raws = BTreeMap::new();
        let mut meta = HashMap::new();
        let mut index = serde_json::Map::new();
        for (var, t) in vars {
            let dtype = st_dtype(t.dtype()).ok_or_else(|| {
                Error::invalid(format!("variable '{var}' is a string tensor; checkpoints hold numbers"))
            })?;
            let bytes = t.to_shared_bytes();
            let crc = crc32c::crc32c(&bytes);
            meta.insert(format!("crc32c:{var}"), format!("{crc:08x}"));
            index.insert(
                var.clone(),
                serde_json::json!({"dtype": t.dtype().to_string(), "shape": t.shape(), "crc32c": format!("{crc:08x}")}),
            );
            raws.insert(var.clone(), Raw { dtype, shape: t.shape().to_vec(), bytes });
        }
        if let Some(s) = step {
            meta.insert("weft:step".into(), s.to_string());
        }
        meta.insert("weft:task".into(), task.to_string());
        let data = safetensors::serialize(raws.iter().map(|(k, v)| (k.as_str(), v)), Some(meta))
            .map_err(|e| Error::internal(format!("encoding checkpoint '{name}': {e}")))?;
        // Measuring and writing under one lock: concurrent saves cannot all pass the quota.
        let _state = STATE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(quota) = self.quota {
            // What this save will prune does not count against it.
            let kept: Vec<String> =
                Self::read_state(&dir)?.1.into_iter().filter(|n| is_save_of(n, prefix) && *n != name).collect();
            let pruned: u64 = kept
                .iter()
                .take((kept.len() + 1).saturating_sub(max_to_keep.max(1)))
                .flat_map(|n| ["safetensors", "index"].map(|ext| dir.join(format!("{n}.{ext}"))))
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum();
            let used = Self::bytes_used(&self.root).saturating_sub(pruned);
            if used + data.len() as u64 > quota {
                return Err(Error::status(
                    Code::ResourceExhausted,
                    format!(
                        "checkpoint quota: '{name}' needs {} bytes, but {} of the {quota} bytes are used",
                        data.len(),
                        used
                    ),
                ));
            }
        }
        std::fs::create_dir_all(&parent).map_err(|e| io_err("creating", &parent, e))?;
        write_atomic(&file, &data)?;
        let index = serde_json::json!({"checkpoint": name, "step": step, "task": task.to_string(), "tensors": index});
        write_atomic(&dir.join(format!("{name}.index")), index.to_string().as_bytes())?;
        self.record_latest(&dir, prefix, &name, max_to_keep.max(1))?;
        Ok(name)
    }

    /// Updates `<task dir>/checkpoint` and deletes saves beyond `max_to_keep`.
    fn record_latest(&self, dir: &Path, prefix: &str, name: &str, max_to_keep: usize) -> Result<()> {
        let mut all: Vec<String> = Self::read_state(dir)?.1.into_iter().filter(|n| n != name).collect();
        all.push(name.to_string());
        let ours: Vec<String> = all.iter().filter(|n| is_save_of(n, prefix)).cloned().collect();
        let drop_count = ours.len().saturating_sub(max_to_keep);
        let dropped: Vec<String> = ours.into_iter().take(drop_count).collect();
        all.retain(|n| !dropped.contains(n));
        let mut text = format!("model_checkpoint_path: \"{name}\"\n");
        for n in &all {
            text.push_str(&format!("all_model_checkpoint_paths: \"{n}\"\n"));
        }
        write_atomic(&dir.join("checkpoint"), text.as_bytes())?;
        for n in dropped {
            for ext in ["safetensors", "index"] {
                let _ = std::fs::remove_file(dir.join(format!("{n}.{ext}")));
            }
        }
        Ok(())
    }

    /// The latest checkpoint's name and every kept one, from the state file.
    fn read_state(dir: &Path) -> Result<(Option<String>, Vec<String>)> {
        let path = dir.join("checkpoint");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, Vec::new())),
            Err(e) => return Err(io_err("reading", &path, e)),
        };
        let value = |line: &str, key: &str| {
            line.strip_prefix(key)
                .map(|v| v.trim().trim_matches('"').to_string())
                .filter(|v| Self::check_prefix(v).is_ok())
        };
        let latest = text.lines().find_map(|l| value(l, "model_checkpoint_path:"));
        let all = text.lines().filter_map(|l| value(l, "all_model_checkpoint_paths:")).collect();
        Ok((latest, all))
    }

    /// `tf.train.latest_checkpoint`: the newest save of `task`, if any.
    pub fn latest(&self, task: &TaskId) -> Result<Option<String>> {
        Ok(Self::read_state(&self.task_dir(task))?.0)
    }

    /// The steps of the saves of `prefix` that `task` keeps, oldest first:
    /// listed in its `checkpoint` file and with their file present (a save
    /// without a step, named just `prefix`, is not listed).
    pub fn steps(&self, task: &TaskId, prefix: &str) -> Result<Vec<i64>> {
        Self::check_prefix(prefix)?;
        let dir = self.task_dir(task);
        let kept = Self::read_state(&dir)?.1;
        let mut steps: Vec<i64> = kept
            .iter()
            .filter(|n| is_save_of(n, prefix) && dir.join(format!("{n}.safetensors")).is_file())
            .filter_map(|n| n.strip_prefix(prefix)?.strip_prefix('-')?.parse().ok())
            .collect();
        steps.sort_unstable();
        steps.dedup();
        Ok(steps)
    }

    /// The newest save of `prefix` on `task`, if any.
    pub fn latest_of(&self, task: &TaskId, prefix: &str) -> Result<Option<String>> {
        Ok(Self::read_state(&self.task_dir(task))?.1.into_iter().rfind(|n| is_save_of(n, prefix)))
    }

    /// Loads checkpoint `name` of `task` (or the newest save of `prefix`,
    /// or the newest of all), checking the file and every tensor's checksum.
    pub fn load(&self, task: &TaskId, name: Option<&str>, prefix: Option<&str>) -> Result<Loaded> {
        let dir = self.task_dir(task);
        let missing = || Error::not_found(format!("no checkpoint for {task} in {}", dir.display()));
        let name = match (name, prefix) {
            (Some(n), _) => {
                Self::check_prefix(n)?;
                n.to_string()
            }
            (None, Some(p)) => self.latest_of(task, p)?.ok_or_else(missing)?,
            (None, None) => self.latest(task)?.ok_or_else(missing)?,
        };
        let path = dir.join(format!("{name}.safetensors"));
        let data = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::not_found(format!("checkpoint file {} does not exist", path.display()))
            }
            _ => io_err("reading", &path, e),
        })?;
        let corrupt = |why: String| {
            Error::status(Code::InvalidArgument, format!("checkpoint {} is damaged: {why}", path.display()))
        };
        let (_, meta) = SafeTensors::read_metadata(&data).map_err(|e| corrupt(e.to_string()))?;
        let st = SafeTensors::deserialize(&data).map_err(|e| corrupt(e.to_string()))?;
        let info = meta.metadata().clone().unwrap_or_default();
        let mut tensors = HashMap::new();
        for (var, view) in st.tensors() {
            let want = info.get(&format!("crc32c:{var}")).ok_or_else(|| corrupt(format!("no checksum for '{var}'")))?;
            let got = format!("{:08x}", crc32c::crc32c(view.data()));
            if *want != got {
                return Err(corrupt(format!("tensor '{var}' fails its checksum ({got}, expected {want})")));
            }
            let dtype = from_st_dtype(view.dtype())
                .ok_or_else(|| corrupt(format!("tensor '{var}' has unsupported dtype {:?}", view.dtype())))?;
            let t = Tensor::from_le_bytes(dtype, view.shape(), view.data()).map_err(|e| corrupt(e.message()))?;
            tensors.insert(var, t);
        }
        let step = info.get("weft:step").and_then(|s| s.parse().ok());
        Ok(Loaded { name, step, tensors })
    }
}

#[cfg(test)]
mod tests;
