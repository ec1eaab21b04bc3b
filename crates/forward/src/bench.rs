//! `perch bench forward`: what forwarding costs ingestion, and how fast each
//! kind of target drains. Appends generated samples to a store without
//! targets, then to a fresh store with the given targets attached (their
//! senders running meanwhile), and times how long each target takes until it
//! acknowledged everything. MQTT targets get generated messages handed to the
//! forwarder directly (the broker's own cost is `perch bench mqtt`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use base::{Clock, SystemClock};
use config::{Config, StorageConfig};
use store::{Labels, SeriesSamples, Storage};

#[derive(Args, Debug)]
pub struct ForwardBenchArgs {
    /// A remote-write URL to forward to (repeat for more targets)
    #[arg(long = "remote-write", value_name = "URL")]
    pub remote_write: Vec<String>,
    /// An MQTT broker URL to bridge to (repeat for more targets)
    #[arg(long = "mqtt", value_name = "URL")]
    pub mqtt: Vec<String>,
    /// A Kafka bootstrap broker (host:port) to produce to (repeat for more
    /// targets); records in JSON, one topic per sensor label's site
    #[arg(long = "kafka", value_name = "HOST:PORT")]
    pub kafka: Vec<String>,
    /// Series written
    #[arg(long, default_value_t = 1000)]
    pub series: usize,
    /// Samples written (spread over the series, 100 ms apart, ending now)
    #[arg(long, default_value_t = 2_000_000)]
    pub samples: usize,
    /// Messages bridged to each MQTT target
    #[arg(long, default_value_t = 100_000)]
    pub messages: usize,
    /// Samples per remote-write request; MQTT messages in flight
    #[arg(long, default_value_t = 5000)]
    pub batch_max: usize,
    /// Only queue: measure the hook and the durable queues without senders
    /// (whose work, and the receivers' on the same machine, then does not
    /// compete with ingestion for the CPU)
    #[arg(long)]
    pub queue_only: bool,
}

fn batches(args: &ForwardBenchArgs, now: i64) -> Vec<Vec<SeriesSamples>> {
    let per_series = (args.samples / args.series.max(1)).max(1);
    let start = now - per_series as i64 * 100;
    let labels: Vec<Labels> = (0..args.series)
        .map(|i| {
            Labels::from_pairs([
                ("__name__", "env_bench".to_string()),
                ("sensor", format!("s{i}")),
                ("site", "bench".to_string()),
            ])
        })
        .collect();
    // Ten samples per series per batch, like a collector batch of 10 000.
    (0..per_series)
        .step_by(10)
        .map(|k| {
            labels
                .iter()
                .map(|l| {
                    SeriesSamples::new(
                        l.clone(),
                        (k..(k + 10).min(per_series))
                            .map(|j| (start + j as i64 * 100, j as f64 * 0.25))
                            .collect(),
                    )
                })
                .collect()
        })
        .collect()
}

