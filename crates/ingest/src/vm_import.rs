//! VictoriaMetrics' JSON lines, the format of its `/api/v1/import` and
//! `/api/v1/export`, both ways. One series per line:
//! `{"metric":{"__name__":"x","a":"b"},"values":[1,2.5],"timestamps":[1700000000000,1700000010000]}`,
//! timestamps in milliseconds.
//!
//! JSON has no NaN or infinity. VictoriaMetrics exports NaN as `null` and the
//! infinities as the strings `"Infinity"` and `"-Infinity"`, and writes the
//! same here; on import it also accepts the strings `NaN`, `Inf`, `+Inf`,
//! `-Inf` (and their lower-case and `Infinity` spellings), as VictoriaMetrics
//! does and as Prometheus tools write them. Label names are taken as they
//! are: this is a copy of stored series, and storage validates them.

use std::fmt::{self, Write};

use rustc_hash::FxHashMap;
use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::Deserialize;
use thiserror::Error;

use super::MAX_ERRORS;
use base::labels::METRIC_NAME;
use base::{Labels, SeriesSamples};

#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct ImportError {
    /// 1-based.
    pub line: usize,
    /// What is wrong, without the line number.
    pub message: String,
}

impl base::HasKind for ImportError {
    fn kind(&self) -> base::ErrorKind {
        base::ErrorKind::InvalidArgument
    }
}

/// Why a line was refused.
#[derive(Debug, Error)]
enum Refusal {
    #[error("{}", without_line(.0))]
    Json(serde_json::Error),
    #[error("\"metric\" has no {METRIC_NAME:?}")]
    NoMetricName,
    #[error("{values} values but {timestamps} timestamps")]
    LengthMismatch { values: usize, timestamps: usize },
    #[error("\"values\" and \"timestamps\" are empty")]
    NoSamples,
}

/// Serde's message with the column alone: each line is parsed on its own,
/// so serde's "line 1" would mislead.
fn without_line(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let at = format!(" at line {} column {}", e.line(), e.column());
    match msg.strip_suffix(&at) {
        Some(what) => format!("{what} (column {})", e.column()),
        None => msg,
    }
}

#[derive(Debug, Default)]
pub struct ParsedImport {
    /// One per distinct label set, in order of first appearance; a series
    /// split over several lines is joined, samples in input order.
    pub series: Vec<SeriesSamples>,
    /// The first [`MAX_ERRORS`] refused lines; every other line was kept.
    pub errors: Vec<ImportError>,
    /// All refused lines, also those past [`MAX_ERRORS`].
    pub refused: usize,
}

#[derive(Deserialize)]
struct Line {
    metric: Labels,
    values: Vec<Value>,
    timestamps: Vec<i64>,
}

struct Value(f64);

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl Visitor<'_> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"a number, null, "NaN", "Inf", "+Inf", "-Inf", "Infinity" or "-Infinity""#)
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value(v as f64))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value(v as f64))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value(f64::NAN))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        let (negative, name) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let v = match name {
            "Inf" | "inf" | "Infinity" | "infinity" => f64::INFINITY,
            "NaN" | "nan" if s == name => f64::NAN,
            _ => return Err(E::invalid_value(Unexpected::Str(s), &self)),
        };
        Ok(Value(if negative { -v } else { v }))
    }
}

/// Parses a whole body; each bad line is refused alone.
pub fn parse(body: &str) -> ParsedImport {
    let mut out = ParsedImport::default();
    let mut ids: FxHashMap<Labels, usize> = FxHashMap::default();
    for (i, raw) in body.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(Line {
                metric,
                values,
                timestamps,
            }) => {
                let series = &mut out.series;
                let id = *ids.entry(metric).or_insert_with_key(|labels| {
                    series.push(SeriesSamples::new(
                        labels.clone(),
                        Vec::with_capacity(values.len()),
                    ));
                    series.len() - 1
                });
                series[id]
                    .samples
                    .extend(timestamps.into_iter().zip(values.into_iter().map(|v| v.0)));
            }
            Err(why) => {
                out.refused += 1;
                if out.errors.len() < MAX_ERRORS {
                    out.errors.push(ImportError {
                        line: i + 1,
                        message: why.to_string(),
                    });
                }
            }
        }
    }
    out
}

