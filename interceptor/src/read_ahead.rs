//! A read-ahead buffer under the TLS of the upstream connections.
//!
//! rustls asks its socket for at most 4 KiB more than it holds, so a
//! 208 KB list came in over about fifty reads, one system call each (strace:
//! 95 `recvfrom` a request against nginx's 48 `read`). Below rustls, one
//! read takes what the socket holds, up to [`CAPACITY`], and rustls's reads
//! are served from it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Two TLS records of the largest size; the apiserver writes records of
/// about 4 KiB, so one read takes up to eight of those.
pub const CAPACITY: usize = 32 * 1024;

/// A socket whose reads go through a buffer of [`CAPACITY`] bytes,
/// allocated on the first read that needs it and kept while the
/// connection lives.
pub struct ReadAhead<T> {
    inner: T,
    buffer: Box<[u8]>,
    /// The bytes read and not yet handed on: `buffer[start..end]`.
    start: usize,
    end: usize,
}

impl<T> ReadAhead<T> {
    pub fn new(inner: T) -> ReadAhead<T> {
        ReadAhead {
            inner,
            buffer: Box::default(),
            start: 0,
            end: 0,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadAhead<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start == this.end {
            // A reader that asks for as much as the buffer holds gains
            // nothing from it.
            if out.remaining() >= CAPACITY {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            if this.buffer.is_empty() {
                this.buffer = vec![0; CAPACITY].into_boxed_slice();
            }
            let mut fill = ReadBuf::new(&mut this.buffer);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut fill))?;
            this.start = 0;
            this.end = fill.filled().len();
        }
        let taken = out.remaining().min(this.end - this.start);
        out.put_slice(&this.buffer[this.start..this.start + taken]);
        this.start += taken;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadAhead<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, bytes)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, slices)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Bytes come out in order and whole, whatever the sizes of the reads
    /// that ask for them (smaller than the buffer, or as large).
    #[tokio::test]
    async fn hands_on_every_byte_in_order() {
        let sent: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (mut writer, reader) = tokio::io::duplex(CAPACITY / 3);
        let sending = sent.clone();
        let writing = tokio::spawn(async move {
            writer.write_all(&sending).await.unwrap();
        });
        let mut reader = ReadAhead::new(reader);
        let mut received = Vec::new();
        let sizes = [1, 4096, 4118, 17, CAPACITY, CAPACITY + 5, 100];
        for round in 0.. {
            let mut chunk = vec![0; sizes[round % sizes.len()]];
            let n = reader.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            received.extend_from_slice(&chunk[..n]);
        }
        writing.await.unwrap();
        assert_eq!(received.len(), sent.len());
        assert!(
            received == sent,
            "the bytes came out changed or out of order"
        );
    }

    /// Writes pass through, and the end of the stream is seen.
    #[tokio::test]
    async fn writes_pass_through() {
        let (near, far) = tokio::io::duplex(1024);
        let mut near = ReadAhead::new(near);
        let mut far = ReadAhead::new(far);
        near.write_all(b"ping").await.unwrap();
        near.shutdown().await.unwrap();
        let mut got = Vec::new();
        far.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping");
    }
}
