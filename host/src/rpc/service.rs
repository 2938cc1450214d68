//! The task server's side of `weft.v1.TaskService`: holds partitions that
//! masters register and runs them on this task's device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use tonic::{Request, Response, Status};

use super::auth::{Caller, task_of};
use super::convert::{dtype_to_pb, partition_from_pb, stats_to_pb, status_from_error, tensor_from_pb};
use super::pb;
use crate::cluster::TaskId;
use crate::error::Error;
use crate::exec::{PartitionDef, Trace, run_partition};
use crate::graph::{NodeId, Output};
use crate::task::Task;
use crate::tensor::Tensor;

/// Partitions a task keeps per master; beyond this the oldest are dropped
/// (a master re-registers on `NOT_FOUND`).
const MAX_PARTITIONS: usize = 4096;

struct Registered {
    def: PartitionDef,
    rngs: Mutex<HashMap<NodeId, Option<StdRng>>>,
}

/// One task as its server sees it: the task, this start's incarnation and
/// the partitions masters registered with it.
pub struct ServedTask {
    task: Arc<Task>,
    incarnation: u64,
    started_micros: u64,
    partitions: Mutex<HashMap<(u64, u64), Arc<Registered>>>,
}

/// A fresh incarnation number: different for every start of a task.
fn incarnation_of() -> u64 {
    rand::random::<u64>() | 1
}

impl ServedTask {
    /// `task`, starting now with a new incarnation.
    pub fn new(task: Arc<Task>) -> Self {
        let started_micros = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64;
        ServedTask { task, incarnation: incarnation_of(), started_micros, partitions: Mutex::default() }
    }

    /// The task.
    pub fn task(&self) -> &Arc<Task> {
        &self.task
    }

    /// This start's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    fn partitions(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, u64), Arc<Registered>>> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Which served task a `TaskService` call is for, given who calls and the
/// task its `weft-task` header names.
pub trait TaskDirectory: Send + Sync + 'static {
    /// The task, or the status to fail the call with.
    fn served(&self, caller: &Caller, task: Option<&TaskId>) -> Result<Arc<ServedTask>, Status>;
}

/// A server of one cluster task, open to every caller (TensorFlow's model:
/// the cluster's network is its trust boundary).
pub struct SingleTask(pub Arc<ServedTask>);

impl TaskDirectory for SingleTask {
    fn served(&self, caller: &Caller, task: Option<&TaskId>) -> Result<Arc<ServedTask>, Status> {
        if let Caller::Experiment(name) = caller {
            return Err(Status::not_found(format!("this host serves no experiment '{name}'")));
        }
        match task {
            Some(t) if t != self.0.task.id() => {
                Err(Status::not_found(format!("this server is task {}, not {t}", self.0.task.id())))
            }
            _ => Ok(self.0.clone()),
        }
    }
}

/// `weft.v1.TaskService` for the tasks of a host.
pub struct TaskService {
    directory: Arc<dyn TaskDirectory>,
}

impl TaskService {
    /// The service of the tasks in `directory`.
    pub fn new(directory: Arc<dyn TaskDirectory>) -> Self {
        TaskService { directory }
    }

    fn served<T>(&self, request: &Request<T>) -> Result<Arc<ServedTask>, Status> {
        self.directory.served(Caller::of(request)?, task_of(request.metadata())?.as_ref())
    }
}

/// What a `NOT_FOUND` for an unknown registration says; masters register
/// again (and retry once) only on this one.
pub const NOT_REGISTERED: &str = "is not registered with this incarnation";

/// Largest chunk of tensor bytes in one message.
pub const CHUNK_BYTES: usize = 1 << 20;

