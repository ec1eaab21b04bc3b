//! The read side of the Prometheus HTTP API: `/api/v1/query`,
//! `/api/v1/query_range`, `/api/v1/series`, `/api/v1/labels`,
//! `/api/v1/label/{name}/values`, `/api/v1/metadata`,
//! `/api/v1/status/buildinfo`, `/api/v1/format_query` and an empty
//! `/api/v1/query_exemplars` (Grafana asks for it). GET and form POST alike;
//! responses in Prometheus' exact JSON shapes. Evaluation runs on query
//! threads (`query::run`), never on the async workers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::extract::{Params, Path, QueryParams};
use super::prom_wire::{encode_query_result, PrometheusSuccess};
use super::wire::Success;
use super::{ApiError, SharedState};
use base::labels::{is_valid_label_name, Matcher, METRIC_NAME};
use base::selector::parse_selector;
use query::params::{parse_duration_ms, parse_time};
use query::promql::{Engine, QueryOptions};
use query::QueryError;
use store::Labels;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .route("/api/v1/format_query", get(format_query).post(format_query))
        .route("/api/v1/query_exemplars", get(exemplars).post(exemplars))
        .layer(tower_http::compression::CompressionLayer::new())
}

/// The Prometheus release whose API (and PromQL semantics: left-open
/// ranges) perch implements; Grafana reads it to pick features.
const PROMETHEUS_API_VERSION: &str = "3.0.0";

fn options(p: &Params) -> Result<QueryOptions, ApiError> {
    let timeout = p
        .get("timeout")
        .filter(|t| !t.is_empty())
        .map(|t| parse_duration_ms(t, "timeout"))
        .transpose()?;
    if let Some(t) = timeout {
        if t <= 0 {
            return Err(ApiError::invalid(
                "invalid parameter \"timeout\": must be positive",
            ));
        }
    }
    Ok(QueryOptions {
        timeout: timeout.map(|ms| Duration::from_millis(ms as u64)),
        no_rollups: p.get("nocache").is_some_and(|v| v == "1" || v == "true")
            || p.get("no_rollups").is_some_and(|v| v == "1" || v == "true"),
    })
}

fn required<'a>(p: &'a Params, name: &str) -> Result<&'a str, ApiError> {
    match p.get(name) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ApiError::invalid(format!(
            "invalid parameter \"{name}\": missing (required)"
        ))),
    }
}

