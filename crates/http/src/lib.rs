//! HTTP: the axum router, authentication of requests, and the handlers that
//! translate between HTTP and the other crates (ingest → store for writes,
//! query → store for reads). Owns no data of its own; the only crate that
//! knows HTTP status codes.
//!
//! Handlers take what they use from [`AppState`] and the request through
//! extractors (`extract`, [`Principal`]) and answer `Result<_, ApiError>`:
//! every failure becomes a status code and a body in `error`.

mod accounts_api;
mod auth;
mod cameras_api;
mod connect_api;
pub mod control;
mod dashboards_api;
mod devices_api;
mod error;
mod export;
mod extract;
mod forward_api;
mod influx_api;
mod metrics;
mod mqtt_api;
mod prom_api;
mod prom_wire;
mod rules_api;
mod search_api;
mod serve;
mod status;
mod web;
mod wire;
mod write;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use accounts::Accounts;
use config::Config;
use store::Storage;

pub use auth::{Principal, Via};
pub use error::{ApiError, ErrorBody};
pub use serve::serve;

/// Everything handlers use.
pub struct AppState {
    pub config: Arc<Config>,
    pub storage: Arc<Storage>,
    pub accounts: Arc<Accounts>,
    pub dashboards: Arc<dashboards::Dashboards>,
    /// The MQTT broker, when running (not in `perch bench http`).
    pub broker: Option<Arc<mqtt::Broker>>,
    /// The cameras, when running.
    pub cameras: Option<Arc<cameras::Cameras>>,
    /// The MQTT history index, when `search.enabled`.
    pub search: Option<Arc<search::Search>>,
    /// Forwarding to other systems, when running (not in `perch bench http`).
    pub forwarder: Option<Arc<forward::Forwarder>>,
    /// What `/metrics` serves, when the server keeps self-metrics.
    pub metrics: Option<Arc<base::metrics::Registry>>,
    /// The device registry, when the broker runs.
    pub devices: Option<Arc<devices::Registry>>,
    /// The alerting and recording rules, when the server runs.
    pub rules: Option<Arc<alerts::Manager>>,
    /// Set once every listener is up; `/healthz` answers 503 before.
    pub ready: AtomicBool,
}

impl AppState {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// A user (re)created under a name: what an older account of that name
    /// did is not what the Connect page waits for.
    fn user_added(&self, name: &str) {
        if let Some(broker) = &self.broker {
            broker.arrivals().forget(name);
        }
    }
}

pub type SharedState = Arc<AppState>;

pub fn router(state: SharedState) -> Router {
    let max_body = state.config.http.max_body_bytes.0 as usize;
    // Bodies are held in memory while parsed: the write handlers bound that
    // memory, and how many are parsed at once, once each body is in (a slow
    // upload must not hold a turn others wait for).
    let writes = Router::new()
        .route("/write", post(write::influx_v1))
        .route("/api/v2/write", post(write::influx_v2))
        .route("/api/put", post(write::opentsdb))
        .route("/api/v1/import", post(write::vm_import))
        .route("/api/v1/publish", post(mqtt_api::publish))
        .route_layer(axum::middleware::from_fn(auth::writers));
    let reads = Router::new()
        .route(
            "/api/v1/export",
            get(export::json_lines).post(export::json_lines),
        )
        .route("/api/v1/export/csv", get(export::csv).post(export::csv))
        .route("/api/v1/status/tsdb", get(status::tsdb))
        .route("/api/v1/status/footprint", get(status::footprint))
        .route("/api/v1/forward", get(forward_api::status))
        .route("/metrics", get(metrics::prometheus))
        .route("/api/v1/topics", get(mqtt_api::topics))
        .route("/api/v1/messages", get(mqtt_api::messages))
        .route("/api/v1/live", get(mqtt_api::live))
        .merge(search_api::routes())
        .merge(prom_api::routes())
        .merge(influx_api::routes())
        .merge(dashboards_api::reader_routes())
        .merge(devices_api::routes())
        .merge(rules_api::routes())
        .merge(connect_api::reader_routes())
        .route_layer(axum::middleware::from_fn(auth::readers));
    let admin = Router::new()
        .merge(accounts_api::admin_routes())
        .merge(dashboards_api::admin_routes())
        .merge(forward_api::admin_routes())
        .merge(connect_api::admin_routes())
        .merge(rules_api::admin_routes())
        // Admins only: the names people tried reveal which accounts exist.
        .route("/api/v1/problems", get(status::problems))
        .route_layer(axum::middleware::from_fn(auth::admins));
    let api = Router::new()
        .merge(writes)
        .merge(reads)
        .merge(admin)
        // Cameras sort watching from managing per request.
        .merge(cameras_api::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        // Bodies are decompressed before the limit applies, so a small gzip
        // bomb cannot expand past it.
        .layer(DefaultBodyLimit::max(max_body))
        .layer(tower_http::decompression::RequestDecompressionLayer::new())
        // Encodings it cannot read get perch's JSON error body.
        .layer(axum::middleware::from_fn(serve::known_encodings));
    Router::new()
        .route("/healthz", get(status::healthz))
        .route("/ping", get(status::influx_ping))
        .route("/health", get(status::influx_health))
        .merge(accounts_api::public_routes())
        .merge(web::routes())
        .merge(api)
        // Every body is read within http.body_timeout.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            serve::request_limits,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An [`AppState`] over a fresh data directory, changed by `adjust`
    /// before it is shared; the directory lives as long as the guard.
    pub fn state(adjust: impl FnOnce(&mut AppState)) -> (SharedState, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let clock: Arc<dyn base::Clock> = Arc::new(base::SystemClock);
        let (storage, _) = Storage::open(&config.storage, dir.path(), clock).unwrap();
        let mut state = AppState {
            config: Arc::new(config),
            accounts: Arc::new(Accounts::open(&storage.trees()).unwrap()),
            dashboards: Arc::new(dashboards::Dashboards::open(&storage.trees()).unwrap()),
            storage,
            broker: None,
            cameras: None,
            search: None,
            forwarder: None,
            metrics: None,
            devices: None,
            rules: None,
            ready: AtomicBool::new(true),
        };
        adjust(&mut state);
        (Arc::new(state), dir)
    }
}
