//! The host's side: an abstract Unix socket on which masters of the same
//! user hand over segments, and the segments it holds, by key.
//!
//! Each connection carries one segment: a message of its key and length
//! with the memfd attached, answered with one status byte (0 accepted,
//! otherwise followed by why not); later, a [`RELEASED`] byte each time a
//! loan of the segment ends ([`Loan`]). The segment lives until the
//! connection closes. One registry serves the whole process (every task it hosts), on
//! its own thread, so it outlives any one async runtime.

use std::collections::HashMap;
use std::io::{IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

use super::{Key, Mapping};

/// Segments one host holds at most (each is one connection and thread).
pub const MAX_SEGMENTS: usize = 512;
/// Connections being handed a segment at once, beyond those holding one.
const MAX_HANDSHAKES: usize = 32;
/// How long a connecting master has to send its segment.
const HANDSHAKE: Duration = Duration::from_secs(2);
/// The registration message: key, then length (little-endian u64).
pub const HELLO_BYTES: usize = 16 + 8;

/// Registered segments by key, each with its connection and whether it is
/// lent to this host now.
pub(super) type Segments = HashMap<Key, (Arc<Mapping>, Arc<UnixStream>, Arc<AtomicBool>)>;

/// The segments masters gave this host, and the socket they come in on.
#[derive(Debug)]
pub struct Registry {
    address: String,
    /// Each with its connection, on which loans say they ended.
    segments: Mutex<Segments>,
    /// Open connections (each a thread): handshakes and held segments.
    connections: AtomicUsize,
}

/// This process's registry, started on first use; `None` when shared
/// memory is off or the socket cannot be opened (hosts then use TCP).
pub fn registry() -> Option<&'static Arc<Registry>> {
    static REGISTRY: OnceLock<Option<Arc<Registry>>> = OnceLock::new();
    REGISTRY
        .get_or_init(|| {
            if !super::enabled() {
                return None;
            }
            match Registry::start() {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!("no shared memory for this host (tensors go over TCP): {e}");
                    None
                }
            }
        })
        .as_ref()
}

