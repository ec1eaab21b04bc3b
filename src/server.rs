//! `perch serve`: opens the store, starts the listeners and background work,
//! and shuts everything down in order on SIGTERM or Ctrl-C.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::{TcpListener, UnixListener};

use accounts::Accounts;
use base::{Clock, SystemClock};
use config::Config;
use mqtt::{Broker, Inbound, MessageSink};
use perch_http::AppState;
use search::Search;
use store::Storage;

use crate::service;

pub const CONTROL_SOCKET: &str = "control.sock";

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let data_dir = config.data_dir.clone();
    tracing::info!(version = env!("CARGO_PKG_VERSION"), data_dir = %data_dir.display(), "starting perch");
    if let Some(ram) = config.memory.ram_bytes() {
        tracing::info!(
            ram = %base::units::format_bytes(ram),
            profile = config::MemoryProfile::for_ram(ram).name,
            cache_bytes = %config.storage.cache_bytes,
            writer_heap = %config.search.writer_heap,
            history_bytes = %config.mqtt.history_bytes,
            max_head_samples = config.storage.max_head_samples,
            query_max_samples = config.query.max_samples,
            "memory sized for the RAM (docs/configuration.md)"
        );
    }
    let (storage, report) = {
        let (cfg, dir, clock) = (config.storage.clone(), data_dir.clone(), clock.clone());
        tokio::task::spawn_blocking(move || Storage::open(&cfg, &dir, clock))
            .await?
            .with_context(|| format!("cannot open the store in {}", data_dir.display()))?
    };
    tracing::info!(
        series = storage.series_count(),
        wal_samples_replayed = report.wal_samples_replayed,
        disk_budget = storage.disk_budget(),
        "store open"
    );
    if let Some(q) = &report.quarantined {
        tracing::error!(moved_to = %q.display(), "the database was damaged and has been moved aside; started fresh");
    }
    let accounts = Arc::new(Accounts::open(&storage.trees()).context("cannot open accounts")?);
    let background = storage.start_background();
    let shutdown = shutdown_signal();
    let metrics = Arc::new(base::metrics::Registry::new());
    metrics.register(Arc::new(base::host::HostMetrics::new(&data_dir)));
    metrics.register(Arc::new(base::footprint::ProcessFootprint::new(
        crate::alloc::counted_heap(),
    )));
    metrics.register(Arc::new(query::QueryMemory));
    metrics.register(storage.clone());
    let search = open_search(&config, clock.clone()).await?;
    let mut sinks: Vec<Arc<dyn MessageSink>> = Vec::new();
    if let Some(s) = &search {
        metrics.register(s.clone());
        sinks.push(Arc::new(SearchSink(s.clone())));
    }
    let forwarder = forward::Forwarder::open(&config.forward, &storage.trees(), clock.clone())
        .context("cannot open the forwarding queues")?;
    // Always hooked: targets may be added at runtime (Settings); with none
    // the hooks return at once.
    metrics.register(forwarder.clone());
    storage.observe(forwarder.clone());
    sinks.push(Arc::new(ForwardSink(forwarder.clone())));
    forwarder.start_senders();
    let devices = devices::Registry::open(&storage.trees(), &config.devices, clock.clone())
        .context("cannot open the device registry")?;
    metrics.register(devices.clone());
    let devices_writer = persist_devices(devices.clone(), shutdown.clone());
    // Rule files with a problem stop the start, each problem with its line.
    let rules = Arc::new(
        alerts::Manager::open(
            &config.alerts,
            &config.query,
            storage.clone(),
            clock.clone(),
            format!(
                "http://{}.local:{}",
                base::host::host_name(),
                config.http.listen.port()
            ),
            email_tls(&config.alerts)?,
        )
        .context("cannot load the alerting and recording rules")?,
    );
    let rules_task = tokio::spawn(rules.clone().run(shutdown.clone()));

    let broker = Arc::new(
        Broker::start(
            &config.mqtt,
            ingest::conventions::Settings::from_config(&config.devices),
            accounts.clone(),
            storage.clone(),
            devices.clone(),
            clock.clone(),
            shutdown.clone(),
            sinks,
        )
        .await
        .context("cannot start the MQTT broker")?,
    );
    for (what, addr) in &broker.addresses {
        tracing::info!(%addr, "{what} listening");
    }
    let notify_task = rules.notifier().cloned().map(|n| {
        let publisher: Arc<dyn alerts::notify::Publisher> =
            Arc::new(BrokerPublisher(broker.clone()));
        tokio::spawn(n.run(Some(publisher), shutdown.clone()))
    });
    metrics.register(broker.clone());
    let cameras =
        cameras::Cameras::start(&config.cameras, &storage.trees(), &data_dir, clock.clone())
            .await
            .context("cannot start the cameras")?;
    metrics.register(cameras.clone());
    let recorder = record_self_metrics(
        metrics.clone(),
        storage.clone(),
        config.storage.self_metrics_interval.0,
        shutdown.clone(),
    );

    let state = Arc::new(AppState {
        config: config.clone(),
        storage: storage.clone(),
        accounts,
        dashboards: Arc::new(
            dashboards::Dashboards::open(&storage.trees()).context("cannot open dashboards")?,
        ),
        broker: Some(broker.clone()),
        cameras: Some(cameras.clone()),
        search: search.clone(),
        forwarder: Some(forwarder.clone()),
        metrics: Some(metrics.clone()),
        devices: Some(devices.clone()),
        rules: Some(rules.clone()),
        ready: Default::default(),
    });
    let listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} (http.listen)", config.http.listen))?;
    let control_path = data_dir.join(CONTROL_SOCKET);
    let _ = std::fs::remove_file(&control_path);
    let control = UnixListener::bind(&control_path).with_context(|| {
        format!(
            "cannot create the control socket {}",
            control_path.display()
        )
    })?;
    std::fs::set_permissions(&control_path, std::fs::Permissions::from_mode(0o600))?;

    let control_task = {
        let router = perch_http::control::router(state.clone());
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(control, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        })
    };
    state.ready.store(true, Ordering::SeqCst);
    tracing::info!(http = %config.http.listen, "perch is ready");
    service::notify_ready("serving");
    let watchdog = service::start_watchdog(
        vec![
            // Takes the store's head locks: a deadlocked store never answers.
            service::Probe::blocking("storage", {
                let s = storage.clone();
                move || {
                    s.pending_samples();
                    Ok(())
                }
            }),
            service::Probe::Http(config.http.listen),
        ],
        shutdown.clone(),
    );

    let app = perch_http::router(state.clone());
    // With each client's address (it keys the sign-in limiter), and the
    // header timeout and per-address connection cap of `[http]`.
    perch_http::serve(listener, app, &config.http, shutdown.clone())
        .await
        .context("HTTP server failed")?;
    let _ = control_task.await;
    let _ = recorder.await;
    let _ = std::fs::remove_file(&control_path);
    tracing::info!("stopping: closing MQTT connections and camera sessions");
    broker.stop().await;
    cameras.stop().await;
    // After the collector: every message and sample it stored is queued.
    tracing::info!("stopping: writing out the forwarding queues");
    forwarder.stop().await;
    if let Some(s) = search {
        tracing::info!("stopping: committing the search index");
        tokio::task::spawn_blocking(move || s.close()).await?;
    }

    let _ = devices_writer.await;
    let _ = rules_task.await;
    if let Some(t) = notify_task {
        let _ = t.await;
    }
    // After the broker: every message it took has reached the registry.
    if let Err(e) = devices.persist(true) {
        tracing::warn!(error = %e, "cannot write out the device registry");
    }
    tracing::info!("stopping: writing out the store");
    let s = storage.clone();
    tokio::task::spawn_blocking(move || s.close())
        .await?
        .context("could not write out the store cleanly")?;
    background.join();
    if let Some(w) = watchdog {
        w.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Opens the MQTT history index when `search.enabled`.
async fn open_search(
    config: &Arc<Config>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Option<Arc<Search>>> {
    if !config.search.enabled {
        return Ok(None);
    }
    let (cfg, dir) = (config.search.clone(), config.data_dir.clone());
    let search = tokio::task::spawn_blocking(move || Search::open(&cfg, &dir, clock))
        .await?
        .context("cannot open the search index")?;
    let st = search.status();
    tracing::info!(
        days = st.periods.len(),
        messages = st.documents,
        "search index open"
    );
    Ok(Some(search))
}

/// Hands the collector's messages to the search index.
pub(crate) struct SearchSink(pub(crate) Arc<Search>);

impl MessageSink for SearchSink {
    fn accept(&self, m: &Arc<Inbound>) {
        self.0.offer(search::Message {
            time_ms: m.time_ms,
            topic: m.topic.clone(),
            payload: m.payload.clone(),
            client_id: m.client_id.clone(),
            qos: m.qos,
            retain: m.retain,
        });
    }
}

/// Hands the collector's messages to the MQTT forwarding targets.
struct ForwardSink(Arc<forward::Forwarder>);

impl MessageSink for ForwardSink {
    fn accept(&self, m: &Arc<Inbound>) {
        self.0
            .offer_message(&m.topic, &m.payload, m.qos, m.retain, m.time_ms);
    }
}

/// Every `storage.self_metrics_interval`, the host's, the store's and the
/// broker's own measurements go into the store as ordinary series.
fn record_self_metrics(
    metrics: Arc<base::metrics::Registry>,
    storage: Arc<Storage>,
    every: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if every.is_zero() {
            return;
        }
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = base::stopping(&mut stop) => break,
            }
            let (m, s) = (metrics.clone(), storage.clone());
            match tokio::task::spawn_blocking(move || store::metrics::record(&m, &s)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot store self-metrics"),
                Err(e) => tracing::warn!(error = %e, "self-metrics recording failed"),
            }
        }
    })
}

