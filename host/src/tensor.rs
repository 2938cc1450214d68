//! Dense tensors: element types, shapes, and the little-endian byte form
//! tensors take when they cross into guests or onto the wire.
//!
//! Storage is an [`ndarray::ArcArray`], so passing a tensor between nodes,
//! into a variable or out of a fetch is a reference-count bump, not a copy.
//! A float tensor another host on this machine wrote into shared memory may
//! instead be [`Tensor::Mapped`], read where it lies (see [`mapped`]).

pub mod mapped;

pub use mapped::{MappedTensor, SharedMemory};

use std::fmt;

use ndarray::{ArcArray, ArrayD, IxDyn};

use crate::error::{Error, Result};

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
    /// Boolean.
    Bool,
    /// Byte string (UTF-8 by convention), used for variable names.
    String,
}

impl DType {
    /// Whether arithmetic is defined on this type.
    pub fn is_numeric(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::I32 | DType::I64)
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }

    /// Bytes per element in the wire form (strings are variable-length).
    pub fn byte_width(self) -> Option<usize> {
        match self {
            DType::F32 | DType::I32 => Some(4),
            DType::F64 | DType::I64 => Some(8),
            DType::Bool => Some(1),
            DType::String => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::Bool => "bool",
            DType::String => "string",
        })
    }
}

/// The most elements one tensor may have (4 GiB of f32): larger requests
/// are errors, not allocations that could abort the host.
pub const MAX_ELEMENTS: usize = 1 << 30;

/// The element count of `shape`, if it is at most [`MAX_ELEMENTS`]. A
/// zero dimension does not excuse the others: the product of the non-zero
/// dimensions is bounded too, since reducing over the empty one (or a
/// gradient of it) would allocate the rest.
pub fn element_count(shape: &[usize]) -> Result<usize> {
    let too_big = || Error::invalid(format!("shape {shape:?} has more than {MAX_ELEMENTS} elements"));
    shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(too_big)?;
    Ok(if shape.contains(&0) { 0 } else { shape.iter().product() })
}

/// A dimension of a static shape: `None` where unknown until run time.
pub type Dim = Option<usize>;

/// The static type of an op output: element type and (partially known) shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Dimensions; `None` for a dimension known only at run time.
    pub shape: Vec<Dim>,
}

impl TensorType {
    /// A fully known type.
    pub fn known(dtype: DType, shape: &[usize]) -> Self {
        TensorType { dtype, shape: shape.iter().map(|&d| Some(d)).collect() }
    }

    /// A scalar of `dtype`.
    pub fn scalar(dtype: DType) -> Self {
        TensorType { dtype, shape: Vec::new() }
    }

    /// Bytes of a tensor of this type, when its whole shape is known and its
    /// elements have a fixed width.
    pub fn byte_length(&self) -> Option<usize> {
        self.checked_byte_length().ok().flatten()
    }

    /// [`TensorType::byte_length`], telling a shape past [`MAX_ELEMENTS`]
    /// (an error) apart from one that is not known yet (`None`).
    pub fn checked_byte_length(&self) -> Result<Option<usize>> {
        let (Some(shape), Some(width)) =
            (self.shape.iter().copied().collect::<Option<Vec<usize>>>(), self.dtype.byte_width())
        else {
            return Ok(None);
        };
        let count = element_count(&shape)?;
        count.checked_mul(width).map(Some).ok_or_else(|| Error::invalid(format!("{self} has too many bytes")))
    }

    /// Whether a concrete tensor fits this type.
    pub fn accepts(&self, tensor: &Tensor) -> bool {
        tensor.dtype() == self.dtype
            && tensor.shape().len() == self.shape.len()
            && self.shape.iter().zip(tensor.shape()).all(|(want, got)| want.is_none_or(|w| w == *got))
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, ShapeDisplay(&self.shape))
    }
}

/// Formats a static shape as `[2, ?, 3]`.
pub struct ShapeDisplay<'a>(pub &'a [Dim]);