/// A query's answer, encoded on the query thread: large results stay off
/// the async workers.
fn encoded(body: Result<Vec<u8>, serde_json::Error>) -> Result<impl IntoResponse, ApiError> {
    let body = body.map_err(|e| ApiError::internal(format!("cannot encode the result: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body))
}

async fn query(State(app): State<SharedState>, p: Params) -> Result<impl IntoResponse, ApiError> {
    let q = required(&p, "query")?.to_string();
    let t = match p.get("time").filter(|t| !t.is_empty()) {
        Some(t) => parse_time(t, "time")?,
        None => app.storage.now_ms(),
    };
    let opts = options(&p)?;
    let engine = Engine::new(app.storage.clone(), &app.config.query);
    encoded(
        query::run(move || {
            engine
                .instant(&q, t, &opts)
                .map(|o| encode_query_result(&o.value))
        })
        .await?,
    )
}

async fn query_range(
    State(app): State<SharedState>,
    p: Params,
) -> Result<impl IntoResponse, ApiError> {
    let start = parse_time(p.get("start").unwrap_or(""), "start")?;
    let end = parse_time(p.get("end").unwrap_or(""), "end")?;
    if end < start {
        return Err(ApiError::invalid(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let step = parse_duration_ms(p.get("step").unwrap_or(""), "step")?;
    if step <= 0 {
        return Err(ApiError::invalid(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    let q = required(&p, "query")?.to_string();
    let opts = options(&p)?;
    let engine = Engine::new(app.storage.clone(), &app.config.query);
    encoded(
        query::run(move || {
            engine
                .range(&q, start, end, step, &opts)
                .map(|o| encode_query_result(&o.value))
        })
        .await?,
    )
}

/// `match[]` selectors as matcher sets (each may itself be a union), held
/// to the limits every query language shares (`base::limits`: how many, how
/// long, how deep) before any is parsed.
fn match_sets(p: &Params) -> Result<Vec<Vec<Matcher>>, ApiError> {
    let selectors = p.all("match[]");
    base::limits::check_selectors(&selectors)?;
    let mut sets = Vec::new();
    for s in selectors {
        sets.extend(parse_selector(s)?);
    }
    Ok(sets)
}

/// `start`/`end` of metadata requests; absent means all time.
fn time_range(p: &Params) -> Result<(i64, i64), ApiError> {
    let start = match p.get("start").filter(|s| !s.is_empty()) {
        Some(s) => parse_time(s, "start")?,
        None => i64::MIN,
    };
    let end = match p.get("end").filter(|s| !s.is_empty()) {
        Some(s) => parse_time(s, "end")?,
        None => i64::MAX,
    };
    if end < start {
        return Err(ApiError::invalid(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    Ok((start, end))
}

fn limit(p: &Params) -> Result<usize, ApiError> {
    match p.get("limit").filter(|s| !s.is_empty()) {
        None => Ok(usize::MAX),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n > 0 => Ok(n as usize),
            Ok(_) => Ok(usize::MAX),
            Err(_) => Err(ApiError::invalid(format!(
                "invalid parameter \"limit\": cannot parse {s:?}"
            ))),
        },
    }
}

/// Every series matching a matcher set (any of the sets), deduplicated and
/// sorted by labels.
fn matching_series(
    app: &SharedState,
    sets: &[Vec<Matcher>],
    start: i64,
    end: i64,
) -> Result<Vec<Arc<Labels>>, QueryError> {
    let max = app.config.query.max_series;
    let mut out: Vec<(u32, Arc<Labels>)> = Vec::new();
    for set in sets {
        out.extend(app.storage.select(set, start, end));
        if out.len() > max.saturating_mul(4) {
            break;
        }
    }
    out.sort_by_key(|(id, _)| *id);
    out.dedup_by_key(|(id, _)| *id);
    let mut labels: Vec<Arc<Labels>> = out.into_iter().map(|(_, l)| l).collect();
    labels.sort();
    Ok(labels)
}

async fn series(
    State(app): State<SharedState>,
    p: Params,
) -> Result<Json<PrometheusSuccess<Vec<Arc<Labels>>>>, ApiError> {
    if p.all("match[]").is_empty() {
        return Err(ApiError::invalid("no match[] parameter provided"));
    }
    let (start, end) = time_range(&p)?;
    let sets = match_sets(&p)?;
    let lim = limit(&p)?;
    let mut series = query::run(move || matching_series(&app, &sets, start, end)).await?;
    series.truncate(lim);
    Ok(Json(PrometheusSuccess(series)))
}

async fn labels(
    State(app): State<SharedState>,
    p: Params,
) -> Result<Success<Vec<String>>, ApiError> {
    names_or_values(app, p, None).await
}

async fn label_values(
    State(app): State<SharedState>,
    Path(name): Path<String>,
    QueryParams(p): QueryParams,
) -> Result<Success<Vec<String>>, ApiError> {
    if name != METRIC_NAME && !is_valid_label_name(&name) {
        return Err(ApiError::invalid(format!("invalid label name: {name:?}")));
    }
    names_or_values(app, p, Some(name)).await
}

/// Label names (`name` = None) or the values of one label, of the series
/// matching `match[]` (all series if none) with data in `[start, end]`.
async fn names_or_values(
    app: SharedState,
    p: Params,
    name: Option<String>,
) -> Result<Success<Vec<String>>, ApiError> {
    let (start, end) = time_range(&p)?;
    let mut sets = match_sets(&p)?;
    let lim = limit(&p)?;
    let names = query::run(move || {
        let all_time = start == i64::MIN && end == i64::MAX;
        let mut out: Vec<String> = if sets.is_empty() && all_time {
            // The index answers for all time without touching series.
            match &name {
                None => app.storage.label_names(&[], start, end),
                Some(n) => app.storage.label_values(n, &[], start, end),
            }
        } else {
            if sets.is_empty() {
                sets.push(vec![every_series()]);
            }
            let series = matching_series(&app, &sets, start, end)?;
            let mut v: Vec<String> = match &name {
                None => series
                    .iter()
                    .flat_map(|l| l.iter().map(|x| x.name.clone()).collect::<Vec<_>>())
                    .collect(),
                Some(n) => series
                    .iter()
                    .filter_map(|l| l.get(n).map(str::to_string))
                    .collect(),
            };
            v.sort();
            v.dedup();
            v
        };
        out.truncate(lim);
        Ok(out)
    })
    .await?;
    Ok(Success(names))
}

/// `{__name__=~".+"}`.
fn every_series() -> Matcher {
    Matcher::regex(METRIC_NAME, ".+").expect("a valid regex")
}

/// One metric's metadata, as Prometheus lists it.
#[derive(Serialize)]
struct MetricMetadata {
    #[serde(rename = "type")]
    kind: &'static str,
    help: &'static str,
    unit: String,
}

/// Units of metrics, from the devices (discovery configs, firmware
/// conventions) and `[devices] units`; perch keeps no types or help texts.
/// `metric` narrows to one metric, `limit` to that many metrics.
async fn metadata(
    State(app): State<SharedState>,
    QueryParams(p): QueryParams,
) -> Result<Success<BTreeMap<String, Vec<MetricMetadata>>>, ApiError> {
    let lim = limit(&p)?;
    let only = p.get("metric").filter(|m| !m.is_empty());
    let units = tokio::task::spawn_blocking(move || super::devices_api::units(&app))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Success(
        units
            .into_iter()
            .filter(|(m, _)| only.is_none_or(|o| o == m))
            .take(lim)
            .map(|(m, units)| {
                let entries = units
                    .into_iter()
                    .map(|unit| MetricMetadata {
                        kind: "unknown",
                        help: "",
                        unit,
                    })
                    .collect();
                (m, entries)
            })
            .collect(),
    ))
}

/// Keys sorted, as this answer has always had them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BuildInfo {
    branch: &'static str,
    build_date: &'static str,
    build_user: &'static str,
    go_version: &'static str,
    revision: &'static str,
    version: &'static str,
}

async fn buildinfo() -> Success<BuildInfo> {
    Success(BuildInfo {
        branch: "perch",
        build_date: "",
        build_user: "perch",
        go_version: concat!("none (perch ", env!("CARGO_PKG_VERSION"), ", Rust)"),
        revision: concat!("perch-", env!("CARGO_PKG_VERSION")),
        version: PROMETHEUS_API_VERSION,
    })
}

async fn format_query(p: Params) -> Result<Success<String>, ApiError> {
    let q = required(&p, "query")?.to_string();
    let pretty = query::run(move || query::promql::parse(&q).map(|e| e.prettify())).await?;
    Ok(Success(pretty))
}

/// perch stores no exemplars; the query is still checked so that a typo
/// shows up as it would in Prometheus.
async fn exemplars(p: Params) -> Result<Success<[(); 0]>, ApiError> {
    time_range(&p)?;
    if let Some(q) = p.get("query").filter(|q| !q.is_empty()) {
        let q = q.to_string();
        query::run(move || query::promql::parse(&q).map(|_| ())).await?;
    }
    Ok(Success([]))
}
