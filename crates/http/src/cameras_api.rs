//! Cameras over HTTP: definitions and status, the live view (fMP4 over
//! WebSocket for Media Source Extensions), HLS, and snapshots.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::http::Method;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::Json;
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::auth::{self, Need};
use super::{ApiError, Principal, SharedState};
use cameras::{CameraError, Cameras, LiveEvent, StreamInfo};
use config::CameraConfig;

/// The camera routes, behind [`guard`].
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/api/v1/cameras", get(list).post(create))
        .route(
            "/api/v1/cameras/{name}",
            get(get_one).put(update).delete(delete),
        )
        .route("/api/v1/cameras/{name}/live", get(live))
        .route("/api/v1/cameras/{name}/hls/{file}", get(hls))
        .route("/api/v1/cameras/{name}/snapshots", get(snapshots))
        .route(
            "/api/v1/cameras/{name}/snapshots/{file}",
            get(snapshot_file),
        )
        .route("/api/v1/cameras/{name}/latest.jpg", get(latest))
        .route("/api/v1/cameras/{name}/snapshot", post(take))
        .route_layer(axum::middleware::from_fn(guard))
}

/// Who may do what with cameras ([`auth::refusal`]): adding, changing and
/// removing cameras is an admin's; status, video and snapshots (taking one
/// included) a viewer's too.
async fn guard(Extension(who): Extension<Principal>, req: Request, next: Next) -> Response {
    let need = match *req.method() {
        Method::PUT | Method::DELETE => Need::Manage,
        Method::POST if req.uri().path() == "/api/v1/cameras" => Need::Manage,
        _ => Need::Watch,
    };
    if let Some(denied) = auth::refusal(&who, need) {
        return denied;
    }
    next.run(req).await
}

fn cameras(app: &SharedState) -> Result<&Arc<Cameras>, ApiError> {
    app.cameras
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("cameras are not running"))
}

fn camera_error(e: CameraError) -> Response {
    let (status, kind) = match &e {
        CameraError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        CameraError::Exists(_) | CameraError::FromConfig(_) => (StatusCode::CONFLICT, "conflict"),
        CameraError::Invalid(_) => (StatusCode::BAD_REQUEST, "bad_data"),
        CameraError::NoKeyframe(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    ApiError {
        status,
        error_type: kind,
        message: e.to_string(),
    }
    .into_response()
}

macro_rules! try_api {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return e.into_response(),
        }
    };
}

macro_rules! try_cam {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return camera_error(e),
        }
    };
}

pub async fn list(State(app): State<SharedState>) -> Response {
    let c = try_api!(cameras(&app));
    Json(json!({"status": "success", "data": c.list()})).into_response()
}

async fn get_one(State(app): State<SharedState>, Path(name): Path<String>) -> Response {
    let c = try_api!(cameras(&app));
    Json(json!({"status": "success", "data": try_cam!(c.get(&name))})).into_response()
}

fn parse_config(body: &Bytes) -> Result<CameraConfig, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_data(format!("invalid camera: {e}")))
}

pub async fn create(State(app): State<SharedState>, body: Bytes) -> Response {
    let c = try_api!(cameras(&app));
    let config = match parse_config(&body) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let view = try_cam!(c.create(config).await);
    (
        StatusCode::CREATED,
        Json(json!({"status": "success", "data": view})),
    )
        .into_response()
}

pub async fn update(
    State(app): State<SharedState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let c = try_api!(cameras(&app));
    // The name comes from the path; the body may leave it out.
    let mut value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return ApiError::bad_data(format!("invalid camera: {e}")).into_response(),
    };
    if let Some(o) = value.as_object_mut() {
        o.insert("name".into(), json!(name));
    }
    let config: CameraConfig = match serde_json::from_value(value) {
        Ok(c) => c,
        Err(e) => return ApiError::bad_data(format!("invalid camera: {e}")).into_response(),
    };
    let view = try_cam!(c.update(&name, config).await);
    Json(json!({"status": "success", "data": view})).into_response()
}