impl fmt::Display for ShapeDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match d {
                Some(n) => write!(f, "{n}")?,
                None => f.write_str("?")?,
            }
        }
        f.write_str("]")
    }
}

/// A dense tensor value.
#[derive(Clone, Debug)]
pub enum Tensor {
    /// f32 elements.
    F32(ArcArray<f32, IxDyn>),
    /// f64 elements.
    F64(ArcArray<f64, IxDyn>),
    /// i32 elements.
    I32(ArcArray<i32, IxDyn>),
    /// i64 elements.
    I64(ArcArray<i64, IxDyn>),
    /// bool elements.
    Bool(ArcArray<bool, IxDyn>),
    /// byte-string elements.
    String(ArcArray<Vec<u8>, IxDyn>),
    /// f32 or f64 elements in memory shared with another host. Kernels other
    /// than the few that read it in place get [`Tensor::materialize`]d copies.
    Mapped(MappedTensor),
}

impl PartialEq for Tensor {
    /// Same dtype, shape and elements (a mapped tensor equals its copy).
    fn eq(&self, other: &Tensor) -> bool {
        match (self, other) {
            (Tensor::F32(a), Tensor::F32(b)) => a == b,
            (Tensor::F64(a), Tensor::F64(b)) => a == b,
            (Tensor::I32(a), Tensor::I32(b)) => a == b,
            (Tensor::I64(a), Tensor::I64(b)) => a == b,
            (Tensor::Bool(a), Tensor::Bool(b)) => a == b,
            (Tensor::String(a), Tensor::String(b)) => a == b,
            (Tensor::Mapped(_), _) | (_, Tensor::Mapped(_)) => {
                self.materialize_ref().as_ref() == other.materialize_ref().as_ref()
            }
            _ => false,
        }
    }
}

/// Runs `$body` with `$a` bound to the array inside any variant of a
/// tensor (`$t` is a `&Tensor`; a mapped one is copied first).
#[macro_export]
#[doc(hidden)]
macro_rules! with_array {
    ($t:expr, $a:ident => $body:expr) => {
        match $t.materialize_ref().as_ref() {
            $crate::tensor::Tensor::F32($a) => $body,
            $crate::tensor::Tensor::F64($a) => $body,
            $crate::tensor::Tensor::I32($a) => $body,
            $crate::tensor::Tensor::I64($a) => $body,
            $crate::tensor::Tensor::Bool($a) => $body,
            $crate::tensor::Tensor::String($a) => $body,
            $crate::tensor::Tensor::Mapped(_) => unreachable!("materialized above"),
        }
    };
}

