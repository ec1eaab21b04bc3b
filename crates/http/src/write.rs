//! Write endpoints in the formats the systems perch replaces speak:
//! InfluxDB 1.x `/write` and 2.x `/api/v2/write` (line protocol), OpenTSDB
//! `/api/put` and VictoriaMetrics `/api/v1/import` (JSON lines).
//!
//! Every valid item of a body is stored even when others are malformed (a
//! partial write, like InfluxDB); the response names each bad line or item.
//! A write is acknowledged once it is in the head and the WAL buffer, which is
//! synced within `storage.flush_interval`; with `storage.sync_writes` the
//! response waits for the sync.
//!
//! A refused write (in whole or in part) is recorded in the recent problems
//! the Overview shows, with the route and the reason the client was given.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;

use super::auth::Caller;
use super::error::ErrorBody;
use super::extract::QueryParams;
use super::{ApiError, SharedState};
use base::problems::{Problem, ProblemKind};
use base::ErrorKind;
use ingest::line_protocol::{self, Precision};
use ingest::{opentsdb, vm_import};
use store::{AppendResult, SeriesSamples, StorageError};

/// How many problems a response lists before summarizing.
const MAX_LISTED: usize = 10;

/// A write answers 204, or in the error shape of the API it speaks.
type WriteResult = Result<StatusCode, ApiError>;

/// Records a refused write in the recent problems, and passes it on in the
/// error shape of the API.
fn answer(
    app: &SharedState,
    caller: &Caller,
    route: &str,
    body: ErrorBody,
    result: WriteResult,
) -> WriteResult {
    result.map_err(|e| {
        let problem = Problem::new(ProblemKind::WriteRefused, &caller.who, e.message())
            .with_address(caller.ip)
            .with_route(route);
        base::problems::record(problem, app.storage.now_ms());
        e.with_body(body)
    })
}

/// The body, or a refusal that names the write limit. Write handlers take
/// the body's rejection themselves: before the handler, it could only be
/// refused in perch's own shape, not the API's.
fn read_body(read: Result<Bytes, BytesRejection>, limit: u64) -> Result<Bytes, ApiError> {
    read.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "request body is larger than http.max_body_bytes ({}); split the write into smaller batches",
                    config::ByteSize(limit)
                ),
            )
        } else {
            ApiError::rejected(rej.status(), format!("cannot read the request body: {rej}"))
        }
    })
}

fn utf8(body: &Bytes) -> Result<&str, ApiError> {
    std::str::from_utf8(body).map_err(|e| {
        ApiError::invalid(format!(
            "request body is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })
}

/// Stores parsed series; a partial write is refused (400) with the parse
/// problems and the storage's rejections.
async fn store(
    app: &SharedState,
    series: Vec<SeriesSamples>,
    mut problems: Vec<String>,
    unlisted: usize,
) -> WriteResult {
    let storage = app.storage.clone();
    let (result, series): (AppendResult, Vec<SeriesSamples>) =
        tokio::task::spawn_blocking(move || storage.append(&series).map(|r| (r, series)))
            .await
            .unwrap_or_else(|e| Err(StorageError::Corrupt(format!("write task failed: {e}"))))?;
    for (i, e) in &result.rejected {
        problems.push(format!("series {}: {e}", series[*i].labels));
    }
    if app.storage.sync_writes() && result.samples > 0 {
        app.storage.wait_durable(result.wal_position).await;
    }
    if problems.is_empty() {
        return Ok(StatusCode::NO_CONTENT);
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
    Err(ApiError::invalid(msg))
}

async fn line_protocol_write(
    app: &SharedState,
    QueryParams(params): QueryParams,
    read: Result<Bytes, BytesRejection>,
) -> WriteResult {
    let body = read_body(read, app.config.http.max_body_bytes.0)?;
    let precision = match params.get("precision").filter(|p| !p.is_empty()) {
        None => Precision::Nanoseconds,
        Some(p) => Precision::parse(p).ok_or_else(|| {
            ApiError::invalid(format!(
                "invalid precision {p:?}: use ns, us, ms, s, m or h"
            ))
        })?,
    };
    utf8(&body)?;
    let now = app.storage.now_ms();
    let parsed = tokio::task::spawn_blocking(move || {
        let text = std::str::from_utf8(&body).expect("checked above");
        line_protocol::parse(text, precision, now, &[])
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let problems = parsed.errors.iter().map(|e| e.message.clone()).collect();
    store(
        app,
        parsed.series,
        problems,
        parsed.refused.saturating_sub(parsed.errors.len()),
    )
    .await
}

pub async fn influx_v1(
    State(app): State<SharedState>,
    caller: Caller,
    params: QueryParams,
    body: Result<Bytes, BytesRejection>,
) -> WriteResult {
    let result = line_protocol_write(&app, params, body).await;
    answer(&app, &caller, "/write", ErrorBody::InfluxV1, result)
}

pub async fn influx_v2(
    State(app): State<SharedState>,
    caller: Caller,
    params: QueryParams,
    body: Result<Bytes, BytesRejection>,
) -> WriteResult {
    let result = line_protocol_write(&app, params, body).await;
    answer(&app, &caller, "/api/v2/write", ErrorBody::InfluxV2, result)
}

pub async fn opentsdb(
    State(app): State<SharedState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> WriteResult {
    let result = opentsdb_write(&app, body).await;
    answer(&app, &caller, "/api/put", ErrorBody::OpenTsdb, result)
}

async fn opentsdb_write(app: &SharedState, read: Result<Bytes, BytesRejection>) -> WriteResult {
    let body = read_body(read, app.config.http.max_body_bytes.0)?;
    let parsed = opentsdb::parse(&body, &[])?;
    let problems = parsed
        .errors
        .iter()
        .map(|e| format!("data point {}: {}", e.index, e.message))
        .collect();
    store(
        app,
        parsed.series,
        problems,
        parsed.refused.saturating_sub(parsed.errors.len()),
    )
    .await
}

pub async fn vm_import(
    State(app): State<SharedState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> WriteResult {
    let result = vm_import_write(&app, body).await;
    answer(
        &app,
        &caller,
        "/api/v1/import",
        ErrorBody::VictoriaMetrics,
        result,
    )
}

async fn vm_import_write(app: &SharedState, read: Result<Bytes, BytesRejection>) -> WriteResult {
    let body = read_body(read, app.config.http.max_body_bytes.0)?;
    let parsed = vm_import::parse(utf8(&body)?);
    let problems = parsed
        .errors
        .iter()
        .map(|e| format!("line {}: {}", e.line, e.message))
        .collect();
    store(
        app,
        parsed.series,
        problems,
        parsed.refused.saturating_sub(parsed.errors.len()),
    )
    .await
}
