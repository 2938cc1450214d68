//! One `RunPartition` call's tensors in shared memory, the master's side:
//! the inputs written into a leased segment, and ranges offered for the
//! outputs (sized as the same partition's outputs were last time), so the
//! call's messages carry ranges instead of bytes.

use std::sync::Arc;

use super::frames::{Frame, FrameReader, meta_of};
use super::pb;
use crate::exec::PartitionDef;
use crate::shm::{Lease, Pool, aligned};
use crate::tensor::{SharedMemory, Tensor};

/// Below this many bytes in all, a call's tensors go over the stream.
pub const MIN_SHARED_BYTES: usize = 64 << 10;

/// Bytes of each output of `def` as far as its static types tell (0 where
/// they do not): the space a first call offers, before the outputs were
/// ever seen.
pub fn static_output_sizes(def: &PartitionDef) -> Vec<usize> {
    def.outputs
        .iter()
        .map(|o| {
            def.nodes
                .iter()
                .find(|n| n.id == o.node)
                .and_then(|n| n.outputs.get(o.index as usize))
                .and_then(|t| t.byte_length())
                .unwrap_or(0)
        })
        .collect()
}

/// A call's segment, with where its inputs are and its outputs may go.
pub struct SharedCall {
    /// Shared with the outputs read from it in place, which keep it from
    /// going back to the pool until they are dropped.
    lease: Arc<Lease>,
    inputs: Vec<pb::SharedBytes>,
    outputs: Vec<pb::SharedBytes>,
}

impl std::fmt::Debug for SharedCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCall")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl SharedCall {
    /// Bytes a segment needs for `inputs` and outputs of `expected_outputs`
    /// bytes, or `None` when that is too little to be worth one.
    fn bytes_needed(inputs: &[Tensor], expected_outputs: &[usize]) -> Option<usize> {
        let total: usize =
            inputs.iter().map(Tensor::byte_length).chain(expected_outputs.iter().copied()).map(aligned).sum();
        (total >= MIN_SHARED_BYTES).then_some(total)
    }

    /// A segment of `bytes` from `pool`: one it holds free at once, else a
    /// new one (registering it blocks briefly, so off the async threads).
    fn lease(pool: &Arc<Pool>, bytes: usize) -> Option<Lease> {
        if let Some(lease) = pool.lease_free(bytes) {
            return Some(lease);
        }
        crate::exec::run_blocking(|| pool.lease(bytes))
    }

    /// A segment of `pool` (if any) holding `inputs` with room for outputs
    /// of `expected_outputs` bytes, or `None` when the call is too small for
    /// one or no segment is to be had (the call then streams its tensors).
    pub fn offer(pool: Option<&Arc<Pool>>, inputs: &[Tensor], expected_outputs: &[usize]) -> Option<SharedCall> {
        let bytes = Self::bytes_needed(inputs, expected_outputs)?;
        let lease = Self::lease(pool?, bytes)?;
        Self::place(lease, inputs, expected_outputs)
    }

    /// Writes `inputs` into `lease` with room after them for outputs of
    /// `expected_outputs` bytes.
    fn place(lease: Lease, inputs: &[Tensor], expected_outputs: &[usize]) -> Option<SharedCall> {
        let mut offset = 0usize;
        let mut range = |length: usize| {
            let r = pb::SharedBytes { offset: offset as u64, length: length as u64 };
            offset += aligned(length);
            r
        };
        let mut input_ranges = Vec::with_capacity(inputs.len());
        for t in inputs {
            let bytes = t.to_shared_bytes();
            let r = range(bytes.len());
            lease.mapping().write(r.offset, &bytes).ok()?;
            input_ranges.push(r);
        }
        let output_ranges = expected_outputs.iter().map(|&n| range(n)).collect();
        Some(SharedCall { lease: Arc::new(lease), inputs: input_ranges, outputs: output_ranges })
    }

    /// Says the host answered the call in full: its segment can go back to
    /// the pool (otherwise it is closed when the call is dropped).
    pub fn completed(&self) {
        self.lease.completed();
    }

    /// Says the host answered and was lent the segment (a delivery's
    /// tensors lie in it until it is done with them).
    pub fn lent(&self) {
        self.lease.lent();
    }

    /// The segment's key, for the call's first message.
    pub fn key(&self) -> Vec<u8> {
        self.lease.key().to_vec()
    }

    /// The ranges offered for the outputs, for the first message.
    pub fn output_space(&self) -> Vec<pb::SharedBytes> {
        self.outputs.clone()
    }

    /// The frames that name the inputs' ranges (one per input, no bytes).
    pub fn input_frames(&self, inputs: &[Tensor]) -> Vec<Frame> {
        inputs
            .iter()
            .zip(&self.inputs)
            .map(|(t, r)| Frame {
                meta: Some(meta_of(t, r.length as usize)),
                data: bytes::Bytes::new(),
                shared: Some(*r),
            })
            .collect()
    }

    /// Input bytes it carries.
    pub fn input_bytes(&self) -> u64 {
        self.inputs.iter().map(|r| r.length).sum()
    }

    /// Takes output `index`, which the task wrote at `range`, into `reader`
    /// (a big float output stays where it lies, holding the segment until it
    /// is dropped); refuses a range that is not within the one offered.
    pub fn read_output(
        &self,
        index: usize,
        range: &pb::SharedBytes,
        meta: Option<pb::TensorMeta>,
        reader: &mut FrameReader,
    ) -> Result<(), String> {
        let offered = self.outputs.get(index).ok_or_else(|| format!("output {index} was offered no shared range"))?;
        if range.offset != offered.offset || range.length > offered.length {
            return Err(format!(
                "output {index} came at {}..+{}, outside the range offered ({}..+{})",
                range.offset, range.length, offered.offset, offered.length
            ));
        }
        let memory: Arc<dyn SharedMemory> = self.lease.clone();
        reader.push_shared(meta, &memory, range.offset, range.length)
    }
}
