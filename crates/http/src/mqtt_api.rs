//! The explorer and publishing API over the broker: the topic tree, recent
//! messages, a live feed (server-sent events) and publishing.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::{ApiError, Principal, SharedState};
use mqtt::{topic_matches, Access, Broker, PublishError, Shown};

fn broker(app: &SharedState) -> Result<&std::sync::Arc<Broker>, ApiError> {
    app.broker
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("the MQTT broker is not running"))
}

#[derive(Deserialize)]
pub struct TopicsQuery {
    filter: Option<String>,
}

pub async fn topics(State(app): State<SharedState>, Query(q): Query<TopicsQuery>) -> Response {
    let b = match broker(&app) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let filter = q.filter.as_deref().unwrap_or("#");
    let tree = b.explorer().tree(filter, app.storage.now_ms());
    Json(json!({"status": "success", "data": tree})).into_response()
}

#[derive(Deserialize)]
pub struct MessagesQuery {
    topic: Option<String>,
    limit: Option<usize>,
}

pub async fn messages(State(app): State<SharedState>, Query(q): Query<MessagesQuery>) -> Response {
    let b = match broker(&app) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let filter = q.topic.as_deref().unwrap_or("#");
    if let Some(reason) = mqtt::invalid_filter(filter) {
        return ApiError::bad_data(format!("invalid topic filter {filter:?}: {reason}"))
            .into_response();
    }
    let limit = q.limit.unwrap_or(100).min(1000);
    Json(json!({"status": "success", "data": b.explorer().messages(filter, limit)})).into_response()
}

/// Server-sent events of matching messages; a client too slow to keep up
/// gets a `lagged` event saying how many it missed, and the broker never waits.
pub async fn live(State(app): State<SharedState>, Query(q): Query<MessagesQuery>) -> Response {
    let b = match broker(&app) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let filter = q.topic.unwrap_or_else(|| "#".into());
    if let Some(reason) = mqtt::invalid_filter(&filter) {
        return ApiError::bad_data(format!("invalid topic filter {filter:?}: {reason}"))
            .into_response();
    }
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
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
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

pub async fn publish(
    State(app): State<SharedState>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Response {
    let b = match broker(&app) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let req: PublishRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::bad_data(format!(
                "expected {{\"topic\": …, \"payload\": …, \"qos\": 0|1|2, \"retain\": bool}}: {e}"
            ))
            .into_response()
        }
    };
    if req.qos > 2 {
        return ApiError::bad_data("qos must be 0, 1 or 2").into_response();
    }
    let payload = match (req.payload, req.payload_base64) {
        (Some(p), None) => Bytes::from(p),
        (None, Some(b64)) => {
            use base64::Engine;
            match base64::engine::general_purpose::STANDARD.decode(b64) {
                Ok(b) => Bytes::from(b),
                Err(e) => {
                    return ApiError::bad_data(format!("payload_base64: {e}")).into_response()
                }
            }
        }
        (None, None) => Bytes::new(),
        (Some(_), Some(_)) => {
            return ApiError::bad_data("give payload or payload_base64, not both").into_response()
        }
    };
    let access = Access::for_user(&principal.user);
    let source = format!("http:{}", principal.user.name);
    match b
        .publish(&req.topic, payload, req.qos, req.retain, &access, &source)
        .await
    {
        Ok(()) => Json(json!({"status": "success"})).into_response(),
        Err(e @ PublishError::NotAllowed(_)) => ApiError {
            status: StatusCode::FORBIDDEN,
            error_type: "forbidden",
            message: e.to_string(),
        }
        .into_response(),
        Err(e @ PublishError::TooLarge { .. }) => ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            error_type: "bad_data",
            message: e.to_string(),
        }
        .into_response(),
        Err(e @ PublishError::BadTopic { .. }) => ApiError::bad_data(e.to_string()).into_response(),
        Err(e @ PublishError::Stopping) => ApiError::unavailable(e.to_string()).into_response(),
    }
}
