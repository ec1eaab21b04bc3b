//! The read side of the Prometheus HTTP API: `/api/v1/query`,
//! `/api/v1/query_range`, `/api/v1/series`, `/api/v1/labels`,
//! `/api/v1/label/{name}/values`, `/api/v1/metadata`,
//! `/api/v1/status/buildinfo`, `/api/v1/format_query` and an empty
//! `/api/v1/query_exemplars` (Grafana asks for it). GET and form POST alike;
//! responses in Prometheus' exact JSON shapes. Evaluation runs on query
//! threads (`query::run`), never on the async workers.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::params::Params;
use super::{ApiError, SharedState};
use base::labels::{is_valid_label_name, Matcher, METRIC_NAME};
use base::selector::parse_selector;
use query::params::{parse_duration_ms, parse_time};
use query::promql::value::{format_api_time, format_api_value};
use query::promql::{Engine, QueryOptions, QueryValue};
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

fn params(method: &Method, query: Option<&str>, headers: &HeaderMap, body: &Bytes) -> Params {
    Params::from_request(method, query, headers, body)
}

fn json_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn success(data: serde_json::Value) -> Response {
    json_response(serde_json::json!({"status": "success", "data": data}).to_string())
}

fn options(p: &Params) -> Result<QueryOptions, ApiError> {
    let timeout = p
        .get("timeout")
        .filter(|t| !t.is_empty())
        .map(|t| parse_duration_ms(t, "timeout"))
        .transpose()?;
    if let Some(t) = timeout {
        if t <= 0 {
            return Err(ApiError::bad_data(
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
        _ => Err(ApiError::bad_data(format!(
            "invalid parameter \"{name}\": missing (required)"
        ))),
    }
}

async fn query(
    State(app): State<SharedState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let p = params(&method, raw.as_deref(), &headers, &body);
    let prep = || -> Result<(String, i64, QueryOptions), ApiError> {
        let q = required(&p, "query")?.to_string();
        let t = match p.get("time").filter(|t| !t.is_empty()) {
            Some(t) => parse_time(t, "time")?,
            None => app.storage.now_ms(),
        };
        Ok((q, t, options(&p)?))
    };
    let (q, t, opts) = match prep() {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let engine = Engine::new(app.storage.clone(), &app.config.query);
    // Encoded on the query thread too: large results stay off the workers.
    match query::run(move || {
        engine
            .instant(&q, t, &opts)
            .map(|o| encode_result(&o.value))
    })
    .await
    {
        Ok(body) => json_response(body),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn query_range(
    State(app): State<SharedState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let p = params(&method, raw.as_deref(), &headers, &body);
    let prep = || -> Result<(String, i64, i64, i64, QueryOptions), ApiError> {
        let start = parse_time(p.get("start").unwrap_or(""), "start")?;
        let end = parse_time(p.get("end").unwrap_or(""), "end")?;
        if end < start {
            return Err(ApiError::bad_data(
                "invalid parameter \"end\": end timestamp must not be before start time",
            ));
        }
        let step = parse_duration_ms(p.get("step").unwrap_or(""), "step")?;
        if step <= 0 {
            return Err(ApiError::bad_data(
                "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
            ));
        }
        let q = required(&p, "query")?.to_string();
        Ok((q, start, end, step, options(&p)?))
    };
    let (q, start, end, step, opts) = match prep() {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let engine = Engine::new(app.storage.clone(), &app.config.query);
    match query::run(move || {
        engine
            .range(&q, start, end, step, &opts)
            .map(|o| encode_result(&o.value))
    })
    .await
    {
        Ok(body) => json_response(body),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `{"status":"success","data":{"resultType":…,"result":…}}`, written by
/// hand: values are strings and times are seconds, as Prometheus writes them.
pub fn encode_result(v: &QueryValue) -> String {
    let size = match v {
        QueryValue::Vector(s) => s.len() * 128,
        QueryValue::Matrix(s) => s.iter().map(|(_, p)| 96 + p.len() * 28).sum(),
        _ => 0,
    };
    let mut out = String::with_capacity(256 + size);
    out.push_str("{\"status\":\"success\",\"data\":{\"resultType\":\"");
    out.push_str(v.result_type());
    out.push_str("\",\"result\":");
    let point = |out: &mut String, t: i64, x: f64| {
        out.push('[');
        format_api_time(t, out);
        out.push_str(",\"");
        format_api_value(x, out);
        out.push_str("\"]");
    };
    match v {
        QueryValue::Scalar(t, x) => point(&mut out, *t, *x),
        QueryValue::String(t, s) => {
            out.push('[');
            format_api_time(*t, &mut out);
            out.push(',');
            out.push_str(&serde_json::Value::String(s.clone()).to_string());
            out.push(']');
        }
        QueryValue::Vector(samples) => {
            out.push('[');
            for (i, (labels, t, x)) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                push_labels(&mut out, labels);
                out.push_str(",\"value\":");
                point(&mut out, *t, *x);
                out.push('}');
            }
            out.push(']');
        }
        QueryValue::Matrix(series) => {
            out.push('[');
            for (i, (labels, points)) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                push_labels(&mut out, labels);
                out.push_str(",\"values\":[");
                for (k, (t, x)) in points.iter().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    point(&mut out, *t, *x);
                }
                out.push_str("]}");
            }
            out.push(']');
        }
    }
    out.push_str("}}");
    out
}

fn push_labels(out: &mut String, l: &Labels) {
    out.push_str(&serde_json::to_string(l).unwrap_or_else(|_| "{}".into()));
}

/// What metadata requests ask: matcher sets, start, end, limit.
type MetaRequest = (Vec<Vec<Matcher>>, i64, i64, usize);

/// `match[]` selectors as matcher sets (each may itself be a union).
fn match_sets(p: &Params) -> Result<Vec<Vec<Matcher>>, ApiError> {
    let mut sets = Vec::new();
    for s in p.all("match[]") {
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
        return Err(ApiError::bad_data(
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
            Err(_) => Err(ApiError::bad_data(format!(
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

fn all_series_matcher() -> Vec<Matcher> {
    vec![Matcher {
        name: METRIC_NAME.into(),
        value: ".+".into(),
        op: store::MatchOp::Regex(base::labels::compile_anchored(".+").expect("a valid regex")),
    }]
}

async fn series(
    State(app): State<SharedState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let p = params(&method, raw.as_deref(), &headers, &body);
    let prep = || -> Result<MetaRequest, ApiError> {
        if p.all("match[]").is_empty() {
            return Err(ApiError::bad_data("no match[] parameter provided"));
        }
        let (s, e) = time_range(&p)?;
        Ok((match_sets(&p)?, s, e, limit(&p)?))
    };
    let (sets, start, end, lim) = match prep() {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let app2 = app.clone();
    let r = query::run(move || matching_series(&app2, &sets, start, end)).await;
    match r {
        Ok(series) => {
            let mut out = String::from("{\"status\":\"success\",\"data\":[");
            for (i, l) in series.iter().take(lim).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_labels(&mut out, l);
            }
            out.push_str("]}");
            json_response(out)
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn labels(
    State(app): State<SharedState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let p = params(&method, raw.as_deref(), &headers, &body);
    names_or_values(app, p, None).await
}

async fn label_values(
    State(app): State<SharedState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let p = Params::from_query(raw.as_deref());
    if name != METRIC_NAME && !is_valid_label_name(&name) {
        return ApiError::bad_data(format!("invalid label name: {name:?}")).into_response();
    }
    names_or_values(app, p, Some(name)).await
}

/// Label names (`name` = None) or the values of one label, of the series
/// matching `match[]` (all series if none) with data in `[start, end]`.
async fn names_or_values(app: SharedState, p: Params, name: Option<String>) -> Response {
    let prep = || -> Result<MetaRequest, ApiError> {
        let (s, e) = time_range(&p)?;
        Ok((match_sets(&p)?, s, e, limit(&p)?))
    };
    let (mut sets, start, end, lim) = match prep() {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let app2 = app.clone();
    let r = query::run(move || {
        let all_time = start == i64::MIN && end == i64::MAX;
        let mut out: Vec<String> = if sets.is_empty() && all_time {
            // The index answers for all time without touching series.
            match &name {
                None => app2.storage.label_names(&[], start, end),
                Some(n) => app2.storage.label_values(n, &[], start, end),
            }
        } else {
            if sets.is_empty() {
                sets.push(all_series_matcher());
            }
            let series = matching_series(&app2, &sets, start, end)?;
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
    .await;
    match r {
        Ok(v) => success(serde_json::json!(v)),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// perch keeps no metric metadata (type, help, unit); an empty map is
/// Prometheus' answer for metrics without any.
async fn metadata() -> Response {
    success(serde_json::json!({}))
}

async fn buildinfo() -> Response {
    success(serde_json::json!({
        "version": PROMETHEUS_API_VERSION,
        "revision": concat!("perch-", env!("CARGO_PKG_VERSION")),
        "branch": "perch",
        "buildUser": "perch",
        "buildDate": "",
        "goVersion": concat!("none (perch ", env!("CARGO_PKG_VERSION"), ", Rust)"),
    }))
}

async fn format_query(
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let p = params(&method, raw.as_deref(), &headers, &body);
    let q = match required(&p, "query") {
        Ok(q) => q.to_string(),
        Err(e) => return e.into_response(),
    };
    match query::run(move || query::promql::parse(&q).map(|e| e.prettify())).await {
        Ok(s) => success(serde_json::json!(s)),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// perch stores no exemplars; the query is still checked so that a typo
/// shows up as it would in Prometheus.
async fn exemplars(
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let p = params(&method, raw.as_deref(), &headers, &body);
    if let Err(e) = time_range(&p) {
        return e.into_response();
    }
    if let Some(q) = p.get("query").filter(|q| !q.is_empty()) {
        let q = q.to_string();
        if let Err(e) = query::run(move || query::promql::parse(&q).map(|_| ())).await {
            return ApiError::from(e).into_response();
        }
    }
    success(serde_json::json!([]))
}
