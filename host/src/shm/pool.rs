//! The master's side: the segments it gave one co-located host, reused call
//! after call. A call leases a segment big enough for its inputs and the
//! outputs it expects, and gives it back when it has read the outputs out.

use std::io::{IoSlice, Read};
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

use super::{Key, MAX_SEGMENT_BYTES, Mapping};

/// Segments one master keeps with one host at most (one per call in flight,
/// or lent to the host).
pub const MAX_SEGMENTS_PER_PEER: usize = 8;
/// The smallest segment made.
const MIN_SEGMENT_BYTES: usize = 1 << 20;
/// How long the host has to accept a segment.
const HANDSHAKE: Duration = Duration::from_secs(2);
/// After the host refused a segment (or could not be reached), how long
/// calls use TCP before a pool tries again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// A segment this process made and registered with a host.
pub struct Segment {
    key: Key,
    mapping: Mapping,
    /// Open for as long as the host should keep the segment.
    _registration: UnixStream,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the key: it is the capability to the memory.
        f.debug_struct("Segment").field("bytes", &self.mapping.len()).finish_non_exhaustive()
    }
}

impl Segment {
    /// Its key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Its memory.
    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }
}

/// The segments one master holds with one host (at `socket`).
#[derive(Debug)]
pub struct Pool {
    socket: String,
    /// Names this pool's memfds (`weft-shm-<id>`), so they can be counted.
    id: u64,
    free: Mutex<Vec<Segment>>,
    /// Segments lent to the host (a delivery's tensors lie there), free
    /// again once it says the loan ended.
    lent: Mutex<Vec<Segment>>,
    live: AtomicUsize,
    /// Set when the host refused a segment or could not be reached: until
    /// then this pool offers none, and calls go over TCP.
    refused_until: Mutex<Option<Instant>>,
}

/// A segment lent to one call (and, once it is over, to the outputs read
/// from it in place, for as long as they live). Back to its pool when dropped
/// after [`Lease::completed`]; dropped without it (the call was cancelled or
/// failed, and the host may still write to it), the segment is closed
/// instead, so no later call can share memory with a late write.
#[derive(Debug)]
pub struct Lease {
    segment: Option<Segment>,
    pool: Arc<Pool>,
    completed: AtomicBool,
    lent: AtomicBool,
}

impl Lease {
    /// Says the call is over: the host has answered, and will not touch the
    /// segment again for it.
    pub fn completed(&self) {
        self.completed.store(true, Ordering::Release);
    }

    /// Says the host answered and keeps what lies in the segment until it
    /// says otherwise ([`super::Loan`]): dropped, the lease leaves the
    /// segment lent, not free.
    pub fn lent(&self) {
        self.lent.store(true, Ordering::Release);
        self.completed();
    }

    fn new(segment: Segment, pool: Arc<Pool>) -> Lease {
        Lease { segment: Some(segment), pool, completed: AtomicBool::new(false), lent: AtomicBool::new(false) }
    }
}

// SAFETY: the lease's segment stays mapped, at one address, until the
// lease drops.
unsafe impl crate::tensor::SharedMemory for Lease {
    fn bytes(&self) -> &[u8] {
        self.mapping().bytes()
    }
}

