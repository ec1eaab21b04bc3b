//! Self-metrics (issue 3, "Host and self metrics"): a realistic registry —
//! the host, a store in a temporary directory, and a source with awkward
//! values — rendered in the Prometheus text format and checked with Debian's
//! `promtool`, the values checked for sense, and the points stored back as
//! series the way the 10 s recorder does.

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
