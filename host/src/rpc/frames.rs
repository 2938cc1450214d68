//! Tensors on the wire in both directions of `RunPartition`: each tensor is
//! a frame carrying its [`pb::TensorMeta`] and first bytes, followed by
//! frames of at most [`CHUNK_BYTES`] more, so no message is larger than a
//! chunk however big the tensor. The sender shares the tensor's memory (no
//! copy); the reader decodes each piece straight into the typed array.

use bytes::Bytes;

use super::convert::{dtype_from_pb, dtype_to_pb};
use super::pb;
use crate::tensor::{MappedTensor, SharedMemory, Tensor, TensorAssembler};

/// From this many bytes on, a float tensor in shared memory is read where it
/// lies ([`Tensor::Mapped`]) instead of copied out.
pub const MIN_MAPPED_BYTES: usize = 64 << 10;

/// Largest piece of tensor bytes in one message.
pub const CHUNK_BYTES: usize = 1 << 20;

/// One message's share of a tensor sequence.
#[derive(Debug)]
pub struct Frame {
    /// Set on a tensor's first frame.
    pub meta: Option<pb::TensorMeta>,
    /// The next bytes of the current tensor.
    pub data: Bytes,
    /// Instead of `data`: where in the call's shared-memory segment the
    /// whole tensor's bytes are.
    pub shared: Option<pb::SharedBytes>,
}

/// The frames that carry `tensors`, in order; none for no tensors.
pub fn frames(tensors: &[Tensor]) -> Vec<Frame> {
    let mut out = Vec::new();
    for t in tensors {
        let bytes = t.to_shared_bytes();
        let mut meta = Some(meta_of(t, bytes.len()));
        let mut offset = 0;
        loop {
            let end = (offset + CHUNK_BYTES).min(bytes.len());
            out.push(Frame { meta: meta.take(), data: bytes.slice(offset..end), shared: None });
            offset = end;
            if offset >= bytes.len() {
                break;
            }
        }
    }
    out
}

/// The meta of `t`, whose bytes are `byte_length` long.
pub fn meta_of(t: &Tensor, byte_length: usize) -> pb::TensorMeta {
    pb::TensorMeta {
        dtype: dtype_to_pb(t.dtype()),
        shape: t.shape().iter().map(|&d| d as u64).collect(),
        byte_length: byte_length as u64,
    }
}

/// Reassembles tensors from frames; errors say what is wrong with the stream.
#[derive(Debug)]
pub struct FrameReader {
    done: Vec<Tensor>,
    current: Option<TensorAssembler>,
    /// Bytes the stream's tensors may still announce: a tensor's memory is
    /// allocated when its first frame arrives.
    room: usize,
}

impl FrameReader {
    /// A reader whose tensors may announce `max_bytes` in all.
    pub fn new(max_bytes: usize) -> Self {
        FrameReader { done: Vec::new(), current: None, room: max_bytes }
    }

    /// Takes the next frame.
    pub fn push(&mut self, meta: Option<pb::TensorMeta>, data: &[u8]) -> Result<(), String> {
        if let Some(meta) = meta {
            if self.current.is_some() {
                return Err("a tensor ended early".into());
            }
            let shape = meta.shape.iter().map(|&d| usize::try_from(d).unwrap_or(usize::MAX)).collect();
            let len = usize::try_from(meta.byte_length).unwrap_or(usize::MAX);
            if len > self.room {
                return Err(format!("a tensor of {len} bytes is more than the stream may carry ({} left)", self.room));
            }
            self.room -= len;
            let dtype = dtype_from_pb(meta.dtype).map_err(|e| e.message())?;
            self.current = Some(TensorAssembler::new(dtype, shape, len).map_err(|e| e.message())?);
        }
        match self.current.as_mut() {
            Some(asm) => {
                asm.push(data).map_err(|e| e.message())?;
                if asm.is_complete() {
                    let t = self.current.take().expect("current tensor").finish().map_err(|e| e.message())?;
                    self.done.push(t);
                }
                Ok(())
            }
            None if !data.is_empty() => Err("bytes without a tensor".into()),
            None => Ok(()),
        }
    }

