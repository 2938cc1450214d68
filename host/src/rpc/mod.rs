//! gRPC between hosts: the `weft.v1.TaskService` (served by every task
//! server) and the client a master uses to run partitions on other tasks.
//! Generated protobuf types stay inside this module.

pub mod auth;
mod client;
mod convert;
mod deliveries;
mod frames;
pub mod in_process;
#[cfg(test)]
mod proptests;
mod rendezvous;
mod service;
mod shared;
mod traffic;
mod wire_bound;

pub use auth::{AuthInterceptor, Authenticator, Caller, Credentials};
pub use client::GrpcRemote;
pub use convert::{error_from_status, partition_to_pb, status_from_error};
pub use service::{ServedTask, SingleTask, TaskDirectory, TaskService};
pub use traffic::Traffic;

/// Generated from `proto/weft/v1/task.proto`.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("weft.v1");
}

/// Largest message a task server accepts: tensors and registrations arrive
/// in pieces of at most 1 MiB, so an unknown caller cannot make it decode
/// more than this at once.
pub const MAX_TASK_MESSAGE_BYTES: usize = 4 << 20;

/// Largest message either side accepts otherwise. Tensors between tasks travel in
/// chunks of at most 1 MiB; a partition definition carries its constants
/// whole, hence the headroom.
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;
