//! The master's side: runs partitions on other tasks over gRPC.
//!
//! Per task it keeps one channel and what it registered there. A task that
//! has never answered is waited for (logging which task and address, every
//! few seconds) until it comes or the run's timeout passes; a task that
//! answered before and now does not is `unavailable` at once. A task that
//! restarted (new incarnation) gets its partitions registered again, so
//! sessions keep working without being rebuilt.
//!
//! A frozen task (stopped, or its machine gone quiet) never hangs a run:
//! every channel sends HTTP/2 keepalive pings and drops a connection whose
//! pings go unanswered for the peer timeout, and every unary call has the
//! same bound, so a run fails `unavailable` naming the task within about
//! the peer timeout even with no session timeout ([`GrpcRemote::with_peer_timeout`],
//! `WEFT_PEER_TIMEOUT`). No lock is held while a call is in flight.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tonic::transport::Channel;

use super::auth::Credentials;
use super::convert::{error_from_status, partition_to_pb, route_to_pb, stats_from_pb};
use super::deliveries::DELIVERING;
use super::frames::{CHUNK_BYTES, FrameReader, frames};
use super::service::{NOT_REGISTERED, SEGMENT_UNKNOWN, ServedTask};
use super::shared::{SharedCall, static_output_sizes};
use super::traffic::{Direction, PeerCounters, Traffic};
use super::{MAX_MESSAGE_BYTES, pb};
use crate::cluster::{ClusterSpec, TaskId};
use crate::error::{Code, Error, Result};
use crate::exec::ComputeMeter;
use crate::exec::{Delivered, PartitionResult, PeerTraffic, RemotePartition, RemoteTasks};
use crate::shm::Pool;
use crate::tensor::Tensor;
use crate::tls::ClientTls;

#[path = "peer_deliveries.rs"]
mod peer_deliveries;

type Client = pb::task_service_client::TaskServiceClient<Channel>;

/// How often a master retries a task that has not come up yet.
const RETRY: Duration = Duration::from_millis(100);
/// How often it says it is still waiting.
const WAIT_LOG_EVERY: Duration = Duration::from_secs(2);
/// How long a task that answered before may go silent before runs that
/// need it fail, unless `WEFT_PEER_TIMEOUT` (seconds) says otherwise.
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// The peer timeout from `WEFT_PEER_TIMEOUT`, else the default.
fn peer_timeout_from_env() -> Duration {
    std::env::var("WEFT_PEER_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_PEER_TIMEOUT)
}

#[derive(Default)]
struct PeerState {
    client: Option<Client>,
    incarnation: Option<u64>,
    /// When the task last started, if it restarted while this master knew it.
    restarted_micros: Option<u64>,
    registered: HashSet<u64>,
    /// Segments shared with the task, when it is on this machine.
    shm: Option<Arc<Pool>>,
    /// Bytes of each partition's outputs the last time it ran (before its
    /// first run, what its static types say): the space a call offers for
    /// them in shared memory.
    output_sizes: HashMap<u64, Vec<usize>>,
}

struct Peer {
    task: TaskId,
    address: String,
    credentials: Credentials,
    tls: Option<ClientTls>,
    peer_timeout: Duration,
    /// Held only between calls, never across one.
    state: tokio::sync::Mutex<PeerState>,
    /// Its bytes, adding to the master's [`Traffic`].
    traffic: PeerCounters,
    /// Whether a task of this process is called directly.
    in_process: bool,
}

/// Runs partitions on the cluster's other tasks.
pub struct GrpcRemote {
    cluster: ClusterSpec,
    master: u64,
    credentials: Credentials,
    tls: Option<ClientTls>,
    peer_timeout: Duration,
    peers: Mutex<HashMap<TaskId, Arc<Peer>>>,
    traffic: Arc<Traffic>,
    in_process: bool,
}

impl std::fmt::Debug for GrpcRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcRemote").field("master", &self.master).finish_non_exhaustive()
    }
}

impl GrpcRemote {
    /// A client for `cluster`'s tasks, identifying itself as a new master.
    pub fn new(cluster: ClusterSpec) -> Self {
        GrpcRemote {
            cluster,
            master: rand::random(),
            credentials: Credentials::default(),
            tls: None,
            peer_timeout: peer_timeout_from_env(),
            peers: Mutex::default(),
            traffic: Arc::default(),
            in_process: true,
        }
    }

