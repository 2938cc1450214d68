//! Big tensors between hosts over plain TCP, beside gRPC.
//!
//! Over gRPC a tensor's bytes are copied into tonic's encode buffer on the
//! sending side and out of h2's buffers into tonic's on the receiving side,
//! before the copy into the tensor: a 64 MiB output crossed loopback at
//! about half the speed of the raw socket. Instead, a task parks a big
//! output of a step under a random ticket ([`Outbox::park`]) and names the
//! ticket and its bulk port in the gRPC answer; the master connects to that
//! port, sends the ticket, and reads the bytes with `recv` straight into
//! the buffer of the tensor they become ([`pull`]). The task writes them
//! from the output's own memory. The kernel's copies are the only ones.
//!
//! The wire: a connection opens with [`MAGIC`]; then, per pull, the master
//! sends a 16-byte ticket and the task answers one status byte (0: here,
//! 1: unknown ticket, and the task closes the connection), the length as a
//! little-endian u64, and that many bytes. Connections are kept for the
//! next pull.
//!
//! Only where gRPC itself runs over plain TCP: a ticket is 128 random bits,
//! handed only to a caller the gRPC service authorized, good once and for
//! [`PARKED_FOR`]. A task holds at most [`MAX_PARKED`] parked outputs (the
//! oldest expire first; when full, outputs are streamed over gRPC) and
//! serves at most [`MAX_CONNECTIONS`] bulk connections; one must send its
//! magic within [`HANDSHAKE`], and is closed after [`IDLE`] without a pull.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::tensor::{FillError, Tensor, TensorAssembler};

/// Outputs of at least this many bytes are pulled over the bulk port.
pub const MIN_BULK_BYTES: usize = 1 << 20;
/// The first bytes of a bulk connection.
pub const MAGIC: &[u8; 8] = b"WEFTBLK1";
/// How long a parked output waits to be pulled.
pub const PARKED_FOR: Duration = Duration::from_secs(30);
/// The most outputs a process holds parked.
pub const MAX_PARKED: usize = 4096;
/// The most bulk connections a process serves at once.
pub const MAX_CONNECTIONS: usize = 128;
/// Time a new connection has to send its magic.
pub const HANDSHAKE: Duration = Duration::from_secs(5);
/// A kept connection with no pull for this long is closed.
pub const IDLE: Duration = Duration::from_secs(120);

/// Names one parked output.
pub type Ticket = [u8; 16];

const HERE: u8 = 0;
const UNKNOWN: u8 = 1;

struct Parked {
    bytes: Bytes,
    until: Instant,
}

/// A process's parked outputs and its bulk listeners (one per local
/// address that gRPC calls arrived on).
#[derive(Default)]
pub struct Outbox {
    parked: Mutex<HashMap<Ticket, Parked>>,
    ports: Mutex<HashMap<IpAddr, u16>>,
    connections: AtomicUsize,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("connections", &self.connections).finish_non_exhaustive()
    }
}

/// This process's outbox.
pub fn outbox() -> &'static Arc<Outbox> {
    static OUTBOX: OnceLock<Arc<Outbox>> = OnceLock::new();
    OUTBOX.get_or_init(Default::default)
}

/// Whether this process offers and uses the bulk port (`WEFT_BULK=0`
/// turns it off: outputs are then streamed over gRPC).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("WEFT_BULK").map_or(true, |v| v != "0"))
}

