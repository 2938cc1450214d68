//! Capturing a program's stdout and stderr: every write is kept (up to a
//! cap) and, when someone is following, handed to the follower as it
//! happens, on the program's own thread: there is no queue between a guest
//! and its follower that a fast writer could grow.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Which stream a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// Standard output.
    Stdout = 0,
    /// Standard error.
    Stderr = 1,
}

/// Who sees a program's output as it is written: a hosted program's log, a
/// terminal. Called on the program's thread for every write, so it must be
/// quick and bound what it keeps.
pub trait OutputFollower: Send + Sync {
    /// `bytes` were written to `stream`.
    fn output(&self, stream: StreamKind, bytes: &[u8]);
}

#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: usize,
}

/// One captured stream of a program.
#[derive(Clone)]
pub struct OutputSink {
    kind: StreamKind,
    cap: usize,
    captured: Arc<Mutex<Captured>>,
    follow: Option<Arc<dyn OutputFollower>>,
}

impl std::fmt::Debug for OutputSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputSink").field("kind", &self.kind).field("cap", &self.cap).finish_non_exhaustive()
    }
}

impl OutputSink {
    /// A sink that keeps the first `cap` bytes and hands every write to `follow`.
    pub fn new(kind: StreamKind, cap: usize, follow: Option<Arc<dyn OutputFollower>>) -> Self {
        OutputSink { kind, cap, captured: Arc::default(), follow }
    }

    /// The captured bytes, with a note if some were dropped past the cap.
    pub fn contents(&self) -> Vec<u8> {
        let c = self.captured.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = c.bytes.clone();
        if c.dropped > 0 {
            out.extend_from_slice(format!("\n[weft: {} more bytes of output were not kept]\n", c.dropped).as_bytes());
        }
        out
    }

    fn write(&self, buf: &[u8]) {
        {
            let mut c = self.captured.lock().unwrap_or_else(|p| p.into_inner());
            let room = self.cap.saturating_sub(c.bytes.len());
            let keep = room.min(buf.len());
            c.bytes.extend_from_slice(&buf[..keep]);
            c.dropped += buf.len() - keep;
        }
        if let Some(follower) = &self.follow {
            follower.output(self.kind, buf);
        }
    }
}

impl IsTerminal for OutputSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputSink {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for OutputSink {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
