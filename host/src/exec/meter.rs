//! Host compute a program causes: the time kernels of its steps take on
//! this host, and the host's work on its graphs (adding ops, gradients,
//! planning runs), counted against its CPU-time limit together with the
//! time it spends running guest code, and a stop that ends its in-flight step at
//! the next kernel boundary (`weft kill`, a limit).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Code, Error, Result};

/// One program's compute on this host. Shared by its sessions' steps and
/// by whoever may stop it.
#[derive(Debug, Default)]
pub struct ComputeMeter {
    /// Its CPU-time limit (guest code and kernels together), if any.
    limit: Option<Duration>,
    /// Nanoseconds its kernels ran.
    kernel_nanos: AtomicU64,
    /// Nanoseconds of guest code, as of its latest call into the host.
    guest_nanos: AtomicU64,
    /// Why it was stopped, once it is (the first reason stays).
    stopped: OnceLock<String>,
    /// For a step run for another host's program: what to call it when its
    /// allowance runs out.
    remote: Option<String>,
}

impl ComputeMeter {
    /// Guest and kernel time so far: what counts against its limit.
    pub fn used(&self) -> Duration {
        self.guest_time() + self.kernel_time()
    }

    /// Guest time as of the latest crossing or epoch tick.
    fn guest_time(&self) -> Duration {
        Duration::from_nanos(self.guest_nanos.load(Ordering::Relaxed))
    }

    /// A meter whose steps stop once guest and kernel time pass `limit`.
    pub fn new(limit: Option<Duration>) -> Self {
        ComputeMeter { limit, ..Self::default() }
    }

    /// A meter for `what` (a partition run for another host's program),
    /// stopping its kernels once they pass `allowance`, what the program had
    /// left.
    pub fn remote(allowance: Option<Duration>, what: impl Into<String>) -> Self {
        ComputeMeter { limit: allowance, remote: Some(what.into()), ..Self::default() }
    }

    /// What the program may still spend, if it has a limit.
    pub fn remaining(&self) -> Option<Duration> {
        self.limit.map(|l| l.saturating_sub(self.used()))
    }

    /// Time its kernels have run.
    pub fn kernel_time(&self) -> Duration {
        Duration::from_nanos(self.kernel_nanos.load(Ordering::Relaxed))
    }

    /// Notes the guest time so far (the runtime does, at every crossing
    /// between wasm and the host and at every epoch tick).
    pub fn set_guest_time(&self, guest: Duration) {
        self.guest_nanos.store(u64::try_from(guest.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Adds `elapsed` of kernel (or other host) time.
    pub fn charge(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let _ = self.kernel_nanos.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_add(nanos)));
    }

    /// Stops its steps at their next kernel; `why` is what they fail with.
    pub fn stop(&self, why: impl Into<String>) {
        let _ = self.stopped.set(why.into());
    }

    /// Whether a kernel may run now: not once stopped (`aborted`), nor past
    /// the CPU-time limit (`resource-exhausted`).
    pub fn check(&self) -> Result<()> {
        if let Some(why) = self.stopped.get() {
            return Err(Error::status(Code::Aborted, why.clone()));
        }
        let Some(limit) = self.limit else { return Ok(()) };
        let (guest, kernels) = (self.guest_time(), self.kernel_time());
        if guest + kernels > limit {
            let why = match &self.remote {
                Some(what) => format!(
                    "cpu-time limit: {what} used the {:.2} s of CPU time its program had left",
                    limit.as_secs_f64()
                ),
                None => over_cpu_limit(limit, guest, kernels),
            };
            return Err(Error::status(Code::ResourceExhausted, why));
        }
        Ok(())
    }
}

/// What a program past its CPU-time limit is told.
pub fn over_cpu_limit(limit: Duration, guest: Duration, kernels: Duration) -> String {
    format!(
        "cpu-time limit: the program used {:.2} s of its {:.2} s ({:.2} s in guest code, {:.2} s of host work: the \
         kernels of its steps, its graphs and plans)",
        (guest + kernels).as_secs_f64(),
        limit.as_secs_f64(),
        guest.as_secs_f64(),
        kernels.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_and_guest_code_share_the_limit_and_a_stop_wins() {
        let m = ComputeMeter::new(Some(Duration::from_secs(2)));
        m.set_guest_time(Duration::from_millis(1500));
        m.charge(Duration::from_millis(400));
        m.check().unwrap();
        m.charge(Duration::from_millis(200));
        let err = m.check().unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(err.to_string().contains("used 2.10 s of its 2.00 s (1.50 s in guest code, 0.60 s of host work"));
        m.stop("program 3 was killed");
        let err = m.check().unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::Aborted, "program 3 was killed".to_string()));
        let unlimited = ComputeMeter::new(None);
        unlimited.charge(Duration::from_secs(1 << 20));
        unlimited.check().unwrap();
    }
}
