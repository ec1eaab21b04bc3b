//! The byte pipes MQTT arrives on: plain TCP, TLS, and WebSocket (binary
//! frames, sub-protocol `mqtt`, as MQTT.js in a browser speaks it), and the
//! WebSocket listener's guard: its upgrade request must arrive within
//! `mqtt.connect_timeout`, and its connections count against their address
//! (`mqtt.max_connections_per_client`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::ws::{Message, WebSocket};
use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::connection::ClientSlot;
use crate::Shared;

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub enum Transport {
    Stream(Box<dyn Stream>),
    WebSocket(Box<WebSocket>),
}

impl Transport {
    /// Appends what arrives to `buf`; 0 means the peer closed.
    pub async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Transport::Stream(s) => s.read_buf(buf).await,
            Transport::WebSocket(ws) => loop {
                match ws.next().await {
                    None | Some(Ok(Message::Close(_))) => return Ok(0),
                    Some(Ok(Message::Binary(b))) => {
                        buf.extend_from_slice(&b);
                        return Ok(b.len());
                    }
                    // Pings are answered by the WebSocket layer.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Text(_))) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "MQTT over WebSocket uses binary frames, got text",
                        ))
                    }
                    Some(Err(e)) => return Err(io::Error::other(e)),
                }
            },
        }
    }

    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Transport::Stream(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Transport::WebSocket(ws) => ws
                .send(Message::Binary(bytes::Bytes::copy_from_slice(data)))
                .await
                .map_err(io::Error::other),
        }
    }

    pub async fn close(&mut self) {
        match self {
            Transport::Stream(s) => {
                let _ = s.shutdown().await;
            }
            Transport::WebSocket(ws) => {
                let _ = ws.send(Message::Close(None)).await;
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Transport::Stream(_) => "tcp",
            Transport::WebSocket(_) => "ws",
        }
    }
}

/// The WebSocket listener: each connection holds its address's slot until
/// it closes, and must send a whole upgrade request (up to its blank line)
/// within `mqtt.connect_timeout`; after that its CONNECT is timed as any.
pub(crate) struct WsListener {
    pub(crate) inner: TcpListener,
    pub(crate) shared: Arc<Shared>,
}

/// The peer of a WebSocket connection (`ConnectInfo<Peer>`).
#[derive(Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, WsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, WsListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

impl axum::serve::Listener for WsListener {
    type Io = HeadWithin<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(slot) = ClientSlot::take(&self.shared, peer.ip()) else {
                continue;
            };
            let limit = self.shared.config.connect_timeout.std();
            return (HeadWithin::new(stream, limit, slot), peer);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A stream whose first bytes, up to the end of an HTTP request head
/// (`\r\n\r\n`), must arrive within a time; reading fails after it.
pub(crate) struct HeadWithin<S> {
    inner: S,
    /// Until the head is whole.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// How much of `\r\n\r\n` the bytes so far end with.
    matched: usize,
    _slot: ClientSlot,
}

impl<S> HeadWithin<S> {
    fn new(inner: S, limit: std::time::Duration, slot: ClientSlot) -> HeadWithin<S> {
        HeadWithin {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
            matched: 0,
            _slot: slot,
        }
    }

    fn saw(&mut self, bytes: &[u8]) {
        const END: &[u8] = b"\r\n\r\n";
        for &b in bytes {
            self.matched = if b == END[self.matched] {
                self.matched + 1
            } else if b == b'\r' {
                1
            } else {
                0
            };
            if self.matched == END.len() {
                self.deadline = None;
                return;
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadWithin<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.deadline.is_none() {
            return read;
        }
        match read {
            Poll::Ready(Ok(())) => {
                let new = buf.filled()[before..].to_vec();
                this.saw(&new);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no whole upgrade request within mqtt.connect_timeout",
                ))),
                _ => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadWithin<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
