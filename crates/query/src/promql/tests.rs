//! Engine tests against a real store in a temporary directory: what the
//! compatibility corpus cannot show (staleness markers, samples exactly on
//! range boundaries, limits, the rollup path against the raw path).

use std::sync::Arc;
use std::time::Duration;

use super::value::STALE_NAN_BITS;
use super::*;
use base::{Clock, ManualClock};
use config::{QueryConfig, StorageConfig};
use store::{Labels, SeriesSamples};

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const S: i64 = 1000;
const M: i64 = 60_000;

struct Fixture {
    _dir: tempfile::TempDir,
    storage: Arc<Storage>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = ManualClock::new(T0 + 24 * 3_600_000);
    let cfg = StorageConfig::default();
    let storage = Storage::open(&cfg, dir.path(), clock).unwrap().0;
    Fixture { _dir: dir, storage }
}

fn add(f: &Fixture, name: &str, labels: &[(&str, &str)], samples: Vec<(i64, f64)>) {
    let mut l = Labels::from_pairs(labels.iter().map(|(a, b)| (a.to_string(), b.to_string())));
    l.set("__name__", name);
    let r = f.storage.append(&[SeriesSamples::new(l, samples)]).unwrap();
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
}

fn engine(f: &Fixture) -> Engine {
    Engine::new(f.storage.clone(), &QueryConfig::default())
}

fn engine_with(f: &Fixture, edit: impl FnOnce(&mut QueryConfig)) -> Engine {
    let mut c = QueryConfig::default();
    edit(&mut c);
    Engine::new(f.storage.clone(), &c)
}

/// Values of an instant query, sorted by labels.
fn instant(e: &Engine, q: &str, t: i64) -> Vec<(String, f64)> {
    match e.instant(q, t, &QueryOptions::default()).unwrap().value {
        QueryValue::Vector(v) => {
            let mut out: Vec<(String, f64)> =
                v.into_iter().map(|(l, _, v)| (l.to_string(), v)).collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        }
        QueryValue::Scalar(_, v) => vec![(String::new(), v)],
        other => panic!("unexpected {other:?}"),
    }
}

fn stale() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

#[test]
fn staleness_marker_ends_a_series() {
    let f = fixture();
    add(
        &f,
        "a",
        &[],
        vec![
            (T0 + 10 * S, 1.0),
            (T0 + 20 * S, 2.0),
            (T0 + 30 * S, stale()),
            (T0 + 50 * S, 5.0),
        ],
    );
    let e = engine(&f);
    assert_eq!(
        instant(&e, "a", T0 + 25 * S),
        vec![("a{}".to_string(), 2.0)]
    );
    assert!(
        instant(&e, "a", T0 + 40 * S).is_empty(),
        "stale after the marker"
    );
    assert_eq!(instant(&e, "a", T0 + 60 * S)[0].1, 5.0);
    // Ranges leave the marker out.
    assert_eq!(instant(&e, "count_over_time(a[1m])", T0 + 60 * S)[0].1, 3.0);
    // last_over_time skips it too, and keeps the name.
    assert_eq!(
        instant(&e, "last_over_time(a[26s])", T0 + 45 * S),
        vec![("a{}".into(), 2.0)]
    );
}

#[test]
fn ranges_and_lookback_are_left_open() {
    let f = fixture();
    add(&f, "x", &[], vec![(T0, 1.0), (T0 + M, 2.0)]);
    let e = engine(&f);
    // Lookback (t - 5m, t]: the sample at T0 is gone at exactly T0 + 5m.
    assert_eq!(instant(&e, "x", T0 + 5 * M - 1)[0].1, 2.0);
    assert!(instant(&e, "x", T0 + 6 * M).is_empty());
    assert_eq!(instant(&e, "x", T0 + 6 * M - 1)[0].1, 2.0);
    assert!(instant(&e, "x offset 1m", T0 + 7 * M).is_empty());
    assert_eq!(instant(&e, "x offset 1m", T0 + 7 * M - 1)[0].1, 2.0);
    // Range (t - 1m, t] at T0 + 1m holds only the sample at T0 + 1m.
    assert_eq!(instant(&e, "count_over_time(x[1m])", T0 + M)[0].1, 1.0);
    assert_eq!(instant(&e, "count_over_time(x[1m])", T0 + M - 1)[0].1, 1.0);
    assert_eq!(instant(&e, "count_over_time(x[61s])", T0 + M)[0].1, 2.0);
    // A subquery's steps on the lower bound are left out as well: 6, not 7.
    assert_eq!(
        instant(&e, "count_over_time(vector(1)[1m:10s])", T0 + 10 * M)[0].1,
        6.0
    );
}

