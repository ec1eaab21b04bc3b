//! PromQL compatibility: the same samples loaded into Debian's Prometheus
//! (`promtool tsdb create-blocks-from openmetrics`, then `prometheus` on
//! loopback) and into perch (`/api/v1/import`), then every query of
//! `tests/fixtures/promql_corpus.txt` asked of both. Series sets must be equal
//! and values equal within 1e-9 relative (NaN equals NaN).
//!
//! Prometheus 2.x (Debian 12 ships 2.42) includes a sample lying exactly on
//! the lower bound of a range or of the lookback window, and a subquery step
//! exactly on it; Prometheus 3 and perch exclude it (left-open ranges). So
//! that the corpus tests everything else, the fixture drops samples on whole
//! seconds and queries at whole seconds off the minute (`…:07`), where no
//! sample or subquery step can fall on a boundary; aligned grids (which take
//! perch's rollup path) skip subqueries. `crates/query/src/promql/tests.rs` pins
//! the boundary behaviour itself.
//!
//! Skipped, with the reason printed, when `prometheus`/`promtool` or the data
//! generator are missing (`scripts/test` installs Prometheus).

use crate::common;

/// Long retention for 2026 fixtures; perch's own metrics off, since they
/// would show up among the names, labels and measurements compared here.
const QUIET: &str = "[storage]\nretention = \"10y\"\nself_metrics_interval = \"0s\"\n";

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Perch};
use serde_json::Value;

const START_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, the generator's default
const INSTANT: [i64; 3] = [1_767_229_207, 1_767_240_007, 1_767_247_507];
/// (start, end, step, subqueries allowed): two grids off the minute, one on
/// whole minutes and one on whole hours (rollup path).
const RANGES: [(i64, i64, i64, bool); 4] = [
    (1_767_226_807, 1_767_247_207, 60, true),
    (1_767_225_937, 1_767_249_937, 600, true),
    (1_767_226_800, 1_767_247_200, 60, false),
    (1_767_229_200, 1_767_250_800, 3600, false),
];

fn which(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// The sensor data generator, kept in the repository (a copy of the
/// workplace's `shared/bench/gen_sensors.py`) so that CI always has it.
fn generator() -> PathBuf {
    match std::env::var_os("PERCH_GEN_SENSORS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gen_sensors.py"),
    }
}

/// One sample of the fixture.
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    ts: i64,
    value: f64,
}

/// Parses the generator's OpenMetrics lines (`name{a="b",…} value seconds`).
fn parse_openmetrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, rest) = line.split_once("} ").expect("series");
        let (name, labels) = series.split_once('{').expect("labels");
        let labels = labels
            .split(',')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("label");
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        let (v, t) = rest.split_once(' ').expect("value and time");
        let secs: f64 = t.parse().expect("time");
        out.push(Sample {
            name: name.to_string(),
            labels,
            ts: (secs * 1000.0).round() as i64,
            value: v.parse().expect("value"),
        });
    }
    out
}

/// The test's own series: a classic histogram and a counter with resets.
fn synthetic() -> Vec<Sample> {
    let mut out = Vec::new();
    let les = ["0.05", "0.1", "0.5", "1", "+Inf"];
    for (si, svc) in ["a", "b"].iter().enumerate() {
        let mut counts = [0i64; 5];
        for k in 0..6 * 240i64 {
            let t = START_MS + 250 + si as i64 * 3333 + k * 15_000;
            let x = (k * 7 + si as i64 * 3) % 23;
            let inc = [x % 3, x % 5, x % 7 + 1, x % 4 + 2, 1];
            let mut c = 0;
            for j in 0..5 {
                c += inc[j];
                counts[j] += c;
            }
            for (j, le) in les.iter().enumerate() {
                out.push(Sample {
                    name: "lat_bucket".into(),
                    labels: vec![
                        ("svc".into(), svc.to_string()),
                        ("le".into(), le.to_string()),
                    ],
                    ts: t,
                    value: counts[j] as f64,
                });
            }
        }
    }
    for (si, svc) in ["a", "b"].iter().enumerate() {
        let mut v = 0i64;
        for k in 0..6 * 240i64 {
            let t = START_MS + 777 + si as i64 * 5111 + k * 15_000;
            if k > 0 && k % (188 + si as i64 * 29) == 0 {
                v = 0;
            }
            v += k % 5 + si as i64;
            out.push(Sample {
                name: "jobs_done".into(),
                labels: vec![("svc".into(), svc.to_string())],
                ts: t,
                value: v as f64,
            });
        }
    }
    out
}

