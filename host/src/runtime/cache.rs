//! The compiled-module cache: `.cwasm` files keyed by the module's sha256
//! and the engine's configuration, so a module is compiled once per host
//! (and survives restarts), and a changed engine never loads a stale artifact.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::{Error, Result};

/// The hex sha256 of a module's bytes: its identity.
pub fn module_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A directory of compiled components.
#[derive(Clone, Debug)]
pub struct ModuleCache {
    dir: PathBuf,
    engine_key: String,
}

/// How a component was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Compiled now with Cranelift.
    Compiled,
    /// Loaded from a cached `.cwasm`.
    Cache,
}

impl ModuleCache {
    /// A cache in `dir` (created if needed) for `engine`'s configuration.
    pub fn new(dir: impl Into<PathBuf>, engine: &Engine) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating cache dir {}", dir.display()), e))?;
        crate::atomic_file::remove_stale_temporaries(&dir);
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(ModuleCache { dir, engine_key: format!("{:016x}", h.finish()) })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}-{}.cwasm", self.engine_key))
    }

    /// The component for `bytes` (whose sha256 is `hash`): from the cache if
    /// present and loadable, else compiled by `compile` and stored.
    pub fn get_or_compile(
        &self,
        engine: &Engine,
        hash: &str,
        compile: impl FnOnce() -> Result<Component>,
    ) -> Result<(Component, Source)> {
        let path = self.path(hash);
        if path.exists() {
            // SAFETY: files in the cache directory are written only by
            // `store` below from components this engine compiled; the
            // directory belongs to the host, not to any guest.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => {
                    // Its modification time is when it was last used: eviction
                    // goes oldest first.
                    let _ = std::fs::File::options()
                        .append(true)
                        .open(&path)
                        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                    return Ok((c, Source::Cache));
                }
                Err(e) => tracing::warn!(path = %path.display(), "ignoring unloadable cached module: {e:#}"),
            }
        }
        let component = compile()?;
        self.store(&path, &component);
        Ok((component, Source::Compiled))
    }

    fn store(&self, path: &Path, component: &Component) {
        let result = component.serialize().map_err(|e| e.to_string()).and_then(|bytes| {
            crate::atomic_file::write(path, &bytes, crate::atomic_file::Access::Owner).map_err(|e| e.to_string())
        });
        if let Err(e) = result {
            // The cache is an optimisation: a host with a read-only cache still runs.
            tracing::warn!(path = %path.display(), "could not cache compiled module: {e}");
        }
    }
}

impl ModuleCache {
    /// Deletes the least recently used compiled modules whose module hash is
    /// not in `in_use` until the cache holds at most `max_bytes` (those in
    /// use are kept even past it). Returns the bytes freed.
    pub fn evict(&self, max_bytes: u64, in_use: &std::collections::HashSet<String>) -> u64 {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return 0 };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf, String)> = entries
            .flatten()
            .filter_map(|e| {
                let path = e.path();
                let name = path.file_name()?.to_str()?.to_string();
                let hash = name.strip_suffix(".cwasm")?.split('-').next()?.to_string();
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), path, hash))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort_by_key(|f| f.0);
        let mut freed = 0;
        for (_, len, path, hash) in files {
            if total <= max_bytes {
                break;
            }
            if !in_use.contains(&hash) && std::fs::remove_file(&path).is_ok() {
                total -= len;
                freed += len;
            }
        }
        freed
    }
}