impl std::ops::Deref for Lease {
    type Target = Segment;
    fn deref(&self) -> &Segment {
        self.segment.as_ref().expect("leased segment")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(s) = self.segment.take() {
            if self.lent.load(Ordering::Acquire) {
                Pool::lend(&self.pool, s);
            } else if self.completed.load(Ordering::Acquire) {
                self.pool.free.lock().unwrap_or_else(|p| p.into_inner()).push(s);
            } else {
                drop(s);
                self.pool.live.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

impl Pool {
    /// A pool for the host whose shared-memory socket is `socket`.
    pub fn new(socket: impl Into<String>) -> Arc<Pool> {
        Arc::new(Pool {
            socket: socket.into(),
            id: rand::random(),
            free: Mutex::default(),
            lent: Mutex::default(),
            live: AtomicUsize::new(0),
            refused_until: Mutex::new(None),
        })
    }

    /// The host's socket.
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// The name its memfds carry (`/proc/PID/fd` shows `/memfd:NAME`).
    pub fn memfd_name(&self) -> String {
        format!("weft-shm-{:016x}", self.id)
    }

    /// Segments it holds now, leased or free.
    pub fn segments(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// A free segment of at least `bytes` it holds already; never blocks.
    pub fn lease_free(self: &Arc<Self>, bytes: usize) -> Option<Lease> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let i = free.iter().position(|s| s.mapping.len() >= bytes)?;
        let segment = free.swap_remove(i);
        Some(Lease::new(segment, self.clone()))
    }

    /// Segments lent to the host now.
    pub fn lent(&self) -> usize {
        self.lent.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Keeps `segment` lent until the host says the loan ended (then it is
    /// free again) or its connection ends or says anything else (then it is
    /// closed): a thread waits on the connection, so a host that dies
    /// holding a loan leaves no segment behind.
    fn lend(pool: &Arc<Pool>, segment: Segment) {
        let key = segment.key;
        let watched = match segment._registration.try_clone() {
            Ok(conn) => conn,
            Err(_) => {
                drop(segment);
                pool.live.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        };
        pool.lent.lock().unwrap_or_else(|p| p.into_inner()).push(segment);
        let weak = Arc::downgrade(pool);
        let spawned = std::thread::Builder::new().name("weft-shm-loan".into()).stack_size(64 << 10).spawn(move || {
            let mut byte = [0u8; 1];
            let said = loop {
                match (&watched).read(&mut byte) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            drop(watched);
            if let Some(pool) = weak.upgrade() {
                pool.loan_ended(&key, matches!(said, Ok(1)) && byte[0] == super::registry::RELEASED);
            }
        });
        if spawned.is_err() {
            pool.loan_ended(&key, false);
        }
    }

    /// The loan of segment `key` ended: free again if the host said so
    /// (`released`), else closed.
    fn loan_ended(&self, key: &Key, released: bool) {
        let mut lent = self.lent.lock().unwrap_or_else(|p| p.into_inner());
        let Some(i) = lent.iter().position(|s| &s.key == key) else { return };
        let segment = lent.swap_remove(i);
        drop(lent);
        if released {
            self.free.lock().unwrap_or_else(|p| p.into_inner()).push(segment);
        } else {
            drop(segment);
            self.live.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A segment of at least `bytes`, or `None` (the call then goes over
    /// TCP): too big, too many in flight, or the host will not take one.
    /// May block briefly, registering a new segment.
    pub fn lease(self: &Arc<Self>, bytes: usize) -> Option<Lease> {
        let refused = self.refused_until.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| Instant::now() < t);
        if bytes > MAX_SEGMENT_BYTES || refused {
            return None;
        }
        if let Some(lease) = self.lease_free(bytes) {
            return Some(lease);
        }
        {
            let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            // Too small for this call: make room for a bigger one.
            if self.live.load(Ordering::SeqCst) >= MAX_SEGMENTS_PER_PEER && !free.is_empty() {
                free.pop();
                self.live.fetch_sub(1, Ordering::SeqCst);
            }
        }
        if self.live.fetch_add(1, Ordering::SeqCst) >= MAX_SEGMENTS_PER_PEER {
            self.live.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let size = bytes.next_power_of_two().clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES);
        match self.register(size) {
            Ok(segment) => Some(Lease::new(segment, self.clone())),
            Err(e) => {
                self.live.fetch_sub(1, Ordering::SeqCst);
                *self.refused_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + RETRY_AFTER);
                tracing::info!("no shared memory with the host at @{}: {e}; TCP for {RETRY_AFTER:?}", self.socket);
                None
            }
        }
    }

    fn register(&self, size: usize) -> std::io::Result<Segment> {
        let mapping = Mapping::create(&self.memfd_name(), size)?;
        let key: Key = rand::random();
        let mut conn = UnixStream::connect_addr(&SocketAddr::from_abstract_name(self.socket.as_bytes())?)?;
        conn.set_read_timeout(Some(HANDSHAKE))?;
        conn.set_write_timeout(Some(HANDSHAKE))?;
        let mut hello = [0u8; super::registry::HELLO_BYTES];
        hello[..16].copy_from_slice(&key);
        hello[16..].copy_from_slice(&(size as u64).to_le_bytes());
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let fds = [mapping.fd().expect("a segment made here keeps its memfd").as_fd()];
        control.push(SendAncillaryMessage::ScmRights(&fds));
        let sent = rustix::net::sendmsg(&conn, &[IoSlice::new(&hello)], &mut control, SendFlags::NOSIGNAL)?;
        if sent != hello.len() {
            return Err(std::io::Error::other("the registration was cut short"));
        }
        let mut reply = Vec::new();
        let mut status = [0u8; 1];
        conn.read_exact(&mut status)?;
        if status[0] != 0 {
            let _ = (&conn).take(255).read_to_end(&mut reply);
            return Err(std::io::Error::other(format!(
                "the host refused the segment: {}",
                String::from_utf8_lossy(&reply)
            )));
        }
        conn.set_read_timeout(None)?;
        Ok(Segment { key, mapping, _registration: conn })
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // Closing the registration tells the host to unmap it.
        let _ = self._registration.shutdown(std::net::Shutdown::Both);
    }
}
