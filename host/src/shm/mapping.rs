//! A shared mapping of a sealed memfd, with bounds-checked reads and writes.
//!
//! The other side of a segment can write to it at any time. Bytes read from
//! it are copied into a new tensor, or, for big float tensors, read in place
//! by the few kernels that may ([`crate::tensor::mapped`]): either way a peer
//! that scribbles on a range while it is read garbles its own numbers,
//! nothing else. A host maps
//! only memfds on tmpfs sealed against shrinking: a shrunk file, or a
//! hugetlbfs one whose pages a peer punched out, would make an access fault
//! (SIGBUS) instead of reading zeros.

use std::ffi::c_void;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::SealFlags;
use rustix::mm::{MapFlags, ProtFlags};

/// A read-write shared mapping of a whole memfd.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// The memfd, kept by the side that made it (to hand over); the side
    /// that maps someone else's closes it at once (the mapping stays).
    fd: Option<OwnedFd>,
}

// SAFETY: the mapping is plain shared memory with no thread affinity; all
// access goes through `read`/`write`/`bytes`, bounds-checked.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

/// The seals a segment must carry before a host maps it: it can neither
/// shrink (which would make reads fault) nor lose its seals.
pub const REQUIRED_SEALS: SealFlags = SealFlags::SHRINK.union(SealFlags::SEAL);

/// `statfs.f_type` of tmpfs, where (non-hugetlb) memfds live.
const TMPFS_MAGIC: u64 = 0x0102_1994;

impl Mapping {
    /// A new sealed memfd of `len` bytes named `name`, mapped.
    pub fn create(name: &str, len: usize) -> std::io::Result<Mapping> {
        use rustix::fs::{MemfdFlags, fcntl_add_seals, ftruncate, memfd_create};
        let fd = memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        ftruncate(&fd, len as u64)?;
        fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        let mut mapping = Mapping::map(&fd, len)?;
        mapping.fd = Some(fd);
        Ok(mapping)
    }

    /// Maps a memfd someone else made, after checking it is sealed against
    /// shrinking and holds at least `len` bytes.
    pub fn open(fd: OwnedFd, len: usize) -> Result<Mapping, String> {
        let seals = rustix::fs::fcntl_get_seals(&fd).map_err(|e| format!("not a sealable memfd ({e})"))?;
        let fs = rustix::fs::fstatfs(&fd).map_err(|e| format!("fstatfs: {e}"))?;
        if fs.f_type as u64 != TMPFS_MAGIC {
            return Err(format!("the memfd is not on tmpfs (filesystem {:#x}; hugetlbfs is refused)", fs.f_type));
        }
        if !seals.contains(REQUIRED_SEALS) {
            return Err("the memfd is not sealed against shrinking".into());
        }
        let size = rustix::fs::fstat(&fd).map_err(|e| format!("fstat: {e}"))?.st_size;
        if u64::try_from(size).map_or(true, |s| s < len as u64) {
            return Err(format!("the memfd has {size} bytes, not the {len} announced"));
        }
        Mapping::map(&fd, len).map_err(|e| format!("mmap: {e}"))
    }

    fn map(fd: &OwnedFd, len: usize) -> std::io::Result<Mapping> {
        if len == 0 || len > super::MAX_SEGMENT_BYTES {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("segment of {len} bytes")));
        }
        // SAFETY: a fresh mapping of a file we hold; nothing else in this
        // process refers to that address range.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd.as_fd(),
                0,
            )?
        };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len, fd: None })
    }

    /// The memfd, to hand to another process (only the side that made it
    /// keeps it).
    pub fn fd(&self) -> Option<&OwnedFd> {
        self.fd.as_ref()
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no bytes (never: segments are at least one byte).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn range(&self, offset: u64, len: usize) -> Result<usize, String> {
        let start = usize::try_from(offset).map_err(|_| format!("offset {offset} is out of range"))?;
        match start.checked_add(len) {
            Some(end) if end <= self.len => Ok(start),
            _ => Err(format!("bytes {offset}..+{len} are outside the {}-byte segment", self.len)),
        }
    }

    /// `len` bytes at `offset`, handed to `f` to copy from.
    pub fn read<R>(&self, offset: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> Result<R, String> {
        let start = self.range(offset, len)?;
        // SAFETY: in bounds of a live mapping (checked above). The peer may
        // write to these bytes concurrently; `f` only copies them.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(start), len) };
        Ok(f(bytes))
    }

    /// All its bytes, for tensors read where they lie. The peer may write to
    /// them meanwhile: only floats are read so ([`crate::tensor::mapped`]).
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the whole live mapping, unmapped only when `self` drops.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Writes `bytes` at `offset`.
    pub fn write(&self, offset: u64, bytes: &[u8]) -> Result<(), String> {
        let start = self.range(offset, bytes.len())?;
        // SAFETY: in bounds of a live, writable mapping. `bytes` may even be
        // a range of this mapping (from `read`), so the copy allows overlap.
        unsafe { std::ptr::copy(bytes.as_ptr(), self.ptr.as_ptr().add(start), bytes.len()) };
        Ok(())
    }
}

// SAFETY: one fixed mapping, unmapped only when the value drops.
unsafe impl crate::tensor::SharedMemory for Mapping {
    fn bytes(&self) -> &[u8] {
        Mapping::bytes(self)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped; no borrow of it outlives
        // `read`'s closure or `self` (`bytes`).
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast::<c_void>(), self.len) };
    }
}
