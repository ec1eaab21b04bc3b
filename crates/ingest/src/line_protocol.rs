//! InfluxDB line protocol (1.x and 2.x share the syntax) to series:
//! `m,tag=a f=1.5,g=2i 1700000000000000000` becomes `m_f{tag="a"}` = 1.5 and
//! `m_g{tag="a"}` = 2 at ms 1700000000000. A field named `value` maps to plain
//! `m`, booleans to 1 and 0; string fields are not samples and are skipped.
//!
//! Written by hand for speed: lines are parsed in place from the body, and the
//! raw measurement-and-tags text of a line is looked up before it is parsed,
//! because a batch repeats it for every reading of a device and looking it up
//! costs a fraction of unescaping, sanitizing and sorting it again.
//!
//! Where InfluxDB's own implementations disagree or are silent, this parser
//! follows the 2.x reference: `\\` is an escaped backslash everywhere, `\`
//! before any other character is kept as is. It rejects what would make a
//! series ambiguous: an empty tag value, a tag or field given twice (also when
//! two names sanitize to one), and a tag named `__name__`. It does not enforce
//! InfluxDB's storage-side rules (the `time` key, `_`-prefixed names, 64 KB
//! strings), which do not matter once lines are series.

use std::borrow::Cow;
use std::fmt;
use std::hash::BuildHasher;
use std::num::{IntErrorKind, ParseIntError};
use std::sync::Arc;

use rustc_hash::{FxBuildHasher, FxHashMap};
use thiserror::Error;

use super::MAX_ERRORS;
use base::labels::{Label, METRIC_NAME};
use base::names::{sanitize_label_name, sanitize_metric_name};
use base::{Labels, MeasurementField, SeriesSamples};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    Minutes,
    Hours,
}

impl Precision {
    /// The `precision` parameter of InfluxDB's write APIs. An empty string is
    /// `None`: callers treat a missing precision as nanoseconds.
    pub fn parse(s: &str) -> Option<Precision> {
        Some(match s {
            "ns" | "n" => Precision::Nanoseconds,
            // Both the micro sign and the Greek mu, as clients type either.
            "us" | "u" | "µs" | "μs" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            "m" => Precision::Minutes,
            "h" => Precision::Hours,
            _ => return None,
        })
    }

    fn unit(self) -> &'static str {
        match self {
            Precision::Nanoseconds => "ns",
            Precision::Microseconds => "us",
            Precision::Milliseconds => "ms",
            Precision::Seconds => "s",
            Precision::Minutes => "m",
            Precision::Hours => "h",
        }
    }

    /// Rounds towards negative infinity, so an instant before 1970 lands in
    /// the millisecond that contains it, as for instants after.
    fn to_ms(self, ts: i64) -> Option<i64> {
        match self {
            Precision::Nanoseconds => Some(ts.div_euclid(1_000_000)),
            Precision::Microseconds => Some(ts.div_euclid(1_000)),
            Precision::Milliseconds => Some(ts),
            Precision::Seconds => ts.checked_mul(1_000),
            Precision::Minutes => ts.checked_mul(60_000),
            Precision::Hours => ts.checked_mul(3_600_000),
        }
    }
}

/// A refused line. Its message is rendered once, when the line is refused:
/// the reasons borrow from the body, which the parsed series outlive.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{message}")]
pub struct LineError {
    /// 1-based.
    pub line: usize,
    /// Complete for a user: starts with `line N: `, names the element.
    pub message: String,
}

impl base::HasKind for LineError {
    fn kind(&self) -> base::ErrorKind {
        base::ErrorKind::InvalidArgument
    }
}

