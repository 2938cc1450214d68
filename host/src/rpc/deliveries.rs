//! A task's side of tensors that go straight between tasks ([`Route`]):
//! a step's call takes the inputs other tasks delivered for it, runs, and
//! delivers the outputs its route names before it answers; and the
//! `DeliverTensors` stream other tasks push them with.
//!
//! A delivery is charged to the receiving task's tensor budget as it
//! arrives, and held ([`Rendezvous`]) until the step's calls take it. A
//! task that cannot be reached fails the delivering call `unavailable`,
//! naming it, so the master's step fails naming it too.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use tonic::Status;

use super::convert::status_from_error;
use super::frames::FrameReader;
use super::rendezvous::HeldKey;
use super::service::ServedTask;
use super::{MAX_MESSAGE_BYTES, pb};
use crate::cluster::TaskId;
use crate::error::{Error, Result};
use crate::exec::{Delivered, MAX_USES, PartitionDef, Route, StepCharges};
use crate::graph::Output;
use crate::tensor::Tensor;

/// What the error of a call whose delivery failed says: the task that
/// answered is fine, so its master keeps its connection to it.
pub const DELIVERING: &str = "delivering its outputs to";

impl ServedTask {
    /// The inputs of partition `id` for a call of step `step` of `master`:
    /// `sent` (what the master sent, in order) with the inputs `route` has
    /// other tasks deliver, taken from what they delivered. What those were
    /// charged moves into `charges`, held until the step ends.
    pub(super) fn gather_inputs(
        &self,
        id: u64,
        (master, step): (u64, u64),
        def: &PartitionDef,
        route: &Route,
        sent: Vec<Tensor>,
        charges: &mut StepCharges,
    ) -> Result<Vec<Tensor>> {
        if route.delivered_inputs.is_empty() {
            return Ok(sent);
        }
        let expected = def.inputs.len() - route.delivered_inputs.len();
        if sent.len() != expected {
            return Err(Error::invalid(format!(
                "partition {id}: the master sent {} inputs, its route says {expected}",
                sent.len()
            )));
        }
        let mut sent = sent.into_iter();
        let mut values = Vec::with_capacity(def.inputs.len());
        for (i, &output) in def.inputs.iter().enumerate() {
            if !route.is_delivered(i) {
                values.push(sent.next().expect("counted"));
                continue;
            }
            let key = HeldKey { master, step, output };
            let (tensor, charge) = self.rendezvous.take(&key).ok_or_else(|| {
                Error::precondition(format!(
                    "partition {id}: its input {}:{} was not delivered to {} for this step (the task that makes it \
                     failed or restarted since, this one restarted, or it waited past {:?})",
                    output.node,
                    output.index,
                    self.task().id(),
                    super::rendezvous::HOLD_FOR
                ))
            })?;
            if let Some(charge) = charge {
                charges.absorb(charge);
            }
            values.push(tensor);
        }
        Ok(values)
    }

    /// Delivers `outputs` (all of partition `id`'s) to the tasks `route`
    /// names, all at once, and returns what the master gets back.
    pub(super) async fn deliver_outputs(
        &self,
        id: u64,
        (master, step): (u64, u64),
        def: &PartitionDef,
        route: &Route,
        outputs: Vec<Tensor>,
    ) -> Result<Vec<Tensor>> {
        if !route.deliveries.is_empty() {
            let mut by_task: BTreeMap<&TaskId, Vec<Delivered>> = BTreeMap::new();
            for d in &route.deliveries {
                let (key, tensor) = (def.outputs[d.output], outputs[d.output].clone());
                by_task.entry(&d.task).or_default().push(Delivered { key, uses: d.uses, tensor });
            }
            let sends = by_task.into_iter().map(|(task, tensors)| async move {
                let sent = if task == self.task().id() {
                    self.hold_delivered(master, step, tensors)
                } else {
                    let remote = self.task().remote().ok_or_else(|| {
                        Error::precondition(format!(
                            "{} reaches no other task, so it cannot deliver to {task}",
                            self.task().id()
                        ))
                    })?;
                    remote.deliver(task, master, step, tensors).await
                };
                sent.map_err(|e| {
                    Error::status(
                        e.code(),
                        format!("partition {id} on {}, {DELIVERING} {task}: {}", self.task().id(), e.message()),
                    )
                })
            });
            futures_util::future::try_join_all(sends).await?;
        }
        if route.unreturned.is_empty() {
            return Ok(outputs);
        }
        Ok(outputs.into_iter().enumerate().filter(|(i, _)| route.returns(*i)).map(|(_, t)| t).collect())
    }