fn parse_line(line: &str) -> Result<Line, Refusal> {
    let l: Line = serde_json::from_str(line).map_err(Refusal::Json)?;
    if l.metric.metric_name().is_none() {
        return Err(Refusal::NoMetricName);
    }
    if l.values.len() != l.timestamps.len() {
        return Err(Refusal::LengthMismatch {
            values: l.values.len(),
            timestamps: l.timestamps.len(),
        });
    }
    if l.values.is_empty() {
        return Err(Refusal::NoSamples);
    }
    Ok(l)
}

/// Appends one series as a line of the export format. Writes nothing for a
/// series without samples, like VictoriaMetrics.
///
/// # Panics
/// If `ts` and `values` differ in length, which is the caller's bug.
pub fn write_line(out: &mut String, labels: &Labels, ts: &[i64], values: &[f64]) {
    assert_eq!(ts.len(), values.len(), "as many timestamps as values");
    if ts.is_empty() {
        return;
    }
    out.push_str("{\"metric\":{");
    // VictoriaMetrics puts the name first; in sorted order labels that start
    // with an upper-case letter would come before it.
    let name = labels.metric_name().map(|n| (METRIC_NAME, n));
    let rest = labels
        .iter()
        .filter(|l| l.name != METRIC_NAME)
        .map(|l| (l.name.as_str(), l.value.as_str()));
    for (i, (n, v)) in name.into_iter().chain(rest).enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(out, n);
        out.push(':');
        push_json_string(out, v);
    }
    out.push_str("},\"values\":[");
    for (i, &v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if v.is_nan() {
            out.push_str("null");
        } else if v.is_infinite() {
            out.push_str(if v > 0.0 {
                "\"Infinity\""
            } else {
                "\"-Infinity\""
            });
        } else {
            push_number(out, v);
        }
    }
    out.push_str("],\"timestamps\":[");
    for (i, t) in ts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{t}");
    }
    out.push_str("]}\n");
}

/// A sample value as text, for formats that are not JSON (CSV): the shortest
/// decimal that reads back to the same value; NaN, `+Inf` and `-Inf` as
/// VictoriaMetrics and Prometheus write them.
pub fn format_value(v: f64) -> String {
    let mut s = String::new();
    if v.is_nan() {
        s.push_str("NaN");
    } else if v.is_infinite() {
        s.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        push_number(&mut s, v);
    }
    s
}