#[test]
fn lookback_delta_comes_from_the_config() {
    let f = fixture();
    add(&f, "x", &[], vec![(T0, 1.0)]);
    let e = engine_with(&f, |c| {
        c.lookback_delta = base::units::Duration(Duration::from_secs(60))
    });
    assert_eq!(instant(&e, "x", T0 + 59 * S)[0].1, 1.0);
    assert!(instant(&e, "x", T0 + 2 * M).is_empty());
}

#[test]
fn non_stale_nan_is_a_value() {
    let f = fixture();
    add(
        &f,
        "n",
        &[],
        vec![
            (T0 + S, f64::NAN),
            (T0 + 2 * S, 1.0),
            (T0 + 3 * S, f64::NAN),
        ],
    );
    add(&f, "all_nan", &[], vec![(T0 + S, f64::NAN)]);
    let e = engine(&f);
    assert!(instant(&e, "n", T0 + 4 * S)[0].1.is_nan());
    assert_eq!(instant(&e, "max_over_time(n[1m])", T0 + 4 * S)[0].1, 1.0);
    assert_eq!(instant(&e, "min_over_time(n[1m])", T0 + 4 * S)[0].1, 1.0);
    assert_eq!(instant(&e, "count_over_time(n[1m])", T0 + 4 * S)[0].1, 3.0);
    assert!(instant(&e, "sum_over_time(n[1m])", T0 + 4 * S)[0]
        .1
        .is_nan());
    assert!(instant(&e, "max_over_time(all_nan[1m])", T0 + 4 * S)[0]
        .1
        .is_nan());
    // Sliding windows over a range query see the same.
    let out = e
        .range(
            "max_over_time(n[2s])",
            T0 + S,
            T0 + 5 * S,
            S,
            &QueryOptions::default(),
        )
        .unwrap();
    let QueryValue::Matrix(m) = out.value else {
        panic!()
    };
    let v: Vec<f64> = m[0].1.iter().map(|p| p.1).collect();
    // (−1, 1]: NaN; (0, 2]: NaN, 1; (1, 3]: 1, NaN; (2, 4]: NaN; (3, 5]: none.
    assert!(
        v[0].is_nan() && v[1] == 1.0 && v[2] == 1.0 && v[3].is_nan() && v.len() == 4,
        "{v:?}"
    );
}

#[test]
fn rollup_path_equals_raw_path() {
    let f = fixture();
    // 3 series, one sample every 7 s with an irregular value, over 6 h.
    for dev in ["a", "b", "c"] {
        let samples: Vec<(i64, f64)> = (0..3086)
            .map(|i| {
                (
                    T0 + 500 + i * 7 * S,
                    ((i * 37 + dev.len() as i64 * 11) % 101) as f64 / 4.0,
                )
            })
            .collect();
        add(&f, "r", &[("dev", dev)], samples);
    }
    let e = engine(&f);
    let check = |e: &Engine, label: &str| {
        for q in [
            "avg_over_time(r[1h])",
            "min_over_time(r[1h])",
            "max_over_time(r[2h])",
            "sum_over_time(r[1h])",
            "count_over_time(r[3h])",
            "last_over_time(r[1h])",
            "present_over_time(r[1h])",
            "max_over_time(r[1h] offset 1h)",
        ] {
            for (start, step) in [
                (T0 + 2 * 3_600_000, 3_600_000),
                (T0 + 3 * 3_600_000, 2 * 3_600_000),
            ] {
                let end = T0 + 6 * 3_600_000;
                let a = e
                    .range(q, start, end, step, &QueryOptions::default())
                    .unwrap();
                let b = e
                    .range(
                        q,
                        start,
                        end,
                        step,
                        &QueryOptions {
                            no_rollups: true,
                            ..Default::default()
                        },
                    )
                    .unwrap();
                assert!(
                    a.stats.buckets_read > 0,
                    "{q} step {step}: rollups not used ({label})"
                );
                assert_eq!(b.stats.buckets_read, 0);
                let (QueryValue::Matrix(a), QueryValue::Matrix(b)) = (a.value, b.value) else {
                    panic!()
                };
                assert_eq!(a.len(), b.len(), "{q}");
                for (x, y) in a.iter().zip(&b) {
                    assert_eq!(x.0, y.0, "{q}");
                    assert_eq!(x.1.len(), y.1.len(), "{q} {}", x.0);
                    for (p, r) in x.1.iter().zip(&y.1) {
                        assert_eq!(p.0, r.0);
                        assert!(
                            (p.1 - r.1).abs() <= 1e-9 * p.1.abs().max(1.0),
                            "{q} ({label}) at {}: {} vs {}",
                            p.0,
                            p.1,
                            r.1
                        );
                    }
                }
            }
        }
    };
    check(&e, "head");
    f.storage.checkpoint().unwrap();
    check(&e, "blocks");
    // Not used: 1 min buckets while raw samples exist, an unaligned start,
    // rate, an instant query.
    let out = e
        .range(
            "avg_over_time(r[5m])",
            T0 + 60 * M,
            T0 + 2 * 3_600_000,
            M,
            &QueryOptions::default(),
        )
        .unwrap();
    assert_eq!(out.stats.buckets_read, 0);
    let out = e
        .range(
            "avg_over_time(r[1h])",
            T0 + 60 * M,
            T0 + 2 * 3_600_000,
            M,
            &QueryOptions::default(),
        )
        .unwrap();
    assert_eq!(out.stats.buckets_read, 0);
    let out = e
        .range(
            "avg_over_time(r[5m])",
            T0 + 60 * M + 7 * S,
            T0 + 2 * 3_600_000,
            M,
            &QueryOptions::default(),
        )
        .unwrap();
    assert_eq!(out.stats.buckets_read, 0);
    let out = e
        .range(
            "rate(r[5m])",
            T0 + 60 * M,
            T0 + 2 * 3_600_000,
            M,
            &QueryOptions::default(),
        )
        .unwrap();
    assert_eq!(out.stats.buckets_read, 0);
}

