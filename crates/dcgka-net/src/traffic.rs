//! Bytes on the wire: every TCP connection of every node (and mailbox) of this process
//! counts what it writes and reads, so that a benchmark can report the network engine's
//! real cost (Noise, yamux, multistream-select, gossipsub and its control messages,
//! identify, ping, sync and the envelopes themselves), not only the envelopes' sizes.
//!
//! The counts are TCP payload bytes: TCP/IP headers and acknowledgments are not in them.
//! They are process-wide (one pair of counters for all nodes); read them before and after
//! what is measured and take the difference.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use libp2p::futures::{AsyncRead, AsyncWrite};

static WRITTEN: AtomicU64 = AtomicU64::new(0);
static READ: AtomicU64 = AtomicU64::new(0);

/// What this process's nodes wrote to and read from their TCP connections since it
/// started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpBytes {
    /// Bytes written (sent).
    pub written: u64,
    /// Bytes read (received).
    pub read: u64,
}

/// The counts so far.
pub fn tcp_bytes() -> TcpBytes {
    TcpBytes { written: WRITTEN.load(Ordering::Relaxed), read: READ.load(Ordering::Relaxed) }
}

/// A TCP stream that counts its bytes.
#[derive(Debug)]
pub(crate) struct Counted<S>(pub(crate) S);

fn count(counter: &AtomicU64, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
    if let Poll::Ready(Ok(n)) = &r {
        counter.fetch_add(*n as u64, Ordering::Relaxed);
    }
    r
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        count(&READ, Pin::new(&mut self.0).poll_read(cx, buf))
    }

    fn poll_read_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        count(&READ, Pin::new(&mut self.0).poll_read_vectored(cx, bufs))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        count(&WRITTEN, Pin::new(&mut self.0).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        count(&WRITTEN, Pin::new(&mut self.0).poll_write_vectored(cx, bufs))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use libp2p::futures::io::Cursor;

    #[test]
    fn a_counted_stream_counts_what_it_writes_and_reads() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let before = tcp_bytes();
        let mut s = Counted(Cursor::new(vec![0u8; 10]));
        let mut buf = [0u8; 4];
        assert!(matches!(Pin::new(&mut s).poll_read(&mut cx, &mut buf), Poll::Ready(Ok(4))));
        assert!(matches!(Pin::new(&mut s).poll_write(&mut cx, b"abcdefg"), Poll::Ready(Ok(7))));
        let after = tcp_bytes();
        // Other tests of this process may count too: at least these bytes.
        assert!(after.read - before.read >= 4 && after.written - before.written >= 7, "{before:?} {after:?}");
    }
}
