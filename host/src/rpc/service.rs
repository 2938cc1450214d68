//! The task server's side of `weft.v1.TaskService`: holds partitions that
//! masters register and runs them on this task's device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::{Request, Response, Status, Streaming};

use super::auth::{Caller, task_of};
use super::convert::{partition_from_pb, route_from_pb, stats_to_pb, status_from_error};
use super::frames::{FrameReader, frames, meta_of};
use super::rendezvous::Rendezvous;
use super::wire_bound::partition_decoded_bound;
use super::{MAX_MESSAGE_BYTES, pb};
use crate::budget::ByteBudget;
use crate::cluster::TaskId;
use crate::error::Error;
use crate::exec::{
    ComputeMeter, PartitionDef, PartitionResult, RemotePartition, Route, StepCharges, Trace, inputs_are_small,
    run_partition,
};
use crate::graph::{NodeId, Output};
use crate::shm::Mapping;
use crate::task::Task;
use crate::tensor::Tensor;

/// Partitions a task keeps, and the bytes of their definitions (as bounded
/// before decoding); beyond either, the oldest are dropped (masters register
/// them again on `NOT_FOUND`).
const MAX_PARTITIONS: usize = 4096;
const MAX_PARTITION_BYTES: usize = 256 << 20;

struct Registered {
    def: PartitionDef,
    /// [`PartitionDef::is_cheap`]: run in place when its inputs are small.
    cheap: bool,
    rngs: Mutex<HashMap<NodeId, Option<crate::exec::OpRng>>>,
    /// Bytes of its definition in memory (the bound before decoding).
    size: usize,
    /// Order of registration, for evicting the oldest.
    seq: u64,
}

/// One task as its server sees it: the task, this start's incarnation and
/// the partitions masters registered with it.
pub struct ServedTask {
    task: Arc<Task>,
    incarnation: u64,
    started_micros: u64,
    partitions: Mutex<Partitions>,
    /// Set when its server stops taking calls: in-process calls then fail
    /// `unavailable`, and those running stop at their next kernel.
    stopped: std::sync::atomic::AtomicBool,
    /// The meters of in-process calls running now.
    in_process_calls: Mutex<Vec<std::sync::Weak<ComputeMeter>>>,
    /// What other tasks delivered for steps that have not taken it yet.
    pub(super) rendezvous: Rendezvous,
    /// Bytes of tensors delivered to it since it started.
    pub(super) delivered_bytes: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Partitions {
    by_key: HashMap<(u64, u64), Arc<Registered>>,
    bytes: usize,
    next_seq: u64,
}

impl Partitions {
    /// Registers `r`, replacing any earlier one under `key` and evicting the
    /// oldest others until it fits (their masters register them again).
    fn insert(&mut self, key: (u64, u64), mut r: Registered) {
        if let Some(old) = self.by_key.remove(&key) {
            self.bytes -= old.size;
        }
        while !self.by_key.is_empty()
            && (self.by_key.len() >= MAX_PARTITIONS || self.bytes + r.size > MAX_PARTITION_BYTES)
        {
            let oldest = *self.by_key.iter().min_by_key(|(_, r)| r.seq).expect("not empty").0;
            let gone = self.by_key.remove(&oldest).expect("present");
            self.bytes -= gone.size;
        }
        r.seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += r.size;
        self.by_key.insert(key, Arc::new(r));
    }
}

/// How a step of a partition is asked for.
struct Call {
    /// Collect step stats.
    trace: bool,
    /// The caller's CPU time left, if it has a limit.
    allowance: Option<Duration>,
    /// From a master in this process (stopped with the task).
    in_process: bool,
    /// The master and step it is for.
    step: (u64, u64),
}

/// A fresh incarnation number: different for every start of a task.
fn incarnation_of() -> u64 {
    rand::random::<u64>() | 1
}

impl ServedTask {
    /// `task`, starting now with a new incarnation.
    pub fn new(task: Arc<Task>) -> Self {
        let started_micros = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64;
        ServedTask {
            task,
            incarnation: incarnation_of(),
            started_micros,
            partitions: Mutex::default(),
            stopped: Default::default(),
            in_process_calls: Mutex::default(),
            rendezvous: Rendezvous::default(),
            delivered_bytes: Default::default(),
        }
    }

    /// The task.
    pub fn task(&self) -> &Arc<Task> {
        &self.task
    }