pub async fn delete(State(app): State<SharedState>, Path(name): Path<String>) -> Response {
    let c = try_api!(cameras(&app));
    try_cam!(c.delete(&name).await);
    StatusCode::NO_CONTENT.into_response()
}

/// The live view: a text message describing the stream (MIME type with the
/// codec, size), the init segment, then one fMP4 fragment per frame —
/// starting with the current GOP, so a picture shows at once. A new text
/// message and init segment follow if the camera changes its stream.
pub async fn live(
    State(app): State<SharedState>,
    Path(name): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    let c = try_api!(cameras(&app));
    let camera = try_cam!(c.camera(&name));
    ws.on_upgrade(move |socket| async move {
        camera.viewers.fetch_add(1, Ordering::Relaxed);
        let r = serve_live(socket, camera.clone()).await;
        camera.viewers.fetch_sub(1, Ordering::Relaxed);
        if let Err(e) = r {
            tracing::debug!(camera = camera.name(), error = %e, "live viewer gone");
        }
    })
}

fn describe(info: &StreamInfo) -> Message {
    Message::Text(
        json!({
            "type": "stream",
            "mime": info.mime(),
            "codec": info.codec,
            "width": info.width,
            "height": info.height,
        })
        .to_string()
        .into(),
    )
}

async fn serve_live(
    mut socket: WebSocket,
    camera: Arc<cameras::Camera>,
) -> Result<(), axum::Error> {
    let start = camera.watch();
    let mut events = start.events;
    let mut generation = None;
    if let Some(info) = &start.info {
        socket.send(describe(info)).await?;
        socket
            .send(Message::Binary(info.init_segment.clone()))
            .await?;
        generation = Some(info.generation);
        for f in start
            .gop
            .iter()
            .filter(|f| Some(f.generation) == generation)
        {
            socket.send(Message::Binary(f.bytes.clone())).await?;
        }
    }
    // After falling behind, wait for a keyframe: fragments in between
    // depend on frames this viewer missed.
    let mut need_keyframe = start.gop.is_empty();
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(LiveEvent::Stream(info)) => {
                    socket.send(describe(&info)).await?;
                    socket.send(Message::Binary(info.init_segment.clone())).await?;
                    generation = Some(info.generation);
                    need_keyframe = true;
                }
                Ok(LiveEvent::Fragment(f)) => {
                    if Some(f.generation) != generation || (need_keyframe && !f.keyframe) {
                        continue;
                    }
                    need_keyframe = false;
                    socket.send(Message::Binary(f.bytes.clone())).await?;
                }
                Err(RecvError::Lagged(_)) => need_keyframe = true,
                Err(RecvError::Closed) => return Ok(()),
            },
            msg = socket.recv() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(_)) => {}
            },
        }
    }
}