impl Registry {
    fn start() -> std::io::Result<Arc<Registry>> {
        let address = format!("weft-shm-{}-{:016x}", std::process::id(), rand::random::<u64>());
        let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(address.as_bytes())?)?;
        let registry = Arc::new(Registry { address, segments: Mutex::default(), connections: AtomicUsize::new(0) });
        let accepting = registry.clone();
        std::thread::Builder::new().name("weft-shm".into()).spawn(move || accepting.accept(listener))?;
        Ok(registry)
    }

    /// The abstract socket name masters connect to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The segment registered under `key`.
    pub fn segment(&self, key: &[u8]) -> Option<Arc<Mapping>> {
        let key: Key = key.try_into().ok()?;
        self.lock().get(&key).map(|(m, _, _)| m.clone())
    }

    /// The segment registered under `key`, lent to this host until the
    /// loan is dropped: its master does not write to it meanwhile, so
    /// tensors delivered in it can stay there ([`Loan`]). `None` also while
    /// it is lent already: one loan at a time, so the one byte that ends a
    /// loan never ends a later one.
    pub fn borrow(&self, key: &[u8]) -> Option<Arc<Loan>> {
        let key: Key = key.try_into().ok()?;
        let (mapping, conn, lent) = self.lock().get(&key).cloned()?;
        if lent.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(Arc::new(Loan { mapping, conn, lent }))
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Segments> {
        self.segments.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn accept(self: Arc<Self>, listener: UnixListener) {
        for conn in listener.incoming() {
            let conn = match conn {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of descriptors, say: the connection waits in the
                    // backlog; do not spin on it.
                    tracing::warn!("shared-memory socket: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            // Bounded before any thread: a segment or handshake beyond the
            // cap is refused by closing its connection (its master uses TCP).
            if self.connections.fetch_add(1, Ordering::SeqCst) >= MAX_SEGMENTS + MAX_HANDSHAKES {
                self.connections.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let registry = self.clone();
            let spawned =
                std::thread::Builder::new().name("weft-shm-segment".into()).stack_size(64 << 10).spawn(move || {
                    registry.serve(conn);
                    registry.connections.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                self.connections.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!("shared-memory segment refused: no thread for it ({e})");
            }
        }
    }

    /// Takes one segment over `conn` and holds it until `conn` closes.
    fn serve(&self, mut conn: UnixStream) {
        let key = match self.register(&conn) {
            Ok(key) => {
                let _ = conn.write_all(&[ACCEPTED]);
                key
            }
            Err(why) => {
                let mut reply = vec![1];
                reply.extend(why.bytes().take(255));
                let _ = conn.write_all(&reply);
                return;
            }
        };
        // Nothing more is expected: any byte, EOF or error ends the segment.
        let _ = conn.set_read_timeout(None);
        while let Err(e) = conn.read(&mut [0u8; 1]) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                break;
            }
        }
        self.lock().remove(&key);
    }

    fn register(&self, conn: &UnixStream) -> Result<Key, String> {
        let peer = rustix::net::sockopt::socket_peercred(conn).map_err(|e| format!("no peer credentials: {e}"))?;
        if peer.uid != rustix::process::geteuid() {
            return Err("segments are taken only from this host's own user".into());
        }
        conn.set_read_timeout(Some(HANDSHAKE)).map_err(|e| e.to_string())?;
        let (hello, fd) = receive_hello(conn)?;
        let key: Key = hello[..16].try_into().expect("16 bytes");
        let len = u64::from_le_bytes(hello[16..].try_into().expect("8 bytes"));
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0 && l <= super::MAX_SEGMENT_BYTES)
            .ok_or_else(|| format!("a segment has 1 to {} bytes, not {len}", super::MAX_SEGMENT_BYTES))?;
        let mapping = Arc::new(Mapping::open(fd, len)?);
        let writer = Arc::new(conn.try_clone().map_err(|e| format!("keeping the connection: {e}"))?);
        let mut segments = self.lock();
        if segments.len() >= MAX_SEGMENTS {
            return Err(format!("this host holds {MAX_SEGMENTS} segments already"));
        }
        if segments.contains_key(&key) {
            return Err("a segment with this key is registered already".into());
        }
        segments.insert(key, (mapping, writer, Arc::default()));
        Ok(key)
    }
}

/// What the host answers a registration it took.
const ACCEPTED: u8 = 0;
/// What it sends on a segment's connection when a loan of it ends.
pub const RELEASED: u8 = 0xAA;

/// A segment its master lent this host (a delivery's tensors lie in it):
/// the master leaves it alone until the loan is dropped, which tells it so.
/// A master that writes to it anyway garbles only the floats read in place
/// from it ([`crate::tensor::SharedMemory`]).
#[derive(Debug)]
pub struct Loan {
    mapping: Arc<Mapping>,
    conn: Arc<UnixStream>,
    lent: Arc<AtomicBool>,
}

impl Drop for Loan {
    fn drop(&mut self) {
        self.lent.store(false, Ordering::Release);
        // Never blocks, nor raises SIGPIPE: a master that went away, or
        // reads nothing, needs no word.
        let flags = rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL;
        if rustix::net::send(&*self.conn, &[RELEASED], flags) != Ok(1) {
            // The word is lost: end the segment instead, so its master closes
            // it rather than waiting for it for good.
            let _ = self.conn.shutdown(std::net::Shutdown::Both);
        }
    }
}

// SAFETY: the loan holds the mapping, which stays mapped at one address
// until it drops.
unsafe impl crate::tensor::SharedMemory for Loan {
    fn bytes(&self) -> &[u8] {
        self.mapping.bytes()
    }
}

impl Loan {
    /// Its memory.
    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }
}

/// Reads the registration message and the memfd that comes with it.
fn receive_hello(conn: &UnixStream) -> Result<([u8; HELLO_BYTES], OwnedFd), String> {
    let mut hello = [0u8; HELLO_BYTES];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        conn,
        &mut [IoSliceMut::new(&mut hello)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC | RecvFlags::WAITALL,
    )
    .map_err(|e| format!("reading the segment's registration: {e}"))?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if got.bytes != HELLO_BYTES {
        return Err(format!("a registration is {HELLO_BYTES} bytes, got {}", got.bytes));
    }
    match <[OwnedFd; 1]>::try_from(fds) {
        Ok([fd]) => Ok((hello, fd)),
        Err(fds) => Err(format!("a registration carries one memfd, got {}", fds.len())),
    }
}
