//! weft's native host: it holds variables, places and runs ops with native
//! kernels, and runs worker programs as sandboxed WebAssembly components.
//!
//! # Layout
//!
//! Dependencies point one way, from pure data to the outside world:
//!
//! - [`tensor`], [`device`], [`graph`]: tensors, device names, graphs with
//!   op validation and TensorFlow-style naming. No I/O.
//! - [`exec`]: kernels, plans and the executor of one task's device.
//! - [`cluster`]: cluster specs and device-to-task resolution.
//! - [`task`]: a task: its identity, device and session targets.
//! - [`runtime`]: wasmtime: the engine, the compiled-module cache and the
//!   WIT interfaces guests import.
//! - [`testing`]: a harness for component tests of worker programs.
//! - [`cli`]: the `weft` command line (`main.rs` only calls it).

pub mod cli;
pub mod cluster;
pub mod device;
pub mod error;
pub mod exec;
pub mod graph;
pub mod launch;
pub mod local_cluster;
pub mod rpc;
pub mod runtime;
pub mod server;
pub mod task;
pub mod tensor;
pub mod testing;

pub use error::{Code, Error, Result};
