//! The indexer thread: messages → documents of the day they belong to,
//! commits every `commit_interval`, retention and sizes every few seconds.
//! One day's writer is open at a time (messages arrive in time order, stamped
//! by the broker's clock); another day's message commits it and moves on.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tantivy::indexer::IndexWriterOptions;
use tantivy::IndexWriter;

use super::period::{day_name, day_of, day_start_ms, parse_day, Day, Period};
use super::schema::{document, payload_text, Skip};
use super::{Job, Message, SearchError, Shared};
use base::Clock;
use config::SearchConfig;

/// How often retention runs and the size of `search/` is measured.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(10);

pub(super) struct Writer {
    config: SearchConfig,
    root: PathBuf,
    data_dir: PathBuf,
    clock: Arc<dyn Clock>,
    shared: Arc<Shared>,
    current: Option<Current>,
    last_commit: Instant,
    last_maintenance: Option<Instant>,
}

struct Current {
    period: Arc<Period>,
    writer: IndexWriter,
    /// Documents added since the last commit.
    pending: u64,
}

impl Writer {
    pub(super) fn new(
        config: SearchConfig,
        root: PathBuf,
        data_dir: PathBuf,
        clock: Arc<dyn Clock>,
        shared: Arc<Shared>,
    ) -> Writer {
        Writer {
            config,
            root,
            data_dir,
            clock,
            shared,
            current: None,
            last_commit: Instant::now(),
            last_maintenance: None,
        }
    }

    pub(super) fn run(mut self, rx: Receiver<Job>) {
        let interval = self.config.commit_interval.0;
        loop {
            let pending = self.current.as_ref().is_some_and(|c| c.pending > 0);
            let wait = if pending {
                interval.saturating_sub(self.last_commit.elapsed())
            } else {
                MAINTENANCE_INTERVAL
            };
            match rx.recv_timeout(wait) {
                Ok(Job::Message(m)) => {
                    self.add(m);
                    // Take what is queued without looking at the clock.
                    for _ in 0..1024 {
                        match rx.try_recv() {
                            Ok(Job::Message(m)) => self.add(m),
                            Ok(Job::Flush(reply)) => {
                                self.commit();
                                let _ = reply.send(());
                            }
                            Ok(Job::Stop) => return self.stop(),
                            Err(_) => break,
                        }
                    }
                }
                Ok(Job::Flush(reply)) => {
                    self.commit();
                    let _ = reply.send(());
                }
                Ok(Job::Stop) | Err(RecvTimeoutError::Disconnected) => return self.stop(),
                Err(RecvTimeoutError::Timeout) => {}
            }
            if self.last_commit.elapsed() >= interval {
                self.commit();
            }
            if self
                .last_maintenance
                .is_none_or(|t| t.elapsed() >= MAINTENANCE_INTERVAL)
            {
                self.maintain();
            }
        }
    }

    fn stop(mut self) {
        self.commit();
        if let Some(c) = self.current.take() {
            // Let merges that are under way finish rather than leave their
            // files for the next start to clean up.
            if let Err(e) = c.writer.wait_merging_threads() {
                tracing::warn!(error = %e, "search index: merge at shutdown failed");
            }
        }
        tracing::info!("search index committed");
    }

