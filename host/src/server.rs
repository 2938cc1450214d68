//! A task server: serves `weft.v1.TaskService` and gRPC health for one task
//! on a listener until its shutdown future completes.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::error::{Error, Result};
use crate::rpc::{MAX_MESSAGE_BYTES, TaskService};
use crate::task::Task;

/// Serves `task` on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, task: Arc<Task>, shutdown: impl Future<Output = ()>) -> Result<()> {
    let address = listener.local_addr().map_err(|e| Error::io("reading the listener's address", e))?;
    let (health, health_service) = tonic_health::server::health_reporter();
    let service = crate::rpc::pb::task_service_server::TaskServiceServer::new(TaskService::new(task.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    health.set_serving::<crate::rpc::pb::task_service_server::TaskServiceServer<TaskService>>().await;
    tracing::info!("serving {} on {address}", task.id());
    Server::builder()
        .initial_stream_window_size(16 << 20)
        .initial_connection_window_size(32 << 20)
        .add_service(health_service)
        .add_service(service)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), shutdown)
        .await
        .map_err(|e| Error::unavailable(format!("serving {} on {address}: {e}", task.id())))
}
