//! TensorBoard summaries (`tf.summary.scalar`): ops that make the host of
//! the task they run on append a scalar to its event file under its
//! `--log-dir` (`<log-dir>/<job>-<task>/events.out.tfevents.*`).

use crate::error::Result;
use crate::graph::{AttrValue, Graph, Op, Output};

/// Adds an op writing `value` (an f32 or f64 scalar) under `tag` at `step`
/// (an i64 scalar, e.g. the global step's value). Run it with the step.
pub fn scalar(g: &Graph, tag: &str, value: Output, step: Output) -> Result<Op> {
    g.op("WriteScalarSummary").input(step).input(value).attr("tag", AttrValue::Text(tag.to_string())).build_op()
}
