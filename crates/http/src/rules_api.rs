//! Alerting and recording rules over HTTP, in Prometheus' shapes so that
//! Grafana lists them: `GET /api/v1/rules` (every group with its rules,
//! their health and alerts; `?type=alert|record`) and `GET /api/v1/alerts`
//! (the pending and firing alerts). Rule files managed through the API:
//! `GET /api/v1/rules/files` (their names), `GET /api/v1/rules/files/{name}`
//! (the YAML exactly as it was sent), and for admins `PUT` (checked first:
//! every problem with its line, 400) and `DELETE`. `GET
//! /api/v1/alerts/history` (when alerts were pending and firing, from the
//! `ALERTS` series) and `POST /api/v1/rules/preview` (an alerting rule
//! evaluated over past data). Silences: `GET`, and for admins `POST` and
//! `DELETE /api/v1/silences/{id}`, in Alertmanager's shapes.

use std::collections::BTreeMap;
use std::sync::Arc;

use alerts::{Alert, AlertState, Group, Health, Manager};
use axum::extract::FromRequestParts;
use axum::extract::State;
use axum::http::request::Parts;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;

use super::extract::{Body, Path, Query};
use super::wire::{Done, Success, DONE};
use super::{ApiError, SharedState};

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/alerts", get(active_alerts))
        .route("/api/v1/rules/files", get(file_names))
        .route("/api/v1/silences", get(silences))
        .route("/api/v1/rules/files/{name}", get(file))
        .route("/api/v1/alerts/history", get(history))
        .route("/api/v1/rules/preview", axum::routing::post(preview))
}

pub fn admin_routes() -> Router<SharedState> {
    Router::new()
        .route(
            "/api/v1/rules/files/{name}",
            axum::routing::put(put_file).delete(delete_file),
        )
        .route("/api/v1/silences", axum::routing::post(add_silence))
        .route(
            "/api/v1/silences/{id}",
            axum::routing::delete(expire_silence),
        )
}

/// A silence as Alertmanager's API writes it (times in RFC 3339).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SilenceJson {
    #[serde(default)]
    id: String,
    matchers: Vec<alerts::silence::Matcher>,
    #[serde(default)]
    starts_at: Option<String>,
    ends_at: String,
    #[serde(default)]
    created_by: String,
    #[serde(default)]
    comment: String,
    #[serde(default, skip_deserializing)]
    status: Option<SilenceStatus>,
}

#[derive(Serialize)]
struct SilenceStatus {
    state: &'static str,
}

fn parse_time(s: &str, what: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            ApiError::invalid(format!(
                "invalid {what} {s:?}: {e} (RFC 3339, e.g. 2026-12-06T18:00:00Z)"
            ))
        })
}

async fn silences(State(app): State<SharedState>, Rules(manager): Rules) -> Json<Vec<SilenceJson>> {
    let now = app.storage.now_ms();
    Json(
        manager
            .silences()
            .list(now)
            .into_iter()
            .map(|s| SilenceJson {
                status: Some(SilenceStatus {
                    state: s.state(now),
                }),
                id: s.id,
                matchers: s.matchers,
                starts_at: Some(rfc3339(s.starts_at)),
                ends_at: rfc3339(s.ends_at),
                created_by: s.created_by,
                comment: s.comment,
            })
            .collect(),
    )
}

/// Alertmanager's answer to a new silence.
#[derive(Serialize)]
struct SilenceCreated {
    #[serde(rename = "silenceID")]
    silence_id: String,
}

async fn add_silence(
    State(app): State<SharedState>,
    Rules(manager): Rules,
    Body(body): Body,
) -> Result<Json<SilenceCreated>, ApiError> {
    let s: SilenceJson = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("invalid silence: {e}")))?;
    let now = app.storage.now_ms();
    let silence = alerts::silence::Silence {
        id: String::new(),
        matchers: s.matchers,
        starts_at: match &s.starts_at {
            Some(t) => parse_time(t, "startsAt")?,
            None => now,
        },
        ends_at: parse_time(&s.ends_at, "endsAt")?,
        created_by: s.created_by,
        comment: s.comment,
    };
    let silence_id = manager.silences().add(silence, now)?;
    Ok(Json(SilenceCreated { silence_id }))
}

async fn expire_silence(
    State(app): State<SharedState>,
    Rules(manager): Rules,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    manager.silences().expire(&id, app.storage.now_ms())?;
    Ok(StatusCode::NO_CONTENT)
}

async fn file_names(Rules(manager): Rules) -> Result<Success<Vec<String>>, ApiError> {
    Ok(Success(manager.files()?))
}

