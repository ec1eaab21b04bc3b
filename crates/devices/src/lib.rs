//! The device registry: every device perch has heard of — from what the
//! firmware conventions read out of its messages (`ingest::conventions`)
//! and from the label that names the device of their series
//! (`Reading::device_label`) — with its name, maker, model and firmware,
//! online or offline, when it was last seen, its battery and signal, its
//! series with their units, and its topics.
//!
//! Online or offline: a last will, an availability or status topic that
//! says so wins; otherwise a device that used to send regularly is offline
//! once it has been silent for `devices.offline_after_intervals` of its
//! usual intervals (never less than a minute).
//!
//! Kept in the store's `devices` tree (JSON per device, by id), so it
//! survives restarts; written in batches by [`Registry::persist`] (the
//! server calls it every few seconds), and a device whose only change is
//! its last-seen time at most every [`LAST_SEEN_EVERY_MS`]: an SD card is
//! not written for every message. Bounded: at most `devices.max_devices`
//! devices, [`MAX_METRICS`] series names and [`MAX_TOPICS`] topics each;
//! what is past a bound is counted (`perch_devices_untracked_total`).
//!
//! Uses `base`, `config`, `store` (its tree) and `ingest` (the readings);
//! the MQTT collector feeds it, http reads it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base::labels::METRIC_NAME;
use base::metrics::{MetricPoint, MetricSource};
use base::Clock;
use ingest::conventions::{DeviceReport, Reading, Signal};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Series names remembered per device, at most.
pub const MAX_METRICS: usize = 256;
/// Topics remembered per device, at most.
pub const MAX_TOPICS: usize = 32;
/// A device id's longest length in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Names, makers, models and firmware versions are cut to this many bytes.
pub const MAX_TEXT_BYTES: usize = 256;
/// Topics and series names longer than this are not remembered (counted in
/// `perch_devices_details_dropped_total`): the registry is kept in memory.
pub const MAX_DETAIL_BYTES: usize = 1024;
/// How often a device whose only change is its last-seen time is written.
pub const LAST_SEEN_EVERY_MS: i64 = 5 * 60 * 1000;
/// No device is called offline for silence shorter than this.
const MIN_SILENCE_MS: i64 = 60_000;
/// Gaps between messages shorter than this are one burst (a device sending
/// its readings as several messages at once), not its interval.
const BURST_MS: i64 = 1_000;

