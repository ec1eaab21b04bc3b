//! `perch bench search`: indexing rate, index bytes per message and query
//! latency on generated MQTT-like messages, and the two ways of answering
//! series autocomplete (a scan over the store's series list, a tantivy index
//! of the same series). The numbers go into `docs/search.md`.
//!
//! As a command (not part of the search module's runtime), it also opens a
//! store for the series comparison.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::series::SeriesQuery;
use super::{Message, Search, SearchRequest, Sort};
use base::{Clock, ManualClock};
use config::{SearchConfig, StorageConfig};
use store::{Labels, SeriesSamples, Storage};

#[derive(Args, Debug)]
pub struct SearchBenchArgs {
    /// Messages to index
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: usize,
    /// Hours the messages are spread over (ending now)
    #[arg(long, default_value_t = 48)]
    pub hours: i64,
    /// Timed runs per query (after one warm-up run)
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// Series for the autocomplete comparison
    #[arg(long, default_value_t = 100_000)]
    pub series: usize,
    /// Where to put the data directory (a temporary one by default)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

const STATES: [&str; 6] = [
    "ok",
    "ok",
    "ok",
    "charging",
    "low battery",
    "sensor fault E42",
];
const EVENTS: [&str; 5] = [
    "door opened",
    "door closed",
    "motion detected in the garage",
    "firmware update 2.4.1 installed",
    "connection lost, retrying",
];

/// The i-th generated message: a third JSON status, a third text events,
/// a third plain numbers, from 500 devices on 10 sites.
fn message(rng: &mut StdRng, i: usize, time_ms: i64) -> Message {
    let dev = rng.gen_range(0..500);
    let site = dev % 10;
    let (kind, payload) = match i % 3 {
        0 => (
            "status",
            format!(
                r#"{{"battery":{},"state":"{}","rssi":{}}}"#,
                rng.gen_range(0..100),
                STATES[rng.gen_range(0..STATES.len())],
                -rng.gen_range(30..90)
            ),
        ),
        1 => ("event", EVENTS[rng.gen_range(0..EVENTS.len())].to_string()),
        _ => (
            "temperature",
            format!("{:.1}", rng.gen_range(150..300) as f64 / 10.0),
        ),
    };
    Message {
        time_ms,
        topic: format!("site{site}/dev{dev}/{kind}"),
        payload: payload.into(),
        client_id: Arc::from(format!("dev{dev}").as_str()),
        qos: (i % 2) as u8,
        retain: false,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn time_runs(
    runs: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Duration>> {
    f()?;
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed());
    }
    v.sort();
    Ok(v)
}

fn peak_rss_bytes() -> u64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid out pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss as u64 * 1024
}

pub fn run(args: SearchBenchArgs) -> anyhow::Result<()> {
    let (dir, _cleanup) = match &args.data_dir {
        Some(d) if d.exists() => bail!("{} exists; give a new directory", d.display()),
        Some(d) => (d.clone(), None),
        None => {
            let d = std::env::temp_dir().join(format!("perch-bench-search-{}", std::process::id()));
            (d.clone(), Some(RemoveOnDrop(d)))
        }
    };
    std::fs::create_dir_all(&dir)?;
    let now = chrono::Utc::now().timestamp_millis();
    let clock = ManualClock::new(now);
    let c: Arc<dyn Clock> = clock.clone();
    let config = SearchConfig {
        max_disk_bytes: config::DiskBudget::Bytes(u64::MAX),
        ..SearchConfig::default()
    };
    let n = args.messages.max(1);
    let span_ms = args.hours.max(1) * 3_600_000;
    let time_of = |i: usize| now - span_ms + (i as i128 * span_ms as i128 / n as i128) as i64;

    // Indexing: generate and queue every message, then commit; the rate
    // counts until the last one is searchable.
    let search = Search::open(&config, &dir, c.clone())?;
    let mut rng = StdRng::seed_from_u64(7);
    let mut payload_bytes = 0usize;
    let t = Instant::now();
    for i in 0..n {
        let m = message(&mut rng, i, time_of(i));
        payload_bytes += m.payload.len();
        search.submit(m)?;
    }
    search.flush()?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "index:   {n} messages ({:.0} payload bytes on average) in {secs:.2} s = {:.0} messages/s, \
         writer heap {}, generation included",
        payload_bytes as f64 / n as f64,
        n as f64 / secs,
        config.writer_heap
    );
    let t = Instant::now();
    search.close();
    drop(search);
    println!("close:   {:.2} s (last merges)", t.elapsed().as_secs_f64());
    let bytes = base::disk::dir_size(&dir.join("search"));
    println!(
        "disk:    {bytes} bytes = {:.1} bytes/message ({:.2}x the payload and topic bytes)",
        bytes as f64 / n as f64,
        bytes as f64 / (payload_bytes as f64 + n as f64 * 20.0)
    );