fn no_store(body: impl IntoResponse, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

fn not_found(what: &str) -> Response {
    ApiError::not_found(what).into_response()
}

/// `index.m3u8`, `init.mp4` and `segment-N.m4s` under `/hls/`.
/// A player that fetched the playlist with `?token=` fetches the init
/// segment and the segments with it too: it has no other credentials.
fn with_token(playlist: &str, token: &str) -> String {
    // Tokens are `perch_<hex>_<hex>`; anything else is not echoed back.
    if !token.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return playlist.to_string();
    }
    let add = |uri: &str| {
        let sep = if uri.contains('?') { '&' } else { '?' };
        format!("{uri}{sep}token={token}")
    };
    let mut out = String::with_capacity(playlist.len() + 64);
    for line in playlist.lines() {
        if let Some(rest) = line.strip_prefix("#EXT-X-MAP:URI=\"") {
            let (uri, tail) = rest.split_once('"').unwrap_or((rest, ""));
            out.push_str(&format!("#EXT-X-MAP:URI=\"{}\"{tail}", add(uri)));
        } else if !line.starts_with('#') && !line.is_empty() {
            out.push_str(&add(line));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

pub async fn hls(
    State(app): State<SharedState>,
    Path((name, file)): Path<(String, String)>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let c = try_api!(cameras(&app));
    if file == "index.m3u8" {
        return match try_cam!(c.hls_playlist(&name)) {
            Some(p) => {
                let p = match q.get("token") {
                    Some(t) => with_token(&p, t),
                    None => p,
                };
                no_store(p, "application/vnd.apple.mpegurl")
            }
            None => not_found("no video yet: the camera has not sent a complete segment"),
        };
    }
    if file == "init.mp4" {
        let generation = q.get("g").and_then(|g| g.parse().ok());
        return match try_cam!(c.hls_init(&name, generation)) {
            Some(b) => no_store(b, "video/mp4"),
            None => not_found("no such stream generation"),
        };
    }
    let sequence = file
        .strip_prefix("segment-")
        .and_then(|f| f.strip_suffix(".m4s"))
        .and_then(|n| n.parse::<u64>().ok());
    match sequence {
        Some(seq) => match try_cam!(c.hls_segment(&name, seq)) {
            Some(b) => {
                let mut r = no_store(b, "video/iso.segment");
                // A segment never changes once listed.
                r.headers_mut().insert(
                    header::CACHE_CONTROL,
                    header::HeaderValue::from_static("public, max-age=60"),
                );
                r
            }
            None => not_found("segment no longer (or not yet) available"),
        },
        None => not_found("unknown HLS file"),
    }
}

#[derive(Deserialize)]
pub struct SnapshotsQuery {
    start: Option<String>,
    end: Option<String>,
    limit: Option<usize>,
}

pub async fn snapshots(
    State(app): State<SharedState>,
    Path(name): Path<String>,
    Query(q): Query<SnapshotsQuery>,
) -> Response {
    let c = try_api!(cameras(&app));
    let time = |s: &Option<String>, what: &str, default: i64| -> Result<i64, ApiError> {
        match s {
            Some(v) => query::params::parse_time(v, what).map_err(ApiError::from),
            None => Ok(default),
        }
    };
    let start = try_api!(time(&q.start, "start", i64::MIN));
    let end = try_api!(time(&q.end, "end", i64::MAX));
    let limit = q.limit.unwrap_or(100).min(10_000);
    Json(json!({"status": "success", "data": try_cam!(c.snapshots(&name, start, end, limit))}))
        .into_response()
}

async fn jpeg_file(path: Option<std::path::PathBuf>) -> Response {
    let Some(path) = path else {
        return not_found("no such snapshot");
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let mut r = bytes.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("image/jpeg"),
            );
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("private, max-age=86400"),
            );
            r
        }
        Err(_) => not_found("the snapshot file is gone"),
    }
}

/// `/snapshots/{id}.jpg`: the id is a number, so no path can sneak in.
pub async fn snapshot_file(
    State(app): State<SharedState>,
    Path((name, file)): Path<(String, String)>,
) -> Response {
    let c = try_api!(cameras(&app));
    let Some(id) = file
        .strip_suffix(".jpg")
        .and_then(|n| n.parse::<i64>().ok())
    else {
        return not_found("snapshot ids look like 1767225600000.jpg");
    };
    jpeg_file(try_cam!(c.snapshot_file(&name, Some(id)))).await
}

pub async fn latest(State(app): State<SharedState>, Path(name): Path<String>) -> Response {
    let c = try_api!(cameras(&app));
    let mut r = jpeg_file(try_cam!(c.snapshot_file(&name, None))).await;
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

pub async fn take(State(app): State<SharedState>, Path(name): Path<String>) -> Response {
    let c = try_api!(cameras(&app));
    let meta = try_cam!(c.snapshot(&name, "request").await);
    (
        StatusCode::CREATED,
        Json(json!({"status": "success", "data": meta})),
    )
        .into_response()
}
