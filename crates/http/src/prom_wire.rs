//! The Prometheus HTTP API's JSON, byte for byte as Prometheus writes it:
//! the success envelope in its key order, query results (sample values as
//! strings in Go's formatting, times as seconds), and series lists.
//! Results are serialized straight into the response body: no sample
//! allocates.

use std::fmt::{self, Write as _};

use serde::ser::{Error as _, SerializeStruct, SerializeTuple};
use serde::{Serialize, Serializer};

use query::promql::QueryValue;
use store::Labels;

/// `{"status":"success","data":…}`, in Prometheus' order.
pub struct PrometheusSuccess<T>(pub T);

impl<T: Serialize> Serialize for PrometheusSuccess<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut envelope = s.serialize_struct("PrometheusSuccess", 2)?;
        envelope.serialize_field("status", "success")?;
        envelope.serialize_field("data", &self.0)?;
        envelope.end()
    }
}

/// The whole answer to `/api/v1/query` and `/api/v1/query_range`.
pub fn encode_query_result(v: &QueryValue) -> Result<Vec<u8>, serde_json::Error> {
    let size = match v {
        QueryValue::Vector(s) => s.len() * 128,
        QueryValue::Matrix(s) => s.iter().map(|(_, p)| 96 + p.len() * 28).sum(),
        _ => 0,
    };
    let mut out = Vec::with_capacity(256 + size);
    serde_json::to_writer(&mut out, &PrometheusSuccess(QueryData(v)))?;
    Ok(out)
}

/// `{"resultType":…,"result":…}`.
pub struct QueryData<'a>(pub &'a QueryValue);

impl Serialize for QueryData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut data = s.serialize_struct("QueryData", 2)?;
        data.serialize_field("resultType", self.0.result_type())?;
        match self.0 {
            QueryValue::Scalar(t, x) => data.serialize_field("result", &Point(*t, *x))?,
            QueryValue::String(t, text) => {
                data.serialize_field("result", &(ApiTime(*t), text.as_str()))?
            }
            QueryValue::Vector(samples) => data.serialize_field("result", &Vector(samples))?,
            QueryValue::Matrix(series) => data.serialize_field("result", &Matrix(series))?,
        }
        data.end()
    }
}

type Samples = [(std::sync::Arc<Labels>, i64, f64)];
type SeriesPoints = [(std::sync::Arc<Labels>, query::promql::value::Points)];

/// `[{"metric":{…},"value":[t,"v"]},…]`.
struct Vector<'a>(&'a Samples);

impl Serialize for Vector<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(labels, t, x)| Sample {
            metric: labels,
            value: Point(*t, *x),
        }))
    }
}

#[derive(Serialize)]
struct Sample<'a> {
    metric: &'a Labels,
    value: Point,
}

/// `[{"metric":{…},"values":[[t,"v"],…]},…]`.
struct Matrix<'a>(&'a SeriesPoints);

impl Serialize for Matrix<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(labels, points)| Series {
            metric: labels,
            values: Points(points),
        }))
    }
}

#[derive(Serialize)]
struct Series<'a> {
    metric: &'a Labels,
    values: Points<'a>,
}

struct Points<'a>(&'a [(i64, f64)]);

impl Serialize for Points<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|&(t, x)| Point(t, x)))
    }
}

/// `[t,"v"]`.
struct Point(i64, f64);

impl Serialize for Point {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut pair = s.serialize_tuple(2)?;
        pair.serialize_element(&ApiTime(self.0))?;
        pair.serialize_element(&ApiValue(self.1))?;
        pair.end()
    }
}

/// A millisecond timestamp as API seconds: `1435781451.781`, `1435781451`.
/// Whole seconds are integers; the others are the shortest decimal of the
/// float, which for times with at most 15 digits is their exact value.
pub struct ApiTime(pub i64);

impl Serialize for ApiTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.0;
        if t.rem_euclid(1000) == 0 {
            s.serialize_i64(t.div_euclid(1000))
        } else {
            s.serialize_f64(t as f64 / 1000.0)
        }
    }
}

/// A sample value as the Prometheus API writes it, as a JSON string: Go's
/// `'f'` format, switching to `'e'` below 1e-6 and from 1e21 on; `NaN`,
/// `+Inf`, `-Inf`.
pub struct ApiValue(pub f64);

impl Serialize for ApiValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let digits = self.digits().map_err(S::Error::custom)?;
        s.serialize_str(digits.as_str())
    }
}

impl ApiValue {
    /// The text, on the stack: every f64 fits, so `Err` is never seen.
    fn digits(&self) -> Result<Digits, fmt::Error> {
        let v = self.0;
        let mut out = Digits::default();
        if v.is_nan() {
            out.write_str("NaN")?;
        } else if v.is_infinite() {
            out.write_str(if v > 0.0 { "+Inf" } else { "-Inf" })?;
        } else if v != 0.0 && !(1e-6..1e21).contains(&v.abs()) {
            write_go_exponent(v, &mut out)?;
        } else if !write_short_decimal(v, &mut out) {
            write!(out, "{v}")?;
        }
        Ok(out)
    }
}

/// Rust writes `1.5e-7`, Go `1.5e-07`: a sign always, two digits at least.
fn write_go_exponent(v: f64, out: &mut Digits) -> fmt::Result {
    let mut rust = Digits::default();
    write!(rust, "{v:e}")?;
    let (mantissa, exponent) = rust
        .as_str()
        .split_once('e')
        .unwrap_or((rust.as_str(), "0"));
    let (sign, digits) = match exponent.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exponent),
    };
    out.write_str(mantissa)?;
    out.write_char('e')?;
    out.write_char(sign)?;
    if digits.len() < 2 {
        out.write_char('0')?;
    }
    out.write_str(digits)
}

