//! Forwarding over HTTP: every target's status (`GET /api/v1/forward`, for
//! readers) and, for admins, the targets' definitions — those of the config
//! file read-only, those added here kept by the forwarder in the database.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Serialize;

use super::extract::{JsonBody, JsonRequest, Path};
use super::{ApiError, SharedState};
use config::ForwardConfig;
use forward::{ForwardError, Forwarder, TargetDefinition, TargetStatus};

/// Every target's status; none when forwarding does not run.
pub async fn status(State(app): State<SharedState>) -> Json<Vec<TargetStatus>> {
    Json(
        app.forwarder
            .as_ref()
            .map(|f| f.status())
            .unwrap_or_default(),
    )
}

/// Adding, changing and deleting targets: admins only.
pub fn admin_routes() -> Router<SharedState> {
    Router::new()
        .route("/api/v1/forward/targets", get(list).post(create))
        .route("/api/v1/forward/targets/{name}", put(update).delete(delete))
}

/// The forwarder, when it runs (not in `perch bench http`).
struct RunningForwarder(Arc<Forwarder>);

impl FromRequestParts<SharedState> for RunningForwarder {
    type Rejection = ApiError;

    async fn from_request_parts(
        _: &mut Parts,
        app: &SharedState,
    ) -> Result<RunningForwarder, ApiError> {
        app.forwarder
            .clone()
            .map(RunningForwarder)
            .ok_or_else(|| ApiError::unavailable("forwarding is not running"))
    }
}

impl JsonRequest for ForwardConfig {
    const MALFORMED: &'static str = "invalid forwarding target";
}

/// `{"name":…,"status":"success"}` (keys sorted, as they have always been).
#[derive(Serialize)]
struct Changed {
    name: String,
    status: &'static str,
}

/// Runs a change to its end even if the client goes away: a change cut in
/// half would leave the target neither old nor new.
async fn to_the_end(
    change: impl std::future::Future<Output = Result<(), ForwardError>> + Send + 'static,
) -> Result<(), ApiError> {
    tokio::spawn(change)
        .await
        .unwrap_or_else(|e| Err(ForwardError::Setup(format!("the change failed: {e}"))))?;
    Ok(())
}

async fn list(RunningForwarder(f): RunningForwarder) -> Json<Vec<TargetDefinition>> {
    Json(f.definitions())
}

async fn create(
    RunningForwarder(f): RunningForwarder,
    JsonBody(config): JsonBody<ForwardConfig>,
) -> Result<impl IntoResponse, ApiError> {
    let name = config.name.clone();
    to_the_end(async move { f.create(config).await }).await?;
    Ok((
        StatusCode::CREATED,
        Json(Changed {
            name,
            status: "success",
        }),
    ))
}

async fn update(
    RunningForwarder(f): RunningForwarder,
    Path(name): Path<String>,
    JsonBody(config): JsonBody<ForwardConfig>,
) -> Result<Json<Changed>, ApiError> {
    if config.name != name {
        return Err(ApiError::invalid(format!(
            "the body names {:?}, the path {name:?}: a target cannot be renamed",
            config.name
        )));
    }
    to_the_end(async move { f.update(config).await }).await?;
    Ok(Json(Changed {
        name,
        status: "success",
    }))
}

async fn delete(
    RunningForwarder(f): RunningForwarder,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    to_the_end(async move { f.delete(&name).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}