    /// This start's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    fn partitions(&self) -> std::sync::MutexGuard<'_, Partitions> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When this start began, in µs since the Unix epoch.
    pub fn started_micros(&self) -> u64 {
        self.started_micros
    }

    /// Runs `part` for step `step` of `master`, a master in this process
    /// ([`super::in_process`]): registered first unless it is already
    /// (checked as one from the network is), then as a call over gRPC would
    /// run it. The inputs pass by reference: nothing new to charge.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_in_process(
        &self,
        master: u64,
        part: &RemotePartition,
        step: u64,
        inputs: Vec<Tensor>,
        trace: bool,
        allowance: Option<Duration>,
    ) -> crate::error::Result<PartitionResult> {
        let gone = || Error::unavailable(format!("task {} stopped", self.task.id()));
        if self.is_stopped() {
            return Err(gone());
        }
        let key = (master, part.id);
        let known = self.partitions().by_key.get(&key).cloned();
        let registered = match known {
            Some(r) => r,
            None => {
                // Registered as over the network, from its encoding: the
                // same size limits, budget charges and checks.
                let encoded = prost::Message::encode_to_vec(&super::convert::partition_to_pb(&part.def));
                let budget = self.task.device().tensor_budget().cloned();
                let mut charges = StepCharges::default();
                let (def, size) = decode_registration(part.id, encoded.into(), budget.as_ref(), &mut charges)
                    .map_err(|s| super::convert::error_from_status(&s))?;
                self.keep(key, def, size)
            }
        };
        let how = Call { trace, allowance, in_process: true, step: (master, step) };
        let run = self.execute(part.id, &registered, &part.route, inputs, StepCharges::default(), how).await;
        if self.is_stopped() {
            // What it did went with the stopped start; the caller learns the
            // task is gone, as it would over the network.
            return Err(gone());
        }
        let (outputs, stats, host_time) = run?;
        Ok(PartitionResult { outputs, stats, host_time })
    }

    /// Keeps `def` (of `size` bytes) under `key` unless a registration got
    /// there first, and returns the one kept. Two runs of one master may
    /// register the same partition at once: a master's partition ids name one
    /// definition, so the second finds it and its random ops keep their state.
    fn keep(&self, key: (u64, u64), def: PartitionDef, size: usize) -> Arc<Registered> {
        let cheap = def.is_cheap();
        let mut partitions = self.partitions();
        if !partitions.by_key.contains_key(&key) {
            partitions.insert(key, Registered { def, cheap, rngs: Mutex::default(), size, seq: 0 });
        }
        partitions.by_key[&key].clone()
    }

    /// Whether its server has stopped taking calls.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Marks it stopped (its server stops taking calls): in-process calls
    /// fail from now on, and those running stop at their next kernel.
    pub fn stop(&self) {
        self.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
        let calls = std::mem::take(&mut *self.in_process_calls.lock().unwrap_or_else(|p| p.into_inner()));
        for meter in calls.iter().filter_map(std::sync::Weak::upgrade) {
            meter.stop(format!("task {} stopped", self.task.id()));
        }
    }

