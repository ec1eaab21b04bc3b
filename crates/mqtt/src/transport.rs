//! The byte pipes MQTT arrives on: plain TCP, TLS, and WebSocket (binary
//! frames, sub-protocol `mqtt`, as MQTT.js in a browser speaks it).

use std::io;

use axum::extract::ws::{Message, WebSocket};
use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
