//! A host's Prometheus metrics: what [`HostMetrics::render`] answers at
//! `/metrics` ([`http::serve`]).
//!
//! - `weft_programs{experiment,state}`: programs by state.
//! - `weft_experiments`, `weft_experiment_cpu_seconds_total{experiment}`.
//! - `weft_variable_bytes{experiment,task}`, `weft_steps_total{experiment,task}`.
//! - `weft_peer_bytes_total{experiment,peer,address,direction,path}`.
//! - `weft_rpc_server_calls_total{service,method,code}` and the histogram
//!   `weft_rpc_server_seconds{service,method}` ([`rpc`]).
//!
//! Everything but the RPC families is read from the host's live state at
//! each scrape ([`collect`]), so a deleted experiment's series go with it.
//! The host's own cluster task (not an experiment's) has `experiment=""`.

pub mod collect;
pub mod http;
pub mod rpc;

use std::sync::Arc;

use prometheus_client::registry::Registry;

pub use collect::Sources;
pub use rpc::{RpcLayer, RpcMetrics};

use crate::hosting::Hosting;
use crate::task::Task;

/// One host's metrics.
#[derive(Debug)]
pub struct HostMetrics {
    registry: Registry,
    rpc: Arc<RpcMetrics>,
    sources: Arc<Sources>,
}

impl HostMetrics {
    /// Metrics of a `weft serve` host (`hosting`), or of a `weft run` task
    /// (`own`).
    pub fn new(hosting: Option<Arc<Hosting>>, own: Option<Arc<Task>>) -> Self {
        Self::with_rpc(hosting, own, Arc::default())
    }

    /// [`HostMetrics::new`], with RPC metrics a server already records into.
    pub fn with_rpc(hosting: Option<Arc<Hosting>>, own: Option<Arc<Task>>, rpc: Arc<RpcMetrics>) -> Self {
        let sources = Arc::new(Sources { hosting, own, program: Default::default() });
        let mut registry = Registry::default();
        rpc.register(&mut registry);
        registry.register_collector(Box::new(collect::HostCollector(sources.clone())));
        HostMetrics { registry, rpc, sources }
    }

    /// The RPC metrics its gRPC server's [`RpcLayer`] records into.
    pub fn rpc(&self) -> &Arc<RpcMetrics> {
        &self.rpc
    }

    /// Sets the state of a `weft run` program (a `weft_programs` label).
    pub fn set_program_state(&self, state: &'static str) {
        *self.sources.program.lock().unwrap_or_else(|p| p.into_inner()) = Some(state);
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
