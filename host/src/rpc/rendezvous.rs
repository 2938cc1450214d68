//! What other tasks delivered to a task for steps that have yet to take it:
//! TensorFlow's rendezvous table, filled by pushes ([`crate::exec::Route`]).
//!
//! Each tensor is held under (master, step, output) for as many calls as
//! the delivery said, and charged (to the task's tensor budget, by whoever
//! received it) until the last one takes it. A master whose step fails
//! tells the tasks it routed deliveries to to forget the step
//! ([`Rendezvous::forget`]): what was held for it goes at once, and what
//! still arrives for it (from a call the failure cut short) is refused.
//! What no one forgets (a master that died mid-step) expires after
//! [`HOLD_FOR`], and a task holds at most [`MAX_HELD_BYTES`] and
//! [`MAX_HELD`] of them whatever its budget, so a master or peer that
//! never comes back cannot make it hold memory for good.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Code, Error, Result};
use crate::exec::StepCharges;
use crate::graph::Output;
use crate::tensor::Tensor;

/// How long a delivered tensor waits for its step to take it.
pub const HOLD_FOR: Duration = Duration::from_secs(60);
/// Bytes of delivered tensors a task holds at most, at once.
pub const MAX_HELD_BYTES: usize = 4 << 30;
/// Delivered tensors a task holds at most, at once.
pub const MAX_HELD: usize = 1 << 16;
/// Forgotten steps a task remembers (for [`HOLD_FOR`] each) so that late
/// deliveries for them are refused; the oldest go first past this.
pub const MAX_FORGOTTEN: usize = 1 << 12;

/// A delivered tensor's key: the master, its step, and the output (in the
/// master's graph) it is the value of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HeldKey {
    /// The master's id.
    pub master: u64,
    /// The step's id.
    pub step: u64,
    /// The output.
    pub output: Output,
}

struct Held {
    tensor: Tensor,
    uses: u32,
    bytes: usize,
    charges: StepCharges,
    expires: Instant,
}

#[derive(Default)]
struct Table {
    by_key: HashMap<HeldKey, Held>,
    bytes: usize,
    /// Keys in the order they were held (so by expiry): some are gone or
    /// were held again since, which their expiry tells.
    order: VecDeque<(Instant, HeldKey)>,
    /// Steps (master, step) forgotten, refused until they expire.
    forgotten: HashSet<(u64, u64)>,
    /// The same, in the order they were forgotten, with their expiry.
    forgotten_order: VecDeque<(Instant, (u64, u64))>,
}

/// A task's held deliveries.
#[derive(Default)]
pub struct Rendezvous {
    table: Mutex<Table>,
}

/// The table, locked, with what expired at `now` taken out: what goes
/// (`gone`) is dropped only after the lock is released, since a tensor lent
/// by another host says so on a socket when dropped.
struct Locked<'a> {
    table: std::sync::MutexGuard<'a, Table>,
    /// Declared after `table`, so dropped after it.
    gone: Vec<Held>,
}

