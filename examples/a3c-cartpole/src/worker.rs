//! A worker's A3C loop: act in its own CartPole with θ′ for up to 20 steps
//! (one run per step on its own task), compute n-step returns bootstrapped
//! from V(s) unless the episode terminated, train (shared RMSProp on the ps,
//! then θ′ ← θ), log finished episodes on the ps, and stop when the last 100
//! episodes of all workers average at least 475 or the global env-step
//! budget is used up.

use std::time::Instant;

use weft_sdk::{Result, Session, Tensor};

use crate::cartpole::{CartPole, Outcome, Rng};
use crate::episodes::{self, EpisodeLog};
use crate::model::{LOG_LEN, Model, RUNNING, STOP_BUDGET, STOP_SOLVED};

/// Steps per rollout (per update).
const ROLLOUT: usize = 20;
const GAMMA: f32 = 0.99;
/// CartPole-v1 is solved at this mean return over 100 episodes.
pub const SOLVED_AT: f32 = 475.0;
/// Print a line every this many of the worker's own episodes.
const REPORT_EVERY: u64 = 20;

/// What one worker needs to know besides its graph.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Task index.
    pub worker: u32,
    /// Seed of its environment and action sampling.
    pub seed: u64,
    /// Global env-step budget.
    pub budget: i64,
}

/// Up to [`ROLLOUT`] transitions.
#[derive(Default)]
struct Rollout {
    states: Vec<f32>,
    actions: Vec<f32>,
    rewards: Vec<f32>,
    values: Vec<f32>,
    /// The return of the episode that ended in this rollout, if one did.
    finished: Option<f32>,
    /// V of the state after the last one, 0 if it is terminal.
    bootstrap: f32,
}

impl Rollout {
    fn len(&self) -> usize {
        self.rewards.len()
    }

    /// n-step discounted returns, each bootstrapped from the end.
    fn returns(&self) -> Vec<f32> {
        let mut acc = self.bootstrap;
        let mut out: Vec<f32> = self
            .rewards
            .iter()
            .rev()
            .map(|r| {
                acc = r + GAMMA * acc;
                acc
            })
            .collect();
        out.reverse();
        out
    }
}

/// A worker's state between runs.
pub struct Worker<'a> {
    sess: &'a Session,
    model: &'a Model,
    settings: Settings,
    env: CartPole,
    rng: Rng,
    obs: [f32; 4],
    episode_return: f32,
    log: EpisodeLog,
    episodes: u64,
    own_steps: u64,
    global_steps: i64,
    global_episodes: i64,
    mean: Option<f32>,
    started: Instant,
}

/// Why a worker stopped.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stop {
    /// Some worker saw the 100-episode mean reach [`SOLVED_AT`].
    Solved,
    /// The global env-step budget is used up.
    Budget,
}

impl<'a> Worker<'a> {
    /// A worker whose environment and sampling are seeded from `settings`.
    pub fn new(sess: &'a Session, model: &'a Model, settings: Settings) -> Self {
        let base = settings.seed.wrapping_mul(1_000_003).wrapping_add(settings.worker as u64);
        let mut env = CartPole::new(base);
        let obs = env.reset();
        Worker {
            sess,
            model,
            env,
            rng: Rng::new(base ^ 0x5DEE_CE66_D1CE_5EED),
            obs,
            episode_return: 0.0,
            log: EpisodeLog::default(),
            episodes: 0,
            own_steps: 0,
            global_steps: 0,
            global_episodes: 0,
            mean: None,
            started: Instant::now(),
            settings,
        }
    }

    /// π(·|s) and V(s) under θ′: one run on this worker's task.
    fn evaluate(&self, obs: [f32; 4]) -> Result<([f32; 2], f32)> {
        let out = self
            .sess
            .runner()
            .feed(self.model.feeds.states, Tensor::new(&[1, 4], &obs)?)
            .fetch(self.model.probs)
            .fetch(self.model.value)
            .run()?;
        let probs = out.values[0].to_vec::<f32>()?;
        let value = out.values[1].to_vec::<f32>()?;
        Ok(([probs[0], probs[1]], value[0]))
    }

    fn sample(&mut self, probs: [f32; 2]) -> usize {
        usize::from(self.rng.uniform() >= probs[0] as f64)
    }

    /// Acts for up to [`ROLLOUT`] steps, or to the end of the episode.
    fn collect(&mut self) -> Result<Rollout> {
        let mut r = Rollout::default();
        while r.len() < ROLLOUT {
            let (probs, value) = self.evaluate(self.obs)?;
            let action = self.sample(probs);
            let (next, reward, outcome) = self.env.step(action);
            r.states.extend_from_slice(&self.obs);
            r.actions.extend_from_slice(if action == 0 { &[1.0, 0.0] } else { &[0.0, 1.0] });
            r.rewards.push(reward);
            r.values.push(value);
            self.episode_return += reward;
            self.obs = next;
            if outcome != Outcome::Running {
                // A truncated episode's last state is not terminal: bootstrap it.
                r.bootstrap = if outcome == Outcome::Truncated { self.evaluate(next)?.1 } else { 0.0 };
                r.finished = Some(self.episode_return);
                self.episode_return = 0.0;
                self.obs = self.env.reset();
                return Ok(r);
            }
        }
        r.bootstrap = self.evaluate(self.obs)?.1;
        Ok(r)
    }

