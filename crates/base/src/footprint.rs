//! What perch's own process costs the machine, by component: resident
//! memory and bytes written to disk — the two things a Raspberry Pi runs
//! short of (RAM shared with the page cache, an SD card that wears out
//! with every byte written). docs/performance.md explains the figures.
//!
//! Memory: every crate reports the structures it holds as
//! `perch_memory_bytes{component}` (estimated from lengths and capacities,
//! see [`memory`]) and the bounds it was configured with as
//! `perch_memory_limit_bytes{component}`; [`ProcessFootprint`] adds what
//! only the process sees — its program code resident, the heap allocated in
//! all, and the allocator's overhead — so that what no component claims
//! shows as a difference.
//!
//! Disk writes: the kernel counts the bytes each thread causes to be
//! written (`/proc/self/task/*/io`, at the moment pages are dirtied, so
//! write-back is counted against the writer); [`ProcessFootprint`] sums
//! them by the thread's name into `perch_disk_written_bytes_total
//! {component}` — perch's WAL and storage threads, sled's, the search
//! indexer's and tantivy's. Work done on the shared runtime threads counts
//! its own bytes with [`count_written`] (camera snapshots), and the rest of
//! the process's `write_bytes` is `other`.
//!
//! Calls nothing else in perch but the metrics model and `/proc` readers.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;

use crate::host::{number_after, process_written_bytes};
use crate::metrics::{MetricPoint, MetricSource};

/// Bytes a component holds in memory.
pub const MEMORY_BYTES: &str = "perch_memory_bytes";
/// The configured bound of a component's memory.
pub const MEMORY_LIMIT_BYTES: &str = "perch_memory_limit_bytes";
/// Bytes written to disk since perch started, by component.
pub const DISK_WRITTEN_BYTES: &str = "perch_disk_written_bytes_total";
/// The heap perch has allocated, all components together.
pub const ALLOCATED_BYTES: &str = "perch_memory_allocated_bytes";

/// `perch_memory_bytes{component}`: what one component holds, estimated
/// by the component from its structures (lengths and capacities).
pub fn memory(component: &str, bytes: usize) -> MetricPoint {
    MetricPoint::gauge(
        MEMORY_BYTES,
        "Resident memory by component: perch's structures as each component estimates them, and the process's code and allocator overhead (docs/performance.md).",
        bytes as f64,
    )
    .with_label("component", component)
}

/// `perch_memory_limit_bytes{component}`: the configured bound a
/// component's memory stays under (sled's cache, tantivy's writer heap).
pub fn memory_limit(component: &str, bytes: u64) -> MetricPoint {
    MetricPoint::gauge(
        MEMORY_LIMIT_BYTES,
        "The configured bound of a component's memory.",
        bytes as f64,
    )
    .with_label("component", component)
}

/// Which component a thread's writes belong to, by the thread's name as the
/// kernel keeps it (at most 15 bytes, so prefixes). The first match wins;
/// threads not listed are `other`.
const THREAD_COMPONENTS: &[(&str, &str)] = &[
    ("perch-wal", "wal"),
    // Checkpoints, compaction, rollups and retention.
    ("perch-storage", "storage"),
    // sled's I/O pool and its flusher.
    ("sled-io", "sled"),
    ("log flusher", "sled"),
    // The search indexer and tantivy's indexing, merging and store threads.
    ("perch-search", "search"),
    ("thrd-tantivy", "search"),
    ("segment_updater", "search"),
    ("merge_thread_", "search"),
    ("docstore-compre", "search"),
    ("perch-fwd-", "forward"),
];

/// Components whose writes happen on shared threads, counted by the writer.
static COUNTED: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());

/// Counts `bytes` written to disk by `component` on a thread shared with
/// other work (the runtime's), so that they are reported as that component
/// rather than `other`.
pub fn count_written(component: &'static str, bytes: u64) {
    *COUNTED.lock().entry(component).or_default() += bytes;
}

/// The component of a thread named `name`.
fn component_of_thread(name: &str) -> &'static str {
    THREAD_COMPONENTS
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map_or("other", |(_, c)| c)
}

/// The process-wide part of the footprint: resident memory split into code
/// and anonymous memory, the heap allocated and the allocator's overhead,
/// and disk writes by thread. Register one per process.
pub struct ProcessFootprint {
    /// The heap allocated, when the binary's allocator counts it.
    allocated: Option<fn() -> u64>,
    ledger: Mutex<WriteLedger>,
}

/// Per-thread write counts folded into per-component totals. A thread's
/// count is taken as a difference from its last reading, so a thread that
/// ends keeps what it wrote until then; what it wrote after its last
/// reading shows as `other`.
#[derive(Default)]
struct WriteLedger {
    /// Thread id → its name, its component and the `write_bytes` last read.
    threads: HashMap<u32, Seen>,
    totals: BTreeMap<&'static str, u64>,
    /// `other` as last reported: the process's total is read a moment
    /// apart from the threads', so the difference may dip; a counter must
    /// not.
    last_other: u64,
}

struct Seen {
    name: String,
    component: &'static str,
    written: u64,
}

impl ProcessFootprint {
    /// `allocated`: the heap allocated by the whole process, if the
    /// binary's global allocator counts it.
    pub fn new(allocated: Option<fn() -> u64>) -> ProcessFootprint {
        ProcessFootprint {
            allocated,
            ledger: Mutex::new(WriteLedger::default()),
        }
    }

