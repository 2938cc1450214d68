//! Tensors whose elements lie in memory shared with another host, read
//! where they lie instead of copied out first.
//!
//! Only floats are ever mapped: every bit pattern is a valid f32 or f64, and
//! no float decides an index or a shape, so a peer that writes to the range
//! while a kernel reads it garbles its own numbers and nothing else. Kernels
//! that read a mapped tensor in place are few (MatMul, a full Sum, the optimizers'
//! gradient); every other op gets a copy first
//! ([`Tensor::materialize`](super::Tensor::materialize)). The memory stays
//! mapped for as long as any tensor refers to it.

use std::fmt;
use std::sync::Arc;

use ndarray::{ArrayViewD, IxDyn};

use super::{DType, Tensor, element_count};
use crate::error::{Error, Result};

/// Memory another process may write to, mapped for as long as this value
/// lives.
///
/// Its contents may change under a reader (another process writes there):
/// [`MappedTensor`] reads only floats from it, and copies are taken of
/// anything else; never read a length, an index or a shape from it.
///
/// # Safety
/// `bytes` returns the same pointer and length for the whole life of the
/// value, and the memory stays mapped (and readable) until it is dropped.
pub unsafe trait SharedMemory: Send + Sync {
    /// All of its bytes.
    fn bytes(&self) -> &[u8];
}

/// A float element type a tensor may be mapped as.
pub trait MappedElement: bytemuck::Pod {
    /// Its dtype.
    const DTYPE: DType;

    /// The elements of `t` as a view, owned or mapped, if they are `Self`s.
    fn view_of(t: &Tensor) -> Option<ArrayViewD<'_, Self>>;
}

impl MappedElement for f32 {
    const DTYPE: DType = DType::F32;

    fn view_of(t: &Tensor) -> Option<ArrayViewD<'_, f32>> {
        match t {
            Tensor::F32(a) => Some(a.view()),
            Tensor::Mapped(m) => m.view(),
            _ => None,
        }
    }
}

impl MappedElement for f64 {
    const DTYPE: DType = DType::F64;

    fn view_of(t: &Tensor) -> Option<ArrayViewD<'_, f64>> {
        match t {
            Tensor::F64(a) => Some(a.view()),
            Tensor::Mapped(m) => m.view(),
            _ => None,
        }
    }
}

/// A row-major f32 or f64 tensor at `offset` of some shared memory.
#[derive(Clone)]
pub struct MappedTensor {
    dtype: DType,
    shape: Vec<usize>,
    memory: Arc<dyn SharedMemory>,
    offset: usize,
    bytes: usize,
}

impl fmt::Debug for MappedTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedTensor")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl MappedTensor {
    /// The `dtype` tensor of `shape` at `offset` of `memory`, or `None` when
    /// it cannot be mapped (not a float, not aligned for its elements); an
    /// error when its bytes are not all inside the memory.
    pub fn new(dtype: DType, shape: Vec<usize>, memory: Arc<dyn SharedMemory>, offset: usize) -> Result<Option<Self>> {
        let (DType::F32 | DType::F64) = dtype else { return Ok(None) };
        let width = dtype.byte_width().expect("floats have a width");
        let bytes = element_count(&shape)?
            .checked_mul(width)
            .ok_or_else(|| Error::invalid(format!("tensor shape {shape:?} is too large")))?;
        let all = memory.bytes();
        if offset.checked_add(bytes).is_none_or(|end| end > all.len()) {
            return Err(Error::invalid(format!(
                "a {dtype} tensor of shape {shape:?} at byte {offset} runs past the {}-byte segment",
                all.len()
            )));
        }
        if !(all.as_ptr() as usize + offset).is_multiple_of(width) {
            return Ok(None);
        }
        Ok(Some(MappedTensor { dtype, shape, memory, offset, bytes }))
    }

    /// Its element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Its dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Its little-endian bytes, where they lie.
    pub fn bytes(&self) -> &[u8] {
        &self.memory.bytes()[self.offset..self.offset + self.bytes]
    }

    /// Its elements in place, if they are `T`s.
    pub fn view<T: MappedElement>(&self) -> Option<ArrayViewD<'_, T>> {
        if self.dtype != T::DTYPE {
            return None;
        }
        let elements: &[T] = bytemuck::try_cast_slice(self.bytes()).ok()?;
        ArrayViewD::from_shape(IxDyn(&self.shape), elements).ok()
    }

    /// A copy in ordinary (owned, copy-on-write) storage.
    pub fn to_owned_tensor(&self) -> Tensor {
        fn owned<T: MappedElement>(m: &MappedTensor) -> ndarray::ArcArray<T, IxDyn> {
            m.view::<T>().expect("dtype and alignment checked when mapped").to_owned().into_shared()
        }
        match self.dtype {
            DType::F32 => Tensor::F32(owned(self)),
            DType::F64 => Tensor::F64(owned(self)),
            other => unreachable!("only floats are mapped, not {other}"),
        }
    }
}

