//! Human units in the config file: durations (`30d`, `1h30m`, `500ms`) and
//! byte sizes (`32MiB`, `2GB`, or a share of the partition such as `50%`).

use std::fmt;
use std::time::Duration as StdDuration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A duration written the Prometheus way: a sequence of number+unit pairs,
/// units `ms s m h d w y` (a day is 24 h, a year 365 days).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub StdDuration);

impl Duration {
    pub const fn from_secs(s: u64) -> Self {
        Duration(StdDuration::from_secs(s))
    }

    pub fn as_millis_i64(self) -> i64 {
        self.0.as_millis().min(i64::MAX as u128) as i64
    }

    pub fn std(self) -> StdDuration {
        self.0
    }
}

/// Why a duration, size or bandwidth could not be read. The config file's
/// errors quote these messages, so their text is part of the interface.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("empty duration")]
    EmptyDuration,
    #[error("duration too large")]
    DurationTooLarge,
    /// One number of a duration is too long for any unit.
    #[error("invalid duration {input:?}: number too large")]
    DurationNumberTooLarge { input: String },
    #[error("invalid {quantity} {input:?}: expected {}", quantity.number_hint())]
    ExpectedNumber { quantity: Quantity, input: String },
    #[error("invalid {quantity} {input:?}: unknown unit {unit:?}{}", quantity.unit_hint())]
    UnknownUnit {
        quantity: Quantity,
        input: String,
        /// As compared: lower-cased for sizes and bandwidths, without the
        /// `bit`, `bps` or `bit/s` of a bandwidth.
        unit: String,
    },
    #[error("invalid {quantity} {input:?}: out of range")]
    OutOfRange { quantity: Quantity, input: String },
}

impl crate::HasKind for UnitError {
    fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::InvalidArgument
    }
}

/// What a [`UnitError`] was about; displayed as the word in its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantity {
    Duration,
    Size,
    Bandwidth,
}

impl Quantity {
    fn number_hint(self) -> &'static str {
        match self {
            Quantity::Duration => "a number followed by ms, s, m, h, d, w or y",
            Quantity::Size => "a number such as 32MiB",
            Quantity::Bandwidth => "a number such as 1Mbit",
        }
    }

    fn unit_hint(self) -> &'static str {
        match self {
            Quantity::Duration => " (use ms, s, m, h, d, w or y)",
            Quantity::Size => "",
            Quantity::Bandwidth => " (use bit, kbit, Mbit or Gbit)",
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quantity::Duration => "duration",
            Quantity::Size => "size",
            Quantity::Bandwidth => "bandwidth",
        })
    }
}

/// Parses `1h30m`, `500ms`, `30d`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<StdDuration, UnitError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(UnitError::EmptyDuration);
    }
    let quantity = Quantity::Duration;
    if let Ok(secs) = s.parse::<f64>() {
        if (0.0..1e15).contains(&secs) {
            return Ok(StdDuration::from_secs_f64(secs));
        }
        return Err(UnitError::OutOfRange {
            quantity,
            input: s.into(),
        });
    }
    let mut total_ms: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(UnitError::ExpectedNumber {
                quantity,
                input: s.into(),
            });
        }
        let n: u128 = rest[..digits]
            .parse()
            .map_err(|_| UnitError::DurationNumberTooLarge { input: s.into() })?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let ms: u128 = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => {
                return Err(UnitError::UnknownUnit {
                    quantity,
                    input: s.into(),
                    unit: unit.into(),
                })
            }
        };
        total_ms = total_ms
            .checked_add(n.checked_mul(ms).ok_or(UnitError::DurationTooLarge)?)
            .ok_or(UnitError::DurationTooLarge)?;
        rest = &rest[unit_len..];
    }
    if total_ms > u64::MAX as u128 {
        return Err(UnitError::DurationTooLarge);
    }
    Ok(StdDuration::from_millis(total_ms as u64))
}

