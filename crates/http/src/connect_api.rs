//! What a device needs to reach perch, for the dashboard's "Connect a
//! device" page: `GET /api/v1/connect` (the host's name and LAN addresses,
//! the broker's ports, whether anonymous clients may connect) for readers,
//! and `GET /api/v1/connect/arrivals/{user}` (when those credentials last
//! connected, from where, and what their first message stored) for admins,
//! who make the credentials.

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::extract::Path;
use super::mqtt_api::RunningBroker;
use super::wire::Success;
use super::{ApiError, SharedState};

/// The path of MQTT over WebSocket on its listener.
const WEBSOCKET_PATH: &str = "/mqtt";

pub fn reader_routes() -> Router<SharedState> {
    Router::new().route("/api/v1/connect", get(connect_info))
}

pub fn admin_routes() -> Router<SharedState> {
    Router::new().route("/api/v1/connect/arrivals/{user}", get(arrival))
}

#[derive(Serialize)]
struct ConnectInfo {
    /// The host's name; `<hostname>.local` where mDNS (Avahi) runs.
    hostname: String,
    mdns_name: String,
    /// Addresses other machines can use: LAN first, IPv4 before IPv6, no
    /// loopback or link-local addresses (unless that is all there is).
    addresses: Vec<String>,
    http_port: u16,
    mqtt: BrokerPorts,
    allow_anonymous: bool,
}

#[derive(Serialize)]
struct BrokerPorts {
    tcp: Option<u16>,
    tls: Option<u16>,
    websocket: Option<u16>,
    websocket_path: &'static str,
    /// The TCP listener is bound to a loopback address: nothing on the LAN
    /// can reach it (`mqtt.listen`).
    loopback_only: bool,
}

async fn connect_info(
    axum::extract::State(app): axum::extract::State<SharedState>,
) -> Success<ConnectInfo> {
    let listeners: Vec<(&str, SocketAddr)> = app
        .broker
        .as_ref()
        .map(|b| b.addresses.clone())
        .unwrap_or_default();
    let port_of = |kind: &str| {
        listeners
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, a)| a.port())
    };
    let hostname = base::host::host_name();
    let mqtt = BrokerPorts {
        tcp: port_of("mqtt"),
        tls: port_of("mqtts"),
        websocket: port_of("mqtt-ws"),
        websocket_path: WEBSOCKET_PATH,
        loopback_only: listeners
            .iter()
            .any(|(k, a)| *k == "mqtt" && a.ip().is_loopback()),
    };
    Success(ConnectInfo {
        mdns_name: format!("{}.local", hostname.split('.').next().unwrap_or("perch")),
        hostname,
        addresses: base::host::lan_addresses(),
        http_port: app.config.http.listen.port(),
        mqtt,
        allow_anonymous: app.config.mqtt.allow_anonymous,
    })
}

/// What a user's credentials did since perch started; an empty object when
/// nothing yet (the page keeps waiting).
async fn arrival(
    RunningBroker(broker): RunningBroker,
    Path(user): Path<String>,
) -> Result<Success<mqtt::Arrival>, ApiError> {
    Ok(Success(broker.arrivals().get(&user).unwrap_or_default()))
}
