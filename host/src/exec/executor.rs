//! A session's executor: plans steps (cached per graph version), runs the
//! local partition of each stage here and the remote ones through
//! [`RemoteTasks`], and gathers fetches and step stats.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::plan::{Plan, PlanKey, RemoteTasks, Stage};
use super::{Placement, RemotePartition, RunRequest, RunResult, Trace, run_partition};
use crate::budget::ByteBudget;
use crate::cluster::TaskId;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Output};
use crate::tensor::Tensor;

/// Plans a session caches at most.
const MAX_CACHED_PLANS: usize = 1024;
/// Nodes the cached plans may hold together: this many per node of the
/// graph, plus [`MIN_CACHED_NODES`].
const MAX_CACHED_NODES_PER_GRAPH_NODE: usize = 4;
const MIN_CACHED_NODES: usize = 1 << 16;

/// A step ready to run: its plan (from the cache or new) and its request.
#[derive(Debug)]
pub struct PreparedStep {
    plan: Arc<Plan>,
    req: RunRequest,
}

/// Runs steps of graphs for one session. Keeps the session's plan cache and
/// the state of its random ops.
#[derive(Debug)]
pub struct Executor {
    home: String,
    placement: Placement,
    plans: HashMap<PlanKey, Arc<Plan>>,
    /// Nodes over all cached plans (each plan holds copies of its nodes).
    cached_nodes: usize,
    /// What the cached plans' copies of nodes take, charged to
    /// `plan_budget` when there is one.
    cached_bytes: usize,
    plan_budget: Option<Arc<ByteBudget>>,
    rngs: HashMap<NodeId, Option<crate::exec::OpRng>>,
}

/// A stage's remote partitions in flight: if the step ends early (an
/// error, a kill), the calls still going are cancelled, not left running.
struct InFlight<T>(Vec<tokio::task::JoinHandle<T>>);

impl<T> Drop for InFlight<T> {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.clear_plans();
    }
}

impl Executor {
    /// An executor for a session whose master is the device named `home`
    /// (its step stats start with that device).
    pub fn new(home: impl Into<String>, placement: Placement) -> Self {
        Executor {
            home: home.into(),
            placement,
            plans: HashMap::new(),
            cached_nodes: 0,
            cached_bytes: 0,
            plan_budget: None,
            rngs: HashMap::new(),
        }
    }

    /// This executor, charging what its cached plans hold to `budget` (a
    /// program's memory).
    pub fn with_plan_budget(mut self, budget: Arc<ByteBudget>) -> Self {
        self.plan_budget = Some(budget);
        self
    }

    /// Forgets the cached plans and gives back their charge (a step still
    /// running one keeps it alive briefly, uncharged).
    fn clear_plans(&mut self) {
        self.plans.clear();
        self.cached_nodes = 0;
        if let Some(b) = &self.plan_budget {
            b.release(self.cached_bytes);
        }
        self.cached_bytes = 0;
    }

    /// The name of the session's home device.
    pub fn home(&self) -> &str {
        &self.home
    }

    /// Where its ops go.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// The full device name node `id` of `graph` runs on under this placement.
    pub fn device_of(&self, graph: &Graph, id: NodeId) -> Result<String> {
        let node = graph.node(id)?;
        let spec = match node.colocate_with {
            Some(var) => &graph.node(var)?.device,
            None => &node.device,
        };
        let task = self
            .placement
            .cluster
            .resolve(spec, &self.placement.default_task)
            .map_err(|e| Error::invalid(format!("op '{}': {}", node.name, e.message())))?;
        Ok(task.cpu_device())
    }

    /// Checks the feeds and finds (or builds) the plan. Needs the graph;
    /// running the step does not, so the graph need not stay locked.
    pub fn prepare(&mut self, graph: &Graph, req: RunRequest) -> Result<PreparedStep> {
        check_feeds(graph, &req)?;
        let key = PlanKey::of(graph, &req);
        let plan = match self.plans.get(&key) {
            Some(plan) => plan.clone(),
            None => {
                let plan = Arc::new(Plan::build(graph, &req, &self.placement)?);
                // Plans copy their nodes: however many distinct runs a
                // program asks for, the cache holds at most a few graphs'
                // worth of them (the graph itself is charged to its owner).
                let nodes = plan.node_count();
                let room = MAX_CACHED_NODES_PER_GRAPH_NODE * graph.nodes().len() + MIN_CACHED_NODES;
                if self.plans.len() >= MAX_CACHED_PLANS || self.cached_nodes + nodes > room {
                    self.clear_plans();
                }
                let bytes = plan.copy_bytes();
                if let Some(budget) = self.plan_budget.clone() {
                    let what = format_args!("the plan of a run ({nodes} nodes)");
                    if budget.charge(&what, bytes).is_err() {
                        // Room may come from forgetting the other plans.
                        self.clear_plans();
                        budget.charge(&what, bytes)?;
                    }
                }
                self.cached_nodes += nodes;
                self.cached_bytes += bytes;
                self.plans.insert(key, plan.clone());
                plan
            }
        };
        Ok(PreparedStep { plan, req })
    }