/// As it was sent, so a file exported is the file imported.
async fn file(
    Rules(manager): Rules,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let text = manager.file(&name)?;
    Ok((
        [(header::CONTENT_TYPE, "application/yaml; charset=utf-8")],
        text,
    ))
}

async fn put_file(
    Rules(manager): Rules,
    Path(name): Path<String>,
    Body(body): Body,
) -> Result<Json<Done>, ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::invalid(format!("the rule file is not UTF-8: {e}")))?;
    manager.put_file(&name, text)?;
    Ok(Json(DONE))
}

async fn delete_file(
    Rules(manager): Rules,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    manager.delete_file(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `start` and `end` as the query API takes them; by default the last day.
#[derive(Deserialize)]
struct RangeParams {
    start: Option<String>,
    end: Option<String>,
}

const DAY_MS: i64 = 86_400_000;

fn range(start: Option<&str>, end: Option<&str>, now: i64) -> Result<(i64, i64), ApiError> {
    let end = match end {
        Some(s) => query::params::parse_time(s, "end")?,
        None => now,
    };
    let start = match start {
        Some(s) => query::params::parse_time(s, "start")?,
        None => end - DAY_MS,
    };
    if end <= start {
        return Err(ApiError::invalid("invalid parameter \"end\": before start"));
    }
    Ok((start, end))
}

/// `GET /api/v1/alerts/history`: the alerts' pending and firing episodes
/// over the range, from the `ALERTS` series.
async fn history(
    State(app): State<SharedState>,
    Rules(manager): Rules,
    Query(p): Query<RangeParams>,
) -> Result<Success<Vec<alerts::history::Episode>>, ApiError> {
    let (start, end) = range(p.start.as_deref(), p.end.as_deref(), app.storage.now_ms())?;
    let episodes = query::run(move || Ok(manager.history(start, end))).await??;
    Ok(Success(episodes))
}

/// A rule to preview: Prometheus' rule fields and the range (the last day
/// by default).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewRequest {
    expr: String,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    keep_firing_for: Option<String>,
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    end: Option<String>,
}

/// `POST /api/v1/rules/preview`: where an alerting rule would have been
/// pending and firing over past data.
async fn preview(
    State(app): State<SharedState>,
    Rules(manager): Rules,
    Body(body): Body,
) -> Result<Success<alerts::history::Preview>, ApiError> {
    let r: PreviewRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("invalid rule preview: {e}")))?;
    let duration = |v: &Option<String>, what: &str| -> Result<i64, ApiError> {
        match v.as_deref() {
            None | Some("") => Ok(0),
            Some(s) => alerts::rulefile::parse_duration(s)
                .map_err(|e| ApiError::invalid(format!("invalid {what} {s:?}: {e}"))),
        }
    };
    let for_ms = duration(&r.for_, "for")?;
    let keep_ms = duration(&r.keep_firing_for, "keep_firing_for")?;
    let (start, end) = range(r.start.as_deref(), r.end.as_deref(), app.storage.now_ms())?;
    let expr = r.expr;
    // One preview at a time: each may take PREVIEW_BUDGET of a query
    // thread, and rule evaluation needs those threads too.
    static ONE_AT_A_TIME: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    let _turn = ONE_AT_A_TIME
        .acquire()
        .await
        .map_err(|_| ApiError::unavailable("shutting down"))?;
    let preview =
        query::run(move || Ok(manager.preview(&expr, for_ms, keep_ms, start, end))).await??;
    Ok(Success(preview))
}

/// The rules, when the server runs (not in `perch bench http`).
pub struct Rules(Arc<Manager>);

impl FromRequestParts<SharedState> for Rules {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, app: &SharedState) -> Result<Rules, ApiError> {
        app.rules
            .clone()
            .map(Rules)
            .ok_or_else(|| ApiError::unavailable("the rules are not running"))
    }
}

/// Prometheus writes times as RFC 3339 with nanoseconds, UTC.
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