    /// This client, calling tasks this process serves directly (`true`, the
    /// default) or over gRPC like any other.
    pub fn in_process(mut self, on: bool) -> Self {
        self.in_process = on;
        self
    }

    /// This client, attaching `credentials` (an experiment and its token) to
    /// every call.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// This client, reaching every task over TLS, trusting `tls`'s CA.
    pub fn with_tls(mut self, tls: Option<ClientTls>) -> Self {
        self.tls = tls;
        self
    }

    /// This client, failing runs whose task stops answering for `timeout`
    /// (keepalive pings and unary calls alike).
    pub fn with_peer_timeout(mut self, timeout: Duration) -> Self {
        self.peer_timeout = timeout;
        self
    }

    /// The tensor bytes it moved, by path.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// The memfd name of the segments it holds with `task`'s host, and how
    /// many it holds (none when it shares no memory with it).
    pub async fn shared_segments(&self, task: &TaskId) -> Option<(String, usize)> {
        let peer = self.peers.lock().unwrap_or_else(|p| p.into_inner()).get(task).cloned()?;
        let st = peer.state.lock().await;
        st.shm.as_ref().map(|p| (p.memfd_name(), p.segments()))
    }

    fn peer(&self, task: &TaskId) -> Result<Arc<Peer>> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = peers.get(task) {
            return Ok(p.clone());
        }
        self.cluster.check_task(task)?;
        let address = self.cluster.jobs()[&task.job][task.index as usize].clone();
        let peer = Arc::new(Peer {
            task: task.clone(),
            address,
            credentials: self.credentials.clone(),
            tls: self.tls.clone(),
            peer_timeout: self.peer_timeout,
            state: Default::default(),
            traffic: PeerCounters::new(self.traffic.clone()),
            // Credentials and TLS are for hosts of experiments, which are
            // reached over the network even from their own process.
            in_process: self.in_process
                && self.tls.is_none()
                && self.credentials.experiment.is_none()
                && self.credentials.admin.is_none(),
        });
        peers.insert(task.clone(), peer.clone());
        Ok(peer)
    }
}

impl RemoteTasks for GrpcRemote {
    fn run_partition(
        &self,
        part: Arc<RemotePartition>,
        step: u64,
        inputs: Vec<Tensor>,
        trace: bool,
        timeout: Option<Duration>,
        meter: Option<Arc<ComputeMeter>>,
    ) -> BoxFuture<'static, Result<PartitionResult>> {
        let master = self.master;
        let peer = self.peer(&part.task);
        Box::pin(async move {
            let peer = peer?;
            // What the program has left goes with the step; what the step
            // took there comes back and is charged here.
            let allowance = meter.as_ref().and_then(|m| m.remaining());
            let run = async {
                let result = peer.run(master, &part, step, inputs, trace, allowance).await?;
                if let Some(m) = &meter {
                    m.charge(result.host_time);
                }
                Ok(result)
            };
            match timeout {
                None => run.await,
                Some(t) => tokio::time::timeout(t, run).await.map_err(|_| {
                    Error::status(
                        Code::DeadlineExceeded,
                        format!("run did not finish within {t:?}: it needs {} at {}", peer.task, peer.address),
                    )
                })?,
            }
        })
    }

    fn delivers_directly(&self) -> bool {
        // A producer delivers with its own task's client. The tasks of an
        // experiment share one, with the experiment's credentials and the
        // host's TLS, so its masters (its programs) can count on that. Any
        // other client with credentials or TLS (a `weft` command with a
        // token or `--tls`) may reach tasks whose own clients have neither,
        // so its steps go through it.
        direct_enabled()
            && match (&self.credentials.experiment, &self.credentials.admin) {
                (Some(_), None) => true,
                (None, None) => self.tls.is_none(),
                _ => false,
            }
    }

    fn deliver(
        &self,
        task: &TaskId,
        master: u64,
        step: u64,
        tensors: Vec<Delivered>,
    ) -> BoxFuture<'static, Result<()>> {
        let peer = self.peer(task);
        Box::pin(async move { peer?.deliver(master, step, tensors).await })
    }

    fn peer_traffic(&self) -> Vec<PeerTraffic> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.values().map(|p| p.traffic.report(p.task.to_string(), p.address.clone())).collect()
    }

    fn forget_step(&self, task: &TaskId, step: u64) -> BoxFuture<'static, Result<()>> {
        let (peer, master) = (self.peer(task), self.master);
        Box::pin(async move { peer?.forget_step(master, step).await })
    }
}

