//! Transports: the byte streams a connection can run over. A new transport (TLS, say) is a
//! new [`Transport`] implementation; the connection loop and its handlers stay the same.

use std::io;

use bytes::BytesMut;
use tokio::io::AsyncWrite;

/// A byte stream that can be split into borrowed read and write halves, so one task can
/// wait on both at once without locks.
pub trait Transport: Send + 'static {
    /// The read half.
    type Reader<'a>: ReadReady + Send
    where
        Self: 'a;
    /// The write half.
    type Writer<'a>: AsyncWrite + Unpin + Send
    where
        Self: 'a;
    /// Splits the stream.
    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>);
}

/// A read half that can wait for data without a buffer, so an idle connection holds no
/// read buffer at all: it is allocated when bytes arrive and released once they are
/// decoded.
pub trait ReadReady {
    /// Ready when a read would not block (data, EOF or an error). It keeps one waker
    /// slot in the socket's registration: no waiter list to join on every turn.
    fn poll_read_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>>;
    /// Reads what is available into `buf`'s spare capacity, without waiting.
    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize>;
}

macro_rules! transport {
    ($stream:ty, $module:ident) => {
        impl Transport for $stream {
            type Reader<'a> = tokio::net::$module::ReadHalf<'a>;
            type Writer<'a> = tokio::net::$module::WriteHalf<'a>;
            fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>) {
                self.split()
            }
        }

        impl ReadReady for tokio::net::$module::ReadHalf<'_> {
            fn poll_read_ready(
                &mut self,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                self.as_ref().poll_read_ready(cx)
            }
            fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
                tokio::net::$module::ReadHalf::try_read_buf(self, buf)
            }
        }
    };
}

transport!(tokio::net::TcpStream, tcp);
transport!(tokio::net::UnixStream, unix);

/// A TLS connection. rustls decrypts into its own buffers, so there is no readiness
/// without a read: waiting for data reads the plaintext into a small buffer of the
/// reader's, which [`ReadReady::try_read_buf`] then hands over. An idle TLS connection
/// therefore holds rustls's buffers and this one (released when empty), unlike a plain
/// one, which holds none.
pub type TlsStream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

impl Transport for TlsStream {
    type Reader<'a> = TlsReader<'a>;
    type Writer<'a> = tokio::io::WriteHalf<&'a mut TlsStream>;
    fn halves(&mut self) -> (TlsReader<'_>, Self::Writer<'_>) {
        // One task uses both halves, so the split's lock is never contended.
        let (read, write) = tokio::io::split(self);
        (
            TlsReader {
                read,
                pending: BytesMut::new(),
                eof: false,
            },
            write,
        )
    }
}

/// The read half of a [`TlsStream`], with the plaintext read while waiting.
#[derive(Debug)]
pub struct TlsReader<'a> {
    read: tokio::io::ReadHalf<&'a mut TlsStream>,
    pending: BytesMut,
    eof: bool,
}

/// Plaintext read per wait: one TLS record.
const TLS_READ: usize = 16 * 1024;

impl ReadReady for TlsReader<'_> {
    fn poll_read_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        use std::task::Poll;
        if !self.pending.is_empty() || self.eof {
            return Poll::Ready(Ok(()));
        }
        self.pending.reserve(TLS_READ);
        match tokio_util::io::poll_read_buf(
            std::pin::Pin::new(&mut self.read),
            cx,
            &mut self.pending,
        ) {
            Poll::Ready(Ok(0)) => {
                self.eof = true;
                self.pending = BytesMut::new();
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if self.pending.is_empty() {
                    self.pending = BytesMut::new();
                }
                Poll::Pending
            }
        }
    }

    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        if self.pending.is_empty() {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = self.pending.len();
        if buf.is_empty() {
            // The connection's buffer becomes this one: no copy.
            std::mem::swap(buf, &mut self.pending);
        } else {
            buf.extend_from_slice(&self.pending);
            self.pending.clear();
        }
        Ok(n)
    }
}
