//! A3C on CartPole-v1: asynchronous advantage actor-critic with 1 ps and N
//! workers, TensorFlow 1.x style (`../shared/notes/training.md`).
//!
//! The ps holds the actor-critic network (4 → hidden tanh → 2 policy logits
//! and 1 value), RMSProp's statistics (shared by slot name: every worker
//! builds the same optimizer over the same variables) and the run's
//! bookkeeping: global env-step and episode counters, each worker's last 100
//! episode returns, a stop flag. Each worker runs CartPole in the guest
//! ([`cartpole`]), acts with its own copy of the network, and every 20 steps
//! sends a gradient clipped to global norm 40 (see [`model`], [`worker`]).
//!
//! Worker 0 (the chief) initializes every variable; the others wait until
//! none is uninitialized. Workers print every 20 of their episodes and stop
//! when the last 100 episodes of all workers average at least 475 (solved),
//! or when the global env-step budget is used up, saying which. The ps waits
//! for every worker, then prints a summary.
//!
//! Args: `[seed] [max-global-env-steps] [learning-rate] [hidden]`
//! (defaults 1, 1000000, 0.003, 64).

mod cartpole;
mod episodes;
mod model;
mod worker;

use std::time::{Duration, Instant};

use weft_sdk::{Graph, Result, Session, device};

use model::{BOOK_DEVICE, Config, STOP_SOLVED, Shared};
use worker::{SOLVED_AT, Settings, Worker};

/// The program's arguments.
#[derive(Clone, Debug)]
struct Args {
    seed: u64,
    budget: i64,
    learning_rate: f64,
    hidden: i64,
}

fn parse(args: &[String]) -> Args {
    let get = |i: usize| args.get(i).and_then(|a| a.parse::<f64>().ok());
    Args {
        seed: get(0).unwrap_or(1.0) as u64,
        budget: get(1).unwrap_or(1_000_000.0) as i64,
        learning_rate: get(2).unwrap_or(0.003),
        hidden: get(3).unwrap_or(64.0).max(1.0) as i64,
    }
}

/// How many tasks job `job` has.
fn tasks(me: &device::TaskIdentity, job: &str) -> u32 {
    me.cluster.iter().find(|(j, _)| j == job).map_or(0, |(_, t)| t.len() as u32)
}

fn run(args: Vec<String>) -> Result<()> {
    let args = parse(&args);
    let me = device::identity();
    let (ps_tasks, workers) = (tasks(&me, "ps").max(1), tasks(&me, "worker"));
    if me.job == "ps" {
        return if me.task == 0 { serve(&args, workers) } else { Ok(()) };
    }
    let cfg = Config {
        worker: me.task,
        workers,
        ps_tasks,
        hidden: args.hidden,
        learning_rate: args.learning_rate,
        seed: args.seed as i64,
    };
    train(&args, &cfg)
}

/// A worker: build, initialize (chief) or wait, train, report.
fn train(args: &Args, cfg: &Config) -> Result<()> {
    let g = Graph::new();
    let model = model::build(&g, cfg)?;
    let sess = Session::new("", &g)?;
    if cfg.worker == 0 {
        sess.run(g.global_variables_initializer()?)?;
        println!(
            "worker 0 (chief): initialized a 4-{}-(2+1) actor-critic and shared RMSProp on the ps; lr {}, seed {}, budget {} env steps",
            cfg.hidden, cfg.learning_rate, args.seed, args.budget
        );
    } else {
        sess.run(model.local_init)?;
        let report = g.report_uninitialized_variables()?;
        while !sess.fetch(report)?.to_strings()?.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    sess.run(model.sync)?;
    let settings = Settings { worker: cfg.worker, seed: args.seed, budget: args.budget };
    Worker::new(&sess, &model, settings).run()?;
    sess.run(model.shared.done.assign_add(1.0f32)?)?;
    Ok(())
}

fn scalar<T: weft_sdk::Element>(sess: &Session, x: weft_sdk::Output) -> Result<T> {
    sess.fetch(x)?.to_scalar::<T>()
}

/// The ps: holds the variables (its server does the work), waits for every
/// worker, then prints the run's summary.
fn serve(args: &Args, workers: u32) -> Result<()> {
    let started = Instant::now();
    let g = Graph::new();
    let shared = g.device(BOOK_DEVICE, |g| model::shared(g, workers))?;
    let sess = Session::new("", &g)?;
    println!("ps: holding the network, shared RMSProp statistics and run bookkeeping for {workers} workers");
    let done = shared.done.value();
    while workers > 0 && scalar::<f32>(&sess, done).unwrap_or(0.0) < workers as f32 {
        std::thread::sleep(Duration::from_millis(200));
    }
    summary(&sess, &shared, args, started)
}

fn summary(sess: &Session, shared: &Shared, args: &Args, started: Instant) -> Result<()> {
    let secs = started.elapsed().as_secs_f64();
    let steps = scalar::<i64>(sess, shared.env_steps.value())?;
    let episodes = scalar::<i64>(sess, shared.episodes.value())?;
    let updates = scalar::<i64>(sess, shared.updates.value())?;
    let stop = scalar::<f32>(sess, shared.stop.value())?;
    let mut entries = Vec::new();
    for log in &shared.logs {
        entries.extend(episodes::rows(&sess.fetch(log.value())?.to_vec::<f32>()?).collect::<Vec<_>>());
    }
    let mean = episodes::global_mean(entries.into_iter()).map_or("n/a".to_string(), |m| format!("{m:.1}"));
    let verdict = if stop >= STOP_SOLVED {
        format!("SOLVED (mean return of the last 100 episodes >= {SOLVED_AT})")
    } else {
        format!("NOT solved: stopped at the budget of {} env steps", args.budget)
    };
    println!("ps: {verdict}");
    println!(
        "ps: {episodes} episodes, {steps} env steps, {updates} updates, mean return of the last 100 episodes {mean}, {secs:.1} s since the ps started ({:.0} env steps/s)",
        steps as f64 / secs
    );
    Ok(())
}

weft_sdk::export_worker!(run);
