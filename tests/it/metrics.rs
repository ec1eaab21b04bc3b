//! Self-metrics (issue 3, "Host and self metrics"): a realistic registry —
//! the host, a store in a temporary directory, and a source with awkward
//! values — rendered in the Prometheus text format and checked with Debian's
//! `promtool`, the values checked for sense, and the points stored back as
//! series the way the 10 s recorder does.

use crate::common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base::host::HostMetrics;
use base::metrics::{render_prometheus_text, MetricKind, MetricPoint, MetricSource, Registry};
use base::{Clock, SystemClock};
use config::StorageConfig;
use store::metrics::{record, to_series};
use store::{Labels, Matcher, SeriesSamples, Storage};

/// Values and label values the text format has to escape or spell out.
struct Awkward;

impl MetricSource for Awkward {
    fn collect(&self, out: &mut Vec<MetricPoint>) {
        for (v, value) in [
            ("nan", f64::NAN),
            ("inf", f64::INFINITY),
            ("-inf", f64::NEG_INFINITY),
            ("tiny", 1e-300),
            ("quote \" back\\slash\nnewline", 1.5),
            ("ünïcödé °C", -0.0),
        ] {
            out.push(
                MetricPoint::gauge(
                    "perch_test_awkward_value",
                    "A help text with a \\ backslash,\na newline and \"quotes\".",
                    value,
                )
                .with_label("case", v),
            );
        }
    }
}

const CPU_INTERVAL: Duration = Duration::from_millis(250);

struct Fixture {
    _dir: tempfile::TempDir,
    storage: Arc<Storage>,
    registry: Registry,
    series_written: usize,
}

/// A store with a few sensors' worth of data, and a registry over the host
/// and that store.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now_ms();
    let (storage, _) = Storage::open(&StorageConfig::default(), dir.path(), clock).unwrap();
    let batch: Vec<SeriesSamples> = (0..12)
        .map(|i| {
            SeriesSamples::new(
                Labels::from_pairs([
                    ("__name__", "env_temp".to_string()),
                    ("room", format!("r{i}")),
                ]),
                (0..10)
                    .map(|k| (now - 10_000 + k * 1000, 20.0 + k as f64))
                    .collect(),
            )
        })
        .collect();
    let r = storage.append(&batch).unwrap();
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    let registry = Registry::new();
    registry.register(Arc::new(HostMetrics::new(dir.path())));
    registry.register(storage.clone());
    // CPU usage is the busy share between two reads; it is reported once two
    // reads are at least sysinfo's minimum interval (200 ms on Linux) apart.
    std::thread::sleep(CPU_INTERVAL);
    Fixture {
        _dir: dir,
        storage,
        registry,
        series_written: batch.len(),
    }
}

