use std::sync::Arc;

use super::*;
use crate::config::StorageConfig;
use crate::system::ManualClock;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const H: i64 = 3_600_000;

fn open(dir: &Path, clock: &Arc<ManualClock>) -> Arc<Storage> {
    open_with(dir, clock, StorageConfig::default())
}

fn open_with(dir: &Path, clock: &Arc<ManualClock>, cfg: StorageConfig) -> Arc<Storage> {
    let c: Arc<dyn Clock> = clock.clone();
    Storage::open(&cfg, dir, c).unwrap().0
}

fn series(name: &str, labels: &[(&str, &str)], samples: Vec<(i64, f64)>) -> SeriesSamples {
    let mut l = Labels::from_pairs(labels.iter().map(|(a, b)| (a.to_string(), b.to_string())));
    l.set("__name__", name);
    SeriesSamples { labels: l, samples }
}

fn read_all(s: &Storage, name: &str) -> Vec<SeriesData> {
    let ids: Vec<SeriesId> = s
        .select(&[Matcher::equal("__name__", name)], i64::MIN, i64::MAX)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    s.read(&ids, i64::MIN, i64::MAX, usize::MAX).unwrap()
}

#[test]
fn append_read_out_of_order_and_last_write_wins() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0 + 10 * H);
    let s = open(dir.path(), &clock);
    s.append(&[series(
        "temp",
        &[("room", "a")],
        vec![(T0 + 3000, 3.0), (T0 + 1000, 1.0)],
    )])
    .unwrap();
    s.append(&[series(
        "temp",
        &[("room", "a")],
        vec![(T0 + 2000, 2.0), (T0 + 1000, 10.0)],
    )])
    .unwrap();
    let got = read_all(&s, "temp");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].ts, vec![T0 + 1000, T0 + 2000, T0 + 3000]);
    assert_eq!(got[0].values, vec![10.0, 2.0, 3.0]);
    // After a checkpoint the same answer comes from blocks.
    s.checkpoint().unwrap();
    s.append(&[series("temp", &[("room", "a")], vec![(T0 + 2000, 20.0)])])
        .unwrap();
    let got = read_all(&s, "temp");
    assert_eq!(got[0].values, vec![10.0, 20.0, 3.0]);
    s.checkpoint().unwrap();
    s.compact().unwrap();
    let got = read_all(&s, "temp");
    assert_eq!(got[0].values, vec![10.0, 20.0, 3.0]);
}

#[test]
fn invalid_series_are_rejected_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let s = open(dir.path(), &clock);
    let r = s
        .append(&[
            series("ok", &[], vec![(T0, 1.0)]),
            series("1bad", &[], vec![(T0, 1.0)]),
            series("ok", &[("bad-label", "x")], vec![(T0, 1.0)]),
        ])
        .unwrap();
    assert_eq!(r.samples, 1);
    assert_eq!(r.rejected.len(), 2);
    assert!(r.rejected[0].1.to_string().contains("invalid metric name"));
    assert_eq!(read_all(&s, "ok").len(), 1);
}

#[test]
fn unclean_stop_replays_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0 + H);
    {
        let s = open(dir.path(), &clock);
        s.append(&[series(
            "m",
            &[("a", "1")],
            vec![(T0, 1.5), (T0 + 1, f64::NAN)],
        )])
        .unwrap();
        s.flush_wal().unwrap();
        // Dropped without close: only the WAL has the samples.
    }
    let s = open(dir.path(), &clock);
    let got = read_all(&s, "m");
    assert_eq!(got[0].ts, vec![T0, T0 + 1]);
    assert_eq!(got[0].values[0], 1.5);
    assert!(got[0].values[1].is_nan());
}

#[test]
fn closed_windows_compact_to_one_block_with_hourly_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let s = open(dir.path(), &clock);
    // 3 hours of 10 s data in two checkpoints, for two fields of one group.
    for part in 0..2 {
        let mut a = Vec::new();
        let mut b = Vec::new();
        for i in 0..540 {
            let t = T0 + (part * 540 + i) * 10_000;
            a.push((t, (i % 10) as f64));
            b.push((t, 1.0));
        }
        s.append(&[series("x", &[("d", "1")], a), series("y", &[("d", "1")], b)])
            .unwrap();
        s.checkpoint().unwrap();
    }
    clock.set(T0 + 6 * H);
    s.compact().unwrap();
    let raw = s.files.windows(Tier::Raw);
    assert_eq!(raw.len(), 2);
    assert!(raw[0].1.rolled_up);
    assert_eq!(
        raw[0].1.blocks, 1,
        "one block for the group after compaction"
    );
    let ids: Vec<_> = s
        .select(&[Matcher::equal("__name__", "x")], i64::MIN, i64::MAX)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let hourly = s
        .read_rollup(&ids, Tier::Hour, T0, T0 + 3 * H, usize::MAX)
        .unwrap();
    let b = &hourly[0].buckets;
    assert_eq!(b.ts, vec![T0, T0 + H, T0 + 2 * H]);
    assert_eq!(b.count, vec![360.0, 360.0, 360.0]);
    assert_eq!(b.min[0], 0.0);
    assert_eq!(b.max[0], 9.0);
    assert_eq!(b.sum[0], 36.0 * 45.0);
    let minutes = s
        .read_rollup(&ids, Tier::Minute, T0, T0 + 10 * 60_000, usize::MAX)
        .unwrap();
    assert_eq!(minutes[0].buckets.len(), 11);
    assert_eq!(minutes[0].buckets.count[0], 6.0);
    // Data survives reopening.
    s.close().unwrap();
    drop(s);
    let s = open(dir.path(), &clock);
    assert_eq!(read_all(&s, "x")[0].ts.len(), 1080);
    let report = check::check(dir.path());
    assert!(
        report.problems.is_empty() || report.problems[0].contains("in use"),
        "{:?}",
        report.problems
    );
}