impl Tensor {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Tensor::F32(_) => DType::F32,
            Tensor::F64(_) => DType::F64,
            Tensor::I32(_) => DType::I32,
            Tensor::I64(_) => DType::I64,
            Tensor::Bool(_) => DType::Bool,
            Tensor::String(_) => DType::String,
            Tensor::Mapped(m) => m.dtype(),
        }
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        match self {
            Tensor::F32(a) => a.shape(),
            Tensor::F64(a) => a.shape(),
            Tensor::I32(a) => a.shape(),
            Tensor::I64(a) => a.shape(),
            Tensor::Bool(a) => a.shape(),
            Tensor::String(a) => a.shape(),
            Tensor::Mapped(m) => m.shape(),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }

    /// This tensor in ordinary storage: a mapped one copied out of shared
    /// memory, any other as it is.
    pub fn materialize(self) -> Tensor {
        match self {
            Tensor::Mapped(m) => m.to_owned_tensor(),
            other => other,
        }
    }

    /// [`Tensor::materialize`] of a borrowed tensor: borrowed back unless it
    /// is mapped.
    pub fn materialize_ref(&self) -> std::borrow::Cow<'_, Tensor> {
        match self {
            Tensor::Mapped(m) => std::borrow::Cow::Owned(m.to_owned_tensor()),
            other => std::borrow::Cow::Borrowed(other),
        }
    }

    /// The elements as a view, without copying, if they are `T`s: f32 or
    /// f64, owned or mapped.
    pub fn float_view<T: mapped::MappedElement>(&self) -> Option<ndarray::ArrayViewD<'_, T>> {
        T::view_of(self)
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its static type.
    pub fn tensor_type(&self) -> TensorType {
        TensorType::known(self.dtype(), self.shape())
    }

    /// A scalar f32.
    pub fn scalar_f32(v: f32) -> Self {
        Tensor::F32(ArrayD::from_elem(IxDyn(&[]), v).into_shared())
    }

    /// A scalar i64.
    pub fn scalar_i64(v: i64) -> Self {
        Tensor::I64(ArrayD::from_elem(IxDyn(&[]), v).into_shared())
    }

    /// An f32 tensor from a shape and row-major values.
    pub fn from_f32(shape: &[usize], values: Vec<f32>) -> Result<Self> {
        Ok(Tensor::F32(shaped(shape, values)?))
    }

    /// A tensor of `dtype` and `shape` filled with zeros (false, empty strings).
    pub fn zeros(dtype: DType, shape: &[usize]) -> Self {
        let dim = IxDyn(shape);
        match dtype {
            DType::F32 => Tensor::F32(ArrayD::zeros(dim).into_shared()),
            DType::F64 => Tensor::F64(ArrayD::zeros(dim).into_shared()),
            DType::I32 => Tensor::I32(ArrayD::zeros(dim).into_shared()),
            DType::I64 => Tensor::I64(ArrayD::zeros(dim).into_shared()),
            DType::Bool => Tensor::Bool(ArrayD::from_elem(dim, false).into_shared()),
            DType::String => Tensor::String(ArrayD::from_elem(dim, Vec::new()).into_shared()),
        }
    }

    /// A 1-D string tensor.
    pub fn strings<S: AsRef<str>>(items: &[S]) -> Self {
        let v: Vec<Vec<u8>> = items.iter().map(|s| s.as_ref().as_bytes().to_vec()).collect();
        let n = v.len();
        Tensor::String(ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("1-D shape matches").into_shared())
    }

    /// The f32 elements in row-major order, or `None` for another dtype.
    pub fn as_f32_vec(&self) -> Option<Vec<f32>> {
        match self {
            Tensor::F32(a) => Some(a.iter().copied().collect()),
            Tensor::Mapped(m) => m.view::<f32>().map(|v| v.iter().copied().collect()),
            _ => None,
        }
    }

    /// Decodes the little-endian wire form; the error names the mismatch.
    pub fn from_le_bytes(dtype: DType, shape: &[usize], data: &[u8]) -> Result<Self> {
        let count = element_count(shape)?;
        if let Some(width) = dtype.byte_width() {
            let want = count
                .checked_mul(width)
                .ok_or_else(|| Error::invalid(format!("tensor shape {shape:?} is too large")))?;
            if data.len() != want {
                return Err(Error::invalid(format!(
                    "tensor of {dtype} with shape {shape:?} needs {want} bytes, got {}",
                    data.len()
                )));
            }
        }
        Ok(match dtype {
            DType::F32 => Tensor::F32(shaped(shape, decode::<f32>(data))?),
            DType::F64 => Tensor::F64(shaped(shape, decode::<f64>(data))?),
            DType::I32 => Tensor::I32(shaped(shape, decode::<i32>(data))?),
            DType::I64 => Tensor::I64(shaped(shape, decode::<i64>(data))?),
            DType::Bool => Tensor::Bool(shaped(shape, data.iter().map(|&b| b != 0).collect())?),
            DType::String => Tensor::String(shaped(shape, decode_strings(data, count)?)?),
        })
    }

    /// Encodes the elements in row-major little-endian order.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            Tensor::F32(a) => pod_bytes(a),
            Tensor::F64(a) => pod_bytes(a),
            Tensor::I32(a) => pod_bytes(a),
            Tensor::I64(a) => pod_bytes(a),
            Tensor::Bool(a) => a.iter().map(|&b| b as u8).collect(),
            Tensor::Mapped(m) => m.bytes().to_vec(),
            Tensor::String(a) => {
                let mut out = Vec::new();
                for s in a.iter() {
                    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    out.extend_from_slice(s);
                }
                out
            }
        }
    }
}

