//! `GET|POST /api/v1/export` (VictoriaMetrics JSON lines) and
//! `GET|POST /api/v1/export/csv`, streamed from a blocking thread: series
//! are read in batches of 32 over time slices sized to their data (a day to
//! begin with, wider where there is little or nothing, narrower where there
//! is much), so an export of everything needs little memory and a sample
//! far in the future costs a few reads, not one per empty day.
//!
//! Limits (docs/query.md, "Exports"):
//! - `match[]` is held to the limits every query language shares
//!   (`base::limits`) before it is parsed;
//! - an absent `end` is now plus [`END_ALLOWANCE_MS`], not the newest
//!   sample ever written;
//! - `query.export_timeout` of work (reading and encoding; not the time
//!   spent waiting for the client to take what was sent), and a client
//!   that takes nothing for that long ends the export too;
//! - `query.max_export_samples` samples.
//!
//! A limit reached before the first bytes are sent is an error answer
//! (`execution` 422, `timeout` 503); once the 200 went out, the stream is
//! cut without its terminating chunk, so clients report a truncated
//! transfer rather than take a partial export for a whole one, and the
//! log says why.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::extract::Params;
use super::{ApiError, SharedState};
use base::labels::Matcher;
use base::selector::parse_selector;
use base::ErrorKind;
use ingest::vm_import;
use query::params::parse_time;
use store::{Labels, SeriesId, Storage, StorageError};

const SERIES_PER_BATCH: usize = 32;
/// The first time slice of a batch.
const FIRST_SLICE_MS: i64 = 86_400_000;
const MIN_SLICE_MS: i64 = 1_000;
/// Samples a read aims at: a slice widens below half of it and narrows
/// above twice it.
const TARGET_SAMPLES_PER_READ: usize = 250_000;
/// A read that would hold more fails and is retried over a narrower slice.
const MAX_SAMPLES_PER_READ: usize = 1_000_000;
/// Bytes gathered before they are handed to the client.
const CHUNK_BYTES: usize = 256 << 10;
/// How far past now an absent `end` reaches (device clocks run ahead).
pub const END_ALLOWANCE_MS: i64 = 5 * 60_000;

struct ExportRequest {
    selectors: Vec<String>,
    start: i64,
    end: i64,
}

fn parse_request(app: &SharedState, params: &Params) -> Result<ExportRequest, ApiError> {
    let selectors = params.all("match[]");
    if selectors.is_empty() {
        return Err(ApiError::invalid(
            "missing match[] parameter, e.g. match[]={__name__=~\".+\"}",
        ));
    }
    base::limits::check_selectors(&selectors)?;
    let time = |key: &str| {
        params
            .get(key)
            .filter(|s| !s.is_empty())
            .map(|s| parse_time(s, key))
            .transpose()
    };
    let start = time("start")?.unwrap_or(i64::MIN);
    let end = time("end")?.unwrap_or_else(|| app.storage.now_ms().saturating_add(END_ALLOWANCE_MS));
    if start > end {
        return Err(ApiError::invalid(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    Ok(ExportRequest {
        selectors: selectors.into_iter().map(str::to_string).collect(),
        start,
        end,
    })
}

/// Writes the samples of one series in one slice.
type Emit = Box<dyn Fn(&mut String, &Labels, &[i64], &[f64]) + Send>;

/// What an export writes: the header (if any) and how each slice is
/// written, decided once the series are known.
type Layout = Box<dyn FnOnce(&[(SeriesId, Arc<Labels>)]) -> (String, Emit) + Send>;

/// How the export ended early.
enum Stop {
    /// The client went away (or took nothing for too long): nobody to tell.
    Gone,
    Failed(ApiError),
}

impl From<ApiError> for Stop {
    fn from(e: ApiError) -> Stop {
        Stop::Failed(e)
    }
}

impl From<StorageError> for Stop {
    fn from(e: StorageError) -> Stop {
        Stop::Failed(e.into())
    }
}

/// The producing side of the body: gathers bytes, hands them over,
/// measures work and waiting apart.
struct Out {
    tx: mpsc::Sender<Result<Bytes, ApiError>>,
    rt: Handle,
    buf: String,
    began: Instant,
    /// Time spent waiting for the client to take a chunk.
    waited: Duration,
    timeout: Duration,
    max_samples: usize,
    samples: usize,
    /// Whether bytes went out: then the status was 200 already.
    sent: bool,
}

impl Out {
    fn check_time(&self) -> Result<(), Stop> {
        if self.began.elapsed().saturating_sub(self.waited) > self.timeout {
            return Err(Stop::Failed(ApiError::new(
                ErrorKind::DeadlineExceeded,
                format!(
                    "export ran longer than query.export_timeout ({:?}); narrow match[] or the time range",
                    self.timeout
                ),
            )));
        }
        Ok(())
    }

    /// Counts `n` more samples against `query.max_export_samples`.
    fn count(&mut self, n: usize) -> Result<(), Stop> {
        self.samples = self.samples.saturating_add(n);
        if self.samples > self.max_samples {
            return Err(Stop::Failed(ApiError::new(
                ErrorKind::Unprocessable,
                format!(
                    "export would return more than {} samples (query.max_export_samples); narrow match[] or the time range",
                    self.max_samples
                ),
            )));
        }
        Ok(())
    }

    fn send(&mut self, item: Result<Bytes, ApiError>) -> Result<(), Stop> {
        let waiting = Instant::now();
        let sent = self
            .rt
            .block_on(tokio::time::timeout(self.timeout, self.tx.send(item)));
        self.waited += waiting.elapsed();
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stop::Gone),
            Err(_) => {
                tracing::warn!(
                    timeout = ?self.timeout,
                    samples = self.samples,
                    "export stopped: the client took nothing for query.export_timeout"
                );
                Err(Stop::Gone)
            }
        }
    }

    fn flush(&mut self) -> Result<(), Stop> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.send(Ok(chunk))?;
        self.sent = true;
        Ok(())
    }
}

