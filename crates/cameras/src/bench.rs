//! `perch bench cameras`: what relaying costs. Starts a real RTSP camera
//! (GStreamer's RTSP server through `tests/fixtures/rtsp_cam.py`, or any
//! `--url`), then a `perch serve` child process, and reads that process's
//! CPU time and resident memory from `/proc` while it relays N sessions of
//! the camera, then while V WebSocket viewers watch, then while it takes a
//! snapshot every second. The numbers go into `docs/cameras.md`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use base::Clock;

#[derive(Args, Debug)]
pub struct CameraBenchArgs {
    /// Relayed camera sessions (each its own RTSP session to the camera)
    #[arg(long, default_value_t = 2)]
    pub streams: usize,
    /// Live viewers (WebSocket) in the second phase, spread over the streams
    #[arg(long, default_value_t = 10)]
    pub viewers: usize,
    /// Seconds measured per phase
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Size of the GStreamer test camera
    #[arg(long, default_value = "1920x1080")]
    pub size: String,
    /// The test camera script (needs python3-gi and gir1.2-gst-rtsp-server-1.0)
    #[arg(long, default_value = "tests/fixtures/rtsp_cam.py")]
    pub camera_script: PathBuf,
    /// Use this RTSP URL instead of starting the test camera
    #[arg(long)]
    pub url: Option<String>,
}

/// A child process killed and reaped when dropped.
pub struct Reaped(Child);

