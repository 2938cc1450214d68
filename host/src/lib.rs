//! weft's native host: it holds variables, places and runs ops with native
//! kernels, and runs worker programs as sandboxed WebAssembly components.
//!
//! # Layout
//!
//! Dependencies point one way, from pure data to the outside world:
//!
//! - [`error`]: the crate's one error type, with gRPC-style codes.
//! - [`tensor`], [`device`], [`graph`]: tensors, device names, graphs with
//!   op validation (the op catalogue, shape inference, gradients) and
//!   TensorFlow-style naming. No I/O.
//! - [`budget`]: byte budgets, what an owner may make the host hold.
//! - [`atomic_file`]: whole files written atomically (checkpoints, state,
//!   compiled modules).
//! - [`checkpoint`], [`summary`]: checkpoints as safetensors files and
//!   TensorBoard event files, under a host's directories.
//! - [`exec`]: kernels, staged partition plans, the executor, variables,
//!   compute metering.
//! - [`cluster`]: cluster specs (JSON, TOML, TF_CONFIG) and device-to-task
//!   resolution.
//! - [`task`]: a task: its identity, devices, remote tasks, session targets.
//! - [`runtime`]: wasmtime: the engine, the compiled-module cache and the
//!   WIT interfaces guests import.
//! - [`shm`]: shared-memory segments between hosts on one machine.
//! - [`tls`], [`rpc`]: TLS settings; gRPC between hosts
//!   (`weft.v1.TaskService`, its client, credentials), with tensors through
//!   [`shm`] when both ends are on one machine.
//! - [`hosting`]: experiments side by side on shared hosts: uploads,
//!   programs, limits, authorization, the control API
//!   (`weft.v1.ControlService`).
//! - [`server`]: serves a host's gRPC services.
//! - [`local_cluster`], [`launch`]: task servers of a whole cluster in one
//!   process; `weft launch`.
//! - [`testing`]: a harness for component tests of worker programs.
//! - [`cli`]: the `weft` command line (`main.rs` only calls it).

pub mod atomic_file;
pub mod budget;
pub mod checkpoint;
pub mod cli;
pub mod cluster;
pub mod device;
pub mod error;
pub mod exec;
pub mod graph;
pub mod hosting;
pub mod launch;
pub mod local_cluster;
pub mod metrics;
pub mod rpc;
pub mod runtime;
pub mod server;
pub mod shm;
pub mod summary;
pub mod task;
pub mod tensor;
pub mod testing;
pub mod tls;

pub use error::{Code, Error, Result};
