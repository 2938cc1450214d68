//! A whole cluster of task servers in one process: every task has its own
//! device (its own variables) and its own gRPC server. The tasks reach each
//! other by a call in this process, tensors passed by reference
//! ([`crate::rpc::in_process`]), or, for a cluster started
//! [`LocalCluster::start_on_free_ports_over_grpc`], over real gRPC on
//! loopback as separate machines would. Used by `weft launch` and by the
//! test harness; tasks can be stopped and restarted on the same address.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cluster::{ClusterSpec, TaskId};
use crate::error::{Error, Result};
use crate::exec::HostFiles;
use crate::rpc::GrpcRemote;
use crate::server;
use crate::task::Task;

struct Running {
    task: Arc<Task>,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<()>>,
}

/// Task servers of one cluster, all in this process.
pub struct LocalCluster {
    spec: ClusterSpec,
    running: BTreeMap<TaskId, Running>,
    files: HostFiles,
    /// Whether its tasks reach each other over gRPC even in this process.
    over_grpc: bool,
}

impl LocalCluster {
    /// Starts every task of `spec` on its address.
    pub async fn start(spec: ClusterSpec) -> Result<Self> {
        Self::start_with_files(spec, HostFiles::default()).await
    }

    /// [`LocalCluster::start`], the tasks writing checkpoints and summaries
    /// where `files` says (each in its own `<job>-<task>` subdirectory).
    pub async fn start_with_files(spec: ClusterSpec, files: HostFiles) -> Result<Self> {
        let mut listeners = Vec::new();
        for id in spec.tasks() {
            let address = spec.address(&id).to_string();
            let listener = TcpListener::bind(&address)
                .await
                .map_err(|e| Error::io(format!("listening on {address} for {id}"), e))?;
            listeners.push((id, listener));
        }
        Ok(Self::serve_all(spec, listeners, files, false))
    }

    /// Starts a cluster with `jobs` (`&[("ps", 1), ("worker", 2)]`) on free
    /// loopback ports: listeners are bound first, then the spec is made from
    /// their addresses, so no port can be taken in between.
    pub async fn start_on_free_ports(jobs: &[(&str, u32)]) -> Result<Self> {
        Self::start_on_free_ports_with_files(jobs, HostFiles::default()).await
    }

    /// [`LocalCluster::start_on_free_ports`] with host files.
    pub async fn start_on_free_ports_with_files(jobs: &[(&str, u32)], files: HostFiles) -> Result<Self> {
        Self::on_free_ports(jobs, files, false).await
    }

    /// [`LocalCluster::start_on_free_ports_with_files`] whose tasks reach
    /// each other over gRPC on loopback, never by a call in this process: what
    /// tasks on separate machines do, for tests of that path.
    pub async fn start_on_free_ports_over_grpc(jobs: &[(&str, u32)], files: HostFiles) -> Result<Self> {
        Self::on_free_ports(jobs, files, true).await
    }

    async fn on_free_ports(jobs: &[(&str, u32)], files: HostFiles, over_grpc: bool) -> Result<Self> {
        let mut listeners = Vec::new();
        let mut spec = BTreeMap::new();
        for &(job, n) in jobs {
            let mut addresses = Vec::new();
            for i in 0..n {
                let listener =
                    TcpListener::bind("127.0.0.1:0").await.map_err(|e| Error::io("listening on 127.0.0.1:0", e))?;
                let address = listener.local_addr().map_err(|e| Error::io("reading a listener's address", e))?;
                addresses.push(address.to_string());
                listeners.push((TaskId::new(job, i), listener));
            }
            spec.insert(job.to_string(), addresses);
        }
        Ok(Self::serve_all(ClusterSpec::new(spec)?, listeners, files, over_grpc))
    }

    fn serve_all(spec: ClusterSpec, listeners: Vec<(TaskId, TcpListener)>, files: HostFiles, over_grpc: bool) -> Self {
        let mut cluster = LocalCluster { spec, running: BTreeMap::new(), files, over_grpc };
        for (id, listener) in listeners {
            cluster.serve(id, listener);
        }
        cluster
    }

    fn serve(&mut self, id: TaskId, listener: TcpListener) {
        let task = Task::with_files(self.spec.clone(), id.clone(), &self.files)
            .expect("task of its own spec")
            .with_remote(Arc::new(GrpcRemote::new(self.spec.clone()).in_process(!self.over_grpc)));
        let task = Arc::new(task);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(server::serve(listener, task.clone(), async move {
            let _ = stopped.await;
        }));
        self.running.insert(id, Running { task, stop, server });
    }

    /// A cluster with nothing running (what a stopped cluster leaves behind).
    pub fn empty() -> Self {
        LocalCluster {
            spec: ClusterSpec::single("127.0.0.1:0"),
            running: BTreeMap::new(),
            files: HostFiles::default(),
            over_grpc: false,
        }
    }

    /// The cluster spec (with the real addresses).
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// The running task `id`.
    pub fn task(&self, id: &TaskId) -> Result<Arc<Task>> {
        self.running.get(id).map(|r| r.task.clone()).ok_or_else(|| {
            let up: Vec<String> = self.running.keys().map(|t| t.to_string()).collect();
            Error::not_found(format!("task {id} is not running here (running: {})", up.join(", ")))
        })
    }

    /// Stops task `id`'s server; its variables are gone.
    pub async fn stop(&mut self, id: &TaskId) -> Result<()> {
        let running = self.running.remove(id).ok_or_else(|| Error::not_found(format!("task {id} is not running")))?;
        let _ = running.stop.send(());
        running.server.await.map_err(|e| Error::internal(format!("server of {id} panicked: {e}")))?
    }

    /// Starts task `id` again on its address, with a new incarnation and no variables.
    pub async fn restart(&mut self, id: &TaskId) -> Result<()> {
        if self.running.contains_key(id) {
            self.stop(id).await?;
        }
        let address = self.spec.address(id).to_string();
        let listener =
            TcpListener::bind(&address).await.map_err(|e| Error::io(format!("listening on {address} for {id}"), e))?;
        self.serve(id.clone(), listener);
        Ok(())
    }

    /// Stops every task.
    pub async fn shutdown(mut self) {
        let ids: Vec<TaskId> = self.running.keys().cloned().collect();
        for id in ids {
            if let Err(e) = self.stop(&id).await {
                tracing::warn!("stopping {id}: {e}");
            }
        }
    }
}
