//! The answer's JSON, in InfluxDB 1.x's shape
//! (`results[].series[].{name,tags,columns,values}`), and how times and
//! values are written in it.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::Serialize;
use serde_json::{json, Value};

use super::error::InvalidEpoch;

/// How to write times: RFC 3339 strings, or integers in a unit (`epoch=`).
#[derive(Clone, Copy, Debug)]
pub enum Epoch {
    Rfc3339,
    /// Milliseconds are divided by this (or multiplied for finer units).
    Unit {
        mul: i64,
        div: i64,
    },
}

impl Epoch {
    /// The `epoch` parameter, absent meaning RFC 3339.
    pub fn parse(s: Option<&str>) -> Result<Epoch, InvalidEpoch> {
        s.unwrap_or("").parse()
    }

    pub(super) fn time(&self, ms: i64) -> Value {
        match *self {
            Epoch::Rfc3339 => Value::String(rfc3339(ms)),
            Epoch::Unit { mul, div } => json!(ms.saturating_mul(mul) / div),
        }
    }
}

impl FromStr for Epoch {
    type Err = InvalidEpoch;

    fn from_str(s: &str) -> Result<Epoch, InvalidEpoch> {
        Ok(match s {
            "" => Epoch::Rfc3339,
            "ns" | "n" => Epoch::Unit {
                mul: 1_000_000,
                div: 1,
            },
            "u" | "µ" | "us" => Epoch::Unit { mul: 1_000, div: 1 },
            "ms" => Epoch::Unit { mul: 1, div: 1 },
            "s" => Epoch::Unit { mul: 1, div: 1_000 },
            "m" => Epoch::Unit {
                mul: 1,
                div: 60_000,
            },
            "h" => Epoch::Unit {
                mul: 1,
                div: 3_600_000,
            },
            other => return Err(InvalidEpoch(other.to_string())),
        })
    }
}

/// RFC 3339 with as many fraction digits as needed, like Go's RFC3339Nano.
pub fn rfc3339(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => ms.to_string(),
    }
}

/// A sample value as JSON: integers without a fraction (as InfluxDB prints
/// integral floats), NaN and infinities as null.
pub(super) fn number(v: f64) -> Value {
    if !v.is_finite() {
        return Value::Null;
    }
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        return json!(v as i64);
    }
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// The answer to a query, fields in InfluxDB's order.
#[derive(Debug, Serialize)]
pub struct Response {
    pub results: Vec<StatementResult>,
}

#[derive(Debug, Serialize)]
pub struct StatementResult {
    pub statement_id: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series: Option<Vec<SeriesOut>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SeriesOut {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    pub columns: Vec<String>,
    pub values: Vec<Vec<Value>>,
}

pub(super) fn series_out(name: &str, columns: &[&str], values: Vec<Vec<Value>>) -> SeriesOut {
    SeriesOut {
        name: name.to_string(),
        tags: None,
        columns: columns.iter().map(|c| c.to_string()).collect(),
        values,
    }
}