#[derive(Debug, Error)]
pub enum DeviceError {
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
    #[error(transparent)]
    Store(#[from] store::StorageError),
}

impl base::HasKind for DeviceError {
    fn kind(&self) -> base::ErrorKind {
        base::ErrorKind::Internal
    }
}

/// What perch knows of one device, as kept and as the API shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub id: String,
    /// The firmware family it was read as (`tasmota`, `zigbee2mqtt`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// What the device last said of itself (last will, availability).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_online: Option<bool>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// Its usual time between messages, smoothed; none until known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<i64>,
    /// Percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<SignalValue>,
    /// Its series' metric names, with their unit where known.
    #[serde(default)]
    pub metrics: BTreeMap<String, Option<String>>,
    #[serde(default)]
    pub topics: BTreeSet<String>,
    #[serde(default)]
    pub messages: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignalValue {
    /// `rssi` (dBm), `linkquality` (0–255) or `percent`.
    pub kind: SignalKind,
    pub value: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalKind {
    Rssi,
    LinkQuality,
    Percent,
}

impl From<Signal> for SignalValue {
    fn from(s: Signal) -> SignalValue {
        let (kind, value) = match s {
            Signal::Rssi(v) => (SignalKind::Rssi, v),
            Signal::LinkQuality(v) => (SignalKind::LinkQuality, v),
            Signal::Percent(v) => (SignalKind::Percent, v),
        };
        SignalValue { kind, value }
    }
}

/// A device as the API answers: what is kept, and whether it is online now.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceStatus {
    #[serde(flatten)]
    pub device: Device,
    pub online: bool,
    /// Why: `reported` (it said so), `silent` (no message for longer than
    /// its intervals allow), `active` (it sends as usual).
    pub status_reason: &'static str,
}

#[derive(Default)]
struct Counters {
    /// Messages of devices not tracked because `max_devices` was reached,
    /// or whose id was refused: once per message and device, however many
    /// series it gave.
    untracked: AtomicU64,
    /// Series names and topics past the per-device bounds.
    dropped_details: AtomicU64,
    writes: AtomicU64,
}

struct Entry {
    device: Device,
    /// The last-seen time last written.
    persisted_last_seen: i64,
}

#[derive(Default)]
struct Inner {
    devices: HashMap<String, Entry>,
    /// Changed beyond their last-seen time since the last write.
    dirty: HashSet<String>,
    /// Removed since the last write.
    removed: HashSet<String>,
    /// Ids refused for the limit, reported once each (bounded).
    refused: HashSet<String>,
}

pub struct Registry {
    inner: Mutex<Inner>,
    tree: sled::Tree,
    clock: Arc<dyn Clock>,
    max_devices: usize,
    offline_after: i64,
    /// Units from `[devices] units`, which win over what devices say.
    configured_units: BTreeMap<String, String>,
    counters: Counters,
}

impl Registry {
    /// Opens the registry and loads what the `devices` tree holds; entries
    /// that do not decode are skipped and reported.
    pub fn open(
        trees: &store::Trees,
        config: &config::DevicesConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Registry>, DeviceError> {
        let tree = trees.open(store::Tree::Devices)?;
        let mut inner = Inner::default();
        for kv in tree.iter() {
            let (k, v) = kv?;
            match serde_json::from_slice::<Device>(&v) {
                Ok(device) => {
                    let persisted_last_seen = device.last_seen_ms;
                    inner.devices.insert(
                        device.id.clone(),
                        Entry {
                            device,
                            persisted_last_seen,
                        },
                    );
                }
                Err(e) => tracing::warn!(
                    device = %String::from_utf8_lossy(&k),
                    error = %e,
                    "a stored device could not be read; it is forgotten"
                ),
            }
        }
        Ok(Arc::new(Registry {
            inner: Mutex::new(inner),
            tree,
            clock,
            max_devices: config.max_devices,
            offline_after: i64::from(config.offline_after_intervals),
            configured_units: config.units.clone(),
            counters: Counters::default(),
        }))
    }

    /// Takes in what one message said: its device reports, and the devices
    /// its series are labelled with.
    pub fn observe(&self, topic: &str, reading: &Reading, received_ms: i64) {
        let device_label = reading.device_label.unwrap_or_default();
        if reading.devices.is_empty()
            && (device_label.is_empty()
                || !reading
                    .series
                    .iter()
                    .any(|s| s.labels.get(device_label).is_some()))
        {
            return;
        }
        let units: HashMap<&str, &str> = reading
            .units
            .iter()
            .map(|(m, u)| (m.as_str(), u.as_str()))
            .collect();
        let family = reading.family.as_str();
        let mut inner = self.inner.lock();
        let mut touched: Vec<String> = Vec::new();
        // Ids refused for this message: counted once, not once per series.
        let mut refused: Vec<&str> = Vec::new();
        for report in &reading.devices {
            if report.removed {
                if inner.devices.remove(&report.id).is_some() {
                    inner.dirty.remove(&report.id);
                    inner.removed.insert(report.id.clone());
                }
                continue;
            }
            if self.admit(&mut inner, &report.id, received_ms, &mut refused) {
                let Some(entry) = inner.devices.get_mut(&report.id) else {
                    continue;
                };
                let changed = merge_report(&mut entry.device, report);
                if changed {
                    inner.dirty.insert(report.id.clone());
                }
                touched.push(report.id.clone());
            }
        }
        for s in reading.series.iter().filter(|_| !device_label.is_empty()) {
            let Some(id) = s.labels.get(device_label) else {
                continue;
            };
            if !self.admit(&mut inner, id, received_ms, &mut refused) {
                continue;
            }
            let metric = s.labels.get(METRIC_NAME).unwrap_or_default();
            let unit = self
                .configured_units
                .get(metric)
                .map(String::as_str)
                .or_else(|| units.get(metric).copied());
            let Some(entry) = inner.devices.get_mut(id) else {
                continue;
            };
            let d = &mut entry.device;
            let mut changed = false;
            if d.family.is_none() {
                d.family = Some(family.to_string());
                changed = true;
            }
            let room = d.metrics.len() < MAX_METRICS && metric.len() <= MAX_DETAIL_BYTES;
            match d.metrics.get_mut(metric) {
                Some(known) => {
                    if unit.is_some() && known.as_deref() != unit {
                        *known = unit.map(str::to_string);
                        changed = true;
                    }
                }
                None if room => {
                    d.metrics
                        .insert(metric.to_string(), unit.map(str::to_string));
                    changed = true;
                }
                None => {
                    self.counters
                        .dropped_details
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            if changed {
                inner.dirty.insert(id.to_string());
            }
            touched.push(id.to_string());
        }
        touched.sort();
        touched.dedup();
        for id in touched {
            let Some(entry) = inner.devices.get_mut(&id) else {
                continue;
            };
            let d = &mut entry.device;
            let mut changed = false;
            if !d.topics.contains(topic) {
                if d.topics.len() < MAX_TOPICS && topic.len() <= MAX_DETAIL_BYTES {
                    d.topics.insert(topic.to_string());
                    changed = true;
                } else {
                    self.counters
                        .dropped_details
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            // A device that sends readings is evidently there, whatever an
            // old retained will said.
            let says_offline = reading
                .devices
                .iter()
                .any(|r| r.id == id && r.online == Some(false));
            if d.reported_online == Some(false) && !says_offline && reading.samples() > 0 {
                d.reported_online = Some(true);
                changed = true;
            }
            seen(d, received_ms);
            if changed {
                inner.dirty.insert(id);
            }
        }
    }

    /// Takes in what a retained message replayed at start says of devices
    /// (their names, models, availability, units) without counting it as a
    /// message from them now.
    pub fn learn(&self, reading: &Reading) {
        let mut inner = self.inner.lock();
        for report in &reading.devices {
            if report.removed {
                if inner.devices.remove(&report.id).is_some() {
                    inner.dirty.remove(&report.id);
                    inner.removed.insert(report.id.clone());
                }
            } else if let Some(e) = inner.devices.get_mut(&report.id) {
                if merge_report(&mut e.device, report) {
                    inner.dirty.insert(report.id.clone());
                }
            }
        }
    }

    /// Makes room for `id` if it is new; false when it cannot be tracked,
    /// counted unless `refused` (this message's refused ids) has it.
    fn admit<'r>(
        &self,
        inner: &mut Inner,
        id: &'r str,
        now_ms: i64,
        refused: &mut Vec<&'r str>,
    ) -> bool {
        if inner.devices.contains_key(id) {
            return true;
        }
        let bad_id = id.is_empty() || id.len() > MAX_ID_BYTES || id.chars().any(char::is_control);
        if bad_id || inner.devices.len() >= self.max_devices {
            if !refused.contains(&id) {
                refused.push(id);
                self.counters.untracked.fetch_add(1, Ordering::Relaxed);
            }
            if inner.refused.len() < 64 && inner.refused.insert(id.to_string()) {
                if bad_id {
                    tracing::warn!(
                        device = %id.escape_debug(),
                        "a device id that is empty, longer than {MAX_ID_BYTES} bytes or holds control characters is not tracked"
                    );
                } else {
                    tracing::warn!(
                        device = %id,
                        limit = self.max_devices,
                        "devices.max_devices reached: a new device is not tracked (its samples are stored)"
                    );
                }
            }
            return false;
        }
        inner.devices.insert(
            id.to_string(),
            Entry {
                device: Device {
                    id: id.to_string(),
                    first_seen_ms: now_ms,
                    last_seen_ms: now_ms,
                    ..Device::default()
                },
                persisted_last_seen: i64::MIN,
            },
        );
        inner.dirty.insert(id.to_string());
        true
    }

    fn status(&self, d: &Device, now_ms: i64) -> (bool, &'static str) {
        if d.reported_online == Some(false) {
            return (false, "reported");
        }
        if let Some(interval) = d.interval_ms {
            let allowed = (interval.saturating_mul(self.offline_after)).max(MIN_SILENCE_MS);
            if now_ms.saturating_sub(d.last_seen_ms) > allowed {
                return (false, "silent");
            }
        }
        if d.reported_online == Some(true) {
            (true, "reported")
        } else {
            (true, "active")
        }
    }

    /// Every device, by id.
    pub fn list(&self) -> Vec<DeviceStatus> {
        let now = self.clock.now_ms();
        let inner = self.inner.lock();
        let mut out: Vec<DeviceStatus> = inner
            .devices
            .values()
            .map(|e| self.with_status(&e.device, now))
            .collect();
        out.sort_by(|a, b| a.device.id.cmp(&b.device.id));
        out
    }

    pub fn get(&self, id: &str) -> Option<DeviceStatus> {
        let now = self.clock.now_ms();
        let inner = self.inner.lock();
        inner
            .devices
            .get(id)
            .map(|e| self.with_status(&e.device, now))
    }

    fn with_status(&self, d: &Device, now_ms: i64) -> DeviceStatus {
        let (online, status_reason) = self.status(d, now_ms);
        DeviceStatus {
            device: d.clone(),
            online,
            status_reason,
        }
    }

    /// Metric → the units its series are in (several when devices differ),
    /// the configured ones first; for `/api/v1/metadata`.
    pub fn units(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let inner = self.inner.lock();
        for e in inner.devices.values() {
            for (m, u) in &e.device.metrics {
                if let Some(u) = u {
                    out.entry(m.clone()).or_default().insert(u.clone());
                }
            }
        }
        drop(inner);
        for (m, u) in &self.configured_units {
            out.insert(m.clone(), BTreeSet::from([u.clone()]));
        }
        out
    }

    /// Writes what changed, in one batch: devices changed beyond their
    /// last-seen time, those whose last-seen time was last written
    /// [`LAST_SEEN_EVERY_MS`] ago or more, and removals. `all` writes every
    /// device's last-seen time (at shutdown).
    pub fn persist(&self, all: bool) -> Result<usize, DeviceError> {
        let now = self.clock.now_ms();
        let mut batch = sled::Batch::default();
        let mut written = 0;
        {
            let mut inner = self.inner.lock();
            let Inner {
                devices,
                dirty,
                removed,
                ..
            } = &mut *inner;
            for id in removed.drain() {
                batch.remove(id.as_bytes());
                written += 1;
            }
            for (id, e) in devices.iter_mut() {
                let due = dirty.contains(id)
                    || (e.device.last_seen_ms != e.persisted_last_seen
                        && (all
                            || now.saturating_sub(e.persisted_last_seen) >= LAST_SEEN_EVERY_MS));
                if !due {
                    continue;
                }
                let json = serde_json::to_vec(&e.device).expect("a device serializes");
                batch.insert(id.as_bytes(), json);
                e.persisted_last_seen = e.device.last_seen_ms;
                written += 1;
            }
            dirty.clear();
        }
        if written > 0 {
            self.tree.apply_batch(batch)?;
            self.counters
                .writes
                .fetch_add(written as u64, Ordering::Relaxed);
        }
        Ok(written)
    }
}

/// Puts what a report says into the device; true when anything changed.
fn merge_report(d: &mut Device, r: &DeviceReport) -> bool {
    let mut changed = false;
    let mut set = |slot: &mut Option<String>, v: &Option<String>| {
        let v = v.as_deref().map(|t| clip(t, MAX_TEXT_BYTES));
        if v.is_some() && slot.as_deref() != v {
            *slot = v.map(str::to_string);
            changed = true;
        }
    };
    set(&mut d.family, &r.family.map(|f| f.as_str().to_string()));
    set(&mut d.name, &r.name);
    set(&mut d.manufacturer, &r.manufacturer);
    set(&mut d.model, &r.model);
    set(&mut d.firmware, &r.firmware);
    if r.online.is_some() && d.reported_online != r.online {
        d.reported_online = r.online;
        changed = true;
    }
    // Battery and signal change with most messages: kept in memory, and
    // written with the last-seen time.
    if r.battery.is_some() {
        d.battery = r.battery;
    }
    if let Some(s) = r.signal {
        d.signal = Some(s.into());
    }
    changed
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A message from the device at `t`: its last-seen time and usual interval.
fn seen(d: &mut Device, t: i64) {
    d.messages += 1;
    let gap = t - d.last_seen_ms;
    if d.messages > 1 && gap >= BURST_MS {
        d.interval_ms = Some(match d.interval_ms {
            // Smoothed, so that one late message does not change it much.
            Some(i) => (i * 3 + gap) / 4,
            None => gap,
        });
    }
    d.last_seen_ms = d.last_seen_ms.max(t);
}

impl MetricSource for Registry {
    fn collect(&self, out: &mut Vec<MetricPoint>) {
        let now = self.clock.now_ms();
        let inner = self.inner.lock();
        let mut online = 0usize;
        for e in inner.devices.values() {
            let (up, _) = self.status(&e.device, now);
            online += usize::from(up);
            out.push(
                MetricPoint::gauge(
                    "perch_device_up",
                    "1 while a device is online (it says so, or sends as usual), 0 while offline.",
                    f64::from(u8::from(up)),
                )
                .with_label("device", e.device.id.clone()),
            );
        }
        let total = inner.devices.len();
        drop(inner);
        for (state, n) in [("online", online), ("offline", total - online)] {
            out.push(
                MetricPoint::gauge("perch_devices", "Devices tracked, by state.", n as f64)
                    .with_label("state", state),
            );
        }
        out.push(MetricPoint::counter(
            "perch_devices_untracked_total",
            "Messages of devices not tracked, once per device a message names: over devices.max_devices, or an unusable id.",
            self.counters.untracked.load(Ordering::Relaxed) as f64,
        ));
        out.push(MetricPoint::counter(
            "perch_devices_details_dropped_total",
            "Series names or topics of a device past the per-device bounds.",
            self.counters.dropped_details.load(Ordering::Relaxed) as f64,
        ));
        out.push(MetricPoint::counter(
            "perch_devices_writes_total",
            "Device records written to the database.",
            self.counters.writes.load(Ordering::Relaxed) as f64,
        ));
    }
}

#[cfg(test)]
mod tests;