fn value(points: &[MetricPoint], name: &str) -> f64 {
    points
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no {name} in {points:#?}"))
        .value
}

#[test]
fn exposition_passes_promtool() {
    let f = fixture();
    f.registry.register(Arc::new(Awkward));
    let text = render_prometheus_text(&f.registry.gather());
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            println!("skipped: promtool cannot be run ({e}); apt-get install prometheus");
            return;
        }
    };
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}\n{said}\n--- exposition ---\n{text}",
        out.status
    );
    // The awkward values came through spelled as Prometheus spells them.
    assert!(text.contains("perch_test_awkward_value{case=\"nan\"} NaN\n"));
    assert!(text.contains("perch_test_awkward_value{case=\"inf\"} +Inf\n"));
    assert!(text.contains("perch_test_awkward_value{case=\"-inf\"} -Inf\n"));
    assert!(text.contains(r#"{case="quote \" back\\slash\nnewline"} 1.5"#));
}

#[test]
fn values_make_sense() {
    let f = fixture();
    let points = f.registry.gather();

    assert!(value(&points, "perch_host_memory_total_bytes") > 0.0);
    assert!(
        value(&points, "perch_host_memory_used_bytes")
            <= value(&points, "perch_host_memory_total_bytes")
    );
    let (total, used, free) = (
        value(&points, "perch_host_disk_total_bytes"),
        value(&points, "perch_host_disk_used_bytes"),
        value(&points, "perch_host_disk_free_bytes"),
    );
    assert!(
        total > 0.0 && total >= used && total >= free,
        "{total} {used} {free}"
    );
    assert_eq!(used + free, total);
    let cpu = value(&points, "perch_host_cpu_usage_ratio");
    assert!((0.0..=1.0).contains(&cpu), "{cpu}");
    assert!(value(&points, "perch_host_uptime_seconds") > 0.0);
    assert!(value(&points, "perch_process_resident_memory_bytes") > 0.0);
    assert!(value(&points, "perch_process_start_time_seconds") > 1.7e9);

    for p in &points {
        assert!(p.value.is_finite(), "{p:?}");
        if p.kind == MetricKind::Counter {
            assert!(p.value >= 0.0, "{p:?}");
            assert!(p.name.ends_with("_total"), "{p:?}");
        }
    }
    // Temperatures only where there is a sensor; never a made-up 0.
    for p in points
        .iter()
        .filter(|p| p.name.ends_with("temperature_celsius"))
    {
        assert!(p.value != 0.0, "{p:?}");
    }

    assert_eq!(
        value(&points, "perch_storage_series"),
        f.series_written as f64
    );
    assert_eq!(
        value(&points, "perch_storage_samples_appended_total"),
        120.0
    );
    assert_eq!(value(&points, "perch_storage_samples_rejected_total"), 0.0);
    assert_eq!(value(&points, "perch_storage_head_samples"), 120.0);
    assert!(value(&points, "perch_storage_disk_usage_bytes") > 0.0);
    assert!(value(&points, "perch_storage_disk_budget_bytes") > 0.0);
    assert_eq!(value(&points, "perch_storage_problems"), 0.0);
}

#[test]
fn recorded_points_are_stored_as_series() {
    let f = fixture();
    let before = f.storage.series_count();
    let r = record(&f.registry, &f.storage).unwrap();
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    let points = f.registry.gather();
    assert!(r.series_created > 10, "{r:?}");
    assert_eq!(f.storage.series_count(), before + r.series_created);
    // Stored under the point's name with its labels.
    let now = f.storage.now_ms();
    let found = f.storage.select(
        &[Matcher::equal("__name__", "perch_host_memory_total_bytes")],
        now - 60_000,
        now + 60_000,
    );
    assert_eq!(found.len(), 1);
    let ids: Vec<_> = found.iter().map(|(id, _)| *id).collect();
    let data = f
        .storage
        .read(&ids, now - 60_000, now + 60_000, 100)
        .unwrap();
    assert_eq!(
        data[0].values[0],
        value(&points, "perch_host_memory_total_bytes")
    );
    // A second recording adds samples, not series.
    std::thread::sleep(Duration::from_millis(5));
    let again = record(&f.registry, &f.storage).unwrap();
    assert_eq!(again.series_created, 0, "{again:?}");
    // Labels survive the trip.
    let s = to_series(
        &[MetricPoint::counter("x_total", "", 1.0).with_label("interface", "eth0")],
        now,
    );
    assert_eq!(s[0].labels.get("interface"), Some("eth0"));
}

/// `cargo test --release --test it metrics::measure_gather -- --ignored
/// --nocapture`: the cost of one gather (uncached, as every 10 s), of a
/// cached one (a scrape within the second), and the size of the exposition.
#[test]
#[ignore]
fn measure_gather() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let uncached = Registry::new();
    uncached.register(Arc::new(
        HostMetrics::new(dir.path()).with_cache_for(Duration::ZERO),
    ));
    uncached.register(f.storage.clone());
    // Uncached, with CPU times read each time as every 10 s: reads spaced by
    // the minimum CPU interval, only the gathers timed.
    let mut cold = Duration::ZERO;
    for _ in 0..20 {
        std::thread::sleep(CPU_INTERVAL);
        let t = Instant::now();
        std::hint::black_box(uncached.gather());
        cold += t.elapsed();
    }
    let cold = cold.as_secs_f64() * 1e6 / 20.0;
    f.registry.gather();
    let t = Instant::now();
    for _ in 0..2000 {
        std::hint::black_box(f.registry.gather());
    }
    let warm = t.elapsed().as_secs_f64() * 1e6 / 2000.0;
    let points = f.registry.gather();
    let t = Instant::now();
    let text = render_prometheus_text(&points);
    let render = t.elapsed().as_secs_f64() * 1e6;
    println!(
        "gather uncached: {cold:.0} µs; gather cached: {warm:.1} µs; render: {render:.0} µs; \
         {} points, {} families, {} bytes",
        points.len(),
        text.lines().filter(|l| l.starts_with("# TYPE")).count(),
        text.len()
    );
    println!("{text}");
}

