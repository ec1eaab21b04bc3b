//! `perch bench`: measurements behind the numbers in `docs/`. Benchmarks are
//! commands, not timed tests, so they can run on a Raspberry Pi as shipped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use base::{Clock, ManualClock};
use config::StorageConfig;
use ingest::line_protocol::{self, Precision};
use store::block::{BlockBuilder, BlockKind};
use store::codec::{self, ColumnCodec, Decimal, Gorilla, Pco};
use store::{SeriesSamples, Storage};

mod footprint;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(Subcommand, Debug)]
pub enum BenchWhat {
    /// Ingest line protocol through the internal write path; report samples/s
    /// and bytes per sample of the whole data directory after a clean stop
    Storage(InputArgs),
    /// Ingest line protocol through POST /write of an in-process server
    Http {
        #[command(flatten)]
        input: InputArgs,
        /// Concurrent HTTP connections
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// Compare the column codecs (Gorilla, pco, decimal+pco) on the data
    Codecs(InputArgs),
    /// Latency of PromQL range queries, beside Prometheus and VictoriaMetrics
    Query(query::bench::QueryBenchArgs),
    /// Publish through the MQTT broker until stored; compare with Mosquitto
    Mqtt(mqtt::bench::MqttBenchArgs),
    /// CPU and memory of relaying RTSP cameras to viewers; snapshot latency
    Cameras(cameras::bench::CameraBenchArgs),
    /// Index generated MQTT messages; query latency, bytes per message,
    /// series autocomplete
    Search(search::bench::SearchBenchArgs),
    /// Ingestion with and without forwarding targets; how fast each drains
    Forward(forward::bench::ForwardBenchArgs),
    /// Time of one round of alerting rules over generated series
    Rules(alerts::bench::RulesBenchArgs),
    /// Memory, disk writes per sample and disk use under a live load,
    /// beside VictoriaMetrics
    Footprint(footprint::FootprintArgs),
}

#[derive(Args, Debug)]
pub struct InputArgs {
    /// Line protocol file, e.g. from gen_sensors.py --format line (ms timestamps)
    #[arg(long)]
    pub input: PathBuf,
    /// Timestamp precision of the file
    #[arg(long, default_value = "ms")]
    pub precision: String,
    /// Lines per write batch
    #[arg(long, default_value_t = 5000)]
    pub batch_lines: usize,
    /// Where to put the data directory (a temporary one by default)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        BenchWhat::Storage(input) => bench_storage(&input),
        BenchWhat::Http { input, connections } => bench_http(&input, connections),
        BenchWhat::Codecs(input) => bench_codecs(&input),
        BenchWhat::Query(args) => query::bench::run(args),
        BenchWhat::Mqtt(args) => bench_mqtt(args),
        BenchWhat::Cameras(args) => cameras::bench::run(args),
        BenchWhat::Search(args) => search::bench::run(args),
        BenchWhat::Forward(args) => forward::bench::run(args),
        BenchWhat::Rules(args) => alerts::bench::run(args),
        BenchWhat::Footprint(args) => footprint::run(args),
    }
}

/// The MQTT benchmark, with the search index attached when asked, to
/// measure what indexing costs ingestion.
fn bench_mqtt(args: mqtt::bench::MqttBenchArgs) -> anyhow::Result<()> {
    use mqtt::MessageSink;
    let with_search = args.search;
    let opened: parking_lot::Mutex<Option<Arc<search::Search>>> = Default::default();
    // Its own directory: the broker benchmark removes its data directory
    // before the index is closed and measured here.
    let search_dir =
        std::env::temp_dir().join(format!("perch-bench-search-{}", std::process::id()));
    mqtt::bench::run(args, &|_, clock| {
        if !with_search {
            return Ok(Vec::new());
        }
        let search = search::Search::open(&Default::default(), &search_dir, clock)?;
        *opened.lock() = Some(search.clone());
        Ok(vec![
            Arc::new(crate::server::SearchSink(search)) as Arc<dyn MessageSink>
        ])
    })?;
    if let Some(search) = opened.lock().take() {
        search.close();
        let s = search.status();
        println!(
            "search:  {} messages indexed, {} dropped, {} failed",
            s.indexed, s.dropped, s.failed
        );
        let _ = std::fs::remove_dir_all(&search_dir);
    }
    Ok(())
}

