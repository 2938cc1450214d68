//! `tf.train.MonitoredTrainingSession`, with the recovery TensorFlow never
//! had: the chief restores the latest checkpoint or initializes; the others
//! wait until the variables are ready; the chief saves every N steps or
//! seconds; and when a parameter server restarts mid-training, its
//! variables are restored from the latest checkpoint by whichever worker
//! notices first, and every worker carries on, no program restarted. At most
//! the steps since that checkpoint are lost, and the log says so.

use std::time::{Duration, Instant};

use super::saver::{Restored, Saver};
use crate::error::{Code, Error, Result};
use crate::graph::{Graph, Op, Output};
use crate::session::Session;
use crate::variable::Variable;

/// How a [`TrainingSession`] starts, saves and recovers.
#[derive(Clone, Debug)]
pub struct TrainingConfig {
    /// Session target (empty: this program's own task).
    pub target: String,
    /// Whether this worker initializes, restores and saves (TensorFlow's chief).
    pub is_chief: bool,
    /// Checkpoint prefix (relative to each host's `--checkpoint-dir`); `None`: no checkpoints.
    pub checkpoint_prefix: Option<String>,
    /// The chief saves after this many of its steps...
    pub save_every_steps: Option<u64>,
    /// ...or after this much time, whichever comes first.
    pub save_every: Option<Duration>,
    /// How long a run may keep failing because a task is unreachable (or
    /// its variables lost) before the error is returned.
    pub recovery_timeout: Duration,
    /// Initializes this worker's own variables (TensorFlow's
    /// `local_init_op`); every worker runs it first, before the chief
    /// restores or initializes anything, so it must not read shared
    /// variables.
    pub local_init: Option<Op>,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            target: String::new(),
            is_chief: true,
            checkpoint_prefix: None,
            save_every_steps: None,
            save_every: Some(Duration::from_secs(600)),
            recovery_timeout: Duration::from_secs(120),
            local_init: None,
        }
    }
}

/// A session that trains through restarts of the tasks it uses.
pub struct TrainingSession<'g> {
    graph: &'g Graph,
    session: Session,
    saver: Option<Saver>,
    report: Output,
    config: TrainingConfig,
    global_step: Option<Output>,
    steps_since_save: u64,
    last_save: Instant,
}

fn is_lost_variable(e: &Error) -> bool {
    e.code() == Code::FailedPrecondition && e.message().contains("uninitialized")
}

fn is_unreachable(e: &Error) -> bool {
    matches!(e.code(), Code::Unavailable | Code::Aborted)
}

impl<'g> TrainingSession<'g> {
    /// Opens the session; the chief restores the latest checkpoint (or
    /// runs the global initializer if there is none), the others wait until
    /// every variable of `graph` is initialized.
    pub fn new(graph: &'g Graph, global_step: Option<&Variable>, config: TrainingConfig) -> Result<Self> {
        Self::open(graph, global_step, config, None)
    }

    /// [`TrainingSession::new`], checkpointing only `saved` (say, the
    /// variables on the parameter servers).
    pub fn with_saved_variables(
        graph: &'g Graph,
        global_step: Option<&Variable>,
        config: TrainingConfig,
        saved: &[&Variable],
    ) -> Result<Self> {
        Self::open(graph, global_step, config, Some(saved))
    }

    fn open(
        graph: &'g Graph,
        global_step: Option<&Variable>,
        config: TrainingConfig,
        saved: Option<&[&Variable]>,
    ) -> Result<Self> {
        let session = Session::new(&config.target, graph)?;
        let report = graph.report_uninitialized_variables()?;
        let saver = match (&config.checkpoint_prefix, saved) {
            (Some(prefix), None) => Some(Saver::new(graph, &session, prefix, global_step)?),
            (Some(prefix), Some(vars)) => Some(Saver::for_variables(graph, &session, prefix, global_step, vars, 5)?),
            (None, _) => None,
        };
        let init = graph.global_variables_initializer()?;
        let mut ts = TrainingSession {
            graph,
            session,
            saver,
            report,
            config,
            global_step: global_step.map(Variable::value),
            steps_since_save: 0,
            last_save: Instant::now(),
        };
        ts.start(init)?;
        Ok(ts)
    }

