//! The MQTT broker and collector. rumqttd's router does the broker's core work
//! (sessions, subscriptions, QoS flows, retained messages); perch owns the
//! network side in front of it — listeners (TCP, TLS, WebSocket), CONNECT and
//! authentication against perch users, topic ACLs, limits, keep-alive and
//! wills — because rumqttd has no hooks for those. Every accepted message is
//! handed, in process, to the collector, which feeds the explorer and
//! storage. Retained messages are persisted in sled and restored at start.
//!
//! Uses `base`, `config`, `store` (its `retained` tree, appends), `ingest`
//! (payload parsing, topic rules) and `accounts` (authentication).

mod acl;
mod arrivals;
pub mod bench;
// Public for the fuzz targets (`fuzz/`) only.
#[doc(hidden)]
pub mod codec;
mod collector;
mod connection;
mod explorer;
mod retained;
mod transport;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use rumqttd::local::{LinkBuilder, LinkError, LinkRx, LinkTx};
use rumqttd::protocol::{
    Disconnect, DisconnectReasonCode, LastWill, Packet, PubRel, PubRelReason, PublishProperties,
};
use rumqttd::{Notification, RouterConfig};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use accounts::Accounts;
use base::Clock;
use config::MqttConfig;
use store::Storage;

pub use acl::{invalid_filter, topic_matches, Access};
pub use arrivals::{Arrival, Arrivals};
pub use collector::{CollectorCounters, MessageSink};
pub use explorer::{Explorer, Inbound, Shown, TopicNode};
pub use retained::RetainedMessage;