/// Writes what changed in the device registry every few seconds, in one
/// batch (see `devices::Registry::persist`).
fn persist_devices(
    devices: Arc<devices::Registry>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = base::stopping(&mut stop) => break,
            }
            let d = devices.clone();
            match tokio::task::spawn_blocking(move || d.persist(false)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot write the device registry"),
                Err(e) => tracing::warn!(error = %e, "writing the device registry failed"),
            }
        }
    })
}

/// Becomes true once on SIGTERM or SIGINT.
fn shutdown_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutdown requested");
        service::notify_stopping();
        let _ = tx.send(true);
    });
    rx
}

/// Alert notifications published on perch's own broker, with every right
/// (perch's own session), QoS 1.
struct BrokerPublisher(Arc<Broker>);

impl alerts::notify::Publisher for BrokerPublisher {
    fn publish(
        &self,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            self.0
                .publish(
                    &topic,
                    payload.into(),
                    1,
                    retain,
                    &mqtt::Access::Everything,
                    "perch alerts",
                )
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// TLS for e-mail notifications: the system's roots and the e-mail
/// targets' `ca_file` (the first one set).
fn email_tls(
    alerts: &config::AlertsConfig,
) -> anyhow::Result<Option<Arc<tokio_rustls::rustls::ClientConfig>>> {
    let email: Vec<&config::NotifyConfig> = alerts
        .notify
        .iter()
        .filter(|n| n.kind == config::NotifyKind::Email)
        .collect();
    if email.is_empty() {
        return Ok(None);
    }
    let ca = email.iter().find_map(|n| n.ca_file.as_deref());
    Ok(Some(
        forward::tls::client_config(ca).context("TLS for e-mail notifications")?,
    ))
}
