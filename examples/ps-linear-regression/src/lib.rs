//! Asynchronous parameter-server training, the workload TensorFlow's and
//! Ray's benchmarks run (`../shared/notes/training.md`): multi-output linear
//! regression `y = x·W + b`, W 1024×1024 and b 1024 on `/job:ps/task:0`
//! through the replica device setter, each worker generating batches of 64
//! in-graph from a fixed teacher (W*, b*) plus 0.01 noise, loss = the batch
//! mean of the squared error summed over outputs, plain SGD at 0.01.
//!
//! Worker 0 (the chief) initializes the shared variables; the others wait.
//! Every worker trains until its eval loss (256 fixed samples) is at most
//! the target, or until its step budget runs out, printing steps/s; the ps
//! prints the global step once every worker is done.
//!
//! Workers train through a `TrainingSession`: with `--checkpoint PREFIX`
//! the chief restores the latest checkpoint at the start and saves every
//! `--save-every N` steps (on hosts started with `--checkpoint-dir`), and a
//! ps that restarts mid-training is restored from it while every worker
//! carries on. `--summaries` writes the eval loss as a TensorBoard scalar
//! (hosts started with `--log-dir`).
//!
//! Args: `[target-loss] [max-steps-per-worker] [eval-every] [dim]`
//! (defaults 0.05, 20000, 100, 1024), then `--checkpoint PREFIX`,
//! `--save-every N`, `--summaries`.

use std::time::{Duration, Instant};

use weft_sdk::train::{
    GradientDescent, Optimizer, PsStrategy, ReplicaDeviceSetter, TrainingConfig, TrainingSession, global_step,
};
use weft_sdk::{Code, Error, Graph, Op, Output, Result, Session, Variable, VariableOptions, device, summary};

const BATCH: i64 = 64;
const LEARNING_RATE: f64 = 0.01;

struct Args {
    target: f32,
    max_steps: u64,
    eval_every: u64,
    dim: i64,
    checkpoint: Option<String>,
    save_every: Option<u64>,
    summaries: bool,
}

/// `[target] [max-steps] [eval-every] [dim]`, then any of `--checkpoint
/// PREFIX`, `--save-every N` (steps of the chief), `--summaries`.
fn parse(args: &[String]) -> Result<Args> {
    let bad = |what: &str| Error::new(Code::InvalidArgument, format!("bad argument {what}"));
    let (positional, options): (Vec<&String>, Vec<&String>) = {
        let split = args.iter().position(|a| a.starts_with("--")).unwrap_or(args.len());
        (args[..split].iter().collect(), args[split..].iter().collect())
    };
    let get = |i: usize| positional.get(i).map(|a| a.parse::<f64>().map_err(|_| bad(a))).transpose();
    let mut parsed = Args {
        target: get(0)?.unwrap_or(0.05) as f32,
        max_steps: get(1)?.unwrap_or(20_000.0) as u64,
        eval_every: get(2)?.unwrap_or(100.0).max(1.0) as u64,
        dim: get(3)?.unwrap_or(1024.0) as i64,
        checkpoint: None,
        save_every: None,
        summaries: false,
    };
    let mut it = options.into_iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--checkpoint" => {
                parsed.checkpoint = Some(it.next().ok_or_else(|| bad("--checkpoint needs a prefix"))?.clone())
            }
            "--save-every" => {
                let n = it.next().ok_or_else(|| bad("--save-every needs N"))?;
                parsed.save_every = Some(n.parse().map_err(|_| bad(n))?);
            }
            "--summaries" => parsed.summaries = true,
            other => return Err(bad(other)),
        }
    }
    Ok(parsed)
}

/// The model every task builds; only workers run the training parts.
struct Model {
    w: Variable,
    b: Variable,
    step: Variable,
    done: Variable,
    /// Initializers of this worker's own (non-shared) variables.
    local_init: Op,
    train: Op,
    eval_loss: Output,
}

/// A variable of this task alone, initialized from a seeded random op, so
/// that every worker gets the same teacher and eval set.
fn local(g: &Graph, name: &str, shape: &[i64], stddev: f64, seed: i64) -> Result<Variable> {
    let init = g.random_normal(shape, 0.0, stddev, Some(seed))?;
    Variable::with_options(g, init, name, VariableOptions { trainable: false, ..Default::default() })
}

fn squared_error(g: &Graph, x: Output, w: &Variable, b: &Variable, y: Output) -> Result<Output> {
    let pred = g.add(g.matmul(x, w.value())?, b.value())?;
    let err = g.square(g.sub(pred, y)?)?;
    g.mean(g.sum(err, Some(&[1]), false)?, None, false)
}