    /// One update from `r`; returns the shared stop flag.
    fn train(&mut self, r: &Rollout) -> Result<f32> {
        let returns = r.returns();
        let advantages: Vec<f32> = returns.iter().zip(&r.values).map(|(ret, v)| ret - v).collect();
        let (n, m) = (r.len(), self.model);
        let out = self
            .sess
            .runner()
            .feed(m.feeds.states, Tensor::new(&[n, 4], &r.states)?)
            .feed(m.feeds.actions, Tensor::new(&[n, 2], &r.actions)?)
            .feed(m.feeds.returns, Tensor::new(&[n], &returns)?)
            .feed(m.feeds.advantages, Tensor::new(&[n], &advantages)?)
            .feed(m.new_steps, Tensor::scalar(n as i64))
            .target(m.train)
            .fetch(m.count_steps)
            .fetch(m.shared.stop.value())
            .run()?;
        self.own_steps += n as u64;
        self.global_steps = out.values[0].to_scalar::<i64>()?;
        out.values[1].to_scalar::<f32>()
    }

    /// Numbers the episode, logs it on the ps and updates the global mean
    /// from every worker's log.
    fn finish_episode(&mut self, ret: f32) -> Result<()> {
        let n = self.sess.fetch(self.model.next_episode)?.to_scalar::<i64>()?;
        self.log.push(n, ret);
        self.episodes += 1;
        self.global_episodes = n;
        let me = self.settings.worker as usize;
        let mut runner = self
            .sess
            .runner()
            .feed(self.model.log_in, Tensor::new(&[LOG_LEN, 2], &self.log.to_rows())?)
            .target(self.model.write_log);
        for (_, log) in self.model.shared.logs.iter().enumerate().filter(|&(w, _)| w != me) {
            runner = runner.fetch(log.value());
        }
        let others = runner.run()?.values;
        let mut entries: Vec<(i64, f32)> = self.log.entries().collect();
        for t in &others {
            entries.extend(episodes::rows(&t.to_vec::<f32>()?));
        }
        self.mean = episodes::global_mean(entries.into_iter());
        Ok(())
    }

    fn set_stop(&self, reason: f32) -> Result<()> {
        self.sess.runner().feed(self.model.stop_in, Tensor::scalar(reason)).target(self.model.set_stop).run().map(drop)
    }

    fn report(&self) {
        let secs = self.started.elapsed().as_secs_f64();
        let mean = self.mean.map_or("n/a (<100 episodes)".to_string(), |m| format!("{m:.1}"));
        let own = self.log.own_mean().unwrap_or(0.0);
        println!(
            "worker {}: episode {} ({} in all), env steps {} in all, mean return of the last 100: {mean} (own last 100: {own:.1}), {secs:.1} s, {:.0} env steps/s",
            self.settings.worker,
            self.episodes,
            self.global_episodes,
            self.global_steps,
            self.global_steps as f64 / secs.max(1e-9),
        );
    }

    /// Trains until solved or out of budget; says which.
    pub fn run(mut self) -> Result<Stop> {
        self.started = Instant::now();
        let stop = loop {
            let rollout = self.collect()?;
            let flag = self.train(&rollout)?;
            if let Some(ret) = rollout.finished {
                self.finish_episode(ret)?;
                if self.episodes.is_multiple_of(REPORT_EVERY) {
                    self.report();
                }
                if self.mean.is_some_and(|m| m >= SOLVED_AT) {
                    self.set_stop(STOP_SOLVED)?;
                    break Stop::Solved;
                }
            }
            if flag >= STOP_SOLVED {
                break Stop::Solved;
            }
            if flag != RUNNING || self.global_steps >= self.settings.budget {
                self.set_stop(STOP_BUDGET)?;
                break Stop::Budget;
            }
        };
        self.report();
        self.say(stop);
        Ok(stop)
    }

    fn say(&self, stop: Stop) {
        let w = self.settings.worker;
        let secs = self.started.elapsed().as_secs_f64();
        match (stop, self.mean) {
            (Stop::Solved, Some(m)) if m >= SOLVED_AT => println!(
                "worker {w}: SOLVED: the last 100 episodes of all workers average {m:.1} >= {SOLVED_AT} at episode {} and {} env steps in all, after {secs:.1} s",
                self.global_episodes, self.global_steps
            ),
            (Stop::Solved, _) => println!("worker {w}: stopping: another worker saw CartPole solved"),
            (Stop::Budget, m) => println!(
                "worker {w}: stopping: NOT solved, the budget of {} env steps is used up (mean return of the last 100: {})",
                self.settings.budget,
                m.map_or("n/a".to_string(), |m| format!("{m:.1}"))
            ),
        }
        println!("worker {w}: took {} env steps itself, finished {} episodes", self.own_steps, self.episodes);
    }
}