    fn add(&mut self, m: Message) {
        let s = self.shared.clone();
        s.queued_bytes
            .fetch_sub(m.payload.len() + m.topic.len(), Ordering::Relaxed);
        s.queued_messages.fetch_sub(1, Ordering::Relaxed);
        let c = &s.counters;
        let text = match payload_text(&m.payload, self.config.index_numeric) {
            Ok(t) => t,
            Err(skip) => {
                let counter = match skip {
                    Skip::Binary => &c.skipped_binary,
                    Skip::Numeric => &c.skipped_numeric,
                    Skip::Empty => &c.skipped_empty,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let doc = document(&s.fields, &m, text);
        let day = day_of(m.time_ms);
        if self
            .current
            .as_ref()
            .is_none_or(|cur| cur.period.day != day)
        {
            if let Err(e) = self.switch_to(day) {
                c.failed.fetch_add(1, Ordering::Relaxed);
                self.report(format!(
                    "cannot open the search index of {}: {e}",
                    day_name(day)
                ));
                return;
            }
        }
        let Some(cur) = self.current.as_mut() else {
            return;
        };
        match cur.writer.add_document(doc) {
            Ok(_) => {
                cur.pending += 1;
            }
            Err(e) => {
                c.failed.fetch_add(1, Ordering::Relaxed);
                self.report(format!("search index refused a message: {e}"));
                self.current = None;
            }
        }
    }

    /// Commits the open day and opens `day`'s writer.
    fn switch_to(&mut self, day: Day) -> Result<(), SearchError> {
        self.commit();
        self.current = None;
        let existing = self.shared.periods.read().get(&day).cloned();
        let period = match existing {
            Some(p) => p,
            None => {
                let p = Arc::new(Period::open_or_create(&self.root, day)?);
                self.shared.periods.write().insert(day, p.clone());
                p
            }
        };
        let heap = self.config.writer_heap.0 as usize;
        let options = IndexWriterOptions::builder()
            .memory_budget_per_thread(heap)
            .num_worker_threads(1)
            .num_merge_threads(1)
            .build();
        let writer = period.index.writer_with_options(options)?;
        self.current = Some(Current {
            period,
            writer,
            pending: 0,
        });
        Ok(())
    }

    /// Makes what was added searchable.
    fn commit(&mut self) {
        self.last_commit = Instant::now();
        let Some(cur) = self.current.as_mut() else {
            return;
        };
        if cur.pending == 0 {
            return;
        }
        let n = cur.pending;
        let result = cur
            .writer
            .commit()
            .map_err(SearchError::from)
            .and_then(|_| cur.period.reader.reload().map_err(SearchError::from));
        match result {
            Ok(()) => {
                cur.pending = 0;
                let c = &self.shared.counters;
                c.indexed.fetch_add(n, Ordering::Relaxed);
                c.commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.shared.counters.failed.fetch_add(n, Ordering::Relaxed);
                self.report(format!("cannot commit the search index: {e}"));
                // A writer that failed a commit is not trusted again: the next
                // message reopens the day at its last commit.
                self.current = None;
            }
        }
    }

    fn report(&self, p: String) {
        tracing::error!("{p}");
        self.shared.problem(p);
    }

    /// Retention by age, then by bytes; records the size of `search/`.
    pub(super) fn maintain(&mut self) {
        self.last_maintenance = Some(Instant::now());
        let now = self.clock.now_ms();
        let cutoff = now.saturating_sub(self.config.retention.as_millis_i64());
        let current = self.current.as_ref().map(|c| c.period.day);
        // Day directories and damaged ones set aside, oldest first.
        let mut entries: Vec<(Day, bool, PathBuf, u64)> = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&self.root) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(day) = parse_day(&name) else {
                    continue;
                };
                let damaged = name.len() != 8;
                let size = base::disk::dir_size(&e.path());
                entries.push((day, !damaged, e.path(), size));
            }
        }
        entries.sort();
        let mut total: u64 = entries.iter().map(|e| e.3).sum();
        let partition = base::disk::partition_usage(&self.data_dir)
            .map(|u| u.total_bytes)
            .unwrap_or(0);
        let budget = self.config.max_disk_bytes.resolve(partition);
        self.shared.disk_budget.store(budget, Ordering::Relaxed);
        for (day, live, dir, size) in entries {
            let too_old = day_start_ms(day + 1) <= cutoff;
            let too_big = total > budget;
            if !(too_old || too_big) || (live && Some(day) == current) {
                continue;
            }
            if live {
                self.shared.periods.write().remove(&day);
            }
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    total = total.saturating_sub(size);
                    self.shared
                        .counters
                        .periods_deleted
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        dir = %dir.display(),
                        reason = if too_old { "search.retention" } else { "search.max_disk_bytes" },
                        "deleted a day of the search index"
                    );
                }
                Err(e) => self.report(format!("cannot delete {}: {e}", dir.display())),
            }
        }
        if total > budget {
            tracing::warn!(
                bytes = total,
                budget,
                "the search index of today alone is over search.max_disk_bytes"
            );
        }
        self.shared.disk_bytes.store(total, Ordering::Relaxed);
    }
}
