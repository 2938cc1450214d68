//! What a host holds, read at every scrape: its programs by state, and per
//! experiment (the host's own cluster task under `experiment=""`) the
//! bytes its variables hold, its CPU time, the steps its programs ran, and
//! the tensor bytes moved to and from each peer task.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use std::fmt::Write;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelValue, LabelValueEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::exec::PeerTraffic;
use crate::hosting::{Hosting, ProgramState};
use crate::runtime::ExitStatus;
use crate::task::Task;

/// The label value of a program's state.
pub fn state_label(state: &ProgramState) -> &'static str {
    match state {
        ProgramState::Compiling => "compiling",
        ProgramState::Running => "running",
        ProgramState::Exited(ExitStatus::Success) => "succeeded",
        ProgramState::Exited(ExitStatus::Failed(_)) => "failed",
        ProgramState::Exited(ExitStatus::Trapped(_)) => "trapped",
        ProgramState::Exited(ExitStatus::ResourceExhausted(_)) => "over-limit",
        ProgramState::Failed(..) => "not-started",
        ProgramState::Killed => "killed",
    }
}

/// Where the collector reads from: a hosting host's experiments (and its
/// own task), or the tasks of `weft run` or `weft launch` and their programs.
#[derive(Default)]
pub struct Sources {
    /// The experiments and programs of a `weft serve` host.
    pub hosting: Option<Arc<Hosting>>,
    /// Tasks outside any experiment (`weft run` and `weft launch` tasks; a
    /// `weft serve --cluster` host's is found through `hosting`).
    pub own: Mutex<Vec<Arc<Task>>>,
    /// The state of the program of each task in `own`, by task, set as it goes.
    pub programs: Mutex<BTreeMap<String, &'static str>>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("hosting", &self.hosting.is_some())
            .field("own", &self.own)
            .finish_non_exhaustive()
    }
}

/// One experiment's (or the host's own) tasks, for the per-task families.
struct Tenant {
    name: String,
    tasks: Vec<Arc<Task>>,
}

impl Sources {
    fn tenants(&self) -> Vec<Tenant> {
        let mut own = self.own.lock().unwrap_or_else(|p| p.into_inner()).clone();
        own.extend(self.hosting.as_ref().and_then(|h| h.own_task().cloned()));
        let mut tenants = vec![Tenant { name: String::new(), tasks: own }];
        if let Some(hosting) = &self.hosting {
            for e in hosting.experiments() {
                let tasks = e.served_tasks().map(|s| s.task().clone()).collect();
                tenants.push(Tenant { name: e.name().to_string(), tasks });
            }
        }
        tenants
    }
}

/// Encodes [`Sources`] at each scrape.
#[derive(Debug)]
pub struct HostCollector(pub Arc<Sources>);

/// A label value from a name someone chose (an experiment's, a job's, an
/// address), escaped as the exposition format requires (`\\`, `\"`,
/// `\n`): the encoder writes values as they are, so an unescaped quote
/// would end the value and let the name write series of its own.
#[derive(Clone, Copy)]
struct Text<'a>(&'a str);

impl EncodeLabelValue for Text<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

type Labels<'a, const N: usize> = [(&'static str, Text<'a>); N];

/// Peers of one experiment (or of the host's own tasks) shown by name; the
/// bytes of the rest are summed under `peer="other"`. An experiment's
/// cluster spec may name any number of tasks.
pub const MAX_PEERS: usize = 64;

