//! `GET /api/v1/export` (VictoriaMetrics JSON lines) and
//! `GET /api/v1/export/csv`, streamed: series are read in small batches one
//! day at a time, so an export of everything needs little memory.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use tokio::sync::mpsc;

use super::extract::Params;
use super::{ApiError, SharedState};
use base::selector::parse_selector;
use ingest::vm_import;
use query::params::parse_time;
use store::{Labels, SeriesId, Storage};

const SERIES_PER_BATCH: usize = 32;
const SLICE_MS: i64 = 86_400_000;
/// Per batch and day; 32 series at 1 Hz for a day is 2.8 M samples.
const MAX_SAMPLES_PER_READ: usize = 8_000_000;

struct ExportRequest {
    series: Vec<(SeriesId, Arc<Labels>)>,
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
    let start = params
        .get("start")
        .map(|s| parse_time(s, "start"))
        .transpose()?
        .unwrap_or(i64::MIN);
    let end = params
        .get("end")
        .map(|s| parse_time(s, "end"))
        .transpose()?
        .unwrap_or_else(|| app.storage.now_ms());
    if start > end {
        return Err(ApiError::invalid("start is after end"));
    }
    let mut series: Vec<(SeriesId, Arc<Labels>)> = Vec::new();
    for sel in selectors {
        for set in parse_selector(sel)? {
            series.extend(app.storage.select(&set, start, end));
        }
    }
    series.sort_by_key(|(id, _)| *id);
    series.dedup_by_key(|(id, _)| *id);
    Ok(ExportRequest { series, start, end })
}

/// Runs `emit` over every (labels, timestamps, values) slice on a blocking
/// thread and streams what it writes.
fn stream(
    storage: Arc<Storage>,
    req: ExportRequest,
    header_line: Option<String>,
    emit: impl Fn(&mut String, &Labels, &[i64], &[f64]) + Send + 'static,
) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        if let Some(h) = header_line {
            if tx.blocking_send(Ok(Bytes::from(h))).is_err() {
                return;
            }
        }
        let Some((lo, hi)) = storage.data_extent() else {
            return;
        };
        let (start, end) = (req.start.max(lo), req.end.min(hi));
        for batch in req.series.chunks(SERIES_PER_BATCH) {
            let ids: Vec<SeriesId> = batch.iter().map(|(id, _)| *id).collect();
            let mut slice_start = start;
            while slice_start <= end {
                let slice_end = slice_start.saturating_add(SLICE_MS - 1).min(end);
                let data = match storage.read(&ids, slice_start, slice_end, MAX_SAMPLES_PER_READ) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                        return;
                    }
                };
                let mut out = String::new();
                for s in &data {
                    emit(&mut out, &s.labels, &s.ts, &s.values);
                }
                if !out.is_empty() && tx.blocking_send(Ok(Bytes::from(out))).is_err() {
                    return; // client went away
                }
                if slice_end == i64::MAX {
                    break;
                }
                slice_start = slice_end + 1;
            }
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

pub async fn json_lines(
    State(app): State<SharedState>,
    params: Params,
) -> Result<impl IntoResponse, ApiError> {
    let req = parse_request(&app, &params)?;
    let body = stream(app.storage.clone(), req, None, vm_import::write_line);
    Ok(([(header::CONTENT_TYPE, "application/stream+json")], body))
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

pub async fn csv(
    State(app): State<SharedState>,
    params: Params,
) -> Result<impl IntoResponse, ApiError> {
    let req = parse_request(&app, &params)?;
    // Without an explicit format: name, every label seen, time, value.
    let spec = match params.get("format") {
        Some(f) => f.to_string(),
        None => {
            let mut names: Vec<String> = req
                .series
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
    };
    let columns = parse_columns(&spec)?;
    let header_line = params
        .get("header")
        .filter(|h| *h == "true" || *h == "1")
        .map(|_| {
            let mut h = spec.replace(' ', "");
            h.push('\n');
            h
        });
    let body = stream(
        app.storage.clone(),
        req,
        header_line,
        move |out, labels, ts, values| {
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
        },
    );
    Ok(([(header::CONTENT_TYPE, "text/csv")], body))
}