/// Starts GStreamer's RTSP test camera (`script`, needs python3-gi and
/// gir1.2-gst-rtsp-server-1.0) streaming H.264 at `size` (`1920x1080`);
/// returns it and its URL. The camera stops when the handle is dropped.
pub fn start_test_camera(script: &Path, size: &str) -> anyhow::Result<(Reaped, String)> {
    let port = free_port()?;
    let mut child = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(port.to_string())
        .arg(size)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", script.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let camera = Reaped(child);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
    if !line.starts_with("rtsp://") {
        bail!("the test camera did not start: {line:?}");
    }
    Ok((camera, line.trim().to_string()))
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces: fields count from its ')'.
    let rest = &stat[stat.rfind(')').context("odd /proc stat")? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// Share of one core the process used over `seconds`, and its RSS after.
async fn measure(pid: u32, seconds: u64) -> anyhow::Result<(f64, u64)> {
    let (c0, t0) = (cpu_seconds(pid)?, Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu = (cpu_seconds(pid)? - c0) / t0.elapsed().as_secs_f64();
    Ok((cpu * 100.0, base::host::process_rss_bytes(pid)?))
}

/// A minimal HTTP/1.1 request on loopback (the bench has no HTTP client).
async fn http(port: u16, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header")?;
    let status = head.split(' ').nth(1).context("no HTTP status")?.parse()?;
    Ok((status, body.to_string()))
}

async fn camera_status(port: u16, name: &str) -> anyhow::Result<serde_json::Value> {
    let (_, body) = http(port, "GET", &format!("/api/v1/cameras/{name}"), "").await?;
    Ok(serde_json::from_str::<serde_json::Value>(&body)?["data"].clone())
}

pub fn run(args: CameraBenchArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(args))
}

async fn bench(args: CameraBenchArgs) -> anyhow::Result<()> {
    let _camera;
    let url = match &args.url {
        Some(u) => u.clone(),
        None => {
            let (camera, url) = start_test_camera(&args.camera_script, &args.size)?;
            _camera = camera;
            url
        }
    };

    let dir = std::env::temp_dir().join(format!("perch-bench-cameras-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let http_port = free_port()?;
    let perch = Reaped(
        Command::new(std::env::current_exe()?)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--http", &format!("127.0.0.1:{http_port}")])
            .args(["--mqtt", &format!("127.0.0.1:{}", free_port()?)])
            .args(["--mqtt-ws", &format!("127.0.0.1:{}", free_port()?)])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?,
    );
    let pid = perch.0.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(http(http_port, "GET", "/healthz", "").await, Ok((200, _))) {
        if Instant::now() > deadline {
            bail!("perch did not start");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (idle_cpu, idle_rss) = measure(pid, args.seconds.min(10)).await?;
    println!(
        "perch idle: {idle_cpu:.2} % of a core, RSS {:.1} MiB",
        mib(idle_rss)
    );

    let names: Vec<String> = (0..args.streams).map(|i| format!("bench{i}")).collect();
    for n in &names {
        let body = format!(r#"{{"name":"{n}","url":"{url}"}}"#);
        let (status, text) = http(http_port, "POST", "/api/v1/cameras", &body).await?;
        if status != 201 {
            bail!("adding camera {n}: {status} {text}");
        }
    }
    for n in &names {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = camera_status(http_port, n).await?;
            if s["status"] == "online" && s["fps"].as_f64().unwrap_or(0.0) > 0.0 {
                println!(
                    "{n}: {}x{} {} {:.1} fps {:.0} kbit/s",
                    s["width"],
                    s["height"],
                    s["codec"].as_str().unwrap_or("?"),
                    s["fps"].as_f64().unwrap_or(0.0),
                    s["bitrate_bps"].as_f64().unwrap_or(0.0) / 1000.0
                );
                break;
            }
            if Instant::now() > deadline {
                bail!("camera {n} did not come online: {s}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (relay_cpu, relay_rss) = measure(pid, args.seconds).await?;
    let per_stream = (relay_cpu - idle_cpu) / args.streams as f64;
    println!(
        "relaying {} streams, no viewers: {relay_cpu:.2} % of a core, RSS {:.1} MiB \
         => {per_stream:.2} % and {:.1} MiB per stream",
        args.streams,
        mib(relay_rss),
        mib(relay_rss.saturating_sub(idle_rss)) / args.streams as f64
    );

    // Viewers read as fast as they can and count what they receive.
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut viewers = Vec::new();
    for v in 0..args.viewers {
        let ws = format!(
            "ws://127.0.0.1:{http_port}/api/v1/cameras/{}/live",
            names[v % names.len()]
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(&ws).await?;
        let received = received.clone();
        viewers.push(tokio::spawn(async move {
            while let Some(Ok(m)) = socket.next().await {
                received.fetch_add(m.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = received.load(std::sync::atomic::Ordering::Relaxed);
    let (view_cpu, view_rss) = measure(pid, args.seconds).await?;
    let sent = received.load(std::sync::atomic::Ordering::Relaxed) - before;
    let per_viewer = (view_cpu - relay_cpu) / args.viewers.max(1) as f64;
    println!(
        "+ {} viewers: {view_cpu:.2} % of a core, RSS {:.1} MiB => {per_viewer:.2} % and {:.2} MiB \
         per viewer; {:.0} kbit/s per viewer delivered",
        args.viewers,
        mib(view_rss),
        mib(view_rss.saturating_sub(relay_rss)) / args.viewers.max(1) as f64,
        sent as f64 * 8.0 / args.seconds as f64 / args.viewers.max(1) as f64 / 1000.0
    );
    for v in viewers {
        v.abort();
    }

    // Snapshots every second on the first stream: from tick to file.
    let body = format!(r#"{{"url":"{url}","snapshot_schedule":"* * * * * *"}}"#);
    let (status, text) = http(
        http_port,
        "PUT",
        &format!("/api/v1/cameras/{}", names[0]),
        &body,
    )
    .await?;
    if status != 200 {
        bail!("scheduling snapshots: {status} {text}");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let started_ms = base::SystemClock.now_ms();
    let (snap_cpu, _) = measure(pid, args.seconds).await?;
    let (_, text) = http(
        http_port,
        "GET",
        &format!("/api/v1/cameras/{}/snapshots?limit=10000", names[0]),
        "",
    )
    .await?;
    let list: serde_json::Value = serde_json::from_str(&text)?;
    // Snapshot ids are the time the file was written; ticks are on whole
    // seconds.
    let mut latencies: Vec<i64> = list["data"]
        .as_array()
        .context("snapshot list")?
        .iter()
        .filter_map(|m| m["id"].as_i64())
        .filter(|id| *id >= started_ms)
        .map(|id| id % 1000)
        .collect();
    latencies.sort();
    if latencies.is_empty() {
        bail!("no snapshots were taken");
    }
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!(
        "snapshots every second ({} taken in {} s): tick to file p50 {} ms, p95 {} ms, max {} ms; \
         {snap_cpu:.2} % of a core in all (+{:.2} % for the snapshots)",
        latencies.len(),
        args.seconds,
        pct(0.5),
        pct(0.95),
        latencies[latencies.len() - 1],
        snap_cpu - relay_cpu
    );
    drop(perch);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}