/// Shortest round-trip text of a finite value. `{}` never uses an exponent
/// (1e300 would be 301 digits), so very large and very small values use `e`.
/// Negative zero is written `-0.0`, because JSON readers take `-0` for the
/// integer 0.
fn push_number(out: &mut String, v: f64) {
    let a = v.abs();
    let _ = if a == 0.0 {
        write!(out, "{v:?}")
    } else if (1e-6..1e21).contains(&a) {
        write!(out, "{v}")
    } else {
        write!(out, "{v:e}")
    };
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    let mut from = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[from..i]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escaped);
        }
        from = i + 1;
    }
    out.push_str(&s[from..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn render(p: &ParsedImport) -> Vec<String> {
        p.series
            .iter()
            .flat_map(|s| {
                s.samples
                    .iter()
                    .map(move |(t, v)| format!("{} {v:?} @{t}", s.labels))
            })
            .collect()
    }

    #[test]
    fn parses_what_victoriametrics_exports() {
        let body = concat!(
            r#"{"metric":{"__name__":"up","job":"node","instance":"localhost:9100"},"values":[1,0,1],"timestamps":[1700000000000,1700000010000,1700000020000]}"#,
            "\n",
            r#"{"metric":{"__name__":"rate","host":"h1"},"values":["Infinity",null,"-Infinity",2.5e-7],"timestamps":[1,2,3,4]}"#,
            "\r\n\n",
            r#"{"metric":{"__name__":"t"},"values":["NaN","Inf","+Inf","-Inf","inf","-infinity"],"timestamps":[-1,0,1,2,3,4]}"#,
            "\n",
            r#"{"metric":{"job":"node","__name__":"up","instance":"localhost:9100"},"values":[7],"timestamps":[1700000030000],"extra":{}}"#,
        );
        let p = parse(body);
        assert_eq!(p.errors, vec![]);
        assert_eq!(
            render(&p),
            vec![
                r#"up{instance="localhost:9100",job="node"} 1.0 @1700000000000"#,
                r#"up{instance="localhost:9100",job="node"} 0.0 @1700000010000"#,
                r#"up{instance="localhost:9100",job="node"} 1.0 @1700000020000"#,
                r#"up{instance="localhost:9100",job="node"} 7.0 @1700000030000"#,
                r#"rate{host="h1"} inf @1"#,
                r#"rate{host="h1"} NaN @2"#,
                r#"rate{host="h1"} -inf @3"#,
                r#"rate{host="h1"} 2.5e-7 @4"#,
                "t{} NaN @-1",
                "t{} inf @0",
                "t{} inf @1",
                "t{} -inf @2",
                "t{} inf @3",
                "t{} -inf @4",
            ]
        );
    }

    #[test]
    fn bad_lines_are_refused_alone() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"metric":{"a":"b"},"values":[1],"timestamps":[1]}"#,
                "\"metric\" has no \"__name__\"",
            ),
            (
                r#"{"metric":{"__name__":""},"values":[1],"timestamps":[1]}"#,
                "has no \"__name__\"",
            ),
            (
                r#"{"metric":{"__name__":"x"},"values":[1,2],"timestamps":[1]}"#,
                "2 values but 1 timestamps",
            ),
            (
                r#"{"metric":{"__name__":"x"},"values":[],"timestamps":[]}"#,
                "are empty",
            ),
            (
                r#"{"metric":{"__name__":"x"},"values":["abc"],"timestamps":[1]}"#,
                r#"invalid value: string "abc", expected a number, null"#,
            ),
            (
                r#"{"metric":{"__name__":"x"},"values":["-NaN"],"timestamps":[1]}"#,
                r#"invalid value: string "-NaN""#,
            ),
            (
                r#"{"metric":{"__name__":"x"},"values":[true],"timestamps":[1]}"#,
                "invalid type: boolean `true`",
            ),
            (
                r#"{"metric":{"__name__":"x"},"values":[1],"timestamps":[1.5]}"#,
                "invalid type: floating point `1.5`, expected i64",
            ),
            (
                r#"{"metric":{"__name__":"x"},"values":[1],"timestamps":[99999999999999999999]}"#,
                "expected i64",
            ),
            (
                r#"{"metric":{"__name__":1},"values":[1],"timestamps":[1]}"#,
                "expected a string (column 23)",
            ),
            (
                r#"{"values":[1],"timestamps":[1]}"#,
                "missing field `metric`",
            ),
            (
                r#"{"metric":{"__name__":"x"},"timestamps":[1]}"#,
                "missing field `values`",
            ),
            (
                r#"{"metric":{"__name__":"x"},"values":[1],"timestamps":[1]"#,
                "EOF while parsing an object (column 56)",
            ),
            // serde also reads a struct from an array; the first item must be "metric".
            (
                r#"[1]"#,
                "invalid type: integer `1`, expected a map (column 2)",
            ),
            (r#"not json"#, "expected ident (column 2)"),
        ];
        let mut body = String::new();
        for (line, _) in cases {
            body.push_str(line);
            body.push_str(
                "\n{\"metric\":{\"__name__\":\"ok\"},\"values\":[1],\"timestamps\":[1]}\n",
            );
        }
        let p = parse(&body);
        assert_eq!(p.errors.len(), cases.len(), "{:#?}", p.errors);
        assert_eq!(p.refused, cases.len());
        for (i, (e, (line, want))) in p.errors.iter().zip(cases).enumerate() {
            assert_eq!(e.line, 2 * i + 1, "{line}");
            assert!(
                e.message.contains(want),
                "{line}: {:?} lacks {want:?}",
                e.message
            );
            assert!(!e.message.contains("line 1"), "{:?}", e.message);
        }
        assert_eq!(render(&p), vec!["ok{} 1.0 @1"; cases.len()]);
    }

    #[test]
    fn writes_victoriametrics_format() {
        let labels =
            Labels::from_pairs([("__name__", "m"), ("Zone", "a\"b\\c\n\u{1}"), ("x", "é")]);
        let mut out = String::new();
        write_line(
            &mut out,
            &labels,
            &[1, 2, 3, 4, 5, 6, 7],
            &[
                1.0,
                2.5,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                1e300,
                -0.0,
            ],
        );
        assert_eq!(
            out,
            concat!(
                r#"{"metric":{"__name__":"m","Zone":"a\"b\\c\n\u0001","x":"é"},"#,
                r#""values":[1,2.5,null,"Infinity","-Infinity",1e300,-0.0],"timestamps":[1,2,3,4,5,6,7]}"#,
                "\n"
            )
        );
        write_line(&mut out, &labels, &[], &[]);
        assert_eq!(out.lines().count(), 1);
    }

    #[test]
    fn value_text() {
        for (v, want) in [
            (0.1, "0.1"),
            (-3.0, "-3"),
            (1e21, "1e21"),
            (123456789.125, "123456789.125"),
            (1e-7, "1e-7"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(format_value(v), want);
        }
    }

    /// serde_json reads numbers exactly only with its `float_roundtrip`
    /// feature; without it, the last digits of some can be off. The text
    /// written is exact either way (see `numbers_are_written_exactly`).
    fn same(a: f64, b: f64) -> bool {
        let exact = serde_json::from_str::<f64>("-9.664294099513595e-144").ok()
            == Some(-9.664294099513595e-144);
        a.to_bits() == b.to_bits()
            || a.is_nan() && b.is_nan()
            || !exact && (a - b).abs() <= 1e-14 * a.abs().max(b.abs()).max(f64::MIN_POSITIVE)
    }

    #[test]
    fn hard_values_round_trip() {
        let values = [
            -9.664294099513595e-144,
            1.1984841239362e-310,
            1.20021932413862e183,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
            0.1 + 0.2,
        ];
        let ts: Vec<i64> = (0..values.len() as i64).collect();
        let mut out = String::new();
        write_line(
            &mut out,
            &Labels::from_pairs([("__name__", "x")]),
            &ts,
            &values,
        );
        let p = parse(&out);
        for ((_, got), want) in p.series[0].samples.iter().zip(values) {
            assert!(same(*got, want), "{got:e} != {want:e}");
        }
    }

    proptest! {
        #[test]
        fn numbers_are_written_exactly(v in any::<f64>().prop_filter("finite", |v| v.is_finite())) {
            let text = format_value(v);
            prop_assert_eq!(text.parse::<f64>().map(f64::to_bits), Ok(v.to_bits()), "{}", text);
            prop_assert!(serde_json::from_str::<serde_json::Number>(&text).is_ok(), "{} is not JSON", text);
        }

        #[test]
        fn round_trip(
            name in "[a-zA-Z_:][a-zA-Z0-9_:]{0,8}",
            labels in prop::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,6}", "\\PC{1,8}|[\"\\\\\\x00-\\x1f]{1,4}", 0..4),
            samples in prop::collection::vec((any::<i64>(), any::<f64>()), 1..20),
        ) {
            let mut l = Labels::from_pairs(labels);
            l.set(METRIC_NAME, &name);
            let (ts, values): (Vec<i64>, Vec<f64>) = samples.iter().copied().unzip();
            let mut out = String::new();
            write_line(&mut out, &l, &ts, &values);
            let p = parse(&out);
            prop_assert_eq!(p.errors, vec![]);
            prop_assert_eq!(p.series.len(), 1);
            prop_assert_eq!(&p.series[0].labels, &l);
            prop_assert_eq!(p.series[0].samples.len(), samples.len());
            for ((t, v), (wt, wv)) in p.series[0].samples.iter().zip(&samples) {
                prop_assert_eq!(t, wt);
                prop_assert!(same(*v, *wv), "{:e} != {:e}", v, wv);
            }
        }
    }
}