pub fn format_duration(d: StdDuration) -> String {
    let ms = d.as_millis();
    for (unit, len) in [
        ("y", 365 * 86_400_000u128),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= len && ms.is_multiple_of(len) {
            return format!("{}{unit}", ms / len);
        }
    }
    format!("{ms}ms")
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"30d\", \"1h30m\" or \"500ms\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
                parse_duration(s).map(Duration).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
                u64::try_from(n)
                    .map(|s| Duration(StdDuration::from_secs(s)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A size in bytes: `1024`, `64KiB`, `32MiB`, `2GiB`, `1GB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// `"32 MiB"` → `("32", " MiB")`: the leading number and the rest.
fn number_and_unit(s: &str) -> (&str, &str) {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    t.split_at(split)
}

pub fn parse_bytes(s: &str) -> Result<u64, UnitError> {
    let quantity = Quantity::Size;
    let (num, unit) = number_and_unit(s);
    let n: f64 = num.parse().map_err(|_| UnitError::ExpectedNumber {
        quantity,
        input: s.into(),
    })?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024.0f64.powi(4),
        other => {
            return Err(UnitError::UnknownUnit {
                quantity,
                input: s.into(),
                unit: other.into(),
            })
        }
    };
    let v = n * mult;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(UnitError::OutOfRange {
            quantity,
            input: s.into(),
        });
    }
    Ok(v as u64)
}

pub fn format_bytes(n: u64) -> String {
    for (unit, len) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if n >= len && n.is_multiple_of(len) {
            return format!("{}{unit}", n / len);
        }
    }
    n.to_string()
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"32MiB\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                parse_bytes(s).map(ByteSize).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_bytes(self.0))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_bytes(self.0))
    }
}

/// A bandwidth in bits per second: `1Mbit`, `500kbit`, `2Mbps`, `64000`
/// (decimal multiples, as network links are sold).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BitRate(pub u64);

pub fn parse_bitrate(s: &str) -> Result<u64, UnitError> {
    let quantity = Quantity::Bandwidth;
    let (num, unit) = number_and_unit(s);
    let n: f64 = num.parse().map_err(|_| UnitError::ExpectedNumber {
        quantity,
        input: s.into(),
    })?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("bit/s")
        .or_else(|| unit.strip_suffix("bps"))
        .or_else(|| unit.strip_suffix("bit"))
        .unwrap_or(&unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        other => {
            return Err(UnitError::UnknownUnit {
                quantity,
                input: s.into(),
                unit: other.into(),
            })
        }
    };
    let v = n * mult;
    if !v.is_finite() || v < 1.0 || v > u64::MAX as f64 {
        return Err(UnitError::OutOfRange {
            quantity,
            input: s.into(),
        });
    }
    Ok(v as u64)
}

impl<'de> Deserialize<'de> for BitRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_bitrate(&s).map(BitRate).map_err(de::Error::custom)
    }
}

impl Serialize for BitRate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl fmt::Display for BitRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, n) in [
            ("Gbit", 1_000_000_000u64),
            ("Mbit", 1_000_000),
            ("kbit", 1000),
        ] {
            if self.0 >= n && self.0.is_multiple_of(n) {
                return write!(f, "{}{unit}", self.0 / n);
            }
        }
        write!(f, "{}bit", self.0)
    }
}

/// A disk budget: an absolute size or a percentage of the data partition.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DiskBudget {
    Bytes(u64),
    PercentOfPartition(f64),
}

impl DiskBudget {
    /// Resolves against the size of the partition holding the data.
    pub fn resolve(self, partition_bytes: u64) -> u64 {
        match self {
            DiskBudget::Bytes(b) => b,
            DiskBudget::PercentOfPartition(p) => (partition_bytes as f64 * p / 100.0) as u64,
        }
    }
}

impl<'de> Deserialize<'de> for DiskBudget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = DiskBudget;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"8GiB\" or a share of the partition such as \"50%\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<DiskBudget, E> {
                if let Some(p) = s.trim().strip_suffix('%') {
                    let p: f64 = p
                        .trim()
                        .parse()
                        .map_err(|_| E::custom(format!("invalid percentage {s:?}")))?;
                    if !(p > 0.0 && p <= 100.0) {
                        return Err(E::custom(format!("percentage {s:?} must be in (0, 100]")));
                    }
                    return Ok(DiskBudget::PercentOfPartition(p));
                }
                parse_bytes(s).map(DiskBudget::Bytes).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<DiskBudget, E> {
                u64::try_from(n)
                    .map(DiskBudget::Bytes)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for DiskBudget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DiskBudget::Bytes(b) => s.serialize_str(&format_bytes(*b)),
            DiskBudget::PercentOfPartition(p) => s.serialize_str(&format!("{p}%")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("1h30m").unwrap(),
            StdDuration::from_secs(5400)
        );
        assert_eq!(
            parse_duration("500ms").unwrap(),
            StdDuration::from_millis(500)
        );
        assert_eq!(
            parse_duration("30d").unwrap(),
            StdDuration::from_secs(30 * 86400)
        );
        assert_eq!(
            parse_duration("1.5").unwrap(),
            StdDuration::from_millis(1500)
        );
        assert!(parse_duration("3x")
            .unwrap_err()
            .to_string()
            .contains("unknown unit"));
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999999y").is_err());
        assert_eq!(format_duration(StdDuration::from_secs(86400 * 30)), "30d");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("32MiB").unwrap(), 32 << 20);
        assert_eq!(parse_bytes("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert!(parse_bytes("12 parsecs").is_err());
        assert_eq!(format_bytes(2 << 30), "2GiB");
    }
}
