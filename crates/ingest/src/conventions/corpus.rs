//! The fixture corpus of real device messages (`tests/fixtures/devices/`),
//! each copied from its project's own docs or tests with its source beside
//! it, read through the [`Interpreter`] and checked sample by sample, with
//! the devices, units and notices each one gives. The integration test
//! (`tests/it/devices.rs`) publishes the same files to the real binary.
//!
//! A file is one family's messages, read in order by one interpreter (a
//! discovery config before its state messages). Its format:
//!
//! ```toml
//! [[message]]
//! source = "tasmota/docs docs/DS18x20.md (9849ab94) line 40"
//! topic = "tele/tasmota/SENSOR"
//! payload = '''{"Time":"2019-10-31T18:55:09", ...}'''
//! retain = false            # optional
//! received_ms = 1572544509000
//! samples = ['temperature{device="tasmota",...} 21.3 @1572544509000']
//! devices = [{ id = "tasmota", family = "tasmota", online = true }]
//! units = [["temperature", "°C"]]
//! notices = ["time"]        # kinds, optional
//! ```
//!
//! `samples` lists every sample stored, as `labels value @ms` (labels as
//! `Labels` displays them, the value as `{:?}` prints an f64). `devices`
//! lists, per device report, the fields the message sets; omitted fields
//! must be unset.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{DeviceReport, Interpreter, Reading, Settings, Signal, Zone};
use crate::rules::Rules;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusFile {
    pub message: Vec<CorpusMessage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusMessage {
    pub source: String,
    pub topic: String,
    pub payload: String,
    /// Published retained by the integration test; reading is the same.
    #[serde(default)]
    #[allow(dead_code)]
    pub retain: bool,
    pub received_ms: i64,
    #[serde(default)]
    pub samples: Vec<String>,
    #[serde(default)]
    pub devices: Vec<ExpectedDevice>,
    #[serde(default)]
    pub units: Vec<(String, String)>,
    #[serde(default)]
    pub notices: Vec<String>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExpectedDevice {
    pub id: String,
    pub family: Option<String>,
    pub name: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub online: Option<bool>,
    pub battery: Option<f64>,
    /// `rssi:-71`, `linkquality:96` or `percent:100`.
    pub signal: Option<String>,
    #[serde(default)]
    pub removed: bool,
}

impl From<&DeviceReport> for ExpectedDevice {
    fn from(d: &DeviceReport) -> ExpectedDevice {
        ExpectedDevice {
            id: d.id.clone(),
            family: d.family.map(|f| f.as_str().to_string()),
            name: d.name.clone(),
            manufacturer: d.manufacturer.clone(),
            model: d.model.clone(),
            firmware: d.firmware.clone(),
            online: d.online,
            battery: d.battery,
            signal: d.signal.map(|s| match s {
                Signal::Rssi(v) => format!("rssi:{v}"),
                Signal::LinkQuality(v) => format!("linkquality:{v}"),
                Signal::Percent(v) => format!("percent:{v}"),
            }),
            removed: d.removed,
        }
    }
}

/// The corpus directory.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/devices")
}

/// One line per sample: `labels value @ms`.
pub fn render_samples(r: &Reading) -> Vec<String> {
    r.series
        .iter()
        .flat_map(|s| {
            s.samples
                .iter()
                .map(move |(t, v)| format!("{} {v:?} @{t}", s.labels))
        })
        .collect()
}

/// The settings the corpus is read with: device clocks in UTC, so that the
/// expectations do not depend on the machine's zone.
pub fn settings() -> Settings {
    let mut s = Settings::default();
    s.time_zones.default = Zone::Utc;
    s
}

/// Every corpus file, by file name, in name order.
pub fn files() -> Vec<(String, CorpusFile)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("tests/fixtures/devices")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let corpus = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                corpus,
            )
        })
        .collect()
}

#[test]
fn every_corpus_message_reads_as_expected() {
    let mut failures = Vec::new();
    let mut count = 0;
    for (file, corpus) in files() {
        let mut interp = utc_interpreter();
        for (i, m) in corpus.message.iter().enumerate() {
            count += 1;
            let r = interp.read(&m.topic, m.payload.as_bytes(), m.received_ms);
            let where_ = format!("{file} message {} ({} on {})", i + 1, m.source, m.topic);
            let samples = render_samples(&r);
            if samples != m.samples {
                failures.push(format!(
                    "{where_}: samples\n  got:  {samples:#?}\n  want: {:#?}\n  errors: {:?}",
                    m.samples, r.errors
                ));
            }
            let devices: Vec<ExpectedDevice> = r.devices.iter().map(Into::into).collect();
            if devices != m.devices {
                failures.push(format!(
                    "{where_}: devices\n  got:  {devices:?}\n  want: {:?}",
                    m.devices
                ));
            }
            if r.units != m.units {
                failures.push(format!(
                    "{where_}: units\n  got:  {:?}\n  want: {:?}",
                    r.units, m.units
                ));
            }
            let notices: Vec<&str> = r.notices.iter().map(|n| n.kind.as_str()).collect();
            if notices != m.notices {
                failures.push(format!(
                    "{where_}: notices\n  got:  {:?}\n  want: {:?}",
                    r.notices, m.notices
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} messages differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// An interpreter with default settings and device clocks read as UTC, as
/// the corpus reads them, for the families' unit tests.
pub fn utc_interpreter() -> Interpreter {
    Interpreter::new(Rules::default(), settings())
}

/// The labels of each series of a reading, as `Labels` displays them.
pub fn series_names(r: &Reading) -> Vec<String> {
    r.series.iter().map(|s| s.labels.to_string()).collect()
}

/// Every message of every corpus file, in file order.
pub fn messages() -> Vec<CorpusMessage> {
    files().into_iter().flat_map(|(_, f)| f.message).collect()
}