    // Queries on the reopened index.
    let t = Instant::now();
    let search = Search::open(&config, &dir, c.clone())?;
    let st = search.status();
    println!(
        "open:    {:.3} s, {} documents in {} days, {} segments",
        t.elapsed().as_secs_f64(),
        st.documents,
        st.periods.len(),
        st.periods.iter().map(|p| p.segments).sum::<usize>()
    );
    let all = (now - span_ms, now);
    let last_hour = (now - 3_600_000, now);
    let cases: [(&str, &str, (i64, i64), Sort); 9] = [
        ("word, all time, newest 20", "battery", all, Sort::Time),
        ("rare word, all time", "E42", all, Sort::Time),
        ("phrase, all time", "\"low battery\"", all, Sort::Time),
        ("phrase, relevance", "\"low battery\"", all, Sort::Relevance),
        (
            "topic word AND word",
            "topic:dev17 AND door",
            all,
            Sort::Time,
        ),
        ("JSON key, last hour", "field:rssi", last_hour, Sort::Time),
        (
            "exact topic",
            "topic_exact:site3/dev13/event",
            all,
            Sort::Time,
        ),
        ("NOT, last hour", "door NOT closed", last_hour, Sort::Time),
        ("everything, last hour", "*", last_hour, Sort::Time),
    ];
    for (name, q, (start, end), sort) in cases {
        let req = SearchRequest {
            q: q.to_string(),
            start,
            end,
            limit: 20,
            offset: 0,
            sort,
        };
        let mut total = 0;
        let lat = time_runs(args.runs, || {
            total = search.search(&req)?.total;
            Ok(())
        })?;
        println!(
            "query:   {name:<28} {q:<32} {total:>8} hits  p50 {:>7.2} ms  p95 {:>7.2} ms",
            percentile(&lat, 0.5),
            percentile(&lat, 0.95)
        );
    }
    let step = 15 * 60_000;
    let lat = time_runs(args.runs, || {
        search.histogram("battery", all.0, all.1, step)?;
        Ok(())
    })?;
    println!(
        "histogram: \"battery\" over {} h in 15 min buckets  p50 {:.2} ms  p95 {:.2} ms",
        args.hours,
        percentile(&lat, 0.5),
        percentile(&lat, 0.95)
    );
    search.close();
    drop(search);
    println!("memory:  peak {} MiB", peak_rss_bytes() >> 20);

    bench_series(&dir, args.series, args.runs, c)?;
    Ok(())
}