/// Selects the series, then reads and writes them batch by batch, slice by
/// slice, within the limits.
fn produce(
    storage: &Storage,
    req: &ExportRequest,
    layout: Layout,
    out: &mut Out,
) -> Result<(), Stop> {
    let mut sets: Vec<Vec<Matcher>> = Vec::new();
    for sel in &req.selectors {
        sets.extend(parse_selector(sel).map_err(ApiError::from)?);
    }
    let mut series: Vec<(SeriesId, Arc<Labels>)> = Vec::new();
    for set in &sets {
        series.extend(storage.select(set, req.start, req.end));
        out.check_time()?;
    }
    series.sort_by_key(|(id, _)| *id);
    series.dedup_by_key(|(id, _)| *id);
    let (header, emit) = layout(&series);
    out.buf.push_str(&header);
    let Some((lo, hi)) = storage.data_extent() else {
        return out.flush();
    };
    let (start, end) = (req.start.max(lo), req.end.min(hi));
    for batch in series.chunks(SERIES_PER_BATCH) {
        let ids: Vec<SeriesId> = batch.iter().map(|(id, _)| *id).collect();
        let mut width = FIRST_SLICE_MS;
        let mut from = start;
        while from <= end {
            out.check_time()?;
            let to = from.saturating_add(width - 1).min(end);
            let data = match storage.read(&ids, from, to, MAX_SAMPLES_PER_READ) {
                Ok(d) => d,
                Err(StorageError::TooManySamples { .. }) if width > MIN_SLICE_MS => {
                    width = (width / 8).max(MIN_SLICE_MS);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let n: usize = data.iter().map(|s| s.ts.len()).sum();
            out.count(n)?;
            for s in &data {
                emit(&mut out.buf, &s.labels, &s.ts, &s.values);
            }
            if out.buf.len() >= CHUNK_BYTES {
                out.flush()?;
            }
            if n < TARGET_SAMPLES_PER_READ / 2 {
                width = width.saturating_mul(2);
            } else if n > TARGET_SAMPLES_PER_READ * 2 {
                width = (width / 2).max(MIN_SLICE_MS);
            }
            if to >= end {
                break;
            }
            from = to + 1;
        }
    }
    out.flush()
}

/// At most `n` characters of `s`, for the log.
fn first_chars(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

/// Starts the export on a blocking thread and answers once its first bytes
/// (or its end, or its error) are there: what fails early is an error
/// answer with its status, what fails later cuts the stream.
async fn respond(
    app: SharedState,
    params: Params,
    layout: Layout,
    content_type: &'static str,
) -> Result<impl IntoResponse, ApiError> {
    let req = parse_request(&app, &params)?;
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, ApiError>>(4);
    let mut out = Out {
        tx,
        rt: Handle::current(),
        buf: String::new(),
        began: Instant::now(),
        waited: Duration::ZERO,
        timeout: app.config.query.export_timeout.std(),
        max_samples: app.config.query.max_export_samples,
        samples: 0,
        sent: false,
    };
    let storage = app.storage.clone();
    tokio::task::spawn_blocking(move || {
        // A panic must not end the body as if it were complete.
        let produced = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            produce(&storage, &req, layout, &mut out)
        }))
        .unwrap_or_else(|_| {
            Err(Stop::Failed(ApiError::internal(
                "internal error while exporting (see the log)",
            )))
        });
        if let Err(Stop::Failed(e)) = produced {
            if out.sent {
                tracing::warn!(
                    error = e.message(),
                    samples = out.samples,
                    elapsed = ?out.began.elapsed(),
                    selector = %first_chars(&req.selectors[0], 200),
                    selectors = req.selectors.len(),
                    "export cut short"
                );
            }
            let _ = out.send(Err(e));
        }
    });
    let first: Option<Bytes> = match rx.recv().await {
        Some(Err(e)) => return Err(e),
        Some(Ok(bytes)) => Some(bytes),
        None => None,
    };
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| {
            // After the 200: an error ends the body without its last chunk.
            let item = item.map_err(|e| std::io::Error::other(e.message().to_string()));
            (item, rx)
        })
    });
    let head = futures_util::stream::iter(first.into_iter().map(Ok::<Bytes, std::io::Error>));
    let body = Body::from_stream(futures_util::StreamExt::chain(head, rest));
    Ok(([(header::CONTENT_TYPE, content_type)], body))
}

