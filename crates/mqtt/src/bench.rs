//! `perch bench mqtt`: messages/s and samples/s from publish to stored, and
//! publish-to-queryable latency, with several publishing connections; and
//! the same load relayed by Debian's Mosquitto to one subscriber, for
//! comparison. Loopback only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use accounts::{Accounts, Role};
use base::{Clock, SystemClock};
use config::{Config, StorageConfig};
use store::{Matcher, Storage};

#[derive(Args, Debug, Clone)]
pub struct MqttBenchArgs {
    /// Publishing connections
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Messages per connection
    #[arg(long, default_value_t = 50_000)]
    pub messages: usize,
    /// QoS of the publishes (0 or 1)
    #[arg(long, default_value_t = 1)]
    pub qos: u8,
    /// Unacknowledged QoS 1 publishes per connection
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Skip the comparison with Debian's mosquitto
    #[arg(long)]
    pub no_mosquitto: bool,
    /// Also index every message for full-text search, as `perch serve` does
    #[arg(long)]
    pub search: bool,
}

/// Builds the collector's extra sinks for a data directory (the search
/// index, with `--search`); supplied by the caller so this module does not
/// reach into others.
pub type SinkFactory<'a> = &'a (dyn Fn(&std::path::Path, Arc<dyn Clock>) -> anyhow::Result<Vec<Arc<dyn super::MessageSink>>>
         + Sync);

/// A sensor-like JSON message of 7 fields, as gen_sensors.py's mqtt format.
fn payload(conn: usize, i: usize) -> Vec<u8> {
    format!(
        r#"{{"temp":{:.2},"hum":{:.1},"co2":{},"light":{},"energy_wh":{:.3},"battery_v":3.9{},"status":0}}"#,
        20.0 + (i % 100) as f64 / 10.0,
        40.0 + (conn % 10) as f64,
        400 + i % 300,
        i % 800,
        i as f64 * 0.25,
        i % 10
    )
    .into_bytes()
}

/// The next whole packet in `buf` at `at`: its first byte, where its body
/// starts and where it ends; `None` until more bytes arrive.
fn next_packet(buf: &[u8], at: usize) -> Option<(u8, usize, usize)> {
    let (mut len, mut mult, mut j) = (0usize, 1usize, at + 1);
    loop {
        // The remaining length takes at most four bytes.
        if j >= buf.len() || j >= at + 5 {
            return None;
        }
        let b = buf[j];
        len += (b & 0x7f) as usize * mult;
        mult *= 128;
        j += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    (buf.len() >= j + len).then_some((buf[at], j, j + len))
}

async fn connect(
    addr: SocketAddr,
    client: &str,
    login: Option<(&str, &str)>,
) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(&crate::wire::connect("MQTT", 4, 0, client, login))
        .await?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await?;
    if ack != [0x20, 2, 0, 0] {
        bail!("CONNACK {ack:?}");
    }
    Ok(s)
}

/// Reads packets until `n` PUBACKs have arrived, skipping other packets.
async fn count_acks(
    r: &mut tokio::net::tcp::OwnedReadHalf,
    acks: &AtomicU64,
    target: u64,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 1 << 16];
    let mut pending: Vec<u8> = Vec::new();
    while acks.load(Ordering::Relaxed) < target {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            bail!("connection closed");
        }
        pending.extend_from_slice(&buf[..n]);
        let mut i = 0;
        // PUBACKs are counted; other packets are skipped by their length.
        while let Some((first, _, end)) = next_packet(&pending, i) {
            if first >> 4 == 4 {
                acks.fetch_add(1, Ordering::Relaxed);
            }
            i = end;
        }
        pending.drain(..i);
    }
    Ok(())
}

