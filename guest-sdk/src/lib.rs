//! The Rust API for weft worker programs.
//!
//! A worker is a WebAssembly component (`--target wasm32-wasip2`) that builds
//! graphs and runs them through sessions, TensorFlow 1.x style. The host
//! holds the variables and runs the ops with native kernels; this crate is a
//! thin, typed layer over the WIT imports `graph`, `variable`, `device` and
//! `session`, and it exports the program's entry point.
//!
//! ```no_run
//! use weft_sdk::{Graph, Result, Session, Variable};
//!
//! fn run(_args: Vec<String>) -> Result<()> {
//!     let graph = Graph::new();
//!     let var = Variable::new(&graph, 0.0f32, "var")?;
//!     let init = graph.global_variables_initializer()?;
//!     let increment = var.assign_add(1.0f32)?;
//!
//!     let sess = Session::local(&graph)?;
//!     sess.run(init)?;
//!     sess.run(increment)?;
//!     println!("var = {}", sess.fetch(&var)?); // var = 1.0
//!     Ok(())
//! }
//!
//! weft_sdk::export_worker!(run);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and run it
//! with `weft run target/wasm32-wasip2/release/NAME.wasm`.
#![deny(missing_docs)]

pub mod device;
mod error;
mod graph;
mod ops;
mod session;
pub mod summary;
mod tensor;
pub mod train;
mod variable;
#[doc(hidden)]
pub mod wit;

pub use error::{Code, Error, Result};
pub use graph::{AttrValue, Graph, Op, OpBuilder, Operation, Output};
pub use session::{DeviceStats, NodeStats, RunOutput, Runner, Session, SessionOptions};
pub use tensor::{DType, Element, Tensor};
pub use variable::{Operand, Variable, VariableOptions};

#[doc(hidden)]
pub use wit as __wit;

/// Exports `run` as the program's entry point.
///
/// `run` takes the program's arguments and returns `Result<(), E>` for any
/// `E: Into<Error>` (usually [`Error`] itself); an `Err` crosses to the host
/// as a typed error and is reported as the program's failure, `code: message`.
///
/// ```no_run
/// fn run(args: Vec<String>) -> weft_sdk::Result<()> {
///     println!("hello from {:?}", args);
///     Ok(())
/// }
/// weft_sdk::export_worker!(run);
/// ```
#[macro_export]
macro_rules! export_worker {
    ($run:path) => {
        struct __WeftWorker;

        impl $crate::__wit::Guest for __WeftWorker {
            fn run(
                args: ::std::vec::Vec<::std::string::String>,
            ) -> ::std::result::Result<(), $crate::__wit::types::Error> {
                $run(args).map_err(|e| $crate::Error::into_raw(::std::convert::Into::into(e)))
            }
        }

        $crate::__wit::__export_task_worker!(__WeftWorker with_types_in $crate::__wit);
    };
}
