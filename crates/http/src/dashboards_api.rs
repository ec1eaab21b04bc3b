//! Saved dashboards (viewers read, admins save), the recent warnings and
//! errors for the Overview, and Settings' effective settings and backup.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::extract::{Body, Path};
use super::wire::SortedKeys;
use super::{ApiError, SharedState};
use dashboards::DashboardSummary;

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

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("no dashboard {name:?}"))
}

async fn list(State(app): State<SharedState>) -> Result<Json<Vec<DashboardSummary>>, ApiError> {
    Ok(Json(app.dashboards.list()?))
}

async fn get_one(
    State(app): State<SharedState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    app.dashboards
        .get(&name)?
        .map(Json)
        .ok_or_else(|| not_found(&name))
}

/// The dashboard is a document of the browser's: the store checks it is a
/// JSON object and keeps it as it came.
async fn save(
    State(app): State<SharedState>,
    Path(name): Path<String>,
    Body(body): Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    app.dashboards.put(&name, &body, app.storage.now_ms())?;
    app.dashboards
        .get(&name)?
        .map(Json)
        .ok_or_else(|| not_found(&name))
}

async fn remove(
    State(app): State<SharedState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !app.dashboards.delete(&name)? {
        return Err(not_found(&name));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn events() -> Json<Vec<base::events::RecentEvent>> {
    Json(base::events::recent())
}

/// The settings in effect; camera passwords stay out (cameras have their
/// own API, which never returns them).
#[derive(Serialize)]
struct Settings<'a> {
    config_note: &'static str,
    data_dir: &'a std::path::Path,
    http: &'a config::HttpConfig,
    mqtt: &'a config::MqttConfig,
    query: &'a config::QueryConfig,
    search: &'a config::SearchConfig,
    storage: &'a config::StorageConfig,
}

async fn settings(State(app): State<SharedState>) -> Response {
    let c = &app.config;
    Json(SortedKeys(Settings {
        config_note: "edit /etc/perch/perch.toml (or the file given to --config) and restart perch to change these",
        data_dir: &c.data_dir,
        http: &c.http,
        mqtt: &c.mqtt,
        query: &c.query,
        search: &c.search,
        storage: &c.storage,
    }))
    .into_response()
}

/// `GET /api/v1/backup`: a consistent tar of the data directory
/// (storage::backup), streamed with its exact length so the browser can
/// show progress. Restore with `perch restore FILE --data-dir NEW_DIR`.
async fn backup(State(app): State<SharedState>) -> Result<Response, ApiError> {
    let storage = app.storage.clone();
    // Whatever went wrong, the download cannot start: a fault here.
    let plan = tokio::task::spawn_blocking(move || storage.prepare_backup())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(format!("cannot stage the backup: {e}")))?;
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
    Ok(r)
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