    /// Bytes written so far, by component (`other` included), and the
    /// process's total.
    pub fn written(&self) -> (BTreeMap<&'static str, u64>, u64) {
        let total = process_written_bytes(std::process::id()).unwrap_or(0);
        let mut ledger = self.ledger.lock();
        ledger.read_threads();
        let mut by = ledger.totals.clone();
        for (c, n) in COUNTED.lock().iter() {
            *by.entry(c).or_default() += n;
        }
        let attributed: u64 = by.values().sum();
        let other = total.saturating_sub(attributed).max(ledger.last_other);
        ledger.last_other = other;
        by.insert("other", other);
        (by, total)
    }
}

impl WriteLedger {
    fn read_threads(&mut self) {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return;
        };
        let mut alive = Vec::new();
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let dir = task.path();
            let Ok(io) = std::fs::read_to_string(dir.join("io")) else {
                continue;
            };
            let Some(written) = number_after(&io, "write_bytes:") else {
                continue;
            };
            alive.push(tid);
            let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            let name = name.trim_end();
            let seen = self.threads.entry(tid).or_insert_with(|| Seen {
                name: name.to_string(),
                component: component_of_thread(name),
                written: 0,
            });
            // A thread id the kernel gave again, to a thread named alike or
            // not, starts from nothing.
            if seen.name != name || written < seen.written {
                *seen = Seen {
                    name: name.to_string(),
                    component: component_of_thread(name),
                    written: 0,
                };
            }
            let delta = written - seen.written;
            seen.written = written;
            if seen.component != "other" {
                *self.totals.entry(seen.component).or_default() += delta;
            }
        }
        // Forget threads that ended (thread ids are reused).
        self.threads.retain(|tid, _| alive.contains(tid));
    }
}

/// Resident memory of this process: (all, anonymous), from
/// `/proc/self/smaps_rollup`.
fn resident() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let rss = number_after(&text, "Rss:")? * 1024;
    let anon = number_after(&text, "Anonymous:")? * 1024;
    Some((rss, anon))
}

impl MetricSource for ProcessFootprint {
    fn collect(&self, out: &mut Vec<MetricPoint>) {
        if let Some((rss, anon)) = resident() {
            // File-backed pages: the binary's code and read-only data that
            // ran or was read, and any mapped file. The kernel can drop
            // them under pressure and read them again.
            out.push(memory("code", rss.saturating_sub(anon) as usize));
            if let Some(allocated) = self.allocated.map(|f| f()) {
                out.push(MetricPoint::gauge(
                    ALLOCATED_BYTES,
                    "Heap bytes perch has allocated and not freed, all components together.",
                    allocated as f64,
                ));
                // Freed memory the allocator has not returned yet, its
                // bookkeeping and fragmentation, and thread stacks.
                out.push(memory("allocator", anon.saturating_sub(allocated) as usize));
            }
        }
        let (by, _) = self.written();
        for (component, bytes) in by {
            out.push(
                MetricPoint::counter(
                    DISK_WRITTEN_BYTES,
                    "Bytes perch caused to be written to disk since it started, by component: the thread that wrote them (kernel's per-thread write_bytes), or the work that counted them.",
                    bytes as f64,
                )
                .with_label("component", component),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn threads_are_named_into_components() {
        assert_eq!(component_of_thread("perch-wal"), "wal");
        assert_eq!(component_of_thread("sled-io-3"), "sled");
        assert_eq!(component_of_thread("thrd-tantivy-in"), "search");
        assert_eq!(component_of_thread("perch-fwd-centr"), "forward");
        assert_eq!(component_of_thread("perch"), "other");
        assert_eq!(component_of_thread("tokio-runtime-w"), "other");
    }

    fn written_by(points: &[MetricPoint], component: &str) -> f64 {
        points
            .iter()
            .find(|p| {
                p.name == DISK_WRITTEN_BYTES
                    && p.labels == [("component".to_string(), component.to_string())]
            })
            .map_or(0.0, |p| p.value)
    }

    /// A thread named like the WAL's writes a file and syncs it: the bytes
    /// show under `wal` (the kernel counts them when the pages are
    /// dirtied), and the counted snapshot bytes under `snapshots`.
    #[test]
    fn writes_are_counted_by_the_thread_that_made_them() {
        let footprint = ProcessFootprint::new(Some(|| 1 << 20));
        let mut before = Vec::new();
        footprint.collect(&mut before);
        let (_, total_before) = footprint.written();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (wrote, read) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let writer = std::thread::Builder::new()
            .name("perch-wal".into())
            .spawn(move || {
                let mut f = std::fs::File::create(&path).unwrap();
                f.write_all(&vec![7u8; 256 << 10]).unwrap();
                f.sync_all().unwrap();
                wrote.0.send(()).unwrap();
                // A thread's own count goes with it: stay until it is read.
                let _ = read.1.recv();
            })
            .unwrap();
        wrote.1.recv().unwrap();
        count_written("snapshots", 4096);
        let mut after = Vec::new();
        footprint.collect(&mut after);
        let (_, total_after) = footprint.written();
        read.0.send(()).unwrap();
        writer.join().unwrap();
        let wal = written_by(&after, "wal") - written_by(&before, "wal");
        // A target directory on tmpfs counts no writes at all.
        if total_after > total_before {
            assert!(wal >= (256 << 10) as f64, "wal: {wal}");
        }
        assert!(written_by(&after, "snapshots") - written_by(&before, "snapshots") >= 4096.0);
        let code = after
            .iter()
            .find(|p| p.name == MEMORY_BYTES && p.labels[0].1 == "code")
            .expect("code is reported");
        assert!(code.value > 0.0);
        assert!(after
            .iter()
            .any(|p| p.name == ALLOCATED_BYTES && p.value == (1 << 20) as f64));
    }
}
