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
use std::hash::BuildHasher;
use std::num::{IntErrorKind, ParseIntError};

use rustc_hash::{FxBuildHasher, FxHashMap};

use super::MAX_ERRORS;
use base::labels::{Label, METRIC_NAME};
use base::names::{sanitize_label_name, sanitize_metric_name};
use base::{Labels, SeriesSamples};

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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// 1-based.
    pub line: usize,
    /// Complete for a user: starts with `line N: `, names the element.
    pub message: String,
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
        if let Err(msg) = p.line(i + 1, line) {
            p.out.refused += 1;
            if p.out.errors.len() < MAX_ERRORS {
                p.out.errors.push(LineError {
                    line: i + 1,
                    message: format!("line {}: {msg}", i + 1),
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
    fn line(&mut self, n: usize, line: &'a str) -> Result<(), String> {
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
            return Err(
                "missing fields: expected field=value after the measurement and tags".into(),
            );
        }

        self.line_fields.clear();
        loop {
            let k_end = find_unescaped(b, i, |c| c == b'=' || c == b',' || c == b' ');
            let key = &line[i..k_end];
            if key.is_empty() {
                return Err(format!(
                    "empty field key at column {}",
                    self.column(line, i)
                ));
            }
            if k_end == b.len() || b[k_end] != b'=' {
                return Err(format!(
                    "field {} has no value: expected '=' after it",
                    show(key)
                ));
            }
            let v_start = k_end + 1;
            let v_end = if b.get(v_start) == Some(&b'"') {
                let end = string_end(b, v_start + 1)
                    .ok_or_else(|| format!("unterminated string value for field {}", show(key)))?;
                if end < b.len() && b[end] != b',' && b[end] != b' ' {
                    return Err(format!(
                        "unexpected text {} after the string value of field {}",
                        show(rest_of_element(line, end)),
                        show(key)
                    ));
                }
                end
            } else {
                let end = find(b, v_start, |c| c == b',' || c == b' ');
                let value = &line[v_start..end];
                if value.is_empty() {
                    return Err(format!("missing value for field {}", show(key)));
                }
                let v = parse_value(value).map_err(|why| {
                    format!(
                        "invalid value {} for field {}: {why}",
                        show(value),
                        show(key)
                    )
                })?;
                self.line_fields.push((key, v));
                end
            };
            match b.get(v_end) {
                Some(b',') => {
                    i = v_end + 1;
                    if matches!(b.get(i), None | Some(b' ')) {
                        return Err(format!("trailing comma after field {}", show(key)));
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
                return Err(format!(
                    "unexpected text {} after the timestamp",
                    show(&line[after..])
                ));
            }
            ts
        };
        self.commit(n, group, ts)
    }

    /// 1-based, in characters, of byte `i` of the trimmed line.
    fn column(&self, line: &str, i: usize) -> usize {
        self.indent + line[..i].chars().count() + 1
    }

    fn timestamp(&self, text: &str) -> Result<i64, String> {
        let ts: i64 = text.parse().map_err(|e: ParseIntError| match e.kind() {
            IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => {
                format!("timestamp {} does not fit in 64 bits", show(text))
            }
            _ => format!("invalid timestamp {}: expected an integer", show(text)),
        })?;
        self.precision.to_ms(ts).ok_or_else(|| {
            format!(
                "timestamp {ts} (precision {}) is out of range in milliseconds",
                self.precision.unit()
            )
        })
    }

    /// Parses measurement and tags, which were not seen before in this body.
    fn new_group(&mut self, key: &str) -> Result<u32, String> {
        let b = key.as_bytes();
        let m_end = find_unescaped(b, 0, |c| c == b',');
        let measurement = unescape(&key[..m_end], MEASUREMENT_ESCAPES);
        if measurement.is_empty() {
            return Err("missing measurement".into());
        }
        // (label name, tag key as written, value)
        let mut tags: Vec<(Cow<str>, Cow<str>, Cow<str>)> = Vec::new();
        let mut i = m_end;
        while i < b.len() {
            let k_start = i + 1;
            let k_end = find_unescaped(b, k_start, |c| c == b'=' || c == b',');
            let tag = unescape(&key[k_start..k_end], KEY_ESCAPES);
            if tag.is_empty() {
                return Err(format!(
                    "empty tag key at column {}",
                    self.column(key, k_start)
                ));
            }
            if k_end == b.len() || b[k_end] != b'=' {
                return Err(format!(
                    "tag {} has no value: expected '=' after it",
                    show(&tag)
                ));
            }
            let v_start = k_end + 1;
            let v_end = find_unescaped(b, v_start, |c| c == b',' || c == b'=');
            if v_end < b.len() && b[v_end] == b'=' {
                return Err(format!(
                    "unescaped '=' in the value of tag {}: write it as \\=",
                    show(&tag)
                ));
            }
            let value = unescape(&key[v_start..v_end], KEY_ESCAPES);
            if value.is_empty() {
                return Err(format!("empty value for tag {}", show(&tag)));
            }
            let name = match sanitize_label_name(&tag) {
                Cow::Borrowed(_) => tag.clone(),
                Cow::Owned(s) => Cow::Owned(s),
            };
            if name == METRIC_NAME {
                return Err(format!(
                    "tag key {} is reserved for the metric name",
                    show(&tag)
                ));
            }
            self.charge(name.len() + value.len() + LABEL_OVERHEAD)?;
            tags.push((name, tag, value));
            i = v_end;
        }
        tags.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = tags.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(if w[0].1 == w[1].1 {
                format!("tag {} appears twice", show(&w[0].1))
            } else {
                format!(
                    "tags {} and {} both become label {}",
                    show(&w[0].1),
                    show(&w[1].1),
                    show(&w[0].0)
                )
            });
        }
        let mut labels = Labels::from_pairs(tags.into_iter().map(|(n, _, v)| (n, v)));
        for (name, value) in self.extra_labels {
            labels.set(name, value);
        }
        self.groups.push(Group {
            metric: sanitize_metric_name(&measurement).into_owned(),
            labels,
        });
        Ok(self.groups.len() as u32 - 1)
    }

    /// Stores the line's samples; before, checks that no two of its fields
    /// land on one series, so a refused line leaves no sample behind.
    fn commit(&mut self, n: usize, group: u32, ts: i64) -> Result<(), String> {
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
                    format!("field {} appears twice", show(field))
                } else {
                    format!(
                        "fields {} and {} both become series {}",
                        show(other),
                        show(field),
                        series.metric_name().unwrap_or("")
                    )
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

    fn series_id(&mut self, group: u32, raw_field: &str) -> Result<u32, String> {
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
        self.charge(
            labels
                .iter()
                .map(|l| l.name.len() + l.value.len() + LABEL_OVERHEAD)
                .sum(),
        )?;
        let id = self.out.series.len() as u32;
        self.same_hash.push(self.by_hash.insert(hash, id));
        self.last_line.push(0);
        self.out.series.push(SeriesSamples {
            labels,
            samples: Vec::new(),
        });
        Ok(id)
    }

    fn charge(&mut self, bytes: usize) -> Result<(), String> {
        self.budget = self.budget.checked_sub(bytes).ok_or_else(|| {
            format!(
                "the series of this request would take more than {} MiB of labels: \
                 split it into smaller writes, or send fewer tags on lines with many fields",
                self.budget_mib
            )
        })?;
        Ok(())
    }
}

/// A numeric, integer, unsigned or boolean field value; `Err` says why not.
fn parse_value(s: &str) -> Result<f64, &'static str> {
    match s {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(1.0),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(0.0),
        _ => {}
    }
    let range = |e: ParseIntError, invalid: &'static str, too_big: &'static str| match e.kind() {
        IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => too_big,
        _ => invalid,
    };
    if let Some(digits) = s.strip_suffix('i') {
        return digits.parse::<i64>().map(|v| v as f64).map_err(|e| {
            range(
                e,
                "expected an integer before the 'i'",
                "integer out of the 64-bit range",
            )
        });
    }
    if let Some(digits) = s.strip_suffix('u') {
        return digits.parse::<u64>().map(|v| v as f64).map_err(|e| {
            range(
                e,
                "expected an unsigned integer before the 'u'",
                "unsigned integer out of the 64-bit range",
            )
        });
    }
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    // Rust would also read "nan", "inf" and "infinity"; line protocol has none.
    if !unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        let lower = unsigned.to_ascii_lowercase();
        return Err(if lower.starts_with("nan") || lower.starts_with("inf") {
            "NaN and infinity are not valid field values"
        } else {
            "expected a number, boolean or quoted string"
        });
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err("number out of the 64-bit float range"),
        Err(_) => Err("expected a number, boolean or quoted string"),
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
fn show(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
    }
}

#[cfg(test)]
mod tests;
