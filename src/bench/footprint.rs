//! `perch bench footprint`: what perch costs a small board, beside
//! VictoriaMetrics on the same load — resident memory idle and under a
//! live load, bytes written to disk per stored sample (what wears an SD
//! card out), and the data directory per sample after a clean stop. Each
//! system runs alone, as its own process, so they do not share the cores.
//! The numbers go into `docs/performance.md`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use base::host::{process_rss_bytes, process_written_bytes};
use clap::Args;
use query::bench::peers::{add_bench_user, start_perch, start_victoria, which, Client, Server};

#[derive(Args, Debug)]
pub struct FootprintArgs {
    /// Live series: devices of 10 fields each, one sample per series per
    /// interval
    #[arg(long, default_value_t = 10_000)]
    pub series: usize,
    /// Seconds between two samples of a series
    #[arg(long, default_value_t = 10)]
    pub interval: u64,
    /// Minutes of load
    #[arg(long, default_value_t = 20)]
    pub minutes: u64,
    /// Seconds to idle before the load, and to settle after it
    #[arg(long, default_value_t = 60)]
    pub idle: u64,
    /// Also measure VictoriaMetrics (`victoria-metrics` on PATH)
    #[arg(long)]
    pub victoria_metrics: bool,
    /// perch's configuration (TOML) besides the benchmark's ports and data
    /// directory; its defaults when absent
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The perch binary to measure (another build, to compare); this one by
    /// default
    #[arg(long)]
    pub perch: Option<PathBuf>,
    /// Test cameras perch relays during the whole run (GStreamer's RTSP
    /// server, each its own stream; perch only)
    #[arg(long, default_value_t = 0)]
    pub cameras: usize,
    /// Size of the test cameras' H.264 video
    #[arg(long, default_value = "1280x720")]
    pub camera_size: String,
    /// The test camera script (needs python3-gi and gir1.2-gst-rtsp-server-1.0)
    #[arg(long, default_value = "tests/fixtures/rtsp_cam.py")]
    pub camera_script: PathBuf,
    /// Where the systems keep their data: a disk, not tmpfs, whose writes
    /// the kernel counts (a temporary directory under the current one by
    /// default)
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

const FIELDS: [&str; 10] = [
    "temp",
    "hum",
    "co2",
    "light",
    "energy_wh",
    "battery_v",
    "pm25",
    "pressure",
    "rssi",
    "status",
];

/// What one system cost.
#[derive(Debug, Default)]
struct Footprint {
    rss_idle: u64,
    rss_loaded: u64,
    rss_settled: u64,
    /// Written to disk from the start of the load to the end of settling.
    written_running: u64,
    /// The same up to the end of a clean stop.
    written_with_stop: u64,
    data_dir: u64,
    samples: u64,
}

pub fn run(args: FootprintArgs) -> anyhow::Result<()> {
    if args.series == 0 || args.interval == 0 || args.minutes == 0 {
        bail!("--series, --interval and --minutes must be at least 1");
    }
    if args.victoria_metrics && !which("victoria-metrics") {
        bail!("victoria-metrics is not on PATH (Debian: apt install victoria-metrics)");
    }
    let mut config = match &args.config {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        None => String::new(),
    };
    // Streaming from the start, so that idle includes the relayed video.
    let mut cameras = Vec::new();
    for n in 0..args.cameras {
        let (camera, url) =
            cameras::bench::start_test_camera(&args.camera_script, &args.camera_size)?;
        config.push_str(&format!(
            "\n[[cameras]]\nname = \"bench{n}\"\nurl = \"{url}\"\n"
        ));
        cameras.push(camera);
    }
    let base = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::current_dir()?.join(format!("perch-footprint-{}", std::process::id())),
    };
    std::fs::create_dir_all(&base)?;
    let client = Client::new()?;
    let mut results = Vec::new();
    let perch_dir = base.join("perch");
    std::fs::create_dir_all(&perch_dir)?;
    let exe = match &args.perch {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    add_bench_user(&exe, &perch_dir)?;
    let perch = start_perch(&client, &exe, &perch_dir, &config)?;
    let url = format!("{}/write", perch.url);
    if args.cameras > 0 {
        wait_for_cameras(&client, &perch.url, args.cameras)?;
    }
    results.push((
        "perch",
        measure(&client, perch, &url, &perch_dir.join("data"), &args)?,
    ));
    drop(cameras);
    if args.victoria_metrics {
        let vm_dir = base.join("victoria-metrics");
        let vm = start_victoria(&client, &vm_dir, &[])?;
        let url = format!("{}/write", vm.url);
        results.push((
            "VictoriaMetrics",
            measure(&client, vm, &url, &vm_dir.join("vm"), &args)?,
        ));
    }
    if args.dir.is_none() {
        std::fs::remove_dir_all(&base)?;
    }
    report(&results, &args);
    Ok(())
}

fn measure(
    client: &Client,
    server: Server,
    write_url: &str,
    data: &Path,
    args: &FootprintArgs,
) -> anyhow::Result<Footprint> {
    let pid = server.child.id();
    let name = server.name;
    eprintln!("{name}: idle for {} s", args.idle);
    std::thread::sleep(Duration::from_secs(args.idle));
    let mut f = Footprint {
        rss_idle: process_rss_bytes(pid)?,
        ..Footprint::default()
    };
    let written_before = process_written_bytes(pid)?;
    let ticks = args.minutes * 60 / args.interval;
    let mut walk = Walk::new(args.series);
    let start = Instant::now();
    for tick in 0..ticks {
        let due = start + Duration::from_secs(tick * args.interval);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let body = walk.lines(unix_ns());
        // A pooled connection the server closed while idle fails once.
        let (status, text) = client
            .post(write_url, "text/plain", body.clone())
            .or_else(|_| client.post(write_url, "text/plain", body))?;
        if status != 204 {
            bail!("{name} refused a write ({status}): {text}");
        }
        f.samples += args.series as u64;
        if tick % (60 / args.interval).max(1) == 0 {
            eprintln!(
                "{name}: minute {} of {}, RSS {} MiB",
                tick * args.interval / 60,
                args.minutes,
                process_rss_bytes(pid)? >> 20
            );
        }
    }
    std::thread::sleep(Duration::from_secs(args.interval));
    f.rss_loaded = process_rss_bytes(pid)?;
    print_footprint(client, &server.url, name);
    eprintln!("{name}: settling for {} s", args.idle);
    std::thread::sleep(Duration::from_secs(args.idle));
    f.rss_settled = process_rss_bytes(pid)?;
    f.written_running = process_written_bytes(pid)? - written_before;
    let usage = server.stop(Duration::from_secs(120))?;
    f.written_with_stop = (usage.ru_oublock as u64 * 512).saturating_sub(written_before);
    f.data_dir = base::disk::dir_size(data);
    Ok(f)
}

/// perch's own account of its memory and writes (`/api/v1/status/footprint`)
/// at the end of the load, for docs/performance.md; other systems have none.
fn print_footprint(client: &Client, url: &str, name: &str) {
    let Ok((200, body)) = client.get(&format!("{url}/api/v1/status/footprint")) else {
        return;
    };
    let f: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let parts = |key: &str| {
        f["data"][key]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|p| {
                        format!(
                            "{} {:.1}",
                            p["component"].as_str().unwrap_or("?"),
                            p["bytes"].as_f64().unwrap_or(0.0) / 1048576.0
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    eprintln!("{name}: memory (MiB): {}", parts("memory"));
    eprintln!("{name}: written (MiB): {}", parts("written"));
    eprintln!("{name}: store files (MiB): {}", parts("store_written"));
}

/// Waits until perch streams from all `n` cameras.
fn wait_for_cameras(client: &Client, url: &str, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = client.get(&format!("{url}/api/v1/cameras"))?;
        let list: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let online = list["data"]
            .as_array()
            .map_or(0, |l| l.iter().filter(|c| c["status"] == "online").count());
        if online >= n {
            eprintln!("perch: {online} cameras streaming");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("perch streams from {online} of {n} cameras after 60 s: {body}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Devices of ten fields whose values walk like sensors' readings, two
/// decimals; the same sequence every run.
struct Walk {
    values: Vec<f64>,
    state: u64,
}

impl Walk {
    fn new(series: usize) -> Walk {
        Walk {
            values: (0..series).map(|i| 20.0 + (i % 17) as f64).collect(),
            state: 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn next_step(&mut self) -> f64 {
        // xorshift64*: cheap and deterministic.
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let r = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        (r as f64 / (1u64 << 53) as f64 - 0.5) * 0.2
    }

    /// One line per device (the last one may have fewer fields), at `ns`.
    fn lines(&mut self, ns: i128) -> String {
        let mut out = String::with_capacity(self.values.len() * 16);
        for (i, chunk_start) in (0..self.values.len()).step_by(FIELDS.len()).enumerate() {
            out.push_str(&format!("env,site=s{},device=d{i} ", i % 37));
            let end = (chunk_start + FIELDS.len()).min(self.values.len());
            for k in chunk_start..end {
                let step = self.next_step();
                let v = &mut self.values[k];
                *v = ((*v + step) * 100.0).round() / 100.0;
                if k > chunk_start {
                    out.push(',');
                }
                out.push_str(&format!("{}={}", FIELDS[k - chunk_start], v));
            }
            out.push_str(&format!(" {ns}\n"));
        }
        out
    }
}

fn unix_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn per(bytes: u64, samples: u64) -> String {
    format!("{:.2}", bytes as f64 / samples.max(1) as f64)
}

/// A line of the report: what, and how to show it for one system.
type Row = (&'static str, fn(&Footprint) -> String);

fn report(results: &[(&str, Footprint)], args: &FootprintArgs) {
    println!(
        "\n{} live series at {} s for {} min ({} samples each); idle and settling {} s\n",
        args.series,
        args.interval,
        args.minutes,
        results.first().map_or(0, |r| r.1.samples),
        args.idle
    );
    if args.cameras > 0 {
        println!(
            "perch relays {} test cameras ({}) all along\n",
            args.cameras, args.camera_size
        );
    }
    let mut header = "| figure |".to_string();
    let mut rule = "|---|".to_string();
    for (name, _) in results {
        header.push_str(&format!(" {name} |"));
        rule.push_str("---|");
    }
    println!("{header}\n{rule}");
    let rows: [Row; 7] = [
        ("RSS, empty and idle", |f| mib(f.rss_idle)),
        ("RSS at the end of the load", |f| mib(f.rss_loaded)),
        ("RSS after settling", |f| mib(f.rss_settled)),
        ("bytes written per sample (load + settling)", |f| {
            per(f.written_running, f.samples)
        }),
        ("bytes written per sample, with a clean stop", |f| {
            per(f.written_with_stop, f.samples)
        }),
        ("data directory per sample after the stop", |f| {
            per(f.data_dir, f.samples)
        }),
        ("data directory", |f| mib(f.data_dir)),
    ];
    for (label, value) in rows {
        let mut line = format!("| {label} |");
        for (_, f) in results {
            line.push_str(&format!(" {} |", value(f)));
        }
        println!("{line}");
    }
}
