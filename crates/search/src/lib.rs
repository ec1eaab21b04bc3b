//! Full-text search over the MQTT message history. Owns everything under the
//! data directory's `search/`: one tantivy index per UTC day in
//! `search/<yyyymmdd>/`, written by one indexer thread and read by queries
//! that fan out over the days a time range covers, and the ranking of
//! series names for autocomplete. Uses `base` and `config` (and `store` in
//! its benchmark only, to load series); the server hands it messages
//! (through the collector's `MessageSink`), http reads from it, nothing
//! reaches inside.
//!
//! Write path: [`Search::offer`] (on the collector thread) puts the message
//! on a bounded queue and returns; when the queue is full the message is
//! counted as dropped, never waited for. The indexer thread turns messages
//! into documents and commits every `search.commit_interval`, which is what
//! makes them searchable — and all a crash can lose: tantivy commits are
//! atomic, so after a kill the index reopens at its last commit. A day that
//! cannot be opened is moved aside (`<yyyymmdd>.damaged-<ms>`), started
//! afresh and reported in the log, the status and `problems`.
//!
//! Retention deletes whole days: those older than `search.retention`, then
//! the oldest while `search/` is over `search.max_disk_bytes`.

pub mod bench;
mod history;
mod period;
mod query;
pub mod schema;
pub mod series;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tantivy::query::QueryParser;
use thiserror::Error;

use base::Clock;
use config::SearchConfig;

pub use history::StoredMessage;
pub use period::{day_name, day_of};
pub use query::{Histogram, Hit, SearchRequest, SearchResult, Sort};
pub use schema::Message;

use period::{Day, Period};
use schema::Fields;

/// Messages waiting for the indexer, at most.
const QUEUE_MESSAGES: usize = 131_072;
/// Payload and topic bytes waiting for the indexer, at most.
const QUEUE_BYTES: usize = 32 << 20;

#[derive(Debug, Error)]
pub enum SearchError {
    #[error("invalid query: {0}")]
    BadQuery(String),
    #[error("{0}")]
    BadRequest(String),
    /// Too long, too deep or too many terms (`base::limits`), found before
    /// tantivy's parser, which recurses, sees the query.
    #[error(transparent)]
    Limit(#[from] base::limits::LimitError),
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("damaged search index: {0}")]
    Damaged(String),
    #[error("search is stopped")]
    Stopped,
}

impl base::HasKind for SearchError {
    fn kind(&self) -> base::ErrorKind {
        use base::ErrorKind as K;
        match self {
            SearchError::BadQuery(_) | SearchError::BadRequest(_) | SearchError::Limit(_) => {
                K::InvalidArgument
            }
            SearchError::Stopped => K::Unavailable,
            SearchError::Damaged(_) => K::DataLoss,
            SearchError::Index(_) | SearchError::Io(_) => K::Internal,
        }
    }
}

impl SearchError {
    /// The request was at fault (HTTP 400), not the index.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            SearchError::BadQuery(_) | SearchError::BadRequest(_) | SearchError::Limit(_)
        )
    }
}

#[derive(Default)]
pub struct Counters {
    pub indexed: AtomicU64,
    pub skipped_binary: AtomicU64,
    pub skipped_too_large: AtomicU64,
    pub skipped_numeric: AtomicU64,
    pub skipped_empty: AtomicU64,
    /// The queue was full: the indexer could not keep up.
    pub dropped: AtomicU64,
    /// Lost because the index refused them (disk errors).
    pub failed: AtomicU64,
    pub commits: AtomicU64,
    pub periods_deleted: AtomicU64,
}

/// What `GET /api/v1/search/status` shows.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchStatus {
    pub periods: Vec<PeriodStatus>,
    pub documents: u64,
    pub bytes_on_disk: u64,
    pub disk_budget_bytes: u64,
    pub indexed: u64,
    pub skipped_binary: u64,
    pub skipped_too_large: u64,
    pub skipped_numeric: u64,
    pub skipped_empty: u64,
    pub dropped: u64,
    pub failed: u64,
    pub queued: usize,
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PeriodStatus {
    pub day: String,
    pub documents: u64,
    pub segments: usize,
}

enum Job {
    Message(Message),
    /// Commit now, then answer.
    Flush(mpsc::Sender<()>),
    Stop,
}

struct Shared {
    fields: Fields,
    parser: QueryParser,
    periods: RwLock<BTreeMap<Day, Arc<Period>>>,
    counters: Counters,
    problems: Mutex<Vec<String>>,
    queued_messages: AtomicUsize,
    queued_bytes: AtomicUsize,
    /// Size of `search/`, as of the last look.
    disk_bytes: AtomicU64,
    disk_budget: AtomicU64,
}

