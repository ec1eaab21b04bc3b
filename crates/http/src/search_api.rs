//! Search over the MQTT history and over series names, in perch's usual
//! envelope `{"status":"success","data":…}` (errors as in `error.rs`):
//!
//! - `GET /api/v1/search?q=&start=&end=&limit=&offset=&sort=time|relevance`
//!   → `data: {"total": n, "hits": [{"time", "topic", "payload",
//!   "client_id", "qos", "retained", "highlight"}]}`
//! - `GET /api/v1/search/histogram?q=&start=&end=&step=`
//!   → `data: {"start", "end", "step", "total", "buckets": [[ms, count]…]}`
//! - `GET /api/v1/search/status` → what the index holds, counters, problems
//! - `GET /api/v1/series/search?q=&limit=` → `data: {"total": n,
//!   "series": [{label: value…}]}` for autocomplete
//!
//! Times in requests are RFC 3339 or Unix seconds like the Prometheus API;
//! times in answers are milliseconds since the epoch. Queries run on
//! blocking threads.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::extract::{Params, QueryParams};
use super::wire::{SortedKeys, Success};
use super::{ApiError, SharedState};
use query::params::{parse_duration_ms, parse_time};
use search::series::SeriesQuery;
use search::{Search, SearchError, SearchRequest, Sort};
use store::Labels;

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 1000;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/api/v1/search", get(search))
        .route("/api/v1/search/histogram", get(histogram))
        .route("/api/v1/search/status", get(status))
        .route("/api/v1/series/search", get(series_search))
        .layer(tower_http::compression::CompressionLayer::new())
}

/// The MQTT history index; search is off without it.
struct Index(Arc<Search>);

impl FromRequestParts<SharedState> for Index {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, app: &SharedState) -> Result<Index, ApiError> {
        app.search
            .clone()
            .map(Index)
            .ok_or_else(|| ApiError::not_found("search is disabled (search.enabled = false)"))
    }
}

/// The index's answers, with their keys sorted as they have always been.
type Found<T> = Result<Success<SortedKeys<T>>, ApiError>;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SearchError> + Send + 'static,
) -> Found<T> {
    let found = tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(Success(SortedKeys(found)))
}

fn time_param(p: &Params, key: &str, default: i64) -> Result<i64, ApiError> {
    match p.get(key).filter(|s| !s.is_empty()) {
        Some(s) => Ok(parse_time(s, key)?),
        None => Ok(default),
    }
}

fn usize_param(p: &Params, key: &str, default: usize) -> Result<usize, ApiError> {
    match p.get(key).filter(|s| !s.is_empty()) {
        Some(s) => s.trim().parse().map_err(|_| {
            ApiError::invalid(format!(
                "invalid parameter {key:?}: {s:?} is not a non-negative integer"
            ))
        }),
        None => Ok(default),
    }
}

async fn search(Index(s): Index, QueryParams(p): QueryParams) -> Found<search::SearchResult> {
    let sort = match p.get("sort").unwrap_or("time") {
        "time" | "" => Sort::Time,
        "relevance" | "score" => Sort::Relevance,
        other => {
            return Err(ApiError::invalid(format!(
                "invalid parameter \"sort\": {other:?}; use time or relevance"
            )))
        }
    };
    let req = SearchRequest {
        q: p.get("q").unwrap_or("").to_string(),
        start: time_param(&p, "start", i64::MIN)?,
        end: time_param(&p, "end", i64::MAX)?,
        limit: usize_param(&p, "limit", DEFAULT_LIMIT)?.min(MAX_LIMIT),
        offset: usize_param(&p, "offset", 0)?,
        sort,
    };
    blocking(move || s.search(&req)).await
}

async fn histogram(
    State(app): State<SharedState>,
    Index(s): Index,
    QueryParams(p): QueryParams,
) -> Found<search::Histogram> {
    let end = time_param(&p, "end", app.storage.now_ms())?;
    let start = time_param(&p, "start", end.saturating_sub(86_400_000))?;
    let step = match p.get("step").filter(|s| !s.is_empty()) {
        Some(st) => parse_duration_ms(st, "step")?,
        // About 100 bars, whole seconds.
        None => (end.saturating_sub(start) / 100 / 1000 + 1) * 1000,
    };
    let q = p.get("q").unwrap_or("").to_string();
    blocking(move || s.histogram(&q, start, end, step)).await
}

async fn status(Index(s): Index) -> Found<search::SearchStatus> {
    blocking(move || Ok(s.status())).await
}

/// `{"series":[…],"total":n}` (keys sorted, as they have always been).
#[derive(Serialize)]
struct SeriesFound {
    series: Vec<Arc<Labels>>,
    total: usize,
}

/// Series whose name or labels contain every word of `q`, best first: the
/// name equal, then starting with, then containing the words, then labels.
async fn series_search(
    State(app): State<SharedState>,
    QueryParams(p): QueryParams,
) -> Result<Success<SeriesFound>, ApiError> {
    let limit = usize_param(&p, "limit", DEFAULT_LIMIT)?.min(MAX_LIMIT);
    let q = SeriesQuery::new(p.get("q").unwrap_or(""));
    let storage = app.storage.clone();
    let found = tokio::task::spawn_blocking(move || {
        let all = storage.select(&[], i64::MIN, i64::MAX);
        let mut ranked: Vec<(u32, &str, usize)> = all
            .iter()
            .enumerate()
            .filter_map(|(i, (_, l))| {
                let name = l.metric_name().unwrap_or("");
                let pairs = || l.iter().map(|x| (x.name.as_str(), x.value.as_str()));
                q.score(name, pairs).map(|s| (s, name, i))
            })
            .collect();
        let total = ranked.len();
        let order = |a: &(u32, &str, usize), b: &(u32, &str, usize)| {
            (a.0, a.1.len(), a.1, a.2).cmp(&(b.0, b.1.len(), b.1, b.2))
        };
        if ranked.len() > limit {
            ranked.select_nth_unstable_by(limit, order);
            ranked.truncate(limit);
        }
        ranked.sort_by(order);
        // Labels are kept sorted by name: they serialize as the sorted
        // objects these always were.
        let series = ranked.iter().map(|&(_, _, i)| all[i].1.clone()).collect();
        SeriesFound { series, total }
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Success(found))
}
