//! Cameras over HTTP: definitions and status, the live view (fMP4 over
//! WebSocket for Media Source Extensions), HLS, and snapshots.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::Method;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::auth::{self, Need};
use super::extract::{JsonBody, JsonRequest, Path, Query, QueryParams};
use super::wire::{SortedKeys, Success};
use super::{ApiError, Principal, SharedState};
use cameras::{Cameras, LiveEvent, StreamInfo};
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

/// Who may do what with cameras ([`auth::allowed`]): adding, changing and
/// removing cameras is an admin's; status, video and snapshots (taking one
/// included) a viewer's too.
async fn guard(who: Principal, req: Request, next: Next) -> Result<Response, ApiError> {
    let need = match *req.method() {
        Method::PUT | Method::DELETE => Need::Manage,
        Method::POST if req.uri().path() == "/api/v1/cameras" => Need::Manage,
        _ => Need::Watch,
    };
    auth::allowed(&who, need)?;
    Ok(next.run(req).await)
}

/// The cameras, when they run (not in `perch bench http`).
struct RunningCameras(Arc<Cameras>);

impl FromRequestParts<SharedState> for RunningCameras {
    type Rejection = ApiError;

    async fn from_request_parts(
        _: &mut Parts,
        app: &SharedState,
    ) -> Result<RunningCameras, ApiError> {
        app.cameras
            .clone()
            .map(RunningCameras)
            .ok_or_else(|| ApiError::unavailable("cameras are not running"))
    }
}

/// Answers carry the cameras' views with their keys sorted, as they always
/// have.
fn success<T: Serialize>(data: T) -> Success<SortedKeys<T>> {
    Success(SortedKeys(data))
}

async fn list(RunningCameras(c): RunningCameras) -> impl IntoResponse {
    success(c.list())
}

async fn get_one(
    Path(name): Path<String>,
    RunningCameras(c): RunningCameras,
) -> Result<impl IntoResponse, ApiError> {
    Ok(success(c.get(&name)?))
}

impl JsonRequest for CameraConfig {
    const MALFORMED: &'static str = "invalid camera";
}

async fn create(
    RunningCameras(c): RunningCameras,
    JsonBody(config): JsonBody<CameraConfig>,
) -> Result<impl IntoResponse, ApiError> {
    let view = c.create(config).await?;
    Ok((StatusCode::CREATED, success(view)))
}

/// A camera's new settings; the name comes from the path, so the body may
/// leave it out.
#[derive(Deserialize)]
#[serde(transparent)]
struct CameraUpdate(serde_json::Value);

impl JsonRequest for CameraUpdate {
    const MALFORMED: &'static str = "invalid camera";
}

async fn update(
    Path(name): Path<String>,
    RunningCameras(c): RunningCameras,
    JsonBody(CameraUpdate(mut value)): JsonBody<CameraUpdate>,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(o) = value.as_object_mut() {
        o.insert("name".into(), name.clone().into());
    }
    let config: CameraConfig = serde_json::from_value(value)
        .map_err(|e| ApiError::invalid(format!("{}: {e}", CameraUpdate::MALFORMED)))?;
    let view = c.update(&name, config).await?;
    Ok(success(view))
}

