//! The hosting control API (`weft.v1.ControlService`) on top of
//! [`Hosting`]: experiments, uploads, programs, logs. Every call has been
//! through the credentials interceptor; this decides what each caller may do.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use futures_util::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::{Experiment, ExperimentSpec, Hosting, Limits, LogCursor, ProgramRecord, ProgramState, upload_too_big};
use crate::cluster::{ClusterConfig, TaskId};
use crate::rpc::auth::Caller;
use crate::rpc::{pb, status_from_error};
use crate::runtime::StreamKind;

/// `weft.v1.ControlService` of a host.
pub struct ControlService {
    hosting: Arc<Hosting>,
}

impl ControlService {
    /// The control API of `hosting`.
    pub fn new(hosting: Arc<Hosting>) -> Self {
        ControlService { hosting }
    }

    /// The caller's experiment; admin and anonymous callers must name one.
    fn experiment<T>(&self, request: &Request<T>) -> Result<Arc<Experiment>, Status> {
        match Caller::of(request)? {
            Caller::Experiment(name) => self.hosting.experiment(name).map_err(status_from_error),
            _ => Err(Status::unauthenticated("name the experiment (--experiment) and pass its token (--token)")),
        }
    }
}

/// An experiment's limits on the wire (also what `weft experiment create` sends).
pub(crate) fn limits_to_pb(l: &Limits) -> pb::Limits {
    pb::Limits {
        memory_mib: l.memory_mib,
        cpu_seconds: l.cpu_seconds,
        programs: l.programs,
        variable_mib: l.variable_mib,
        upload_mib: l.upload_mib,
        checkpoint_mib: l.checkpoint_mib,
        tensor_mib: l.tensor_mib,
    }
}

fn limits_from_pb(l: Option<pb::Limits>) -> Limits {
    let l = l.unwrap_or_default();
    Limits {
        memory_mib: l.memory_mib,
        cpu_seconds: l.cpu_seconds,
        programs: l.programs,
        variable_mib: l.variable_mib,
        upload_mib: l.upload_mib,
        checkpoint_mib: l.checkpoint_mib,
        tensor_mib: l.tensor_mib,
    }
}

fn task_ref(t: &TaskId) -> pb::TaskRef {
    pb::TaskRef { job: t.job.clone(), index: t.index }
}

fn experiment_info(e: &Experiment) -> pb::ExperimentInfo {
    pb::ExperimentInfo {
        name: e.name().to_string(),
        cluster: e
            .cluster()
            .jobs()
            .iter()
            .map(|(job, addresses)| (job.clone(), pb::Job { addresses: addresses.clone() }))
            .collect(),
        tasks: e.tasks().map(task_ref).collect(),
        limits: Some(limits_to_pb(&e.limits().to_limits())),
        programs_running: e.running() as u32,
        variable_bytes: e.variable_bytes() as u64,
        cpu_micros: e.cpu_time().as_micros() as u64,
    }
}

/// A program as the API shows it.
fn program_info(p: &ProgramRecord) -> pb::ProgramInfo {
    use pb::ProgramState as S;
    let (state, code, detail) = match p.state() {
        ProgramState::Compiling => (S::Compiling, String::new(), String::new()),
        ProgramState::Running => (S::Running, String::new(), String::new()),
        ProgramState::Exited(status) => match status {
            crate::runtime::ExitStatus::Success => (S::Succeeded, String::new(), String::new()),
            crate::runtime::ExitStatus::Failed(m) => (S::Failed, "failed".into(), m),
            crate::runtime::ExitStatus::Trapped(m) => (S::Failed, "trapped".into(), m),
            crate::runtime::ExitStatus::ResourceExhausted(m) => (S::Failed, "resource-exhausted".into(), m),
        },
        ProgramState::Failed(code, message) => (S::Failed, code.as_str().to_string(), message),
        ProgramState::Killed => (S::Killed, String::new(), "stopped by kill".into()),
    };
    pb::ProgramInfo {
        id: p.id,
        name: p.name.clone(),
        module_sha256: p.module.clone(),
        task: Some(task_ref(&p.task)),
        state: state as i32,
        code,
        detail,
        started_unix_millis: p.started.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64,
        cpu_micros: p.cpu_time().as_micros() as u64,
    }
}

type LogStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<pb::LogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::control_service_server::ControlService for ControlService {
    type StreamLogsStream = LogStream;

    async fn create_experiment(
        &self,
        request: Request<pb::CreateExperimentRequest>,
    ) -> Result<Response<pb::ExperimentInfo>, Status> {
        let admin = match Caller::of(&request)? {
            Caller::Admin => true,
            Caller::Anonymous if self.hosting.open_experiments() => false,
            Caller::Anonymous => {
                return Err(Status::unauthenticated(
                    "this host creates experiments only with its admin token (its admin may open creation to \
                     everyone with --open-experiments)",
                ));
            }
            Caller::Experiment(_) => {
                return Err(Status::permission_denied("an experiment's token cannot create experiments"));
            }
        };
        let req = request.into_inner();
        if !admin && !req.data_dir.is_empty() {
            return Err(Status::permission_denied(format!(
                "experiment '{}' asks for data directory '{}': only this host's admin grants data directories \
                 (create it with the admin token)",
                req.name, req.data_dir
            )));
        }
        let jobs: BTreeMap<String, Vec<String>> = req.cluster.into_iter().map(|(j, t)| (j, t.addresses)).collect();
        let spec = ExperimentSpec {
            name: req.name,
            token: req.token,
            cluster: ClusterConfig::from_experiment_jobs(jobs).map_err(status_from_error)?,
            tasks: req.tasks.iter().map(|t| TaskId::new(t.job.clone(), t.index)).collect(),
            limits: limits_from_pb(req.limits),
            data_dir: Some(req.data_dir).filter(|d| !d.is_empty()),
        };
        let experiment = self.hosting.create_experiment(spec).map_err(|e| match e.code() {
            crate::error::Code::FailedPrecondition => Status::already_exists(e.message()),
            _ => status_from_error(e),
        })?;
        Ok(Response::new(experiment_info(&experiment)))
    }

    async fn list_experiments(
        &self,
        request: Request<pb::ListExperimentsRequest>,
    ) -> Result<Response<pb::ListExperimentsResponse>, Status> {
        let experiments = match Caller::of(&request)? {
            Caller::Admin => self.hosting.experiments(),
            Caller::Experiment(name) => vec![self.hosting.experiment(name).map_err(status_from_error)?],
            Caller::Anonymous => {
                return Err(Status::unauthenticated("listing needs an experiment's token or the admin token"));
            }
        };
        Ok(Response::new(pb::ListExperimentsResponse {
            experiments: experiments.iter().map(|e| experiment_info(e)).collect(),
        }))
    }

    async fn delete_experiment(
        &self,
        request: Request<pb::DeleteExperimentRequest>,
    ) -> Result<Response<pb::DeleteExperimentResponse>, Status> {
        let name = match Caller::of(&request)? {
            Caller::Admin => request.get_ref().name.clone(),
            Caller::Experiment(own) if request.get_ref().name.is_empty() || request.get_ref().name == *own => {
                own.clone()
            }
            Caller::Experiment(own) => {
                return Err(Status::permission_denied(format!(
                    "the token of experiment '{own}' cannot delete experiment '{}'",
                    request.get_ref().name
                )));
            }
            Caller::Anonymous => return Err(Status::unauthenticated("deleting needs the experiment's token")),
        };
        let stopped = self.hosting.delete_experiment(&name).map_err(status_from_error)?;
        Ok(Response::new(pb::DeleteExperimentResponse { programs_stopped: stopped as u32 }))
    }

    async fn has_module(
        &self,
        request: Request<pb::HasModuleRequest>,
    ) -> Result<Response<pb::HasModuleResponse>, Status> {
        let experiment = self.experiment(&request)?;
        Ok(Response::new(pb::HasModuleResponse { present: experiment.has_module(&request.get_ref().sha256) }))
    }

    async fn upload_module(
        &self,
        request: Request<Streaming<pb::UploadChunk>>,
    ) -> Result<Response<pb::UploadResponse>, Status> {
        let experiment = self.experiment(&request)?;
        let limit = experiment.limits().upload_bytes;
        let mut stream = request.into_inner();
        let first = stream.message().await?.ok_or_else(|| {
            Status::invalid_argument("empty upload: the first chunk must give sha256 and total_bytes")
        })?;
        let total = usize::try_from(first.total_bytes).unwrap_or(usize::MAX);
        if total > limit {
            return Err(status_from_error(upload_too_big(total, limit)));
        }
        if first.sha256.len() != 64 {
            return Err(Status::invalid_argument("the first chunk's sha256 must be 64 hex digits"));
        }
        // Grows with what arrives, not with what the client announced.
        let mut bytes = first.data.to_vec();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|s| {
                Status::aborted(format!("upload broke off after {} of {total} bytes: {}", bytes.len(), s.message()))
            })?;
            if bytes.len() + chunk.data.len() > total {
                return Err(Status::invalid_argument(format!("upload is longer than the announced {total} bytes")));
            }
            bytes.extend_from_slice(&chunk.data);
        }
        if bytes.len() != total {
            return Err(Status::invalid_argument(format!(
                "truncated upload: got {} of the announced {total} bytes",
                bytes.len()
            )));
        }
        let size = bytes.len() as u64;
        let (sha256, took) =
            self.hosting.add_module(&experiment, &first.sha256, bytes).await.map_err(status_from_error)?;
        Ok(Response::new(pb::UploadResponse { sha256, bytes: size, compile_millis: took.as_secs_f64() * 1e3 }))
    }

    async fn start_program(
        &self,
        request: Request<pb::StartProgramRequest>,
    ) -> Result<Response<pb::ProgramInfo>, Status> {
        let experiment = self.experiment(&request)?;
        let req = request.into_inner();
        let task = req.task.ok_or_else(|| Status::invalid_argument("StartProgram needs a task"))?;
        let record = self
            .hosting
            .start_program(
                &experiment,
                &req.module_sha256,
                Some(req.name),
                &TaskId::new(task.job, task.index),
                req.args,
            )
            .map_err(status_from_error)?;
        Ok(Response::new(program_info(&record)))
    }

    async fn list_programs(
        &self,
        request: Request<pb::ListProgramsRequest>,
    ) -> Result<Response<pb::ListProgramsResponse>, Status> {
        let experiment = self.experiment(&request)?;
        Ok(Response::new(pb::ListProgramsResponse {
            programs: experiment.programs().iter().map(|p| program_info(p)).collect(),
        }))
    }

    async fn stream_logs(&self, request: Request<pb::LogsRequest>) -> Result<Response<LogStream>, Status> {
        let experiment = self.experiment(&request)?;
        let req = request.into_inner();
        let program = self.hosting.program(&experiment, req.id).map_err(status_from_error)?;
        let permit = experiment.log_stream().map_err(status_from_error)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::LogChunk, Status>>(16);
        tokio::spawn(async move {
            let _permit = permit;
            let mut changes = program.subscribe();
            let mut sent = LogCursor::default();
            loop {
                // Read the state first: output that lands after it is sent next round.
                let finished = program.state().is_final();
                let (chunks, at, _) = program.output_since(sent);
                sent = at;
                for (stream, data) in chunks {
                    let stream = if stream == StreamKind::Stdout { 1 } else { 2 };
                    if tx.send(Ok(pb::LogChunk { stream, data, end: None })).await.is_err() {
                        return;
                    }
                }
                if finished || !req.follow {
                    let (_, _, dropped) = program.output_since(sent);
                    if dropped > 0 {
                        let note = format!("[weft: {dropped} more bytes of output were not kept]\n");
                        let _ = tx.send(Ok(pb::LogChunk { stream: 2, data: note.into(), end: None })).await;
                    }
                    let _ = tx
                        .send(Ok(pb::LogChunk {
                            stream: 0,
                            data: Default::default(),
                            end: Some(program_info(&program)),
                        }))
                        .await;
                    return;
                }
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream_from(rx))))
    }

    async fn kill_program(
        &self,
        request: Request<pb::KillProgramRequest>,
    ) -> Result<Response<pb::ProgramInfo>, Status> {
        let experiment = self.experiment(&request)?;
        let program = self.hosting.program(&experiment, request.get_ref().id).map_err(status_from_error)?;
        program.kill();
        Ok(Response::new(program_info(&program)))
    }
}

/// A stream over a channel's receiver.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
