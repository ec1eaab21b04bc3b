//! Values the evaluator passes between nodes, and the results it hands back.
//!
//! A node is evaluated once over a whole grid of steps (an instant query is a
//! grid of one step), so an instant vector is a list of series, each with the
//! steps at which it has a value; a range vector (the argument of `rate` and
//! friends) keeps its raw samples and is windowed per step by the function.

use std::sync::Arc;

use base::labels::{Label, METRIC_NAME};
use store::Labels;

/// Prometheus' staleness marker: a NaN with this exact bit pattern ends a
/// series for the lookback of instant selectors and is dropped from ranges.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// The evaluation times of a node: `start`, `start + step`, … `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub start: i64,
    pub end: i64,
    /// Always > 0 (an instant query uses 1).
    pub step: i64,
}

impl Grid {
    /// Steps in the grid (at least one).
    pub fn len(&self) -> usize {
        ((self.end - self.start) / self.step + 1) as usize
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn time(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }

    pub fn times(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.len()).map(|i| self.time(i))
    }
}

/// One series of an instant vector over a grid: the step indexes at which it
/// has a value, ascending, and those values.
#[derive(Clone, Debug)]
pub struct Series {
    pub labels: Arc<Labels>,
    pub steps: Vec<u32>,
    pub values: Vec<f64>,
}

impl Series {
    pub fn new(labels: Arc<Labels>) -> Series {
        Series {
            labels,
            steps: Vec::new(),
            values: Vec::new(),
        }
    }

    pub fn with_capacity(labels: Arc<Labels>, n: usize) -> Series {
        Series {
            labels,
            steps: Vec::with_capacity(n),
            values: Vec::with_capacity(n),
        }
    }

    pub fn push(&mut self, step: u32, v: f64) {
        self.steps.push(step);
        self.values.push(v);
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Raw samples of one series feeding a range function, stale markers removed.
#[derive(Clone, Debug)]
pub struct RangeSeries {
    pub labels: Arc<Labels>,
    pub ts: Vec<i64>,
    pub values: Vec<f64>,
}

/// A range vector argument: samples plus, per step of the grid, the end of
/// the window `(ref - range, ref]` (the evaluation time moved by offset or @).
#[derive(Debug)]
pub struct RangeArg {
    pub series: Vec<RangeSeries>,
    pub range_ms: i64,
    /// Window end per step, non-decreasing.
    pub refs: Vec<i64>,
}

impl RangeArg {
    pub fn points(&self) -> usize {
        self.series.iter().map(|s| s.ts.len()).sum()
    }
}

/// What a node evaluates to.
#[derive(Debug)]
pub enum Val {
    /// One value per step.
    Scalar(Vec<f64>),
    Vector(Vec<Series>),
    Range(RangeArg),
    String(String),
}

impl Val {
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::Vector(_) => "vector",
            Val::Range(_) => "matrix",
            Val::String(_) => "string",
        }
    }

    /// Points held, for the sample budget.
    pub fn points(&self) -> usize {
        match self {
            Val::Scalar(v) => v.len(),
            Val::Vector(s) => s.iter().map(Series::len).sum(),
            Val::Range(r) => r.points(),
            Val::String(_) => 0,
        }
    }
}

/// (time, value) pairs of one series.
pub type Points = Vec<(i64, f64)>;

/// A query's answer, in the shapes of the Prometheus HTTP API.
#[derive(Debug)]
pub enum QueryValue {
    /// `[t, v]`
    Scalar(i64, f64),
    String(i64, String),
    /// Instant vector: labels, t, v — in evaluation order.
    Vector(Vec<(Arc<Labels>, i64, f64)>),
    /// Range result or range vector: labels, points; sorted by labels for
    /// range queries.
    Matrix(Vec<(Arc<Labels>, Points)>),
}

impl QueryValue {
    pub fn result_type(&self) -> &'static str {
        match self {
            QueryValue::Scalar(..) => "scalar",
            QueryValue::String(..) => "string",
            QueryValue::Vector(_) => "vector",
            QueryValue::Matrix(_) => "matrix",
        }
    }
}

/// Labels without the metric name, sharing the original when it has none.
pub fn drop_name(l: &Arc<Labels>) -> Arc<Labels> {
    if l.get(METRIC_NAME).is_none() {
        l.clone()
    } else {
        Arc::new(l.without(METRIC_NAME))
    }
}

/// Builds labels from a list already known to be sorted by name and free of
/// empty values.
pub fn labels_from_sorted(v: Vec<Label>) -> Labels {
    Labels::from_pairs(v.into_iter().map(|l| (l.name, l.value)))
}

/// Formats a float like Go's `strconv.FormatFloat(f, 'f', -1, 64)`: the
/// shortest decimal that round-trips, never with an exponent. Prometheus
/// uses it for `count_values` labels.
pub fn format_go_f(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        // Rust's Display is the shortest round-trip form without exponent.
        let s = format!("{v}");
        if s == "-0" {
            "-0".into()
        } else {
            s
        }
    }
}

/// Appends the decimal digits of `n`.
pub fn write_u64(mut n: u64, out: &mut String) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        out.push(b as char);
    }
}

fn write_i64(n: i64, out: &mut String) {
    if n < 0 {
        out.push('-');
    }
    write_u64(n.unsigned_abs(), out);
}