/// Keeps an array alive for a [`bytes::Bytes`] that views its memory.
struct PodOwner<T: bytemuck::Pod + Send + Sync>(ArcArray<T, IxDyn>);

impl<T: bytemuck::Pod + Send + Sync> AsRef<[u8]> for PodOwner<T> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(self.0.as_slice().expect("checked contiguous"))
    }
}

fn pod_shared<T: bytemuck::Pod + Send + Sync>(a: &ArcArray<T, IxDyn>) -> bytes::Bytes {
    // Small tensors are cheaper to copy than to share.
    if a.len() * std::mem::size_of::<T>() >= 64 << 10 && a.as_slice().is_some() {
        // The array is copy-on-write: later updates to a variable write to a
        // new buffer, so these bytes stay what they were.
        bytes::Bytes::from_owner(PodOwner(a.clone()))
    } else {
        bytes::Bytes::from(pod_bytes(a))
    }
}

impl Tensor {
    /// How many bytes [`Tensor::to_le_bytes`] gives, without encoding.
    pub fn byte_length(&self) -> usize {
        match self {
            Tensor::String(a) => a.iter().map(|s| 4 + s.len()).sum(),
            other => other.len() * other.dtype().byte_width().unwrap_or(1),
        }
    }

    /// The little-endian bytes, without copying when the elements are
    /// contiguous numbers (they share the tensor's memory).
    pub fn to_shared_bytes(&self) -> bytes::Bytes {
        match self {
            Tensor::F32(a) => pod_shared(a),
            Tensor::F64(a) => pod_shared(a),
            Tensor::I32(a) => pod_shared(a),
            Tensor::I64(a) => pod_shared(a),
            Tensor::Mapped(m) => m.to_shared_bytes(),
            other => bytes::Bytes::from(other.to_le_bytes()),
        }
    }
}

/// Builds a tensor from its bytes arriving in pieces, writing numbers
/// straight into their typed buffer: one copy, and no zeroing pass first.
#[derive(Debug)]
pub struct TensorAssembler {
    dtype: DType,
    shape: Vec<usize>,
    buffer: Filling,
    filled: usize,
    len: usize,
}

/// The buffer a tensor's bytes go into: typed (capacity for every element,
/// written as bytes arrive, its length set once all have), or raw bytes for
/// bools and strings.
#[derive(Debug)]
enum Filling {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    Raw(Vec<u8>),
}

/// Copies `piece` to byte offset `at` of `v`'s capacity.
fn write_pod<T: bytemuck::Pod>(v: &mut Vec<T>, at: usize, piece: &[u8]) {
    assert!(at + piece.len() <= v.capacity() * std::mem::size_of::<T>(), "within the reserved capacity");
    // SAFETY: the range is inside the allocation (checked above) and does
    // not overlap `piece`, which is borrowed from elsewhere.
    unsafe { std::ptr::copy_nonoverlapping(piece.as_ptr(), v.as_mut_ptr().cast::<u8>().add(at), piece.len()) }
}

/// `v` with all `count` elements, once every byte of them was written.
fn filled_pod<T: bytemuck::Pod>(mut v: Vec<T>, count: usize) -> Vec<T> {
    assert!(count <= v.capacity());
    // SAFETY: every byte of the first `count` elements was written (the
    // assembler checks that all its bytes arrived), and any bytes are a
    // valid `T` (Pod).
    unsafe { v.set_len(count) };
    v
}

