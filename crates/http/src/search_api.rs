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
//! Times in requests are RFC 3339 or Unix seconds like the Prometheus API,
//! between 1970 and the end of 9999 (anything else is a 400, never
//! arithmetic on extremes); times in answers are milliseconds since the
//! epoch. Queries run on query threads (`query::run`), after the limits
//! every query language shares (`base::limits`, checked by the search
//! crate).

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
/// The times a search may name: from the epoch (perch stamps messages as it
/// receives them) to the last millisecond of 9999.
const MIN_TIME_MS: i64 = 0;
const MAX_TIME_MS: i64 = 253_402_300_799_999;
const DAY_MS: i64 = 86_400_000;

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

/// Runs `f` on a query thread (`query::run`: a large stack, a bounded
/// number at once, shared with PromQL and InfluxQL): tantivy's parser
/// recurses, and the limits keep it well within even a small stack, but a
/// query thread leaves no doubt.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SearchError> + Send + 'static,
) -> Found<T> {
    let found = query::run(move || Ok(f())).await??;
    Ok(Success(SortedKeys(found)))
}

/// A time parameter, if given, within what search covers.
fn opt_time_param(p: &Params, key: &str) -> Result<Option<i64>, ApiError> {
    let Some(s) = p.get(key).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let t = parse_time(s, key)?;
    if !(MIN_TIME_MS..=MAX_TIME_MS).contains(&t) {
        return Err(ApiError::invalid(format!(
            "invalid parameter {key:?}: {s:?} is outside the times search covers, 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z"
        )));
    }
    Ok(Some(t))
}

fn time_param(p: &Params, key: &str, default: i64) -> Result<i64, ApiError> {
    Ok(opt_time_param(p, key)?.unwrap_or(default))
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
        start: time_param(&p, "start", MIN_TIME_MS)?,
        end: time_param(&p, "end", MAX_TIME_MS)?,
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
    // Both checked before either default is filled in.
    let start = opt_time_param(&p, "start")?;
    let now = app.storage.now_ms().clamp(MIN_TIME_MS, MAX_TIME_MS);
    let end = opt_time_param(&p, "end")?.unwrap_or(now);
    let start = start.unwrap_or(end.saturating_sub(DAY_MS).max(MIN_TIME_MS));
    let step = match p.get("step").filter(|s| !s.is_empty()) {
        Some(st) => parse_duration_ms(st, "step")?,
        // About 100 bars, whole seconds (start and end are within the
        // range above, so this cannot overflow).
        None => (end.saturating_sub(start).max(0) / 100 / 1000 + 1) * 1000,
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
    let q = p.get("q").unwrap_or("");
    // Every word is compared with every series.
    base::limits::check_words("series search", q)?;
    let q = SeriesQuery::new(q);
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
