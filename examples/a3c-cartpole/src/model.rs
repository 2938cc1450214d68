//! The graph every task builds: the shared actor-critic network and the
//! run's bookkeeping on the ps, and each worker's local copy of the network
//! with its loss, clipped gradients and shared-RMSProp update.
//!
//! As in the A3C paper, a worker acts with its own copy θ′ of the global
//! parameters θ (so choosing an action is a run on the worker's task alone),
//! computes the rollout's gradients with respect to θ′, applies them to θ on
//! the ps and then copies θ back into θ′, all in one run.

use weft_sdk::train::{Optimizer, ReplicaDeviceSetter, RmsProp, clip_by_global_norm, global_step};
use weft_sdk::{Code, DType, Error, Graph, Op, Output, Result, Variable, VariableOptions};

/// How many episodes each worker's shared return log holds.
pub const LOG_LEN: usize = 100;
/// The ps task holding the bookkeeping variables.
pub const BOOK_DEVICE: &str = "/job:ps/task:0";
/// Values of the shared `stop` flag.
pub const RUNNING: f32 = 0.0;
/// The global env-step budget is used up.
pub const STOP_BUDGET: f32 = 1.0;
/// The 100-episode mean reached the target (wins over [`STOP_BUDGET`]).
pub const STOP_SOLVED: f32 = 2.0;

const CLIP_NORM: f32 = 40.0;
const RMS_DECAY: f64 = 0.99;
const RMS_EPSILON: f64 = 0.1;
const VALUE_WEIGHT: f32 = 0.5;
const ENTROPY_WEIGHT: f32 = 0.01;

/// Hyperparameters of the graph.
#[derive(Clone, Debug)]
pub struct Config {
    /// This worker's task index.
    pub worker: u32,
    /// How many workers the cluster has.
    pub workers: u32,
    /// How many ps tasks hold the network.
    pub ps_tasks: u32,
    /// Width of the hidden layer.
    pub hidden: i64,
    /// RMSProp's learning rate.
    pub learning_rate: f64,
    /// Seed of the initial weights.
    pub seed: i64,
}

/// Run bookkeeping on the ps, shared by every task.
pub struct Shared {
    /// Environment steps taken by all workers.
    pub env_steps: Variable,
    /// Episodes finished by all workers.
    pub episodes: Variable,
    /// Gradient updates applied (the global step).
    pub updates: Variable,
    /// [`RUNNING`], [`STOP_BUDGET`] or [`STOP_SOLVED`].
    pub stop: Variable,
    /// How many workers have finished.
    pub done: Variable,
    /// Per worker: its last [`LOG_LEN`] episodes as rows (global episode
    /// number, return); number −1 marks an empty row.
    pub logs: Vec<Variable>,
}

fn bookkeeping(g: &Graph, name: &str, initial: impl Into<weft_sdk::Operand>) -> Result<Variable> {
    Variable::with_options(g, initial, name, VariableOptions { trainable: false, ..Default::default() })
}

/// Declares the bookkeeping variables (placed by the caller's device scope).
pub fn shared(g: &Graph, workers: u32) -> Result<Shared> {
    let logs = (0..workers)
        .map(|w| bookkeeping(g, &format!("episode_log_{w}"), g.fill(&[LOG_LEN as i64, 2], -1.0f32)?))
        .collect::<Result<Vec<_>>>()?;
    Ok(Shared {
        env_steps: bookkeeping(g, "env_steps", 0i64)?,
        episodes: bookkeeping(g, "episodes", 0i64)?,
        updates: global_step(g)?,
        stop: bookkeeping(g, "stop", RUNNING)?,
        done: bookkeeping(g, "workers_done", 0.0f32)?,
        logs,
    })
}

