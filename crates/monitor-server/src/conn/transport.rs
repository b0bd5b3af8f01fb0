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
    fn poll_read_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>>;
    /// Reads what is available into `buf`'s spare capacity, without waiting.
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize>;
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
                &self,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                self.as_ref().poll_read_ready(cx)
            }
            fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
                tokio::net::$module::ReadHalf::try_read_buf(self, buf)
            }
        }
    };
}

transport!(tokio::net::TcpStream, tcp);
transport!(tokio::net::UnixStream, unix);
