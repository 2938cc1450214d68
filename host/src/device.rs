//! Device names: parsing, formatting and merging TensorFlow device strings
//! such as `/job:ps/replica:0/task:0/device:CPU:0` and partial ones like
//! `/job:local/task:1`.

use std::fmt;

use crate::error::{Error, Result};

/// A device name; each absent field is unconstrained.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DeviceSpec {
    /// Job name.
    pub job: Option<String>,
    /// Replica index.
    pub replica: Option<u32>,
    /// Task index.
    pub task: Option<u32>,
    /// Device type, upper-cased (`CPU`).
    pub device_type: Option<String>,
    /// Device index.
    pub device_index: Option<u32>,
}

impl DeviceSpec {
    /// Parses a full or partial device string. The empty string is the
    /// unconstrained spec. Accepts the legacy `/cpu:0` form.
    pub fn parse(text: &str) -> Result<Self> {
        let mut spec = DeviceSpec::default();
        let bad = |why: String| Error::invalid(format!("invalid device string '{text}': {why}"));
        if text.is_empty() {
            return Ok(spec);
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(bad("it must start with '/'".into()));
        };
        for part in rest.split('/') {
            let mut fields = part.split(':');
            let key = fields.next().unwrap_or_default();
            let values: Vec<&str> = fields.collect();
            let index = |v: &str, what: &str| {
                v.parse::<u32>().map_err(|_| bad(format!("{what} '{v}' is not a non-negative integer")))
            };
            match (key.to_ascii_lowercase().as_str(), values.as_slice()) {
                ("job", [name]) if is_job_name(name) => spec.job = Some((*name).to_string()),
                ("job", _) => {
                    return Err(bad(format!(
                        "job name in '{part}' must be letters, digits, '_' or '-', starting with a letter"
                    )));
                }
                ("replica", [n]) => spec.replica = Some(index(n, "replica")?),
                ("task", [n]) => spec.task = Some(index(n, "task")?),
                ("device", [ty, n]) => {
                    spec.device_type = Some(device_type(ty).map_err(bad)?);
                    spec.device_index = Some(index(n, "device index")?);
                }
                ("device", [ty]) => spec.device_type = Some(device_type(ty).map_err(bad)?),
                ("cpu" | "gpu", [n]) => {
                    spec.device_type = Some(key.to_ascii_uppercase());
                    spec.device_index = Some(index(n, "device index")?);
                }
                ("", _) => return Err(bad("empty component".into())),
                _ => {
                    return Err(bad(format!(
                        "unknown component '{part}' (expected job:NAME, replica:N, task:N or device:TYPE:N)"
                    )));
                }
            }
        }
        Ok(spec)
    }

    /// `inner`'s fields override `self`'s (a nested `tf.device` scope).
    pub fn merge(&self, inner: &DeviceSpec) -> DeviceSpec {
        DeviceSpec {
            job: inner.job.clone().or_else(|| self.job.clone()),
            replica: inner.replica.or(self.replica),
            task: inner.task.or(self.task),
            device_type: inner.device_type.clone().or_else(|| self.device_type.clone()),
            device_index: inner.device_index.or(self.device_index),
        }
    }

    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == DeviceSpec::default()
    }

    /// The full name of CPU 0 of a task: `/job:J/replica:0/task:N/device:CPU:0`.
    pub fn cpu_of(job: &str, task: u32) -> DeviceSpec {
        DeviceSpec {
            job: Some(job.to_string()),
            replica: Some(0),
            task: Some(task),
            device_type: Some("CPU".into()),
            device_index: Some(0),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(job) = &self.job {
            write!(f, "/job:{job}")?;
        }
        if let Some(r) = self.replica {
            write!(f, "/replica:{r}")?;
        }
        if let Some(t) = self.task {
            write!(f, "/task:{t}")?;
        }
        match (&self.device_type, self.device_index) {
            (Some(ty), Some(i)) => write!(f, "/device:{ty}:{i}"),
            (Some(ty), None) => write!(f, "/device:{ty}"),
            _ => Ok(()),
        }
    }
}

fn is_job_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn device_type(ty: &str) -> std::result::Result<String, String> {
    if !ty.is_empty() && ty.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(ty.to_ascii_uppercase())
    } else {
        Err(format!("device type '{ty}' is not a name like CPU"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_and_formats_back() {
        let s = "/job:local/replica:0/task:1/device:CPU:0";
        let spec = DeviceSpec::parse(s).unwrap();
        assert_eq!(spec, DeviceSpec::cpu_of("local", 1));
        assert_eq!(spec.to_string(), s);
    }

    #[test]
    fn parses_partial_specs() {
        let spec = DeviceSpec::parse("/job:ps").unwrap();
        assert_eq!(spec.job.as_deref(), Some("ps"));
        assert_eq!(spec.task, None);
        let spec = DeviceSpec::parse("/job:local/task:1").unwrap();
        assert_eq!((spec.job.as_deref(), spec.task), (Some("local"), Some(1)));
        assert_eq!(spec.to_string(), "/job:local/task:1");
        assert!(DeviceSpec::parse("").unwrap().is_empty());
    }

    #[test]
    fn legacy_and_lowercase_device_forms() {
        let spec = DeviceSpec::parse("/cpu:0").unwrap();
        assert_eq!(spec.to_string(), "/device:CPU:0");
        let spec = DeviceSpec::parse("/job:w/device:cpu:3").unwrap();
        assert_eq!(spec.to_string(), "/job:w/device:CPU:3");
    }

    #[test]
    fn errors_name_the_bad_part() {
        for (text, needle) in [
            ("job:ps", "must start with '/'"),
            ("/jb:ps", "unknown component 'jb:ps'"),
            ("/job:ps/task:x", "task 'x'"),
            ("/job:9ps", "job name"),
            ("/job:ps//task:0", "empty component"),
            ("/device:C P U:0", "device type"),
        ] {
            let err = DeviceSpec::parse(text).unwrap_err().to_string();
            assert!(err.contains(text) && err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn inner_scope_overrides_outer() {
        let outer = DeviceSpec::parse("/job:ps/task:0").unwrap();
        let inner = DeviceSpec::parse("/task:2/device:CPU:0").unwrap();
        assert_eq!(outer.merge(&inner).to_string(), "/job:ps/task:2/device:CPU:0");
        assert_eq!(outer.merge(&DeviceSpec::default()), outer);
    }
}