impl TensorAssembler {
    /// Expects `len` bytes of a `dtype` tensor of `shape`.
    pub fn new(dtype: DType, shape: Vec<usize>, len: usize) -> Result<Self> {
        let count = element_count(&shape)?;
        if let Some(w) = dtype.byte_width()
            && count.checked_mul(w) != Some(len)
        {
            return Err(Error::invalid(format!(
                "tensor of {dtype} with shape {shape:?} needs {} bytes, got {len}",
                count.saturating_mul(w)
            )));
        }
        let buffer = match dtype {
            DType::F32 => Filling::F32(Vec::with_capacity(count)),
            DType::F64 => Filling::F64(Vec::with_capacity(count)),
            DType::I32 => Filling::I32(Vec::with_capacity(count)),
            DType::I64 => Filling::I64(Vec::with_capacity(count)),
            DType::Bool | DType::String => Filling::Raw(Vec::new()),
        };
        Ok(TensorAssembler { dtype, shape, buffer, filled: 0, len })
    }

    /// Whether every byte has arrived.
    pub fn is_complete(&self) -> bool {
        self.filled >= self.len
    }

    /// Appends the next piece; more bytes than announced is an error.
    pub fn push(&mut self, piece: &[u8]) -> Result<()> {
        if piece.len() > self.len - self.filled {
            return Err(Error::invalid(format!("tensor got more than its {} bytes", self.len)));
        }
        match &mut self.buffer {
            Filling::F32(v) => write_pod(v, self.filled, piece),
            Filling::F64(v) => write_pod(v, self.filled, piece),
            Filling::I32(v) => write_pod(v, self.filled, piece),
            Filling::I64(v) => write_pod(v, self.filled, piece),
            Filling::Raw(v) => v.extend_from_slice(piece),
        }
        self.filled += piece.len();
        Ok(())
    }

    /// The tensor, once complete.
    pub fn finish(self) -> Result<Tensor> {
        if !self.is_complete() {
            return Err(Error::invalid(format!("tensor has {} of its {} bytes", self.filled, self.len)));
        }
        let count = element_count(&self.shape)?;
        let shape = &self.shape;
        Ok(match self.buffer {
            Filling::F32(v) => Tensor::F32(shaped(shape, filled_pod(v, count))?),
            Filling::F64(v) => Tensor::F64(shaped(shape, filled_pod(v, count))?),
            Filling::I32(v) => Tensor::I32(shaped(shape, filled_pod(v, count))?),
            Filling::I64(v) => Tensor::I64(shaped(shape, filled_pod(v, count))?),
            Filling::Raw(raw) => Tensor::from_le_bytes(self.dtype, shape, &raw)?,
        })
    }
}

/// The bytes of a numeric array: one copy when it is contiguous in
/// row-major order (the usual case), element by element otherwise.
fn pod_bytes<T: bytemuck::Pod>(a: &ArcArray<T, IxDyn>) -> Vec<u8> {
    const { assert!(cfg!(target_endian = "little"), "weft's wire format is little-endian") };
    match a.as_slice() {
        Some(slice) => bytemuck::cast_slice(slice).to_vec(),
        None => a.iter().flat_map(|x| bytemuck::bytes_of(x).to_vec()).collect(),
    }
}

fn shaped<T: Clone>(shape: &[usize], values: Vec<T>) -> Result<ArcArray<T, IxDyn>> {
    let n = values.len();
    ArrayD::from_shape_vec(IxDyn(shape), values)
        .map(|a| a.into_shared())
        .map_err(|_| Error::invalid(format!("{n} values do not fill shape {shape:?}")))
}

/// Elements from little-endian bytes (any alignment), at memcpy speed.
fn decode<T: bytemuck::Pod>(data: &[u8]) -> Vec<T> {
    const { assert!(cfg!(target_endian = "little"), "weft's wire format is little-endian") };
    bytemuck::pod_collect_to_vec(data)
}

