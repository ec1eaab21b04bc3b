//! Health and status: `/healthz` for load balancers and systemd, InfluxDB's
//! `/ping` (1.x) and `/health` (2.x) for its clients,
//! `/api/v1/status/tsdb` with what the store holds and any problems, and
//! `/api/v1/problems`, the recent failed sign-ins, refusals and unreadable
//! payloads the Overview shows (`base::problems`).

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
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

/// The version InfluxDB's clients read from `X-Influxdb-Version`.
pub const INFLUXDB_VERSION: &str = "1.8-perch";

/// InfluxDB 1.x's `/ping` (GET and HEAD), which its client libraries and
/// Telegraf call before writing: 204 with the version headers, or with
/// `verbose=true` 200 and the version as JSON, as InfluxDB answers.
/// Without credentials, like InfluxDB's (and `/healthz`).
pub async fn influx_ping(RawQuery(query): RawQuery) -> Response {
    let headers = [
        (
            header::HeaderName::from_static("x-influxdb-version"),
            INFLUXDB_VERSION,
        ),
        (header::HeaderName::from_static("x-influxdb-build"), "OSS"),
    ];
    let verbose = query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .any(|kv| matches!(kv, "verbose=true" | "verbose=1" | "verbose"));
    if verbose {
        let body = serde_json::json!({ "version": INFLUXDB_VERSION });
        (StatusCode::OK, headers, Json(body)).into_response()
    } else {
        (StatusCode::NO_CONTENT, headers).into_response()
    }
}

/// InfluxDB 2.x's `/health`, which its client libraries' `health()` and
/// `ping()` read: `pass` (200) once perch is ready, `fail` (503) before.
pub async fn influx_health(State(app): State<SharedState>) -> Response {
    let (status, pass, message) = if app.is_ready() {
        (StatusCode::OK, "pass", "ready for queries and writes")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "fail", "starting")
    };
    let body = serde_json::json!({
        "name": "influxdb",
        "message": message,
        "status": pass,
        "checks": [],
        "version": INFLUXDB_VERSION,
        "commit": "perch",
    });
    (
        status,
        [(
            header::HeaderName::from_static("x-influxdb-version"),
            INFLUXDB_VERSION,
        )],
        Json(body),
    )
        .into_response()
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
