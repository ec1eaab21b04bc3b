//! Backfill (`perch forward replay`): stored history queued for a target
//! again, behind what is already queued — the store's raw samples for
//! samples targets, the search index's message history for MQTT targets.

use serde::{Deserialize, Serialize};

use config::ForwardKind;
use store::{SeriesData, SeriesId, Storage};

use super::{ForwardError, Forwarder};
use crate::item;
use crate::lane::WRITE_BATCH;
use crate::target::Target;

/// Series read from the store at a time: keeps memory bounded.
const SERIES_PER_READ: usize = 64;
/// Samples one read of `SERIES_PER_READ` series may return, at most.
const MAX_SAMPLES_PER_READ: usize = 50_000_000;

/// What a replay queued.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReplayReport {
    pub series: usize,
    pub samples: u64,
    /// MQTT targets: messages of the search index (samples targets: None).
    #[serde(default)]
    pub messages: Option<u64>,
    pub items_queued: u64,
}

impl Forwarder {
    /// Queues stored history of `[since_ms, now]` for a target again
    /// (`perch forward replay`): the samples matching a samples target's
    /// selectors, or the messages of the search index whose topics match an
    /// MQTT target's filters. Runs on the calling (blocking) thread.
    pub fn replay(
        &self,
        name: &str,
        storage: &Storage,
        history: Option<&search::Search>,
        since_ms: i64,
    ) -> Result<ReplayReport, ForwardError> {
        // Not while the target is being changed or deleted.
        let _one = self.changes.blocking_lock();
        let t = self.find(name)?;
        if t.config.kind != ForwardKind::Mqtt {
            return replay_samples(&t, storage, since_ms);
        }
        let Some(history) = history else {
            return Err(ForwardError::Unsupported(format!(
                "{name} is an mqtt target: it replays the message history of the search index, which is disabled"
            )));
        };
        replay_messages(&t, history, since_ms, storage.now_ms())
    }
}

/// Queues the stored samples of `[since_ms, now]` of the series the
/// target's selectors match.
fn replay_samples(
    t: &Target,
    storage: &Storage,
    since_ms: i64,
) -> Result<ReplayReport, ForwardError> {
    let end = storage.now_ms();
    let ids = matching_series(t, storage, since_ms, end)?;
    let mut report = ReplayReport::default();
    for chunk in ids.chunks(SERIES_PER_READ) {
        let data = storage.read(chunk, since_ms, end, MAX_SAMPLES_PER_READ)?;
        let items = samples_items(t, data, &mut report);
        report.items_queued += t.lane.queue.push(&items, t.clock.now_ms())? as u64;
    }
    tracing::info!(
        target = t.config.name.as_str(),
        series = report.series,
        samples = report.samples,
        "replay queued"
    );
    Ok(report)
}

/// The stored series of `[since_ms, end]` the target takes (every series
/// when it has no selectors), each once.
fn matching_series(
    t: &Target,
    storage: &Storage,
    since_ms: i64,
    end: i64,
) -> Result<Vec<SeriesId>, ForwardError> {
    let every_series;
    let sets = if t.selectors.is_empty() {
        every_series = base::selector::parse_selector(r#"{__name__=~".+"}"#)
            .map_err(|e| ForwardError::Setup(e.to_string()))?;
        &every_series
    } else {
        &t.selectors
    };
    let mut ids: Vec<SeriesId> = sets
        .iter()
        .flat_map(|set| storage.select(set, since_ms, end))
        .map(|(id, _)| id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Queue items of the series read, at most `batch_max` samples each, as
/// the sender would take them.
fn samples_items(t: &Target, data: Vec<SeriesData>, report: &mut ReplayReport) -> Vec<Vec<u8>> {
    let per_item = t.config.batch_max.max(1);
    let mut items = Vec::new();
    for s in data {
        report.series += 1;
        for (ts, values) in s.ts.chunks(per_item).zip(s.values.chunks(per_item)) {
            let mut w = item::SamplesWriter::default();
            w.add_labels(&s.labels, ts.iter().copied().zip(values.iter().copied()));
            report.samples += w.samples();
            items.extend(w.finish());
        }
    }
    items
}

/// Queues the stored messages of `[since_ms, end]` whose topics match the
/// target's filters, oldest first.
fn replay_messages(
    t: &Target,
    history: &search::Search,
    since_ms: i64,
    end: i64,
) -> Result<ReplayReport, ForwardError> {
    let search_error = |e: search::SearchError| ForwardError::Setup(format!("search index: {e}"));
    // What arrived in the last seconds may not be committed yet.
    history.flush().map_err(search_error)?;
    let mut replay = MessageReplay {
        t,
        items: Vec::new(),
        messages: 0,
        queued: 0,
        failed: None,
    };
    history
        .history(since_ms, end, &mut |m| replay.visit(m))
        .map_err(search_error)?;
    let messages = replay.messages;
    let report = replay.finish()?;
    tracing::info!(target = %t.config.name, messages, "replay queued");
    Ok(report)
}

/// The messages of a replay on their way into the queue, `WRITE_BATCH` at
/// a time.
struct MessageReplay<'a> {
    t: &'a Target,
    items: Vec<Vec<u8>>,
    messages: u64,
    queued: u64,
    /// The queue failed: the walk through the history stopped there.
    failed: Option<ForwardError>,
}

impl MessageReplay<'_> {
    /// Takes a stored message if its topic matches; false stops the walk.
    fn visit(&mut self, m: search::StoredMessage) -> bool {
        if !self.t.takes_topic(&m.topic) {
            return true;
        }
        self.messages += 1;
        self.items.push(item::encode_message(
            &m.topic,
            m.qos,
            m.retain,
            m.time_ms,
            m.payload.as_bytes(),
        ));
        if self.items.len() < WRITE_BATCH {
            return true;
        }
        match self.push() {
            Ok(()) => true,
            Err(e) => {
                self.failed = Some(e);
                false
            }
        }
    }

    fn push(&mut self) -> Result<(), ForwardError> {
        self.queued += self.t.lane.queue.push(&self.items, self.t.clock.now_ms())? as u64;
        self.items.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<ReplayReport, ForwardError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        self.push()?;
        Ok(ReplayReport {
            messages: Some(self.messages),
            items_queued: self.queued,
            ..ReplayReport::default()
        })
    }
}