const POW10: [f64; 7] = [1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0];

/// The shortest decimal of `v` with at most six fraction digits, if it has
/// one: sensor values almost always do, and this is several times faster
/// than the general shortest-digits algorithm. For |v| < 1e9 only one
/// decimal with k ≤ 6 fraction digits can round-trip, so the smallest such
/// k gives exactly the digits the general algorithm would.
fn write_short_decimal(v: f64, out: &mut Digits) -> bool {
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
                out.push(b'-');
            }
            let pk = 10u64.pow(k as u32);
            out.push_u64(r / pk);
            if k > 0 {
                out.push(b'.');
                let frac = r % pk;
                // Leading zeros of the fraction.
                let mut d = pk / 10;
                while d > 1 && frac < d {
                    out.push(b'0');
                    d /= 10;
                }
                out.push_u64(frac);
            }
            return true;
        }
    }
    false
}

/// A number's text on the stack. The longest f64, `-0.0000012345678901234567`
/// or `-1.2345678901234567e-308`, takes 25 bytes.
struct Digits {
    buf: [u8; 40],
    len: usize,
}

impl Default for Digits {
    fn default() -> Digits {
        Digits {
            buf: [0; 40],
            len: 0,
        }
    }
}

impl Digits {
    fn as_str(&self) -> &str {
        // Only ASCII is ever written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }

    fn push(&mut self, b: u8) {
        if self.len < self.buf.len() {
            self.buf[self.len] = b;
            self.len += 1;
        }
    }

    fn push_u64(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &d in &digits[i..] {
            self.push(d);
        }
    }
}

impl fmt::Write for Digits {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn api(v: f64) -> String {
        ApiValue(v).digits().unwrap().as_str().to_string()
    }

    fn time(t: i64) -> String {
        serde_json::to_string(&ApiTime(t)).unwrap()
    }

    #[test]
    fn values_format_like_prometheus() {
        assert_eq!(api(1.0), "1");
        assert_eq!(api(0.1), "0.1");
        assert_eq!(api(-2.5), "-2.5");
        assert_eq!(api(1e21), "1e+21");
        assert_eq!(api(1.5e-7), "1.5e-07");
        assert_eq!(api(-1.25e-300), "-1.25e-300");
        assert_eq!(api(123456789012.0), "123456789012");
        assert_eq!(api(f64::NAN), "NaN");
        assert_eq!(api(f64::NEG_INFINITY), "-Inf");
        assert_eq!(api(0.0), "0");
        assert_eq!(api(-0.0), "-0");
        assert_eq!(serde_json::to_string(&ApiValue(0.25)).unwrap(), "\"0.25\"");
    }

    #[test]
    fn times_are_seconds() {
        assert_eq!(time(1_435_781_451_781), "1435781451.781");
        assert_eq!(time(1_435_781_451_000), "1435781451");
        assert_eq!(time(1_435_781_451_100), "1435781451.1");
        assert_eq!(time(1_435_781_451_010), "1435781451.01");
        assert_eq!(time(-1), "-0.001");
        assert_eq!(time(-1500), "-1.5");
        assert_eq!(time(-2000), "-2");
    }

    /// Go prints a time as its exact decimal (float64(t)/1000 for negative
    /// times): the shortest decimal of the float must be just that.
    #[test]
    fn times_print_their_exact_decimal() {
        let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..200_000 {
            // Up to the year 30 000, both sides of the epoch.
            let t = (next() % 1_000_000_000_000_000) as i64 - 100_000_000_000_000;
            let want = if t >= 0 {
                let exact = format!("{}.{:03}", t / 1000, t % 1000);
                exact
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string()
            } else if t % 1000 == 0 {
                (t / 1000).to_string()
            } else {
                format!("{}", t as f64 / 1000.0)
            };
            assert_eq!(time(t), want, "{t}");
        }
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
            assert_eq!(api(v), format!("{v}"), "{v:e}");
        }
    }

    #[test]
    fn results_have_prometheus_shapes() {
        let labels = Arc::new(Labels::from_pairs([("__name__", "up"), ("job", "a\"b")]));
        let encode = |v: QueryValue| String::from_utf8(encode_query_result(&v).unwrap()).unwrap();
        assert_eq!(
            encode(QueryValue::Vector(vec![(labels.clone(), 1_000, 1.5)])),
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a\"b"},"value":[1,"1.5"]}]}}"#
        );
        assert_eq!(
            encode(QueryValue::Matrix(vec![(
                labels,
                vec![(1_500, f64::NAN), (2_000, 2.0)]
            )])),
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"a\"b"},"values":[[1.5,"NaN"],[2,"2"]]}]}}"#
        );
        assert_eq!(
            encode(QueryValue::Matrix(vec![])),
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#
        );
        assert_eq!(
            encode(QueryValue::Scalar(1_001, -0.5)),
            r#"{"status":"success","data":{"resultType":"scalar","result":[1.001,"-0.5"]}}"#
        );
        assert_eq!(
            encode(QueryValue::String(0, "a\nb".into())),
            r#"{"status":"success","data":{"resultType":"string","result":[0,"a\nb"]}}"#
        );
    }
}