#[derive(Debug, Error)]
pub enum MqttError {
    #[error("cannot listen on {addr} ({key}): {source}")]
    Listen {
        addr: SocketAddr,
        key: &'static str,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("invalid mqtt.rules: {0}")]
    Rules(#[from] ingest::RuleError),
    #[error("the router refused perch's own session: {0}")]
    Router(#[source] RouterError),
    #[error(transparent)]
    Store(#[from] store::StorageError),
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
}

impl base::HasKind for MqttError {
    fn kind(&self) -> base::ErrorKind {
        use base::ErrorKind as K;
        match self {
            MqttError::Store(e) => e.kind(),
            _ => K::Internal,
        }
    }
}

/// Why the TLS listener could not be set up from `mqtt.tls_cert` and
/// `mqtt.tls_key`.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Pem {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no private key", path.display())]
    NoPrivateKey { path: PathBuf },
    #[error(transparent)]
    Rustls(#[from] tokio_rustls::rustls::Error),
}

impl base::HasKind for TlsError {
    fn kind(&self) -> base::ErrorKind {
        let _ = self;
        base::ErrorKind::Internal
    }
}

/// Why the router would not open a session.
#[derive(Debug, Error)]
pub enum RouterError {
    /// Boxed: rumqttd's error carries the whole event it failed to send.
    #[error(transparent)]
    Refused(Box<LinkError>),
    /// The blocking task that waits for the router's answer died.
    #[error(transparent)]
    Aborted(tokio::task::JoinError),
}

impl base::HasKind for RouterError {
    fn kind(&self) -> base::ErrorKind {
        let _ = self;
        base::ErrorKind::Internal
    }
}

#[derive(Debug, Error)]
pub enum PublishError {
    #[error("invalid topic {topic:?}: {reason}")]
    BadTopic { topic: String, reason: &'static str },
    #[error("not allowed to publish to {0:?}")]
    NotAllowed(String),
    #[error("payload of {size} bytes is over mqtt.max_payload_bytes ({limit})")]
    TooLarge { size: usize, limit: usize },
    #[error("the broker is stopping")]
    Stopping,
}

impl base::HasKind for PublishError {
    fn kind(&self) -> base::ErrorKind {
        use base::ErrorKind as K;
        match self {
            PublishError::BadTopic { .. } => K::InvalidArgument,
            PublishError::NotAllowed(_) => K::PermissionDenied,
            PublishError::TooLarge { .. } => K::PayloadTooLarge,
            PublishError::Stopping => K::Unavailable,
        }
    }
}

/// Counters for the self-metrics.
#[derive(Default)]
pub struct BrokerCounters {
    pub connections: AtomicUsize,
    pub connects: AtomicU64,
    pub auth_failures: AtomicU64,
    pub acl_denied: AtomicU64,
    pub rejected_too_large: AtomicU64,
    pub rejected_malformed: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_in: AtomicU64,
}

type BuildLink = dyn Fn(&str, SessionTerms) -> Result<(LinkTx, LinkRx, Notification), Box<LinkError>>
    + Send
    + Sync;

/// What a client's CONNECT asks of its router session.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SessionTerms {
    /// Clean Start (v5) or clean session (v3.1.1): a session kept from
    /// before is discarded.
    pub(crate) clean_start: bool,
    /// The session outlives the connection: a Session Expiry Interval above
    /// 0 (v5) or clean session 0 (v3.1.1). How long, perch counts
    /// (`Departures`).
    pub(crate) persist: bool,
    /// The client's Receive Maximum (v5).
    pub(crate) receive_max: Option<u16>,
    /// The client's Maximum Packet Size (v5).
    pub(crate) max_packet_size: Option<u32>,
}

impl SessionTerms {
    /// A session that ends with its connection and asks for nothing.
    pub(crate) const TRANSIENT: SessionTerms = SessionTerms {
        clean_start: true,
        persist: false,
        receive_max: None,
        max_packet_size: None,
    };
}

/// Makes rumqttd links. rumqttd's event type is private, so the router's
/// sender is kept inside a closure rather than named.
pub(crate) struct LinkFactory {
    build: Arc<BuildLink>,
}

impl LinkFactory {
    fn new(config: RouterConfig) -> LinkFactory {
        let router_tx = rumqttd::Router::new(0, config).spawn();
        LinkFactory {
            // The router's own topic aliases stay off (alias maximum 0): it
            // keys them by subscription filter, not topic.
            build: Arc::new(move |client_id: &str, terms: SessionTerms| {
                let mut link = LinkBuilder::new(client_id, router_tx.clone())
                    .clean_session(terms.clean_start)
                    .persist(terms.persist);
                if let Some(max) = terms.receive_max {
                    link = link.receive_max(max);
                }
                if let Some(max) = terms.max_packet_size {
                    link = link.max_packet_size(max);
                }
                link.build().map_err(Box::new)
            }),
        }
    }

    /// Opens a session with the router. Building waits for the router's
    /// answer on a blocking channel, so it runs off the async workers.
    async fn connect(
        &self,
        client_id: &str,
        terms: SessionTerms,
    ) -> Result<(LinkTx, LinkRx, bool), RouterError> {
        let build = self.build.clone();
        let id = client_id.to_string();
        let (tx, rx, ack) = tokio::task::spawn_blocking(move || build(&id, terms))
            .await
            .map_err(RouterError::Aborted)?
            .map_err(RouterError::Refused)?;
        let packet: Option<Packet> = ack.into();
        let session_present =
            matches!(packet, Some(Packet::ConnAck(ref a, _)) if a.session_present);
        Ok((tx, rx, session_present))
    }
}

/// The client id of perch's own router session; clients may not take it.
pub(crate) const INTERNAL_CLIENT_ID: &str = "perch-internal";

/// A router session of perch's own, for messages published over HTTP, wills
/// and restored retained messages.
struct InternalPublisher {
    tx: Arc<tokio::sync::Mutex<LinkTx>>,
    next_pkid: AtomicU16,
    drain: JoinHandle<()>,
}

impl InternalPublisher {
    async fn open(links: &LinkFactory) -> Result<InternalPublisher, RouterError> {
        let (tx, mut rx, _) = links
            .connect(INTERNAL_CLIENT_ID, SessionTerms::TRANSIENT)
            .await?;
        let tx = Arc::new(tokio::sync::Mutex::new(tx));
        // Acknowledgements come back on this link: take them, answer a
        // QoS 2 publish's PUBREC with its PUBREL (the router routes the
        // message then), and answer Unschedule, or the router stops serving
        // the link.
        let answer = tx.clone();
        let drain = tokio::spawn(async move {
            while let Ok(n) = rx.next().await {
                match n.map(Option::<Packet>::from) {
                    // Unschedule.
                    Some(None) if rx.wake().await.is_err() => break,
                    Some(Some(Packet::PubRec(rec, _))) => {
                        let rel = PubRel {
                            pkid: rec.pkid,
                            reason: PubRelReason::Success,
                        };
                        let sent = answer.lock().await.send(Packet::PubRel(rel, None)).await;
                        if sent.is_err() {
                            break;
                        }
                    }
                    _ => {}
                }
            }
        });
        Ok(InternalPublisher {
            tx,
            next_pkid: AtomicU16::new(1),
            drain,
        })
    }

    async fn publish(
        &self,
        topic: &str,
        payload: &[u8],
        qos: u8,
        retain: bool,
        properties: Option<PublishProperties>,
    ) -> Result<(), PublishError> {
        let qos = qos.min(2);
        let pkid = if qos == 0 {
            0
        } else {
            // Packet ids 1..=65535, never 0.
            let p = self.next_pkid.fetch_add(1, Ordering::Relaxed);
            if p == 0 {
                self.next_pkid.fetch_add(1, Ordering::Relaxed)
            } else {
                p
            }
        };
        let publish = connection::make_publish(topic, payload, qos, retain, pkid);
        self.tx
            .lock()
            .await
            .send(Packet::Publish(publish, properties))
            .await
            .map(|_| ())
            .map_err(|_| PublishError::Stopping)
    }
}

/// Which connection holds each client id now, and the work that waits on
/// behalf of clients that are gone: their delayed wills (MQTT 5 Will Delay
/// Interval) and the end of their kept sessions (Session Expiry Interval).
/// A connection of the client id cancels both.
#[derive(Default)]
struct Departures {
    /// Client id → the serial of the connection holding it.
    live: Mutex<HashMap<String, u64>>,
    next_serial: AtomicU64,
    wills: Mutex<HashMap<String, PendingWill>>,
    sessions: Mutex<HashMap<String, JoinHandle<()>>>,
}

/// A will waiting for its delay.
struct PendingWill {
    task: JoinHandle<()>,
    /// Publishes it at once: its session ended early.
    now: Arc<tokio::sync::Notify>,
}

impl Departures {
    /// A connection takes the client id: what waited for the client is
    /// cancelled — but with Clean Start the old session ends here, so its
    /// delayed will is published now (MQTT 5 section 3.1.2.5). Returns the
    /// connection's serial, for [`Departures::left`].
    fn arrived(&self, client_id: &str, clean_start: bool) -> u64 {
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        self.live.lock().insert(client_id.to_string(), serial);
        if let Some(will) = self.wills.lock().remove(client_id) {
            if clean_start {
                will.now.notify_one();
            } else {
                will.task.abort();
            }
        }
        if let Some(h) = self.sessions.lock().remove(client_id) {
            h.abort();
        }
        serial
    }

    /// The connection `serial` ended. False if another connection took its
    /// client id meanwhile (a takeover): the session goes on with that one.
    fn left(&self, client_id: &str, serial: u64) -> bool {
        let mut live = self.live.lock();
        if live.get(client_id) == Some(&serial) {
            live.remove(client_id);
            true
        } else {
            false
        }
    }

    fn is_live(&self, client_id: &str) -> bool {
        self.live.lock().contains_key(client_id)
    }

    fn schedule_will(
        &self,
        client_id: String,
        will: LastWill,
        properties: Option<PublishProperties>,
        delay: Duration,
        shared: Arc<Shared>,
    ) {
        let key = client_id.clone();
        let now = Arc::new(tokio::sync::Notify::new());
        let early = now.clone();
        let task = tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {
                    shared.departures.wills.lock().remove(&client_id);
                }
                _ = early.notified() => {}
            }
            let topic = String::from_utf8_lossy(&will.topic).into_owned();
            let qos = will.qos as u8;
            let source = format!("will of {client_id}");
            if let Err(e) = shared
                .publish_with(
                    &topic,
                    will.message.clone(),
                    qos,
                    will.retain,
                    properties,
                    &source,
                )
                .await
            {
                tracing::warn!(error = %e, client_id, "could not publish a will");
            }
        });
        if let Some(old) = self.wills.lock().insert(key, PendingWill { task, now }) {
            old.task.abort();
        }
    }

    /// Discards the router's session of `client_id` after `expiry`, unless
    /// the client connects again before.
    fn schedule_session_end(&self, client_id: String, expiry: Duration, shared: Arc<Shared>) {
        let key = client_id.clone();
        let handle = tokio::spawn(async move {
            tokio::time::sleep(expiry).await;
            shared.departures.sessions.lock().remove(&client_id);
            // A connection of the client id would cancel this task; one
            // that arrives in between would be taken over below.
            if shared.departures.is_live(&client_id) {
                return;
            }
            // A clean session of the same client id discards the kept one,
            // and ends with its link.
            match shared
                .links
                .connect(&client_id, SessionTerms::TRANSIENT)
                .await
            {
                Ok((mut tx, _rx, _)) => {
                    let disconnect = Disconnect {
                        reason_code: DisconnectReasonCode::NormalDisconnection,
                    };
                    let _ = tx.send(Packet::Disconnect(disconnect, None)).await;
                    tracing::debug!(client_id, "session expired");
                }
                Err(e) => tracing::warn!(error = %e, client_id, "could not end an expired session"),
            }
        });
        if let Some(old) = self.sessions.lock().insert(key, handle) {
            old.abort();
        }
    }
}

/// What every connection task shares.
pub(crate) struct Shared {
    config: MqttConfig,
    accounts: Arc<Accounts>,
    clock: Arc<dyn Clock>,
    links: LinkFactory,
    retained: retained::RetainedStore,
    counters: Arc<BrokerCounters>,
    departures: Departures,
    collector: collector::InboundSender,
    arrivals: Arc<Arrivals>,
    internal: InternalPublisher,
    shutdown: watch::Receiver<bool>,
    /// Connections per client address.
    clients: connection::Clients,
}

impl Shared {
    /// Publishes on perch's own session: recorded if retained, collected like
    /// any message, then routed.
    async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        qos: u8,
        retain: bool,
        source: &str,
    ) -> Result<(), PublishError> {
        self.publish_with(topic, payload, qos, retain, None, source)
            .await
    }

