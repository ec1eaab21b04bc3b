//! `perch bench query`: latency of PromQL range queries over HTTP, for perch
//! and, beside it on the same samples, Debian's Prometheus and
//! VictoriaMetrics. Every system runs as its own process on loopback and is
//! asked the same requests; the numbers go into `docs/query.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

pub mod peers;

use peers::{
    add_bench_user, free_port, launch, start_perch, start_victoria, which, Client, Server,
};

#[derive(Args, Debug)]
pub struct QueryBenchArgs {
    /// OpenMetrics file from gen_sensors.py, e.g.
    /// `gen_sensors.py --devices 100 --hours 24 --interval 15 --format openmetrics`
    #[arg(long)]
    pub input: PathBuf,
    /// Timed runs per query and system (after one warm-up run)
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Also measure Prometheus (`prometheus` and `promtool` on PATH)
    #[arg(long)]
    pub prometheus: bool,
    /// Also measure VictoriaMetrics (`victoria-metrics` on PATH)
    #[arg(long)]
    pub victoria_metrics: bool,
    /// Where to keep the systems' data (a temporary directory by default)
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

/// What a dashboard panel asks: the value at the end of the data, or a
/// range ending there, at the step Grafana picks for that range on a
/// ~1 000-pixel-wide panel.
#[derive(Clone, Copy)]
enum Span {
    Instant,
    Range { hours: i64, step_s: i64 },
}

/// The Grafana-style set of issue 19: stat panels (instant) and graphs over
/// 1 h, 6 h and 24 h — raw series, aggregations, range functions over long
/// ranges and binary operations between them.
const QUERIES: [(&str, Span); 10] = [
    ("sum by (site) (rate(env_energy_wh[5m]))", Span::Instant),
    ("max_over_time(env_temp[24h])", Span::Instant),
    (
        "env_temp",
        Span::Range {
            hours: 1,
            step_s: 15,
        },
    ),
    (
        "avg by (site) (env_hum)",
        Span::Range {
            hours: 1,
            step_s: 15,
        },
    ),
    (
        "rate(env_energy_wh[5m])",
        Span::Range {
            hours: 6,
            step_s: 30,
        },
    ),
    (
        "max_over_time(env_temp[10m]) - min_over_time(env_temp[10m])",
        Span::Range {
            hours: 6,
            step_s: 30,
        },
    ),
    (
        "avg_over_time(env_co2[5m]) / avg_over_time(env_hum[5m])",
        Span::Range {
            hours: 6,
            step_s: 30,
        },
    ),
    (
        "max_over_time(env_temp[1h])",
        Span::Range {
            hours: 24,
            step_s: 60,
        },
    ),
    (
        "sum by (site) (rate(env_energy_wh[5m]))",
        Span::Range {
            hours: 24,
            step_s: 60,
        },
    ),
    (
        "avg by (site) (avg_over_time(env_temp[5m]))",
        Span::Range {
            hours: 24,
            step_s: 60,
        },
    ),
];

struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    ts: i64,
    value: f64,
}

fn parse_openmetrics(text: &str) -> anyhow::Result<Vec<Sample>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let bad = || format!("line {}: not `name{{labels}} value seconds`", n + 1);
        let (series, rest) = line.split_once("} ").with_context(bad)?;
        let (name, labels) = series.split_once('{').with_context(bad)?;
        let labels = labels
            .split(',')
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.trim_matches('"').to_string()))
            })
            .collect();
        let (v, t) = rest.split_once(' ').with_context(bad)?;
        let secs: f64 = t.parse().with_context(bad)?;
        out.push(Sample {
            name: name.to_string(),
            labels,
            ts: (secs * 1000.0).round() as i64,
            value: v.parse().with_context(bad)?,
        });
    }
    Ok(out)
}

/// VictoriaMetrics JSON lines, in bodies of at most ~8 MB.
fn import_bodies(samples: &[Sample]) -> Vec<String> {
    type Key = (String, Vec<(String, String)>);
    let mut series: BTreeMap<Key, (Vec<i64>, Vec<f64>)> = BTreeMap::new();
    for s in samples {
        let e = series
            .entry((s.name.clone(), s.labels.clone()))
            .or_default();
        e.0.push(s.ts);
        e.1.push(s.value);
    }
    let mut bodies = vec![String::new()];
    for ((name, labels), (ts, vs)) in series {
        let mut metric = serde_json::Map::new();
        metric.insert("__name__".into(), name.into());
        for (k, v) in labels {
            metric.insert(k, v.into());
        }
        let line =
            serde_json::json!({"metric": metric, "values": vs, "timestamps": ts}).to_string();
        if bodies
            .last()
            .is_some_and(|b| b.len() + line.len() > 8 << 20)
        {
            bodies.push(String::new());
        }
        if let Some(b) = bodies.last_mut() {
            b.push_str(&line);
            b.push('\n');
        }
    }
    bodies
}