/// The value of the series `name{component="..."}` (or `kind`) in a
/// Prometheus text exposition.
fn exposed(text: &str, name: &str, label: &str, value: &str) -> Option<f64> {
    let prefix = format!("{name}{{{label}=\"{value}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().expect("a number"))
}

/// Issue 19, part 1: the real binary accounts for its memory and disk
/// writes by component, in `/metrics` and in the Settings page's
/// `/api/v1/status/footprint`, with figures that follow what was written:
/// 300 series of 20 samples over HTTP, and MQTT messages with mosquitto_pub.
#[test]
fn footprint_by_component() {
    if !common::have_mosquitto() {
        return common::missing_peer("mosquitto_pub");
    }
    // The bounds below are the large profile's whatever the host's RAM.
    let p = common::Perch::start_with("[memory]\nram = \"4GiB\"\n");
    let now_s = common::now_ms() / 1000;
    let mut body = String::new();
    for i in 0..300 {
        for k in 0..20 {
            body.push_str(&format!(
                "footprint,room=room{i} temp={}.{} {}\n",
                20 + k % 5,
                i % 10,
                (now_s - 100 + k) * 1_000_000_000
            ));
        }
    }
    let r = p.post("/write", "text/plain", &body);
    assert_eq!(r.status, 204, "{}", r.body);
    let payload = br#"{"Time":"2026-12-07T10:00:00","ENERGY":{"Total":12.5,"Power":230}}"#;
    for n in 0..5 {
        p.publish(&format!("tele/plug{n}/SENSOR"), payload, false);
    }
    // The WAL syncs within flush_interval (1 s); the search indexer
    // commits every 2 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = p.get("/metrics").body;
        // Synced once the WAL's thread wrote (or on tmpfs, nothing counts).
        let synced = exposed(&text, "perch_disk_written_bytes_total", "component", "wal")
            .is_some_and(|v| v > 0.0)
            || base::host::process_written_bytes(p.pid()).unwrap() == 0;
        let indexed = text
            .lines()
            .any(|l| l.starts_with("perch_search_commits_total ") && !l.ends_with(" 0"));
        if synced && indexed {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no WAL sync or search commit:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let written_now = base::host::process_written_bytes(p.pid()).unwrap();
    let memory = |c: &str| {
        exposed(&text, "perch_memory_bytes", "component", c)
            .unwrap_or_else(|| panic!("no memory figure for {c}:\n{text}"))
    };
    // 6 000 samples at 16 bytes, in buffers that grew by doubling.
    let head = memory("store_head");
    assert!(
        (6_000.0 * 16.0..4.0 * 6_000.0 * 16.0).contains(&head),
        "head {head}"
    );
    // 300 series of three labels (about 60 bytes of text each).
    let index = memory("store_series_index");
    assert!(
        (300.0 * 60.0..(4 << 20) as f64).contains(&index),
        "index {index}"
    );
    // Five messages of 68 bytes each in the explorer's history.
    let history = memory("mqtt_history");
    assert!(
        (5.0 * 68.0..64.0 * 1024.0).contains(&history),
        "history {history}"
    );
    assert_eq!(memory("search_queue"), 0.0, "the queue drained");
    assert_eq!(memory("cameras"), 0.0);
    assert_eq!(memory("query"), 0.0, "no query runs");
    let code = memory("code");
    assert!(code > (1 << 20) as f64, "code {code}");
    let allocated = text
        .lines()
        .find_map(|l| l.strip_prefix("perch_memory_allocated_bytes "))
        .map(|v| v.parse::<f64>().unwrap())
        .expect("the heap is counted");
    let rss = base::host::process_rss_bytes(p.pid()).unwrap() as f64;
    assert!(allocated > head + index + history, "allocated {allocated}");
    assert!(
        allocated + code < rss * 1.5,
        "allocated {allocated}, code {code}, RSS {rss}"
    );
    let limit = exposed(&text, "perch_memory_limit_bytes", "component", "sled_cache");
    assert_eq!(limit, Some((32 << 20) as f64));

    // Writes: every byte the process wrote is some component's; the WAL's
    // thread wrote at least the records the WAL appended (whole pages).
    let by_component: f64 = text
        .lines()
        .filter(|l| l.starts_with("perch_disk_written_bytes_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(
        by_component <= written_now as f64,
        "{by_component} > {written_now}"
    );
    let wal_logical = exposed(&text, "perch_storage_written_bytes_total", "kind", "wal").unwrap();
    // 6 000 two-significant-digit samples: a few bytes each, plus 300
    // series definitions.
    assert!(wal_logical > 6_000.0 * 2.0, "WAL appended {wal_logical}");
    if written_now > 0 {
        // A data directory on tmpfs counts no writes at all.
        let wal = exposed(&text, "perch_disk_written_bytes_total", "component", "wal").unwrap();
        // What the last self-record appended may still wait for its sync.
        assert!(
            wal >= 6_000.0 * 2.0,
            "WAL thread wrote {wal} of {wal_logical}"
        );
        let search = exposed(
            &text,
            "perch_disk_written_bytes_total",
            "component",
            "search",
        );
        assert!(search.is_some_and(|v| v > 0.0), "search wrote {search:?}");
    }
    let self_samples = text
        .lines()
        .find_map(|l| l.strip_prefix("perch_storage_self_samples_total "))
        .expect("self-metrics are counted");
    assert!(self_samples.parse::<f64>().is_ok());

    // The Settings page's view of the same.
    let f = p.get("/api/v1/status/footprint").json();
    let data = &f["data"];
    let parts = |key: &str| -> Vec<String> {
        data[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["component"].as_str().unwrap().to_string())
            .collect()
    };
    let memory_parts = parts("memory");
    for c in [
        "code",
        "allocator",
        "unattributed",
        "store_head",
        "store_series_index",
        "store_block_index",
    ] {
        assert!(
            memory_parts.iter().any(|p| p == c),
            "{c} missing: {memory_parts:?}"
        );
    }
    assert!(parts("written").iter().any(|p| p == "wal"));
    assert_eq!(parts("limits"), ["sled_cache", "search_writer"]);
    assert!(data["samples_appended"].as_u64().unwrap() >= 6_000);
    assert!(data["resident_bytes"].as_u64().unwrap() > data["allocated_bytes"].as_u64().unwrap());
    assert!(data["uptime_seconds"].as_f64().unwrap() > 0.0);
}

/// Issue 19, part 2: sized for a 1 GB board, perch takes the small memory
/// profile for what the file leaves out, keeps what it sets, says so in
/// its log, and its bounds show in `/metrics` and the settings in force.
#[test]
fn memory_is_sized_for_the_board() {
    let p =
        common::Perch::start_with("[memory]\nram = \"1GiB\"\n\n[mqtt]\nhistory_bytes = \"2MiB\"\n");
    let text = p.get("/metrics").body;
    let limit = |c| exposed(&text, "perch_memory_limit_bytes", "component", c);
    assert_eq!(limit("sled_cache"), Some((8 << 20) as f64));
    assert_eq!(limit("search_writer"), Some(15_000_000.0));
    let settings = p.get("/api/v1/settings").json();
    assert_eq!(
        settings["storage"]["max_head_samples"], 500_000,
        "{settings}"
    );
    assert_eq!(settings["query"]["max_samples"], 2_500_000, "{settings}");
    assert_eq!(
        settings["mqtt"]["history_bytes"], "2MiB",
        "set in the file: {settings}"
    );
    let log = p.log();
    assert!(
        log.contains("memory sized for the RAM") && log.contains("small (up to 1 GB"),
        "{log}"
    );
}
