//! Health and status: `/healthz` for load balancers and systemd, InfluxDB's
//! `/ping` (1.x) and `/health` (2.x) for its clients,
//! `/api/v1/status/tsdb` with what the store holds and any problems, and
//! `/api/v1/status/footprint`, memory and disk writes by component (the
//! Settings page), `/api/v1/problems`, the recent failed sign-ins, refusals and unreadable
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

/// One component's bytes.
#[derive(Serialize, Debug, PartialEq)]
pub struct Part {
    component: String,
    bytes: u64,
}

/// What perch costs the machine, by component, for the Settings page: the
/// memory and disk-write figures of `/metrics` (`base::footprint`), with
/// the heap no component claims as `unattributed`.
#[derive(Serialize, Debug)]
pub struct Footprint {
    resident_bytes: u64,
    /// The heap allocated in all, when the allocator counts it.
    allocated_bytes: Option<u64>,
    /// Largest first; `code` and `allocator` are outside the heap.
    memory: Vec<Part>,
    /// Configured bounds (sled's cache, tantivy's writer heap).
    limits: Vec<Part>,
    /// Bytes written to disk since start, by component, largest first.
    written: Vec<Part>,
    /// The store's own files, by purpose (before the filesystem).
    store_written: Vec<Part>,
    uptime_seconds: f64,
    samples_appended: u64,
    /// Of which perch's own metrics.
    self_samples: u64,
}

pub async fn footprint(State(app): State<SharedState>) -> Result<Success<Footprint>, ApiError> {
    let registry = app
        .metrics
        .clone()
        .ok_or_else(|| ApiError::unavailable("self-metrics are not set up in this server"))?;
    let points = tokio::task::spawn_blocking(move || registry.gather())
        .await
        .map_err(|e| ApiError::internal(format!("gathering metrics failed: {e}")))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    Ok(Success(footprint_of(&points, now)))
}

fn footprint_of(points: &[base::metrics::MetricPoint], now_secs: f64) -> Footprint {
    use base::footprint::{ALLOCATED_BYTES, DISK_WRITTEN_BYTES, MEMORY_BYTES, MEMORY_LIMIT_BYTES};
    let value = |name: &str| points.iter().find(|p| p.name == name).map(|p| p.value);
    let parts = |name: &str, label: &str| -> Vec<Part> {
        let mut v: Vec<Part> = points
            .iter()
            .filter(|p| p.name == name)
            .filter_map(|p| {
                let (_, c) = p.labels.iter().find(|(k, _)| k == label)?;
                Some(Part {
                    component: c.clone(),
                    bytes: p.value.max(0.0) as u64,
                })
            })
            .collect();
        v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.component.cmp(&b.component)));
        v
    };
    let allocated = value(ALLOCATED_BYTES).map(|v| v as u64);
    let mut memory = parts(MEMORY_BYTES, "component");
    if let Some(allocated) = allocated {
        let claimed: u64 = memory
            .iter()
            .filter(|p| p.component != "code" && p.component != "allocator")
            .map(|p| p.bytes)
            .sum();
        memory.push(Part {
            component: "unattributed".into(),
            bytes: allocated.saturating_sub(claimed),
        });
        memory.sort_by_key(|p| std::cmp::Reverse(p.bytes));
    }
    Footprint {
        resident_bytes: value("perch_process_resident_memory_bytes").unwrap_or(0.0) as u64,
        allocated_bytes: allocated,
        memory,
        limits: parts(MEMORY_LIMIT_BYTES, "component"),
        written: parts(DISK_WRITTEN_BYTES, "component"),
        store_written: parts("perch_storage_written_bytes_total", "kind"),
        uptime_seconds: value("perch_process_start_time_seconds")
            .map_or(0.0, |start| (now_secs - start).max(0.0)),
        samples_appended: value("perch_storage_samples_appended_total").unwrap_or(0.0) as u64,
        self_samples: value("perch_storage_self_samples_total").unwrap_or(0.0) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base::footprint::{memory, memory_limit};
    use base::metrics::MetricPoint;

    #[test]
    fn the_heap_no_component_claims_is_unattributed() {
        let points = vec![
            memory("code", 20 << 20),
            memory("allocator", 8 << 20),
            memory("store_head", 3 << 20),
            memory("query", 1 << 20),
            memory_limit("sled_cache", 32 << 20),
            MetricPoint::gauge(base::footprint::ALLOCATED_BYTES, "", (10 << 20) as f64),
            MetricPoint::gauge("perch_process_start_time_seconds", "", 1000.0),
        ];
        let f = footprint_of(&points, 1060.0);
        let names: Vec<(&str, u64)> = f
            .memory
            .iter()
            .map(|p| (p.component.as_str(), p.bytes >> 20))
            .collect();
        assert_eq!(
            names,
            [
                ("code", 20),
                ("allocator", 8),
                ("unattributed", 6),
                ("store_head", 3),
                ("query", 1)
            ]
        );
        assert_eq!(f.limits[0].component, "sled_cache");
        assert_eq!(f.uptime_seconds, 60.0);
    }
}