/// Fixtures of any age stay.
const RETAIN_ALL: &str = "[storage]\nretention = \"100y\"\n";

fn load_perch(client: &Client, bodies: &[String], dir: &Path) -> anyhow::Result<Server> {
    std::fs::create_dir_all(dir)?;
    add_bench_user(&std::env::current_exe()?, dir)?;
    let s = start_perch(client, &std::env::current_exe()?, dir, RETAIN_ALL)?;
    for b in bodies {
        // A 503 says the store is behind: retry as a client would, bounded.
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let (status, text) = client.post(
                &format!("{}/api/v1/import", s.url),
                "application/json",
                b.clone(),
            )?;
            match status {
                204 => break,
                503 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(500)),
                _ => bail!("perch import failed ({status}): {text}"),
            }
        }
    }
    // Stop and start again: queries then read blocks, as they would on a
    // running appliance, and compaction writes the 1 h rollups.
    // SAFETY: signalling our own child by its id.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    let mut s = s;
    let deadline = Instant::now() + Duration::from_secs(120);
    while s.child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            bail!("perch did not stop");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(s);
    let s = start_perch(client, &std::env::current_exe()?, dir, RETAIN_ALL)?;
    wait_for_compaction(&dir.join("data"));
    Ok(s)
}

/// Waits until perch's compaction of the loaded windows (merges, 1 h
/// rollups, rewrites) is over — the data directory no longer changes — so
/// that neither the timings nor the disk use catch it halfway: measured
/// halfway, the directory held both generations of the rewritten windows
/// (25 MB instead of 11). Bounded: a note says when it did not settle.
fn wait_for_compaction(data_dir: &Path) {
    // perch's own metrics keep the WAL growing a little.
    const STILL: u64 = 64 << 10;
    // Longer than maintenance's 10 s period, so it has surely begun.
    let quiet = Duration::from_secs(30);
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last = base::disk::dir_size(data_dir);
    let mut since = Instant::now();
    while since.elapsed() < quiet {
        if Instant::now() > deadline {
            eprintln!("perch: compaction had not settled after 10 minutes; measuring anyway");
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
        let now = base::disk::dir_size(data_dir);
        if now.abs_diff(last) > STILL {
            last = now;
            since = Instant::now();
        }
    }
}

fn load_prometheus(client: &Client, input: &Path, dir: &Path) -> anyhow::Result<Server> {
    std::fs::create_dir_all(dir)?;
    let tsdb = dir.join("tsdb");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(input)
        .arg(&tsdb)
        .output()?;
    if !out.status.success() {
        bail!("promtool failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 15s\n")?;
    let port = free_port()?;
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg("--storage.tsdb.retention.time=100y")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--config.file={}", config.display()));
    let log = dir.join("prometheus.log");
    launch(client, "Prometheus", cmd, port, &log, "/-/ready")
}

fn load_victoria(client: &Client, bodies: &[String], dir: &Path) -> anyhow::Result<Server> {
    // Measure evaluation, not VictoriaMetrics' result cache.
    let s = start_victoria(client, dir, &["-search.disableCache"])?;
    for b in bodies {
        let (status, text) = client.post(
            &format!("{}/api/v1/import", s.url),
            "application/json",
            b.clone(),
        )?;
        if status != 204 {
            bail!("VictoriaMetrics import failed ({status}): {text}");
        }
    }
    client.get(&format!("{}/internal/force_flush", s.url))?;
    std::thread::sleep(Duration::from_secs(2));
    Ok(s)
}

struct Timing {
    median_ms: f64,
    min_ms: f64,
    series: usize,
    points: usize,
}

/// One request of the benchmark: who is asked what.
struct Variant {
    label: String,
    url: String,
    form: String,
    times: Vec<f64>,
    shape: (usize, usize),
}

fn ask(client: &Client, v: &Variant) -> anyhow::Result<(f64, String)> {
    let t = Instant::now();
    let (status, body) =
        client.post(&v.url, "application/x-www-form-urlencoded", v.form.clone())?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if status != 200 {
        bail!(
            "{} answered {status}: {}",
            v.label,
            &body[..body.len().min(300)]
        );
    }
    Ok((ms, body))
}

/// Times the variants round-robin, so that whatever else the machine does
/// weighs on all of them alike.
fn measure(client: &Client, variants: &mut [Variant], runs: usize) -> anyhow::Result<Vec<Timing>> {
    for v in variants.iter_mut() {
        let (_, body) = ask(client, v)?; // warm-up, and the answer's shape
        let j: serde_json::Value = serde_json::from_str(&body)?;
        let result = j["data"]["result"].as_array().cloned().unwrap_or_default();
        v.shape = (
            result.len(),
            result
                .iter()
                .map(|s| s["values"].as_array().map_or(1, Vec::len))
                .sum(),
        );
    }
    for _ in 0..runs {
        for v in variants.iter_mut() {
            let (ms, _) = ask(client, v)?;
            v.times.push(ms);
        }
    }
    Ok(variants
        .iter_mut()
        .map(|v| {
            v.times.sort_by(f64::total_cmp);
            Timing {
                median_ms: v.times[v.times.len() / 2],
                min_ms: v.times[0],
                series: v.shape.0,
                points: v.shape.1,
            }
        })
        .collect())
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub fn run(args: QueryBenchArgs) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    let samples = parse_openmetrics(&text)?;
    let (Some(lo), Some(hi)) = (
        samples.iter().map(|s| s.ts).min(),
        samples.iter().map(|s| s.ts).max(),
    ) else {
        bail!("no samples in {}", args.input.display());
    };
    // Queries end at the last whole minute of the data, as a dashboard
    // looking at "now" would.
    let end = hi.div_euclid(60_000) * 60;
    let start_of = |hours: i64| (end - hours * 3600).max(lo.div_euclid(1000));
    let work = match &args.work_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("perch-bench-query-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work)?;
    let client = Client::new()?;
    let total_samples = samples.len();
    eprintln!("{total_samples} samples up to {end}; loading…");
    let bodies = import_bodies(&samples);
    drop(samples);
    let mut servers = Vec::new();
    let t = Instant::now();
    servers.push(load_perch(&client, &bodies, &work.join("perch"))?);
    let mut data_dirs = vec![("perch", work.join("perch/data"))];
    eprintln!("perch loaded in {:.1} s", t.elapsed().as_secs_f64());
    if args.prometheus {
        if !which("prometheus") || !which("promtool") {
            bail!("prometheus/promtool not found on PATH");
        }
        servers.push(load_prometheus(
            &client,
            &args.input,
            &work.join("prometheus"),
        )?);
        data_dirs.push(("Prometheus", work.join("prometheus/tsdb")));
    }
    if args.victoria_metrics {
        if !which("victoria-metrics") {
            bail!("victoria-metrics not found on PATH");
        }
        servers.push(load_victoria(&client, &bodies, &work.join("vm"))?);
        data_dirs.push(("VictoriaMetrics", work.join("vm/vm")));
    }
    println!("| query | span | system | median ms | min ms | series | points |");
    println!("|---|---|---|---|---|---|---|");
    let mut log_sum = vec![0.0f64; servers.len()];
    for (q, span) in QUERIES {
        let (path, form, span_name) = match span {
            Span::Instant => (
                "query",
                format!("query={}&time={end}", urlencode(q)),
                "instant".to_string(),
            ),
            Span::Range { hours, step_s } => (
                "query_range",
                format!(
                    "query={}&start={}&end={end}&step={step_s}",
                    urlencode(q),
                    start_of(hours)
                ),
                format!("{hours} h, step {step_s} s"),
            ),
        };
        let mut variants: Vec<Variant> = servers
            .iter()
            .map(|srv| Variant {
                label: srv.name.to_string(),
                url: format!("{}/api/v1/{path}", srv.url),
                form: if srv.name == "VictoriaMetrics" {
                    format!("{form}&nocache=1")
                } else {
                    form.clone()
                },
                times: Vec::new(),
                shape: (0, 0),
            })
            .collect();
        let timings = measure(&client, &mut variants, args.runs)?;
        for (i, (v, tm)) in variants.iter().zip(timings).enumerate() {
            log_sum[i] += tm.median_ms.ln();
            println!(
                "| `{q}` | {span_name} | {} | {:.1} | {:.1} | {} | {} |",
                v.label, tm.median_ms, tm.min_ms, tm.series, tm.points
            );
        }
    }
    println!();
    for (srv, sum) in servers.iter().zip(&log_sum) {
        println!(
            "geometric mean of the medians, {}: {:.1} ms",
            srv.name,
            (sum / QUERIES.len() as f64).exp()
        );
    }
    // Disk use of the same samples, after compaction (perch's settled
    // before the queries).
    println!();
    let sizes: Vec<(&str, u64)> = data_dirs
        .iter()
        .map(|(name, dir)| (*name, base::disk::dir_size(dir)))
        .collect();
    for (name, bytes) in &sizes {
        println!(
            "data directory, {name}: {bytes} bytes = {:.3} bytes/sample (du)",
            *bytes as f64 / total_samples.max(1) as f64
        );
    }
    if let (Some((_, ours)), Some((_, vm))) = (
        sizes.first(),
        sizes.iter().find(|(n, _)| *n == "VictoriaMetrics"),
    ) {
        println!(
            "data directory, perch / VictoriaMetrics: {:.2}",
            *ours as f64 / (*vm).max(1) as f64
        );
    }
    drop(servers);
    if args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(())
}
