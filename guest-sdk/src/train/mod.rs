//! Training, as `tf.train` in TensorFlow 1.x: optimizers whose updates are
//! fused ops on each variable's task, their slot variables beside the
//! variable (shared by name, so workers building the same optimizer share its
//! statistics), a global step, gradient clipping, and a device setter that
//! puts variables on parameter-server tasks.
//!
//! ```no_run
//! use weft_sdk::train::{GradientDescent, Optimizer, ReplicaDeviceSetter, global_step};
//! use weft_sdk::{Graph, Result, Variable};
//!
//! fn build(g: &Graph) -> Result<()> {
//!     let setter = ReplicaDeviceSetter::new(1, "/job:worker/task:0");
//!     g.device(setter.worker_device(), |g| {
//!         let w = setter.variable(g, [[0.0f32; 3]; 2], "W")?;      // on /job:ps/task:0
//!         let step = setter.place(g, |g| global_step(g))?;
//!         let x = g.constant([[1.0f32, 2.0]])?;
//!         let y = g.matmul(x, w.value())?;
//!         let loss = g.sum(g.square(y)?, None, false)?;
//!         let train = GradientDescent::new(0.01).minimize(g, loss, &[&w], Some(&step))?;
//!         let _ = train;
//!         Ok(())
//!     })
//! }
//! ```

mod device_setter;
mod optimizer;
mod saver;
mod session;

pub use device_setter::{PsStrategy, ReplicaDeviceSetter};
pub use optimizer::{Adam, GradientDescent, Momentum, Optimizer, RmsProp};
pub use saver::{Restored, Saver};
pub use session::{TrainingConfig, TrainingSession};

use crate::error::{Code, Error, Result};
use crate::graph::{Graph, Output};
use crate::variable::{Variable, VariableOptions};

/// `tf.train.get_or_create_global_step()`: an i64 scalar variable named
/// `global_step`, not trainable, counting applied updates.
pub fn global_step(g: &Graph) -> Result<Variable> {
    Variable::with_options(g, 0i64, "global_step", VariableOptions { trainable: false, ..Default::default() })
}

/// `tf.clip_by_global_norm(grads, clip_norm)`: every gradient scaled by
/// `clip_norm / max(global_norm, clip_norm)`; returns the clipped gradients
/// and the global norm before clipping.
pub fn clip_by_global_norm(g: &Graph, grads: &[Output], clip_norm: f32) -> Result<(Vec<Output>, Output)> {
    if grads.is_empty() {
        return Err(Error::new(Code::InvalidArgument, "clip_by_global_norm: no gradients"));
    }
    g.name_scope("clip_by_global_norm", |g| {
        let squares = grads.iter().map(|&x| g.sum(g.square(x)?, None, false)).collect::<Result<Vec<_>>>()?;
        let norm = g.sqrt(g.add_n(&squares)?)?;
        let clip = g.constant(clip_norm)?;
        let scale = g.div(clip, g.maximum(norm, clip)?)?;
        let clipped = grads.iter().map(|&x| g.mul(x, scale)).collect::<Result<Vec<_>>>()?;
        Ok((clipped, norm))
    })
}