    fn start(&mut self, init: Op) -> Result<()> {
        let deadline = Instant::now() + self.config.recovery_timeout;
        let report = self.report;
        if let Some(local) = self.config.local_init {
            self.retry(deadline, |s| s.run(local))?;
        }
        if self.config.is_chief {
            // A chief that restarts while the others train joins them: the
            // variables are live, so neither restore (a roll-back) nor initialize.
            let missing = self.retry(deadline, |s| s.fetch(report)?.to_strings())?;
            if missing.is_empty() {
                println!("TrainingSession: the variables are already initialized; joining");
                return Ok(());
            }
            // Restore every task whose saved variables are all gone (all of
            // them at a first start); tasks with live variables are left
            // alone, so a restarted chief never rolls training back.
            let restored: Vec<Restored> = match &self.saver {
                Some(saver) => match self.retry(deadline, |s| saver.restore_lost(self.graph, s)) {
                    Ok(r) => r,
                    Err(e) if e.code() == Code::NotFound && e.message().contains("no checkpoint for") => Vec::new(),
                    Err(e) => return Err(e),
                },
                None => Vec::new(),
            };
            let missing = self.retry(deadline, |s| s.fetch(report)?.to_strings())?;
            if !missing.is_empty() {
                // Only what is still missing: never over what was just restored.
                let init = match (self.initializer_of(&missing), restored.is_empty()) {
                    (Some(op), _) => op,
                    (None, true) => init,
                    (None, false) => {
                        return Err(Error::new(
                            Code::FailedPrecondition,
                            format!(
                                "after restoring, these variables have no initializer to run: {}",
                                missing.join(", ")
                            ),
                        ));
                    }
                };
                self.retry(deadline, |s| s.run(init))?;
            }
            match restored.iter().map(|r| r.step).max() {
                Some(step) => println!("TrainingSession: restored the latest checkpoint (global step {step})"),
                None => println!("TrainingSession: no checkpoint to restore; initialized the variables"),
            }
            return Ok(());
        }
        loop {
            let missing = self.retry(deadline, |s| s.fetch(report)?.to_strings())?;
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::new(
                    Code::DeadlineExceeded,
                    format!(
                        "variables still uninitialized after {:?}: {}",
                        self.config.recovery_timeout,
                        missing.join(", ")
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// An op running the initializers of the variables `names` (their
    /// `<name>/Assign` nodes), if every one has one.
    fn initializer_of(&self, names: &[String]) -> Option<Op> {
        let ops: Option<Vec<Op>> = names.iter().map(|n| self.graph.find(&format!("{n}/Assign"))).collect();
        self.graph.group(&ops?).ok()
    }

    /// The session inside, for runs that need no recovery.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The graph it runs.
    pub fn graph(&self) -> &Graph {
        self.graph
    }

    /// Runs `f` on the session, waiting out unreachable tasks and restoring
    /// lost variables, until `deadline`.
    fn retry<T>(&self, deadline: Instant, mut f: impl FnMut(&Session) -> Result<T>) -> Result<T> {
        let mut said_waiting = false;
        loop {
            match f(&self.session) {
                Ok(v) => return Ok(v),
                Err(e) if Instant::now() < deadline && is_unreachable(&e) => {
                    if !said_waiting {
                        println!("TrainingSession: waiting for a task to come back ({e})");
                        said_waiting = true;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) if Instant::now() < deadline && is_lost_variable(&e) && self.saver.is_some() => {
                    self.recover(&e)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A task lost its variables: restore every such task from its latest
    /// checkpoint (another worker may already have), and say what is lost.
    fn recover(&self, cause: &Error) -> Result<()> {
        let saver = self.saver.as_ref().expect("checked by the caller");
        let before = self.step_now();
        let restored: Vec<Restored> = match saver.restore_lost(self.graph, &self.session) {
            Ok(r) => r,
            Err(e) if e.code() == Code::NotFound => {
                return Err(Error::new(
                    Code::FailedPrecondition,
                    format!("{}; and there is no checkpoint to restore it from ({})", cause.message(), e.message()),
                ));
            }
            Err(e) if is_unreachable(&e) => {
                std::thread::sleep(Duration::from_millis(200));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        for r in &restored {
            let lost = before.map(|b| format!(" (this worker was at global step {b})")).unwrap_or_default();
            println!(
                "TrainingSession: {} lost its variables; restored them from its latest checkpoint at global step {}: \
                 the updates after that step are lost{lost}",
                r.device, r.step
            );
        }
        if restored.is_empty() {
            // Another worker restored it, or it is still being restored: try again shortly.
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn step_now(&self) -> Option<i64> {
        let step = self.global_step?;
        self.session.fetch(step).ok()?.to_scalar::<i64>().ok()
    }

    /// Runs `op` (a training step), recovering as needed; the chief then
    /// saves if a save is due.
    pub fn run(&mut self, op: Op) -> Result<()> {
        self.call(|s| s.run(op))
    }

    /// Runs `f` on the session with the same recovery as [`TrainingSession::run`].
    pub fn call<T>(&mut self, f: impl FnMut(&Session) -> Result<T>) -> Result<T> {
        let deadline = Instant::now() + self.config.recovery_timeout;
        let out = self.retry(deadline, f)?;
        self.steps_since_save += 1;
        self.maybe_save();
        Ok(out)
    }

    /// Saves if one is due. A failed save is said and retried at the next
    /// due point; it does not fail the step that already ran.
    fn maybe_save(&mut self) {
        if !self.config.is_chief || self.saver.is_none() {
            return;
        }
        let by_steps = self.config.save_every_steps.is_some_and(|n| self.steps_since_save >= n);
        let by_time = self.config.save_every.is_some_and(|d| self.last_save.elapsed() >= d);
        if (by_steps || by_time)
            && let Err(e) = self.save()
        {
            println!("TrainingSession: saving a checkpoint failed, will try again: {e}");
            self.steps_since_save = 0;
            self.last_save = Instant::now();
        }
    }

    /// Saves a checkpoint now (the chief does this by itself when one is due).
    pub fn save(&mut self) -> Result<String> {
        let saver = self.saver.as_ref().ok_or_else(|| Error::new(Code::FailedPrecondition, "no checkpoint_prefix"))?;
        let deadline = Instant::now() + self.config.recovery_timeout;
        let name = self.retry(deadline, |s| saver.save(s))?;
        self.steps_since_save = 0;
        self.last_save = Instant::now();
        Ok(name)
    }
}