/// Publishes `messages` messages on one connection, keeping `window`
/// unacknowledged at QoS 1.
async fn publisher(
    addr: SocketAddr,
    conn: usize,
    args: &MqttBenchArgs,
    login: Option<(&str, &str)>,
) -> anyhow::Result<()> {
    let s = connect(addr, &format!("bench-pub-{conn}"), login).await?;
    let (mut r, mut w) = s.into_split();
    let acks = Arc::new(AtomicU64::new(0));
    let total = args.messages as u64;
    let reader = if args.qos > 0 {
        let acks = acks.clone();
        Some(tokio::spawn(async move {
            count_acks(&mut r, &acks, total).await
        }))
    } else {
        None
    };
    let topic = format!("bench/site{}/dev{conn}/env", conn % 4);
    let mut batch = Vec::with_capacity(1 << 16);
    for i in 0..args.messages {
        if args.qos > 0 {
            while (i as u64).saturating_sub(acks.load(Ordering::Relaxed)) >= args.window as u64 {
                if !batch.is_empty() {
                    w.write_all(&batch).await?;
                    batch.clear();
                }
                tokio::task::yield_now().await;
            }
        }
        let pkid = (i % 65535 + 1) as u16;
        batch.extend_from_slice(&crate::wire::publish(
            &topic,
            &payload(conn, i),
            args.qos,
            pkid,
        ));
        if batch.len() > 32 * 1024 {
            w.write_all(&batch).await?;
            batch.clear();
        }
    }
    w.write_all(&batch).await?;
    if let Some(reader) = reader {
        reader.await??;
    }
    Ok(())
}

