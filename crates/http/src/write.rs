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
//! It names each failing series once, cut to [`MAX_EXCERPT_BYTES`].
//!
//! Bodies are held in memory while parsed, so writes are bounded twice: a
//! body is read ([`WriteBody`]) only within a memory budget of
//! [`BUDGET_BODIES`] × `http.max_body_bytes` (reserving its declared length,
//! or the whole limit when undeclared), of which one client address may
//! hold half (more gets 429), and within `http.body_timeout` (a stalled
//! upload gets 408 and frees its share); then at most [`WRITES_IN_FLIGHT`]
//! are parsed and stored at once. A slow upload thus never holds a turn
//! others wait for.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::auth::{client_ip, Caller};
use super::error::{excerpt, ErrorBody, MAX_EXCERPT_BYTES};
use super::extract::{bytes_within, BodyDeadline, BodyError, QueryParams};
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

/// Writes parsed and stored at once (each holds its body while parsed).
pub const WRITES_IN_FLIGHT: usize = 4;
/// The memory write bodies may hold at once, in `http.max_body_bytes`.
pub const BUDGET_BODIES: u64 = 4;

static PARSING: Semaphore = Semaphore::const_new(WRITES_IN_FLIGHT);

/// The memory budget of write bodies, in KiB, and who holds how much.
struct WriteGate {
    budget_kib: usize,
    memory: Arc<Semaphore>,
    held: Mutex<HashMap<Option<IpAddr>, usize>>,
}

/// A body's share of the budget, returned on drop.
pub struct Reservation {
    gate: &'static WriteGate,
    ip: Option<IpAddr>,
    kib: usize,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut held = self
            .gate
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = held.get_mut(&self.ip) {
            *h = h.saturating_sub(self.kib);
            if *h == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

impl WriteGate {
    /// The process's gate, sized by the first `http.max_body_bytes` seen.
    fn get(max_body: u64) -> &'static WriteGate {
        static GATE: OnceLock<WriteGate> = OnceLock::new();
        GATE.get_or_init(|| {
            let budget_kib = (BUDGET_BODIES * max_body).div_ceil(1024) as usize;
            WriteGate {
                budget_kib,
                memory: Arc::new(Semaphore::new(budget_kib)),
                held: Mutex::new(HashMap::new()),
            }
        })
    }

    /// Reserves `kib` for a body from `ip`: refused at once past the
    /// address's half, waited for until `deadline` otherwise.
    async fn reserve(
        &'static self,
        ip: Option<IpAddr>,
        kib: usize,
        deadline: Option<BodyDeadline>,
    ) -> Result<Reservation, ApiError> {
        let kib = kib.clamp(1, (self.budget_kib / 2).max(1));
        {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            let h = held.entry(ip).or_insert(0);
            if *h + kib > self.budget_kib / 2 {
                if *h == 0 {
                    held.remove(&ip);
                }
                return Err(ApiError::new(
                    base::ErrorKind::RateLimited,
                    "too many writes in progress from this address; wait for them to finish",
                )
                .with_retry_after(1));
            }
            *h += kib;
        }
        let mut reservation = Reservation {
            gate: self,
            ip,
            kib,
            _permit: None,
        };
        let acquire = self.memory.clone().acquire_many_owned(kib as u32);
        let permit = match deadline {
            Some(d) => tokio::time::timeout_at(d.at, acquire).await.ok(),
            None => Some(acquire.await),
        };
        match permit {
            Some(Ok(p)) => {
                reservation._permit = Some(p);
                Ok(reservation)
            }
            _ => Err(ApiError::unavailable(
                "too many writes in progress; retry shortly",
            )),
        }
    }
}

/// A write's body, read within the write memory budget and
/// `http.body_timeout`, with its share of the budget; or why not, for the
/// handler to answer in its API's shape.
pub struct WriteBody(Result<(Bytes, Reservation), ApiError>);

impl FromRequest<SharedState> for WriteBody {
    type Rejection = Infallible;

