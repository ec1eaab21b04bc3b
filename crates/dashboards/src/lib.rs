//! Saved dashboards: named JSON documents that the web UI designs (panels,
//! queries, time range), kept in the sled tree `dashboards`. perch checks
//! only their name and size; what a panel means is the UI's business.
//! Uses `base` and its tree from `store` (`store::Tree::Dashboards`).

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