pub async fn json_lines(
    State(app): State<SharedState>,
    params: Params,
) -> Result<impl IntoResponse, ApiError> {
    let layout: Layout = Box::new(|_| (String::new(), Box::new(vm_import::write_line)));
    respond(app, params, layout, "application/stream+json").await
}

/// One CSV column, VictoriaMetrics' `format` names: `__name__`, `__value__`,
/// `__timestamp__:<unix_s|unix_ms|unix_ns|rfc3339>` or a label name.
enum Column {
    Name,
    Value,
    Timestamp(TimeFormat),
    Label(String),
}

#[derive(Clone, Copy)]
enum TimeFormat {
    UnixS,
    UnixMs,
    UnixNs,
    Rfc3339,
}

fn parse_columns(spec: &str) -> Result<Vec<Column>, ApiError> {
    spec.split(',')
        .map(|c| {
            let c = c.trim();
            Ok(match c {
                "__name__" => Column::Name,
                "__value__" => Column::Value,
                _ if c.starts_with("__timestamp__") => {
                    let fmt = match c.strip_prefix("__timestamp__").unwrap_or("") {
                        ":unix_s" => TimeFormat::UnixS,
                        "" | ":unix_ms" => TimeFormat::UnixMs,
                        ":unix_ns" => TimeFormat::UnixNs,
                        ":rfc3339" => TimeFormat::Rfc3339,
                        other => {
                            return Err(ApiError::invalid(format!(
                                "unknown timestamp format {other:?} in format; use unix_s, unix_ms, unix_ns or rfc3339"
                            )))
                        }
                    };
                    Column::Timestamp(fmt)
                }
                "" => return Err(ApiError::invalid("empty column in format")),
                label => Column::Label(label.to_string()),
            })
        })
        .collect()
}

fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

fn format_time(t: i64, f: TimeFormat) -> String {
    match f {
        TimeFormat::UnixS => (t.div_euclid(1000)).to_string(),
        TimeFormat::UnixMs => t.to_string(),
        TimeFormat::UnixNs => (t as i128 * 1_000_000).to_string(),
        TimeFormat::Rfc3339 => chrono::DateTime::from_timestamp_millis(t)
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            .unwrap_or_default(),
    }
}

/// Without an explicit format: name, every label seen, time, value.
fn default_spec(series: &[(SeriesId, Arc<Labels>)]) -> String {
    let mut names: Vec<String> = series
        .iter()
        .flat_map(|(_, l)| l.iter().map(|l| l.name.clone()).collect::<Vec<_>>())
        .filter(|n| n != "__name__")
        .collect();
    names.sort();
    names.dedup();
    let mut cols = vec!["__name__".to_string()];
    cols.extend(names);
    cols.push("__timestamp__:unix_ms".into());
    cols.push("__value__".into());
    cols.join(",")
}

fn csv_rows(columns: Vec<Column>) -> Emit {
    Box::new(move |out, labels, ts, values| {
        for (t, v) in ts.iter().zip(values) {
            for (i, c) in columns.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match c {
                    Column::Name => csv_field(out, labels.metric_name().unwrap_or("")),
                    Column::Value => out.push_str(&vm_import::format_value(*v)),
                    Column::Timestamp(f) => out.push_str(&format_time(*t, *f)),
                    Column::Label(n) => csv_field(out, labels.get(n).unwrap_or("")),
                }
            }
            out.push('\n');
        }
    })
}

pub async fn csv(
    State(app): State<SharedState>,
    params: Params,
) -> Result<impl IntoResponse, ApiError> {
    let header = params
        .get("header")
        .is_some_and(|h| h == "true" || h == "1");
    let header_line = move |spec: &str| {
        if header {
            let mut h = spec.replace(' ', "");
            h.push('\n');
            h
        } else {
            String::new()
        }
    };
    let layout: Layout = match params.get("format") {
        // An explicit format is checked before anything is read.
        Some(spec) => {
            let columns = parse_columns(spec)?;
            let head = header_line(spec);
            Box::new(move |_| (head, csv_rows(columns)))
        }
        None => Box::new(move |series| {
            let spec = default_spec(series);
            let columns = parse_columns(&spec).unwrap_or_default();
            (header_line(&spec), csv_rows(columns))
        }),
    };
    respond(app, params, layout, "text/csv").await
}
