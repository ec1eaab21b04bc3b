//! InfluxDB 1.x's query endpoint, `GET|POST /query?db=&q=&epoch=&pretty=`,
//! answering the read-only InfluxQL subset of `query::influxql` in
//! InfluxDB's JSON shape. perch has one database: `db` is accepted and
//! ignored.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::error::ErrorBody;
use super::extract::Params;
use super::{ApiError, SharedState};
use query::influxql::{self, Epoch};

pub fn routes() -> Router<SharedState> {
    Router::new().route("/query", get(query).post(query))
}

/// InfluxDB's JSON with its version header, indented for `pretty=true`;
/// errors too (`ErrorBody::InfluxQl`).
pub fn reply(status: StatusCode, body: &impl Serialize, pretty: bool) -> Response {
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
                super::status::INFLUXDB_VERSION,
            ),
        ],
        text,
    )
        .into_response()
}

/// The results of a query, as InfluxDB answers them.
struct Answer {
    results: influxql::Response,
    pretty: bool,
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        reply(StatusCode::OK, &self.results, self.pretty)
    }
}

async fn query(
    State(app): State<SharedState>,
    p: Result<Params, ApiError>,
) -> Result<Answer, ApiError> {
    // A body over the limit is refused in InfluxDB's shape too.
    let p = p.map_err(|e| e.with_body(ErrorBody::InfluxQl { pretty: false }))?;
    let pretty = p.get("pretty").is_some_and(|v| v == "true");
    run(&app, &p)
        .await
        .map(|results| Answer { results, pretty })
        .map_err(|e| e.with_body(ErrorBody::InfluxQl { pretty }))
}

async fn run(app: &SharedState, p: &Params) -> Result<influxql::Response, ApiError> {
    let Some(q) = p
        .get("q")
        .filter(|q| !q.trim().is_empty())
        .map(str::to_string)
    else {
        return Err(ApiError::invalid("missing required parameter \"q\""));
    };
    let epoch = Epoch::parse(p.get("epoch"))?;
    let storage = app.storage.clone();
    let config = app.config.query.clone();
    // What fails here is the query thread itself (InfluxQL's own errors
    // come back inside): a fault of perch, whatever its kind for PromQL.
    let results = query::run(move || Ok(influxql::execute(&storage, &config, &q, epoch)))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(results?)
}