    /// Runs registered partition `id` on `sent` (what the master sent) and
    /// what `route` has other tasks deliver (checked against its input
    /// types; `charges` hold what receiving them cost, until the step ends),
    /// then delivers the outputs `route` names: the outputs the master gets
    /// back, its step stats when traced, and its kernels' CPU time. A caller
    /// that goes away (drops this future) stops the step at its next kernel.
    async fn execute(
        &self,
        id: u64,
        part: &Arc<Registered>,
        route: &Route,
        sent: Vec<Tensor>,
        mut charges: StepCharges,
        how: Call,
    ) -> Result<(Vec<Tensor>, Vec<crate::exec::DeviceStats>, Duration), Error> {
        let Call { trace, allowance, in_process, step } = how;
        let values = self.gather_inputs(id, step, &part.def, route, sent, &mut charges)?;
        part.def.check_inputs(&values).map_err(|e| Error::invalid(format!("partition {id}: {}", e.message())))?;
        let in_place = part.cheap && inputs_are_small(&values);
        let inputs: HashMap<Output, Tensor> = part.def.inputs.iter().copied().zip(values).collect();
        let meter = Arc::new(ComputeMeter::remote(allowance, format!("partition {id} on {}", self.task.id())));
        let _stop = StopOnDrop(meter.clone(), format!("partition {id}: the caller went away"));
        if in_process {
            let mut calls = self.in_process_calls.lock().unwrap_or_else(|p| p.into_inner());
            calls.retain(|m| m.strong_count() > 0);
            calls.push(Arc::downgrade(&meter));
        }
        if in_process && self.is_stopped() {
            // Over gRPC, calls already open finish (the server's grace).
            meter.stop(format!("task {} stopped", self.task.id()));
        }
        let used = meter.clone();
        let device = self.task.device().clone();
        let registered = part.clone();
        let part = part.clone();
        let compute = move || {
            // The inputs stay charged until the step is done with them.
            let _charges = charges;
            let mut trace = trace.then(Trace::default);
            let node_device = vec![0; part.def.nodes.len()];
            let mut rngs = part.rngs.lock().unwrap_or_else(|p| p.into_inner());
            let outputs =
                run_partition(&part.def, &[device], &node_device, &inputs, &mut rngs, trace.as_mut(), Some(&meter))?;
            Ok::<_, Error>((outputs, trace.map(Trace::finish).unwrap_or_default()))
        };
        // A partition may come from the network: a node no graph validated
        // may make a kernel panic; that fails the call, not the server.
        let guarded = move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(compute)).unwrap_or_else(|_| {
                Err(Error::internal(format!("partition {id} failed: a kernel panicked on a malformed node")))
            })
        };
        // A cheap partition with small inputs runs in place (a read or an
        // update of a small variable: two thread wake-ups less). Any other
        // runs off the async threads, so that this call can be dropped (and
        // its meter stopped) while a kernel runs.
        let (outputs, stats) = if in_place {
            crate::exec::run_blocking(guarded)?
        } else {
            tokio::task::spawn_blocking(guarded)
                .await
                .map_err(|e| Error::internal(format!("partition {id}: {e}")))??
        };
        let def = &registered.def;
        let outputs = self.deliver_outputs(id, step, def, route, outputs).await?;
        Ok((outputs, stats, used.kernel_time()))
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

/// What a `FAILED_PRECONDITION` for a segment this host does not hold
/// says; the master retries once without shared memory.
pub const SEGMENT_UNKNOWN: &str = "names a shared-memory segment this host does not hold";

/// Stops a meter when dropped: the call it meters has ended or was dropped.
struct StopOnDrop(Arc<ComputeMeter>, String);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop(std::mem::take(&mut self.1));
    }
}

/// Partition `id` from its encoded definition, checked, and the bytes it
/// takes: bounded from the encoding before it is decoded, and charged to
/// `budget` (into `charges`) before it is.
pub(super) fn decode_registration(
    id: u64,
    encoded: bytes::Bytes,
    budget: Option<&Arc<ByteBudget>>,
    charges: &mut StepCharges,
) -> Result<(PartitionDef, usize), Status> {
    let bad = |why: String| Status::invalid_argument(format!("partition {id}: {why}"));
    let size = partition_decoded_bound(&encoded).map_err(bad)?;
    if size > MAX_PARTITION_BYTES {
        return Err(Status::resource_exhausted(format!(
            "partition {id} would take {size} bytes once decoded; a task keeps at most {MAX_PARTITION_BYTES} bytes \
             of partitions"
        )));
    }
    if let Some(b) = budget {
        // Decoded, then converted: twice the bound at the peak.
        charges
            .charge_for(b, &format!("decoding partition {id}"), size.saturating_mul(2))
            .map_err(status_from_error)?;
    }
    let def = <pb::PartitionDef as prost::Message>::decode(encoded).map_err(|e| bad(e.to_string()))?;
    let def = partition_from_pb(&def).and_then(PartitionDef::checked).map_err(|e| bad(e.message().to_string()))?;
    Ok((def, size))
}