/// Whether tensors between two remote tasks go straight between them
/// (`WEFT_DIRECT=0` sends them through the master, as before).
fn direct_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("WEFT_DIRECT").map_or(true, |v| v != "0"))
}

/// What went wrong with a call, its causes included: tonic says only
/// "http2 error" for a connection whose keepalive pings went unanswered.
fn transport_why(s: &tonic::Status) -> String {
    let mut why = s.message().to_string();
    let mut cause = std::error::Error::source(s);
    while let Some(c) = cause {
        let text = c.to_string();
        if !why.contains(&text) {
            why = format!("{why}: {text}");
        }
        cause = c.source();
    }
    why
}

/// Whether the host answered that it no longer holds the call's segment
/// (it restarted, or dropped it): the caller retries once over the stream.
fn segment_unknown(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::FailedPrecondition && s.message().contains(SEGMENT_UNKNOWN)
}

/// The shared-memory socket of a task whose status says it is on this
/// machine and offers one.
fn shared_memory_with(status: &pb::GetStatusResponse) -> Option<String> {
    let here = crate::shm::boot_id()?;
    (crate::shm::enabled() && !status.shm_socket.is_empty() && status.boot_id == here)
        .then(|| status.shm_socket.clone())
}

impl Peer {
    /// A request for this peer's task, with the credentials attached.
    fn request<T>(&self, message: T) -> Result<tonic::Request<T>> {
        let mut request = tonic::Request::new(message);
        self.credentials.attach(&mut request, Some(&self.task)).map_err(|s| error_from_status(&s))?;
        Ok(request)
    }

    fn unavailable(&self, why: impl std::fmt::Display) -> Error {
        Error::unavailable(format!("task {} at {} is unavailable: {why}", self.task, self.address))
    }

    /// `call` within `limit`, or `unavailable` saying what got no answer.
    async fn bounded<T>(
        &self,
        what: &str,
        limit: Duration,
        call: impl std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    ) -> std::result::Result<T, tonic::Status> {
        match tokio::time::timeout(limit, call).await {
            Ok(r) => r,
            Err(_) => Err(tonic::Status::unavailable(format!("{what} got no answer within {limit:?}"))),
        }
    }

