//! Health and status: `/healthz` for load balancers and systemd,
//! `/api/v1/status/tsdb` with what the store holds and any problems, and
//! `/api/v1/problems`, the recent failed sign-ins, refusals and unreadable
//! payloads the Overview shows (`base::problems`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use super::wire::{SortedKeys, Success};
use super::{ApiError, SharedState};
use store::WindowCounts;

pub async fn healthz(State(app): State<SharedState>) -> (StatusCode, &'static str) {
    if app.is_ready() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

/// The recent problems, the last seen first: admins and viewers, as the
/// recent warnings and errors.
pub async fn problems() -> Json<Vec<base::problems::Problem>> {
    Json(base::problems::recent())
}

/// Prometheus' `headStats` fields where they have a meaning here, then
/// perch's own; keys sorted, as they have always been.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TsdbStatus {
    bytes_on_disk: u64,
    bytes_per_sample: f64,
    disk_budget_bytes: u64,
    head_samples: u64,
    head_stats: HeadStats,
    newest_timestamp: Option<i64>,
    oldest_timestamp: Option<i64>,
    problems: Vec<String>,
    samples: u64,
    series: usize,
    windows: SortedKeys<WindowCounts>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HeadStats {
    max_time: Option<i64>,
    min_time: Option<i64>,
    num_samples: u64,
    num_series: usize,
}

pub async fn tsdb(State(app): State<SharedState>) -> Result<Success<TsdbStatus>, ApiError> {
    let storage = app.storage.clone();
    let status = tokio::task::spawn_blocking(move || storage.status())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Success(TsdbStatus {
        bytes_on_disk: status.bytes_on_disk,
        bytes_per_sample: status.bytes_per_sample,
        disk_budget_bytes: status.disk_budget_bytes,
        head_samples: status.head_samples,
        head_stats: HeadStats {
            max_time: status.newest_timestamp,
            min_time: status.oldest_timestamp,
            num_samples: status.samples,
            num_series: status.series,
        },
        newest_timestamp: status.newest_timestamp,
        oldest_timestamp: status.oldest_timestamp,
        problems: status.problems,
        samples: status.samples,
        series: status.series,
        windows: SortedKeys(status.windows),
    }))
}