/// The chunks that carry `outputs` and then `stats`. An output that fits
/// the range the master offered for it is written there (the chunk names
/// the range); the others are streamed.
fn chunks(
    outputs: &[Tensor],
    stats: Vec<pb::DeviceStats>,
    shared: Option<(&Mapping, &[pb::SharedBytes])>,
) -> Result<Vec<pb::RunPartitionChunk>, Status> {
    let mut out: Vec<pb::RunPartitionChunk> = Vec::new();
    for (i, t) in outputs.iter().enumerate() {
        if let Some((mapping, offered)) = shared
            && let Some(range) = offered.get(i).filter(|r| r.length >= t.byte_length() as u64)
        {
            let bytes = t.to_shared_bytes();
            mapping
                .write(range.offset, &bytes)
                .map_err(|e| Status::invalid_argument(format!("output space for output {i}: {e}")))?;
            out.push(pb::RunPartitionChunk {
                meta: Some(meta_of(t, bytes.len())),
                shared: Some(pb::SharedBytes { offset: range.offset, length: bytes.len() as u64 }),
                ..Default::default()
            });
            continue;
        }
        out.extend(frames(std::slice::from_ref(t)).into_iter().map(|f| pb::RunPartitionChunk {
            meta: f.meta,
            data: f.data,
            ..Default::default()
        }));
    }
    // Stats ride on the last chunk: a small result is one message.
    match out.last_mut() {
        Some(last) => last.stats = stats,
        None => out.push(pb::RunPartitionChunk { stats, ..Default::default() }),
    }
    Ok(out)
}

/// The segment a call's first message names (by `key`), if any.
fn segment_of(key: &[u8]) -> Result<Option<Arc<Mapping>>, Status> {
    if key.is_empty() {
        return Ok(None);
    }
    crate::shm::registry()
        .and_then(|r| r.segment(key))
        .map(Some)
        .ok_or_else(|| Status::failed_precondition(format!("the call {SEGMENT_UNKNOWN} (closed, or never given)")))
}