/// Go's `strconv.FormatFloat(v, 'e', -1, 64)`, as Prometheus writes an
/// alert's value: `1e+00`, `2.5e+01`.
fn go_exp(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let s = format!("{v:e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp),
    };
    format!("{mantissa}e{sign}{digits:0>2}")
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AlertJson {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    state: &'static str,
    active_at: String,
    value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_firing_since: Option<String>,
}

impl From<&Alert> for AlertJson {
    fn from(a: &Alert) -> AlertJson {
        AlertJson {
            labels: a
                .labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect(),
            annotations: a.annotations.clone(),
            state: a.state.as_str(),
            active_at: rfc3339(a.active_at),
            value: go_exp(a.value),
            keep_firing_since: a.keep_firing_since.map(rfc3339),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RuleJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
    name: String,
    query: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_firing_for: Option<f64>,
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alerts: Option<Vec<AlertJson>>,
    health: Health,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    evaluation_time: f64,
    last_evaluation: String,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GroupJson {
    name: String,
    file: String,
    rules: Vec<RuleJson>,
    interval: f64,
    limit: usize,
    evaluation_time: f64,
    last_evaluation: String,
}

#[derive(Serialize)]
struct RulesData {
    groups: Vec<GroupJson>,
}

#[derive(Deserialize)]
struct RulesQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Never evaluated: Prometheus' zero time.
const NEVER: &str = "0001-01-01T00:00:00Z";

fn group_json(g: &Group, want_alerting: Option<bool>) -> GroupJson {
    let rules = g
        .rules
        .iter()
        .filter(|r| want_alerting.is_none_or(|w| w == r.is_alerting()))
        .map(|r| {
            let spec = &r.spec;
            let last_evaluation = r.status.last_evaluation.map_or(NEVER.into(), rfc3339);
            let mut json = RuleJson {
                state: None,
                name: r.name().to_string(),
                query: spec.expr.clone(),
                duration: None,
                keep_firing_for: None,
                labels: spec.labels.clone().into_iter().collect(),
                annotations: None,
                alerts: None,
                health: r.status.health,
                last_error: r.status.last_error.clone(),
                evaluation_time: r.status.evaluation_time.as_secs_f64(),
                last_evaluation,
                kind: "recording",
            };
            if let alerts::rulefile::RuleKind::Alert {
                for_ms,
                keep_firing_for_ms,
                annotations,
                ..
            } = &spec.kind
            {
                let alerts: Vec<&Alert> = r
                    .alerts()
                    .into_iter()
                    .filter(|a| a.state != AlertState::Inactive)
                    .collect();
                let state = alerts
                    .iter()
                    .map(|a| a.state)
                    .max_by_key(|s| match s {
                        AlertState::Firing => 2,
                        AlertState::Pending => 1,
                        AlertState::Inactive => 0,
                    })
                    .unwrap_or(AlertState::Inactive);
                json.kind = "alerting";
                json.state = Some(state.as_str());
                json.duration = Some(*for_ms as f64 / 1000.0);
                json.keep_firing_for = Some(*keep_firing_for_ms as f64 / 1000.0);
                json.annotations = Some(annotations.clone().into_iter().collect());
                json.alerts = Some(alerts.into_iter().map(AlertJson::from).collect());
            }
            json
        })
        .collect();
    GroupJson {
        name: g.name().to_string(),
        file: g.file.clone(),
        rules,
        interval: g.interval_ms as f64 / 1000.0,
        limit: g.limit,
        evaluation_time: g.evaluation_time.as_secs_f64(),
        last_evaluation: g.last_evaluation.map_or(NEVER.into(), rfc3339),
    }
}

async fn rules(
    Rules(manager): Rules,
    Query(query): Query<RulesQuery>,
) -> Result<Success<RulesData>, ApiError> {
    let want_alerting = match query.kind.as_deref() {
        None | Some("") => None,
        Some("alert") => Some(true),
        Some("record") => Some(false),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "invalid parameter \"type\": {other:?} is not alert or record"
            )))
        }
    };
    let groups = manager
        .groups()
        .iter()
        .map(|g| group_json(&g.lock().unwrap_or_else(|e| e.into_inner()), want_alerting))
        .filter(|g| want_alerting.is_none() || !g.rules.is_empty())
        .collect();
    Ok(Success(RulesData { groups }))
}

#[derive(Serialize)]
struct AlertsData {
    alerts: Vec<AlertJson>,
}

async fn active_alerts(Rules(manager): Rules) -> Success<AlertsData> {
    let mut alerts = Vec::new();
    for g in manager.groups() {
        let g = g.lock().unwrap_or_else(|e| e.into_inner());
        for r in g.rules.iter().filter(|r| r.is_alerting()) {
            alerts.extend(
                r.alerts()
                    .into_iter()
                    .filter(|a| a.state != AlertState::Inactive)
                    .map(AlertJson::from),
            );
        }
    }
    Success(AlertsData { alerts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_number_and_time_formats() {
        assert_eq!(go_exp(1.0), "1e+00");
        assert_eq!(go_exp(25.5), "2.55e+01");
        assert_eq!(go_exp(-0.001), "-1e-03");
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
