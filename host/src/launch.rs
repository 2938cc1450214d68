//! `weft launch FILE`: every task of a cluster on this machine, each running
//! the same worker module (which acts by its task's job and index, as
//! TF_CONFIG programs do), with output prefixed by task: `[ps:0] ...`.
//!
//! The launch file is TOML (or JSON with the same shape):
//!
//! ```toml
//! [cluster]
//! ps = ["127.0.0.1:3335"]
//! worker = ["127.0.0.1:3333", "127.0.0.1:3334"]
//!
//! [program]
//! module = "../../target/wasm32-wasip2/release/parameter_server.wasm"  # relative to this file
//! args = ["1000"]
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use futures_util::future::join_all;
use serde::Deserialize;
use std::sync::Arc;

use crate::cluster::{ClusterConfig, ClusterSpec, TaskId};
use crate::error::{Error, Result};
use crate::exec::HostFiles;
use crate::hosting::ProgramState;
use crate::local_cluster::LocalCluster;
use crate::metrics::HostMetrics;
use crate::metrics::collect::state_label;
use crate::runtime::{ExitStatus, LoadedModule, OutputFollower, Runtime, StreamKind};

/// A parsed launch file.
#[derive(Clone, Debug)]
pub struct LaunchFile {
    /// The cluster.
    pub cluster: ClusterSpec,
    /// The module every task runs.
    pub module: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

#[derive(Deserialize)]
struct Raw {
    cluster: BTreeMap<String, Vec<String>>,
    program: RawProgram,
}

#[derive(Deserialize)]
struct RawProgram {
    module: PathBuf,
    #[serde(default)]
    args: Vec<String>,
}

impl LaunchFile {
    /// Reads a launch file; `module` is resolved against the file's directory.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let bad = |e: String| Error::invalid(format!("{}: {e}", path.display()));
        let raw: Raw = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?
        } else {
            toml::from_str(&text).map_err(|e| bad(e.to_string()))?
        };
        let cluster = ClusterConfig::from_jobs(raw.cluster).map_err(|e| bad(e.message()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(LaunchFile { cluster, module: base.join(raw.program.module), args: raw.program.args })
    }
}

/// How each task's program ended.
#[derive(Debug)]
pub struct LaunchReport {
    /// Per task, in cluster order.
    pub tasks: Vec<(TaskId, Result<ExitStatus>)>,
}

impl LaunchReport {
    /// Whether every program succeeded.
    pub fn success(&self) -> bool {
        self.tasks.iter().all(|(_, r)| matches!(r, Ok(ExitStatus::Success)))
    }
}

/// Starts the cluster (on its addresses, or on free loopback ports), runs
/// `worker` on every task at once, prints output prefixed by task, and
/// stops the cluster when every program has ended.
pub async fn launch(
    runtime: &Runtime,
    worker: &LoadedModule,
    file: &LaunchFile,
    free_ports: bool,
    files: &HostFiles,
    metrics: Option<&HostMetrics>,
) -> Result<LaunchReport> {
    let cluster = if free_ports {
        let jobs: Vec<(&str, u32)> = file.cluster.jobs().iter().map(|(j, t)| (j.as_str(), t.len() as u32)).collect();
        LocalCluster::start_on_free_ports_with_files(&jobs, files.clone()).await?
    } else {
        LocalCluster::start_with_files(file.cluster.clone(), files.clone()).await?
    };
    let ids = cluster.spec().tasks();
    let mut runs = Vec::new();
    let mut printers = Vec::new();
    for id in &ids {
        let task = cluster.task(id)?;
        if let Some(m) = metrics {
            m.add_task(task.clone());
            m.set_program_state(id, "running");
        }
        let printer = Arc::new(Prefixed::new(format!("[{}:{}] ", id.job, id.index)));
        printers.push(printer.clone());
        let program = runtime.run(worker, task, file.args.clone(), Some(printer));
        runs.push(async move {
            let result = program.await;
            // Each program's state as it ends, not once all have.
            if let Some(m) = metrics {
                let state = match &result {
                    Ok(out) => state_label(&ProgramState::Exited(out.status.clone())),
                    Err(_) => "not-started",
                };
                m.set_program_state(id, state);
            }
            result
        });
    }
    let results = join_all(runs).await;
    for p in printers {
        p.finish();
    }
    cluster.shutdown().await;
    Ok(LaunchReport { tasks: ids.into_iter().zip(results.into_iter().map(|r| r.map(|o| o.status))).collect() })
}

/// Prints each complete line of a program's output with `prefix`, as the
/// program writes it; [`Prefixed::finish`] prints what is left.
struct Prefixed {
    prefix: String,
    /// Stdout's and stderr's incomplete last lines.
    pending: std::sync::Mutex<[Vec<u8>; 2]>,
}

impl Prefixed {
    fn new(prefix: String) -> Self {
        Prefixed { prefix, pending: Default::default() }
    }

    fn emit(&self, stream: StreamKind, line: &[u8]) {
        let mut text = self.prefix.clone().into_bytes();
        text.extend_from_slice(line);
        let _ = match stream {
            StreamKind::Stdout => std::io::stdout().lock().write_all(&text),
            StreamKind::Stderr => std::io::stderr().lock().write_all(&text),
        };
    }

    /// Prints the incomplete last lines, ended.
    fn finish(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for (i, stream) in [StreamKind::Stdout, StreamKind::Stderr].into_iter().enumerate() {
            if !pending[i].is_empty() {
                let mut line = std::mem::take(&mut pending[i]);
                line.push(b'\n');
                self.emit(stream, &line);
            }
        }
    }
}

impl OutputFollower for Prefixed {
    fn output(&self, stream: StreamKind, bytes: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let buf = &mut pending[stream as usize];
        buf.extend_from_slice(bytes);
        // A line longer than this is printed in pieces: what is held stays bounded.
        const LONGEST_LINE: usize = 64 << 10;
        while let Some(end) =
            buf.iter().position(|&b| b == b'\n').or((buf.len() >= LONGEST_LINE).then(|| buf.len() - 1))
        {
            let line: Vec<u8> = buf.drain(..=end).collect();
            self.emit(stream, &line);
        }
    }
}
