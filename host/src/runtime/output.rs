//! Capturing a program's stdout and stderr: every write is kept (up to a
//! cap) and, when someone is following, forwarded as it happens.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc::UnboundedSender;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Which stream a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// Standard output.
    Stdout = 0,
    /// Standard error.
    Stderr = 1,
}

/// A chunk of a program's output, as it was written.
#[derive(Clone, Debug)]
pub struct OutputChunk {
    /// The stream.
    pub stream: StreamKind,
    /// The bytes.
    pub bytes: Bytes,
}

#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: usize,
}

/// One captured stream of a program.
#[derive(Clone, Debug)]
pub struct OutputSink {
    kind: StreamKind,
    cap: usize,
    captured: Arc<Mutex<Captured>>,
    follow: Option<UnboundedSender<OutputChunk>>,
}

impl OutputSink {
    /// A sink that keeps the first `cap` bytes and forwards every chunk to `follow`.
    pub fn new(kind: StreamKind, cap: usize, follow: Option<UnboundedSender<OutputChunk>>) -> Self {
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
        if let Some(tx) = &self.follow {
            // A follower that went away is not the program's problem.
            let _ = tx.send(OutputChunk { stream: self.kind, bytes: Bytes::copy_from_slice(buf) });
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