#[test]
fn instant_extremes_over_hours_equal_the_raw_path() {
    let f = fixture();
    // A sample every 9 s over 7 h: rising (a, c) or falling (b), so the
    // extremes lie in the partial hours at the windows' edges; ties,
    // negative values, a staleness marker and a (non-stale) NaN.
    for (dev, shift) in [("a", 0i64), ("b", 5), ("c", 40)] {
        let trend = if dev == "b" { -1.0 } else { 1.0 };
        let samples: Vec<(i64, f64)> = (0..2800)
            .map(|i| {
                let t = T0 + 300 + i * 9 * S;
                let v = match (i + shift) % 997 {
                    13 => stale(),
                    501 => f64::NAN,
                    _ => trend * (i / 4) as f64 + ((i * 53 + shift * 7) % 5) as f64 - 90.0,
                };
                (t, v)
            })
            .collect();
        add(&f, "x", &[("dev", dev)], samples);
    }
    // Nothing but NaN in the middle hours: the raw path answers NaN.
    let nan_only: Vec<(i64, f64)> = (0..400)
        .map(|i| (T0 + 2 * 3_600_000 + 7 * S + i * 20 * S, f64::NAN))
        .collect();
    add(&f, "x", &[("dev", "nan")], nan_only);
    // Equal values of either sign: the first in time wins.
    let zeros: Vec<(i64, f64)> = (0..2800)
        .map(|i| (T0 + 300 + i * 9 * S, if i % 3 == 0 { -0.0 } else { 0.0 }))
        .collect();
    add(&f, "x", &[("dev", "zero")], zeros);
    let e = engine(&f);
    let check = |label: &str| {
        for q in [
            "max_over_time(x[4h])",
            "min_over_time(x[4h30m])",
            "max_over_time(x[5h] offset 20m)",
            "min_over_time(x{dev=\"b\"}[6h])",
        ] {
            for t in [
                T0 + 6 * 3_600_000,
                T0 + 6 * 3_600_000 + 13 * S,
                T0 + 7 * 3_600_000 - 1,
            ] {
                let with = e.instant(q, t, &QueryOptions::default()).unwrap();
                let raw = e
                    .instant(
                        q,
                        t,
                        &QueryOptions {
                            no_rollups: true,
                            ..Default::default()
                        },
                    )
                    .unwrap();
                assert!(
                    with.stats.buckets_read > 0,
                    "{q} at {t}: buckets not used ({label})"
                );
                assert_eq!(raw.stats.buckets_read, 0);
                let (QueryValue::Vector(a), QueryValue::Vector(b)) = (with.value, raw.value) else {
                    panic!()
                };
                assert_eq!(a.len(), b.len(), "{q} at {t} ({label})");
                assert!(
                    a.iter().any(|s| s.2.is_nan()) || q.contains("dev=\"b\""),
                    "{q} at {t}: the NaN-only series"
                );
                for (x, y) in a.iter().zip(&b) {
                    assert_eq!(
                        (&x.0, x.2.to_bits()),
                        (&y.0, y.2.to_bits()),
                        "{q} at {t} ({label})"
                    );
                }
            }
        }
    };
    check("head");
    f.storage.checkpoint().unwrap();
    f.storage.compact().unwrap();
    check("blocks");
    // A late sample into an hour whose rollups were already stored.
    add(
        &f,
        "x",
        &[("dev", "a")],
        vec![(T0 + 3 * 3_600_000 + 4 * S, 1e6)],
    );
    check("late write");
    assert_eq!(
        instant(&e, "max_over_time(x{dev=\"a\"}[5h])", T0 + 6 * 3_600_000),
        vec![("{dev=\"a\"}".to_string(), 1e6)]
    );
    // Fewer than three whole hours: raw samples only.
    let out = e
        .instant(
            "max_over_time(x[2h])",
            T0 + 6 * 3_600_000 + 13 * S,
            &QueryOptions::default(),
        )
        .unwrap();
    assert_eq!(out.stats.buckets_read, 0);
}