/// Keeps the memory mapped for a [`bytes::Bytes`] that views it.
struct MappedOwner(MappedTensor);

impl AsRef<[u8]> for MappedOwner {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

impl MappedTensor {
    /// Its bytes as [`bytes::Bytes`], without copying them.
    pub fn to_shared_bytes(&self) -> bytes::Bytes {
        bytes::Bytes::from_owner(MappedOwner(self.clone()))
    }
}

/// `t`'s bytes in memory of their own, as a [`Tensor::Mapped`] (for tests
/// of what reads mapped tensors).
#[cfg(test)]
pub(crate) fn mapped_copy(t: &Tensor) -> Tensor {
    let memory: Arc<dyn SharedMemory> = Arc::new(tests::Heap::new(t.to_le_bytes()));
    Tensor::Mapped(MappedTensor::new(t.dtype(), t.shape().to_vec(), memory, 0).unwrap().expect("a float tensor"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes on the heap, 8-aligned (a `Vec<u64>` underneath).
    pub(super) struct Heap(Vec<u64>, usize);

    impl Heap {
        pub(super) fn new(bytes: Vec<u8>) -> Heap {
            let mut words = vec![0u64; bytes.len().div_ceil(8)];
            bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
            Heap(words, bytes.len())
        }
    }

    // SAFETY: a fixed heap buffer, alive as long as the value.
    unsafe impl SharedMemory for Heap {
        fn bytes(&self) -> &[u8] {
            &bytemuck::cast_slice(&self.0)[..self.1]
        }
    }

    fn memory_with(values: &[f32], at: usize) -> Arc<dyn SharedMemory> {
        let mut bytes = vec![0u8; at + values.len() * 4 + 64];
        bytes[at..at + values.len() * 4].copy_from_slice(bytemuck::cast_slice(values));
        Arc::new(Heap::new(bytes))
    }

    #[test]
    fn a_mapped_tensor_reads_and_copies_the_bytes_where_they_lie() {
        let mem = memory_with(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 64);
        // The buffer is 8-aligned, so offset 64 is 4-aligned.
        let t = MappedTensor::new(DType::F32, vec![2, 3], mem, 64).unwrap().expect("aligned f32");
        let view = t.view::<f32>().unwrap();
        assert_eq!(view.shape(), &[2, 3]);
        assert_eq!(view[[1, 2]], 6.0);
        assert!(t.view::<f64>().is_none(), "the dtype is checked");
        let owned = t.to_owned_tensor();
        assert_eq!(owned.as_f32_vec().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let mapped = Tensor::Mapped(t.clone());
        assert_eq!(mapped, owned, "a mapped tensor equals its copy");
        assert_eq!(mapped.to_le_bytes(), owned.to_le_bytes());
        assert_eq!(mapped.to_shared_bytes().as_ref(), owned.to_le_bytes().as_slice());
        assert_eq!(mapped.clone().materialize(), owned);
        assert!(matches!(mapped.materialize(), Tensor::F32(_)));
    }

    #[test]
    fn out_of_bounds_is_an_error_and_integers_or_misaligned_bytes_are_not_mapped() {
        let mem = memory_with(&[1.0; 4], 0);
        let err = MappedTensor::new(DType::F32, vec![1000], mem.clone(), 0).unwrap_err();
        assert!(err.to_string().contains("runs past"), "{err}");
        let err = MappedTensor::new(DType::F32, vec![1], mem.clone(), usize::MAX - 1).unwrap_err();
        assert!(err.to_string().contains("runs past"), "{err}");
        assert!(MappedTensor::new(DType::I32, vec![4], mem.clone(), 0).unwrap().is_none());
        assert!(MappedTensor::new(DType::F32, vec![2], mem, 1).unwrap().is_none());
    }
}
