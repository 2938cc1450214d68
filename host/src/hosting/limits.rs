//! Sandbox limits of an experiment on one host. The host's limits are both
//! the defaults and the ceiling: an experiment may ask for less, never more.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::runtime::ProgramSandbox;

/// Limits as written in an experiment file (`[limits]`) or a host's flags;
/// unset fields take the host's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Linear memory of one program, in MiB.
    pub memory_mib: Option<u64>,
    /// CPU time one program may spend running guest code and the kernels
    /// of its steps, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Programs of the experiment running at once on a host.
    pub programs: Option<u32>,
    /// Bytes the experiment's variables may hold on a host, in MiB.
    pub variable_mib: Option<u64>,
    /// Size of one uploaded module, in MiB.
    pub upload_mib: Option<u64>,
    /// Bytes the experiment's checkpoints may take on a host, in MiB.
    pub checkpoint_mib: Option<u64>,
    /// Bytes the tensors of the experiment's running steps may hold at once
    /// on a host, in MiB: what its ops produce, charged before they run.
    pub tensor_mib: Option<u64>,
}

/// Limits with every field decided.
#[derive(Clone, Debug, PartialEq)]
pub struct EffectiveLimits {
    /// Linear memory of one program.
    pub memory_bytes: usize,
    /// CPU time of one program; `None` for no limit.
    pub cpu_time: Option<Duration>,
    /// Programs running at once.
    pub programs: u32,
    /// Variable bytes on this host.
    pub variable_bytes: usize,
    /// Bytes of one module.
    pub upload_bytes: usize,
    /// Bytes of checkpoints on this host.
    pub checkpoint_bytes: usize,
    /// Bytes of step tensors on this host.
    pub tensor_bytes: usize,
}

const MIB: u64 = 1 << 20;

impl EffectiveLimits {
    /// What a host allows when started with no limit flags.
    pub fn host_defaults() -> Self {
        EffectiveLimits {
            memory_bytes: 256 << 20,
            cpu_time: None,
            programs: 64,
            variable_bytes: 1 << 30,
            upload_bytes: 64 << 20,
            checkpoint_bytes: 1 << 30,
            tensor_bytes: 1 << 30,
        }
    }

    /// `asked`, with unset fields from `self` and every field at most `self`'s.
    pub fn narrowed_by(&self, asked: &Limits) -> EffectiveLimits {
        let bytes = |mib: Option<u64>, ceiling: usize| {
            mib.map_or(ceiling, |m| usize::try_from(m.saturating_mul(MIB)).unwrap_or(usize::MAX).min(ceiling))
        };
        let cpu_time =
            match (asked.cpu_seconds.and_then(|s| Duration::try_from_secs_f64(s.max(0.0)).ok()), self.cpu_time) {
                (Some(a), Some(c)) => Some(a.min(c)),
                (a, c) => a.or(c),
            };
        EffectiveLimits {
            memory_bytes: bytes(asked.memory_mib, self.memory_bytes),
            cpu_time,
            programs: asked.programs.map_or(self.programs, |p| p.min(self.programs)),
            variable_bytes: bytes(asked.variable_mib, self.variable_bytes),
            upload_bytes: bytes(asked.upload_mib, self.upload_bytes),
            checkpoint_bytes: bytes(asked.checkpoint_mib, self.checkpoint_bytes),
            tensor_bytes: bytes(asked.tensor_mib, self.tensor_bytes),
        }
    }

    /// The same limits as a [`Limits`] with every field set.
    pub fn to_limits(&self) -> Limits {
        Limits {
            memory_mib: Some((self.memory_bytes as u64) / MIB),
            cpu_seconds: self.cpu_time.map(|t| t.as_secs_f64()),
            programs: Some(self.programs),
            variable_mib: Some((self.variable_bytes as u64) / MIB),
            upload_mib: Some((self.upload_bytes as u64) / MIB),
            checkpoint_mib: Some((self.checkpoint_bytes as u64) / MIB),
            tensor_mib: Some((self.tensor_bytes as u64) / MIB),
        }
    }

    /// What the runtime enforces on each program, which may read `data_dir`.
    pub fn sandbox(&self, data_dir: Option<std::path::PathBuf>) -> ProgramSandbox {
        ProgramSandbox { memory_bytes: Some(self.memory_bytes), cpu_time: self.cpu_time, data_dir }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experiments_can_lower_limits_but_not_raise_them() {
        let host = EffectiveLimits { cpu_time: Some(Duration::from_secs(60)), ..EffectiveLimits::host_defaults() };
        let asked = Limits {
            memory_mib: Some(64),
            cpu_seconds: Some(3600.0),
            programs: Some(1000),
            variable_mib: None,
            upload_mib: Some(1),
            checkpoint_mib: Some(1 << 20),
            tensor_mib: Some(16),
        };
        let got = host.narrowed_by(&asked);
        assert_eq!(got.memory_bytes, 64 << 20);
        assert_eq!(got.cpu_time, Some(Duration::from_secs(60)));
        assert_eq!(got.programs, 64);
        assert_eq!(got.variable_bytes, 1 << 30);
        assert_eq!(got.upload_bytes, 1 << 20);
        assert_eq!(got.checkpoint_bytes, 1 << 30, "an experiment cannot raise the host's checkpoint ceiling");
        assert_eq!(got.tensor_bytes, 16 << 20);
        assert_eq!(EffectiveLimits::host_defaults().narrowed_by(&Limits::default()), EffectiveLimits::host_defaults());
    }
}
