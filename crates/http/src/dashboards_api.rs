//! Saved dashboards (viewers read, admins save), the recent warnings and
//! errors for the Overview, and Settings' effective settings and backup.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::{ApiError, SharedState};
use dashboards::DashboardError;

pub fn reader_routes() -> Router<SharedState> {
    Router::new()
        .route("/api/v1/dashboards", get(list))
        .route("/api/v1/dashboards/{name}", get(get_one))
        .route("/api/v1/events", get(events))
}

pub fn admin_routes() -> Router<SharedState> {
    Router::new()
        .route(
            "/api/v1/dashboards/{name}",
            axum::routing::put(save).delete(remove),
        )
        .route("/api/v1/settings", get(settings))
        .route("/api/v1/backup", get(backup))
}

fn dashboard_error(e: DashboardError) -> Response {
    match e {
        DashboardError::Db(_) => ApiError::internal(e.to_string()).into_response(),
        _ => ApiError::bad_data(e.to_string()).into_response(),
    }
}

fn not_found(name: &str) -> Response {
    ApiError::not_found(format!("no dashboard {name:?}")).into_response()
}

async fn list(State(app): State<SharedState>) -> Response {
    match app.dashboards.list() {
        Ok(l) => Json(l).into_response(),
        Err(e) => dashboard_error(e),
    }
}

async fn get_one(State(app): State<SharedState>, Path(name): Path<String>) -> Response {
    match app.dashboards.get(&name) {
        Ok(Some(d)) => Json(d).into_response(),
        Ok(None) => not_found(&name),
        Err(e) => dashboard_error(e),
    }
}

async fn save(
    State(app): State<SharedState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    match app.dashboards.put(&name, &body, app.storage.now_ms()) {
        Ok(()) => match app.dashboards.get(&name) {
            Ok(Some(d)) => Json(d).into_response(),
            Ok(None) => not_found(&name),
            Err(e) => dashboard_error(e),
        },
        Err(e) => dashboard_error(e),
    }
}

async fn remove(State(app): State<SharedState>, Path(name): Path<String>) -> Response {
    match app.dashboards.delete(&name) {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => not_found(&name),
        Err(e) => dashboard_error(e),
    }
}

async fn events() -> Response {
    Json(base::events::recent()).into_response()
}

/// The settings in effect; camera passwords stay out (cameras have their
/// own API, which never returns them).
async fn settings(State(app): State<SharedState>) -> Response {
    let c = &app.config;
    Json(json!({
        "data_dir": c.data_dir,
        "http": c.http,
        "mqtt": c.mqtt,
        "storage": c.storage,
        "query": c.query,
        "search": c.search,
        "config_note": "edit /etc/perch/perch.toml (or the file given to --config) and restart perch to change these",
    }))
    .into_response()
}

/// `GET /api/v1/backup`: a consistent tar of the data directory
/// (storage::backup), streamed with its exact length so the browser can
/// show progress. Restore with `perch restore FILE --data-dir NEW_DIR`.
async fn backup(State(app): State<SharedState>) -> Response {
    let storage = app.storage.clone();
    let plan = match tokio::task::spawn_blocking(move || storage.prepare_backup()).await {
        Ok(Ok(plan)) => plan,
        Ok(Err(e)) => {
            return ApiError::internal(format!("cannot stage the backup: {e}")).into_response()
        }
        Err(e) => return ApiError::internal(e.to_string()).into_response(),
    };
    let total = plan.total_bytes();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let writer = ChannelWriter {
            tx: tx.clone(),
            runtime,
        };
        let out = std::io::BufWriter::with_capacity(256 * 1024, writer);
        if let Err(e) = plan.write_tar(out) {
            tracing::warn!(error = %e, "backup download ended early");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let stream = tokio_stream_from(rx);
    let name = format!(
        "perch-backup-{}.tar",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    );
    let mut r = axum::body::Body::from_stream(stream).into_response();
    let h = r.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/x-tar"),
    );
    h.insert(axum::http::header::CONTENT_LENGTH, total.into());
    if let Ok(v) = format!("attachment; filename=\"{name}\"").parse() {
        h.insert(axum::http::header::CONTENT_DISPOSITION, v);
    }
    r
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A client that has read nothing for this long is given up on: its
/// staged links would otherwise pin deleted block files on disk.
const STALLED_CLIENT: std::time::Duration = std::time::Duration::from_secs(60);

/// A blocking writer into the response body; a client that went away or
/// stopped reading ends the backup with an error.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    runtime: tokio::runtime::Handle,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let chunk = Ok(bytes::Bytes::copy_from_slice(buf));
        let sent = self
            .runtime
            .block_on(tokio::time::timeout(STALLED_CLIENT, self.tx.send(chunk)));
        match sent {
            Ok(Ok(())) => Ok(buf.len()),
            Ok(Err(_)) => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "client went away",
            )),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "client stopped reading",
            )),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
