//! The sled trees other crates keep in the one database. The store owns the
//! database; every other crate gets its trees through [`Trees`], by a
//! [`Tree`] and never by a string, so that this file is the complete list
//! of what `db/` holds besides the store's own trees (`series`,
//! `series_span`, `blocks`, `measurements`, `meta`). Tree names are part of the on-disk
//! format: renaming one is a format step with its upgrade (`format.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::space::{Budget, Reservation as DiskReservation};
use crate::{BudgetFull, StorageError};

/// A tree some crate other than the store owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tree {
    /// accounts: name → role, argon2 hash, device topic filters.
    Users,
    /// accounts: sha256(cookie) → user, CSRF token, expiry.
    Sessions,
    /// accounts: id → name, role, sha256(secret), last use.
    Tokens,
    /// dashboards: name → the dashboard's JSON.
    Dashboards,
    /// mqtt: topic → retained message.
    Retained,
    /// cameras: name → camera added through the API.
    Cameras,
    /// cameras: camera, id → snapshot metadata.
    Snapshots,
    /// forward: name → forwarding target added through the API (JSON).
    ForwardTargets,
    /// devices: device id → what perch knows of the device (JSON).
    Devices,
    /// alerts: rule (file, group, position, name) → its pending, firing
    /// and recently resolved alerts (JSON), so they survive a restart.
    Alerts,
    /// alerts: notification target, sequence → a message waiting to be
    /// delivered (JSON).
    AlertNotifications,
    /// alerts: name → a rule file added through the API, as sent (YAML).
    AlertRuleFiles,
    /// alerts: silence id → a silence (JSON).
    AlertSilences,
}

impl Tree {
    pub const ALL: [Tree; 13] = [
        Tree::Users,
        Tree::Sessions,
        Tree::Tokens,
        Tree::Dashboards,
        Tree::Retained,
        Tree::Cameras,
        Tree::Snapshots,
        Tree::ForwardTargets,
        Tree::Devices,
        Tree::Alerts,
        Tree::AlertNotifications,
        Tree::AlertRuleFiles,
        Tree::AlertSilences,
    ];

    /// The tree's name in the database.
    pub fn name(self) -> &'static str {
        match self {
            Tree::Users => "users",
            Tree::Sessions => "sessions",
            Tree::Tokens => "tokens",
            Tree::Dashboards => "dashboards",
            Tree::Retained => "retained",
            Tree::Cameras => "cameras",
            Tree::Snapshots => "snapshots",
            Tree::ForwardTargets => "forward_targets",
            Tree::Devices => "devices",
            Tree::Alerts => "alerts",
            Tree::AlertNotifications => "alert_notifications",
            Tree::AlertRuleFiles => "alert_rule_files",
            Tree::AlertSilences => "alert_silences",
        }
    }
}

/// Prefix of the per-target forwarding queues, `forward.<target>`.
const FORWARD_QUEUE_PREFIX: &str = "forward.";

/// Access to the trees of [`Tree`] and to the forwarding queues, and to the
/// data directory's disk budget for crates that write files there; cheap to
/// clone.
#[derive(Clone)]
pub struct Trees {
    db: sled::Db,
    data_dir: Option<PathBuf>,
    budget: Option<Arc<Budget>>,
}

impl Trees {
    pub(crate) fn new(
        db: sled::Db,
        data_dir: Option<PathBuf>,
        budget: Option<Arc<Budget>>,
    ) -> Trees {
        Trees {
            db,
            data_dir,
            budget,
        }
    }

    /// The data directory the database lives in (none for
    /// [`Trees::temporary`]), for small files kept outside the database on
    /// purpose (the accounts marker: it must survive a quarantined
    /// database).
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    /// Takes room in the disk budget (`storage.max_disk_bytes`) for a file
    /// of `bytes` about to be written in the data directory: reserve, then
    /// write. Refused when the budget is full; always granted when no store
    /// runs (the command line).
    /// Keep the reservation until the file is written.
    pub fn reserve_disk(
        &self,
        what: &'static str,
        bytes: u64,
    ) -> Result<DiskReservation, StorageError> {
        let Some(budget) = &self.budget else {
            return Ok(DiskReservation::none());
        };
        budget.reserve_other(bytes).map_err(|usage| {
            StorageError::BudgetFull(BudgetFull {
                what,
                usage,
                needed: bytes,
                nothing_to_drop: false,
            })
        })
    }

    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Trees in a database of their own that vanishes when dropped: for
    /// the tests of the crates that keep trees.
    pub fn temporary() -> Result<Trees, StorageError> {
        Ok(Trees {
            db: sled::Config::new().temporary(true).open()?,
            data_dir: None,
            budget: None,
        })
    }

    pub fn open(&self, tree: Tree) -> Result<sled::Tree, StorageError> {
        Ok(self.db.open_tree(tree.name())?)
    }

    /// The queue of forwarding target `target` (a name of letters, digits,
    /// `-` and `_`), created if missing.
    pub fn forward_queue(&self, target: &str) -> Result<sled::Tree, StorageError> {
        Ok(self.db.open_tree(forward_queue_name(target))?)
    }

    /// Deletes a forwarding target's queue with all it holds.
    pub fn drop_forward_queue(&self, target: &str) -> Result<(), StorageError> {
        self.db.drop_tree(forward_queue_name(target))?;
        Ok(())
    }
}

fn forward_queue_name(target: &str) -> String {
    format!("{FORWARD_QUEUE_PREFIX}{target}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_on_disk_ones() {
        let names: Vec<&str> = Tree::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(
            names,
            [
                "users",
                "sessions",
                "tokens",
                "dashboards",
                "retained",
                "cameras",
                "snapshots",
                "forward_targets",
                "devices",
                "alerts",
                "alert_notifications",
                "alert_rule_files",
                "alert_silences"
            ]
        );
        assert_eq!(forward_queue_name("cloud"), "forward.cloud");
    }

    #[test]
    fn queues_are_separate_and_dropped_alone() {
        let trees = Trees::temporary().unwrap();
        trees.forward_queue("a").unwrap().insert("k", "1").unwrap();
        trees.forward_queue("b").unwrap().insert("k", "2").unwrap();
        trees.drop_forward_queue("a").unwrap();
        assert!(trees.forward_queue("a").unwrap().is_empty());
        assert_eq!(
            trees.forward_queue("b").unwrap().get("k").unwrap().unwrap(),
            b"2"[..]
        );
    }
}