/// Autocomplete over `count` series: the scan `GET /api/v1/series/search`
/// does, against a tantivy index of the series' words searched by regex.
fn bench_series(
    dir: &std::path::Path,
    count: usize,
    runs: usize,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    if count == 0 {
        return Ok(());
    }
    let names = [
        "temperature_celsius",
        "humidity_ratio",
        "battery_volts",
        "rssi_dbm",
        "energy_wh_total",
        "power_watts",
        "door_open",
        "motion_events_total",
        "co2_ppm",
        "pressure_hpa",
    ];
    let storage_dir = dir.join("store");
    let cfg = StorageConfig {
        max_series: count + 1000,
        ..StorageConfig::default()
    };
    let (storage, _) = Storage::open(&cfg, &storage_dir, clock.clone())?;
    let now = clock.now_ms();
    let mut batch = Vec::new();
    for i in 0..count {
        batch.push(SeriesSamples::new(
            Labels::from_pairs([
                ("__name__", names[i % names.len()].to_string()),
                ("site", format!("site{}", i % 37)),
                ("device", format!("device-{}", i / names.len())),
            ]),
            vec![(now, 1.0)],
        ));
        if batch.len() == 10_000 {
            storage.append(&batch)?;
            batch.clear();
        }
    }
    storage.append(&batch)?;
    let queries = ["temp", "device-4711", "energy site3", "zzz"];
    for q in queries {
        let sq = SeriesQuery::new(q);
        let mut found = 0;
        let lat = time_runs(runs.min(20), || {
            let all = storage.select(&[], i64::MIN, i64::MAX);
            let mut ranked: Vec<(u32, usize)> = all
                .iter()
                .enumerate()
                .filter_map(|(i, (_, l))| {
                    let name = l.metric_name().unwrap_or("");
                    let pairs = || l.iter().map(|x| (x.name.as_str(), x.value.as_str()));
                    sq.score(name, pairs).map(|s| (s, i))
                })
                .collect();
            found = ranked.len();
            ranked.sort_unstable();
            ranked.truncate(20);
            Ok(())
        })?;
        println!(
            "series (scan):    {count} series, {q:<14} {found:>6} matches  p50 {:>7.2} ms  p95 {:>7.2} ms",
            percentile(&lat, 0.5),
            percentile(&lat, 0.95)
        );
    }

    // The same series in a tantivy index in memory: the name and every
    // label value as whole lower-cased terms, a word found anywhere inside
    // one by regex over the term dictionary.
    use tantivy::collector::{Count, TopDocs};
    use tantivy::query::{BooleanQuery, Occur, Query, RegexQuery};
    use tantivy::schema::{Schema, TextFieldIndexing, TextOptions};
    let mut sb = Schema::builder();
    let text = sb.add_text_field(
        "text",
        TextOptions::default()
            .set_indexing_options(TextFieldIndexing::default().set_tokenizer("perch_keyword")),
    );
    let index = tantivy::Index::create_in_ram(sb.build());
    super::schema::register_tokenizers(&index);
    let t = Instant::now();
    let mut w: tantivy::IndexWriter = index.writer_with_num_threads(1, 32 << 20)?;
    for (_, l) in storage.select(&[], i64::MIN, i64::MAX) {
        let mut doc = tantivy::TantivyDocument::new();
        for label in l.iter() {
            doc.add_text(text, &label.value);
        }
        w.add_document(doc)?;
    }
    w.commit()?;
    let reader = index.reader()?;
    println!(
        "series (tantivy): index of {count} series built in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let searcher = reader.searcher();
    for q in queries {
        let clauses: Vec<(Occur, Box<dyn Query>)> = q
            .split_whitespace()
            .map(|w| {
                let pattern = format!(".*{}.*", regex::escape(&w.to_lowercase()));
                RegexQuery::from_pattern(&pattern, text)
                    .map(|r| (Occur::Must, Box::new(r) as Box<dyn Query>))
            })
            .collect::<Result<_, _>>()?;
        let query = BooleanQuery::new(clauses);
        let mut found = 0;
        let lat = time_runs(runs.min(20), || {
            let (n, _top) =
                searcher.search(&query, &(Count, TopDocs::with_limit(20).order_by_score()))?;
            found = n;
            Ok(())
        })?;
        println!(
            "series (tantivy): {count} series, {q:<14} {found:>6} matches  p50 {:>7.2} ms  p95 {:>7.2} ms",
            percentile(&lat, 0.5),
            percentile(&lat, 0.95)
        );
    }
    storage.close()?;
    Ok(())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