fn fmt_labels(s: &Sample) -> String {
    s.labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect::<Vec<_>>()
        .join(",")
}

/// The fixture as OpenMetrics, each family contiguous.
fn to_openmetrics(samples: &[Sample]) -> String {
    let mut families: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        families.entry(&s.name).or_default().push(s);
    }
    let mut out = String::new();
    for (name, ss) in families {
        out.push_str(&format!("# TYPE {name} gauge\n"));
        for s in ss {
            out.push_str(&format!(
                "{name}{{{}}} {} {}.{:03}\n",
                fmt_labels(s),
                s.value,
                s.ts.div_euclid(1000),
                s.ts.rem_euclid(1000)
            ));
        }
    }
    out.push_str("# EOF\n");
    out
}

/// The fixture as VictoriaMetrics JSON lines for `/api/v1/import`.
fn to_vm_import(samples: &[Sample]) -> String {
    type Columns<'a> = (Vec<i64>, Vec<f64>, &'a Sample);
    let mut series: BTreeMap<(String, String), Columns> = BTreeMap::new();
    for s in samples {
        let e = series
            .entry((s.name.clone(), fmt_labels(s)))
            .or_insert_with(|| (Vec::new(), Vec::new(), s));
        e.0.push(s.ts);
        e.1.push(s.value);
    }
    let mut out = String::new();
    for ((name, _), (ts, vs, s)) in series {
        let mut metric = serde_json::Map::new();
        metric.insert("__name__".into(), Value::String(name));
        for (k, v) in &s.labels {
            metric.insert(k.clone(), Value::String(v.clone()));
        }
        out.push_str(
            &serde_json::json!({"metric": metric, "values": vs, "timestamps": ts}).to_string(),
        );
        out.push('\n');
    }
    out
}

struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- prometheus log ---\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn form(base: &str, path: &str, params: &[(&str, String)]) -> Value {
    let body: String = params
        .iter()
        .map(|(k, v)| format!("{}={}", k, common::urlencode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let mut r = agent()
        .post(&format!("{base}{path}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        // Prometheus ignores it; perch needs it.
        .header(
            "Authorization",
            &common::basic(common::ADMIN, common::ADMIN_PASSWORD),
        )
        .send(body.as_bytes())
        .expect("request");
    let text = r
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_string()
        .unwrap_or_default();
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not JSON from {base}{path} ({e}): {text}"))
}

fn start_prometheus(dir: &Path) -> Prometheus {
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 15s\n").unwrap();
    let log = dir.join("prometheus.log");
    let child = Command::new("prometheus")
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg("--storage.tsdb.retention.time=100y")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--config.file={}", config.display()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start prometheus");
    let p = Prometheus { child, port, log };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = agent()
            .get(&format!("http://127.0.0.1:{port}/-/ready"))
            .call()
        {
            if r.status() == 200 {
                return p;
            }
        }
        assert!(Instant::now() < deadline, "prometheus did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn num(v: &Value) -> f64 {
    match v.as_str() {
        Some("+Inf") => f64::INFINITY,
        Some("-Inf") => f64::NEG_INFINITY,
        Some(s) => s.parse().unwrap_or_else(|_| panic!("bad number {s}")),
        None => v.as_f64().unwrap_or(f64::NAN),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// Points of a result element (`value` or `values`) as (time, value).
fn points(x: &Value) -> Vec<(f64, f64)> {
    let list: Vec<&Value> = match x.get("values") {
        Some(Value::Array(a)) => a.iter().collect(),
        _ => vec![&x["value"]],
    };
    list.iter()
        .map(|p| (p[0].as_f64().unwrap_or(f64::NAN), num(&p[1])))
        .collect()
}

/// Compares Prometheus' answer `a` with perch's `b`; a readable difference
/// on mismatch.
fn compare(kind: &str, a: &Value, b: &Value) -> Option<String> {
    if a["status"] != b["status"] {
        return Some(format!(
            "status: prometheus {} ({}), perch {} ({})",
            a["status"], a["error"], b["status"], b["error"]
        ));
    }
    if a["status"] == "error" {
        if kind != "e" {
            return Some(format!(
                "both failed: prometheus {}, perch {}",
                a["error"], b["error"]
            ));
        }
        if a["errorType"] != b["errorType"] {
            return Some(format!(
                "error types differ: prometheus {} ({}), perch {} ({})",
                a["errorType"], a["error"], b["errorType"], b["error"]
            ));
        }
        return None;
    }
    if kind == "e" {
        return Some("both succeeded where both should fail".into());
    }
    let (da, db) = (&a["data"], &b["data"]);
    if da["resultType"] != db["resultType"] {
        return Some(format!(
            "result type: prometheus {}, perch {}",
            da["resultType"], db["resultType"]
        ));
    }
    if da["resultType"] == "scalar" || da["resultType"] == "string" {
        let (x, y) = (&da["result"], &db["result"]);
        if x[0] != y[0] || !close(num(&x[1]), num(&y[1])) {
            return Some(format!("prometheus {x}, perch {y}"));
        }
        return None;
    }
    let empty = Vec::new();
    let ra = da["result"].as_array().unwrap_or(&empty);
    let rb = db["result"].as_array().unwrap_or(&empty);
    if kind == "s" {
        let va: Vec<f64> = ra.iter().map(|x| num(&x["value"][1])).collect();
        let vb: Vec<f64> = rb.iter().map(|x| num(&x["value"][1])).collect();
        if va.len() != vb.len() || !va.iter().zip(&vb).all(|(x, y)| close(*x, *y)) {
            return Some(format!("order of values: prometheus {va:?}, perch {vb:?}"));
        }
    }
    let by_labels = |r: &[Value]| -> BTreeMap<String, Vec<(f64, f64)>> {
        r.iter()
            .map(|x| (x["metric"].to_string(), points(x)))
            .collect()
    };
    let (ma, mb) = (by_labels(ra), by_labels(rb));
    let only_a: Vec<&String> = ma.keys().filter(|k| !mb.contains_key(*k)).collect();
    let only_b: Vec<&String> = mb.keys().filter(|k| !ma.contains_key(*k)).collect();
    if !only_a.is_empty() || !only_b.is_empty() {
        return Some(format!(
            "series sets differ ({} vs {}): only in prometheus {:?}, only in perch {:?}",
            ma.len(),
            mb.len(),
            &only_a[..only_a.len().min(3)],
            &only_b[..only_b.len().min(3)]
        ));
    }
    for (k, pa) in &ma {
        let pb = &mb[k];
        if pa.len() != pb.len() {
            let ta: Vec<f64> = pa
                .iter()
                .map(|p| p.0)
                .filter(|t| !pb.iter().any(|q| q.0 == *t))
                .collect();
            let tb: Vec<f64> = pb
                .iter()
                .map(|p| p.0)
                .filter(|t| !pa.iter().any(|q| q.0 == *t))
                .collect();
            return Some(format!(
                "{k}: {} points in prometheus, {} in perch; only in prometheus at {:?}, only in perch at {:?}",
                pa.len(),
                pb.len(),
                &ta[..ta.len().min(5)],
                &tb[..tb.len().min(5)]
            ));
        }
        for (x, y) in pa.iter().zip(pb) {
            if x.0 != y.0 || !close(x.1, y.1) {
                return Some(format!(
                    "{k} at {}: prometheus {}, perch {} (at {})",
                    x.0, x.1, y.1, y.0
                ));
            }
        }
    }
    None
}

#[test]
fn promql_matches_prometheus() {
    for bin in ["prometheus", "promtool"] {
        if !which(bin) {
            common::missing_peer(bin);
            return;
        }
    }
    let gen = generator();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .arg(&gen)
        .args([
            "--devices",
            "10",
            "--hours",
            "6",
            "--interval",
            "15",
            "--format",
            "openmetrics",
        ])
        .output()
        .expect("run gen_sensors.py");
    assert!(
        out.status.success(),
        "gen_sensors.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut samples = parse_openmetrics(&String::from_utf8(out.stdout).unwrap());
    // Off whole seconds, no sample can lie on a range boundary (see above).
    samples.retain(|s| s.ts % 1000 != 0);
    samples.extend(synthetic());
    let total = samples.len();

    // Prometheus: blocks from OpenMetrics, then the server.
    let om = dir.path().join("fixture.om");
    std::fs::write(&om, to_openmetrics(&samples)).unwrap();
    let tsdb = dir.path().join("tsdb");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&tsdb)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool cuts 2 h blocks; a partial last range gets a block of its
    // own, but check that every sample made it into one.
    let list = Command::new("promtool")
        .args(["tsdb", "list"])
        .arg(&tsdb)
        .output()
        .unwrap();
    let listed: usize = String::from_utf8_lossy(&list.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(4)?.parse::<usize>().ok())
        .sum();
    assert_eq!(
        listed, total,
        "promtool did not write every sample into blocks"
    );
    let prom = start_prometheus(dir.path());
    let prom_url = format!("http://127.0.0.1:{}", prom.port);

    // perch: import, then restart so that queries read blocks (and, once
    // compaction ran, stored 1 h rollups) rather than the in-memory head.
    let mut perch = Perch::start_with(QUIET);
    let r = perch.post("/api/v1/import", "application/json", to_vm_import(&samples));
    assert_eq!(r.status, 204, "import: {}", r.body);
    perch.stop();
    perch.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let s = perch.get("/api/v1/status/tsdb").json();
        if s["data"]["windows"]["rollup_1h"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let perch_url = perch.url("");

    let corpus = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/promql_corpus.txt"),
    )
    .unwrap();
    let mut queries = 0;
    let mut cases = 0;
    let mut failures = Vec::new();
    let mut kinds = BTreeMap::new();
    for line in corpus
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (kind, q) = line.split_once(' ').expect("kind and query");
        queries += 1;
        *kinds.entry(kind.to_string()).or_insert(0) += 1;
        let mut requests: Vec<(&str, Vec<(&str, String)>)> = Vec::new();
        if matches!(kind, "i" | "s" | "e") {
            // Errors need data: the last instant is past its end.
            let times = if kind == "e" {
                &INSTANT[..2]
            } else {
                &INSTANT[..]
            };
            for t in times {
                requests.push((
                    "/api/v1/query",
                    vec![("query", q.to_string()), ("time", t.to_string())],
                ));
            }
        }
        if matches!(kind, "r" | "e") {
            let subquery = q.contains(':') && q.contains('[');
            for (s, e, step, sub_ok) in RANGES {
                if subquery && !sub_ok {
                    continue;
                }
                requests.push((
                    "/api/v1/query_range",
                    vec![
                        ("query", q.to_string()),
                        ("start", s.to_string()),
                        ("end", e.to_string()),
                        ("step", step.to_string()),
                    ],
                ));
            }
        }
        for (path, params) in requests {
            cases += 1;
            let a = form(&prom_url, path, &params);
            let b = form(&perch_url, path, &params);
            if let Some(diff) = compare(kind, &a, &b) {
                let at = params
                    .iter()
                    .skip(1)
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                failures.push(format!("[{kind}] {q}  ({at})\n    {diff}"));
            }
        }
    }
    eprintln!(
        "promql compat: {queries} queries ({kinds:?}), {cases} requests, {} samples, {} mismatches",
        total,
        failures.len()
    );
    assert!(queries >= 60, "the corpus must hold at least 60 queries");
    assert!(
        failures.is_empty(),
        "{} of {cases} requests differ from Prometheus:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
