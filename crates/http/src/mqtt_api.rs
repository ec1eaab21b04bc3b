//! The explorer and publishing API over the broker: the topic tree, recent
//! messages, a live feed (server-sent events) and publishing.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::extract::{JsonBody, JsonRequest, Query};
use super::wire::{Done, SortedKeys, Success, DONE};
use super::{ApiError, Principal, SharedState};
use mqtt::{topic_matches, Access, Broker, Shown};

/// The broker, when it runs (not in `perch bench http`).
pub struct RunningBroker(pub Arc<Broker>);

impl FromRequestParts<SharedState> for RunningBroker {
    type Rejection = ApiError;

    async fn from_request_parts(
        _: &mut Parts,
        app: &SharedState,
    ) -> Result<RunningBroker, ApiError> {
        app.broker
            .clone()
            .map(RunningBroker)
            .ok_or_else(|| ApiError::unavailable("the MQTT broker is not running"))
    }
}

/// Answers carry the explorer's views with their keys sorted, as they
/// always have.
fn success<T: Serialize>(data: T) -> Success<SortedKeys<T>> {
    Success(SortedKeys(data))
}

fn valid_filter(filter: &str) -> Result<(), ApiError> {
    match mqtt::invalid_filter(filter) {
        Some(reason) => Err(ApiError::invalid(format!(
            "invalid topic filter {filter:?}: {reason}"
        ))),
        None => Ok(()),
    }
}

#[derive(Deserialize)]
pub struct TopicsQuery {
    filter: Option<String>,
}

pub async fn topics(
    State(app): State<SharedState>,
    Query(q): Query<TopicsQuery>,
    RunningBroker(b): RunningBroker,
) -> impl IntoResponse {
    let filter = q.filter.as_deref().unwrap_or("#");
    success(b.explorer().tree(filter, app.storage.now_ms()))
}

#[derive(Deserialize)]
pub struct MessagesQuery {
    topic: Option<String>,
    limit: Option<usize>,
}

pub async fn messages(
    Query(q): Query<MessagesQuery>,
    RunningBroker(b): RunningBroker,
) -> Result<impl IntoResponse, ApiError> {
    let filter = q.topic.as_deref().unwrap_or("#");
    valid_filter(filter)?;
    let limit = q.limit.unwrap_or(100).min(1000);
    Ok(success(b.explorer().messages(filter, limit)))
}

/// Server-sent events of matching messages; a client too slow to keep up
/// gets a `lagged` event saying how many it missed, and the broker never waits.
pub async fn live(
    Query(q): Query<MessagesQuery>,
    RunningBroker(b): RunningBroker,
) -> Result<impl IntoResponse, ApiError> {
    let filter = q.topic.unwrap_or_else(|| "#".into());
    valid_filter(&filter)?;
    let rx = b.explorer().subscribe_live();
    let stream = futures_util::stream::unfold((rx, filter), |(mut rx, filter)| async move {
        loop {
            match rx.recv().await {
                Ok(m) if topic_matches(&filter, &m.topic) => {
                    let data = serde_json::to_string(&Shown::of(&m)).unwrap_or_default();
                    let ev: Result<Event, Infallible> =
                        Ok(Event::default().event("message").data(data));
                    return Some((ev, (rx, filter)));
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    let ev = Ok(Event::default().event("lagged").data(n.to_string()));
                    return Some((ev, (rx, filter)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[derive(Deserialize)]
pub struct PublishRequest {
    topic: String,
    #[serde(default)]
    payload: Option<String>,
    /// For binary payloads.
    #[serde(default)]
    payload_base64: Option<String>,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    retain: bool,
}

impl JsonRequest for PublishRequest {
    const MALFORMED: &'static str =
        "expected {\"topic\": …, \"payload\": …, \"qos\": 0|1|2, \"retain\": bool}";
}

pub async fn publish(
    principal: Principal,
    RunningBroker(b): RunningBroker,
    JsonBody(req): JsonBody<PublishRequest>,
) -> Result<Json<Done>, ApiError> {
    if req.qos > 2 {
        return Err(ApiError::invalid("qos must be 0, 1 or 2"));
    }
    let payload = match (req.payload, req.payload_base64) {
        (Some(p), None) => Bytes::from(p),
        (None, Some(b64)) => {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| ApiError::invalid(format!("payload_base64: {e}")))?;
            Bytes::from(decoded)
        }
        (None, None) => Bytes::new(),
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "give payload or payload_base64, not both",
            ))
        }
    };
    let access = Access::for_user(&principal.user);
    let source = format!("http:{}", principal.user.name);
    b.publish(&req.topic, payload, req.qos, req.retain, &access, &source)
        .await?;
    Ok(Json(DONE))
}
