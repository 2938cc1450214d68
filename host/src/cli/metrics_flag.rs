//! `--metrics ADDR`: where a `weft serve`, `run` or `launch` process
//! answers Prometheus, and the task that serves it.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::error::Error;
use crate::metrics::HostMetrics;

/// Where a host answers Prometheus scrapes.
#[derive(Debug, Clone, Default, clap::Args)]
pub(super) struct MetricsArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics (plain HTTP, no
    /// credentials: bind it where only your scraper reaches, e.g. `127.0.0.1:9464`).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
}

impl MetricsArgs {
    /// The listener, bound now so that a bad address fails the start.
    pub(super) async fn bind(&self) -> Result<Option<TcpListener>, Error> {
        let Some(address) = &self.metrics else { return Ok(None) };
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| Error::io(format!("listening on {address} for --metrics"), e))?;
        Ok(Some(listener))
    }
}

/// Serves `metrics` on `listener` (if any) until the process ends.
pub(super) fn spawn_metrics(listener: Option<TcpListener>, metrics: &Arc<HostMetrics>) {
    let Some(listener) = listener else { return };
    let address = listener.local_addr().map_or_else(|_| "?".to_string(), |a| a.to_string());
    super::say::info(format_args!("metrics on http://{address}/metrics"));
    let metrics = metrics.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::metrics::http::serve(listener, metrics, std::future::pending()).await {
            super::say::error(e);
        }
    });
}