    /// Takes a frame whose tensor lies at `offset..+len` of `memory`: a big
    /// float tensor is kept there ([`Tensor::Mapped`]), anything else copied
    /// out as [`FrameReader::push`] would.
    pub fn push_shared(
        &mut self,
        meta: Option<pb::TensorMeta>,
        memory: &std::sync::Arc<dyn SharedMemory>,
        offset: u64,
        len: u64,
    ) -> Result<(), String> {
        let all = memory.bytes();
        let bytes = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(len).ok())
            .and_then(|(start, len)| all.get(start..start.checked_add(len)?))
            .ok_or_else(|| format!("bytes {offset}..+{len} are outside the {}-byte segment", all.len()))?;
        let Some(m) = meta.as_ref().filter(|m| self.current.is_none() && m.byte_length == len) else {
            return self.push(meta, bytes);
        };
        let dtype = dtype_from_pb(m.dtype).map_err(|e| e.message())?;
        let shape: Vec<usize> = m.shape.iter().map(|&d| usize::try_from(d).unwrap_or(usize::MAX)).collect();
        let announced = crate::tensor::element_count(&shape).ok().zip(dtype.byte_width()).map(|(n, w)| n * w);
        if bytes.len() < MIN_MAPPED_BYTES || bytes.len() > self.room || announced != Some(bytes.len()) {
            // Small, over the stream's allowance, or not the size its shape
            // says: the copying path takes it (and names what is wrong).
            return self.push(meta, bytes);
        }
        match MappedTensor::new(dtype, shape, memory.clone(), offset as usize).map_err(|e| e.message())? {
            Some(t) => {
                self.room -= bytes.len();
                self.done.push(Tensor::Mapped(t));
                Ok(())
            }
            None => self.push(meta, bytes),
        }
    }

    /// The tensors, if the last one is complete.
    pub fn finish(self) -> Result<Vec<Tensor>, String> {
        match self.current {
            Some(_) => Err("the last tensor is incomplete".into()),
            None => Ok(self.done),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(frames: Vec<Frame>) -> Result<Vec<Tensor>, String> {
        let mut r = FrameReader::new(usize::MAX);
        for f in frames {
            r.push(f.meta, &f.data)?;
        }
        r.finish()
    }

    /// 8-aligned bytes (a `Vec<u64>` underneath).
    struct Heap(Vec<u64>, usize);

    // SAFETY: a fixed heap buffer, alive as long as the value.
    unsafe impl SharedMemory for Heap {
        fn bytes(&self) -> &[u8] {
            &bytemuck::cast_slice(&self.0)[..self.1]
        }
    }

    #[test]
    fn big_floats_in_shared_memory_stay_there_and_the_rest_is_copied() {
        let big = Tensor::from_f32(&[64, 1024], (0..64 * 1024).map(|i| i as f32).collect()).unwrap();
        let ints = Tensor::I32(ndarray::ArrayD::from_elem(ndarray::IxDyn(&[64 * 1024]), 7).into_shared());
        let small = Tensor::from_f32(&[4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let mut bytes = Vec::new();
        let mut at = Vec::new();
        for t in [&big, &ints, &small] {
            at.push(bytes.len() as u64);
            bytes.extend_from_slice(&t.to_le_bytes());
        }
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
        let memory: std::sync::Arc<dyn SharedMemory> = std::sync::Arc::new(Heap(words, bytes.len()));
        let mut r = FrameReader::new(usize::MAX);
        for (t, &offset) in [&big, &ints, &small].into_iter().zip(&at) {
            r.push_shared(Some(meta_of(t, t.byte_length())), &memory, offset, t.byte_length() as u64).unwrap();
        }
        let got = r.finish().unwrap();
        assert!(matches!(got[0], Tensor::Mapped(_)), "a 256 KiB f32 tensor is read in place");
        assert!(matches!(got[1], Tensor::I32(_)), "integers are copied: their values may index");
        assert!(matches!(got[2], Tensor::F32(_)), "small tensors are copied");
        assert_eq!(got, vec![big.clone(), ints, small]);

        // A range past the memory, or bytes that are not what the shape
        // needs, are errors that say so.
        let mut r = FrameReader::new(usize::MAX);
        let err = r.push_shared(Some(meta_of(&big, big.byte_length())), &memory, 1 << 30, 1 << 18).unwrap_err();
        assert!(err.contains("outside"), "{err}");
        let mut meta = meta_of(&big, big.byte_length());
        meta.shape = vec![64, 1000];
        let err = r.push_shared(Some(meta), &memory, 0, big.byte_length() as u64).unwrap_err();
        assert!(err.contains("needs 256000 bytes"), "{err}");
        // The stream's allowance bounds what it may announce, mapped or not.
        let mut r = FrameReader::new(1000);
        let err =
            r.push_shared(Some(meta_of(&big, big.byte_length())), &memory, 0, big.byte_length() as u64).unwrap_err();
        assert!(err.contains("more than the stream may carry"), "{err}");
    }

    #[test]
    fn tensors_round_trip_through_chunked_frames() {
        let big = Tensor::from_f32(&[CHUNK_BYTES / 2], vec![1.5; CHUNK_BYTES / 2]).unwrap(); // 2 MiB: 2 frames
        let empty = Tensor::from_f32(&[0], vec![]).unwrap();
        let tensors = vec![Tensor::scalar_f32(3.0), big, empty, Tensor::strings(&["a", "bc"])];
        let f = frames(&tensors);
        assert_eq!(f.len(), 5);
        assert!(f.iter().all(|f| f.data.len() <= CHUNK_BYTES));
        assert_eq!(read(f).unwrap(), tensors);
        assert!(read(Vec::new()).unwrap().is_empty());
    }

    #[test]
    fn broken_streams_are_named() {
        let mut f = frames(&[Tensor::from_f32(&[CHUNK_BYTES], vec![0.0; CHUNK_BYTES]).unwrap()]);
        f.pop();
        assert_eq!(read(f).unwrap_err(), "the last tensor is incomplete");
        let stray = Frame { meta: None, data: Bytes::from_static(b"xx"), shared: None };
        assert_eq!(read(vec![stray]).unwrap_err(), "bytes without a tensor");
        let mut small = FrameReader::new(1024);
        let f = frames(&[Tensor::from_f32(&[512], vec![0.0; 512]).unwrap()]).remove(0);
        assert!(small.push(f.meta, &f.data).unwrap_err().contains("more than the stream may carry"));
    }
}
