//! `tf.train.Saver`: checkpoints written by the hosts (programs have no
//! files), one safetensors file per task per save, all tasks in parallel.
//!
//! The saver groups the variables by the task they live on (as this
//! session places them) and adds, per task and placed there, one `SaveV2`,
//! two `RestoreV2` (newest save; only if the variables are gone) and one
//! `CheckpointSteps` (the steps the task keeps); restoring a chosen step
//! adds `RestoreV2` ops naming it. Each host writes under its `--checkpoint-dir`, in
//! `<job>-<task>/<prefix>-<step>.safetensors` with an index and a
//! `checkpoint` file naming the latest, keeping the newest `max_to_keep`.

use std::collections::BTreeMap;

use crate::error::{Code, Error, Result};
use crate::graph::{AttrValue, Graph, Op, Output};
use crate::session::Session;
use crate::variable::Variable;

/// One task's share of a saver.
#[derive(Debug)]
struct Shard {
    device: String,
    vars: Vec<Output>,
    save: Output,
    restore_latest: Output,
    restore_if_lost: Output,
    /// The steps of the saves this task keeps.
    steps: Output,
}

/// Saves and restores a set of variables (every variable of a graph by default).
#[derive(Debug)]
pub struct Saver {
    prefix: String,
    shards: Vec<Shard>,
}

/// What one task restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The task's device, e.g. `/job:ps/replica:0/task:0/device:CPU:0`.
    pub device: String,
    /// The step of the checkpoint it restored.
    pub step: i64,
}

fn str_attr(s: &str) -> AttrValue {
    AttrValue::Text(s.to_string())
}

impl Saver {
    /// A saver of every variable in `g` (slots and the global step
    /// included), writing `prefix-<global step>`.
    pub fn new(g: &Graph, sess: &Session, prefix: &str, global_step: Option<&Variable>) -> Result<Self> {
        let vars: Vec<Output> =
            g.operations().into_iter().filter(|o| o.op_type == "VariableV2").map(|o| g.output(o.id, 0)).collect();
        Self::build(g, sess, prefix, global_step, &vars, 5)
    }

    /// A saver of `vars` only, keeping the newest `max_to_keep` checkpoints.
    pub fn for_variables(
        g: &Graph,
        sess: &Session,
        prefix: &str,
        global_step: Option<&Variable>,
        vars: &[&Variable],
        max_to_keep: u32,
    ) -> Result<Self> {
        let vars: Vec<Output> = vars.iter().map(|v| v.output()).collect();
        Self::build(g, sess, prefix, global_step, &vars, max_to_keep)
    }

    fn build(
        g: &Graph,
        sess: &Session,
        prefix: &str,
        global_step: Option<&Variable>,
        vars: &[Output],
        max_to_keep: u32,
    ) -> Result<Self> {
        if vars.is_empty() {
            return Err(Error::new(Code::InvalidArgument, "Saver: there are no variables to save"));
        }
        let mut by_task: BTreeMap<String, Vec<Output>> = BTreeMap::new();
        for &v in vars {
            by_task.entry(sess.device_of(v)?).or_default().push(v);
        }
        g.name_scope("save", |g| {
            let mut shards = Vec::new();
            for (device, vars) in by_task {
                let shard = g.device(&device, |g| {
                    let step = match global_step {
                        Some(s) => s.value(),
                        None => g.constant(-1i64)?,
                    };
                    let save = vars
                        .iter()
                        .fold(g.op("SaveV2"), |b, &v| b.input(v))
                        .input(step)
                        .attr("prefix", str_attr(prefix))
                        .attr("max_to_keep", AttrValue::Int(max_to_keep as i64))
                        .build()?;
                    let restore = |only_if_lost: bool| {
                        vars.iter()
                            .fold(g.op("RestoreV2"), |b, &v| b.input(v))
                            .attr("prefix", str_attr(prefix))
                            .attr("only_if_uninitialized", AttrValue::Boolean(only_if_lost))
                            .build()
                    };
                    Ok(Shard {
                        device: device.clone(),
                        vars: vars.clone(),
                        save,
                        restore_latest: restore(false)?,
                        restore_if_lost: restore(true)?,
                        steps: g.op("CheckpointSteps").attr("prefix", str_attr(prefix)).build()?,
                    })
                })?;
                shards.push(shard);
            }
            Ok(Saver { prefix: prefix.to_string(), shards })
        })
    }

    /// `saver.save(sess)`: every task writes its checkpoint, at once.
    /// Returns the checkpoint's name (`prefix-step`).
    pub fn save(&self, sess: &Session) -> Result<String> {
        let out = self.shards.iter().fold(sess.runner(), |r, s| r.fetch(s.save)).run()?;
        let names = out.values[0].to_strings()?;
        Ok(names.into_iter().next().unwrap_or_default())
    }