    async fn from_request(req: Request, app: &SharedState) -> Result<WriteBody, Infallible> {
        let max = app.config.http.max_body_bytes.0;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(max)
            .min(max);
        let ip = client_ip(req.extensions());
        let deadline = req.extensions().get::<BodyDeadline>().copied();
        let gate = WriteGate::get(max);
        let kib = declared.div_ceil(1024) as usize;
        let reservation = match gate.reserve(ip, kib, deadline).await {
            Ok(r) => r,
            Err(e) => return Ok(WriteBody(Err(e))),
        };
        let read = bytes_within(req, app)
            .await
            .map_err(|e| body_error(e, max))
            .map(|body| (body, reservation));
        Ok(WriteBody(read))
    }
}

/// A body that could not be read: 413 names the write limit, 408 the body
/// timeout. Write handlers take the body's rejection themselves: before the
/// handler, it could only be refused in perch's own shape, not the API's.
fn body_error(e: BodyError, limit: u64) -> ApiError {
    match e {
        BodyError::Rejected(rej) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "request body is larger than http.max_body_bytes ({}); split the write into smaller batches",
                    config::ByteSize(limit)
                ),
            )
        }
        BodyError::Rejected(rej) => {
            ApiError::rejected(rej.status(), format!("cannot read the request body: {rej}"))
        }
        timed_out => timed_out.into_api_error(),
    }
}

/// One series a write could not store: named once, cut to an excerpt.
fn series_problem(series: &str, error: &str) -> String {
    let shown = excerpt(series, MAX_EXCERPT_BYTES);
    let text = if !series.is_empty() && error.contains(series) {
        error.replacen(series, &shown, 1)
    } else {
        format!("series {shown}: {error}")
    };
    excerpt(&text, 2 * MAX_EXCERPT_BYTES).into_owned()
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
        problems.push(series_problem(
            &series[*i].labels.to_string(),
            &e.to_string(),
        ));
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
            .map(|p| excerpt(p, 2 * MAX_EXCERPT_BYTES))
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
    body: WriteBody,
) -> WriteResult {
    let (body, _reservation) = body.0?;
    let precision = match params.get("precision").filter(|p| !p.is_empty()) {
        None => Precision::Nanoseconds,
        Some(p) => Precision::parse(p).ok_or_else(|| {
            ApiError::invalid(format!(
                "invalid precision {:?}: use ns, us, ms, s, m or h",
                excerpt(p, 16)
            ))
        })?,
    };
    utf8(&body)?;
    let _turn = parsing_turn().await?;
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

/// A turn at parsing and storing, once the body is in.
async fn parsing_turn() -> Result<tokio::sync::SemaphorePermit<'static>, ApiError> {
    PARSING
        .acquire()
        .await
        .map_err(|_| ApiError::unavailable("perch is stopping"))
}

pub async fn influx_v1(
    State(app): State<SharedState>,
    caller: Caller,
    params: QueryParams,
    body: WriteBody,
) -> WriteResult {
    let result = line_protocol_write(&app, params, body).await;
    answer(&app, &caller, "/write", ErrorBody::InfluxV1, result)
}

pub async fn influx_v2(
    State(app): State<SharedState>,
    caller: Caller,
    params: QueryParams,
    body: WriteBody,
) -> WriteResult {
    let result = line_protocol_write(&app, params, body).await;
    answer(&app, &caller, "/api/v2/write", ErrorBody::InfluxV2, result)
}

pub async fn opentsdb(
    State(app): State<SharedState>,
    caller: Caller,
    body: WriteBody,
) -> WriteResult {
    let result = opentsdb_write(&app, body).await;
    answer(&app, &caller, "/api/put", ErrorBody::OpenTsdb, result)
}

async fn opentsdb_write(app: &SharedState, body: WriteBody) -> WriteResult {
    let (body, _reservation) = body.0?;
    let _turn = parsing_turn().await?;
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
    body: WriteBody,
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

async fn vm_import_write(app: &SharedState, body: WriteBody) -> WriteResult {
    let (body, _reservation) = body.0?;
    let _turn = parsing_turn().await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_series_is_named_once_and_cut_short() {
        let name = format!("{}{{}}", "m".repeat(1 << 20));
        let error = format!("invalid series {name}: value of label \"__name__\" is too long");
        let p = series_problem(&name, &error);
        assert!(p.len() < 2 * MAX_EXCERPT_BYTES + 8, "{}", p.len());
        assert_eq!(p.matches('…').count(), 1, "{p}");
        let quoted = p.split('…').next().unwrap();
        assert_eq!(quoted.len(), "invalid series ".len() + MAX_EXCERPT_BYTES);
        assert!(p.starts_with("invalid series mmm"), "{p}");
        assert!(p.contains('…'));
        // An error that does not name the series gets it in front.
        assert_eq!(series_problem("cpu{}", "too old"), "series cpu{}: too old");
    }
}
