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

/// Temporaries older than this were left by a crash: no write takes so long.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deletes temporaries in `dir` that a crashed writer left (older than an
/// hour: another process sharing the directory may be mid-write); returns
/// how many.
pub fn remove_stale_temporaries(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let stale = |e: &std::fs::DirEntry| {
        e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age > STALE_AFTER)
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with('.') && name.contains(".tmp-") && stale(e)
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
        let left = dir.join(".record.json.tmp-1-7");
        std::fs::write(&left, b"half").unwrap();
        assert_eq!(remove_stale_temporaries(&dir), 0, "a fresh temporary may be another writer's");
        let old = std::time::SystemTime::now() - 2 * STALE_AFTER;
        std::fs::File::options().append(true).open(&left).unwrap().set_modified(old).unwrap();
        assert_eq!(remove_stale_temporaries(&dir), 1);
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("record.json")]);
        assert!(write(&dir.join("missing/x"), b"x", Access::Default).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