async fn delete(
    Path(name): Path<String>,
    RunningCameras(c): RunningCameras,
) -> Result<StatusCode, ApiError> {
    c.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The live view: a text message describing the stream (MIME type with the
/// codec, size), the init segment, then one fMP4 fragment per frame —
/// starting with the current GOP, so a picture shows at once. A new text
/// message and init segment follow if the camera changes its stream.
async fn live(
    Path(name): Path<String>,
    ws: WebSocketUpgrade,
    RunningCameras(c): RunningCameras,
) -> Result<Response, ApiError> {
    let camera = c.camera(&name)?;
    Ok(ws.on_upgrade(move |socket| async move {
        camera.viewers.fetch_add(1, Ordering::Relaxed);
        let r = serve_live(socket, camera.clone()).await;
        camera.viewers.fetch_sub(1, Ordering::Relaxed);
        if let Err(e) = r {
            tracing::debug!(camera = camera.name(), error = %e, "live viewer gone");
        }
    }))
}

/// The live view's text message announcing a stream (keys sorted, as the
/// player has always had them).
#[derive(Serialize)]
struct StreamDescription<'a> {
    codec: &'a str,
    height: u32,
    mime: String,
    #[serde(rename = "type")]
    kind: &'static str,
    width: u32,
}

fn describe(info: &StreamInfo) -> Message {
    let description = StreamDescription {
        codec: &info.codec,
        height: info.height,
        mime: info.mime(),
        kind: "stream",
        width: info.width,
    };
    Message::Text(
        serde_json::to_string(&description)
            .unwrap_or_default()
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

async fn hls(
    Path((name, file)): Path<(String, String)>,
    QueryParams(q): QueryParams,
    RunningCameras(c): RunningCameras,
) -> Result<Response, ApiError> {
    if file == "index.m3u8" {
        let playlist = c.hls_playlist(&name).await?.ok_or_else(|| {
            ApiError::not_found("no video yet: the camera has not sent a complete segment")
        })?;
        let playlist = match q.get("token") {
            Some(t) => with_token(&playlist, t),
            None => playlist,
        };
        return Ok(no_store(playlist, "application/vnd.apple.mpegurl"));
    }
    if file == "init.mp4" {
        let generation = q.get("g").and_then(|g| g.parse().ok());
        let init = c
            .hls_init(&name, generation)?
            .ok_or_else(|| ApiError::not_found("no such stream generation"))?;
        return Ok(no_store(init, "video/mp4"));
    }
    let sequence = file
        .strip_prefix("segment-")
        .and_then(|f| f.strip_suffix(".m4s"))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| ApiError::not_found("unknown HLS file"))?;
    let segment = c
        .hls_segment(&name, sequence)?
        .ok_or_else(|| ApiError::not_found("segment no longer (or not yet) available"))?;
    let mut r = no_store(segment, "video/iso.segment");
    // A segment never changes once listed.
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("public, max-age=60"),
    );
    Ok(r)
}

#[derive(Deserialize)]
struct SnapshotsQuery {
    start: Option<String>,
    end: Option<String>,
    limit: Option<usize>,
}

async fn snapshots(
    Path(name): Path<String>,
    Query(q): Query<SnapshotsQuery>,
    RunningCameras(c): RunningCameras,
) -> Result<impl IntoResponse, ApiError> {
    let time = |s: &Option<String>, what: &str, default: i64| -> Result<i64, ApiError> {
        match s {
            Some(v) => Ok(query::params::parse_time(v, what)?),
            None => Ok(default),
        }
    };
    let start = time(&q.start, "start", i64::MIN)?;
    let end = time(&q.end, "end", i64::MAX)?;
    let limit = q.limit.unwrap_or(100).min(10_000);
    Ok(success(c.snapshots(&name, start, end, limit)?))
}

async fn jpeg_file(path: Option<std::path::PathBuf>) -> Result<Response, ApiError> {
    let path = path.ok_or_else(|| ApiError::not_found("no such snapshot"))?;
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|_| ApiError::not_found("the snapshot file is gone"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "private, max-age=86400"),
        ],
        bytes,
    )
        .into_response())
}

/// `/snapshots/{id}.jpg`: the id is a number, so no path can sneak in.
async fn snapshot_file(
    Path((name, file)): Path<(String, String)>,
    RunningCameras(c): RunningCameras,
) -> Result<Response, ApiError> {
    let id = file
        .strip_suffix(".jpg")
        .and_then(|n| n.parse::<i64>().ok())
        .ok_or_else(|| ApiError::not_found("snapshot ids look like 1767225600000.jpg"))?;
    jpeg_file(c.snapshot_file(&name, Some(id))?).await
}

async fn latest(
    Path(name): Path<String>,
    RunningCameras(c): RunningCameras,
) -> Result<Response, ApiError> {
    // "No snapshot yet" must not be cached either: the next poll may find one.
    let mut r = jpeg_file(c.snapshot_file(&name, None)?)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(r)
}

async fn take(
    Path(name): Path<String>,
    RunningCameras(c): RunningCameras,
) -> Result<impl IntoResponse, ApiError> {
    let meta = c.snapshot(&name, "request").await?;
    Ok((StatusCode::CREATED, success(meta)))
}
