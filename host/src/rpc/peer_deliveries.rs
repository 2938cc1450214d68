//! A master's peer, as the producer of a step's deliveries and as the
//! master of a step that failed: delivering tensors to the peer's task (by
//! reference in this process, through a segment lent to a co-located host,
//! or streamed), and telling it to forget a failed step's deliveries.

use std::time::Duration;

use super::super::frames::frames;
use super::super::pb;
use super::super::shared::SharedCall;
use super::super::traffic::Direction;
use super::{Peer, segment_unknown};
use crate::error::{Error, Result};
use crate::exec::Delivered;
use crate::tensor::Tensor;

/// How long a master waits for a task to forget a failed step: the step has
/// failed already, so this is only for the task's memory.
const FORGET_WITHIN: Duration = Duration::from_secs(5);

impl Peer {
    /// Delivers `tensors` to the task for step `step` of `master`: by
    /// reference when this process serves it, else streamed.
    pub(super) async fn deliver(&self, master: u64, step: u64, tensors: Vec<Delivered>) -> Result<()> {
        if let Some(served) = self.in_process_task() {
            self.met_in_process(&served).await;
            self.traffic.add_in_process_call();
            if served.is_stopped() {
                return Err(self.unavailable("it stopped"));
            }
            return served.hold_delivered(master, step, tensors);
        }
        let all: Vec<Tensor> = tensors.iter().map(|d| d.tensor.clone()).collect();
        let bytes: u64 = all.iter().map(|t| t.byte_length() as u64).sum();
        let mut share_memory = true;
        for attempt in 0..2 {
            let mut client = self.connect().await?;
            // Co-located: the tensors into a shared segment, lent to the
            // task until it is done with them.
            let pool = self.state.lock().await.shm.clone().filter(|_| share_memory);
            let shared = SharedCall::offer(pool.as_ref(), &all, &[]);
            let frames = match &shared {
                Some(call) => call.input_frames(&all),
                None => frames(&all),
            };
            let mut keyed = tensors.iter();
            let mut messages: Vec<pb::DeliverTensorsRequest> = Vec::new();
            for f in frames {
                let mut m = pb::DeliverTensorsRequest { data: f.data, shared: f.shared, ..Default::default() };
                if let Some(meta) = f.meta {
                    let d = keyed.next().expect("a frame with a meta per tensor");
                    m.key = Some(pb::OutputRef { node: d.key.node, index: d.key.index });
                    m.uses = d.uses;
                    m.meta = Some(meta);
                }
                messages.push(m);
            }
            if let Some(first) = messages.first_mut() {
                (first.master, first.step) = (master, step);
                first.segment = shared.as_ref().map(SharedCall::key).unwrap_or_default();
            }
            match &shared {
                Some(_) => self.traffic.add(Direction::Sent, bytes, 0),
                None => self.traffic.add(Direction::Sent, 0, bytes),
            }
            // As a registration: one more second per 16 MiB on a slow link.
            let bound = self.peer_timeout + Duration::from_secs(bytes >> 24);
            let call = client.deliver_tensors(self.request(futures_util::stream::iter(messages))?);
            match self.bounded("a delivery", bound, call).await {
                Ok(_) => {
                    if let Some(call) = &shared {
                        // The task may keep the tensors where they lie: the
                        // segment is free again once it says so.
                        call.lent();
                    }
                    return Ok(());
                }
                // The host no longer holds the segment: once more, streamed.
                Err(s) if segment_unknown(&s) && attempt == 0 => {
                    share_memory = false;
                    self.renew_pool(pool.as_ref()).await;
                }
                Err(s) => return Err(self.failed(&mut *self.state.lock().await, &s)),
            }
        }
        Err(Error::internal(format!("a delivery to {} neither went through nor failed", self.task)))
    }

    /// Tells the task to forget step `step` of `master` (it failed): what
    /// was delivered to it for the step is dropped, and what still comes is
    /// refused.
    pub(super) async fn forget_step(&self, master: u64, step: u64) -> Result<()> {
        if let Some(served) = self.in_process_task() {
            served.forget_step(master, step);
            return Ok(());
        }
        let forget = async {
            let mut client = self.connect().await?;
            let call = client.forget_step(self.request(pb::ForgetStepRequest { master, step })?);
            call.await.map(drop).map_err(|s| self.unavailable(s.message()))
        };
        tokio::time::timeout(FORGET_WITHIN, forget).await.unwrap_or_else(|_| {
            Err(self.unavailable(format!("forgetting a step got no answer within {FORGET_WITHIN:?}")))
        })
    }
}