impl Rendezvous {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn locked(&self, now: Instant) -> Locked<'_> {
        let mut table = self.table();
        let gone = table.expire(now);
        Locked { table, gone }
    }

    /// Holds `tensor` under `key` for `uses` calls to take, with `charges`
    /// (what receiving it was charged) until the last does. A second
    /// delivery under one key replaces the first. `resource-exhausted` past
    /// what a task holds.
    pub fn hold(&self, key: HeldKey, tensor: Tensor, uses: u32, charges: StepCharges) -> Result<()> {
        let now = Instant::now();
        let bytes = tensor.byte_length();
        let mut locked = self.locked(now);
        let table = &mut locked.table;
        if table.forgotten.contains(&(key.master, key.step)) {
            return Err(forgotten(key.master, key.step));
        }
        let replaced = table.by_key.get(&key).map_or((0, 0), |old| (1, old.bytes));
        if table.by_key.len() - replaced.0 >= MAX_HELD || table.bytes - replaced.1 + bytes > MAX_HELD_BYTES {
            return Err(Error::status(
                Code::ResourceExhausted,
                format!(
                    "holding output {}:{} for step {:x} of master {:x}: this task already holds {} delivered tensors \
                 ({} bytes; at most {MAX_HELD} and {MAX_HELD_BYTES} bytes)",
                    key.output.node,
                    key.output.index,
                    key.step,
                    key.master,
                    table.by_key.len(),
                    table.bytes
                ),
            ));
        }
        if let Some(old) = table.by_key.remove(&key) {
            table.bytes -= old.bytes;
            locked.gone.push(old);
        }
        table.bytes += bytes;
        let expires = now + HOLD_FOR;
        table.by_key.insert(key, Held { tensor, uses: uses.max(1), bytes, charges, expires });
        table.order.push_back((expires, key));
        if table.order.len() > 4 * MAX_HELD.max(table.by_key.len()) {
            // Mostly keys taken already: keep only those still held.
            let mut held: Vec<(Instant, HeldKey)> = table.by_key.iter().map(|(k, h)| (h.expires, *k)).collect();
            held.sort_unstable_by_key(|(at, _)| *at);
            table.order = held.into();
        }
        Ok(())
    }

    /// Holds every one of `entries` ([`Rendezvous::hold`]), or none: past
    /// what a task holds, those held already are taken out again, and the
    /// error names the one that did not fit.
    pub fn hold_all(&self, entries: Vec<(HeldKey, Tensor, u32, StepCharges)>) -> Result<()> {
        let mut held = Vec::with_capacity(entries.len());
        for (key, tensor, uses, charges) in entries {
            if let Err(e) = self.hold(key, tensor, uses, charges) {
                for key in &held {
                    self.remove(key);
                }
                return Err(e);
            }
            held.push(key);
        }
        Ok(())
    }

    /// Drops what is held under `key`, whatever its uses left.
    fn remove(&self, key: &HeldKey) {
        let mut locked = self.locked(Instant::now());
        if let Some(held) = locked.table.by_key.remove(key) {
            locked.table.bytes -= held.bytes;
            locked.gone.push(held);
        }
    }

    /// The tensor held under `key`, for one of its uses. The last use gets
    /// its charges too (to hold until its step ends); earlier ones leave
    /// them with the tensor still held.
    pub fn take(&self, key: &HeldKey) -> Option<(Tensor, Option<StepCharges>)> {
        let mut locked = self.locked(Instant::now());
        let table = &mut locked.table;
        let held = table.by_key.get_mut(key)?;
        if held.uses > 1 {
            held.uses -= 1;
            return Some((held.tensor.clone(), None));
        }
        let held = table.by_key.remove(key).expect("present");
        table.bytes -= held.bytes;
        Some((held.tensor, Some(held.charges)))
    }

    /// `aborted` if step `step` of `master` was forgotten (it failed), so
    /// what is delivered for it is refused.
    pub fn check_not_forgotten(&self, master: u64, step: u64) -> Result<()> {
        match self.locked(Instant::now()).table.forgotten.contains(&(master, step)) {
            true => Err(forgotten(master, step)),
            false => Ok(()),
        }
    }

    /// Forgets step `step` of `master`, which failed: drops what is held
    /// for it (and so its charges) and refuses what still arrives for it,
    /// for [`HOLD_FOR`]. Returns how many tensors it dropped.
    pub fn forget(&self, master: u64, step: u64) -> usize {
        let now = Instant::now();
        let mut locked = self.locked(now);
        let table = &mut locked.table;
        let keys: Vec<HeldKey> =
            table.by_key.keys().filter(|k| (k.master, k.step) == (master, step)).copied().collect();
        for key in &keys {
            let held = table.by_key.remove(key).expect("present");
            table.bytes -= held.bytes;
            locked.gone.push(held);
        }
        if table.forgotten.insert((master, step)) {
            table.forgotten_order.push_back((now + HOLD_FOR, (master, step)));
            if table.forgotten_order.len() > MAX_FORGOTTEN {
                let (_, oldest) = table.forgotten_order.pop_front().expect("not empty");
                table.forgotten.remove(&oldest);
            }
        }
        keys.len()
    }

    /// Tensors held now, and their bytes.
    pub fn held(&self) -> (usize, usize) {
        let locked = self.locked(Instant::now());
        (locked.table.by_key.len(), locked.table.bytes)
    }
}

/// The error for a delivery to step `step` of `master`, forgotten.
fn forgotten(master: u64, step: u64) -> Error {
    Error::status(
        Code::Aborted,
        format!(
            "a delivery for step {step:x} of master {master:x}, which failed: its master told this task to forget it"
        ),
    )
}