/// Reads a step's request stream: the partition it names, and its inputs
/// (streamed bytes, or ranges of `segment`). Each input's bytes are charged
/// to `budget` (the task's tensor budget) before they are allocated, and
/// held in `charges` until the step ends.
async fn read_inputs(
    first: pb::RunPartitionRequest,
    stream: &mut tonic::Streaming<pb::RunPartitionRequest>,
    segment: Option<&Arc<Mapping>>,
    budget: Option<&Arc<ByteBudget>>,
    charges: &mut StepCharges,
) -> Result<Vec<Tensor>, Status> {
    let id = first.partition_id;
    let broken = |why: String| Status::invalid_argument(format!("inputs of partition {id}: {why}"));
    let what = format!("the inputs of partition {id}");
    let mut reader = FrameReader::new(MAX_MESSAGE_BYTES);
    let mut push = |m: pb::RunPartitionRequest| {
        if let (Some(meta), Some(budget)) = (&m.meta, budget) {
            let bytes = usize::try_from(meta.byte_length).unwrap_or(usize::MAX);
            charges.charge_for(budget, &what, bytes).map_err(status_from_error)?;
        }
        match (m.shared, segment) {
            (Some(r), Some(seg)) => {
                let memory: Arc<dyn crate::tensor::SharedMemory> = seg.clone();
                reader.push_shared(m.meta, &memory, r.offset, r.length)
            }
            (Some(_), None) => Err("a shared range without a segment".to_string()),
            (None, _) => reader.push(m.meta, &m.data),
        }
        .map_err(broken)
    };
    push(first)?;
    while let Some(m) = stream.message().await? {
        push(m)?;
    }
    reader.finish().map_err(broken)
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
            shm_socket: crate::shm::registry().map(|r| r.address().to_string()).unwrap_or_default(),
            boot_id: crate::shm::boot_id().unwrap_or_default().to_string(),
        }))
    }

    async fn register_partition(
        &self,
        request: Request<Streaming<pb::RegisterPartitionRequest>>,
    ) -> Result<Response<pb::RegisterPartitionResponse>, Status> {
        let served = self.served(&request)?;
        let mut stream = request.into_inner();
        let mut encoded = bytes::BytesMut::new();
        let mut key = None;
        // A registration in flight holds its bytes, and then its decoded
        // form: both are charged to the task's tensor budget until it is done.
        let budget = served.task.device().tensor_budget().cloned();
        let mut charges = StepCharges::default();
        while let Some(piece) = stream.message().await? {
            let id = piece.partition_id;
            if *key.get_or_insert((piece.master, id)) != (piece.master, id) {
                return Err(Status::invalid_argument("a registration's pieces name different partitions"));
            }
            if encoded.len() + piece.def.len() > MAX_PARTITION_BYTES {
                return Err(Status::resource_exhausted(format!(
                    "partition {id} is more than {MAX_PARTITION_BYTES} bytes, what a task keeps of partitions"
                )));
            }
            if let Some(b) = &budget {
                let what = format!("registering partition {id}");
                charges.charge_for(b, &what, piece.def.len()).map_err(status_from_error)?;
            }
            encoded.extend_from_slice(&piece.def);
        }
        let (master, id) = key.ok_or_else(|| Status::invalid_argument("RegisterPartition without a partition"))?;
        let (def, size) =
            crate::exec::run_blocking(|| decode_registration(id, encoded.freeze(), budget.as_ref(), &mut charges))?;
        served.keep((master, id), def, size);
        Ok(Response::new(pb::RegisterPartitionResponse { incarnation: served.incarnation }))
    }

    async fn run_partition(
        &self,
        request: Request<Streaming<pb::RunPartitionRequest>>,
    ) -> Result<Response<ChunkStream>, Status> {
        let served = self.served(&request)?;
        let mut stream = request.into_inner();
        let mut req =
            stream.message().await?.ok_or_else(|| Status::invalid_argument("RunPartition without a request"))?;
        let part = served.partitions().by_key.get(&(req.master, req.partition_id)).cloned().ok_or_else(|| {
            Status::not_found(format!("partition {} {NOT_REGISTERED} of {}", req.partition_id, served.task.id()))
        })?;
        let trace = req.trace;
        let id = req.partition_id;
        let step = (req.master, req.step);
        let route = route_from_pb(&req)
            .checked(&part.def)
            .map_err(|e| Status::invalid_argument(format!("the route of partition {id}: {}", e.message())))?;
        let segment = segment_of(&req.segment)?;
        let output_space = std::mem::take(&mut req.output_space);
        let allowance = (req.cpu_allowance_micros > 0).then(|| Duration::from_micros(req.cpu_allowance_micros));
        let device = served.task.device().clone();
        let mut charges = StepCharges::default();
        let values = read_inputs(req, &mut stream, segment.as_ref(), device.tensor_budget(), &mut charges).await?;
        let how = Call { trace, allowance, in_process: false, step };
        let (outputs, stats, host_time) =
            served.execute(id, &part, &route, values, charges, how).await.map_err(status_from_error)?;
        let shared = segment.as_deref().map(|m| (m, output_space.as_slice()));
        let mut chunks = chunks(&outputs, stats_to_pb(stats), shared)?;
        if let Some(last) = chunks.last_mut() {
            last.host_micros = host_time.as_micros() as u64;
        }
        Ok(Response::new(Box::pin(futures_util::stream::iter(chunks.into_iter().map(Ok)))))
    }

    async fn deliver_tensors(
        &self,
        request: Request<Streaming<pb::DeliverTensorsRequest>>,
    ) -> Result<Response<pb::DeliverTensorsResponse>, Status> {
        let served = self.served(&request)?;
        super::deliveries::receive(&served, &mut request.into_inner()).await?;
        Ok(Response::new(pb::DeliverTensorsResponse {}))
    }

    async fn forget_step(
        &self,
        request: Request<pb::ForgetStepRequest>,
    ) -> Result<Response<pb::ForgetStepResponse>, Status> {
        let served = self.served(&request)?;
        let r = request.into_inner();
        let forgotten = served.forget_step(r.master, r.step);
        Ok(Response::new(pb::ForgetStepResponse { forgotten: u32::try_from(forgotten).unwrap_or(u32::MAX) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(size: usize) -> Registered {
        let def = PartitionDef { nodes: Vec::new(), inputs: Vec::new(), input_types: Vec::new(), outputs: Vec::new() };
        Registered { def, cheap: true, rngs: Mutex::default(), size, seq: 0 }
    }

    #[test]
    fn partitions_evict_the_oldest_to_fit_and_replacing_is_not_counted_twice() {
        let mut p = Partitions::default();
        let third = MAX_PARTITION_BYTES / 3;
        p.insert((1, 1), registered(third));
        p.insert((1, 2), registered(third));
        p.insert((1, 2), registered(third));
        assert_eq!((p.by_key.len(), p.bytes), (2, 2 * third));
        p.insert((2, 1), registered(third));
        p.insert((2, 2), registered(third));
        assert!(!p.by_key.contains_key(&(1, 1)), "the oldest went first");
        assert!(p.by_key.contains_key(&(2, 2)) && p.bytes <= MAX_PARTITION_BYTES);
    }
}