    /// `saver.restore(sess, latest)`: every task restores the newest step
    /// that all of them keep (see [`Saver::common_step`]), all or nothing
    /// per task. Returns the step; `Ok(None)` if there is no checkpoint yet.
    pub fn restore_latest(&self, g: &Graph, sess: &Session) -> Result<Option<i64>> {
        let Some(step) = self.common_step(sess)? else {
            // Saves without a step: each task's newest save of the prefix.
            let out = match self.shards.iter().fold(sess.runner(), |r, s| r.fetch(s.restore_latest)).run() {
                Ok(out) => out,
                Err(e) if e.code() == Code::NotFound && e.message().contains("no checkpoint for") => return Ok(None),
                Err(e) => return Err(e),
            };
            return out.values.first().map(|t| t.to_scalar::<i64>()).transpose();
        };
        self.restore_step(g, sess, step, false)?;
        Ok(Some(step))
    }

    /// Restores every task whose variables are all gone (a restarted
    /// parameter server), leaving the others be, from the newest step that
    /// every task keeps (see [`Saver::common_step`]). Returns what was
    /// restored.
    pub fn restore_lost(&self, g: &Graph, sess: &Session) -> Result<Vec<Restored>> {
        let steps = match self.common_step(sess)? {
            Some(step) => self.restore_step(g, sess, step, true)?,
            None => {
                let out = self.shards.iter().fold(sess.runner(), |r, s| r.fetch(s.restore_if_lost)).run()?;
                out.values.iter().map(|v| v.to_scalar::<i64>()).collect::<Result<Vec<_>>>()?
            }
        };
        Ok(self
            .shards
            .iter()
            .zip(steps)
            .filter(|(_, step)| *step >= 0)
            .map(|(shard, step)| Restored { device: shard.device.clone(), step })
            .collect())
    }

    /// The step to restore: the newest one every task keeps a save of,
    /// read from the tasks' `checkpoint` files before anything is assigned.
    /// Each task keeps its own file, so a save that failed on one task (a
    /// full disk, a quota, a crash mid-save) leaves that task's newest save
    /// older than the others': restoring each task's newest would mix two
    /// steps of the model. Every worker that asks computes the same step.
    /// `Ok(None)` when no task keeps a save with a step (then each restores
    /// its newest save of the prefix); an error, naming what each task
    /// keeps, when some task keeps none or no step is common to all.
    pub fn common_step(&self, sess: &Session) -> Result<Option<i64>> {
        let out = self.shards.iter().fold(sess.runner(), |r, s| r.fetch(s.steps)).run()?;
        let kept: Vec<Vec<i64>> = out.values.iter().map(|t| t.to_vec::<i64>()).collect::<Result<_>>()?;
        if kept.iter().all(Vec::is_empty) {
            return Ok(None);
        }
        let common = kept[0].iter().rev().find(|step| kept.iter().all(|k| k.contains(step)));
        common.copied().map(Some).ok_or_else(|| {
            let each: Vec<String> =
                self.shards.iter().zip(&kept).map(|(s, k)| format!("{} keeps steps {k:?}", s.device)).collect();
            Error::new(
                Code::FailedPrecondition,
                format!(
                    "no checkpoint step of '{}' that every task keeps ({}): restoring would mix steps of the model",
                    self.prefix,
                    each.join(", ")
                ),
            )
        })
    }

    /// Restores `prefix-step` on every task (only on those whose variables
    /// are all gone, if `only_if_lost`); the step each restored, -1 where
    /// skipped.
    fn restore_step(&self, g: &Graph, sess: &Session, step: i64, only_if_lost: bool) -> Result<Vec<i64>> {
        let name = format!("{}-{step}", self.prefix);
        let ops = g.name_scope("save", |g| {
            self.shards
                .iter()
                .map(|shard| {
                    g.device(&shard.device, |g| {
                        shard
                            .vars
                            .iter()
                            .fold(g.op("RestoreV2"), |b, &v| b.input(v))
                            .attr("checkpoint", str_attr(&name))
                            .attr("only_if_uninitialized", AttrValue::Boolean(only_if_lost))
                            .build()
                    })
                })
                .collect::<Result<Vec<Output>>>()
        })?;
        let out = ops.iter().fold(sess.runner(), |r, &o| r.fetch(o)).run()?;
        out.values.iter().map(|v| v.to_scalar::<i64>()).collect()
    }

    /// The save ops, for running with other work.
    pub fn save_ops(&self) -> Vec<Op> {
        self.shards.iter().map(|s| s.save.op()).collect()
    }
}