fn decode_strings(mut data: &[u8], count: usize) -> Result<Vec<Vec<u8>>> {
    // Each element takes at least 4 bytes: never reserve more than the data can hold.
    let mut out = Vec::with_capacity(count.min(data.len() / 4));
    for i in 0..count {
        let bad = || Error::invalid(format!("string tensor element {i} is truncated"));
        let len_bytes: [u8; 4] = data.get(..4).ok_or_else(bad)?.try_into().expect("4 bytes");
        let len = u32::from_le_bytes(len_bytes) as usize;
        let bytes = data.get(4..4 + len).ok_or_else(bad)?;
        out.push(bytes.to_vec());
        data = &data[4 + len..];
    }
    if !data.is_empty() {
        return Err(Error::invalid(format!("string tensor has {} bytes after its {count} elements", data.len())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_every_dtype() {
        let cases = [
            Tensor::from_f32(&[2, 2], vec![1.0, -2.5, 3.0, 0.0]).unwrap(),
            Tensor::F64(ArrayD::from_elem(IxDyn(&[3]), 1.5).into_shared()),
            Tensor::I32(ArrayD::from_shape_vec(IxDyn(&[2]), vec![-7, 9]).unwrap().into_shared()),
            Tensor::I64(ArrayD::from_elem(IxDyn(&[]), i64::MIN).into_shared()),
            Tensor::Bool(ArrayD::from_shape_vec(IxDyn(&[2]), vec![true, false]).unwrap().into_shared()),
            Tensor::strings(&["var", "", "w/x"]),
        ];
        for t in cases {
            let bytes = t.to_le_bytes();
            let back = Tensor::from_le_bytes(t.dtype(), t.shape(), &bytes).unwrap();
            assert_eq!(back, t);
        }
    }

    #[test]
    fn non_contiguous_tensors_encode_in_row_major_order() {
        let t = Tensor::from_f32(&[2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
        let Tensor::F32(a) = t else { unreachable!() };
        let transposed = Tensor::F32(a.reversed_axes());
        let back = Tensor::from_le_bytes(DType::F32, &[3, 2], &transposed.to_le_bytes()).unwrap();
        assert_eq!(back.as_f32_vec().unwrap(), vec![1., 4., 2., 5., 3., 6.]);
    }

    #[test]
    fn assembler_rebuilds_tensors_from_pieces() {
        let cases = [
            Tensor::from_f32(&[2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap(),
            Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[2]), vec![-7, 1 << 40]).unwrap().into_shared()),
            Tensor::Bool(ArrayD::from_shape_vec(IxDyn(&[3]), vec![true, false, true]).unwrap().into_shared()),
            Tensor::strings(&["a", "bc"]),
        ];
        for t in cases {
            let bytes = t.to_shared_bytes();
            assert_eq!(bytes.as_ref(), t.to_le_bytes().as_slice());
            let mut asm = TensorAssembler::new(t.dtype(), t.shape().to_vec(), bytes.len()).unwrap();
            for piece in bytes.chunks(5) {
                assert!(!asm.is_complete());
                asm.push(piece).unwrap();
            }
            assert_eq!(asm.finish().unwrap(), t);
        }
        assert!(TensorAssembler::new(DType::F32, vec![2], 7).is_err());
        let mut asm = TensorAssembler::new(DType::F32, vec![1], 4).unwrap();
        assert!(asm.push(&[0; 5]).is_err());
        assert!(asm.finish().is_err());
    }

    #[test]
    fn f32_bytes_are_little_endian() {
        let t = Tensor::scalar_f32(1.0);
        assert_eq!(t.to_le_bytes(), vec![0, 0, 0x80, 0x3f]);
    }

    #[test]
    fn wrong_byte_count_names_shape_and_sizes() {
        let err = Tensor::from_le_bytes(DType::F32, &[2, 3], &[0; 20]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("[2, 3]") && msg.contains("24") && msg.contains("20"), "{msg}");
    }

    #[test]
    fn truncated_string_is_an_error() {
        let err = Tensor::from_le_bytes(DType::String, &[1], &[5, 0, 0, 0, b'a']).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn tensor_type_accepts_unknown_dims() {
        let ty = TensorType { dtype: DType::F32, shape: vec![None, Some(2)] };
        assert!(ty.accepts(&Tensor::zeros(DType::F32, &[5, 2])));
        assert!(!ty.accepts(&Tensor::zeros(DType::F32, &[5, 3])));
        assert!(!ty.accepts(&Tensor::zeros(DType::F64, &[5, 2])));
        assert_eq!(ty.to_string(), "f32[?, 2]");
    }
}
