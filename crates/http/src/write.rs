//! Write endpoints in the formats the systems perch replaces speak:
//! InfluxDB 1.x `/write` and 2.x `/api/v2/write` (line protocol), OpenTSDB
//! `/api/put` and VictoriaMetrics `/api/v1/import` (JSON lines).
//!
//! Every valid item of a body is stored even when others are malformed (a
//! partial write, like InfluxDB); the response names each bad line or item.
//! A write is acknowledged once it is in the head and the WAL buffer, which is
//! synced within `storage.flush_interval`; with `storage.sync_writes` the
//! response waits for the sync.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::params::Params;
use super::SharedState;
use ingest::line_protocol::{self, Precision};
use ingest::{opentsdb, vm_import};
use store::{AppendResult, SeriesSamples, StorageError};

/// How many problems a response lists before summarizing.
const MAX_LISTED: usize = 10;

/// The response shapes of the different APIs.
#[derive(Clone, Copy)]
enum Dialect {
    InfluxV1,
    InfluxV2,
    OpenTsdb,
    VictoriaMetrics,
}

fn error(dialect: Dialect, status: StatusCode, message: String) -> Response {
    let body = match dialect {
        Dialect::InfluxV1 => json!({ "error": message }),
        Dialect::InfluxV2 => json!({
            "code": if status == StatusCode::PAYLOAD_TOO_LARGE { "request too large" }
                    else if status.is_server_error() { "unavailable" } else { "invalid" },
            "message": message,
        }),
        Dialect::OpenTsdb => json!({ "error": { "code": status.as_u16(), "message": message } }),
        Dialect::VictoriaMetrics => json!({ "status": "error", "error": message }),
    };
    let mut r = (status, axum::Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    r
}

fn body_or_error(
    dialect: Dialect,
    body: Result<Bytes, BytesRejection>,
    limit: u64,
) -> Result<Bytes, Box<Response>> {
    body.map_err(|rej| {
        Box::new(if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            error(
                dialect,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body is larger than http.max_body_bytes ({}); split the write into smaller batches",
                    config::ByteSize(limit)
                ),
            )
        } else {
            error(dialect, rej.status(), format!("cannot read the request body: {rej}"))
        })
    })
}

fn utf8(dialect: Dialect, body: &Bytes) -> Result<&str, Box<Response>> {
    std::str::from_utf8(body).map_err(|e| {
        Box::new(error(
            dialect,
            StatusCode::BAD_REQUEST,
            format!(
                "request body is not valid UTF-8 (at byte {})",
                e.valid_up_to()
            ),
        ))
    })
}

/// Stores parsed series and builds the response from parse problems and
/// storage rejections.
async fn store(
    app: &SharedState,
    dialect: Dialect,
    series: Vec<SeriesSamples>,
    mut problems: Vec<String>,
    unlisted: usize,
) -> Response {
    let storage = app.storage.clone();
    let result: Result<(AppendResult, Vec<SeriesSamples>), StorageError> =
        tokio::task::spawn_blocking(move || storage.append(&series).map(|r| (r, series)))
            .await
            .unwrap_or_else(|e| Err(StorageError::Corrupt(format!("write task failed: {e}"))));
    let (result, series) = match result {
        Ok(r) => r,
        Err(e @ StorageError::Overloaded { .. }) => {
            return error(dialect, StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        Err(e @ StorageError::CannotPersist) => {
            return error(dialect, StatusCode::INSUFFICIENT_STORAGE, e.to_string())
        }
        Err(e) => return error(dialect, StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    for (i, e) in &result.rejected {
        problems.push(format!("series {}: {e}", series[*i].labels));
    }
    if app.storage.sync_writes() && result.samples > 0 {
        app.storage.wait_durable(result.wal_position).await;
    }
    if problems.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let total = problems.len() + unlisted;
    let mut msg = format!(
        "partial write: {} samples stored, {total} problem{}: ",
        result.samples,
        if total == 1 { "" } else { "s" }
    );
    msg.push_str(
        &problems
            .iter()
            .take(MAX_LISTED)
            .cloned()
            .collect::<Vec<_>>()
            .join("; "),
    );
    if total > MAX_LISTED {
        msg.push_str(&format!("; and {} more", total - MAX_LISTED));
    }
    error(dialect, StatusCode::BAD_REQUEST, msg)
}

async fn line_protocol_write(
    app: SharedState,
    dialect: Dialect,
    query: Option<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let limit = app.config.http.max_body_bytes.0;
    let body = match body_or_error(dialect, body, limit) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let params = Params::from_query(query.as_deref());
    let precision = match params.get("precision").filter(|p| !p.is_empty()) {
        None => Precision::Nanoseconds,
        Some(p) => match Precision::parse(p) {
            Some(p) => p,
            None => {
                return error(
                    dialect,
                    StatusCode::BAD_REQUEST,
                    format!("invalid precision {p:?}: use ns, us, ms, s, m or h"),
                )
            }
        },
    };
    if let Err(r) = utf8(dialect, &body) {
        return *r;
    }
    let now = app.storage.now_ms();
    let parsed = tokio::task::spawn_blocking(move || {
        let text = std::str::from_utf8(&body).expect("checked above");
        line_protocol::parse(text, precision, now, &[])
    })
    .await;
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => return error(dialect, StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let problems = parsed.errors.iter().map(|e| e.message.clone()).collect();
    store(
        &app,
        dialect,
        parsed.series,
        problems,
        parsed.refused.saturating_sub(parsed.errors.len()),
    )
    .await
}

pub async fn influx_v1(
    State(app): State<SharedState>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    line_protocol_write(app, Dialect::InfluxV1, query, body).await
}

pub async fn influx_v2(
    State(app): State<SharedState>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    line_protocol_write(app, Dialect::InfluxV2, query, body).await
}

pub async fn opentsdb(
    State(app): State<SharedState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let dialect = Dialect::OpenTsdb;
    let body = match body_or_error(dialect, body, app.config.http.max_body_bytes.0) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let parsed = match opentsdb::parse(&body, &[]) {
        Ok(p) => p,
        Err(msg) => return error(dialect, StatusCode::BAD_REQUEST, msg),
    };
    let problems = parsed
        .errors
        .iter()
        .map(|e| format!("data point {}: {}", e.index, e.message))
        .collect();
    store(
        &app,
        dialect,
        parsed.series,
        problems,
        parsed.refused.saturating_sub(parsed.errors.len()),
    )
    .await
}

pub async fn vm_import(
    State(app): State<SharedState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let dialect = Dialect::VictoriaMetrics;
    let body = match body_or_error(dialect, body, app.config.http.max_body_bytes.0) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let text = match utf8(dialect, &body) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let parsed = vm_import::parse(text);
    let problems = parsed
        .errors
        .iter()
        .map(|e| format!("line {}: {}", e.line, e.message))
        .collect();
    store(
        &app,
        dialect,
        parsed.series,
        problems,
        parsed.refused.saturating_sub(parsed.errors.len()),
    )
    .await
}