impl Table {
    /// Takes out what expired, for the caller to drop (releasing its
    /// charges) once the table is unlocked.
    #[must_use]
    fn expire(&mut self, now: Instant) -> Vec<Held> {
        let mut gone = Vec::new();
        while let Some(&(_, step)) = self.forgotten_order.front().filter(|(at, _)| *at <= now) {
            self.forgotten_order.pop_front();
            self.forgotten.remove(&step);
        }
        while let Some(&(at, key)) = self.order.front().filter(|(at, _)| *at <= now) {
            self.order.pop_front();
            if self.by_key.get(&key).is_some_and(|h| h.expires == at) {
                let held = self.by_key.remove(&key).expect("present");
                self.bytes -= held.bytes;
                gone.push(held);
            }
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::ByteBudget;
    use std::sync::Arc;

    fn key(step: u64) -> HeldKey {
        HeldKey { master: 7, step, output: Output::of(3) }
    }

    #[test]
    fn a_tensor_is_held_for_its_uses_and_charged_until_the_last_one_ends() {
        let budget = Arc::new(ByteBudget::new("the task's tensors", 1 << 20));
        let r = Rendezvous::default();
        let t = Tensor::from_f32(&[4], vec![1.0; 4]).unwrap();
        let mut charges = StepCharges::default();
        charges.charge_for(&budget, &"a delivery", 16).unwrap();
        r.hold(key(1), t.clone(), 2, charges).unwrap();
        assert_eq!(r.held(), (1, 16));
        let (first, charge) = r.take(&key(1)).unwrap();
        assert!(first == t && charge.is_none());
        assert_eq!(budget.used(), 16, "still held for its second use");
        let (_, charge) = r.take(&key(1)).unwrap();
        assert_eq!(budget.used(), 16, "the last use holds the charge");
        drop(charge);
        assert_eq!(budget.used(), 0);
        assert!(r.take(&key(1)).is_none(), "used up");
        assert!(r.take(&key(2)).is_none(), "another step's key");
        assert_eq!(r.held(), (0, 0));
    }

    #[test]
    fn a_task_holds_a_bounded_number_of_deliveries() {
        let r = Rendezvous::default();
        let t = Tensor::scalar_f32(1.0);
        for step in 0..MAX_HELD as u64 {
            r.hold(key(step), t.clone(), 1, StepCharges::default()).unwrap();
        }
        assert_eq!(r.held().0, MAX_HELD);
        let e = r.hold(key(u64::MAX), t.clone(), 1, StepCharges::default()).unwrap_err();
        assert_eq!(e.code(), crate::error::Code::ResourceExhausted, "{e}");
        // Delivered again under a key it holds: replaced, not added.
        r.hold(key(0), t, 1, StepCharges::default()).unwrap();
        assert_eq!(r.held().0, MAX_HELD);
    }

    #[test]
    fn a_delivery_is_held_whole_or_not_at_all() {
        let budget = Arc::new(ByteBudget::new("the task's tensors", 1 << 20));
        let r = Rendezvous::default();
        for step in 0..MAX_HELD as u64 - 1 {
            r.hold(key(step), Tensor::scalar_f32(1.0), 1, StepCharges::default()).unwrap();
        }
        let mut charges = StepCharges::default();
        charges.charge_for(&budget, &"the first of two", 4).unwrap();
        let two = vec![
            (key(u64::MAX), Tensor::scalar_f32(1.0), 1, charges),
            (key(u64::MAX - 1), Tensor::scalar_f32(2.0), 1, StepCharges::default()),
        ];
        let e = r.hold_all(two).unwrap_err();
        assert_eq!(e.code(), crate::error::Code::ResourceExhausted, "{e}");
        assert!(r.take(&key(u64::MAX)).is_none(), "the first was taken out again");
        assert_eq!((r.held().0, budget.used()), (MAX_HELD - 1, 0));
    }

    #[test]
    fn a_forgotten_step_drops_what_it_held_and_refuses_what_comes_late() {
        let budget = Arc::new(ByteBudget::new("the task's tensors", 1 << 20));
        let r = Rendezvous::default();
        let mut charges = StepCharges::default();
        charges.charge_for(&budget, &"a delivery", 4).unwrap();
        r.hold(key(1), Tensor::scalar_f32(1.0), 2, charges).unwrap();
        r.hold(key(2), Tensor::scalar_f32(2.0), 1, StepCharges::default()).unwrap();
        let other_master = HeldKey { master: 8, ..key(1) };
        r.hold(other_master, Tensor::scalar_f32(3.0), 1, StepCharges::default()).unwrap();
        assert_eq!(r.forget(7, 1), 1);
        assert_eq!((r.held().0, budget.used()), (2, 0), "step 1 of master 7 and its charge are gone");
        assert!(r.take(&key(2)).is_some() && r.take(&other_master).is_some(), "other steps keep theirs");
        let e = r.hold(key(1), Tensor::scalar_f32(1.0), 1, StepCharges::default()).unwrap_err();
        assert_eq!(e.code(), crate::error::Code::Aborted, "{e}");
        assert!(e.message().contains("forget"), "{e}");
        assert_eq!(r.check_not_forgotten(7, 1).unwrap_err().code(), crate::error::Code::Aborted);
        assert!(r.check_not_forgotten(7, 2).is_ok() && r.check_not_forgotten(8, 1).is_ok());
        assert_eq!(r.forget(7, 1), 0, "forgetting again drops nothing");
        // Past the bound, the oldest forgotten step is remembered no more.
        for step in 100..100 + MAX_FORGOTTEN as u64 {
            r.forget(7, step);
        }
        r.hold(key(1), Tensor::scalar_f32(1.0), 1, StepCharges::default()).unwrap();
        assert!(r.hold(key(100), Tensor::scalar_f32(1.0), 1, StepCharges::default()).is_err());
    }

    #[test]
    fn what_no_step_took_expires_and_gives_back_its_charge() {
        let budget = Arc::new(ByteBudget::new("the task's tensors", 1 << 20));
        let r = Rendezvous::default();
        let mut charges = StepCharges::default();
        charges.charge_for(&budget, &"a delivery", 4).unwrap();
        r.hold(key(1), Tensor::scalar_f32(1.0), 1, charges).unwrap();
        {
            let mut table = r.table();
            let now = Instant::now();
            table.by_key.get_mut(&key(1)).unwrap().expires = now;
            table.order[0].0 = now;
        }
        assert_eq!(r.held(), (0, 0));
        assert_eq!(budget.used(), 0);
    }
}
