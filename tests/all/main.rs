//! weft's integration tests, in one binary (each test binary links wasmtime).
//!
//! - `component`: real guest components on the in-process test host.
//! - `bad_input`: every kind of bad program, and that the host carries on.
//! - `cli`: the `weft` binary as a user runs it, as a child process.
//! - `direct`: tensors straight between two tasks other than the session's (worker to worker).
//! - `data_plane`: tensors through shared memory between a `weft serve` process and a master here.
//! - `deploy`: the Dockerfile and the Kubernetes manifests in deploy/, against the binary.
//! - `hardening`: hostile programs against a shared `weft serve --listen` host (issue 9).
//! - `hosting`: uploads, tenants, credentials and limits on a real gRPC host.
//! - `hosting_cli`: two `weft serve --listen` hosts shared by tenants, as a user drives them.
//! - `metrics`: `/metrics` scraped from real hosts while a cluster trains and on a shared host.
//! - `multiprocess`: S6, S7, S9 with real `weft` processes.
//! - `netns`: hosts in separate network namespaces joined by veth pairs (a cable pulled mid-training).
//! - `python`: Python workers built with `weft build-python`: the seed's programs, training, beside Rust workers, hosted.
//! - `recovery`: checkpoints, and a ps restarted (or SIGKILLed) mid-training restored from them.
//! - `scenarios`: the seed's S2-S9 on in-process clusters talking gRPC.
//! - `soak`: eight tenants, each a parameter-server job beside a hostile program, on one host.
//! - `training`: gradients, optimizers, device setter, and ps training on a cluster.

mod bad_input;
mod cli;
mod component;
mod data_plane;
mod deploy;
mod direct;
mod hardening;
mod hosting;
mod hosting_cli;
mod metrics;
mod multiprocess;
mod netns;
mod process;
mod python;
mod recovery;
mod scenarios;
mod soak;
mod training;
