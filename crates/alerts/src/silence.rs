//! Silences, as Alertmanager's: label matchers and a time span; while one
//! is active, the alerts it matches are not notified (they still fire and
//! show). Kept in the store's `alert_silences` tree; an expired silence is
//! kept a day for the record, then dropped.

use std::sync::RwLock;

use base::Labels;
use regex::Regex;
use serde::{Deserialize, Serialize};

/// Expired silences are kept this long (then dropped).
const KEEP_EXPIRED_MS: i64 = 86_400_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Matcher {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub is_regex: bool,
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

/// A silence as the API takes and gives it (times in ms).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    #[serde(default)]
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at: i64,
    pub ends_at: i64,
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub comment: String,
}

impl Silence {
    pub fn state(&self, now: i64) -> &'static str {
        if now < self.starts_at {
            "pending"
        } else if now < self.ends_at {
            "active"
        } else {
            "expired"
        }
    }

    fn matches(&self, labels: &Labels) -> bool {
        self.matchers.iter().all(|m| {
            let value = labels.get(&m.name).unwrap_or("");
            let hit = if m.is_regex {
                Regex::new(&format!("^(?:{})$", m.value)).is_ok_and(|r| r.is_match(value))
            } else {
                value == m.value
            };
            hit == m.is_equal
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    #[error("invalid silence: {0}")]
    Invalid(String),
    #[error("no silence {0:?}")]
    NotFound(String),
    #[error("the database: {0}")]
    Database(#[from] sled::Error),
}

impl base::HasKind for SilenceError {
    fn kind(&self) -> base::ErrorKind {
        match self {
            SilenceError::Invalid(_) => base::ErrorKind::InvalidArgument,
            SilenceError::NotFound(_) => base::ErrorKind::NotFound,
            SilenceError::Database(_) => base::ErrorKind::Internal,
        }
    }
}

pub struct Silences {
    tree: sled::Tree,
    cache: RwLock<Vec<Silence>>,
}

impl Silences {
    pub fn open(tree: sled::Tree) -> Silences {
        let all = tree
            .iter()
            .values()
            .filter_map(|v| v.ok().and_then(|v| serde_json::from_slice(&v).ok()))
            .collect();
        Silences {
            tree,
            cache: RwLock::new(all),
        }
    }

    /// Every silence not yet dropped, newest first.
    pub fn list(&self, now: i64) -> Vec<Silence> {
        self.forget_old(now);
        let mut all = self.cache.read().unwrap_or_else(|e| e.into_inner()).clone();
        all.sort_by_key(|s| std::cmp::Reverse(s.starts_at));
        all
    }

    /// Adds a silence (checked); its id.
    pub fn add(&self, mut s: Silence, now: i64) -> Result<String, SilenceError> {
        if s.matchers.is_empty() {
            return Err(SilenceError::Invalid(
                "at least one matcher is needed".into(),
            ));
        }
        for m in &s.matchers {
            if !base::labels::is_valid_label_name(&m.name) {
                return Err(SilenceError::Invalid(format!(
                    "bad label name {:?}",
                    m.name
                )));
            }
            if m.is_regex {
                Regex::new(&m.value)
                    .map_err(|e| SilenceError::Invalid(format!("bad regex {:?}: {e}", m.value)))?;
            }
        }
        if s.matchers.iter().all(|m| {
            !m.is_equal
                || (m.is_regex
                    && Regex::new(&format!("^(?:{})$", m.value)).is_ok_and(|r| r.is_match("")))
                || (!m.is_regex && m.value.is_empty())
        }) {
            return Err(SilenceError::Invalid(
                "the matchers would match every alert".into(),
            ));
        }
        if s.ends_at <= s.starts_at || s.ends_at <= now {
            return Err(SilenceError::Invalid(
                "endsAt must be after startsAt and in the future".into(),
            ));
        }
        s.id = format!("{:016x}{:08x}", now, rand::random::<u32>());
        self.tree
            .insert(s.id.as_bytes(), serde_json::to_vec(&s).unwrap_or_default())?;
        self.tree.flush()?;
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(s.clone());
        Ok(s.id)
    }

    /// Ends a silence now (Alertmanager's "expire").
    pub fn expire(&self, id: &str, now: i64) -> Result<(), SilenceError> {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        let s = cache
            .iter_mut()
            .find(|s| s.id == id)
            .ok_or_else(|| SilenceError::NotFound(id.to_string()))?;
        s.ends_at = s.ends_at.min(now);
        s.starts_at = s.starts_at.min(s.ends_at);
        self.tree
            .insert(id.as_bytes(), serde_json::to_vec(&*s).unwrap_or_default())?;
        Ok(())
    }

    /// The active silence that matches these labels, if any.
    pub fn silenced_by(&self, labels: &Labels, now: i64) -> Option<String> {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|s| s.state(now) == "active" && s.matches(labels))
            .map(|s| s.id.clone())
    }

    fn forget_old(&self, now: i64) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        cache.retain(|s| {
            let keep = now - s.ends_at < KEEP_EXPIRED_MS;
            if !keep {
                let _ = self.tree.remove(s.id.as_bytes());
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silence(matchers: Vec<Matcher>) -> Silence {
        Silence {
            id: String::new(),
            matchers,
            starts_at: 0,
            ends_at: 60_000,
            created_by: "me".into(),
            comment: "defrosting".into(),
        }
    }

    fn m(name: &str, value: &str, is_regex: bool, is_equal: bool) -> Matcher {
        Matcher {
            name: name.into(),
            value: value.into(),
            is_regex,
            is_equal,
        }
    }

    #[test]
    fn matching_states_and_refusals() {
        let s = Silences::open(
            sled::Config::new()
                .temporary(true)
                .open()
                .unwrap()
                .open_tree("s")
                .unwrap(),
        );
        let id = s
            .add(
                silence(vec![
                    m("device", "freez.*", true, true),
                    m("severity", "info", false, false),
                ]),
                1,
            )
            .unwrap();
        let freezer = Labels::from_pairs([
            ("alertname", "Warm"),
            ("device", "freezer"),
            ("severity", "page"),
        ]);
        let fridge = Labels::from_pairs([("alertname", "Warm"), ("device", "fridge")]);
        assert_eq!(s.silenced_by(&freezer, 10).as_deref(), Some(id.as_str()));
        assert_eq!(s.silenced_by(&fridge, 10), None);
        assert_eq!(s.silenced_by(&freezer, 60_000), None, "expired");
        s.expire(&id, 20).unwrap();
        assert_eq!(s.silenced_by(&freezer, 30), None);
        assert_eq!(s.list(30)[0].state(30), "expired");
        assert!(s.add(silence(vec![]), 1).is_err());
        assert!(s
            .add(silence(vec![m("device", ".*", true, true)]), 1)
            .is_err());
        assert!(s
            .add(silence(vec![m("device", "(", true, true)]), 1)
            .is_err());
        assert!(s
            .add(silence(vec![m("device", "x", false, true)]), 70_000)
            .is_err());
        assert!(
            s.list(20 + KEEP_EXPIRED_MS + 1).is_empty(),
            "dropped after a day"
        );
    }
}
