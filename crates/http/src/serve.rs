//! The HTTP server loop, with the bounds every connection is held to
//! (`[http]` in the configuration):
//!
//! - `http.header_timeout`: a connection waiting for a request — new, or
//!   idle between keep-alive requests — is closed once this passes without
//!   a whole request line and headers (hyper's header read timeout), so
//!   half-sent headers and idle connections hold nothing for long;
//! - `http.body_timeout`: a request's body must arrive within this time of
//!   the request ([`BodyDeadline`]); a stalled upload gets 408;
//! - `http.max_connections_per_client`: connections open at once from one
//!   address; one more is answered 503 and closed.
//!
//! hyper answers requests it cannot parse itself (400; 414 for a URL over
//! its limit; 431 for headers over it) with an empty body; [`JsonErrors`]
//! gives those answers perch's JSON error body as they are written.
//! Requests whose Content-Encoding perch cannot read get 415 with that body
//! too ([`known_encodings`]).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use config::HttpConfig;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

use super::error::{automatic_body, ErrorBody};
use super::extract::BodyDeadline;
use super::{ApiError, SharedState};

/// After shutdown is asked for, how long requests in progress may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections over `http.max_connections_per_client` being answered 503
/// at once, at most.
const MAX_REFUSING: usize = 64;

/// Serves `router` on `listener` until `shutdown` turns true, then lets
/// requests in progress finish (at most [`DRAIN_TIMEOUT`]). Each request
/// carries its client's `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cfg: &HttpConfig,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let clients = Arc::new(Clients::default());
    let refusing = Arc::new(AtomicUsize::new(0));
    let limit = cfg.max_connections_per_client;
    let header_timeout = cfg.header_timeout.std();
    // Every connection task holds a sender; all dropped: all done.
    let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = base::stopping(&mut shutdown) => break,
        };
        let Some(slot) = Clients::take(&clients, peer.ip(), limit) else {
            // Answered while few are; a flood is dropped unanswered.
            if refusing.load(Ordering::Relaxed) < MAX_REFUSING {
                refusing.fetch_add(1, Ordering::Relaxed);
                let refusing = refusing.clone();
                tokio::spawn(async move {
                    refuse(stream, limit).await;
                    refusing.fetch_sub(1, Ordering::Relaxed);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service =
            router
                .clone()
                .map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req.map(axum::body::Body::new)
                });
        let service = hyper_util::service::TowerToHyperService::new(service);
        let io = TokioIo::new(JsonErrors::new(stream, slot));
        let mut stop = shutdown.clone();
        let open = open_tx.clone();
        tokio::spawn(async move {
            let _open = open;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true);
            let conn = builder.serve_connection(io, service).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended");
                    }
                    return;
                }
                _ = base::stopping(&mut stop) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    drop(listener);
    drop(open_tx);
    if tokio::time::timeout(DRAIN_TIMEOUT, open_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still in progress at shutdown were cut off");
    }
    Ok(())
}

/// Answers a connection over `http.max_connections_per_client` with 503
/// and closes it.
async fn refuse(mut stream: TcpStream, limit: usize) {
    let message = format!(
        "too many connections from this address (http.max_connections_per_client = {limit})"
    );
    let body = automatic_body(StatusCode::SERVICE_UNAVAILABLE, &message);
    let mut answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(&answer).await?;
        stream.shutdown().await?;
        // Read what the client sent meanwhile: closing with unread input
        // resets the connection, and the client might miss the answer.
        let mut sink = [0u8; 4096];
        while tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await? > 0 {}
        io::Result::Ok(())
    })
    .await;
}

/// Connections open per client address.
#[derive(Default)]
struct Clients {
    open: Mutex<HashMap<IpAddr, usize>>,
    /// When a refusal was last logged: a flood logs a line a minute.
    warned: Mutex<Option<std::time::Instant>>,
}

/// One connection counted against its address; uncounted on drop.
struct Slot {
    clients: Arc<Clients>,
    ip: IpAddr,
}