/// Builds the model for worker `worker` of job `job`, with variables on
/// `ps_tasks` tasks of job `ps_job` (the worker's own job and task when the
/// cluster has no ps: one process, as TensorFlow's single-process baseline).
fn build(g: &Graph, job: &str, worker: u32, ps_job: &str, ps_tasks: u32, d: i64) -> Result<Model> {
    let worker_device = format!("/job:{job}/task:{worker}");
    let setter = ReplicaDeviceSetter::with_strategy(ps_job, ps_tasks, &worker_device, PsStrategy::RoundRobin);
    g.device(setter.worker_device(), |g| {
        let w = setter.variable(g, g.zeros(&[d, d])?, "W")?;
        let b = setter.variable(g, g.zeros(&[d])?, "b")?;
        let (step, done) = setter.place(g, |g| {
            let done = Variable::with_options(
                g,
                0.0f32,
                "workers_done",
                VariableOptions { trainable: false, ..Default::default() },
            )?;
            Ok((global_step(g)?, done))
        })?;
        let w_true = local(g, "W_true", &[d, d], 1.0 / (d as f64).sqrt(), 1)?;
        let b_true = local(g, "b_true", &[d], 1.0, 2)?;
        let x_eval = local(g, "x_eval", &[256, d], 1.0, 3)?;
        let local_init = g.group(&[w_true.initializer(), b_true.initializer(), x_eval.initializer()])?;

        let x = g.random_normal(&[BATCH, d], 0.0, 1.0, None)?;
        let noise = g.mul(g.random_normal(&[BATCH, d], 0.0, 1.0, None)?, g.constant(0.01f32)?)?;
        let y = g.add(g.add(g.matmul(x, w_true.value())?, b_true.value())?, noise)?;
        let loss = squared_error(g, x, &w, &b, y)?;
        let train = GradientDescent::new(LEARNING_RATE).minimize(g, loss, &[&w, &b], Some(&step))?;

        let y_eval = g.add(g.matmul(x_eval.value(), w_true.value())?, b_true.value())?;
        let eval_loss = squared_error(g, x_eval.value(), &w, &b, y_eval)?;
        Ok(Model { w, b, step, done, local_init, train, eval_loss })
    })
}

fn scalar_f32(sess: &Session, x: Output) -> Result<f32> {
    sess.fetch(x)?.to_scalar::<f32>()
}

/// The ps program: waits for every worker to be done, then reports.
fn serve_parameters(g: &Graph, model: &Model, workers: u32, dim: i64) -> Result<()> {
    let sess = Session::new("", g)?;
    println!("Parameter server: holding W [{dim}, {dim}] and b [{dim}] for {workers} workers");
    let done = model.done.value();
    while workers > 0 && sess.fetch(done).and_then(|t| t.to_scalar::<f32>()).unwrap_or(0.0) < workers as f32 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let steps = sess.fetch(model.step.value())?.to_scalar::<i64>()?;
    println!("Parameter server: training done after {steps} updates in all");
    Ok(())
}

fn train(g: &Graph, model: &Model, worker: u32, args: &Args) -> Result<()> {
    let config = TrainingConfig {
        is_chief: worker == 0,
        checkpoint_prefix: args.checkpoint.clone(),
        save_every_steps: args.save_every,
        save_every: None,
        local_init: Some(model.local_init),
        ..TrainingConfig::default()
    };
    // Checkpoints hold what lives on the ps: the model, the global step and the counter.
    let shared = [&model.w, &model.b, &model.step, &model.done];
    let mut ts = TrainingSession::with_saved_variables(g, Some(&model.step), config, &shared)?;
    let eval = model.eval_loss;
    let summary = match args.summaries {
        true => Some(summary::scalar(g, "eval_loss", eval, model.step.value())?),
        false => None,
    };
    let initial = ts.call(|s| scalar_f32(s, eval))?;
    println!("Worker {worker}: eval loss {initial:.1} at the start");

    let started = Instant::now();
    let mut steps = 0u64;
    let mut loss = initial;
    while steps < args.max_steps && loss > args.target {
        for _ in 0..args.eval_every.min(args.max_steps - steps) {
            ts.run(model.train)?;
            steps += 1;
        }
        loss = match summary {
            Some(op) => ts.call(|s| s.runner().fetch(eval).target(op).run()?.values[0].to_scalar::<f32>())?,
            None => ts.call(|s| scalar_f32(s, eval))?,
        };
        let rate = steps as f64 / started.elapsed().as_secs_f64();
        println!("Worker {worker}: step {steps}: eval loss {loss:.4}, {rate:.1} steps/s");
    }
    let rate = steps as f64 / started.elapsed().as_secs_f64();
    let step = model.step.value();
    let global = ts.call(|s| s.fetch(step)?.to_scalar::<i64>())?;
    if loss <= args.target {
        println!(
            "Worker {worker}: reached eval loss {loss:.4} <= {} after {steps} steps ({global} updates in all), {rate:.1} steps/s",
            args.target
        );
    } else {
        println!(
            "Worker {worker}: stopped at the step budget ({steps} steps) with eval loss {loss:.4} > {}",
            args.target
        );
    }
    if args.checkpoint.is_some() && worker == 0 {
        println!("Worker {worker}: saved {}", ts.save()?);
    }
    let done = model.done.assign_add(1.0f32)?;
    ts.call(|s| s.run(done))
}

fn run(args: Vec<String>) -> Result<()> {
    let args = parse(&args)?;
    let me = device::identity();
    let count = |job: &str| me.cluster.iter().find(|(j, _)| j == job).map_or(0, |(_, t)| t.len() as u32);
    let (ps_tasks, workers) = (count("ps"), count("worker"));
    let g = Graph::new();
    let model = if ps_tasks == 0 {
        // No ps job (`weft run` alone): variables and compute on this task.
        build(&g, &me.job, me.task, &me.job, 1, args.dim)?
    } else {
        let worker = if me.job == "worker" { me.task } else { 0 };
        build(&g, "worker", worker, "ps", ps_tasks, args.dim)?
    };
    let worker = if me.job == "ps" { 0 } else { me.task };
    if me.job == "ps" {
        return serve_parameters(&g, &model, workers, args.dim);
    }
    train(&g, &model, worker, &args)
}

weft_sdk::export_worker!(run);