struct Loaded {
    batches: Vec<String>,
    lines: usize,
    max_ts: i64,
    precision: Precision,
}

fn load(input: &InputArgs) -> anyhow::Result<Loaded> {
    let text = std::fs::read_to_string(&input.input)
        .with_context(|| format!("cannot read {}", input.input.display()))?;
    let precision = Precision::parse(&input.precision)
        .with_context(|| format!("unknown precision {:?}", input.precision))?;
    let mut batches = Vec::new();
    let mut lines = 0;
    let mut current = String::new();
    let mut in_batch = 0;
    for line in text.lines() {
        current.push_str(line);
        current.push('\n');
        lines += 1;
        in_batch += 1;
        if in_batch == input.batch_lines {
            batches.push(std::mem::take(&mut current));
            in_batch = 0;
        }
    }
    if !current.is_empty() {
        batches.push(current);
    }
    // The clock is set just after the data, as if it had arrived live.
    let max_ts = batches
        .last()
        .map(|b| line_protocol::parse(b, precision, 0, &[]))
        .and_then(|p| {
            p.series
                .iter()
                .flat_map(|s| s.samples.iter().map(|x| x.0))
                .max()
        })
        .unwrap_or(0);
    Ok(Loaded {
        batches,
        lines,
        max_ts,
        precision,
    })
}

fn temp_dir(input: &InputArgs) -> anyhow::Result<(PathBuf, Option<tempfile_guard::Guard>)> {
    match &input.data_dir {
        Some(d) => {
            if d.exists() {
                bail!("{} exists; give a new directory", d.display());
            }
            Ok((d.clone(), None))
        }
        None => {
            let g = tempfile_guard::Guard::new()?;
            Ok((g.path.clone(), Some(g)))
        }
    }
}

/// A temporary directory removed on drop, without a dev-dependency.
mod tempfile_guard {
    use std::path::PathBuf;

    pub struct Guard {
        pub path: PathBuf,
    }