impl Collector for HostCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sources = &self.0;
        let tenants = sources.tenants();

        let mut programs: Vec<(String, &'static str, u64)> = Vec::new();
        let mut count = |experiment: &str, state: &'static str| match programs
            .iter_mut()
            .find(|(e, s, _)| e == experiment && *s == state)
        {
            Some(row) => row.2 += 1,
            None => programs.push((experiment.to_string(), state, 1)),
        };
        for state in sources.programs.lock().unwrap_or_else(|p| p.into_inner()).values() {
            count("", state);
        }
        let experiments = sources.hosting.as_ref().map(|h| h.experiments()).unwrap_or_default();
        for e in &experiments {
            for p in e.programs() {
                count(e.name(), state_label(&p.state()));
            }
        }
        let mut family = encoder.encode_descriptor(
            "weft_programs",
            "Programs this host holds (finished ones while it keeps their records), by experiment and state",
            None,
            MetricType::Gauge,
        )?;
        for (experiment, state, n) in &programs {
            let labels: Labels<2> = [("experiment", Text(experiment)), ("state", Text(state))];
            family.encode_family(&labels)?.encode_gauge(&(*n as i64))?;
        }

        if sources.hosting.is_some() {
            let mut family =
                encoder.encode_descriptor("weft_experiments", "Experiments on this host", None, MetricType::Gauge)?;
            family.encode_gauge(&(experiments.len() as i64))?;
            let mut family = encoder.encode_descriptor(
                "weft_experiment_cpu_seconds",
                "CPU time of each experiment's programs on this host (guest code and the kernels of their steps), \
                 finished programs included",
                None,
                MetricType::Counter,
            )?;
            for e in &experiments {
                let labels: Labels<1> = [("experiment", Text(e.name()))];
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, f64>(&e.cpu_time().as_secs_f64(), None)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "weft_variable_bytes",
            "Bytes the values of each task's variables hold on this host",
            None,
            MetricType::Gauge,
        )?;
        for tenant in &tenants {
            for task in &tenant.tasks {
                let id = task.id().to_string();
                let labels: Labels<2> = [("experiment", Text(&tenant.name)), ("task", Text(&id))];
                family.encode_family(&labels)?.encode_gauge(&(task.device().variables().value_bytes() as i64))?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "weft_steps",
            "Session runs (steps) the programs of each task here ran to the end",
            None,
            MetricType::Counter,
        )?;
        for tenant in &tenants {
            for task in &tenant.tasks {
                let id = task.id().to_string();
                let labels: Labels<2> = [("experiment", Text(&tenant.name)), ("task", Text(&id))];
                family.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&task.steps(), None)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "weft_peer_bytes",
            "Tensor bytes this host's sessions moved to and from each peer task, by direction and path \
             (grpc: in gRPC messages; shm: through shared memory)",
            None,
            MetricType::Counter,
        )?;
        // Summed over the tenant's clients (each task of `weft launch` has
        // its own; an experiment's tasks share one), counted once each.
        let mut peers: BTreeMap<(&str, String, String), PeerTraffic> = BTreeMap::new();
        let mut seen = HashSet::new();
        let mut named: HashMap<&str, usize> = HashMap::new();
        for tenant in &tenants {
            for task in &tenant.tasks {
                let Some(remote) = task.remote() else { continue };
                if !seen.insert(Arc::as_ptr(remote) as *const () as usize) {
                    continue;
                }
                for p in remote.peer_traffic() {
                    if p.sent_streamed + p.sent_shared + p.received_streamed + p.received_shared == 0 {
                        continue;
                    }
                    let key = (tenant.name.as_str(), p.task.clone(), p.address.clone());
                    let shown = named.entry(tenant.name.as_str()).or_insert(0);
                    let key = match peers.contains_key(&key) || *shown < MAX_PEERS {
                        true => key,
                        false => (tenant.name.as_str(), "other".to_string(), "other".to_string()),
                    };
                    if !peers.contains_key(&key) && key.1 != "other" {
                        *shown += 1;
                    }
                    let sum = peers.entry(key).or_default();
                    sum.sent_streamed += p.sent_streamed;
                    sum.sent_shared += p.sent_shared;
                    sum.received_streamed += p.received_streamed;
                    sum.received_shared += p.received_shared;
                }
            }
        }
        for ((experiment, task, address), sum) in &peers {
            encode_peer(&mut family, experiment, task, address, sum)?;
        }
        Ok(())
    }
}

fn encode_peer(
    family: &mut prometheus_client::encoding::MetricEncoder,
    experiment: &str,
    task: &str,
    address: &str,
    peer: &PeerTraffic,
) -> Result<(), std::fmt::Error> {
    let rows = [
        ("sent", "grpc", peer.sent_streamed),
        ("sent", "shm", peer.sent_shared),
        ("received", "grpc", peer.received_streamed),
        ("received", "shm", peer.received_shared),
    ];
    for (direction, path, bytes) in rows {
        let labels: Labels<5> = [
            ("experiment", Text(experiment)),
            ("peer", Text(task)),
            ("address", Text(address)),
            ("direction", Text(direction)),
            ("path", Text(path)),
        ];
        family.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&bytes, None)?;
    }
    Ok(())
}