impl Shared {
    /// The schema and the query parser, with no day open yet.
    fn new() -> Shared {
        let (schema, fields) = Fields::build();
        let template = tantivy::Index::create_in_ram(schema);
        schema::register_tokenizers(&template);
        let mut parser = QueryParser::for_index(&template, vec![fields.payload, fields.topic]);
        parser.set_conjunction_by_default();
        parser.allow_regexes();
        Shared {
            fields,
            parser,
            periods: RwLock::new(BTreeMap::new()),
            counters: Counters::default(),
            problems: Mutex::new(Vec::new()),
            queued_messages: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            disk_bytes: AtomicU64::new(0),
            disk_budget: AtomicU64::new(0),
        }
    }

    fn problem(&self, p: String) {
        let mut v = self.problems.lock();
        if !v.contains(&p) {
            // Keep the first ones: they explain the later ones.
            if v.len() < 20 {
                v.push(p);
            }
        }
    }
}

/// Reads a query as a search does, without an index: for the fuzz targets
/// (`fuzz/`), which feed it any text.
#[doc(hidden)]
pub fn parse_query(q: &str) -> Result<(), SearchError> {
    static SHARED: std::sync::OnceLock<Shared> = std::sync::OnceLock::new();
    query::parse(SHARED.get_or_init(Shared::new), q).map(|_| ())
}

pub struct Search {
    config: SearchConfig,
    shared: Arc<Shared>,
    tx: Sender<Job>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    stopped: AtomicBool,
}