    /// [`Shared::publish`] with MQTT 5 properties (a will's) for subscribers.
    async fn publish_with(
        &self,
        topic: &str,
        payload: Bytes,
        qos: u8,
        retain: bool,
        properties: Option<PublishProperties>,
        source: &str,
    ) -> Result<(), PublishError> {
        let now = self.clock.now_ms();
        if retain {
            if let Err(e) = self.retained.record(topic, &payload, qos, now) {
                tracing::warn!(error = %e, "could not persist a retained message");
            }
        }
        self.collector
            .send(vec![Inbound {
                topic: topic.to_string(),
                payload: payload.clone(),
                qos,
                retain,
                client_id: Arc::from(source),
                origin: None,
                time_ms: now,
                read: None,
            }])
            .await
            .map_err(|_| PublishError::Stopping)?;
        self.counters.messages_in.fetch_add(1, Ordering::Relaxed);
        self.internal
            .publish(topic, &payload, qos, retain, properties)
            .await
    }
}

/// The running broker.
pub struct Broker {
    shared: Arc<Shared>,
    explorer: Arc<Explorer>,
    collector: Mutex<Option<collector::Collector>>,
    collector_counters: Arc<CollectorCounters>,
    listeners: Mutex<Vec<JoinHandle<()>>>,
    /// Where each listener is bound (useful when a port was 0).
    pub addresses: Vec<(&'static str, SocketAddr)>,
}

fn router_config(cfg: &MqttConfig) -> RouterConfig {
    // The defaults of RouterConfig panic on the first subscribe; every value
    // is set deliberately. Each subscribed filter keeps a ring of
    // max_segment_size × max_segment_count bytes: enough for bursts to a slow
    // subscriber, bounded for a 1 GB Pi.
    RouterConfig {
        // Slots for perch's own links beyond the client limit.
        max_connections: cfg.max_connections + 16,
        max_outgoing_packet_count: 1024,
        max_segment_size: 1 << 20,
        max_segment_count: 4,
        ..Default::default()
    }
}

impl Broker {
    /// Starts the router, restores retained messages, starts the collector
    /// and binds the listeners. Fails (with the address and key) if a port
    /// cannot be bound.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        cfg: &MqttConfig,
        conventions: ingest::conventions::Settings,
        accounts: Arc<Accounts>,
        storage: Arc<Storage>,
        devices: Arc<devices::Registry>,
        clock: Arc<dyn Clock>,
        shutdown: watch::Receiver<bool>,
        sinks: Vec<Arc<dyn MessageSink>>,
    ) -> Result<Broker, MqttError> {
        let rules = ingest::rules::Rules::compile(&cfg.rules)?;
        let retained = retained::RetainedStore::open(&storage.trees())?;
        let restored = retained.all();
        let links = LinkFactory::new(router_config(cfg));
        let internal = InternalPublisher::open(&links)
            .await
            .map_err(MqttError::Router)?;
        let explorer = Arc::new(Explorer::new(cfg.max_topics, cfg.history_bytes.0 as usize));
        let collector_counters = Arc::new(CollectorCounters::default());
        let arrivals = Arc::new(Arrivals::default());
        let (collector, collector_tx) = collector::Collector::start(collector::CollectorParts {
            explorer: explorer.clone(),
            storage,
            interpreter: ingest::conventions::Interpreter::new(rules, conventions),
            devices,
            counters: collector_counters.clone(),
            arrivals: arrivals.clone(),
            sinks,
            retained: restored
                .iter()
                .map(|m| (m.topic.clone(), bytes::Bytes::from(m.payload.clone())))
                .collect(),
        });
        // Back into the router before any client can subscribe.
        for m in &restored {
            if let Err(e) = internal
                .publish(&m.topic, &m.payload, m.qos, true, None)
                .await
            {
                tracing::warn!(error = %e, topic = m.topic, "could not restore a retained message");
            }
        }
        if !restored.is_empty() {
            tracing::info!(count = restored.len(), "restored retained messages");
        }
        let shared = Arc::new(Shared {
            config: cfg.clone(),
            accounts,
            clock,
            links,
            retained,
            counters: Arc::new(BrokerCounters::default()),
            departures: Departures::default(),
            collector: collector_tx,
            arrivals,
            internal,
            shutdown: shutdown.clone(),
            clients: Default::default(),
        });
        let mut broker = Broker {
            shared: shared.clone(),
            explorer,
            collector: Mutex::new(Some(collector)),
            collector_counters,
            listeners: Mutex::new(Vec::new()),
            addresses: Vec::new(),
        };
        let tcp = bind(cfg.listen, "mqtt.listen").await?;
        broker
            .addresses
            .push(("mqtt", tcp.local_addr().unwrap_or(cfg.listen)));
        broker
            .listeners
            .get_mut()
            .push(tokio::spawn(accept_tcp(tcp, None, shared.clone())));
        if let Some(addr) = cfg.ws_listen {
            let ws = bind(addr, "mqtt.ws_listen").await?;
            broker
                .addresses
                .push(("mqtt-ws", ws.local_addr().unwrap_or(addr)));
            broker
                .listeners
                .get_mut()
                .push(tokio::spawn(serve_websocket(ws, shared.clone())));
        }
        if let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) {
            let acceptor = tls_acceptor(cert, key)?;
            let tls = bind(cfg.tls_listen, "mqtt.tls_listen").await?;
            broker
                .addresses
                .push(("mqtts", tls.local_addr().unwrap_or(cfg.tls_listen)));
            broker.listeners.get_mut().push(tokio::spawn(accept_tcp(
                tls,
                Some(acceptor),
                shared.clone(),
            )));
        }
        Ok(broker)
    }

    pub fn explorer(&self) -> &Arc<Explorer> {
        &self.explorer
    }

    /// Who connected with which credentials and what they sent first.
    pub fn arrivals(&self) -> &Arc<Arrivals> {
        &self.shared.arrivals
    }

    pub fn counters(&self) -> &BrokerCounters {
        &self.shared.counters
    }

    pub fn collector_counters(&self) -> &CollectorCounters {
        &self.collector_counters
    }

    pub fn retained_count(&self) -> usize {
        self.shared.retained.len()
    }

    /// Publishes a message for an HTTP user, with that user's rights.
    pub async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        qos: u8,
        retain: bool,
        access: &Access,
        source: &str,
    ) -> Result<(), PublishError> {
        if let Some(reason) = acl::invalid_topic_name(topic) {
            return Err(PublishError::BadTopic {
                topic: topic.to_string(),
                reason,
            });
        }
        if !access.can_publish(topic) {
            return Err(PublishError::NotAllowed(topic.to_string()));
        }
        let limit = self.shared.config.max_payload_bytes.0 as usize;
        if payload.len() > limit {
            return Err(PublishError::TooLarge {
                size: payload.len(),
                limit,
            });
        }
        self.shared
            .publish(topic, payload, qos, retain, source)
            .await
    }

    /// After the shutdown signal: waits (briefly) for connections to close,
    /// then lets the collector store what it holds.
    pub async fn stop(&self) {
        for l in self.listeners.lock().drain(..) {
            l.abort();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.shared.counters.connections.load(Ordering::SeqCst) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.shared.internal.drain.abort();
        // An empty batch tells the collector to store what it has and stop.
        let _ = self.shared.collector.send(Vec::new()).await;
        let collector = self.collector.lock().take();
        if let Some(c) = collector {
            let _ = tokio::task::spawn_blocking(move || c.join()).await;
        }
        if let Err(e) = self.shared.retained.flush() {
            tracing::warn!(error = %e, "could not flush retained messages");
        }
    }
}

