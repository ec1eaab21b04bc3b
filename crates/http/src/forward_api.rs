//! Forwarding over HTTP: every target's status (`GET /api/v1/forward`, for
//! readers) and, for admins, the targets' definitions — those of the config
//! file read-only, those added here kept by the forwarder in the database.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use serde_json::json;

use super::{ApiError, SharedState};
use config::ForwardConfig;
use forward::{ForwardError, Forwarder, TargetStatus};

pub async fn status(f: Option<Extension<Arc<Forwarder>>>) -> Json<Vec<TargetStatus>> {
    Json(f.map(|Extension(f)| f.status()).unwrap_or_default())
}

/// Adding, changing and deleting targets: admins only.
pub fn admin_routes() -> Router<SharedState> {
    Router::new()
        .route("/api/v1/forward/targets", get(list).post(create))
        .route("/api/v1/forward/targets/{name}", put(update).delete(delete))
}

fn forwarder(f: Option<Extension<Arc<Forwarder>>>) -> Result<Arc<Forwarder>, ApiError> {
    f.map(|Extension(f)| f)
        .ok_or_else(|| ApiError::unavailable("forwarding is not running"))
}

fn forward_error(e: ForwardError) -> Response {
    match e {
        ForwardError::NoTarget(_) => ApiError::not_found(e.to_string()),
        ForwardError::Exists(_) | ForwardError::FromConfig(_) => ApiError::conflict(e.to_string()),
        ForwardError::Invalid(_) => ApiError::bad_data(e.to_string()),
        _ => ApiError::internal(e.to_string()),
    }
    .into_response()
}

async fn finish(
    task: tokio::task::JoinHandle<Result<(), ForwardError>>,
) -> Result<(), ForwardError> {
    task.await
        .unwrap_or_else(|e| Err(ForwardError::Setup(format!("the change failed: {e}"))))
}

fn parse(body: &Bytes) -> Result<ForwardConfig, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_data(format!("invalid forwarding target: {e}")))
}

async fn list(f: Option<Extension<Arc<Forwarder>>>) -> Response {
    match forwarder(f) {
        Ok(f) => Json(f.definitions()).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn create(f: Option<Extension<Arc<Forwarder>>>, body: Bytes) -> Response {
    let (f, config) = match forwarder(f).and_then(|f| Ok((f, parse(&body)?))) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let name = config.name.clone();
    // Spawned: a client going away mid-change must not cut it in half.
    match finish(tokio::spawn(async move { f.create(config).await })).await {
        Ok(()) => (
            axum::http::StatusCode::CREATED,
            Json(json!({"status": "success", "name": name})),
        )
            .into_response(),
        Err(e) => forward_error(e),
    }
}

async fn update(
    f: Option<Extension<Arc<Forwarder>>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let (f, config) = match forwarder(f).and_then(|f| Ok((f, parse(&body)?))) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    if config.name != name {
        return ApiError::bad_data(format!(
            "the body names {:?}, the path {name:?}: a target cannot be renamed",
            config.name
        ))
        .into_response();
    }
    match finish(tokio::spawn(async move { f.update(config).await })).await {
        Ok(()) => Json(json!({"status": "success", "name": name})).into_response(),
        Err(e) => forward_error(e),
    }
}

async fn delete(f: Option<Extension<Arc<Forwarder>>>, Path(name): Path<String>) -> Response {
    let f = match forwarder(f) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let n = name.clone();
    match finish(tokio::spawn(async move { f.delete(&n).await })).await {
        Ok(()) => axum::http::StatusCode::NO_CONTENT.into_response(),
        Err(e) => forward_error(e),
    }
}
