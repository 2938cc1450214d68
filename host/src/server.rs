//! A host's gRPC server: `weft.v1.TaskService` for its tasks, the hosting
//! `ControlService` when it takes uploads, and gRPC health, every call
//! through the credentials interceptor, until its shutdown future completes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use tonic::service::interceptor::InterceptedService;

use crate::error::{Error, Result};
use crate::hosting::ControlService;
use crate::metrics::{RpcLayer, RpcMetrics};
use crate::rpc::pb::control_service_server::ControlServiceServer;
use crate::rpc::pb::task_service_server::TaskServiceServer;
use crate::rpc::{
    AuthInterceptor, Authenticator, Caller, MAX_MESSAGE_BYTES, MAX_TASK_MESSAGE_BYTES, ServedTask, SingleTask,
    TaskDirectory, TaskService,
};
use crate::task::Task;

/// How long a stopping server lets open connections finish their calls.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Lets every call in as [`Caller::Anonymous`], or as the experiment it
/// names (which a single-task server then does not know): a cluster task
/// server's network is its trust boundary, as in TensorFlow.
struct OpenAccess;

impl Authenticator for OpenAccess {
    fn authenticate(&self, metadata: &tonic::metadata::MetadataMap) -> std::result::Result<Caller, tonic::Status> {
        Ok(match crate::rpc::auth::experiment_of(metadata)? {
            Some(name) => Caller::Experiment(name.to_string()),
            None => Caller::Anonymous,
        })
    }
}

/// Serves `task` on `listener` until `shutdown` completes; then stops taking
/// calls, and ends once open calls finish or [`SHUTDOWN_GRACE`] passes (a
/// client that never closes its connection cannot keep a server alive).
///
/// Masters in this process reach it without gRPC while it serves (listed
/// under its address in the cluster spec, [`crate::rpc::in_process`]).
/// It is listed at once, before the returned future first runs.
pub fn serve(
    listener: TcpListener,
    task: Arc<Task>,
    shutdown: impl Future<Output = ()>,
) -> impl Future<Output = Result<()>> {
    serve_measured(listener, task, Arc::default(), shutdown)
}

/// [`serve`], counting its calls in `rpc` (a host's `/metrics`).
pub fn serve_measured(
    listener: TcpListener,
    task: Arc<Task>,
    rpc: Arc<RpcMetrics>,
    shutdown: impl Future<Output = ()>,
) -> impl Future<Output = Result<()>> {
    let label = task.id().to_string();
    let address = task.cluster().jobs()[&task.id().job][task.id().index as usize].clone();
    let served = Arc::new(ServedTask::new(task));
    let listing = crate::rpc::in_process::list(&address, &served);
    let shutdown = async move {
        shutdown.await;
        // Unlisted as soon as it stops taking calls, as its socket is.
        drop(listing);
    };
    let services = HostServices {
        directory: Arc::new(SingleTask(served)),
        auth: Arc::new(OpenAccess),
        control: None,
        tls: None,
        rpc,
    };
    async move { serve_host(listener, services, &label, shutdown).await }
}

/// What a host serves: its tasks (`TaskService`), who may call, and
/// optionally the hosting control API.
pub struct HostServices {
    /// The tasks served here.
    pub directory: Arc<dyn TaskDirectory>,
    /// Checks every call's credentials.
    pub auth: Arc<dyn Authenticator>,
    /// The control API, on hosts that take uploads.
    pub control: Option<ControlService>,
    /// TLS for every connection, when configured.
    pub tls: Option<crate::tls::ServerTls>,
    /// Where its calls are counted and timed.
    pub rpc: Arc<RpcMetrics>,
}

impl HostServices {
    /// A hosting host: its tasks, credentials and control API all come from
    /// `hosting`.
    pub fn hosting(hosting: &Arc<crate::hosting::Hosting>, tls: Option<crate::tls::ServerTls>) -> Self {
        HostServices {
            directory: hosting.clone(),
            auth: hosting.clone(),
            control: Some(ControlService::new(hosting.clone())),
            tls,
            rpc: Arc::default(),
        }
    }
}

/// Serves `services` on `listener` until `shutdown` completes (see [`serve`]).
/// `label` names the host in logs and errors.
pub async fn serve_host(
    listener: TcpListener,
    services: HostServices,
    label: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let address = listener.local_addr().map_err(|e| Error::io("reading the listener's address", e))?;
    let (health, health_service) = tonic_health::server::health_reporter();
    let auth = AuthInterceptor(services.auth);
    let tasks = TaskServiceServer::new(TaskService::new(services.directory))
        .max_decoding_message_size(MAX_TASK_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    health.set_serving::<TaskServiceServer<TaskService>>().await;
    // Upload chunks are small; the module size limit is checked as they come.
    let control = services.control.map(|c| InterceptedService::new(ControlServiceServer::new(c), auth.clone()));
    if control.is_some() {
        health.set_serving::<ControlServiceServer<ControlService>>().await;
    }
    tracing::debug!("serving {label} on {address}");
    let stopping = Arc::new(Notify::new());
    let graceful = stopping.clone();
    let mut builder = Server::builder();
    if let Some(tls) = &services.tls {
        builder = builder.tls_config(tls.config()).map_err(|e| Error::invalid(format!("TLS for {label}: {e}")))?;
    }
    // Connections whose other end froze are closed, freeing their streams.
    let server = builder
        .layer(RpcLayer(services.rpc))
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .initial_stream_window_size(16 << 20)
        .initial_connection_window_size(32 << 20)
        .max_frame_size(1 << 20)
        // Calls one connection may have open at once (hyper's default is
        // 200): steps of many programs share a channel between two hosts.
        .max_concurrent_streams(Some(256))
        .add_service(health_service)
        .add_service(InterceptedService::new(tasks, auth))
        .add_optional_service(control)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), async move {
            graceful.notified().await
        });
    tokio::pin!(server);
    let result = tokio::select! {
        r = &mut server => r,
        () = shutdown => {
            stopping.notify_one();
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("{label}: connections still open after {SHUTDOWN_GRACE:?}; closing them");
                    Ok(())
                }
            }
        }
    };
    result.map_err(|e| Error::unavailable(format!("serving {label} on {address}: {e}")))
}