#[test]
fn rollups_answer_where_raw_samples_expired() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let c: Arc<dyn Clock> = clock.clone();
    let cfg = StorageConfig {
        retention: config::Duration::from_secs(4 * 3600),
        ..Default::default()
    };
    let storage = Storage::open(&cfg, dir.path(), c).unwrap().0;
    let mut l = Labels::from_pairs([("dev", "a")]);
    l.set("__name__", "old");
    let samples: Vec<(i64, f64)> = (0..12 * 60).map(|i| (T0 + i * M, i as f64)).collect();
    storage.append(&[SeriesSamples::new(l, samples)]).unwrap();
    storage.checkpoint().unwrap();
    clock.set(T0 + 12 * 3_600_000);
    storage.compact().unwrap();
    storage.enforce_retention().unwrap();
    let e = Engine::new(storage.clone(), &QueryConfig::default());
    // Raw samples of the first hours are gone; the 5 min averages come from
    // the 1 min rollups: samples i-4 … i at minute i average to i - 2.
    let out = e
        .range(
            "avg_over_time(old[5m])",
            T0 + 60 * M,
            T0 + 120 * M,
            5 * M,
            &QueryOptions::default(),
        )
        .unwrap();
    assert!(out.stats.buckets_read > 0);
    let QueryValue::Matrix(m) = out.value else {
        panic!()
    };
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].1.len(), 13);
    for (t, v) in &m[0].1 {
        assert_eq!(*v, ((t - T0) / M - 2) as f64);
    }
    // The raw path has nothing there any more.
    let out = e
        .range(
            "avg_over_time(old[5m])",
            T0 + 60 * M,
            T0 + 120 * M,
            5 * M,
            &QueryOptions {
                no_rollups: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(matches!(out.value, QueryValue::Matrix(ref m) if m.is_empty()));
}

#[test]
fn limits_give_clear_errors() {
    let f = fixture();
    for dev in 0..20 {
        let d = format!("d{dev}");
        add(
            &f,
            "l",
            &[("dev", &d)],
            (0..600).map(|i| (T0 + i * 10 * S, i as f64)).collect(),
        );
    }
    let e = engine_with(&f, |c| c.max_samples = 1000);
    let err = e
        .range(
            "sum(rate(l[5m]))",
            T0,
            T0 + 3_600_000,
            M,
            &QueryOptions::default(),
        )
        .unwrap_err();
    assert!(
        matches!(err, QueryError::Execution(ref m) if m.contains("too many samples")),
        "{err}"
    );
    let e = engine_with(&f, |c| c.max_series = 5);
    let err = e
        .instant("l", T0 + M, &QueryOptions::default())
        .unwrap_err();
    assert!(
        matches!(err, QueryError::Execution(ref m) if m.contains("query.max_series")),
        "{err}"
    );
    let e = engine(&f);
    let err = e
        .range("l", T0, T0 + 365 * 86_400_000, 1, &QueryOptions::default())
        .unwrap_err();
    assert!(
        matches!(err, QueryError::BadData(ref m) if m.contains("11,000 points")),
        "{err}"
    );
    // A subquery with absurdly many steps is refused before it allocates.
    let err = e
        .instant("max_over_time(l[1y:1ms])", T0 + M, &QueryOptions::default())
        .unwrap_err();
    assert!(matches!(err, QueryError::Execution(_)), "{err}");
    let e = engine(&f);
    let err = e
        .range(
            "sum(rate(l[5m]))",
            T0,
            T0 + 3_600_000,
            1000,
            &QueryOptions {
                timeout: Some(Duration::from_nanos(1)),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, QueryError::Timeout(_)), "{err}");
}

#[test]
fn hostile_queries_are_refused_quickly() {
    let deep = format!("{}x{}", "(".repeat(5000), ")".repeat(5000));
    assert!(matches!(parse(&deep), Err(QueryError::BadData(_))));
    let chain = vec!["x"; 5000].join(" + ");
    let t = std::time::Instant::now();
    assert!(matches!(parse(&chain), Err(QueryError::BadData(_))));
    assert!(t.elapsed() < Duration::from_secs(1));
    let neg = format!("{}x", "-".repeat(2000));
    assert!(parse(&neg).is_err());
    // Nesting through functions without parentheses in the text.
    let nested = format!("{}x{}", "abs(".repeat(300), ")".repeat(300));
    assert!(parse(&nested).is_err());
    // Reasonable queries pass.
    assert!(parse(&vec!["x"; 100].join(" + ")).is_ok());
    assert!(
        parse("sum by (a) (rate(x{a=~\"(b|c)+\"}[5m])) / on(a) group_left sum(y) by (a)").is_ok()
    );
    // Operators inside strings and braces do not count.
    let long_regex = format!("x{{a=~\"{}\"}}", vec!["v-1"; 3000].join("|"));
    assert!(parse(&long_regex).is_ok());
}

#[test]
fn topk_breaks_ties_like_prometheus() {
    let f = fixture();
    for (d, v) in [("a", 1.0), ("b", 1.0), ("c", 2.0), ("d", 1.0)] {
        add(&f, "t", &[("d", d)], vec![(T0, v)]);
    }
    let e = engine(&f);
    // Heap of 2: a, b; c evicts the root (a); d ties with the root (b) and
    // does not replace it.
    let got: Vec<String> = instant(&e, "topk(2, t)", T0 + S)
        .into_iter()
        .map(|x| x.0)
        .collect();
    assert_eq!(
        got,
        vec!["t{d=\"b\"}".to_string(), "t{d=\"c\"}".to_string()]
    );
}

#[test]
fn errors_name_the_problem() {
    let f = fixture();
    add(&f, "a", &[("x", "1")], vec![(T0, 1.0)]);
    add(&f, "b", &[("x", "1")], vec![(T0, 2.0)]);
    let e = engine(&f);
    let err = e.instant(
        "rate({__name__=~\"a|b\"}[5m])",
        T0 + S,
        &QueryOptions::default(),
    );
    // Neither has two samples: no output, no error.
    assert!(err.is_ok());
    let err = e
        .instant("abs({__name__=~\"a|b\"})", T0 + S, &QueryOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("same labelset"), "{err}");
    let err = e
        .instant(
            "label_replace(a, \"1bad\", \"\", \"x\", \".*\")",
            T0 + S,
            &QueryOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, QueryError::BadData(_)), "{err}");
    let err = e
        .instant(
            "label_replace(a, \"y\", \"\", \"x\", \"(\")",
            T0 + S,
            &QueryOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, QueryError::BadData(_)), "{err}");
    let err = e
        .range("a[5m]", T0, T0 + M, S, &QueryOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("range vector"), "{err}");
    let err = e
        .instant("histogram_avg(a)", T0 + S, &QueryOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("not supported"), "{err}");
}

#[test]
fn thresholds_are_found_on_either_side() {
    let t = |q: &str| threshold(&parse(q).unwrap());
    assert_eq!(
        t("env_temp{device=\"freezer\"} > -12"),
        Some(("env_temp{device=\"freezer\"}".into(), ">".into(), -12.0))
    );
    assert_eq!(
        t("(80 <= avg by (device) (rate(x[5m])))"),
        Some(("avg by (device) (rate(x[5m]))".into(), ">=".into(), 80.0))
    );
    assert_eq!(t("up == 0"), Some(("up".into(), "==".into(), 0.0)));
    assert_eq!(t("x > bool 3"), None);
    assert_eq!(t("x > y"), None);
    assert_eq!(t("absent(x)"), None);
}
