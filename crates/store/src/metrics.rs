//! The store's self-metrics, and the way self-metrics become stored series.
//!
//! Owns `impl MetricSource for Storage` (what the store reports about itself,
//! read through [`Storage`]'s public API only) and [`to_series`] /
//! [`record`], which turn any registry's points into ordinary series so the
//! dashboard and PromQL see perch's own health like any sensor. Calls
//! `system::metrics`; the dependency points storage → system, as for the
//! clock.

use std::sync::atomic::Ordering;

use super::files::BlockWrite;
use super::labels::{Labels, METRIC_NAME};
use super::{AppendResult, SeriesSamples, Storage, StorageError};
use base::metrics::{MetricPoint, MetricSource, Registry};

impl MetricSource for Storage {
    fn collect(&self, out: &mut Vec<MetricPoint>) {
        let c = &self.counters;
        let counter = |name, help, v: &std::sync::atomic::AtomicU64| {
            MetricPoint::counter(name, help, v.load(Ordering::Relaxed) as f64)
        };
        out.push(MetricPoint::gauge(
            "perch_storage_series",
            "Series the store knows.",
            self.series_count() as f64,
        ));
        out.push(counter(
            "perch_storage_samples_appended_total",
            "Samples accepted by the store since perch started.",
            &c.samples_appended,
        ));
        out.push(counter(
            "perch_storage_samples_rejected_total",
            "Samples refused (invalid series, out of bounds, series limit) since perch started.",
            &c.samples_rejected,
        ));
        out.push(counter(
            "perch_storage_self_samples_total",
            "Samples of perch's own metrics stored (part of perch_storage_samples_appended_total, and of the WAL's and blocks' writes in that share).",
            &c.self_samples,
        ));
        out.push(counter(
            "perch_storage_checkpoints_total",
            "Checkpoints (head written out as blocks) since perch started.",
            &c.checkpoints,
        ));
        out.push(counter(
            "perch_storage_windows_dropped_total",
            "Time windows deleted by retention or the disk budget since perch started.",
            &c.windows_dropped,
        ));
        out.push(MetricPoint::gauge(
            "perch_storage_head_samples",
            "Samples held in memory, not yet written out as blocks.",
            self.pending_samples() as f64,
        ));
        // `disk_usage` is the disk budget's ledger (its last look plus what
        // was written since), not a walk of the directories on each scrape.
        out.push(MetricPoint::gauge(
            "perch_storage_disk_usage_bytes",
            "Bytes the store occupies on disk (block files, database, write-ahead log).",
            self.disk_usage() as f64,
        ));
        out.push(MetricPoint::gauge(
            "perch_storage_disk_budget_bytes",
            "Most bytes the data directory may hold (storage.max_disk_bytes).",
            self.disk_budget() as f64,
        ));
        out.push(MetricPoint::gauge(
            "perch_storage_disk_budget_used_bytes",
            "Bytes counted against storage.max_disk_bytes: the store's files, the search index and snapshots, and samples accepted but not yet written.",
            self.disk_budget_usage().total() as f64,
        ));
        let wal = [("wal", self.wal.appended_bytes())];
        let blocks = BlockWrite::ALL.map(|w| (w.name(), self.files.written(w)));
        for (kind, bytes) in wal.into_iter().chain(blocks) {
            out.push(
                MetricPoint::counter(
                    "perch_storage_written_bytes_total",
                    "Bytes the store wrote to its files since perch started, by purpose (before the filesystem; sled's own writes are not included).",
                    bytes as f64,
                )
                .with_label("kind", kind),
            );
        }
        let memory = self.memory();
        out.push(base::footprint::memory("store_head", memory.head));
        out.push(base::footprint::memory(
            "store_wal_buffer",
            memory.wal_buffer,
        ));
        out.push(base::footprint::memory(
            "store_series_index",
            memory.series_index,
        ));
        out.push(base::footprint::memory(
            "store_block_index",
            memory.block_index,
        ));
        out.push(base::footprint::memory_limit(
            "sled_cache",
            self.config.cache_bytes.0,
        ));
        out.push(MetricPoint::gauge(
            "perch_storage_problems",
            "Problems the store reports at /api/v1/status/tsdb (0 when healthy).",
            self.problems().len() as f64,
        ));
    }
}

/// Points as series to store, each with one sample at `now_ms`. A point's
/// labels and its name become the series' labels; the store validates them.
pub fn to_series(points: &[MetricPoint], now_ms: i64) -> Vec<SeriesSamples> {
    points
        .iter()
        .map(|p| {
            SeriesSamples::new(
                Labels::from_pairs(
                    std::iter::once((METRIC_NAME, p.name.as_str()))
                        .chain(p.labels.iter().map(|(n, v)| (n.as_str(), v.as_str()))),
                ),
                vec![(now_ms, p.value)],
            )
        })
        .collect()
}

/// Gathers `registry` and stores the points, stamped with the store's clock.
/// Blocking (it reads `/proc` and appends): call it from a blocking thread.
pub fn record(registry: &Registry, storage: &Storage) -> Result<AppendResult, StorageError> {
    let points = registry.gather();
    let result = storage.append(&to_series(&points, storage.now_ms()))?;
    storage
        .counters
        .self_samples
        .fetch_add(result.samples as u64, Ordering::Relaxed);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_become_one_sample_series() {
        let points = vec![
            MetricPoint::counter("a_total", "", 3.0).with_label("x", "1"),
            MetricPoint::gauge("b", "", 0.5),
        ];
        let s = to_series(&points, 1_000);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].labels.metric_name(), Some("a_total"));
        assert_eq!(s[0].labels.get("x"), Some("1"));
        assert_eq!(s[0].samples, vec![(1_000, 3.0)]);
        assert_eq!(s[1].labels.len(), 1);
        assert_eq!(s[1].samples, vec![(1_000, 0.5)]);
    }
}