#[test]
fn retention_drops_old_windows_and_downsamples() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let cfg = StorageConfig {
        retention: crate::config::Duration::from_secs(4 * 3600),
        ..Default::default()
    };
    let s = open_with(dir.path(), &clock, cfg);
    let samples: Vec<(i64, f64)> = (0..(12 * 60))
        .map(|i| (T0 + i * 60_000, i as f64))
        .collect();
    s.append(&[series("r", &[], samples)]).unwrap();
    s.checkpoint().unwrap();
    clock.set(T0 + 12 * H);
    s.compact().unwrap();
    s.enforce_retention().unwrap();
    let got = read_all(&s, "r");
    // Raw windows ending at or before now - 4 h are gone.
    assert_eq!(got[0].ts[0], T0 + 8 * H);
    // Their 1 min rollups remain.
    let ids = vec![got[0].id];
    let m = s
        .read_rollup(&ids, Tier::Minute, T0, T0 + H, usize::MAX)
        .unwrap();
    assert_eq!(m[0].buckets.len(), 61);
    assert_eq!(m[0].buckets.last[0], 0.0);
}

#[test]
fn disk_budget_drops_oldest_first_and_keeps_newest() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let cfg = StorageConfig {
        max_disk_bytes: crate::config::DiskBudget::Bytes(1),
        ..Default::default()
    };
    let s = open_with(dir.path(), &clock, cfg);
    for w in 0..5 {
        let samples: Vec<(i64, f64)> = (0..720)
            .map(|i| (T0 + w * 2 * H + i * 10_000, i as f64 * 0.37))
            .collect();
        s.append(&[series("b", &[], samples)]).unwrap();
        s.checkpoint().unwrap();
    }
    s.enforce_retention().unwrap();
    let raw = s.files.windows(Tier::Raw);
    assert_eq!(raw.len(), 1, "only the newest raw window stays");
    assert_eq!(raw[0].0, T0 + 8 * H);
    assert!(s
        .problems()
        .iter()
        .any(|p| p.contains("over the disk budget")));
    // Writing still works.
    s.append(&[series("b", &[], vec![(T0 + 9 * H, 1.0)])])
        .unwrap();
}

#[test]
fn backpressure_when_the_head_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let cfg = StorageConfig {
        max_head_samples: 1000,
        ..Default::default()
    };
    let s = open_with(dir.path(), &clock, cfg);
    let samples: Vec<(i64, f64)> = (0..4000).map(|i| (T0 + i, 1.0)).collect();
    s.append(&[series("p", &[], samples)]).unwrap();
    let e = s.append(&[series("p", &[], vec![(T0, 1.0)])]).unwrap_err();
    assert!(matches!(e, StorageError::Overloaded { .. }));
    s.checkpoint().unwrap();
    s.append(&[series("p", &[], vec![(T0, 1.0)])]).unwrap();
}

#[test]
fn selectors_and_label_queries() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let s = open(dir.path(), &clock);
    s.append(&[
        series("t", &[("site", "s0"), ("dev", "d0")], vec![(T0, 1.0)]),
        series("t", &[("site", "s1"), ("dev", "d1")], vec![(T0, 2.0)]),
        series("h", &[("site", "s0")], vec![(T0, 3.0)]),
    ])
    .unwrap();
    let re = |n: &str, p: &str| Matcher {
        name: n.into(),
        value: p.into(),
        op: MatchOp::Regex(labels::compile_anchored(p).unwrap()),
    };
    assert_eq!(s.select(&[re("site", "s.*")], i64::MIN, i64::MAX).len(), 3);
    assert_eq!(
        s.select(
            &[Matcher::equal("__name__", "t"), re("dev", "d1")],
            i64::MIN,
            i64::MAX
        )
        .len(),
        1
    );
    let not_dev = Matcher {
        name: "dev".into(),
        value: "".into(),
        op: MatchOp::Equal,
    };
    assert_eq!(s.select(&[not_dev], i64::MIN, i64::MAX).len(), 1);
    assert_eq!(s.label_values("site", &[], 0, 0), vec!["s0", "s1"]);
    assert_eq!(s.label_names(&[], 0, 0), vec!["__name__", "dev", "site"]);
}
