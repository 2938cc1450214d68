//! TensorBoard event files: scalar summaries written by the host (programs
//! have no filesystem) as `events.out.tfevents.<secs>.<host>` under
//! `<log-dir>/<job>-<task>/`, so `tensorboard --logdir <log-dir>` shows one
//! run per task.
//!
//! A file is a sequence of records `u64 length, u32 masked crc32c(length),
//! Event protobuf, u32 masked crc32c(data)`, the first an Event carrying
//! `file_version: "brain.Event:2"`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use prost::Message;

use crate::cluster::TaskId;
use crate::error::{Code, Error, Result};

/// `tensorflow.Summary.Value` with the `simple_value` case.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    /// Tag, e.g. `loss`.
    #[prost(string, tag = "1")]
    pub tag: String,
    /// The scalar.
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// Values.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Event` with the fields weft writes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// Global step.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// `brain.Event:2` in the first record.
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    /// A summary.
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
}

/// TensorFlow's masked CRC32C.
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One record in the TFRecord framing.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// Scalar summaries of one task, appended to one event file opened on first use.
#[derive(Debug)]
pub struct EventLog {
    dir: PathBuf,
    file: Mutex<Option<(PathBuf, std::fs::File)>>,
    written: std::sync::atomic::AtomicU64,
    max_bytes: u64,
}

/// Bytes of events one task may write in one host process (a scalar is
/// about 40 bytes: some 1.6 million of them), so a looping program cannot
/// fill the disk.
pub const MAX_EVENT_BYTES: u64 = 64 << 20;

impl EventLog {
    /// Event files of `task` under `log_dir`.
    pub fn new(log_dir: &Path, task: &TaskId) -> Self {
        Self::with_limit(log_dir, task, MAX_EVENT_BYTES)
    }

    /// [`EventLog::new`] writing at most `max_bytes`.
    pub fn with_limit(log_dir: &Path, task: &TaskId, max_bytes: u64) -> Self {
        EventLog {
            dir: log_dir.join(format!("{}-{}", task.job, task.index)),
            file: Mutex::new(None),
            written: std::sync::atomic::AtomicU64::new(0),
            max_bytes,
        }
    }

    /// Appends `tag = value` at `step`; flushed when written.
    pub fn scalar(&self, tag: &str, value: f32, step: i64) -> Result<()> {
        if tag.is_empty() || tag.len() > 256 {
            return Err(Error::invalid(format!("summary tag '{tag}' must be 1 to 256 bytes")));
        }
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(self.open()?);
        }
        let (path, file) = guard.as_mut().expect("opened");
        let event = Event {
            wall_time: now(),
            step,
            file_version: None,
            summary: Some(Summary { value: vec![SummaryValue { tag: tag.to_string(), simple_value: Some(value) }] }),
        };
        let bytes = record(&event.encode_to_vec());
        let used = self.written.load(std::sync::atomic::Ordering::Relaxed);
        if used + bytes.len() as u64 > self.max_bytes {
            return Err(Error::status(
                Code::ResourceExhausted,
                format!(
                    "summary limit: {} holds {used} bytes of events, its most is {}",
                    path.display(),
                    self.max_bytes
                ),
            ));
        }
        self.written.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        file.write_all(&bytes)
            .and_then(|_| file.flush())
            .map_err(|e| Error::status(Code::Internal, format!("writing {}: {e}", path.display())))
    }

    fn open(&self) -> Result<(PathBuf, std::fs::File)> {
        let fail = |p: &Path, e: std::io::Error| Error::status(Code::Internal, format!("opening {}: {e}", p.display()));
        std::fs::create_dir_all(&self.dir).map_err(|e| fail(&self.dir, e))?;
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        let host = if host.is_empty() { "weft".to_string() } else { host };
        let path = self.dir.join(format!("events.out.tfevents.{}.{host}.{}", now() as u64, std::process::id()));
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| fail(&path, e))?;
        let header = Event { wall_time: now(), step: 0, file_version: Some("brain.Event:2".into()), summary: None };
        let header = record(&header.encode_to_vec());
        file.write_all(&header).map_err(|e| fail(&path, e))?;
        self.written.fetch_add(header.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok((path, file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads records back, checking both CRCs.
    fn records(bytes: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            assert_eq!(u32::from_le_bytes(rest[8..12].try_into().unwrap()), masked_crc(&rest[..8]));
            let data = &rest[12..12 + len];
            assert_eq!(u32::from_le_bytes(rest[12 + len..16 + len].try_into().unwrap()), masked_crc(data));
            out.push(Event::decode(data).unwrap());
            rest = &rest[16 + len..];
        }
        out
    }

    #[test]
    fn masked_crc_follows_the_tfrecord_definition() {
        // The CRC32C of "foo" is 0xcfc4ae1d; TFRecord masks it as
        // ((crc >> 15) | (crc << 17)) + 0xa282ead8 = 0xfebe8a61 (worked out
        // by hand from that formula, not by this code).
        assert_eq!(crc32c::crc32c(b"foo"), 0xcfc4_ae1d);
        assert_eq!(masked_crc(b"foo"), 0xfebe_8a61);
    }

    #[test]
    fn scalars_are_written_after_a_version_header() {
        let dir = std::env::temp_dir().join(format!("weft-events-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = EventLog::new(&dir, &TaskId::new("worker", 1));
        log.scalar("loss", 2.5, 10).unwrap();
        log.scalar("loss", 1.5, 20).unwrap();
        let files: Vec<PathBuf> = std::fs::read_dir(dir.join("worker-1")).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1);
        assert!(files[0].file_name().unwrap().to_str().unwrap().starts_with("events.out.tfevents."));
        let events = records(&std::fs::read(&files[0]).unwrap());
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        let scalars: Vec<(i64, f32)> =
            events[1..].iter().map(|e| (e.step, e.summary.as_ref().unwrap().value[0].simple_value.unwrap())).collect();
        assert_eq!(scalars, [(10, 2.5), (20, 1.5)]);
        assert!(log.scalar("", 1.0, 0).is_err());
        // A bounded log refuses what would take it past its limit, naming it.
        let small = EventLog::with_limit(&dir, &TaskId::new("worker", 2), 100);
        small.scalar("loss", 1.0, 1).unwrap();
        let err = small.scalar("loss", 1.0, 2).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(err.to_string().contains("summary limit"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
