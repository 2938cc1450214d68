//! The WIT interface `weft:runtime/types`, written here instead of generated
//! by `bindgen!` (which is told so through its `with` key), for one reason:
//! a tensor's bytes are a [`bytes::Bytes`], not a `Vec<u8>`. Going into a
//! guest, they are the host tensor's own memory (or the shared-memory
//! segment it lies in), lowered by wasmtime (its `component-model-bytes`
//! feature) with one copy, into the guest's linear memory; generated
//! bindings would want a `Vec<u8>` of them first, a second copy of every
//! fetched tensor. Tensors under 64 KiB, bools, strings and tensors whose
//! elements are not contiguous are still copied out first (cheaper than
//! sharing, or there is nothing to share). Coming from a guest, the lifted
//! `Vec<u8>` becomes the `Bytes` without a copy.
//!
//! The types derive their component-model traits as the generated ones do.
//! Sizes and alignments are checked against the WIT by `bindgen!`'s
//! assertions where the interfaces that use them are generated, and names
//! and cases by wasmtime's type check when a component is linked.

use wasmtime::component::{ComponentType, HasData, Lift, Linker, Lower};

/// Element type of a tensor.
#[derive(ComponentType, Lift, Lower, Clone, Copy, Debug, PartialEq, Eq)]
#[component(enum)]
#[repr(u8)]
pub enum Dtype {
    /// 32-bit float.
    #[component(name = "f32")]
    F32,
    /// 64-bit float.
    #[component(name = "f64")]
    F64,
    /// 32-bit signed integer.
    #[component(name = "i32")]
    I32,
    /// 64-bit signed integer.
    #[component(name = "i64")]
    I64,
    /// Boolean.
    #[component(name = "bool")]
    Bool,
    /// Byte string.
    #[component(name = "string")]
    String,
}

/// A dense tensor as it crosses between host and guest.
#[derive(ComponentType, Lift, Lower, Clone, Debug)]
#[component(record)]
pub struct Tensor {
    /// Element type.
    #[component(name = "dtype")]
    pub dtype: Dtype,
    /// Dimensions, outermost first; empty for a scalar.
    #[component(name = "shape")]
    pub shape: Vec<u64>,
    /// Row-major elements, little-endian: a guest's, or those of a host
    /// tensor, shared with it ([`crate::Tensor::to_shared_bytes`]).
    #[component(name = "data")]
    pub data: bytes::Bytes,
}

/// An error a program can act on, with a TensorFlow/gRPC status code; each
/// case's message names what it is about.
#[derive(ComponentType, Lift, Lower, Clone, Debug)]
#[component(variant)]
pub enum Error {
    /// The program asked for something malformed: bad op, dtype, shape, device string.
    #[component(name = "invalid-argument")]
    InvalidArgument(String),
    /// Something named does not exist: a node, a variable, a task.
    #[component(name = "not-found")]
    NotFound(String),
    /// The system is not in a state to do this yet, e.g. an uninitialized variable.
    #[component(name = "failed-precondition")]
    FailedPrecondition(String),
    /// A task needed for this call is not reachable.
    #[component(name = "unavailable")]
    Unavailable(String),
    /// The call's deadline passed before it finished.
    #[component(name = "deadline-exceeded")]
    DeadlineExceeded(String),
    /// The call was aborted, e.g. by a concurrent change.
    #[component(name = "aborted")]
    Aborted(String),
    /// A quota or limit was hit; the message names the limit.
    #[component(name = "resource-exhausted")]
    ResourceExhausted(String),
    /// The caller may not do this.
    #[component(name = "permission-denied")]
    PermissionDenied(String),
    /// The operation is not implemented by this host.
    #[component(name = "unimplemented")]
    Unimplemented(String),
    /// A bug in the host; please report it.
    #[component(name = "internal")]
    Internal(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Error {}

/// What the host provides for the interface: nothing but its types.
pub trait Host: Send {}

impl<H: Host + ?Sized> Host for &mut H {}

/// The store-aware half of [`Host`], empty as well (`bindgen!` asks for it
/// of every imported interface).
pub trait HostWithStore<T>: HasData + Send {}

impl<H: ?Sized + HasData + Send, T> HostWithStore<T> for H {}

/// Adds the interface to `linker`: an instance with no functions.
pub fn add_to_linker<T, D>(linker: &mut Linker<T>, _host_getter: fn(&mut T) -> D::Data<'_>) -> wasmtime::Result<()>
where
    D: HostWithStore<T>,
    for<'a> D::Data<'a>: Host,
    T: 'static + Send,
{
    linker.instance("weft:runtime/types")?;
    Ok(())
}
