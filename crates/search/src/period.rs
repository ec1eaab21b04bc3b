//! One time period (a UTC day) of the history: its own tantivy index in
//! `search/<yyyymmdd>/`, so retention deletes whole directories and a query
//! opens only the days it covers.

use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate};
use tantivy::{Index, IndexReader, ReloadPolicy};

use super::schema::register_tokenizers;
use super::SearchError;

pub const DAY_MS: i64 = 86_400_000;

/// Days since the epoch, UTC.
pub type Day = i64;

pub fn day_of(time_ms: i64) -> Day {
    time_ms.div_euclid(DAY_MS)
}

pub fn day_start_ms(day: Day) -> i64 {
    day.saturating_mul(DAY_MS)
}

/// `yyyymmdd`.
pub fn day_name(day: Day) -> String {
    let date = NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|d| d.checked_add_signed(chrono::TimeDelta::try_days(day)?))
        .unwrap_or(NaiveDate::MIN);
    format!("{:04}{:02}{:02}", date.year(), date.month(), date.day())
}

/// The day a directory name (`yyyymmdd`, possibly followed by a suffix
/// such as `.damaged-…`) stands for.
pub fn parse_day(name: &str) -> Option<Day> {
    let digits = name.get(..8)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let date = NaiveDate::parse_from_str(digits, "%Y%m%d").ok()?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    Some((date - epoch).num_days())
}

pub struct Period {
    pub day: Day,
    pub index: Index,
    pub reader: IndexReader,
}

impl Period {
    /// Opens the day's index, creating it when the directory is new.
    pub fn open_or_create(root: &Path, day: Day) -> Result<Period, SearchError> {
        let dir = root.join(day_name(day));
        let index = if dir.join("meta.json").exists() {
            Index::open_in_dir(&dir)?
        } else {
            std::fs::create_dir_all(&dir)?;
            Index::create_in_dir(&dir, super::schema::Fields::build().0)?
        };
        Period::from_index(day, index)
    }

    /// Opens an existing day's index and checks it can be read.
    pub fn open(dir: PathBuf, day: Day) -> Result<Period, SearchError> {
        if !dir.join("meta.json").exists() {
            return Err(SearchError::Damaged(format!(
                "{} has no meta.json",
                dir.display()
            )));
        }
        let index = Index::open_in_dir(&dir)?;
        let expected = super::schema::Fields::build().0;
        if index.schema() != expected {
            return Err(SearchError::Damaged(format!(
                "{} has a different schema",
                dir.display()
            )));
        }
        Period::from_index(day, index)
    }

    fn from_index(day: Day, index: Index) -> Result<Period, SearchError> {
        register_tokenizers(&index);
        // Opening a reader opens every segment's files: a missing or cut
        // file shows here rather than at the first query.
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Period { day, index, reader })
    }

    pub fn start_ms(&self) -> i64 {
        day_start_ms(self.day)
    }

    /// Last millisecond of the day.
    pub fn end_ms(&self) -> i64 {
        day_start_ms(self.day + 1) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_names_round_trip() {
        let t = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        let d = day_of(t);
        assert_eq!(day_name(d), "20260101");
        assert_eq!(parse_day("20260101"), Some(d));
        assert_eq!(parse_day("20260101.damaged-5"), Some(d));
        assert_eq!(day_of(t - 1), d - 1);
        assert_eq!(parse_day("2026x101"), None);
        assert_eq!(parse_day("damaged"), None);
    }
}