use base::stopping;

async fn bind(addr: SocketAddr, key: &'static str) -> Result<TcpListener, MqttError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MqttError::Listen { addr, key, source })
}

async fn accept_tcp(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopping(&mut shutdown) => return,
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        match &tls {
            None => {
                tokio::spawn(connection::serve(
                    transport::Transport::Stream(Box::new(stream)),
                    peer,
                    shared,
                ));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => {
                            connection::serve(
                                transport::Transport::Stream(Box::new(s)),
                                peer,
                                shared,
                            )
                            .await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

async fn serve_websocket(listener: TcpListener, shared: Arc<Shared>) {
    use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
    use axum::response::IntoResponse;

    async fn upgrade(
        State(shared): State<Arc<Shared>>,
        ConnectInfo(transport::Peer(peer)): ConnectInfo<transport::Peer>,
        ws: WebSocketUpgrade,
    ) -> impl IntoResponse {
        let max = shared.config.max_payload_bytes.0 as usize + 64 * 1024;
        ws.protocols(["mqtt", "mqttv3.1"])
            .max_message_size(max)
            .on_upgrade(move |socket| {
                connection::serve(
                    transport::Transport::WebSocket(Box::new(socket)),
                    peer,
                    shared,
                )
            })
    }

    let mut shutdown = shared.shutdown.clone();
    let listener = transport::WsListener {
        inner: listener,
        shared: shared.clone(),
    };
    let app = axum::Router::new()
        .route("/", axum::routing::get(upgrade))
        .route("/mqtt", axum::routing::get(upgrade))
        .with_state(shared);
    let _ = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<transport::Peer>(),
    )
    .with_graceful_shutdown(async move {
        let _ = shutdown.wait_for(|s| *s).await;
    })
    .await;
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let certs: Vec<_> = rustls_pemfile::certs(&mut &read(cert)?[..])
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Pem {
            path: cert.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let key_der = rustls_pemfile::private_key(&mut &read(key)?[..])
        .map_err(|source| TlsError::Pem {
            path: key.to_path_buf(),
            source,
        })?
        .ok_or_else(|| TlsError::NoPrivateKey {
            path: key.to_path_buf(),
        })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

impl base::metrics::MetricSource for Broker {
    fn collect(&self, out: &mut Vec<base::metrics::MetricPoint>) {
        use base::metrics::MetricPoint as P;
        let b = &self.shared.counters;
        let c = &self.collector_counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let (history, topics) = self.explorer.memory_bytes();
        out.push(base::footprint::memory("mqtt_history", history));
        out.push(base::footprint::memory("mqtt_topics", topics));
        out.push(P::gauge(
            "perch_mqtt_connections",
            "MQTT clients connected.",
            b.connections.load(Ordering::Relaxed) as f64,
        ));
        out.push(P::counter(
            "perch_mqtt_connects_total",
            "MQTT connections accepted.",
            get(&b.connects),
        ));
        out.push(P::counter(
            "perch_mqtt_auth_failures_total",
            "MQTT connections refused for their credentials.",
            get(&b.auth_failures),
        ));
        out.push(P::counter(
            "perch_mqtt_acl_denied_total",
            "MQTT publishes and subscriptions refused by topic ACLs.",
            get(&b.acl_denied),
        ));
        for (reason, v) in [
            ("too_large", &b.rejected_too_large),
            ("malformed", &b.rejected_malformed),
        ] {
            out.push(
                P::counter(
                    "perch_mqtt_rejected_total",
                    "MQTT connections closed for bad packets.",
                    get(v),
                )
                .with_label("reason", reason),
            );
        }
        out.push(P::counter(
            "perch_mqtt_messages_received_total",
            "MQTT messages accepted.",
            get(&b.messages_in),
        ));
        out.push(P::counter(
            "perch_mqtt_messages_sent_total",
            "MQTT messages delivered to subscribers.",
            get(&b.messages_out),
        ));
        out.push(P::counter(
            "perch_mqtt_received_bytes_total",
            "Payload bytes of MQTT messages accepted.",
            get(&b.bytes_in),
        ));
        out.push(P::gauge(
            "perch_mqtt_retained_messages",
            "Retained MQTT messages kept.",
            self.retained_count() as f64,
        ));
        out.push(P::gauge(
            "perch_mqtt_topics",
            "Topics the explorer tracks.",
            self.explorer.topic_count() as f64,
        ));
        for (outcome, v) in [
            ("stored", &c.messages_stored),
            ("no_samples", &c.messages_no_samples),
            ("unparsed", &c.unparsed),
            ("rejected", &c.messages_rejected),
        ] {
            out.push(
                P::counter(
                    "perch_ingest_messages_total",
                    "Messages the collector read, by outcome: samples stored, none to store, an unknown format, every sample refused by storage.",
                    get(v),
                )
                .with_label("outcome", outcome),
            );
        }
        out.push(P::counter(
            "perch_ingest_notices_total",
            "Times a topic's message could not be read fully (a time, discovery config or template not used); each is logged once per topic.",
            get(&c.notices),
        ));
        out.push(P::counter(
            "perch_ingest_samples_total",
            "Samples from MQTT messages stored.",
            get(&c.samples),
        ));
        out.push(P::counter(
            "perch_ingest_unparsed_total",
            "Messages whose payload is no known format (kept as messages).",
            get(&c.unparsed),
        ));
        out.push(P::counter(
            "perch_ingest_sentinels_dropped_total",
            "Sentinel error values dropped by rules.",
            get(&c.sentinels_dropped),
        ));
        out.push(P::counter(
            "perch_ingest_samples_rejected_total",
            "Samples from MQTT that storage refused (invalid names, too old).",
            get(&c.samples_rejected),
        ));
        out.push(P::counter(
            "perch_ingest_samples_lost_total",
            "Samples from MQTT dropped because storage could not take them (disk full).",
            get(&c.samples_lost),
        ));
        out.push(P::gauge(
            "perch_ingest_lag_seconds",
            "Time from a message's arrival to its samples being stored, last batch.",
            c.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = MqttError::from(tls_acceptor(&missing, &missing).err().unwrap());
        let prefix = format!("TLS: cannot read {}: ", missing.display());
        assert!(error.to_string().starts_with(&prefix), "{error}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert_eq!(
            tls_acceptor(&empty, &empty).err().unwrap().to_string(),
            format!("{} holds no certificate", empty.display())
        );
    }
}