    /// Runs a prepared step.
    pub async fn execute(&mut self, step: PreparedStep, timeout: Option<Duration>) -> Result<RunResult> {
        let PreparedStep { plan, req } = step;
        let mut trace = req.trace.then(|| {
            let mut t = Trace::default();
            t.device(&self.home);
            t
        });
        let mut values: HashMap<Output, Tensor> = req.feeds.iter().cloned().collect();
        // Names this step's tensors that tasks deliver to each other.
        let step: u64 = rand::random();
        // Dropped unfinished (an error returns, or the step's future is
        // dropped), it tells the receivers of the stages begun to forget.
        let mut unfinished = Unfinished { remote: self.placement.remote.clone(), step, receivers: BTreeSet::new() };
        for stage in &plan.stages {
            unfinished.started(stage);
            let remote = match (&self.placement.remote, stage.remote.is_empty()) {
                (_, true) => None,
                (Some(remote), false) => Some(remote),
                (None, false) => return Err(Error::internal("plan has remote partitions but no remote tasks")),
            };
            let mut results = Vec::with_capacity(stage.remote.len());
            let mut spawned = InFlight(Vec::new());
            if let Some(remote) = remote {
                let run = |part: &Arc<RemotePartition>| {
                    let inputs =
                        part.route.sent(&part.def).map(|o| computed(&values, o)).collect::<Result<Vec<_>>>()?;
                    Ok::<_, Error>(remote.run_partition(
                        part.clone(),
                        step,
                        inputs,
                        req.trace,
                        timeout,
                        req.meter.clone(),
                    ))
                };
                match (stage.remote.as_slice(), &stage.local) {
                    // One remote partition alone (a read or an update of a
                    // variable on another task): awaited right here, with no
                    // task to spawn and hand its result back.
                    ([part], None) => results.push(run(part)?.await?),
                    // Spawned, so remote partitions run while the local one does.
                    (parts, _) => {
                        for part in parts {
                            spawned.0.push(tokio::spawn(run(part)?));
                        }
                    }
                }
            }
            if let Some(local) = &stage.local {
                // Only the partition's declared inputs: its own nodes (such as a
                // repeated variable) must not be shadowed by earlier stages' values.
                let inputs: HashMap<Output, Tensor> =
                    local.def.inputs.iter().map(|&o| Ok((o, computed(&values, o)?))).collect::<Result<_>>()?;
                let rngs = &mut self.rngs;
                let outputs = super::run_blocking(|| {
                    let meter = req.meter.as_deref();
                    run_partition(&local.def, &plan.devices, &local.node_device, &inputs, rngs, trace.as_mut(), meter)
                })?;
                values.extend(local.def.outputs.iter().copied().zip(outputs));
            }
            for handle in spawned.0.iter_mut() {
                results.push(handle.await.map_err(|e| Error::internal(format!("remote partition task failed: {e}")))??);
            }
            for (part, result) in stage.remote.iter().zip(results) {
                if let Some(t) = trace.as_mut() {
                    t.merge(result.stats);
                }
                values.extend(part.route.returned(&part.def).zip(result.outputs));
            }
        }
        unfinished.finished();
        let fetched = req
            .fetches
            .iter()
            .map(|f| {
                values
                    .get(f)
                    .cloned()
                    .ok_or_else(|| Error::internal(format!("fetch of node {} was not computed", f.node)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RunResult { values: fetched, step_stats: trace.map(Trace::finish).unwrap_or_default() })
    }

    /// Prepares and runs one step, holding `graph` throughout.
    pub async fn run(&mut self, graph: &Graph, req: &RunRequest) -> Result<RunResult> {
        let step = self.prepare(graph, req.clone())?;
        self.execute(step, None).await
    }
}

/// A step under way, as far as its deliveries go: dropped before
/// [`Unfinished::finished`] (the step failed, or its future was dropped: a
/// timeout or a stop from outside), it tells every task that a stage it
/// started delivers to to forget the step, in the background, so what they
/// hold for it goes now rather than when it expires.
struct Unfinished {
    remote: Option<Arc<dyn RemoteTasks>>,
    step: u64,
    receivers: BTreeSet<TaskId>,
}

impl Unfinished {
    /// Notes that `stage` is starting.
    fn started(&mut self, stage: &Stage) {
        let tasks = stage.remote.iter().flat_map(|p| p.route.deliveries.iter().map(|d| &d.task));
        self.receivers.extend(tasks.cloned());
    }

    /// The step finished: its deliveries were all taken.
    fn finished(mut self) {
        self.receivers.clear();
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if self.receivers.is_empty() {
            return;
        }
        let (Some(remote), Ok(runtime)) = (&self.remote, tokio::runtime::Handle::try_current()) else {
            return;
        };
        let forgets: Vec<_> = self.receivers.iter().map(|task| remote.forget_step(task, self.step)).collect();
        runtime.spawn(async move {
            for forget in futures_util::future::join_all(forgets).await {
                if let Err(e) = forget {
                    tracing::debug!("a failed step's deliveries stay until they expire: {e}");
                }
            }
        });
    }
}

/// The value of `o` this step has so far; a plan that reads a value before
/// it is computed is a bug, reported instead of panicking the master.
fn computed(values: &HashMap<Output, Tensor>, o: Output) -> Result<Tensor> {
    values
        .get(&o)
        .cloned()
        .ok_or_else(|| Error::internal(format!("the plan uses output {}:{} before it is computed", o.node, o.index)))
}

/// Feeds are checked on every run: plans are cached by which outputs are
/// fed, not by the values.
fn check_feeds(graph: &Graph, req: &RunRequest) -> Result<()> {
    for (out, value) in &req.feeds {
        let node = graph.node(out.node)?;
        let ty = graph.output_type(*out)?;
        if !ty.accepts(value) {
            return Err(Error::invalid(format!(
                "feed for '{}' is {} but '{}' ({}) expects {ty}",
                node.name,
                value.tensor_type(),
                node.name,
                node.op.name()
            )));
        }
    }
    Ok(())
}
