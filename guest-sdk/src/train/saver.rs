//! `tf.train.Saver`: checkpoints written by the hosts (programs have no
//! files), one safetensors file per task per save, all tasks in parallel.
//!
//! The saver groups the variables by the task they live on (as this
//! session places them) and adds one `SaveV2` and two `RestoreV2` ops per
//! task, placed there. Each host writes under its `--checkpoint-dir`, in
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

    /// `saver.restore(sess, latest)`: every task restores its latest
    /// checkpoint, all or nothing per task, and then all tasks agree on one
    /// step (see [`Saver::align`]). Returns that step; `Ok(None)` if there
    /// is no checkpoint yet.
    pub fn restore_latest(&self, g: &Graph, sess: &Session) -> Result<Option<i64>> {
        let out = match self.shards.iter().fold(sess.runner(), |r, s| r.fetch(s.restore_latest)).run() {
            Ok(out) => out,
            Err(e) if e.code() == Code::NotFound && e.message().contains("no checkpoint for") => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut restored = Vec::new();
        for (shard, v) in self.shards.iter().zip(out.values) {
            restored.push(Restored { device: shard.device.clone(), step: v.to_scalar::<i64>()? });
        }
        self.align(g, sess, &mut restored)?;
        Ok(restored.first().map(|r| r.step))
    }

    /// Restores, from its latest checkpoint, every task whose variables
    /// are all gone (a restarted parameter server), leaving the others be;
    /// the tasks it restored then agree on one step (see [`Saver::align`]).
    /// Returns what was restored.
    pub fn restore_lost(&self, g: &Graph, sess: &Session) -> Result<Vec<Restored>> {
        let out = self.shards.iter().fold(sess.runner(), |r, s| r.fetch(s.restore_if_lost)).run()?;
        let mut restored = Vec::new();
        for (shard, v) in self.shards.iter().zip(out.values) {
            let step = v.to_scalar::<i64>()?;
            if step >= 0 {
                restored.push(Restored { device: shard.device.clone(), step });
            }
        }
        self.align(g, sess, &mut restored)?;
        Ok(restored)
    }

    /// Makes tasks that restored different steps agree on the oldest of
    /// them. Each task keeps its own `checkpoint` file, so a save that
    /// failed on one task (a full disk, a quota, a crash mid-save) leaves
    /// that task's latest checkpoint older than the others': restoring each
    /// task's latest would mix two steps of the model. The tasks that
    /// restored a newer step restore the oldest one by name instead; if one
    /// of them no longer keeps it (`max_to_keep`), that is an error naming
    /// the steps.
    pub fn align(&self, g: &Graph, sess: &Session, restored: &mut [Restored]) -> Result<()> {
        let Some(oldest) = restored.iter().map(|r| r.step).min() else { return Ok(()) };
        if restored.iter().all(|r| r.step == oldest) {
            return Ok(());
        }
        let steps: Vec<String> = restored.iter().map(|r| format!("{} at step {}", r.device, r.step)).collect();
        let name = format!("{}-{oldest}", self.prefix);
        let newer: Vec<&Shard> =
            self.shards.iter().filter(|s| restored.iter().any(|r| r.device == s.device && r.step != oldest)).collect();
        let ops = g.name_scope("save", |g| {
            newer
                .iter()
                .map(|shard| {
                    g.device(&shard.device, |g| {
                        shard
                            .vars
                            .iter()
                            .fold(g.op("RestoreV2"), |b, &v| b.input(v))
                            .attr("checkpoint", str_attr(&name))
                            .attr("only_if_uninitialized", AttrValue::Boolean(false))
                            .build()
                    })
                })
                .collect::<Result<Vec<Output>>>()
        })?;
        ops.iter().fold(sess.runner(), |r, &o| r.fetch(o)).run().map_err(|e| {
            Error::new(
                e.code(),
                format!(
                    "the tasks' latest checkpoints differ ({}), and not every task keeps '{name}' to agree on: {}",
                    steps.join(", "),
                    e.message()
                ),
            )
        })?;
        println!(
            "Saver: the tasks' latest checkpoints differ ({}; a save failed on some); all restored '{name}'",
            steps.join(", ")
        );
        restored.iter_mut().for_each(|r| r.step = oldest);
        Ok(())
    }

    /// The save ops, for running with other work.
    pub fn save_ops(&self) -> Vec<Op> {
        self.shards.iter().map(|s| s.save.op()).collect()
    }
}
