//! A task server: serves `weft.v1.TaskService` and gRPC health for one task
//! on a listener until its shutdown future completes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::error::{Error, Result};
use crate::rpc::{MAX_MESSAGE_BYTES, TaskService};
use crate::task::Task;

/// How long a stopping server lets open connections finish their calls.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Serves `task` on `listener` until `shutdown` completes; then stops taking
/// calls, and ends once open calls finish or [`SHUTDOWN_GRACE`] passes (a
/// client that never closes its connection cannot keep a server alive).
pub async fn serve(listener: TcpListener, task: Arc<Task>, shutdown: impl Future<Output = ()>) -> Result<()> {
    let address = listener.local_addr().map_err(|e| Error::io("reading the listener's address", e))?;
    let (health, health_service) = tonic_health::server::health_reporter();
    let service = crate::rpc::pb::task_service_server::TaskServiceServer::new(TaskService::new(task.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    health.set_serving::<crate::rpc::pb::task_service_server::TaskServiceServer<TaskService>>().await;
    tracing::info!("serving {} on {address}", task.id());
    let stopping = Arc::new(Notify::new());
    let graceful = stopping.clone();
    let server = Server::builder()
        .initial_stream_window_size(16 << 20)
        .initial_connection_window_size(32 << 20)
        .max_frame_size(1 << 20)
        .add_service(health_service)
        .add_service(service)
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
                    tracing::warn!("{}: connections still open after {SHUTDOWN_GRACE:?}; closing them", task.id());
                    Ok(())
                }
            }
        }
    };
    result.map_err(|e| Error::unavailable(format!("serving {} on {address}: {e}", task.id())))
}