fn ingest(storage: &Storage, data: &[Vec<SeriesSamples>]) -> anyhow::Result<(usize, Duration)> {
    let t = Instant::now();
    let mut n = 0;
    for b in data {
        loop {
            match storage.append(b) {
                Ok(r) => {
                    n += r.samples;
                    break;
                }
                Err(store::StorageError::Overloaded { .. }) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok((n, t.elapsed()))
}

pub fn run(args: ForwardBenchArgs) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let data = batches(&args, clock.now_ms());
    let cfg = StorageConfig {
        max_series: args.series * 2 + 100,
        ..StorageConfig::default()
    };

    let root = std::env::temp_dir().join(format!("perch-bench-forward-{}", std::process::id()));
    let (storage, _) = Storage::open(&cfg, &root.join("plain"), clock.clone())?;
    let (n, took) = ingest(&storage, &data)?;
    let base = n as f64 / took.as_secs_f64();
    println!("ingest without targets: {n} samples in {took:.2?}: {base:.0} samples/s");
    storage.close()?;
    drop(storage);

    let mut toml = String::new();
    for (i, u) in args.remote_write.iter().enumerate() {
        toml.push_str(&format!(
            "[[forward]]\nname = \"rw{i}\"\nkind = \"remote_write\"\nurl = \"{u}\"\nbatch_max = {}\nqueue_max_bytes = \"4GiB\"\n",
            args.batch_max
        ));
    }
    for (i, u) in args.mqtt.iter().enumerate() {
        toml.push_str(&format!(
            "[[forward]]\nname = \"mq{i}\"\nkind = \"mqtt\"\nurl = \"{u}\"\nbatch_max = {}\nqueue_max_bytes = \"4GiB\"\nremote_prefix = \"bench/\"\n",
            args.batch_max.min(1000)
        ));
    }
    for (i, b) in args.kafka.iter().enumerate() {
        toml.push_str(&format!(
            "[[forward]]\nname = \"kf{i}\"\nkind = \"kafka\"\nbrokers = [\"{b}\"]\ntopic = \"bench_{{site}}\"\nbatch_max = {}\nqueue_max_bytes = \"4GiB\"\n",
            args.batch_max
        ));
    }
    let config = Config::parse(&toml, "bench")?;
    for c in &config.forward {
        super::validate_target(c).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if config.forward.is_empty() {
        let _ = std::fs::remove_dir_all(&root);
        println!("no targets given (--remote-write URL, --mqtt URL, --kafka HOST:PORT): nothing more to measure");
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let _guard = rt.enter();
    let (storage, _) = Storage::open(&cfg, &root.join("forwarding"), clock.clone())?;
    let fwd = super::Forwarder::open(&config.forward, &storage.trees(), clock.clone())
        .context("cannot open the forwarding queues")?;
    storage.observe(fwd.clone());
    if !args.queue_only {
        fwd.start_senders();
    }
    let started = Instant::now();
    let (n, took) = ingest(&storage, &data)?;
    let with = n as f64 / took.as_secs_f64();
    println!(
        "ingest with {} remote-write, {} mqtt and {} kafka targets{}: {n} samples in {took:.2?}: {with:.0} samples/s ({:+.1}%)",
        args.remote_write.len(),
        args.mqtt.len(),
        args.kafka.len(),
        if args.queue_only { " (queue only)" } else { "" },
        (with / base - 1.0) * 100.0
    );
    if args.queue_only {
        rt.block_on(fwd.stop());
        for s in fwd.status() {
            println!(
                "{}: {} bytes in {} items queued, {} dropped",
                s.name, s.queue_bytes, s.queue_items, s.dropped_total
            );
        }
        storage.close()?;
        drop(storage);
        let _ = std::fs::remove_dir_all(&root);
        return Ok(());
    }
    let msg_started = Instant::now();
    if !args.mqtt.is_empty() {
        let now = clock.now_ms();
        for i in 0..args.messages {
            let payload = format!(
                "{{\"temp\":{:.2},\"seq\":{i}}}",
                20.0 + (i % 100) as f64 / 10.0
            );
            fwd.offer_message(
                &format!("sensors/s{}/env", i % 100),
                payload.as_bytes(),
                1,
                false,
                now,
            );
            // The hand-over channel holds 65 536 items: let the writer keep up.
            if i % 10_000 == 9_999 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut done: Vec<Option<Duration>> = vec![None; config.forward.len()];
    let mut peak = vec![0u64; config.forward.len()];
    while done.iter().any(Option::is_none) && Instant::now() < deadline {
        for (i, s) in fwd.status().iter().enumerate() {
            peak[i] = peak[i].max(s.queue_bytes);
            let want = if s.kind.takes_samples() {
                n as u64
            } else {
                args.messages as u64
            };
            if done[i].is_none() && s.sent_total + s.dropped_total >= want && s.queue_items == 0 {
                let from = if s.kind.takes_samples() {
                    started
                } else {
                    msg_started
                };
                done[i] = Some(from.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (i, s) in fwd.status().iter().enumerate() {
        let (what, count) = if s.kind.takes_samples() {
            ("samples", n)
        } else {
            ("messages", args.messages)
        };
        match done[i] {
            Some(d) => println!(
                "{} ({:?} {}): {} {what} acknowledged in {d:.2?}: {:.0} {what}/s; peak queue {} bytes; {} errors; {} dropped",
                s.name,
                s.kind,
                s.url,
                s.sent_total,
                s.sent_total as f64 / d.as_secs_f64(),
                peak[i],
                s.errors_total,
                s.dropped_total
            ),
            None => println!(
                "{} ({:?} {}): unfinished after 10 min: {} of {count} sent, last error {:?}",
                s.name, s.kind, s.url, s.sent_total, s.last_error
            ),
        }
    }
    let sent: u64 = fwd.status().iter().map(|s| s.sent_total).sum();
    println!("total acknowledged: {sent}");
    rt.block_on(fwd.stop());
    storage.close()?;
    drop(storage);
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