/// The chunks that carry `outputs` and then `stats`.
fn chunks(outputs: Vec<Tensor>, stats: Vec<pb::DeviceStats>) -> Vec<pb::RunPartitionChunk> {
    let mut out = Vec::new();
    for t in outputs {
        let bytes = t.to_shared_bytes();
        let meta = pb::TensorMeta {
            dtype: dtype_to_pb(t.dtype()),
            shape: t.shape().iter().map(|&d| d as u64).collect(),
            byte_length: bytes.len() as u64,
        };
        let mut first = Some(meta);
        let mut offset = 0;
        loop {
            let end = (offset + CHUNK_BYTES).min(bytes.len());
            out.push(pb::RunPartitionChunk { meta: first.take(), data: bytes.slice(offset..end), stats: Vec::new() });
            offset = end;
            if offset >= bytes.len() {
                break;
            }
        }
    }
    // Stats ride on the last chunk: a small result is one message.
    match out.last_mut() {
        Some(last) => last.stats = stats,
        None => out.push(pb::RunPartitionChunk { meta: None, data: bytes::Bytes::new(), stats }),
    }
    out
}

type ChunkStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<pb::RunPartitionChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::task_service_server::TaskService for TaskService {
    type RunPartitionStream = ChunkStream;

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let served = self.served(&request)?;
        Ok(Response::new(pb::GetStatusResponse {
            job: served.task.id().job.clone(),
            task: served.task.id().index,
            incarnation: served.incarnation,
            started_unix_micros: served.started_micros,
        }))
    }

    async fn register_partition(
        &self,
        request: Request<pb::RegisterPartitionRequest>,
    ) -> Result<Response<pb::RegisterPartitionResponse>, Status> {
        let served = self.served(&request)?;
        let req = request.into_inner();
        let def = req.def.ok_or_else(|| Status::invalid_argument("RegisterPartition without a partition"))?;
        let def = partition_from_pb(&def).map_err(status_from_error)?;
        let mut partitions = served.partitions();
        if partitions.len() >= MAX_PARTITIONS {
            partitions.clear();
        }
        partitions.insert((req.master, req.partition_id), Arc::new(Registered { def, rngs: Mutex::default() }));
        Ok(Response::new(pb::RegisterPartitionResponse { incarnation: served.incarnation }))
    }

    async fn run_partition(&self, request: Request<pb::RunPartitionRequest>) -> Result<Response<ChunkStream>, Status> {
        let served = self.served(&request)?;
        let req = request.into_inner();
        let part = served.partitions().get(&(req.master, req.partition_id)).cloned().ok_or_else(|| {
            Status::not_found(format!("partition {} {NOT_REGISTERED} of {}", req.partition_id, served.task.id()))
        })?;
        if req.inputs.len() != part.def.inputs.len() {
            return Err(Status::invalid_argument(format!(
                "partition {} takes {} inputs, got {}",
                req.partition_id,
                part.def.inputs.len(),
                req.inputs.len()
            )));
        }
        let inputs: HashMap<Output, Tensor> = part
            .def
            .inputs
            .iter()
            .copied()
            .zip(req.inputs.iter().map(tensor_from_pb))
            .map(|(o, t)| t.map(|t| (o, t)))
            .collect::<Result<_, Error>>()
            .map_err(status_from_error)?;
        let device = served.task.device().clone();
        let id = req.partition_id;
        let compute = move || {
            let mut trace = req.trace.then(Trace::default);
            let node_device = vec![0; part.def.nodes.len()];
            let mut rngs = part.rngs.lock().unwrap_or_else(|p| p.into_inner());
            let outputs = run_partition(&part.def, &[device], &node_device, &inputs, &mut rngs, trace.as_mut())?;
            Ok::<_, Error>((outputs, trace.map(Trace::finish).unwrap_or_default()))
        };
        // Kernels block: on a multi-threaded runtime, tell it so and run
        // right here (no thread hop for small steps); elsewhere, run inline.
        // A partition comes from the network: a node no graph validated may
        // make a kernel panic; that fails the call, not the server.
        let guarded = move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(compute)).unwrap_or_else(|_| {
                Err(Error::internal(format!("partition {id} failed: a kernel panicked on a malformed node")))
            })
        };
        let result = match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(guarded),
            _ => guarded(),
        }
        .map_err(status_from_error)?;
        let chunks = chunks(result.0, stats_to_pb(result.1));
        Ok(Response::new(Box::pin(futures_util::stream::iter(chunks.into_iter().map(Ok)))))
    }
}
