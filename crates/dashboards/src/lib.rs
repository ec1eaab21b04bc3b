//! Saved dashboards: named JSON documents that the web UI designs (panels,
//! queries, time range), kept in the sled tree `dashboards`. perch checks
//! only their name and size; what a panel means is the UI's business.
//! Uses `base` and its tree from `store` (`store::Tree::Dashboards`).
//!
//! Documents are kept as they came, so a relative time range stays
//! relative (`{"from": "now-6h", "to": "now"}` opens on the last six hours
//! whenever it is opened), and documents of older dashboards — fixed
//! timestamps, no legends or units per query — are returned unchanged for
//! the page to read (web/assets/pages/metrics.js, `normalise`).

use serde::Serialize;
use thiserror::Error;

/// A dashboard document's largest size: dozens of panels fit easily.
pub const MAX_DASHBOARD_BYTES: usize = 256 * 1024;

#[derive(Debug, Error)]
pub enum DashboardError {
    #[error("invalid dashboard name {0:?}: use 1 to 100 characters, no '/' or control characters")]
    BadName(String),
    #[error("a dashboard must be a JSON object of at most {MAX_DASHBOARD_BYTES} bytes: {0}")]
    BadDocument(String),
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
    #[error(transparent)]
    Store(#[from] store::StorageError),
}

impl base::HasKind for DashboardError {
    fn kind(&self) -> base::ErrorKind {
        use base::ErrorKind as K;
        match self {
            DashboardError::Db(_) | DashboardError::Store(_) => K::Internal,
            DashboardError::BadName(_) | DashboardError::BadDocument(_) => K::InvalidArgument,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct DashboardSummary {
    pub name: String,
    pub updated_ms: i64,
}

pub struct Dashboards {
    tree: sled::Tree,
}

fn valid_name(name: &str) -> bool {
    !name.trim().is_empty()
        && name.chars().count() <= 100
        && !name.chars().any(|c| c == '/' || c.is_control())
}

impl Dashboards {
    pub fn open(trees: &store::Trees) -> Result<Dashboards, DashboardError> {
        Ok(Dashboards {
            tree: trees.open(store::Tree::Dashboards)?,
        })
    }

    pub fn list(&self) -> Result<Vec<DashboardSummary>, DashboardError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item?;
            let updated_ms = serde_json::from_slice::<serde_json::Value>(&v)
                .ok()
                .and_then(|d| d.get("updated_ms").and_then(|t| t.as_i64()))
                .unwrap_or(0);
            out.push(DashboardSummary {
                name: String::from_utf8_lossy(&k).into_owned(),
                updated_ms,
            });
        }
        Ok(out)
    }

    pub fn get(&self, name: &str) -> Result<Option<serde_json::Value>, DashboardError> {
        Ok(self
            .tree
            .get(name.as_bytes())?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Saves `body` under `name`, stamping `name` and `updated_ms` into it.
    pub fn put(&self, name: &str, body: &[u8], now_ms: i64) -> Result<(), DashboardError> {
        if !valid_name(name) {
            return Err(DashboardError::BadName(name.to_string()));
        }
        if body.len() > MAX_DASHBOARD_BYTES {
            return Err(DashboardError::BadDocument(format!(
                "{} bytes given",
                body.len()
            )));
        }
        let mut doc: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| DashboardError::BadDocument(e.to_string()))?;
        let Some(obj) = doc.as_object_mut() else {
            return Err(DashboardError::BadDocument("not an object".into()));
        };
        obj.insert("name".into(), name.into());
        obj.insert("updated_ms".into(), now_ms.into());
        self.tree.insert(
            name.as_bytes(),
            serde_json::to_vec(&doc).expect("serializable"),
        )?;
        self.tree.flush()?;
        Ok(())
    }

    pub fn delete(&self, name: &str) -> Result<bool, DashboardError> {
        let existed = self.tree.remove(name.as_bytes())?.is_some();
        self.tree.flush()?;
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn open() -> Dashboards {
        Dashboards::open(&store::Trees::temporary().unwrap()).unwrap()
    }

    #[test]
    fn a_relative_range_stays_relative() {
        let d = open();
        let doc = json!({
            "version": 2,
            "range": {"from": "now-6h", "to": "now"},
            "refresh": "auto",
            "panels": [{"title": "", "kind": "line", "queries": ["temperature"],
                        "legends": ["{{device}}"], "units": ["°C"], "camera": ""}],
        });
        d.put("greenhouse", doc.to_string().as_bytes(), 1_000)
            .unwrap();
        let got = d.get("greenhouse").unwrap().unwrap();
        assert_eq!(got["range"], json!({"from": "now-6h", "to": "now"}));
        assert_eq!(got["panels"], doc["panels"]);
        assert_eq!(got["refresh"], "auto");
        assert_eq!(got["name"], "greenhouse");
        assert_eq!(got["updated_ms"], 1_000);
    }

    #[test]
    fn older_documents_with_fixed_times_come_back_unchanged() {
        let d = open();
        let doc = json!({
            "range": {"from": 1_714_557_600_000_i64, "to": "1714561200000"},
            "refresh": 0,
            "panels": [{"title": "", "kind": "line", "queries": ["env_temp"], "camera": ""}],
        });
        d.put("old", doc.to_string().as_bytes(), 5).unwrap();
        let got = d.get("old").unwrap().unwrap();
        for key in ["range", "refresh", "panels"] {
            assert_eq!(got[key], doc[key], "{key}");
        }
        let names: Vec<String> = d.list().unwrap().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["old"]);
    }

    #[test]
    fn bad_names_and_documents_are_refused() {
        let d = open();
        assert!(matches!(
            d.put("a/b", b"{}", 0),
            Err(DashboardError::BadName(_))
        ));
        assert!(matches!(
            d.put(" ", b"{}", 0),
            Err(DashboardError::BadName(_))
        ));
        assert!(matches!(
            d.put("x", b"[1]", 0),
            Err(DashboardError::BadDocument(_))
        ));
        assert!(matches!(
            d.put("x", b"not json", 0),
            Err(DashboardError::BadDocument(_))
        ));
        assert!(d.get("x").unwrap().is_none());
        assert!(!d.delete("x").unwrap());
    }
}
