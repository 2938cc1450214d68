//! The task server's side of `weft.v1.TaskService`: holds partitions that
//! masters register and runs them on this task's device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use tonic::{Request, Response, Status};

use super::convert::{partition_from_pb, stats_to_pb, status_from_error, tensor_from_pb, tensor_to_pb};
use super::pb;
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

/// `weft.v1.TaskService` for one task.
pub struct TaskService {
    task: Arc<Task>,
    incarnation: u64,
    started_micros: u64,
    partitions: Mutex<HashMap<(u64, u64), Arc<Registered>>>,
}

/// A fresh incarnation number: different for every start of a task.
fn incarnation_of() -> u64 {
    rand::random::<u64>() | 1
}

impl TaskService {
    /// The service of `task`, with a new incarnation.
    pub fn new(task: Arc<Task>) -> Self {
        let started_micros = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64;
        TaskService { task, incarnation: incarnation_of(), started_micros, partitions: Mutex::default() }
    }

    /// This start's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    fn partitions(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, u64), Arc<Registered>>> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[tonic::async_trait]
impl pb::task_service_server::TaskService for TaskService {
    async fn get_status(&self, _: Request<pb::GetStatusRequest>) -> Result<Response<pb::GetStatusResponse>, Status> {
        Ok(Response::new(pb::GetStatusResponse {
            job: self.task.id().job.clone(),
            task: self.task.id().index,
            incarnation: self.incarnation,
            started_unix_micros: self.started_micros,
        }))
    }

    async fn register_partition(
        &self,
        request: Request<pb::RegisterPartitionRequest>,
    ) -> Result<Response<pb::RegisterPartitionResponse>, Status> {
        let req = request.into_inner();
        let def = req.def.ok_or_else(|| Status::invalid_argument("RegisterPartition without a partition"))?;
        let def = partition_from_pb(&def).map_err(status_from_error)?;
        let mut partitions = self.partitions();
        if partitions.len() >= MAX_PARTITIONS {
            partitions.clear();
        }
        partitions.insert((req.master, req.partition_id), Arc::new(Registered { def, rngs: Mutex::default() }));
        Ok(Response::new(pb::RegisterPartitionResponse { incarnation: self.incarnation }))
    }

    async fn run_partition(
        &self,
        request: Request<pb::RunPartitionRequest>,
    ) -> Result<Response<pb::RunPartitionResponse>, Status> {
        let req = request.into_inner();
        let part = self.partitions().get(&(req.master, req.partition_id)).cloned().ok_or_else(|| {
            Status::not_found(format!(
                "partition {} is not registered with this incarnation of {}",
                req.partition_id,
                self.task.id()
            ))
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
        let device = self.task.device().clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut trace = req.trace.then(Trace::default);
            let node_device = vec![0; part.def.nodes.len()];
            let mut rngs = part.rngs.lock().unwrap_or_else(|p| p.into_inner());
            let outputs = run_partition(&part.def, &[device], &node_device, &inputs, &mut rngs, trace.as_mut())?;
            Ok::<_, Error>((outputs, trace.map(Trace::finish).unwrap_or_default()))
        })
        .await
        .map_err(|e| Status::internal(format!("partition panicked: {e}")))?
        .map_err(status_from_error)?;
        Ok(Response::new(pb::RunPartitionResponse {
            outputs: result.0.iter().map(tensor_to_pb).collect(),
            stats: stats_to_pb(result.1),
        }))
    }
}