    impl Guard {
        pub fn new() -> std::io::Result<Guard> {
            let path = std::env::temp_dir().join(format!(
                "perch-bench-{}-{}",
                std::process::id(),
                chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
            ));
            std::fs::create_dir_all(&path)?;
            Ok(Guard { path })
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Peak resident memory of this process so far.
fn peak_rss_bytes() -> u64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid out pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss as u64 * 1024
}

fn bench_storage(input: &InputArgs) -> anyhow::Result<()> {
    let loaded = load(input)?;
    let (dir, _guard) = temp_dir(input)?;
    println!(
        "input: {} lines in {} batches",
        loaded.lines,
        loaded.batches.len()
    );

    let t = Instant::now();
    let parsed: Vec<Vec<SeriesSamples>> = loaded
        .batches
        .iter()
        .map(|b| line_protocol::parse(b, loaded.precision, 0, &[]).series)
        .collect();
    let parse_secs = t.elapsed().as_secs_f64();
    let samples: usize = parsed.iter().flatten().map(|s| s.samples.len()).sum();
    println!(
        "parse:   {samples} samples in {parse_secs:.3} s = {:.0} samples/s (one thread)",
        samples as f64 / parse_secs
    );

    let clock = ManualClock::new(loaded.max_ts + 60_000);
    let c: Arc<dyn Clock> = clock.clone();
    let config = StorageConfig::default();
    let (storage, _) = Storage::open(&config, &dir, c)?;
    let background = storage.start_background();
    let t = Instant::now();
    let mut retries = 0usize;
    for batch in &parsed {
        loop {
            match storage.append(batch) {
                Ok(_) => break,
                Err(store::StorageError::Overloaded { .. }) => {
                    retries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let append_secs = t.elapsed().as_secs_f64();
    println!(
        "append:  {samples} samples in {append_secs:.3} s = {:.0} samples/s (internal write path, one writer{})",
        samples as f64 / append_secs,
        if retries > 0 { format!(", {retries} back-offs") } else { String::new() }
    );
    let t = Instant::now();
    storage.checkpoint()?;
    storage.compact()?;
    storage.close()?;
    drop(storage);
    background.join();
    let close_secs = t.elapsed().as_secs_f64();
    println!("close:   checkpoint + compaction + clean stop in {close_secs:.3} s");
    println!(
        "overall: {:.0} samples/s including compression and compaction; peak memory {} MiB (input and parsed batches included)",
        samples as f64 / (append_secs + close_secs),
        peak_rss_bytes() >> 20
    );

    let sizes = [
        ("blocks", base::disk::dir_size(&dir.join("blocks"))),
        ("db (sled)", base::disk::dir_size(&dir.join("db"))),
        ("wal", base::disk::dir_size(&dir.join("wal"))),
    ];
    let total = base::disk::dir_size(&dir);
    for (name, bytes) in sizes {
        println!("disk:    {name:<10} {bytes:>12} bytes");
    }
    println!(
        "disk:    {:<10} {total:>12} bytes = {:.3} bytes/sample (whole data directory, du)",
        "total",
        total as f64 / samples as f64
    );
    Ok(())
}

fn bench_http(input: &InputArgs, connections: usize) -> anyhow::Result<()> {
    let loaded = load(input)?;
    let (dir, _guard) = temp_dir(input)?;
    let samples: usize = loaded
        .batches
        .iter()
        .map(|b| line_protocol::parse(b, loaded.precision, 0, &[]).samples)
        .sum();
    let config = config::Config {
        data_dir: dir.clone(),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let clock = ManualClock::new(loaded.max_ts + 60_000);
        let c: Arc<dyn Clock> = clock.clone();
        let (storage, _) = Storage::open(&config.storage, &dir, c)?;
        let background = storage.start_background();
        let accounts = Arc::new(accounts::Accounts::open(&storage.trees())?);
        // Writes need credentials like any client's: a device token.
        let (token, _) = accounts.create_token("bench", accounts::Role::Device, "bench", 0)?;
        let state = Arc::new(perch_http::AppState {
            config: Arc::new(config),
            storage: storage.clone(),
            dashboards: Arc::new(dashboards::Dashboards::open(&storage.trees())?),
            accounts,
            broker: None,
            cameras: None,
            search: None,
            forwarder: None,
            metrics: None,
            devices: None,
            rules: None,
            ready: true.into(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
            listener,
            perch_http::router(state),
        )));
        let url = format!("http://{addr}/write?precision={}", input.precision);
        let client = reqwest::Client::new();
        let batches = Arc::new(loaded.batches);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let t = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let (client, url, batches, next, token) = (client.clone(), url.clone(), batches.clone(), next.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(body) = batches.get(i) else { return Ok::<_, anyhow::Error>(()) };
                    loop {
                        let r = client.post(&url).bearer_auth(&token).body(body.clone()).send().await?;
                        match r.status().as_u16() {
                            204 => break,
                            503 => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                            s => bail!("write failed with {s}: {}", r.text().await.unwrap_or_default()),
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await??;
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "http:    {samples} samples in {secs:.3} s = {:.0} samples/s through POST /write ({connections} connections, {} lines per request)",
            samples as f64 / secs,
            input.batch_lines
        );
        server.abort();
        let stored = storage.status().samples as usize;
        if stored != samples {
            bail!("stored {stored} samples of {samples}");
        }
        storage.close()?;
        background.join();
        println!("check:   all {samples} samples stored; peak memory {} MiB", peak_rss_bytes() >> 20);
        Ok(())
    })
}

fn bench_codecs(input: &InputArgs) -> anyhow::Result<()> {
    let loaded = load(input)?;
    // Group samples per series, then cut 2 h windows as the store does.
    let mut series: std::collections::BTreeMap<String, Vec<(i64, f64)>> = Default::default();
    let mut groups: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for b in &loaded.batches {
        for s in line_protocol::parse(b, loaded.precision, 0, &[]).series {
            let key = s.labels.to_string();
            let group = s.labels.without("__name__").to_string();
            let e = series.entry(key.clone()).or_default();
            if e.is_empty() {
                groups.entry(group).or_default().push(key);
            }
            e.extend(s.samples);
        }
    }
    let window = store::Tier::Raw.window_ms();
    let mut totals = [0usize; 5]; // gorilla ts, gorilla vals, pco ts(per series), pco vals, decimal vals
    let mut block_bytes = 0usize;
    // What 1 min rollup blocks of the same windows would cost.
    let mut minute_rollup_bytes = 0usize;
    let mut block_ts = 0usize;
    let mut block_vals = 0usize;
    let mut n = 0usize;
    for members in groups.values() {
        type Column = (usize, Vec<i64>, Vec<f64>);
        let mut windows: std::collections::BTreeMap<i64, Vec<Column>> = Default::default();
        for (i, key) in members.iter().enumerate() {
            let mut s = series[key].clone();
            s.sort_by_key(|x| x.0);
            for (t, v) in s {
                let w = windows.entry(t.div_euclid(window)).or_default();
                match w.iter_mut().find(|m| m.0 == i) {
                    Some(m) => {
                        m.1.push(t);
                        m.2.push(v);
                    }
                    None => w.push((i, vec![t], vec![v])),
                }
            }
        }
        for cols in windows.values() {
            let mut builder = BlockBuilder::new(BlockKind::Raw);
            for (i, ts, vs) in cols {
                n += ts.len();
                let mut buf = Vec::new();
                Gorilla::encode_timestamps(ts, &mut buf)?;
                totals[0] += buf.len();
                buf.clear();
                Gorilla::encode_values(vs, &mut buf)?;
                totals[1] += buf.len();
                buf.clear();
                Pco::encode_timestamps(ts, &mut buf)?;
                totals[2] += buf.len();
                buf.clear();
                Pco::encode_values(vs, &mut buf)?;
                totals[3] += buf.len();
                buf.clear();
                totals[4] += match Decimal::encode_values(vs, &mut buf) {
                    Ok(()) => buf.len(),
                    Err(_) => {
                        buf.clear();
                        codec::encode_values(vs, &mut buf);
                        buf.len()
                    }
                };
                builder.add(*i as u32, ts, &[vs]);
            }
            let mut rb = BlockBuilder::new(BlockKind::Rollup);
            for (i, ts, vs) in cols {
                let b = store::rollup::rollup(ts, vs, 60_000);
                rb.add(*i as u32, &b.ts, &b.columns());
            }
            minute_rollup_bytes += rb.finish().len();
            let bytes = builder.finish();
            let parsed = store::block::Block::parse(&bytes)?;
            let (t, v) = parsed.byte_breakdown();
            block_bytes += bytes.len();
            block_ts += t;
            block_vals += v;
        }
    }
    let per = |b: usize| b as f64 / n as f64;
    println!(
        "{n} samples in {} series, {} groups, 2 h windows",
        series.len(),
        groups.len()
    );
    println!(
        "gorilla          ts {:>10} B  values {:>10} B  = {:.3} B/sample",
        totals[0],
        totals[1],
        per(totals[0] + totals[1])
    );
    println!(
        "pco (per series) ts {:>10} B  values {:>10} B  = {:.3} B/sample",
        totals[2],
        totals[3],
        per(totals[2] + totals[3])
    );
    println!(
        "pco + decimal    ts {:>10} B  values {:>10} B  = {:.3} B/sample",
        totals[2],
        totals[4],
        per(totals[2] + totals[4])
    );
    println!(
        "perch blocks     ts {:>10} B  values {:>10} B  = {:.3} B/sample (shared timestamps, chosen codecs, headers)",
        block_ts,
        block_vals,
        per(block_bytes)
    );
    println!(
        "1 min rollups    {:>10} B = {:.3} B/sample ({:.0}% of the raw blocks)",
        minute_rollup_bytes,
        per(minute_rollup_bytes),
        100.0 * minute_rollup_bytes as f64 / block_bytes as f64
    );
    Ok(())
}
