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

use crate::cluster::TaskId;
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
    /// Metrics of a `weft serve` host (`hosting`), or (with `None`) of the
    /// tasks [`HostMetrics::add_task`] adds.
    pub fn new(hosting: Option<Arc<Hosting>>) -> Self {
        Self::with_rpc(hosting, Arc::default())
    }

    /// [`HostMetrics::new`], with RPC metrics a server already records into.
    pub fn with_rpc(hosting: Option<Arc<Hosting>>, rpc: Arc<RpcMetrics>) -> Self {
        let sources = Arc::new(Sources { hosting, ..Sources::default() });
        let mut registry = Registry::default();
        rpc.register(&mut registry);
        registry.register_collector(Box::new(collect::HostCollector(sources.clone())));
        HostMetrics { registry, rpc, sources }
    }

    /// The RPC metrics its gRPC server's [`RpcLayer`] records into.
    pub fn rpc(&self) -> &Arc<RpcMetrics> {
        &self.rpc
    }

    /// Adds a task outside any experiment (of `weft run` or `weft launch`).
    pub fn add_task(&self, task: Arc<Task>) {
        self.sources.own.lock().unwrap_or_else(|p| p.into_inner()).push(task);
    }

    /// Sets the state of the program of `task`, a task outside any
    /// experiment (a [`collect::state_label`]).
    pub fn set_program_state(&self, task: &TaskId, state: &'static str) {
        self.sources.programs.lock().unwrap_or_else(|p| p.into_inner()).insert(task.to_string(), state);
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use futures_util::future::BoxFuture;

    use super::*;
    use crate::cluster::ClusterSpec;
    use crate::exec::{PartitionResult, PeerTraffic, RemotePartition, RemoteTasks};

    /// A client that reached these peers, having moved these bytes.
    #[derive(Debug)]
    struct Reached(Vec<PeerTraffic>);

    fn peer(task: &str, address: &str, sent: u64) -> PeerTraffic {
        PeerTraffic {
            task: task.into(),
            address: address.into(),
            sent_streamed: sent,
            received_shared: 2 * sent,
            ..PeerTraffic::default()
        }
    }

    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    impl RemoteTasks for Reached {
        fn run_partition(
            &self,
            _: Arc<RemotePartition>,
            _: u64,
            _: Vec<crate::tensor::Tensor>,
            _: bool,
            _: Option<std::time::Duration>,
            _: Option<Arc<crate::exec::ComputeMeter>>,
        ) -> BoxFuture<'static, crate::error::Result<PartitionResult>> {
            Box::pin(async { Err(crate::error::Error::unavailable("not in this test")) })
        }

        fn peer_traffic(&self) -> Vec<PeerTraffic> {
            self.0.clone()
        }
    }

    /// Two tasks of one process (as under `weft launch`), each with its own
    /// client to the ps: one series per peer and path, their sum, and no
    /// series twice (which Prometheus would reject).
    #[test]
    fn peers_reached_by_several_tasks_are_one_series_each() {
        let jobs = BTreeMap::from([
            ("ps".to_string(), vec!["h:0".to_string()]),
            ("worker".into(), vec!["h:1".into(), "h:2".into()]),
        ]);
        let cluster = ClusterSpec::new(jobs).unwrap();
        let metrics = HostMetrics::new(None);
        for (i, bytes) in [(0, 10), (1, 5)] {
            let task = Task::new(cluster.clone(), TaskId::new("worker", i))
                .unwrap()
                .with_remote(Arc::new(Reached(vec![peer("/job:ps/task:0", "h:0", bytes)])));
            let task = Arc::new(task);
            metrics.set_program_state(task.id(), if i == 0 { "running" } else { "succeeded" });
            metrics.add_task(task);
        }
        let text = metrics.render();
        let samples = samples(&text);
        let series: HashSet<&str> = samples.iter().map(|l| l.rsplit_once(' ').unwrap().0).collect();
        assert_eq!(series.len(), samples.len(), "{text}");
        let peer = r#"weft_peer_bytes_total{experiment="",peer="/job:ps/task:0",address="h:0""#;
        assert!(text.contains(&format!(r#"{peer},direction="sent",path="grpc"}} 15"#)), "{text}");
        assert!(text.contains(&format!(r#"{peer},direction="received",path="shm"}} 30"#)), "{text}");
        assert!(text.contains(r#"weft_programs{experiment="",state="running"} 1"#), "{text}");
        assert!(text.contains(r#"weft_steps_total{experiment="",task="/job:worker/task:1"} 0"#), "{text}");
        assert!(!text.contains("weft_experiments"), "no hosting, no experiments family: {text}");
    }

    /// Names someone chose reach the exposition escaped, so they cannot end
    /// a label value and write series; past MAX_PEERS a client's peers are
    /// summed as `other`, and peers it moved nothing with are not shown.
    #[test]
    fn chosen_names_are_escaped_and_peers_are_bounded() {
        let cluster = ClusterSpec::new(BTreeMap::from([("w\"} 1\nx".to_string(), vec!["h:1".to_string()])])).unwrap();
        let mut reached: Vec<PeerTraffic> =
            (0..collect::MAX_PEERS + 10).map(|i| peer(&format!("/job:ps/task:{i}"), "a\"b", 1)).collect();
        reached.push(peer("/job:idle/task:0", "h:9", 0));
        let task = Task::new(cluster, TaskId::new("w\"} 1\nx", 0)).unwrap().with_remote(Arc::new(Reached(reached)));
        let metrics = HostMetrics::new(None);
        metrics.add_task(Arc::new(task));
        let text = metrics.render();
        assert!(text.contains(r#"weft_steps_total{experiment="",task="/job:w\"} 1\nx/task:0"} 0"#), "{text}");
        for line in samples(&text) {
            assert!(line.starts_with("weft_") && line.matches('{').count() <= 1, "a forged or broken line: {line:?}");
        }
        let sent = |l: &&str| l.starts_with("weft_peer_bytes_total{") && l.contains(r#"direction="sent",path="grpc""#);
        let rows: Vec<&str> = samples(&text).into_iter().filter(sent).collect();
        assert_eq!(rows.len(), collect::MAX_PEERS + 1, "{text}");
        assert!(rows.iter().any(|l| l.contains(r#"peer="other",address="other""#) && l.ends_with(" 10")), "{text}");
        assert!(!text.contains("/job:idle"), "{text}");
    }
}