impl Clients {
    fn take(clients: &Arc<Clients>, ip: IpAddr, limit: usize) -> Option<Slot> {
        {
            let mut open = clients.open.lock().unwrap_or_else(PoisonError::into_inner);
            let n = open.entry(ip).or_insert(0);
            if *n < limit {
                *n += 1;
                return Some(Slot {
                    clients: clients.clone(),
                    ip,
                });
            }
        }
        let mut warned = clients
            .warned
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            *warned = Some(std::time::Instant::now());
            tracing::warn!(%ip, limit, "HTTP connection refused: too many from this address (http.max_connections_per_client)");
        }
        None
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .clients
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A client connection that rewrites hyper's own answers to requests it
/// cannot parse — a head with `content-length: 0` and status 400, 414 or
/// 431, written alone — into answers with perch's JSON error body. Holds
/// the connection's [`Slot`].
struct JsonErrors<S> {
    inner: S,
    /// A rewritten answer, and how much of it is written.
    pending: Vec<u8>,
    written: usize,
    _slot: Slot,
}

impl<S> JsonErrors<S> {
    fn new(inner: S, slot: Slot) -> JsonErrors<S> {
        JsonErrors {
            inner,
            pending: Vec::new(),
            written: 0,
            _slot: slot,
        }
    }
}

impl<S: AsyncWrite + Unpin> JsonErrors<S> {
    /// Writes what is pending of a rewritten answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = std::task::ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        Poll::Ready(Ok(()))
    }
}

/// hyper's answer to a request it could not parse, with a JSON body, if
/// `head` is one.
fn rewrite_automatic(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| head.strip_prefix(b"HTTP/1.0 "))?;
    let (status, message) = match rest.get(..4)? {
        b"400 " => (StatusCode::BAD_REQUEST, "malformed HTTP request"),
        b"414 " => (
            StatusCode::URI_TOO_LONG,
            "the request's URL is too long (at most 64 KiB)",
        ),
        b"431 " => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "the request's headers are too large (at most 400 KiB, 100 headers)",
        ),
        _ => return None,
    };
    // The head alone, ending the write, and saying there is no body.
    if !head.ends_with(b"\r\n\r\n") || head.windows(4).filter(|w| w == b"\r\n\r\n").count() != 1 {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.trim_end().split("\r\n");
    lines.next()?;
    let mut kept = Vec::new();
    let mut empty = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        if name.eq_ignore_ascii_case("content-length") {
            empty = value.trim() == "0";
        } else if !name.eq_ignore_ascii_case("connection") {
            kept.push(line);
        }
    }
    if !empty {
        return None;
    }
    let body = automatic_body(status, message);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    for line in kept {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        std::task::ready!(this.poll_pending(cx))?;
        if let Some(answer) = rewrite_automatic(buf) {
            this.pending = answer;
            this.written = 0;
            // Written by the next write, flush or shutdown if not now.
            if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then writes a head in one buffer, which is what
    // `rewrite_automatic` looks at.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// Sets every request's [`BodyDeadline`] (`http.body_timeout` from now).
pub(crate) async fn request_limits(
    State(app): State<SharedState>,
    mut req: Request,
    next: Next,
) -> Response {
    let limit = app.config.http.body_timeout.std();
    req.extensions_mut().insert(BodyDeadline {
        at: tokio::time::Instant::now() + limit,
        limit,
    });
    next.run(req).await
}

/// 415 with a JSON body (in the shape of the route's API) for a body in an
/// encoding perch cannot read; gzip and identity pass on to decompression.
pub(crate) async fn known_encodings(req: Request, next: Next) -> Result<Response, ApiError> {
    let Some(encoding) = req.headers().get(header::CONTENT_ENCODING) else {
        return Ok(next.run(req).await);
    };
    // What tower-http's request decompression reads.
    if matches!(encoding.as_bytes(), b"gzip" | b"identity") {
        return Ok(next.run(req).await);
    }
    let shown = String::from_utf8_lossy(encoding.as_bytes()).into_owned();
    let message = format!(
        "unsupported Content-Encoding {:?}: send gzip or an unencoded body",
        super::error::excerpt(&shown, 64)
    );
    let mut response = axum::response::IntoResponse::into_response(
        ApiError::unsupported_encoding(message).with_body(ErrorBody::for_path(req.uri().path())),
    );
    response.headers_mut().insert(
        header::ACCEPT_ENCODING,
        axum::http::HeaderValue::from_static("gzip"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_own_answers_get_a_json_body() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite_automatic(head).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("content-type: application/json"));
        assert!(head.contains("date: Thu"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["status"], "error");
        assert!(v["error"]
            .as_str()
            .unwrap()
            .contains("headers are too large"));
        // Answers with a body, other statuses, and bodies are left alone.
        assert!(
            rewrite_automatic(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n").is_none()
        );
        assert!(rewrite_automatic(
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"
        )
        .is_none());
        assert!(
            rewrite_automatic(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none()
        );
        assert!(rewrite_automatic(b"{\"a\":1}").is_none());
        assert!(
            rewrite_automatic(b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n").is_some()
        );
    }
}
