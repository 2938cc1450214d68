//! The `/metrics` endpoint: plain HTTP/1.1 on its own address (`--metrics
//! ADDR`), as Prometheus scrapes, answering OpenMetrics text to a GET
//! (another method is 405, another path 404). The host's state is read
//! off the async threads: a variable mid-update is waited for there. It carries no credentials: bind it where only the
//! operator's scraper reaches.

use std::future::Future;
use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use tokio::net::TcpListener;

use super::HostMetrics;
use crate::error::{Error, Result};

/// What `/metrics` answers with.
pub const CONTENT_TYPE_OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `metrics` at `/metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<HostMetrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let address = listener.local_addr().map_err(|e| Error::io("reading the metrics listener's address", e))?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                let text = tokio::task::spawn_blocking(move || metrics.render()).await.unwrap_or_default();
                ([(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)], text)
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::io(format!("serving /metrics on {address}"), e))
}
