//! One client connection: CONNECT and authentication, then packets both ways
//! between the socket and the client's rumqttd link, with perch's checks in
//! between (topic ACLs, payload limit, inflight limit, keep-alive, wills).
//!
//! The router (rumqttd) keeps sessions, subscriptions, QoS state and retained
//! messages; this task owns everything rumqttd has no hook for.
//!
//! - `connect`: the handshake, up to CONNACK, ending in a [`Session`];
//! - `session`: what one connection knows, and its loop;
//! - `publish`, `subscribe`: the packet handlers of those flows;
//! - `error`: why a connection was refused or a session ended.

mod connect;
mod error;
mod publish;
mod session;
mod subscribe;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttd::protocol::{Packet, Publish};
use tracing::Instrument;

use super::codec::{self, Version};
use super::transport::Transport;
use super::Shared;
use error::{ConnectError, WriteError};

/// A write to a client that takes longer is given up on, and the client
/// dropped: a stuck subscriber must not hold resources forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn serve(mut transport: Transport, peer: std::net::SocketAddr, shared: Arc<Shared>) {
    let span = tracing::info_span!("mqtt", %peer, via = transport.kind(), client_id = tracing::field::Empty);
    async move {
        // A WebSocket's slot is its listener's (`transport::WsListener`).
        let _client = match transport {
            Transport::Stream(_) => match ClientSlot::take(&shared, peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    transport.close().await;
                    return;
                }
            },
            Transport::WebSocket(_) => None,
        };
        match connect::accept(transport, peer, shared).await {
            Ok(session) => session.run().await,
            Err(e) => tracing::debug!(error = %e, "connection closed"),
        }
    }
    .instrument(span)
    .await
}

/// Connections open per client address (`mqtt.max_connections_per_client`),
/// from accept to close, whether or not their CONNECT was accepted.
#[derive(Default)]
pub(crate) struct Clients {
    open: parking_lot::Mutex<HashMap<IpAddr, usize>>,
    /// When a refusal was last logged, so that a flood logs a line a minute.
    warned: parking_lot::Mutex<Option<std::time::Instant>>,
}

/// One connection counted against its address; uncounted on drop.
pub(crate) struct ClientSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl ClientSlot {
    /// `None` when the address has `mqtt.max_connections_per_client` open:
    /// the connection is closed unanswered (reading its CONNECT would hold
    /// it longer).
    pub(crate) fn take(shared: &Arc<Shared>, ip: IpAddr) -> Option<ClientSlot> {
        let limit = shared.config.max_connections_per_client;
        let clients = &shared.clients;
        {
            let mut open = clients.open.lock();
            let n = open.entry(ip).or_insert(0);
            if *n < limit {
                *n += 1;
                return Some(ClientSlot {
                    shared: shared.clone(),
                    ip,
                });
            }
        }
        let error = ConnectError::AddressLimit { limit };
        let mut warned = clients.warned.lock();
        if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            *warned = Some(std::time::Instant::now());
            tracing::warn!(%ip, %error, "connection refused");
        } else {
            tracing::debug!(%ip, %error, "connection refused");
        }
        None
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.shared.clients.open.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Encodes `packets` and writes them in one go.
async fn write_packets(
    transport: &mut Transport,
    version: Version,
    packets: Vec<Packet>,
) -> Result<(), WriteError> {
    let mut out = BytesMut::with_capacity(256);
    for p in packets {
        codec::encode(version, p, &mut out).map_err(WriteError::Encode)?;
    }
    match tokio::time::timeout(WRITE_TIMEOUT, transport.write_all(&out)).await {
        Ok(written) => written.map_err(WriteError::Io),
        Err(_) => Err(WriteError::Stalled),
    }
}

/// Builds a publish with a given QoS, retain flag and packet id (rumqttd's
/// fields for them are crate-private; its serialized form is public).
pub fn make_publish(topic: &str, payload: &[u8], qos: u8, retain: bool, pkid: u16) -> Publish {
    let mut raw = BytesMut::with_capacity(5 + topic.len() + payload.len());
    raw.extend_from_slice(&[0x30 | (qos.min(2) << 1) | retain as u8]);
    raw.extend_from_slice(&pkid.to_be_bytes());
    raw.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    raw.extend_from_slice(topic.as_bytes());
    raw.extend_from_slice(payload);
    Publish::deserialize(raw.freeze())
}
