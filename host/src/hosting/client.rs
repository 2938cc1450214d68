//! The one typed client of a host's `weft.v1.ControlService`: connects
//! (plaintext or TLS), attaches credentials to every call, uploads a module
//! in chunks unless the experiment has it, and turns a failed call into an
//! [`Error`] that keeps its code and names the host. The CLI, the tests and
//! the benchmarks all use it.

use tonic::transport::Channel;

use crate::error::{Error, Result};
use crate::rpc::{Credentials, pb};
use crate::runtime::module_hash;
use crate::tls::ClientTls;

/// Bytes per upload message.
const UPLOAD_CHUNK: usize = 1 << 20;

/// A client of one host, acting with one set of credentials.
#[derive(Clone, Debug)]
pub struct ControlClient {
    host: String,
    inner: pb::control_service_client::ControlServiceClient<Channel>,
    credentials: Credentials,
}

impl ControlClient {
    /// Connects to `host` (over TLS trusting `tls`, if given), acting with `credentials`.
    pub async fn connect(host: &str, tls: Option<&ClientTls>, credentials: Credentials) -> Result<Self> {
        let endpoint =
            crate::tls::endpoint(host, tls)?.connect_timeout(std::time::Duration::from_secs(3)).tcp_nodelay(true);
        let channel =
            endpoint.connect().await.map_err(|e| Error::unavailable(format!("cannot reach host {host}: {e}")))?;
        Ok(ControlClient {
            host: host.to_string(),
            inner: pb::control_service_client::ControlServiceClient::new(channel),
            credentials,
        })
    }

    /// The host's address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The same connection, acting with other credentials.
    pub fn acting_as(&self, credentials: Credentials) -> Self {
        ControlClient { credentials, ..self.clone() }
    }

    fn request<T>(&self, message: T) -> Result<tonic::Request<T>> {
        let mut request = tonic::Request::new(message);
        self.credentials.attach(&mut request, None).map_err(|s| Error::invalid(s.message().to_string()))?;
        Ok(request)
    }

    /// A failed call: its code, and its message naming the host.
    fn failed(&self, s: tonic::Status) -> Error {
        let e = crate::rpc::error_from_status(&s);
        // What a plaintext client sees from a TLS host.
        let hint = if ["h2 protocol error", "operation was canceled", "transport error"]
            .iter()
            .any(|m| s.message().contains(m))
        {
            " (if the host serves TLS, pass --tls-ca CA.pem)"
        } else {
            ""
        };
        let code = crate::rpc::auth::code_name(s.code());
        Error::status(e.code(), format!("host {}: {code}: {}{hint}", self.host, s.message()))
    }

    /// Creates an experiment.
    pub async fn create_experiment(&mut self, req: pb::CreateExperimentRequest) -> Result<pb::ExperimentInfo> {
        let req = self.request(req)?;
        self.inner.create_experiment(req).await.map(|r| r.into_inner()).map_err(|s| self.failed(s))
    }

    /// The experiments the credentials may see.
    pub async fn list_experiments(&mut self) -> Result<Vec<pb::ExperimentInfo>> {
        let req = self.request(pb::ListExperimentsRequest {})?;
        self.inner.list_experiments(req).await.map(|r| r.into_inner().experiments).map_err(|s| self.failed(s))
    }

    /// Deletes experiment `name` (empty: the credentials' own); returns how
    /// many programs it stopped.
    pub async fn delete_experiment(&mut self, name: &str) -> Result<u32> {
        let req = self.request(pb::DeleteExperimentRequest { name: name.to_string() })?;
        self.inner.delete_experiment(req).await.map(|r| r.into_inner().programs_stopped).map_err(|s| self.failed(s))
    }

    /// Uploads `bytes` unless the experiment already has them; returns their sha256.
    pub async fn upload(&mut self, bytes: &[u8]) -> Result<String> {
        let sha256 = module_hash(bytes);
        let req = self.request(pb::HasModuleRequest { sha256: sha256.clone() })?;
        if self.inner.has_module(req).await.map_err(|s| self.failed(s))?.into_inner().present {
            return Ok(sha256);
        }
        let mut chunks: Vec<pb::UploadChunk> = bytes
            .chunks(UPLOAD_CHUNK)
            .enumerate()
            .map(|(i, c)| pb::UploadChunk {
                sha256: if i == 0 { sha256.clone() } else { String::new() },
                total_bytes: if i == 0 { bytes.len() as u64 } else { 0 },
                data: bytes::Bytes::copy_from_slice(c),
            })
            .collect();
        if chunks.is_empty() {
            chunks.push(pb::UploadChunk { sha256: sha256.clone(), total_bytes: 0, data: bytes::Bytes::new() });
        }
        let req = self.request(futures_util::stream::iter(chunks))?;
        self.inner.upload_module(req).await.map(|r| r.into_inner().sha256).map_err(|s| self.failed(s))
    }

    /// Starts a program.
    pub async fn start(&mut self, req: pb::StartProgramRequest) -> Result<pb::ProgramInfo> {
        let req = self.request(req)?;
        self.inner.start_program(req).await.map(|r| r.into_inner()).map_err(|s| self.failed(s))
    }

    /// The experiment's programs on this host.
    pub async fn programs(&mut self) -> Result<Vec<pb::ProgramInfo>> {
        let req = self.request(pb::ListProgramsRequest {})?;
        self.inner.list_programs(req).await.map(|r| r.into_inner().programs).map_err(|s| self.failed(s))
    }

    /// Program `id`'s output so far (and, with `follow`, until it ends).
    pub async fn logs(&mut self, id: u64, follow: bool) -> Result<LogStream> {
        let req = self.request(pb::LogsRequest { id, follow })?;
        let stream = self.inner.stream_logs(req).await.map_err(|s| self.failed(s))?.into_inner();
        Ok(LogStream { stream, client: self.clone() })
    }

    /// Stops program `id`.
    pub async fn kill(&mut self, id: u64) -> Result<pb::ProgramInfo> {
        let req = self.request(pb::KillProgramRequest { id })?;
        self.inner.kill_program(req).await.map(|r| r.into_inner()).map_err(|s| self.failed(s))
    }
}

/// A program's output as it comes.
pub struct LogStream {
    stream: tonic::Streaming<pb::LogChunk>,
    client: ControlClient,
}

impl LogStream {
    /// The next chunk, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<pb::LogChunk>> {
        self.stream.message().await.map_err(|s| self.client.failed(s))
    }
}
