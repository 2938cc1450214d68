//! The WIT interface `weft:runtime/types`, written here instead of generated
//! by `bindgen!` (which is told so through its `with` key), for one reason:
//! a tensor going into a guest is lowered straight from the host tensor's
//! own memory (or the shared-memory segment it lies in), so a fetch costs
//! one copy, into the guest's linear memory. Generated bindings would want a
//! `Vec<u8>` of its bytes first, a second copy of every fetched tensor.
//!
//! The records and variants derive their component-model traits as the
//! generated ones do; only [`TensorBytes`] implements them by hand, by
//! handing each call to wasmtime's own `list<u8>` implementation. Those trait
//! methods are hidden in wasmtime's docs and not covered by its stability
//! promise, which is one reason the workspace pins wasmtime to one release.
//! The sizes and alignments are checked against the WIT by `bindgen!`'s
//! assertions when the interfaces that use these types are generated, and
//! the field names by wasmtime's type check when a component is linked.

use std::mem::MaybeUninit;
use std::ops::Deref;

use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext, LowerContext};
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
    /// Row-major elements, little-endian.
    #[component(name = "data")]
    pub data: TensorBytes,
}

/// A tensor's little-endian bytes: those a guest sent, or a host tensor's,
/// shared with it rather than copied (see [`crate::Tensor::to_shared_bytes`]).
#[derive(Clone, Debug)]
pub enum TensorBytes {
    /// Lifted out of a guest's memory.
    Guest(Vec<u8>),
    /// The memory of a host tensor, lowered into a guest without another copy.
    Host(bytes::Bytes),
}

impl Deref for TensorBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            TensorBytes::Guest(v) => v,
            TensorBytes::Host(b) => b,
        }
    }
}

// SAFETY: every item is `[u8]`'s own (a `list<u8>`), and every call below
// is handed to `[u8]`'s or `Vec<u8>`'s implementation with the same
// arguments, so the lowered form and the ABI are exactly theirs.
unsafe impl ComponentType for TensorBytes {
    type Lower = <[u8] as ComponentType>::Lower;

    const ABI: CanonicalAbiInfo = <[u8] as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <[u8] as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: see the `ComponentType` implementation.
unsafe impl Lower for TensorBytes {
    fn linear_lower_to_flat<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        dst: &mut MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        <[u8] as Lower>::linear_lower_to_flat(self, cx, ty, dst)
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        <[u8] as Lower>::linear_lower_to_memory(self, cx, ty, offset)
    }
}

// SAFETY: see the `ComponentType` implementation.
unsafe impl Lift for TensorBytes {
    fn linear_lift_from_flat(cx: &mut LiftContext<'_>, ty: InterfaceType, src: &Self::Lower) -> wasmtime::Result<Self> {
        <Vec<u8> as Lift>::linear_lift_from_flat(cx, ty, src).map(TensorBytes::Guest)
    }

    fn linear_lift_from_memory(cx: &mut LiftContext<'_>, ty: InterfaceType, bytes: &[u8]) -> wasmtime::Result<Self> {
        <Vec<u8> as Lift>::linear_lift_from_memory(cx, ty, bytes).map(TensorBytes::Guest)
    }
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