/// Why a line was refused. Borrows the text it quotes, so a refusal costs
/// no allocation until its message is written.
#[derive(Debug, Error)]
enum Refusal<'a> {
    #[error("missing measurement")]
    MissingMeasurement,
    #[error("empty tag key at column {column}")]
    EmptyTagKey { column: usize },
    #[error("tag {} has no value: expected '=' after it", show(tag))]
    TagWithoutValue { tag: Cow<'a, str> },
    #[error("unescaped '=' in the value of tag {}: write it as \\=", show(tag))]
    UnescapedEquals { tag: Cow<'a, str> },
    #[error("empty value for tag {}", show(tag))]
    EmptyTagValue { tag: Cow<'a, str> },
    #[error("tag key {} is reserved for the metric name", show(tag))]
    ReservedTag { tag: Cow<'a, str> },
    #[error("tag {} appears twice", show(tag))]
    RepeatedTag { tag: Cow<'a, str> },
    #[error(
        "tags {} and {} both become label {}",
        show(first),
        show(second),
        show(label)
    )]
    TagsCollide {
        first: Cow<'a, str>,
        second: Cow<'a, str>,
        label: Cow<'a, str>,
    },
    #[error("missing fields: expected field=value after the measurement and tags")]
    MissingFields,
    #[error("empty field key at column {column}")]
    EmptyFieldKey { column: usize },
    #[error("field {} has no value: expected '=' after it", show(field))]
    FieldWithoutValue { field: &'a str },
    #[error("unterminated string value for field {}", show(field))]
    UnterminatedString { field: &'a str },
    #[error(
        "unexpected text {} after the string value of field {}",
        show(text),
        show(field)
    )]
    TextAfterString { text: &'a str, field: &'a str },
    #[error("missing value for field {}", show(field))]
    MissingValue { field: &'a str },
    #[error("invalid value {} for field {}: {why}", show(value), show(field))]
    InvalidValue {
        value: &'a str,
        field: &'a str,
        why: ValueError,
    },
    #[error("trailing comma after field {}", show(field))]
    TrailingComma { field: &'a str },
    #[error("field {} appears twice", show(field))]
    RepeatedField { field: &'a str },
    #[error(
        "fields {} and {} both become series {series}",
        show(first),
        show(second)
    )]
    FieldsCollide {
        first: &'a str,
        second: &'a str,
        series: String,
    },
    #[error("timestamp {} does not fit in 64 bits", show(text))]
    TimestampOverflow { text: &'a str },
    #[error("invalid timestamp {}: expected an integer", show(text))]
    InvalidTimestamp { text: &'a str },
    #[error(
        "timestamp {ts} (precision {}) is out of range in milliseconds",
        precision.unit()
    )]
    TimestampOutOfRange { ts: i64, precision: Precision },
    #[error("unexpected text {} after the timestamp", show(text))]
    TextAfterTimestamp { text: &'a str },
    #[error(
        "the series of this request would take more than {mib} MiB of labels: \
         split it into smaller writes, or send fewer tags on lines with many fields"
    )]
    LabelBudget { mib: usize },
}

/// Why a field value is not a number, integer, unsigned or boolean.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
enum ValueError {
    #[error("expected an integer before the 'i'")]
    Integer,
    #[error("integer out of the 64-bit range")]
    IntegerRange,
    #[error("expected an unsigned integer before the 'u'")]
    Unsigned,
    #[error("unsigned integer out of the 64-bit range")]
    UnsignedRange,
    #[error("NaN and infinity are not valid field values")]
    NotFinite,
    #[error("number out of the 64-bit float range")]
    FloatRange,
    #[error("expected a number, boolean or quoted string")]
    NotANumber,
}

#[derive(Debug, Default)]
pub struct ParsedLines {
    /// In order of first appearance; samples in input order.
    pub series: Vec<SeriesSamples>,
    /// The first [`MAX_ERRORS`] refused lines; every other line was kept.
    pub errors: Vec<LineError>,
    /// All refused lines, also those past [`MAX_ERRORS`].
    pub refused: usize,
    /// Lines that were neither blank nor comments, refused ones included.
    pub lines: usize,
    pub samples: usize,
}

/// Parses a whole body. Lines without a timestamp get `default_ts_ms`.
/// `extra_labels` (say, the MQTT topic) are set on every series, replacing
/// tags of the same name; an empty value removes the tag. Their names are used
/// as given.
///
/// Every field of a line becomes a series that carries all the line's tags,
/// so a few megabytes of tags times as many fields would take gigabytes.
/// The labels of the series (and tag sets) a body creates may therefore take
/// about 32 MiB plus 4 times the body's size; lines past that are refused.
pub fn parse(
    body: &str,
    precision: Precision,
    default_ts_ms: i64,
    extra_labels: &[(&str, &str)],
) -> ParsedLines {
    let budget = LABEL_BUDGET_PER_BYTE.saturating_mul(body.len()) + LABEL_BUDGET_BASE;
    let mut p = Parser {
        precision,
        default_ts_ms,
        extra_labels,
        out: ParsedLines::default(),
        group_ids: FxHashMap::default(),
        groups: Vec::new(),
        field_ids: FxHashMap::default(),
        by_hash: FxHashMap::default(),
        same_hash: Vec::new(),
        last_line: Vec::new(),
        budget,
        budget_mib: budget >> 20,
        indent: 0,
        line_fields: Vec::new(),
        resolved: Vec::new(),
    };
    for (i, raw) in body.split('\n').enumerate() {
        let untrimmed = raw.strip_suffix('\r').unwrap_or(raw);
        let line = untrimmed.trim_start_matches([' ', '\t']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        p.out.lines += 1;
        p.indent = untrimmed.len() - line.len();
        if let Err(why) = p.line(i + 1, line) {
            p.out.refused += 1;
            if p.out.errors.len() < MAX_ERRORS {
                p.out.errors.push(LineError {
                    line: i + 1,
                    message: format!("line {}: {why}", i + 1),
                });
            }
        }
    }
    // A series is created before its line is known to be valid.
    p.out.series.retain(|s| !s.samples.is_empty());
    p.out
}

/// What a measurement-and-tags text stands for.
struct Group {
    /// As written, unescaped.
    measurement: String,
    metric: String,
    /// Tags and extra labels, without the metric name.
    labels: Labels,
}

struct Parser<'a> {
    precision: Precision,
    default_ts_ms: i64,
    extra_labels: &'a [(&'a str, &'a str)],
    out: ParsedLines,
    /// Raw measurement-and-tags text → index in `groups`.
    group_ids: FxHashMap<&'a str, u32>,
    groups: Vec<Group>,
    /// (group, raw field key) → index in `out.series`.
    field_ids: FxHashMap<(u32, &'a str), u32>,
    /// Different raw text can sanitize to one series (`cpu.load` and
    /// `cpu_load`, tags in another order); it must still be one entry.
    /// Keyed by the hash of the labels, so that they are not kept twice;
    /// `same_hash` (per series) chains the rare collisions.
    by_hash: FxHashMap<u64, u32>,
    same_hash: Vec<Option<u32>>,
    /// Per series, the last line that gave it a sample: a second sample from
    /// the same line means a field was repeated.
    last_line: Vec<usize>,
    /// Bytes that new labels may still take; see [`parse`].
    budget: usize,
    budget_mib: usize,
    /// Spaces and tabs before the current line, for columns in messages.
    indent: usize,
    // Scratch, kept to reuse the allocations from line to line.
    line_fields: Vec<(&'a str, f64)>,
    resolved: Vec<u32>,
}

const MEASUREMENT_ESCAPES: &[u8] = b", \\";
const KEY_ESCAPES: &[u8] = b",= \\";
const LABEL_BUDGET_BASE: usize = 32 << 20;
const LABEL_BUDGET_PER_BYTE: usize = 4;
/// What a label costs besides its text.
const LABEL_OVERHEAD: usize = std::mem::size_of::<Label>();

impl<'a> Parser<'a> {
    fn line(&mut self, n: usize, line: &'a str) -> Result<(), Refusal<'a>> {
        let b = line.as_bytes();
        let key_end = find_unescaped(b, 0, |c| c == b' ');
        let key = &line[..key_end];
        let group = match self.group_ids.get(key) {
            Some(&g) => g,
            None => {
                let g = self.new_group(key)?;
                self.group_ids.insert(key, g);
                g
            }
        };
        let mut i = skip(b, key_end, |c| c == b' ');
        if i == b.len() {
            return Err(Refusal::MissingFields);
        }

        self.line_fields.clear();
        loop {
            let k_end = find_unescaped(b, i, |c| c == b'=' || c == b',' || c == b' ');
            let key = &line[i..k_end];
            if key.is_empty() {
                return Err(Refusal::EmptyFieldKey {
                    column: self.column(line, i),
                });
            }
            if k_end == b.len() || b[k_end] != b'=' {
                return Err(Refusal::FieldWithoutValue { field: key });
            }
            let v_start = k_end + 1;
            let v_end = if b.get(v_start) == Some(&b'"') {
                let end =
                    string_end(b, v_start + 1).ok_or(Refusal::UnterminatedString { field: key })?;
                if end < b.len() && b[end] != b',' && b[end] != b' ' {
                    return Err(Refusal::TextAfterString {
                        text: rest_of_element(line, end),
                        field: key,
                    });
                }
                end
            } else {
                let end = find(b, v_start, |c| c == b',' || c == b' ');
                let value = &line[v_start..end];
                if value.is_empty() {
                    return Err(Refusal::MissingValue { field: key });
                }
                let v = parse_value(value).map_err(|why| Refusal::InvalidValue {
                    value,
                    field: key,
                    why,
                })?;
                self.line_fields.push((key, v));
                end
            };
            match b.get(v_end) {
                Some(b',') => {
                    i = v_end + 1;
                    if matches!(b.get(i), None | Some(b' ')) {
                        return Err(Refusal::TrailingComma { field: key });
                    }
                }
                _ => {
                    i = v_end;
                    break;
                }
            }
        }

        let i = skip(b, i, |c| c == b' ' || c == b'\t');
        let ts = if i == b.len() {
            self.default_ts_ms
        } else {
            let end = find(b, i, |c| c == b' ' || c == b'\t');
            let ts = self.timestamp(&line[i..end])?;
            let after = skip(b, end, |c| c == b' ' || c == b'\t');
            if after < b.len() {
                return Err(Refusal::TextAfterTimestamp {
                    text: &line[after..],
                });
            }
            ts
        };
        self.commit(n, group, ts)
    }

    /// 1-based, in characters, of byte `i` of the trimmed line.
    fn column(&self, line: &str, i: usize) -> usize {
        self.indent + line[..i].chars().count() + 1
    }

    fn timestamp(&self, text: &'a str) -> Result<i64, Refusal<'a>> {
        let ts: i64 = text.parse().map_err(|e: ParseIntError| match e.kind() {
            IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => {
                Refusal::TimestampOverflow { text }
            }
            _ => Refusal::InvalidTimestamp { text },
        })?;
        self.precision
            .to_ms(ts)
            .ok_or(Refusal::TimestampOutOfRange {
                ts,
                precision: self.precision,
            })
    }

    /// Parses measurement and tags, which were not seen before in this body.
    fn new_group(&mut self, key: &'a str) -> Result<u32, Refusal<'a>> {
        let b = key.as_bytes();
        let m_end = find_unescaped(b, 0, |c| c == b',');
        let measurement = unescape(&key[..m_end], MEASUREMENT_ESCAPES);
        if measurement.is_empty() {
            return Err(Refusal::MissingMeasurement);
        }
        // (label name, tag key as written, value)
        let mut tags: Vec<(Cow<str>, Cow<str>, Cow<str>)> = Vec::new();
        let mut i = m_end;
        while i < b.len() {
            let k_start = i + 1;
            let k_end = find_unescaped(b, k_start, |c| c == b'=' || c == b',');
            let tag = unescape(&key[k_start..k_end], KEY_ESCAPES);
            if tag.is_empty() {
                return Err(Refusal::EmptyTagKey {
                    column: self.column(key, k_start),
                });
            }
            if k_end == b.len() || b[k_end] != b'=' {
                return Err(Refusal::TagWithoutValue { tag });
            }
            let v_start = k_end + 1;
            let v_end = find_unescaped(b, v_start, |c| c == b',' || c == b'=');
            if v_end < b.len() && b[v_end] == b'=' {
                return Err(Refusal::UnescapedEquals { tag });
            }
            let value = unescape(&key[v_start..v_end], KEY_ESCAPES);
            if value.is_empty() {
                return Err(Refusal::EmptyTagValue { tag });
            }
            let name = match sanitize_label_name(&tag) {
                Cow::Borrowed(_) => tag.clone(),
                Cow::Owned(s) => Cow::Owned(s),
            };
            if name == METRIC_NAME {
                return Err(Refusal::ReservedTag { tag });
            }
            self.charge(name.len() + value.len() + LABEL_OVERHEAD)?;
            tags.push((name, tag, value));
            i = v_end;
        }
        tags.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if let Some(at) = tags.windows(2).position(|w| w[0].0 == w[1].0) {
            let (label, first, _) = tags.remove(at);
            let (_, second, _) = tags.remove(at);
            return Err(if first == second {
                Refusal::RepeatedTag { tag: first }
            } else {
                Refusal::TagsCollide {
                    first,
                    second,
                    label,
                }
            });
        }
        let mut labels = Labels::from_pairs(tags.into_iter().map(|(n, _, v)| (n, v)));
        for (name, value) in self.extra_labels {
            labels.set(name, value);
        }
        self.groups.push(Group {
            metric: sanitize_metric_name(&measurement).into_owned(),
            measurement: measurement.into_owned(),
            labels,
        });
        Ok(self.groups.len() as u32 - 1)
    }

    /// Stores the line's samples; before, checks that no two of its fields
    /// land on one series, so a refused line leaves no sample behind.
    fn commit(&mut self, n: usize, group: u32, ts: i64) -> Result<(), Refusal<'a>> {
        self.resolved.clear();
        for k in 0..self.line_fields.len() {
            let field = self.line_fields[k].0;
            let id = match self.field_ids.get(&(group, field)) {
                Some(&id) => id,
                None => {
                    let id = self.series_id(group, field)?;
                    self.field_ids.insert((group, field), id);
                    id
                }
            };
            if self.last_line[id as usize] == n {
                let first = self.resolved.iter().position(|&r| r == id).unwrap_or(0);
                let other = self.line_fields[first].0;
                let series = &self.out.series[id as usize].labels;
                return Err(if other == field {
                    Refusal::RepeatedField { field }
                } else {
                    Refusal::FieldsCollide {
                        first: other,
                        second: field,
                        series: series.metric_name().unwrap_or("").to_owned(),
                    }
                });
            }
            self.last_line[id as usize] = n;
            self.resolved.push(id);
        }
        for (&id, &(_, v)) in self.resolved.iter().zip(&self.line_fields) {
            self.out.series[id as usize].samples.push((ts, v));
        }
        self.out.samples += self.resolved.len();
        Ok(())
    }

    fn series_id(&mut self, group: u32, raw_field: &str) -> Result<u32, Refusal<'a>> {
        let g = &self.groups[group as usize];
        let field = unescape(raw_field, KEY_ESCAPES);
        let mut labels = g.labels.clone();
        if field == "value" {
            labels.set(METRIC_NAME, &g.metric);
        } else {
            let name = format!("{}_{field}", g.metric);
            labels.set(METRIC_NAME, &sanitize_metric_name(&name));
        }
        let hash = FxBuildHasher.hash_one(&labels);
        let mut next = self.by_hash.get(&hash).copied();
        while let Some(id) = next {
            if self.out.series[id as usize].labels == labels {
                return Ok(id);
            }
            next = self.same_hash[id as usize];
        }
        let origin = Arc::new(MeasurementField {
            measurement: g.measurement.clone(),
            field: field.into_owned(),
        });
        self.charge(
            labels
                .iter()
                .map(|l| l.name.len() + l.value.len() + LABEL_OVERHEAD)
                .sum::<usize>()
                + origin.measurement.len()
                + origin.field.len()
                + LABEL_OVERHEAD,
        )?;
        let id = self.out.series.len() as u32;
        self.same_hash.push(self.by_hash.insert(hash, id));
        self.last_line.push(0);
        self.out.series.push(SeriesSamples {
            labels,
            samples: Vec::new(),
            origin: Some(origin),
        });
        Ok(id)
    }

    fn charge(&mut self, bytes: usize) -> Result<(), Refusal<'a>> {
        self.budget = self.budget.checked_sub(bytes).ok_or(Refusal::LabelBudget {
            mib: self.budget_mib,
        })?;
        Ok(())
    }
}

/// A numeric, integer, unsigned or boolean field value.
fn parse_value(s: &str) -> Result<f64, ValueError> {
    match s {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(1.0),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(0.0),
        _ => {}
    }
    let range = |e: ParseIntError, invalid: ValueError, too_big: ValueError| match e.kind() {
        IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => too_big,
        _ => invalid,
    };
    if let Some(digits) = s.strip_suffix('i') {
        return digits
            .parse::<i64>()
            .map(|v| v as f64)
            .map_err(|e| range(e, ValueError::Integer, ValueError::IntegerRange));
    }
    if let Some(digits) = s.strip_suffix('u') {
        return digits
            .parse::<u64>()
            .map(|v| v as f64)
            .map_err(|e| range(e, ValueError::Unsigned, ValueError::UnsignedRange));
    }
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    // Rust would also read "nan", "inf" and "infinity"; line protocol has none.
    if !unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        let lower = unsigned.to_ascii_lowercase();
        return Err(if lower.starts_with("nan") || lower.starts_with("inf") {
            ValueError::NotFinite
        } else {
            ValueError::NotANumber
        });
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(ValueError::FloatRange),
        Err(_) => Err(ValueError::NotANumber),
    }
}

/// The first `stop` byte from `i` that is not escaped with a backslash, or
/// the end. Stop bytes are ASCII, so the result is a char boundary.
fn find_unescaped(b: &[u8], mut i: usize, stop: impl Fn(u8) -> bool) -> usize {
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            c if stop(c) => return i,
            _ => i += 1,
        }
    }
    b.len()
}

fn find(b: &[u8], i: usize, stop: impl Fn(u8) -> bool) -> usize {
    b[i..]
        .iter()
        .position(|&c| stop(c))
        .map_or(b.len(), |p| i + p)
}

fn skip(b: &[u8], i: usize, what: impl Fn(u8) -> bool) -> usize {
    b[i..]
        .iter()
        .position(|&c| !what(c))
        .map_or(b.len(), |p| i + p)
}

/// The index just past the closing quote of a string that starts at `i`.
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn rest_of_element(line: &str, i: usize) -> &str {
    &line[i..find(line.as_bytes(), i, |c| c == b',' || c == b' ')]
}

/// Removes the backslash before `escapable` bytes (which include `\`);
/// a backslash before anything else is a literal backslash.
fn unescape<'s>(s: &'s str, escapable: &[u8]) -> Cow<'s, str> {
    let b = s.as_bytes();
    if !b.contains(&b'\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let (mut from, mut i) = (0, 0);
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1).is_some_and(|c| escapable.contains(c)) {
            out.push_str(&s[from..i]);
            from = i + 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    out.push_str(&s[from..]);
    Cow::Owned(out)
}

/// Quotes user text for a message, cut short so that one bad megabyte-long
/// line doesn't make a megabyte-long error.
fn show(s: &str) -> Shown<'_> {
    Shown(s)
}

struct Shown<'s>(&'s str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 64;
        let s = self.0;
        match s.char_indices().nth(MAX) {
            None => write!(f, "{s:?}"),
            Some((cut, _)) => write!(f, "{:?}…", &s[..cut]),
        }
    }
}

#[cfg(test)]
mod tests;