impl Search {
    /// Opens (or creates) `<data_dir>/search/` and starts the indexer.
    /// Days that cannot be opened are moved aside and reported.
    pub fn open(
        config: &SearchConfig,
        data_dir: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Search>, SearchError> {
        let root = data_dir.join("search");
        std::fs::create_dir_all(&root)?;
        let shared = Arc::new(Shared::new());
        open_periods(&root, &shared, clock.now_ms())?;
        // Bounded by the counters, not the channel: a bounded channel
        // allocates all its slots up front (12 MiB for QUEUE_MESSAGES).
        let (tx, rx) = mpsc::channel();
        let mut ctx = writer::Writer::new(
            config.clone(),
            root,
            data_dir.to_path_buf(),
            clock,
            shared.clone(),
        );
        // Retention and sizes before `open` returns, so a restart with a
        // shorter retention has applied it by the time perch is ready.
        ctx.maintain();
        let thread = std::thread::Builder::new()
            .name("perch-search".into())
            .spawn(move || ctx.run(rx))?;
        Ok(Arc::new(Search {
            config: config.clone(),
            shared,
            tx,
            thread: Mutex::new(Some(thread)),
            stopped: AtomicBool::new(false),
        }))
    }

    /// Queues a message for indexing; never waits. Too large and (when the
    /// queue is full) dropped messages are counted.
    pub fn offer(&self, m: Message) {
        let c = &self.shared.counters;
        if m.payload.len() as u64 > self.config.max_payload_bytes.0 {
            c.skipped_too_large.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let bytes = m.payload.len() + m.topic.len();
        if self.shared.queued_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes > QUEUE_BYTES {
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            c.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let full = self.shared.queued_messages.fetch_add(1, Ordering::Relaxed) >= QUEUE_MESSAGES;
        if full || self.tx.send(Job::Message(m)).is_err() {
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.shared.queued_messages.fetch_sub(1, Ordering::Relaxed);
            c.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues a message, waiting while the queue is full (benchmarks).
    pub fn submit(&self, m: Message) -> Result<(), SearchError> {
        let bytes = m.payload.len() + m.topic.len();
        let full = || {
            let queued = self.shared.queued_bytes.load(Ordering::Relaxed);
            self.shared.queued_messages.load(Ordering::Relaxed) >= QUEUE_MESSAGES
                || (queued > 0 && queued + bytes > QUEUE_BYTES)
        };
        while full() {
            let writer_gone = self.thread.lock().as_ref().is_none_or(|t| t.is_finished());
            if self.stopped.load(Ordering::Relaxed) || writer_gone {
                return Err(SearchError::Stopped);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.shared.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.shared.queued_messages.fetch_add(1, Ordering::Relaxed);
        self.tx
            .send(Job::Message(m))
            .map_err(|_| SearchError::Stopped)
    }

    /// Every stored message of `[start, end]`, oldest first, to `visit`
    /// until it returns false (see [`StoredMessage`] for what is kept).
    pub fn history(
        &self,
        start: i64,
        end: i64,
        visit: &mut dyn FnMut(StoredMessage) -> bool,
    ) -> Result<u64, SearchError> {
        history::history(&self.shared, start, end, visit)
    }

    /// Commits what is queued and waits until it is searchable.
    pub fn flush(&self) -> Result<(), SearchError> {
        let (tx, rx) = mpsc::channel();
        self.tx
            .send(Job::Flush(tx))
            .map_err(|_| SearchError::Stopped)?;
        rx.recv().map_err(|_| SearchError::Stopped)
    }

    /// Commits what is queued and stops the indexer; later messages are
    /// dropped. Called on shutdown after the broker has stopped.
    pub fn close(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = self.tx.send(Job::Stop);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    pub fn problems(&self) -> Vec<String> {
        self.shared.problems.lock().clone()
    }

    /// Runs a query (blocking: call from a blocking thread).
    pub fn search(&self, req: &SearchRequest) -> Result<SearchResult, SearchError> {
        query::search(&self.shared, req)
    }

    /// Counts matching messages per `step` in `[start, end]`.
    pub fn histogram(
        &self,
        q: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Histogram, SearchError> {
        query::histogram(&self.shared, q, start, end, step)
    }

    /// Checks a query without running it.
    pub fn parse(&self, q: &str) -> Result<(), SearchError> {
        query::parse(&self.shared, q).map(|_| ())
    }

    /// Bytes under `search/` as of the last look (every few seconds).
    pub fn disk_bytes(&self) -> u64 {
        self.shared.disk_bytes.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> SearchStatus {
        let c = &self.shared.counters;
        let periods: Vec<Arc<Period>> = self.shared.periods.read().values().cloned().collect();
        let periods: Vec<PeriodStatus> = periods
            .iter()
            .map(|p| {
                let s = p.reader.searcher();
                PeriodStatus {
                    day: day_name(p.day),
                    documents: s.num_docs(),
                    segments: s.segment_readers().len(),
                }
            })
            .collect();
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SearchStatus {
            documents: periods.iter().map(|p| p.documents).sum(),
            periods,
            bytes_on_disk: self.disk_bytes(),
            disk_budget_bytes: l(&self.shared.disk_budget),
            indexed: l(&c.indexed),
            skipped_binary: l(&c.skipped_binary),
            skipped_too_large: l(&c.skipped_too_large),
            skipped_numeric: l(&c.skipped_numeric),
            skipped_empty: l(&c.skipped_empty),
            dropped: l(&c.dropped),
            failed: l(&c.failed),
            queued: self.shared.queued_messages.load(Ordering::Relaxed),
            problems: self.problems(),
        }
    }
}

impl Drop for Search {
    fn drop(&mut self) {
        self.close();
    }
}

/// Opens every day found under `root`; moves aside the ones that cannot be
/// opened.
fn open_periods(root: &Path, shared: &Shared, now_ms: i64) -> Result<(), SearchError> {
    let mut found: Vec<(Day, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(root)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.len() != 8 || !e.path().is_dir() {
            continue;
        }
        if let Some(day) = period::parse_day(&name) {
            found.push((day, e.path()));
        }
    }
    found.sort();
    let mut periods = shared.periods.write();
    for (day, dir) in found {
        if !dir.join("meta.json").exists() {
            // Created but never committed to: nothing to lose.
            tracing::info!(dir = %dir.display(), "removing a search index that was never committed");
            let _ = std::fs::remove_dir_all(&dir);
            continue;
        }
        match Period::open(dir.clone(), day) {
            Ok(p) => {
                periods.insert(day, Arc::new(p));
            }
            Err(e) => {
                let aside = root.join(format!("{}.damaged-{now_ms}", day_name(day)));
                let moved = std::fs::rename(&dir, &aside);
                let what = match &moved {
                    Ok(()) => format!("moved to {}", aside.display()),
                    Err(m) => format!("could not be moved aside ({m})"),
                };
                tracing::error!(
                    dir = %dir.display(), error = %e,
                    "search index damaged: {what}; messages of that day are indexed afresh"
                );
                shared.problem(format!(
                    "search index of {} could not be opened ({e}); {what} and started afresh",
                    day_name(day)
                ));
            }
        }
    }
    Ok(())
}

impl base::metrics::MetricSource for Search {
    fn collect(&self, out: &mut Vec<base::metrics::MetricPoint>) {
        use base::metrics::MetricPoint as P;
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        out.push(P::counter(
            "perch_search_messages_indexed_total",
            "MQTT messages added to the search index.",
            l(&c.indexed),
        ));
        for (reason, v) in [
            ("binary", &c.skipped_binary),
            ("too_large", &c.skipped_too_large),
            ("numeric", &c.skipped_numeric),
            ("empty", &c.skipped_empty),
        ] {
            out.push(
                P::counter(
                    "perch_search_messages_skipped_total",
                    "MQTT messages not indexed, by reason.",
                    l(v),
                )
                .with_label("reason", reason),
            );
        }
        out.push(P::counter(
            "perch_search_messages_dropped_total",
            "MQTT messages not indexed because the indexer could not keep up or failed.",
            l(&c.dropped) + l(&c.failed),
        ));
        out.push(P::counter(
            "perch_search_commits_total",
            "Commits of the search index.",
            l(&c.commits),
        ));
        out.push(P::gauge(
            "perch_search_index_bytes",
            "Bytes the search index occupies on disk.",
            self.disk_bytes() as f64,
        ));
        out.push(P::gauge(
            "perch_search_queue_messages",
            "Messages waiting to be indexed.",
            self.shared.queued_messages.load(Ordering::Relaxed) as f64,
        ));
        out.push(base::footprint::memory(
            "search_queue",
            self.shared.queued_bytes.load(Ordering::Relaxed),
        ));
        // tantivy fills its indexing heap up to this before it writes a
        // segment, and does not say how full it is.
        out.push(base::footprint::memory_limit(
            "search_writer",
            self.config.writer_heap.0,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base::ManualClock;

    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn msg(time_ms: i64, topic: &str, payload: &str) -> Message {
        Message {
            time_ms,
            topic: topic.into(),
            payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
            client_id: Arc::from("c1"),
            qos: 0,
            retain: false,
        }
    }

    fn req(q: &str) -> SearchRequest {
        SearchRequest {
            q: q.into(),
            start: i64::MIN,
            end: i64::MAX,
            limit: 10,
            offset: 0,
            sort: Sort::Time,
        }
    }

    #[test]
    fn days_queries_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0 + 3 * period::DAY_MS);
        let c: Arc<dyn Clock> = clock.clone();
        let config = SearchConfig {
            retention: config::Duration::from_secs(2 * 86_400),
            ..SearchConfig::default()
        };
        let s = Search::open(&config, dir.path(), c.clone()).unwrap();
        for d in 0..4 {
            let t = T0 + d * period::DAY_MS + 1000;
            s.offer(msg(t, "home/garage/motion", "motion detected"));
            s.offer(msg(
                t + 1,
                "home/garage/battery",
                r#"{"state":"low battery"}"#,
            ));
        }
        s.flush().unwrap();
        assert_eq!(s.search(&req("*")).unwrap().total, 8);
        assert_eq!(s.search(&req("topic:garage")).unwrap().total, 8);
        assert_eq!(
            s.search(&req("topic:garage AND NOT motion")).unwrap().total,
            4
        );
        assert_eq!(s.search(&req("topic:garage -motion")).unwrap().total, 4);
        assert_eq!(s.search(&req("NOT motion")).unwrap().total, 4);
        assert_eq!(s.search(&req("garage AND (NOT motion)")).unwrap().total, 4);
        assert_eq!(s.search(&req("motion OR battery")).unwrap().total, 8);
        let r = s.search(&req("motion")).unwrap();
        assert_eq!(r.total, 4);
        assert_eq!(r.hits[0].time, T0 + 3 * period::DAY_MS + 1000);
        let mut one_day = req("*");
        one_day.start = T0 + period::DAY_MS;
        one_day.end = T0 + 2 * period::DAY_MS - 1;
        assert_eq!(s.search(&one_day).unwrap().total, 2);
        let h = s
            .histogram("battery", T0, T0 + 4 * period::DAY_MS - 1, period::DAY_MS)
            .unwrap();
        assert_eq!(
            h.buckets.iter().map(|b| b.1).collect::<Vec<_>>(),
            [1, 1, 1, 1]
        );
        assert!(matches!(s.parse("\"open"), Err(SearchError::BadQuery(_))));
        s.close();
        drop(s);

        // Reopened with the clock a day later: days older than two are gone.
        clock.advance(period::DAY_MS);
        let s = Search::open(&config, dir.path(), c).unwrap();
        s.flush().unwrap();
        assert_eq!(s.search(&req("motion")).unwrap().total, 2);
        assert_eq!(s.status().periods.len(), 2);
        assert_eq!(s.counters().periods_deleted.load(Ordering::Relaxed), 2);
    }
}