/// Runs the publishers; returns the seconds until all were acknowledged.
async fn run_load(
    addr: SocketAddr,
    args: &MqttBenchArgs,
    login: Option<(&str, &str)>,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for conn in 0..args.connections {
        let a = args.clone();
        let login = login.map(|(u, p)| (u.to_string(), p.to_string()));
        tasks.push(tokio::spawn(async move {
            let l = login.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
            publisher(addr, conn, &a, l).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

pub fn run(args: MqttBenchArgs, sinks: SinkFactory<'_>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let total = args.connections * args.messages;
        println!(
            "load:    {} connections × {} messages of 7 JSON fields, QoS {}, window {}",
            args.connections, args.messages, args.qos, args.window
        );
        perch_run(&args, total, sinks).await?;
        if !args.no_mosquitto {
            match mosquitto_run(&args, total).await {
                Ok(()) => {}
                Err(e) => println!("mosquitto: skipped ({e:#})"),
            }
        }
        Ok(())
    })
}

async fn perch_run(
    args: &MqttBenchArgs,
    total: usize,
    sinks: SinkFactory<'_>,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("perch-bench-mqtt-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(dir.clone());
    let mut config = Config {
        data_dir: dir.clone(),
        ..Default::default()
    };
    config.mqtt.listen = free_addr()?;
    config.mqtt.ws_listen = None;
    config.mqtt.max_connections = args.connections + 8;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (storage, _) = Storage::open(&StorageConfig::default(), &dir, clock.clone())?;
    let background = storage.start_background();
    let accounts = Arc::new(Accounts::open(&storage.trees())?);
    accounts.add("bench", Role::Admin, "bench-password", &[], 0)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let devices = devices::Registry::open(&storage.trees(), &config.devices, clock.clone())?;
    let broker = super::Broker::start(
        &config.mqtt,
        ingest::conventions::Settings::from_config(&config.devices),
        accounts,
        storage.clone(),
        devices,
        clock.clone(),
        stop_rx,
        sinks(&dir, clock.clone())?,
    )
    .await?;
    let addr = config.mqtt.listen;
    let login = Some(("bench", "bench-password"));

    // Latency probes: one message every 20 ms on its own connection; each
    // is timed until its sample can be read back.
    let probe_storage = storage.clone();
    let probes = tokio::spawn(async move {
        let mut s = connect(addr, "bench-probe", Some(("bench", "bench-password"))).await?;
        let mut latencies = Vec::new();
        for k in 0..100usize {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let t0 = Instant::now();
            s.write_all(&crate::wire::publish(
                "bench/probe",
                format!("{k}").as_bytes(),
                0,
                0,
            ))
            .await?;
            let matcher = [Matcher::equal("__name__", "probe")];
            loop {
                let ids: Vec<u32> = probe_storage
                    .select(&matcher, i64::MIN, i64::MAX)
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect();
                let seen = probe_storage
                    .read(&ids, i64::MIN, i64::MAX, 1 << 20)?
                    .first()
                    .is_some_and(|d| d.values.contains(&(k as f64)));
                if seen {
                    break;
                }
                if t0.elapsed() > Duration::from_secs(10) {
                    bail!("probe {k} not stored after 10 s");
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        Ok::<_, anyhow::Error>(latencies)
    });

    let acked_secs = run_load(addr, args, login).await?;
    // Stored: every message's 7 samples appended.
    let target = (total * 7) as u64;
    let started = Instant::now();
    while broker.collector_counters().samples.load(Ordering::Relaxed) < target {
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "only {} of {target} samples stored",
                broker.collector_counters().samples.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stored_secs = acked_secs + started.elapsed().as_secs_f64();
    let mut lat = probes.await??;
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
    let messages = broker.collector_counters().messages.load(Ordering::Relaxed) - lat.len() as u64;
    println!(
        "perch:   {total} published, {messages} collected, {} samples stored in {stored_secs:.2} s = {:.0} messages/s, {:.0} samples/s (acknowledged after {acked_secs:.2} s)",
        broker.collector_counters().samples.load(Ordering::Relaxed),
        total as f64 / stored_secs,
        (total * 7) as f64 / stored_secs
    );
    println!(
        "perch:   publish-to-queryable latency under that load: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} probes)",
        pct(0.5),
        pct(0.99),
        lat[lat.len() - 1],
        lat.len()
    );
    if messages != total as u64 {
        println!(
            "perch:   WARNING: {} messages collected, {total} published",
            messages
        );
    }
    let _ = stop_tx.send(true);
    broker.stop().await;
    storage.close()?;
    background.join();
    Ok(())
}

async fn mosquitto_run(args: &MqttBenchArgs, total: usize) -> anyhow::Result<()> {
    let addr = free_addr()?;
    let dir = std::env::temp_dir().join(format!("perch-bench-mosquitto-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = RemoveOnDrop(dir.clone());
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages {}\npersistence false\n",
            addr.port(),
            args.window
        ),
    )?;
    let mut child = tokio::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("mosquitto is not installed")?;
    let mut sub = None;
    for _ in 0..100 {
        if let Ok(s) = connect(addr, "bench-sub", None).await {
            sub = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut sub = sub.context("mosquitto did not start")?;
    sub.write_all(&crate::wire::subscribe(1, "bench/#", args.qos))
        .await?;
    let mut suback = [0u8; 5];
    sub.read_exact(&mut suback).await?;
    // The subscriber counts PUBLISH packets (and acknowledges QoS 1).
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let qos = args.qos;
    let reader = tokio::spawn(async move {
        let (mut r, mut w) = sub.into_split();
        let mut buf = vec![0u8; 1 << 16];
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, anyhow::Error>(());
            }
            pending.extend_from_slice(&buf[..n]);
            let mut i = 0;
            let mut acks = Vec::new();
            while let Some((first, j, end)) = next_packet(&pending, i) {
                if first >> 4 == 3 {
                    counter.fetch_add(1, Ordering::Relaxed);
                    if qos > 0 {
                        let tlen = u16::from_be_bytes([pending[j], pending[j + 1]]) as usize;
                        let pk = &pending[j + 2 + tlen..j + 4 + tlen];
                        acks.extend_from_slice(&[0x40, 2, pk[0], pk[1]]);
                    }
                }
                i = end;
            }
            pending.drain(..i);
            if !acks.is_empty() {
                w.write_all(&acks).await?;
            }
        }
    });
    let started = Instant::now();
    run_load(addr, args, None).await?;
    while received.load(Ordering::Relaxed) < total as u64 {
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "subscriber got {} of {total}",
                received.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "mosquitto: {total} published and relayed to one subscriber in {secs:.2} s = {:.0} messages/s",
        total as f64 / secs
    );
    reader.abort();
    let _ = child.kill().await;
    Ok(())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
