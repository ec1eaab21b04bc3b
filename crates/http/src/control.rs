//! The control socket: a Unix socket in the data directory (mode 0600) that
//! the `perch user` and `perch forward` commands use while the server holds
//! the database. Only whoever may read the data directory can reach it.
//! Errors are `{"error":…}` ([`ErrorBody::Control`]); the extractors are
//! axum's own, whose refusals perch's CLI never earns.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;

use super::error::ErrorBody;
use super::{ApiError, SharedState};
use accounts::{Role, UserInfo};
use forward::ReplayReport;

#[derive(Deserialize)]
pub struct NewUser {
    pub name: String,
    pub role: Role,
    pub password: String,
    #[serde(default)]
    pub topics: Vec<String>,
}

pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/forward/{name}/replay", axum::routing::post(replay))
        .route("/users", get(list).post(add))
        .route("/users/{name}", delete(remove))
        .with_state(state)
}

fn control(e: impl Into<ApiError>) -> ApiError {
    e.into().with_body(ErrorBody::Control)
}

async fn list(State(app): State<SharedState>) -> Result<Json<Vec<UserInfo>>, ApiError> {
    app.accounts.list().map(Json).map_err(control)
}

async fn add(
    State(app): State<SharedState>,
    Json(u): Json<NewUser>,
) -> Result<impl IntoResponse, ApiError> {
    let accounts = app.accounts.clone();
    let now = app.storage.now_ms();
    let info = tokio::task::spawn_blocking(move || {
        accounts.add(&u.name, u.role, &u.password, &u.topics, now)
    })
    .await
    .map_err(|e| control(ApiError::internal(e.to_string())))?
    .map_err(control)?;
    app.user_added(&info.name);
    Ok((StatusCode::CREATED, Json(info)))
}

async fn remove(
    State(app): State<SharedState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !app.accounts.delete(&name).map_err(control)? {
        return Err(control(ApiError::not_found(format!("no user {name:?}"))));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct Replay {
    pub since_ms: i64,
}

/// `perch forward replay`: queues stored samples (or messages) for a
/// target again.
async fn replay(
    State(app): State<SharedState>,
    Path(name): Path<String>,
    Json(r): Json<Replay>,
) -> Result<Json<ReplayReport>, ApiError> {
    let Some(f) = app.forwarder.clone() else {
        return Err(control(ApiError::not_found("forwarding is not running")));
    };
    let (storage, search) = (app.storage.clone(), app.search.clone());
    let report = tokio::task::spawn_blocking(move || {
        f.replay(&name, &storage, search.as_deref(), r.since_ms)
    })
    .await
    .map_err(|e| control(ApiError::internal(e.to_string())))?
    .map_err(control)?;
    Ok(Json(report))
}
