//! InfluxDB 1.x's query endpoint, `GET|POST /query?db=&q=&epoch=&pretty=`,
//! answering the read-only InfluxQL subset of `query::influxql` in
//! InfluxDB's JSON shape. perch has one database: `db` is accepted and
//! ignored.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::params::Params;
use super::SharedState;
use query::influxql::{self, Epoch};

pub fn routes() -> Router<SharedState> {
    Router::new().route("/query", get(query).post(query))
}

fn reply(status: StatusCode, body: &impl serde::Serialize, pretty: bool) -> Response {
    let text = if pretty {
        serde_json::to_string_pretty(body)
    } else {
        serde_json::to_string(body)
    }
    .unwrap_or_else(|_| "{}".into());
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (
                header::HeaderName::from_static("x-influxdb-version"),
                "1.8-perch",
            ),
        ],
        text,
    )
        .into_response()
}

async fn query(
    State(app): State<SharedState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let p = Params::from_request(&method, raw.as_deref(), &headers, &body);
    let pretty = p.get("pretty").is_some_and(|v| v == "true");
    let bad = |msg: String| reply(StatusCode::BAD_REQUEST, &json!({ "error": msg }), pretty);
    let Some(q) = p
        .get("q")
        .filter(|q| !q.trim().is_empty())
        .map(str::to_string)
    else {
        return bad("missing required parameter \"q\"".into());
    };
    let epoch = match Epoch::parse(p.get("epoch")) {
        Ok(e) => e,
        Err(e) => return bad(e),
    };
    let storage = app.storage.clone();
    let config = app.config.query.clone();
    let r = query::run(move || Ok(influxql::execute(&storage, &config, &q, epoch))).await;
    match r {
        Ok(Ok(v)) => reply(StatusCode::OK, &v, pretty),
        Ok(Err(e)) => bad(e),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({ "error": e.to_string() }),
            pretty,
        ),
    }
}
