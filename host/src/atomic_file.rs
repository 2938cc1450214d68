//! Files the host writes whole (checkpoints, state records, kept modules,
//! compiled artifacts): through a uniquely named temporary file in the same
//! directory, created with its final permissions, fsynced and renamed into
//! place, so a crash or a concurrent writer never leaves half a file, and
//! a failed write leaves no temporary behind. Temporaries are named
//! `.NAME.tmp-PID-N` and [`remove_stale_temporaries`] clears those a crash
//! left.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Who may read a file the host writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The host's user only (0600): tokens, tenants' data.
    Owner,
    /// Anyone the umask allows.
    Default,
}

/// Writes `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: &[u8], access: Access) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        if access == Access::Owner {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Deletes temporaries in `dir` that a crashed writer left; returns how many.
pub fn remove_stale_temporaries(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let own = format!("-{}-", std::process::id());
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            // Another writer of this process may be mid-write.
            name.starts_with('.') && name.contains(".tmp-") && !name.contains(&own)
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_whole_files_owner_only_and_stale_temporaries_go() {
        let dir = std::env::temp_dir().join(format!("weft-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("record.json");
        write(&file, b"first", Access::Owner).unwrap();
        write(&file, b"second", Access::Owner).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"second");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(dir.join(".record.json.tmp-1-7"), b"half").unwrap();
        assert_eq!(remove_stale_temporaries(&dir), 1);
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("record.json")]);
        assert!(write(&dir.join("missing/x"), b"x", Access::Default).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
