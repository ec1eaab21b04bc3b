//! Health and status: `/healthz` for load balancers and systemd, and
//! `/api/v1/status/tsdb` with what the store holds and any problems.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::SharedState;

pub async fn healthz(State(app): State<SharedState>) -> Response {
    if app.is_ready() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

pub async fn tsdb(State(app): State<SharedState>) -> Response {
    let storage = app.storage.clone();
    let status = match tokio::task::spawn_blocking(move || storage.status()).await {
        Ok(s) => s,
        Err(e) => return super::ApiError::internal(e.to_string()).into_response(),
    };
    // Prometheus' headStats fields where they have a meaning here, then
    // perch's own.
    axum::Json(json!({
        "status": "success",
        "data": {
            "headStats": {
                "numSeries": status.series,
                "numSamples": status.samples,
                "minTime": status.oldest_timestamp,
                "maxTime": status.newest_timestamp,
            },
            "series": status.series,
            "samples": status.samples,
            "headSamples": status.head_samples,
            "bytesOnDisk": status.bytes_on_disk,
            "bytesPerSample": status.bytes_per_sample,
            "diskBudgetBytes": status.disk_budget_bytes,
            "oldestTimestamp": status.oldest_timestamp,
            "newestTimestamp": status.newest_timestamp,
            "windows": status.windows,
            "problems": status.problems,
        }
    }))
    .into_response()
}