    /// Holds `tensors`, delivered from this process for step `step` of
    /// `master`, charging each to this task's tensor budget.
    pub fn hold_delivered(&self, master: u64, step: u64, tensors: Vec<Delivered>) -> Result<()> {
        let budget = self.task().device().tensor_budget().cloned();
        let mut entries = Vec::with_capacity(tensors.len());
        let mut bytes = 0u64;
        for Delivered { key, uses, tensor } in tensors {
            // A big float input a call reads where it lies in its master's
            // segment (and an Identity passed on) is the master's again once
            // the call answers: held past it, it must be a copy.
            let tensor = tensor.materialize();
            let mut charges = StepCharges::default();
            if let Some(b) = &budget {
                let what = format!("a tensor delivered for output {}:{}", key.node, key.index);
                charges.charge_for(b, &what, tensor.byte_length())?;
            }
            bytes += tensor.byte_length() as u64;
            entries.push((HeldKey { master, step, output: key }, tensor, uses, charges));
        }
        self.rendezvous.hold_all(entries)?;
        self.delivered_bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Forgets step `step` of `master`, which failed ([`Rendezvous::forget`](super::rendezvous::Rendezvous::forget)):
    /// how many held tensors it dropped.
    pub fn forget_step(&self, master: u64, step: u64) -> usize {
        self.rendezvous.forget(master, step)
    }

    /// Bytes of tensors delivered to this task since it started, and the
    /// tensors (and bytes) it holds for steps that have yet to take them.
    pub fn deliveries(&self) -> (u64, (usize, usize)) {
        (self.delivered_bytes.load(Ordering::Relaxed), self.rendezvous.held())
    }
}

/// Receives a `DeliverTensors` stream for `served`: every tensor charged
/// to its tensor budget as its meta arrives (before its bytes are
/// allocated), then held.
pub(super) async fn receive(
    served: &ServedTask,
    stream: &mut tonic::Streaming<pb::DeliverTensorsRequest>,
) -> std::result::Result<(), Status> {
    let broken = |why: String| Status::invalid_argument(format!("a delivery to {}: {why}", served.task().id()));
    let budget = served.task().device().tensor_budget().cloned();
    let mut reader = FrameReader::new(MAX_MESSAGE_BYTES);
    let mut keys: Vec<(Output, u32, StepCharges)> = Vec::new();
    let mut step_of = None;
    let mut segment = None;
    while let Some(m) = stream.message().await? {
        if step_of.is_none() {
            // Refused before anything is read or charged: its step failed.
            served.rendezvous.check_not_forgotten(m.master, m.step).map_err(status_from_error)?;
            step_of = Some((m.master, m.step));
            segment = borrowed(&m.segment)?;
        }
        if let Some(meta) = &m.meta {
            let key = m.key.as_ref().ok_or_else(|| broken("a tensor without its key".into()))?;
            if !(1..=MAX_USES).contains(&m.uses) {
                return Err(broken(format!("a tensor for {} uses (1 to {MAX_USES})", m.uses)));
            }
            let mut charges = StepCharges::default();
            if let Some(b) = &budget {
                let what = format!("a tensor delivered for output {}:{}", key.node, key.index);
                let bytes = usize::try_from(meta.byte_length).unwrap_or(usize::MAX);
                charges.charge_for(b, &what, bytes).map_err(status_from_error)?;
            }
            keys.push((Output { node: key.node, index: key.index }, m.uses, charges));
        }
        match (m.shared, &segment) {
            // Big floats stay where they lie, holding the loan until dropped.
            (Some(r), Some(seg)) => reader.push_shared(m.meta, seg, r.offset, r.length),
            (Some(_), None) => Err("a shared range without a segment".to_string()),
            (None, _) => reader.push(m.meta, &m.data),
        }
        .map_err(broken)?;
    }
    let (master, step) = step_of.ok_or_else(|| broken("an empty stream".into()))?;
    let tensors = reader.finish().map_err(broken)?;
    let bytes: u64 = tensors.iter().map(|t| t.byte_length() as u64).sum();
    let entries = keys
        .into_iter()
        .zip(tensors)
        .map(|((output, uses, charges), tensor)| (HeldKey { master, step, output }, tensor, uses, charges))
        .collect();
    served.rendezvous.hold_all(entries).map_err(status_from_error)?;
    served.delivered_bytes.fetch_add(bytes, Ordering::Relaxed);
    Ok(())
}

/// The segment a delivery's first message names (by `key`), lent to this
/// host for as long as the tensors read in place from it live: the sender
/// writes to it again only once they are dropped ([`crate::shm::Loan`]).
fn borrowed(key: &[u8]) -> std::result::Result<Option<std::sync::Arc<dyn crate::tensor::SharedMemory>>, Status> {
    if key.is_empty() {
        return Ok(None);
    }
    let loan = crate::shm::registry().and_then(|r| r.borrow(key)).ok_or_else(|| {
        Status::failed_precondition(format!(
            "the delivery {} (closed, or never given)",
            super::service::SEGMENT_UNKNOWN
        ))
    })?;
    Ok(Some(loan))
}