const POW10: [f64; 7] = [1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0];

/// The shortest decimal of `v` with at most six fraction digits, if it has
/// one: sensor values almost always do, and this is several times faster
/// than the general shortest-digits algorithm. For |v| < 1e9 only one
/// decimal with k ≤ 6 fraction digits can round-trip, so the smallest such
/// k gives exactly the digits the general algorithm would.
fn write_short_decimal(v: f64, out: &mut String) -> bool {
    let a = v.abs();
    if a.is_nan() || a >= 1e9 {
        return false;
    }
    for (k, &p) in POW10.iter().enumerate() {
        // a * p < 1e15: the truncating conversion rounds half up exactly
        // enough (the round trip below is the real test).
        let r = (a * p + 0.5) as u64;
        if r as f64 / p == a {
            if v.is_sign_negative() {
                out.push('-');
            }
            let pk = 10u64.pow(k as u32);
            write_u64(r / pk, out);
            if k > 0 {
                out.push('.');
                let frac = r % pk;
                // Leading zeros of the fraction.
                let mut d = pk / 10;
                while d > 1 && frac < d {
                    out.push('0');
                    d /= 10;
                }
                write_u64(frac, out);
            }
            return true;
        }
    }
    false
}

/// Formats a sample value as the Prometheus API does: Go's `'f'` format,
/// switching to `'e'` below 1e-6 and from 1e21 on, `NaN`, `+Inf`, `-Inf`.
pub fn format_api_value(v: f64, out: &mut String) {
    use std::fmt::Write;
    if v.is_nan() {
        out.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    let a = v.abs();
    if a != 0.0 && !(1e-6..1e21).contains(&a) {
        // Rust: "1.5e-7"; Go: "1.5e-07" (sign always, two digits at least).
        let s = format!("{v:e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        let _ = write!(out, "{mant}e{sign}");
        if digits.len() < 2 {
            out.push('0');
        }
        out.push_str(digits);
    } else if !write_short_decimal(v, out) {
        let _ = write!(out, "{v}");
    }
}

/// Formats a millisecond timestamp as API seconds (`1435781451.781`).
pub fn format_api_time(t: i64, out: &mut String) {
    let secs = t.div_euclid(1000);
    let ms = t.rem_euclid(1000);
    if ms == 0 {
        write_i64(secs, out);
    } else if secs < 0 {
        // Go prints float64(t)/1000 with the shortest digits.
        use std::fmt::Write;
        let _ = write!(out, "{}", t as f64 / 1000.0);
    } else {
        write_i64(secs, out);
        out.push('.');
        let digits = [(ms / 100) as u8, (ms / 10 % 10) as u8, (ms % 10) as u8];
        let n = if digits[2] != 0 {
            3
        } else if digits[1] != 0 {
            2
        } else {
            1
        };
        for d in &digits[..n] {
            out.push((b'0' + d) as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(v: f64) -> String {
        let mut s = String::new();
        format_api_value(v, &mut s);
        s
    }

    #[test]
    fn values_format_like_prometheus() {
        assert_eq!(api(1.0), "1");
        assert_eq!(api(0.1), "0.1");
        assert_eq!(api(-2.5), "-2.5");
        assert_eq!(api(1e21), "1e+21");
        assert_eq!(api(1.5e-7), "1.5e-07");
        assert_eq!(api(123456789012.0), "123456789012");
        assert_eq!(api(f64::NAN), "NaN");
        assert_eq!(api(f64::NEG_INFINITY), "-Inf");
        assert_eq!(api(0.0), "0");
        assert_eq!(format_go_f(21.5), "21.5");
        assert_eq!(format_go_f(1e22), "10000000000000000000000");
        let mut t = String::new();
        format_api_time(1_435_781_451_781, &mut t);
        assert_eq!(t, "1435781451.781");
        t.clear();
        format_api_time(1_435_781_451_000, &mut t);
        assert_eq!(t, "1435781451");
        t.clear();
        format_api_time(1_435_781_451_100, &mut t);
        assert_eq!(t, "1435781451.1");
        t.clear();
        format_api_time(1_435_781_451_010, &mut t);
        assert_eq!(t, "1435781451.01");
    }

    #[test]
    fn the_fast_path_prints_what_the_general_one_does() {
        let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut cases: Vec<f64> = vec![
            0.0,
            -0.0,
            0.1,
            0.3,
            26.52,
            -3.25,
            1e-6,
            999_999_999.5,
            0.000_001_5,
            123.456_789,
        ];
        for _ in 0..200_000 {
            let r = next();
            let digits = (r % 7) as i32;
            let int = (next() % 2_000_000_000) as f64 - 1e9;
            cases.push((int / 10f64.powi(digits)).clamp(-1e9, 1e9));
            cases.push(f64::from_bits(next() >> 2));
            cases.push((next() % 100_000) as f64 * 0.01);
        }
        for v in cases {
            if !v.is_finite() || (v != 0.0 && !(1e-6..1e21).contains(&v.abs())) {
                continue;
            }
            let mut fast = String::new();
            format_api_value(v, &mut fast);
            assert_eq!(fast, format!("{v}"), "{v:e}");
        }
    }
}
