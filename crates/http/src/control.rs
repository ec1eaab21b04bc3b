//! The control socket: a Unix socket in the data directory (mode 0600) that
//! the `perch user` commands use while the server holds the database. Only
//! whoever may read the data directory can reach it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::SharedState;
use accounts::{AccountError, Role};

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

fn account_error(e: AccountError) -> Response {
    let status = match e {
        AccountError::Exists(_) => StatusCode::CONFLICT,
        AccountError::Db(_) | AccountError::Corrupt(_) | AccountError::Hash(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::BAD_REQUEST,
    };
    (status, Json(json!({"error": e.to_string()}))).into_response()
}

async fn list(State(app): State<SharedState>) -> Response {
    match app.accounts.list() {
        Ok(users) => Json(users).into_response(),
        Err(e) => account_error(e),
    }
}

async fn add(State(app): State<SharedState>, Json(u): Json<NewUser>) -> Response {
    let accounts = app.accounts.clone();
    let now = app.storage.now_ms();
    match tokio::task::spawn_blocking(move || {
        accounts.add(&u.name, u.role, &u.password, &u.topics, now)
    })
    .await
    {
        Ok(Ok(info)) => (StatusCode::CREATED, Json(info)).into_response(),
        Ok(Err(e)) => account_error(e),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn remove(State(app): State<SharedState>, Path(name): Path<String>) -> Response {
    match app.accounts.delete(&name) {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no user {name:?}")})),
        )
            .into_response(),
        Err(e) => account_error(e),
    }
}

#[derive(Deserialize)]
pub struct Replay {
    pub since_ms: i64,
}

/// `perch forward replay`: queues stored samples (or messages) for a
/// target again.
async fn replay(
    State(app): State<SharedState>,
    f: Option<axum::Extension<std::sync::Arc<forward::Forwarder>>>,
    Path(name): Path<String>,
    Json(r): Json<Replay>,
) -> Response {
    let Some(axum::Extension(f)) = f else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "forwarding is not running"})),
        )
            .into_response();
    };
    let (storage, search) = (app.storage.clone(), app.search.clone());
    match tokio::task::spawn_blocking(move || {
        f.replay(&name, &storage, search.as_deref(), r.since_ms)
    })
    .await
    {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(e)) => {
            let status = match e {
                forward::ForwardError::NoTarget(_) => StatusCode::NOT_FOUND,
                forward::ForwardError::Unsupported(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (status, Json(json!({"error": e.to_string()}))).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