/// Names and shapes of the network's parameters, in creation order, with
/// the half-width of their uniform initializer (0 for zeros).
fn layout(hidden: i64) -> [(&'static str, Vec<i64>, f64); 6] {
    let glorot = |fan_in: i64, fan_out: i64| (6.0 / (fan_in + fan_out) as f64).sqrt();
    [
        ("W1", vec![4, hidden], glorot(4, hidden)),
        ("b1", vec![hidden], 0.0),
        // Small policy weights: the first policy is close to uniform.
        ("W_pi", vec![hidden, 2], 0.01),
        ("b_pi", vec![2], 0.0),
        ("W_v", vec![hidden, 1], glorot(hidden, 1)),
        ("b_v", vec![1], 0.0),
    ]
}

/// θ: the network on the ps, initialized from seeded random ops.
fn global_params(g: &Graph, setter: &ReplicaDeviceSetter, cfg: &Config) -> Result<Vec<Variable>> {
    let mut seed = cfg.seed;
    let mut params = Vec::new();
    for (name, shape, limit) in layout(cfg.hidden) {
        seed += 1;
        let init = if limit > 0.0 { g.random_uniform(&shape, -limit, limit, Some(seed))? } else { g.zeros(&shape)? };
        params.push(setter.variable(g, init, name)?);
    }
    Ok(params)
}

/// θ′: this worker's copy, on its own task, zeros until the first sync.
fn local_params(g: &Graph, hidden: i64) -> Result<Vec<Variable>> {
    layout(hidden)
        .into_iter()
        .map(|(name, shape, _)| {
            let options = VariableOptions { trainable: false, ..Default::default() };
            Variable::with_options(g, g.zeros(&shape)?, &format!("local_{name}"), options)
        })
        .collect()
}

/// θ′ ← θ. The reads are fresh `Identity` ops, so that inside a control
/// dependency they see θ after the update, not before.
fn sync(g: &Graph, local: &[Variable], global: &[Variable]) -> Result<Op> {
    let assigns = local
        .iter()
        .zip(global)
        .map(|(l, v)| Ok(l.assign(g.identity(v.output())?)?.op()))
        .collect::<Result<Vec<_>>>()?;
    g.group(&assigns)
}

/// The network's outputs for a batch of states.
struct Heads {
    probs: Output,
    log_probs: Output,
    value: Output,
}

fn dense(g: &Graph, x: Output, w: &Variable, b: &Variable) -> Result<Output> {
    g.add(g.matmul(x, w.value())?, b.value())
}

/// 4 → hidden (tanh) → policy logits (2) and value (1).
fn forward(g: &Graph, p: &[Variable], states: Output) -> Result<Heads> {
    let h = g.tanh(dense(g, states, &p[0], &p[1])?)?;
    let logits = dense(g, h, &p[2], &p[3])?;
    let value = g.reshape(dense(g, h, &p[4], &p[5])?, &[-1])?;
    Ok(Heads { probs: g.softmax(logits)?, log_probs: g.log_softmax(logits)?, value })
}

/// The rollout's placeholders.
pub struct Feeds {
    /// States `[T, 4]`.
    pub states: Output,
    /// One-hot actions `[T, 2]`.
    pub actions: Output,
    /// n-step returns `[T]`.
    pub returns: Output,
    /// Advantages `[T]`, computed in the guest from the fetched values, so
    /// the policy term cannot move the critic.
    pub advantages: Output,
}

fn feeds(g: &Graph) -> Result<Feeds> {
    Ok(Feeds {
        states: g.placeholder(DType::F32, &[-1, 4])?,
        actions: g.placeholder(DType::F32, &[-1, 2])?,
        returns: g.placeholder(DType::F32, &[-1])?,
        advantages: g.placeholder(DType::F32, &[-1])?,
    })
}

/// Policy loss + 0.5 · value loss − 0.01 · entropy, summed over the rollout
/// as in the A3C paper.
fn loss(g: &Graph, heads: &Heads, f: &Feeds) -> Result<Output> {
    let taken = g.sum(g.mul(heads.log_probs, f.actions)?, Some(&[1]), false)?;
    let policy = g.neg(g.sum(g.mul(taken, f.advantages)?, None, false)?)?;
    let value = g.sum(g.square(g.sub(f.returns, heads.value)?)?, None, false)?;
    let entropy = g.neg(g.sum(g.mul(heads.probs, heads.log_probs)?, None, false)?)?;
    let weighted_value = g.mul(value, g.constant(VALUE_WEIGHT)?)?;
    let weighted_entropy = g.mul(entropy, g.constant(ENTROPY_WEIGHT)?)?;
    g.sub(g.add(policy, weighted_value)?, weighted_entropy)
}

/// Everything a worker runs.
pub struct Model {
    /// The bookkeeping on the ps.
    pub shared: Shared,
    /// The rollout's placeholders (`states` also feeds action choice).
    pub feeds: Feeds,
    /// π(·|s) under θ′, `[T, 2]`.
    pub probs: Output,
    /// V(s) under θ′, `[T]`.
    pub value: Output,
    /// Applies the clipped gradients to θ (shared RMSProp), then θ′ ← θ.
    pub train: Op,
    /// Adds a fed i64 count to `env_steps`; outputs the new total.
    pub count_steps: Output,
    /// The count for [`Model::count_steps`].
    pub new_steps: Output,
    /// θ′ ← θ alone, for the start.
    pub sync: Op,
    /// Initializers of θ′ (zeros).
    pub local_init: Op,
    /// Adds one to `episodes`; outputs the new total (this episode's number).
    pub next_episode: Output,
    /// This worker's return log, to feed `[LOG_LEN, 2]`.
    pub log_in: Output,
    /// Writes [`Model::log_in`] into this worker's log.
    pub write_log: Op,
    /// A stop reason to feed (f32 scalar).
    pub stop_in: Output,
    /// `stop ← max(stop, stop_in)`.
    pub set_stop: Op,
}

/// Builds worker `cfg.worker`'s graph.
pub fn build(g: &Graph, cfg: &Config) -> Result<Model> {
    let setter = ReplicaDeviceSetter::new(cfg.ps_tasks, &format!("/job:worker/task:{}", cfg.worker));
    g.device(setter.worker_device(), |g| {
        let global = global_params(g, &setter, cfg)?;
        let shared = g.device(BOOK_DEVICE, |g| shared(g, cfg.workers))?;
        let local = local_params(g, cfg.hidden)?;
        let local_init = g.group(&local.iter().map(Variable::initializer).collect::<Vec<_>>())?;
        let feeds = feeds(g)?;
        let heads = forward(g, &local, feeds.states)?;
        let loss = loss(g, &heads, &feeds)?;

        let mut opt = RmsProp::with(cfg.learning_rate, RMS_DECAY, 0.0, RMS_EPSILON);
        let grads = opt.compute_gradients(g, loss, &local.iter().collect::<Vec<_>>())?;
        let grads = grads
            .into_iter()
            .map(|(d, v)| d.ok_or_else(|| Error::new(Code::Internal, format!("no gradient for {}", v.name()))))
            .collect::<Result<Vec<_>>>()?;
        let (clipped, _norm) = clip_by_global_norm(g, &grads, CLIP_NORM)?;
        let pairs: Vec<(Option<Output>, &Variable)> = clipped.into_iter().map(Some).zip(&global).collect();
        let apply = opt.apply_gradients(g, &pairs, Some(&shared.updates))?;
        let train = g.control_dependencies(&[apply], |g| sync(g, &local, &global))?;

        let new_steps = g.placeholder(DType::I64, &[])?;
        let count_steps = shared.env_steps.assign_add(new_steps)?;
        let log_in = g.placeholder(DType::F32, &[LOG_LEN as i64, 2])?;
        let write_log = shared.logs[cfg.worker as usize].assign(log_in)?.op();
        let stop_in = g.placeholder(DType::F32, &[])?;
        let set_stop = shared.stop.assign(g.maximum(shared.stop.value(), stop_in)?)?.op();
        Ok(Model {
            next_episode: shared.episodes.assign_add(1i64)?,
            sync: sync(g, &local, &global)?,
            probs: heads.probs,
            value: heads.value,
            shared,
            feeds,
            train,
            count_steps,
            new_steps,
            local_init,
            log_in,
            write_log,
            stop_in,
            set_stop,
        })
    })
}