    /// A connected client, waiting for a task that has never answered.
    /// The state is locked only to read and to record: never while dialling.
    async fn connect(&self) -> Result<Client> {
        let known = {
            let st = self.state.lock().await;
            if let Some(c) = &st.client {
                return Ok(c.clone());
            }
            st.incarnation.is_some()
        };
        let half = self.peer_timeout / 2;
        let endpoint = crate::tls::endpoint(&self.address, self.tls.as_ref())
            .map_err(|e| Error::invalid(format!("{} of {}", e.message(), self.task)))?
            .connect_timeout(Duration::from_secs(1).min(self.peer_timeout))
            .http2_keep_alive_interval(half)
            .keep_alive_timeout(half)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true)
            .initial_stream_window_size(16 << 20)
            .initial_connection_window_size(32 << 20)
            .max_frame_size(1 << 20)
            .buffer_size(1024);
        let started = Instant::now();
        let mut last_log: Option<Instant> = None;
        loop {
            let attempt = async {
                let channel = endpoint.connect().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                let mut client = Client::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES);
                let request = self
                    .request(pb::GetStatusRequest {})
                    .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
                let status = client.get_status(request).await?;
                Ok::<_, tonic::Status>((client, status.into_inner()))
            };
            match self.bounded("its status", self.peer_timeout, attempt).await {
                Ok((client, status)) => {
                    let mut st = self.state.lock().await;
                    if let Some(c) = &st.client {
                        // Another run connected meanwhile: share its channel.
                        return Ok(c.clone());
                    }
                    if st.incarnation.is_some_and(|i| i != status.incarnation) {
                        st.restarted_micros = Some(status.started_unix_micros);
                        st.registered.clear();
                    }
                    st.incarnation = Some(status.incarnation);
                    st.client = Some(client.clone());
                    st.shm = shared_memory_with(&status).map(Pool::new);
                    if last_log.is_some() {
                        tracing::warn!("{} at {} is up after {:.1?}", self.task, self.address, started.elapsed());
                    }
                    return Ok(client);
                }
                // Waiting cannot fix credentials: say so now.
                Err(s)
                    if matches!(
                        s.code(),
                        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied | tonic::Code::InvalidArgument
                    ) =>
                {
                    let e = error_from_status(&s);
                    return Err(Error::status(e.code(), format!("{} at {}: {}", self.task, self.address, e.message())));
                }
                Err(s) if known => return Err(self.unavailable(transport_why(&s))),
                Err(s) => {
                    let why = s.message();
                    if last_log.is_none_or(|t| t.elapsed() >= WAIT_LOG_EVERY) {
                        tracing::warn!("waiting for {} at {} to come up ({why})", self.task, self.address);
                        last_log = Some(Instant::now());
                    }
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// Registers `part` with the task unless it holds it already.
    async fn ensure_registered(&self, master: u64, part: &RemotePartition, client: &mut Client) -> Result<()> {
        if self.state.lock().await.registered.contains(&part.id) {
            return Ok(());
        }
        let def = bytes::Bytes::from(prost::Message::encode_to_vec(&partition_to_pb(&part.def)));
        // A big definition (constants inside) on a slow link gets longer:
        // one more second per 16 MiB.
        let bound = self.peer_timeout + Duration::from_secs((def.len() >> 24) as u64);
        let pieces: Vec<pb::RegisterPartitionRequest> = (0..def.len().max(1))
            .step_by(CHUNK_BYTES)
            .map(|at| pb::RegisterPartitionRequest {
                master,
                partition_id: part.id,
                def: def.slice(at..(at + CHUNK_BYTES).min(def.len())),
            })
            .collect();
        let call = client.register_partition(self.request(futures_util::stream::iter(pieces))?);
        let answer = self.bounded("registering a partition", bound, call).await;
        let incarnation = match answer {
            Ok(resp) => resp.into_inner().incarnation,
            Err(s) => return Err(self.failed(&mut *self.state.lock().await, &s)),
        };
        if self.state.lock().await.incarnation != Some(incarnation) {
            // The channel reconnected to a new start of the task: its other
            // registrations are gone.
            self.restarted(client).await?;
        }
        self.state.lock().await.registered.insert(part.id);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        master: u64,
        part: &RemotePartition,
        step: u64,
        inputs: Vec<Tensor>,
        trace: bool,
        allowance: Option<Duration>,
    ) -> Result<PartitionResult> {
        if let Some(served) = self.in_process_task() {
            return self.run_in_process(&served, master, part, step, inputs, trace, allowance).await;
        }
        let returned = part.route.returned(&part.def).count();
        let mut share_memory = true;
        for attempt in 0..2 {
            let mut client = self.connect().await?;
            self.ensure_registered(master, part, &mut client).await?;
            let (pool, expected) = {
                let mut st = self.state.lock().await;
                if st.output_sizes.len() >= 4096 && !st.output_sizes.contains_key(&part.id) {
                    st.output_sizes.clear();
                }
                let expected = st
                    .output_sizes
                    .entry(part.id)
                    .or_insert_with(|| {
                        let sizes = static_output_sizes(&part.def);
                        sizes.into_iter().enumerate().filter(|(i, _)| part.route.returns(*i)).map(|(_, n)| n).collect()
                    })
                    .clone();
                (st.shm.clone().filter(|_| share_memory), expected)
            };
            // Co-located: inputs into a shared segment, with room for the
            // outputs expected.
            let shared = SharedCall::offer(pool.as_ref(), &inputs, &expected);
            let (frames, streamed) = match &shared {
                Some(call) => (call.input_frames(&inputs), 0),
                None => (frames(&inputs), inputs.iter().map(|t| t.byte_length() as u64).sum()),
            };
            self.traffic.add(Direction::Sent, shared.as_ref().map_or(0, SharedCall::input_bytes), streamed);
            // The first message names the partition (and may start the first
            // input); the inputs' other chunks follow.
            // At least a microsecond: 0 means no limit.
            let cpu_allowance_micros = allowance.map_or(0, |a| (a.as_micros() as u64).max(1));
            let mut first = pb::RunPartitionRequest {
                master,
                partition_id: part.id,
                trace,
                cpu_allowance_micros,
                step,
                ..Default::default()
            };
            route_to_pb(&part.route, &mut first);
            if let Some(call) = &shared {
                first.segment = call.key();
                first.output_space = call.output_space();
            }
            let mut messages = vec![first];
            for (i, f) in frames.into_iter().enumerate() {
                if i > 0 {
                    messages.push(pb::RunPartitionRequest::default());
                }
                let m = messages.last_mut().expect("a message");
                (m.meta, m.data, m.shared) = (f.meta, f.data, f.shared);
            }
            match client.run_partition(self.request(futures_util::stream::iter(messages))?).await {
                Ok(resp) => {
                    let result = match self.receive(&mut resp.into_inner(), shared.as_ref()).await {
                        Ok(result) => result,
                        Err(e) => {
                            // The stream broke: the connection (and any memory
                            // shared with this start of the task) is suspect.
                            let mut st = self.state.lock().await;
                            st.client = None;
                            st.shm = None;
                            return Err(e);
                        }
                    };
                    if let Some(call) = &shared {
                        call.completed();
                    }
                    if result.outputs.len() != returned {
                        return Err(Error::internal(format!(
                            "{} returned {} outputs for partition {}, expected {returned}",
                            self.task,
                            result.outputs.len(),
                            part.id,
                        )));
                    }
                    let sizes: Vec<usize> = result.outputs.iter().map(Tensor::byte_length).collect();
                    if sizes != expected {
                        self.state.lock().await.output_sizes.insert(part.id, sizes);
                    }
                    return Ok(result);
                }
                // The task restarted (or dropped the registration): learn its
                // new incarnation, register again and retry once.
                Err(s) if s.code() == tonic::Code::NotFound && s.message().contains(NOT_REGISTERED) && attempt == 0 => {
                    let mut st = self.state.lock().await;
                    st.client = None;
                    st.registered.clear();
                }
                // The host no longer holds the call's segment (it restarted, or
                // dropped it): retry once over the stream, with a fresh pool.
                Err(s) if segment_unknown(&s) && attempt == 0 => {
                    share_memory = false;
                    self.renew_pool(pool.as_ref()).await;
                }
                Err(s) => {
                    let mut st = self.state.lock().await;
                    return Err(self.failed(&mut st, &s));
                }
            }
        }
        Err(Error::internal(format!("partition {} of {} could not be registered", part.id, self.task)))
    }

    /// [`Peer::run`] on a task this process serves: a call, no gRPC. A new
    /// start of the task is noticed as over the network (its registrations
    /// are gone, and errors say when it restarted).
    #[allow(clippy::too_many_arguments)]
    async fn run_in_process(
        &self,
        served: &ServedTask,
        master: u64,
        part: &RemotePartition,
        step: u64,
        inputs: Vec<Tensor>,
        trace: bool,
        allowance: Option<Duration>,
    ) -> Result<PartitionResult> {
        let restarted = self.met_in_process(served).await;
        self.traffic.add_in_process_call();
        let run = served.run_in_process(master, part, step, inputs, trace, allowance);
        run.await.map_err(|e| self.explained(e, restarted))
    }

    /// The task, if this process serves it and calls to it stay in process.
    fn in_process_task(&self) -> Option<Arc<ServedTask>> {
        self.in_process.then(|| super::in_process::find(&self.address, &self.task)).flatten()
    }

    /// Notes the start of the task `served` is (a new one clears what this
    /// master knew of the last); when it last restarted, if it did.
    async fn met_in_process(&self, served: &ServedTask) -> Option<u64> {
        let mut st = self.state.lock().await;
        if st.incarnation != Some(served.incarnation()) {
            if st.incarnation.is_some() {
                st.restarted_micros = Some(served.started_micros());
            }
            st.incarnation = Some(served.incarnation());
            st.registered.clear();
            st.client = None;
            st.shm = None;
        }
        st.restarted_micros
    }

    /// A fresh pool for the task's host in place of `used`, which it no
    /// longer holds segments of (unless another call replaced it already).
    async fn renew_pool(&self, used: Option<&Arc<Pool>>) {
        let mut st = self.state.lock().await;
        if let (Some(now), Some(used)) = (&st.shm, used)
            && Arc::ptr_eq(now, used)
        {
            st.shm = Some(Pool::new(used.socket()));
        }
    }

    /// `e` from the task, saying when it restarted if that explains it.
    fn explained(&self, e: Error, restarted_micros: Option<u64>) -> Error {
        match (e.code(), restarted_micros) {
            (Code::FailedPrecondition, Some(at)) if e.message().contains("uninitialized") => Error::precondition(
                format!("{} (task {} restarted at {} µs since the Unix epoch)", e.message(), self.task, at),
            ),
            _ => e,
        }
    }

    /// Reassembles streamed outputs: each a meta, then its bytes (or, with
    /// shared memory, the range of the call's segment it was written to).
    async fn receive(
        &self,
        stream: &mut tonic::Streaming<pb::RunPartitionChunk>,
        shared: Option<&SharedCall>,
    ) -> Result<PartitionResult> {
        let mut reader = FrameReader::new(MAX_MESSAGE_BYTES);
        let mut stats = Vec::new();
        let mut host_time = Duration::ZERO;
        let broken = |why: String| Error::unavailable(format!("output stream from {} broke off: {why}", self.task));
        let mut output = 0usize;
        loop {
            let chunk = match stream.message().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(s) => return Err(self.unavailable(transport_why(&s))),
            };
            let index = output;
            if chunk.meta.is_some() {
                output += 1;
            }
            host_time += Duration::from_micros(chunk.host_micros);
            match (chunk.shared, shared) {
                (Some(range), Some(call)) => {
                    call.read_output(index, &range, chunk.meta, &mut reader).map_err(broken)?;
                    self.traffic.add(Direction::Received, range.length, 0);
                }
                (Some(_), None) => return Err(broken("a shared range in a call without shared memory".into())),
                (None, _) => {
                    self.traffic.add(Direction::Received, 0, chunk.data.len() as u64);
                    reader.push(chunk.meta, &chunk.data).map_err(broken)?;
                }
            }
            if !chunk.stats.is_empty() {
                stats = stats_from_pb(chunk.stats);
            }
        }
        Ok(PartitionResult { outputs: reader.finish().map_err(broken)?, stats, host_time })
    }

    /// Learns the task's new incarnation and start time after a restart.
    async fn restarted(&self, client: &mut Client) -> Result<()> {
        let request = self.request(pb::GetStatusRequest {})?;
        let answer = self.bounded("its status", self.peer_timeout, client.get_status(request)).await;
        let mut st = self.state.lock().await;
        let status = answer.map_err(|s| self.failed(&mut st, &s))?.into_inner();
        tracing::warn!("{} at {} restarted; registering its partitions again", self.task, self.address);
        st.incarnation = Some(status.incarnation);
        st.restarted_micros = Some(status.started_unix_micros);
        st.registered.clear();
        st.shm = shared_memory_with(&status).map(Pool::new);
        Ok(())
    }

    /// The error for a failed call; transport failures drop the channel.
    fn failed(&self, st: &mut PeerState, s: &tonic::Status) -> Error {
        // tonic reports a connection torn down mid-stream (the peer stopped)
        // as an internal "h2 protocol error": that is the transport, not the peer's answer.
        let torn = s.code() == tonic::Code::Internal && s.message().starts_with("h2 protocol error");
        // A task that could not deliver to another answered, itself.
        let answered = s.message().contains(DELIVERING);
        if !answered
            && (torn || matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled))
        {
            st.client = None;
            st.shm = None;
            return self.unavailable(transport_why(s));
        }
        self.explained(error_from_status(s), st.restarted_micros)
    }
}
