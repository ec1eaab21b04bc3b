//! `perch bench rules`: the time one round of rule evaluation takes, as
//! `perch serve` runs it (groups one after the other, rules in order,
//! results written into the store), over generated sensor series. The
//! numbers go into `docs/alerts.md`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base::{Labels, ManualClock, SeriesSamples};
use clap::Args;

use crate::eval::{EngineQuerier, Group, StoreSink};
use crate::rulefile;

#[derive(Args, Debug)]
pub struct RulesBenchArgs {
    /// Series of generated temperatures (`env_temp{device, sensor}`)
    #[arg(long, default_value_t = 10_000)]
    pub series: usize,
    /// Alerting rules, in groups of 100
    #[arg(long, default_value_t = 1_000)]
    pub rules: usize,
    /// History per series before the rounds, minutes (a sample every 15 s)
    #[arg(long, default_value_t = 60)]
    pub minutes: i64,
    /// Rounds measured (after one warm-up round)
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// The evaluation interval the CPU share is computed for, seconds
    #[arg(long, default_value_t = 15)]
    pub interval: u64,
}

const STEP_MS: i64 = 15_000;
/// Devices: each has `series / DEVICES` sensors.
const DEVICES: usize = 1_000;

/// A deterministic temperature: a daily-ish wave per series plus a hash
/// jitter; a few devices run hot so that some alerts fire.
fn temperature(series: usize, t: i64) -> f64 {
    let phase = (series % 97) as f64;
    let wave = ((t as f64 / 600_000.0) + phase).sin() * 4.0;
    let jitter = (((series as i64 * 7919 + t / STEP_MS * 104_729) % 1000) as f64) / 1000.0;
    let hot = if series % DEVICES < 20 { 12.0 } else { 0.0 };
    20.0 + wave + jitter + hot
}

/// The rules: three kinds in turn, each about one device — a threshold on
/// the latest value, on a 5-minute mean, and a per-sensor maximum.
fn rule_file(rules: usize) -> String {
    let mut s = String::from("groups:\n");
    for i in 0..rules {
        if i % 100 == 0 {
            s.push_str(&format!("  - name: bench-{}\n    rules:\n", i / 100));
        }
        let d = i % DEVICES;
        let expr = match i % 3 {
            0 => format!("env_temp{{device=\"d{d}\"}} > 30"),
            1 => format!("avg_over_time(env_temp{{device=\"d{d}\"}}[5m]) > 29"),
            _ => format!("max by (sensor) (max_over_time(env_temp{{device=\"d{d}\"}}[5m])) > 31"),
        };
        s.push_str(&format!(
            "      - alert: Hot{i}\n        expr: '{expr}'\n        for: 1m\n        labels: {{severity: warning}}\n        annotations: {{summary: '{{{{ $labels.device }}}} at {{{{ $value | humanize }}}}'}}\n"
        ));
    }
    s
}

pub fn run(args: RulesBenchArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("perch-bench-rules-{}", std::process::id()));
    let result = bench(&args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn bench(args: &RulesBenchArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let start = 1_700_000_000_000i64;
    let history_end = start + args.minutes * 60_000;
    let rounds_end = history_end + (args.rounds as i64 + 1) * args.interval as i64 * 1000;
    let clock = ManualClock::new(rounds_end);
    let config = config::StorageConfig {
        retention: config::Duration::from_secs(365 * 86_400),
        ..Default::default()
    };
    let (storage, _) = store::Storage::open(&config, dir, clock)?;
    let per_device = (args.series / DEVICES).max(1);
    let labels: Vec<Labels> = (0..args.series)
        .map(|i| {
            Labels::from_pairs([
                ("__name__".to_string(), "env_temp".to_string()),
                ("device".to_string(), format!("d{}", i % DEVICES)),
                (
                    "sensor".to_string(),
                    format!("s{}", (i / DEVICES) % per_device),
                ),
            ])
        })
        .collect();
    let began = Instant::now();
    let mut t = start;
    let mut samples = 0usize;
    while t <= rounds_end {
        let batch: Vec<SeriesSamples> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| SeriesSamples::new(l.clone(), vec![(t, temperature(i, t))]))
            .collect();
        samples += batch.len();
        storage.append(&batch)?;
        t += STEP_MS;
    }
    println!(
        "loaded {} series, {samples} samples in {:.1} s",
        args.series,
        began.elapsed().as_secs_f64()
    );
    let file = rulefile::parse("bench.yml", &rule_file(args.rules))?;
    let mut groups: Vec<Group> = file
        .groups
        .into_iter()
        .map(|g| Group::new("bench.yml", g, args.interval as i64 * 1000))
        .collect();
    let querier = EngineQuerier(query::promql::Engine::new(
        Arc::clone(&storage),
        &config::QueryConfig::default(),
    ));
    let mut times = Vec::new();
    for round in 0..=args.rounds {
        let ts = history_end + round as i64 * args.interval as i64 * 1000;
        let began = Instant::now();
        for g in &mut groups {
            g.eval(ts, &querier, &mut StoreSink(&storage));
        }
        if round > 0 {
            times.push(began.elapsed());
        }
    }
    let (firing, errors) = groups
        .iter()
        .flat_map(|g| g.rules.iter())
        .fold((0, 0), |(f, e), r| {
            (
                f + r
                    .alerts()
                    .iter()
                    .filter(|a| a.state == crate::AlertState::Firing)
                    .count(),
                e + usize::from(r.status.health == crate::Health::Err),
            )
        });
    times.sort();
    let median = times[times.len() / 2];
    let p90 = times[(times.len() * 9 / 10).min(times.len() - 1)];
    let share = median.as_secs_f64() / args.interval as f64;
    println!(
        "{} rules over {} series, every {} s: round median {:.0} ms, p90 {:.0} ms, max {:.0} ms; \
         {:.1} % of one core ({:.1} % of 2 cores); {firing} alerts firing, {errors} rules in error",
        args.rules,
        args.series,
        args.interval,
        ms(median),
        ms(p90),
        ms(*times.last().unwrap_or(&Duration::ZERO)),
        share * 100.0,
        share * 50.0,
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