impl Outbox {
    /// The port of this process's bulk listener on `ip`, started on first
    /// use; `None` if it cannot listen there.
    pub fn port(self: &Arc<Self>, ip: IpAddr) -> Option<u16> {
        let mut ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&port) = ports.get(&ip) {
            return Some(port);
        }
        let listener = TcpListener::bind((ip, 0))
            .inspect_err(|e| tracing::warn!("no bulk port on {ip}: {e}; big outputs go over gRPC"))
            .ok()?;
        let port = listener.local_addr().ok()?.port();
        let outbox = self.clone();
        std::thread::Builder::new()
            .name(format!("weft-bulk-{port}"))
            .spawn(move || outbox.accept(listener))
            .inspect_err(|e| tracing::warn!("no bulk port on {ip}: {e}"))
            .ok()?;
        ports.insert(ip, port);
        Some(port)
    }

    /// Parks `bytes` for one pull; `None` when the outbox is full.
    pub fn park(&self, bytes: Bytes) -> Option<Ticket> {
        let now = Instant::now();
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        if parked.len() >= MAX_PARKED {
            parked.retain(|_, p| p.until > now);
            if parked.len() >= MAX_PARKED {
                return None;
            }
        }
        let ticket: Ticket = rand::random();
        parked.insert(ticket, Parked { bytes, until: now + PARKED_FOR });
        Some(ticket)
    }

    /// Outputs parked now (expired ones included until the next cleanup).
    pub fn parked(&self) -> usize {
        self.parked.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn take(&self, ticket: &Ticket) -> Option<Bytes> {
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        parked.remove(ticket).filter(|p| p.until > Instant::now()).map(|p| p.bytes)
    }

    fn accept(self: Arc<Self>, listener: TcpListener) {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            if self.connections.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                self.connections.fetch_sub(1, Ordering::AcqRel);
                continue; // dropped: closed at once
            }
            let outbox = self.clone();
            let spawned = std::thread::Builder::new().name("weft-bulk-conn".into()).spawn(move || {
                outbox.serve(conn);
                outbox.connections.fetch_sub(1, Ordering::AcqRel);
            });
            if spawned.is_err() {
                self.connections.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Serves one connection's pulls until it closes, errs, idles or asks
    /// for a ticket it does not hold.
    fn serve(&self, mut conn: TcpStream) {
        let _ = conn.set_nodelay(true);
        let _ = conn.set_read_timeout(Some(HANDSHAKE));
        let _ = conn.set_write_timeout(Some(IDLE));
        let mut magic = [0u8; 8];
        if conn.read_exact(&mut magic).is_err() || &magic != MAGIC {
            return;
        }
        let _ = conn.set_read_timeout(Some(IDLE));
        loop {
            let mut ticket = Ticket::default();
            if conn.read_exact(&mut ticket).is_err() {
                return;
            }
            let Some(bytes) = self.take(&ticket) else {
                let _ = conn.write_all(&answer(UNKNOWN, 0));
                return;
            };
            if conn.write_all(&answer(HERE, bytes.len() as u64)).and_then(|()| conn.write_all(&bytes)).is_err() {
                return;
            }
        }
    }
}

/// Sends `ticket` and reads the answer's head (status and length).
fn ask(conn: &mut TcpStream, ticket: &Ticket, timeout: Duration) -> std::io::Result<[u8; 9]> {
    conn.set_read_timeout(Some(timeout))?;
    conn.write_all(ticket)?;
    let mut head = [0u8; 9];
    conn.read_exact(&mut head)?;
    Ok(head)
}

fn answer(status: u8, len: u64) -> [u8; 9] {
    let mut a = [0u8; 9];
    a[0] = status;
    a[1..].copy_from_slice(&len.to_le_bytes());
    a
}

/// Idle bulk connections of a client, by the address they reach.
#[derive(Debug, Default)]
pub struct Connections {
    idle: Mutex<Vec<(SocketAddr, TcpStream, Instant)>>,
}

/// A client drops a kept connection idle this long (before the task
/// would, after [`IDLE`]).
const KEEP_IDLE: Duration = Duration::from_secs(60);

impl Connections {
    /// A connection to `at`, and whether it was kept from before (and so
    /// may have been closed by the task meanwhile).
    fn checkout(&self, at: SocketAddr, timeout: Duration) -> std::io::Result<(TcpStream, bool)> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|(_, _, since)| since.elapsed() < KEEP_IDLE);
        if let Some(i) = idle.iter().position(|(a, _, _)| *a == at) {
            return Ok((idle.swap_remove(i).1, true));
        }
        drop(idle);
        let mut conn = TcpStream::connect_timeout(&at, timeout)?;
        conn.set_nodelay(true)?;
        conn.write_all(MAGIC)?;
        Ok((conn, false))
    }

    fn checkin(&self, at: SocketAddr, conn: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < 16 {
            idle.push((at, conn, Instant::now()));
        }
    }

    /// Drops every kept connection (after a failure, they are suspect).
    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Pulls the output parked under `ticket` at `at` into `asm` (which
/// expects its length), reading straight into the tensor's buffer; gives
/// up when the peer says nothing for `timeout`. Blocking: call it off the
/// async threads. The error says how far it got.
pub fn pull(
    connections: &Connections,
    at: SocketAddr,
    ticket: &Ticket,
    mut asm: TensorAssembler,
    timeout: Duration,
) -> Result<Tensor, String> {
    let expected = asm.remaining();
    let (conn, head) = loop {
        let (mut conn, kept) =
            connections.checkout(at, timeout).map_err(|e| format!("cannot reach its bulk port {at}: {e}"))?;
        match ask(&mut conn, ticket, timeout) {
            Ok(head) => break (conn, head),
            // A kept connection the task closed meanwhile never read the
            // ticket: try a new one.
            Err(_) if kept => continue,
            Err(e) => return Err(format!("bulk port {at} did not answer: {e}")),
        }
    };
    let len = u64::from_le_bytes(head[1..].try_into().expect("8 bytes"));
    match head[0] {
        HERE if len == expected as u64 => {}
        HERE => return Err(format!("bulk port {at} sent {len} bytes for a {expected}-byte output")),
        UNKNOWN => return Err(format!("bulk port {at} does not hold the output (expired, or taken)")),
        other => return Err(format!("bulk port {at} answered {other}, not a status")),
    }
    while asm.remaining() > 0 {
        let got = asm.fill_with(|spare| {
            rustix::net::recv(&conn, spare, rustix::net::RecvFlags::empty()).map(|((read, _), _)| read)
        });
        let so_far = expected - asm.remaining();
        match got {
            Ok(0) => return Err(format!("bulk port {at} closed after {so_far} of {expected} bytes")),
            Ok(_) | Err(FillError::Read(rustix::io::Errno::INTR)) => {}
            Err(FillError::Read(rustix::io::Errno::AGAIN)) => {
                return Err(format!("bulk port {at} said nothing for {timeout:?} after {so_far} of {expected} bytes"));
            }
            Err(FillError::Read(e)) => {
                return Err(format!("bulk port {at} broke off after {so_far} of {expected} bytes: {e}"));
            }
            Err(FillError::NotAPrefix) => return Err("recv claimed bytes it was not given".into()),
        }
    }
    let tensor = asm.finish().map_err(|e| e.message().to_string())?;
    connections.checkin(at, conn);
    Ok(tensor)
}

/// The bulk port this process offers the caller of `request`: on the
/// local address the call arrived on, and only over plain TCP (a TLS
/// connection carries no `TcpConnectInfo`).
pub fn port_for<T>(request: &tonic::Request<T>) -> Option<u16> {
    let info = request.extensions().get::<tonic::transport::server::TcpConnectInfo>()?;
    let ip = info.local_addr()?.ip();
    enabled().then(|| outbox().port(ip)).flatten()
}

/// The addresses of the host at `address` (its gRPC "host:port") with
/// `port` instead.
fn addresses(address: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    Ok(address.to_socket_addrs()?.map(|a| SocketAddr::new(a.ip(), port)).collect())
}

/// Where the host at `address` takes bulk pulls on `port`, if this
/// process can reach it there (tried by connecting within `timeout`; the
/// connection is kept for the first pull). `None` sends its outputs over
/// gRPC instead: a port that a proxy or NAT in between does not pass.
pub async fn reachable(
    connections: Arc<Connections>,
    address: &str,
    port: u16,
    timeout: Duration,
) -> Option<SocketAddr> {
    let address = address.to_string();
    let found = tokio::task::spawn_blocking(move || {
        for at in addresses(&address, port).ok()? {
            if let Ok((conn, _)) = connections.checkout(at, timeout) {
                connections.checkin(at, conn);
                return Some(at);
            }
        }
        tracing::warn!("the bulk port {port} of {address} cannot be reached: its big outputs come over gRPC");
        None
    });
    found.await.ok().flatten()
}

/// [`pull`], off the async threads.
pub async fn pull_async(
    connections: Arc<Connections>,
    at: SocketAddr,
    bulk: &super::pb::BulkBytes,
    asm: TensorAssembler,
    timeout: Duration,
) -> Result<Tensor, String> {
    let ticket: Ticket = bulk
        .ticket
        .as_slice()
        .try_into()
        .map_err(|_| format!("a bulk ticket of {} bytes, not 16", bulk.ticket.len()))?;
    if bulk.length != asm.remaining() as u64 {
        return Err(format!("a bulk output of {} bytes announced as {}", bulk.length, asm.remaining()));
    }
    let pulled = tokio::task::spawn_blocking(move || pull(&connections, at, &ticket, asm, timeout));
    pulled.await.map_err(|e| format!("the bulk pull stopped: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DType;

    fn local_outbox() -> (Arc<Outbox>, SocketAddr) {
        let outbox = Arc::new(Outbox::default());
        let port = outbox.port(IpAddr::from([127, 0, 0, 1])).expect("a bulk port");
        (outbox, SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn assembler_for(t: &Tensor) -> TensorAssembler {
        TensorAssembler::new(t.dtype(), t.shape().to_vec(), t.byte_length()).unwrap()
    }

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn a_parked_tensor_is_pulled_whole_once_over_a_kept_connection() {
        let (outbox, at) = local_outbox();
        let clients = Connections::default();
        let big = Tensor::from_f32(&[3, 1 << 20], (0..3 << 20).map(|i| i as f32).collect()).unwrap();
        let ints = Tensor::I64(ndarray::ArrayD::from_elem(ndarray::IxDyn(&[5]), -7).into_shared());
        for t in [&big, &ints, &Tensor::strings(&["a", "bc"])] {
            let ticket = outbox.park(t.to_shared_bytes()).unwrap();
            assert_eq!(&pull(&clients, at, &ticket, assembler_for(t), T).unwrap(), t);
            let again = pull(&clients, at, &ticket, assembler_for(t), T).unwrap_err();
            assert!(again.contains("does not hold the output"), "{again}");
        }
        assert_eq!(outbox.parked(), 0);
    }

    #[test]
    fn a_wrong_length_a_bad_handshake_and_a_peer_that_stops_midway_are_errors_that_say_so() {
        let (outbox, at) = local_outbox();
        let clients = Connections::default();
        let ticket = outbox.park(Bytes::from(vec![1u8; 64])).unwrap();
        let err = pull(&clients, at, &ticket, TensorAssembler::new(DType::F32, vec![8], 32).unwrap(), T).unwrap_err();
        assert!(err.contains("sent 64 bytes for a 32-byte output"), "{err}");

        // Not the magic: the connection is closed without an answer.
        let mut raw = TcpStream::connect(at).unwrap();
        raw.set_read_timeout(Some(T)).unwrap();
        raw.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut buf = [0u8; 1];
        let closed = raw.read(&mut buf);
        assert!(
            matches!(&closed, Ok(0)) || closed.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "{closed:?}"
        );

        // A stand-in peer that sends half the bytes and closes.
        let fake = TcpListener::bind("127.0.0.1:0").unwrap();
        let fake_at = fake.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let (mut c, _) = fake.accept().unwrap();
            let mut hello = [0u8; 8 + 16];
            c.read_exact(&mut hello).unwrap();
            c.write_all(&answer(HERE, 4096)).unwrap();
            c.write_all(&[0u8; 2048]).unwrap();
        });
        let asm = TensorAssembler::new(DType::F32, vec![1024], 4096).unwrap();
        let err = pull(&clients, fake_at, &[0; 16], asm, T).unwrap_err();
        assert!(err.contains("closed after 2048 of 4096 bytes"), "{err}");
        peer.join().unwrap();

        // Nobody listening (the listener is dropped at once): says it
        // cannot reach the port.
        let gone = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let asm = TensorAssembler::new(DType::F32, vec![1], 4).unwrap();
        let err = pull(&clients, gone, &[0; 16], asm, T).unwrap_err();
        assert!(err.contains("cannot reach its bulk port"), "{err}");
    }

    #[test]
    fn a_silent_connection_is_closed_after_the_handshake_time_and_the_outbox_is_bounded() {
        let (_outbox, at) = local_outbox();
        let mut silent = TcpStream::connect(at).unwrap();
        silent.set_read_timeout(Some(HANDSHAKE * 3)).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 1];
        assert_eq!(silent.read(&mut buf).unwrap(), 0, "closed by the task");
        assert!(started.elapsed() >= HANDSHAKE - Duration::from_millis(100));

        let outbox = Outbox::default();
        for _ in 0..MAX_PARKED {
            outbox.park(Bytes::new()).unwrap();
        }
        assert!(outbox.park(Bytes::new()).is_none(), "full: the caller streams instead");
    }
}
