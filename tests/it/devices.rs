//! Issue 14 end to end: real devices' messages — the fixture corpus in
//! `tests/fixtures/devices/`, each copied from its project's docs or tests
//! with the source beside it — published with Debian's `mosquitto_pub` to
//! the real binary, and checked as a user would see them: the series and
//! their values over the export API, the devices over `/api/v1/devices`,
//! the units over `/api/v1/metadata`, how each message was read in the
//! explorer, and the outcome counters in `/metrics`.
//!
//! The corpus's device clocks are years old, so here they are not believed
//! and samples land at the arrival time (the reading test in
//! `crates/ingest/src/conventions/corpus.rs` checks the device times
//! themselves); messages built here with the current time check that a
//! device's own clock is used end to end.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::common::{have_mosquitto, now_ms, urlencode, Perch};

#[derive(Debug, Deserialize)]
struct CorpusFile {
    message: Vec<CorpusMessage>,
}

#[derive(Debug, Deserialize)]
struct CorpusMessage {
    source: String,
    topic: String,
    payload: String,
    #[serde(default)]
    retain: bool,
    #[serde(default)]
    samples: Vec<String>,
    #[serde(default)]
    devices: Vec<ExpectedDevice>,
    #[serde(default)]
    units: Vec<(String, String)>,
}

#[derive(Debug, Default, Deserialize, Clone)]
struct ExpectedDevice {
    id: String,
    family: Option<String>,
    name: Option<String>,
    manufacturer: Option<String>,
    model: Option<String>,
    firmware: Option<String>,
    online: Option<bool>,
    battery: Option<f64>,
    signal: Option<String>,
    #[serde(default)]
    removed: bool,
}

/// A series the corpus expects: its labels, values and where it came from.
struct ExpectedSeries {
    labels: BTreeMap<String, String>,
    values: Vec<f64>,
    /// The sample times, when the family believes a device time however
    /// old (Telegraf replays its buffer after an outage); else every sample
    /// is expected at its arrival time, the corpus' device clocks being
    /// years off today's.
    times: Option<Vec<i64>>,
    source: String,
}

fn corpus() -> Vec<(String, CorpusFile)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/devices");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).unwrap();
            (name, toml::from_str(&text).unwrap())
        })
        .collect()
}

const CONFIG: &str = "[storage]\nretention = \"100y\"\n";

/// mosquitto_pub as the test admin; the payload on standard input, so that
/// large and odd payloads pass as they are.
fn publish(p: &Perch, topic: &str, payload: &[u8], retain: bool) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &p.mqtt_port.to_string()])
        .args([
            "-u",
            crate::common::ADMIN,
            "-P",
            crate::common::ADMIN_PASSWORD,
        ])
        .args(["-q", "1", "-t", topic]);
    if retain {
        cmd.arg("-r");
    }
    if payload.is_empty() {
        cmd.arg("-n");
    } else {
        cmd.arg("-s");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(payload).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub -t {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of a self-metric (summed over its label sets matching `with`).
fn metric(p: &Perch, name: &str, with: &str) -> f64 {
    let body = p.get("/metrics").body;
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| l.contains(with))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn messages_read(p: &Perch) -> f64 {
    metric(p, "perch_ingest_messages_total", "")
}

/// Waits until the collector has read `n` messages and stored what they gave.
fn wait_read(p: &Perch, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while messages_read(p) < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages read",
            messages_read(p)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `name{a="b",…} value @t` as the corpus writes a sample: the labels and
/// the value (the time is the reading test's business).
fn parse_sample(line: &str) -> (BTreeMap<String, String>, f64, i64) {
    let open = line.find('{').expect("labels");
    let close = line.rfind('}').expect("labels");
    let mut labels = BTreeMap::new();
    labels.insert("__name__".to_string(), line[..open].to_string());
    let mut rest = &line[open + 1..close];
    while !rest.is_empty() {
        let eq = rest.find("=\"").expect("a label");
        let name = rest[..eq].to_string();
        let (value, after) = debug_string(&rest[eq + 1..]);
        labels.insert(name, value);
        rest = after.strip_prefix(',').unwrap_or(after);
    }
    let mut after = line[close + 1..].split_whitespace();
    let value = after.next().expect("a value").parse().expect("a number");
    let at = after
        .next()
        .and_then(|t| t.strip_prefix('@'))
        .expect("@ms")
        .parse()
        .expect("a time");
    (labels, value, at)
}

/// A string as Rust's `{:?}` writes it, and what follows it.
fn debug_string(s: &str) -> (String, &str) {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (out, &s[i + 1..]),
            '\\' => match chars.next().map(|(_, c)| c) {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('0') => out.push('\0'),
                Some('u') => {
                    let hex: String = chars
                        .by_ref()
                        .map(|(_, c)| c)
                        .skip(1)
                        .take_while(|c| *c != '}')
                        .collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
                }
                Some(other) => out.push(other),
                None => break,
            },
            c => out.push(c),
        }
    }
    panic!("unterminated string in {s:?}");
}

fn selector(labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap()))
        .collect();
    format!("{{{}}}", inner.join(","))
}

#[test]
fn the_corpus_is_stored_and_its_devices_listed() {
    if !have_mosquitto() {
        return;
    }
    let p = Perch::start_with(CONFIG);
    let files = corpus();
    let total: usize = files.iter().map(|(_, f)| f.message.len()).sum();
    assert!(total >= 60, "the corpus has {total} messages");
    let started = now_ms();
    let mut published = 0.0;
    for (_, file) in &files {
        for m in &file.message {
            publish(&p, &m.topic, m.payload.as_bytes(), m.retain);
            published += 1.0;
        }
    }
    wait_read(&p, published);
    let ended = now_ms() + 1_000;
    let mut problems = Vec::new();

    // Series: every expected sample is stored, under exactly its labels.
    let mut expected: BTreeMap<String, ExpectedSeries> = BTreeMap::new();
    for (file, f) in &files {
        let believes_old_times = file == "telegraf";
        for m in &f.message {
            for line in &m.samples {
                let (labels, value, at) = parse_sample(line);
                let key = selector(&labels);
                let e = expected.entry(key).or_insert_with(|| ExpectedSeries {
                    labels,
                    values: Vec::new(),
                    times: believes_old_times.then(Vec::new),
                    source: format!("{file}: {}", m.source),
                });
                e.values.push(value);
                if let Some(times) = &mut e.times {
                    times.push(at);
                }
            }
        }
    }
    for (
        sel,
        ExpectedSeries {
            labels,
            values,
            times: expected_times,
            source,
        },
    ) in &expected
    {
        let found = p.export(sel);
        let exact: Vec<_> = found
            .iter()
            .filter(|(m, _, _)| {
                m.as_object().is_some_and(|o| {
                    o.len() == labels.len()
                        && labels
                            .iter()
                            .all(|(k, v)| o.get(k).and_then(|x| x.as_str()) == Some(v))
                })
            })
            .collect();
        let Some((_, times, stored)) = exact.first() else {
            problems.push(format!("{source}: no series {sel}"));
            continue;
        };
        for v in values {
            if !stored
                .iter()
                .any(|s| s == v || (s - v).abs() < 1e-9 * v.abs().max(1.0))
            {
                problems.push(format!("{source}: {sel} lacks value {v} (has {stored:?})"));
            }
        }
        if let Some(want) = expected_times {
            if want.iter().any(|t| !times.contains(t)) {
                problems.push(format!(
                    "{source}: {sel} has samples at {times:?}, not at the device's times {want:?}"
                ));
            }
        } else if let Some(t) = times
            .iter()
            .find(|t| !(started - 1_000..=ended).contains(*t))
        {
            problems.push(format!(
                "{source}: {sel} has a sample at {t}, not at the arrival time ({started}..{ended}): an old device clock was believed"
            ));
        }
    }

    // Devices: what the last report of each says, over the API.
    let mut devices: BTreeMap<String, ExpectedDevice> = BTreeMap::new();
    for (_, f) in &files {
        for m in &f.message {
            for d in &m.devices {
                let e = devices.entry(d.id.clone()).or_default();
                if d.removed {
                    *e = d.clone();
                    continue;
                }
                e.id = d.id.clone();
                e.removed = false;
                macro_rules! take {
                    ($($f:ident),*) => { $( if d.$f.is_some() { e.$f = d.$f.clone(); } )* };
                }
                take!(
                    family,
                    name,
                    manufacturer,
                    model,
                    firmware,
                    online,
                    battery,
                    signal
                );
            }
        }
    }
    let listed = p.get("/api/v1/devices").json();
    let listed_ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    for (id, want) in &devices {
        let path = format!(
            "/api/v1/devices/{}",
            id.split('/').map(urlencode).collect::<Vec<_>>().join("/")
        );
        let r = p.get(&path);
        if want.removed {
            if r.status != 404 || listed_ids.contains(&id.as_str()) {
                problems.push(format!(
                    "device {id:?} was removed but is listed ({})",
                    r.status
                ));
            }
            continue;
        }
        if r.status != 200 {
            problems.push(format!("device {id:?}: {} {}", r.status, r.body));
            continue;
        }
        let got = &r.json()["data"];
        let text = |k: &str| got[k].as_str().map(str::to_string);
        let mut check = |what: &str, want: &Option<String>, have: Option<String>| {
            if want.is_some() && *want != have {
                problems.push(format!("device {id:?}: {what} is {have:?}, not {want:?}"));
            }
        };
        check("family", &want.family, text("family"));
        check("name", &want.name, text("name"));
        check("manufacturer", &want.manufacturer, text("manufacturer"));
        check("model", &want.model, text("model"));
        check("firmware", &want.firmware, text("firmware"));
        check(
            "battery",
            &want.battery.map(|b| b.to_string()),
            got["battery"].as_f64().map(|b| b.to_string()),
        );
        check(
            "signal",
            &want.signal,
            got["signal"]["kind"]
                .as_str()
                .map(|k| format!("{k}:{}", got["signal"]["value"].as_f64().unwrap())),
        );
        if want.online == Some(false) && got["online"] != false {
            problems.push(format!(
                "device {id:?} said it is offline; shown {}",
                got["online"]
            ));
        }
        if want.online == Some(true) && got["online"] != true {
            problems.push(format!(
                "device {id:?} said it is online; shown {}",
                got["online"]
            ));
        }
    }

    // Units, as Prometheus' metadata API gives them.
    let meta = p.get("/api/v1/metadata").json();
    for (_, f) in &files {
        for m in &f.message {
            for (metric, unit) in &m.units {
                let units: Vec<&str> = meta["data"][metric]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x["unit"].as_str()).collect())
                    .unwrap_or_default();
                if !units.contains(&unit.as_str()) {
                    problems.push(format!(
                        "{}: metric {metric} has units {units:?}, not {unit:?}",
                        m.source
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    eprintln!(
        "checked {} series, {} devices, {} messages",
        expected.len(),
        devices.len(),
        published
    );

    // Every message counts under one outcome, and the explorer says how
    // each was read.
    assert_eq!(messages_read(&p), published);
    assert!(metric(&p, "perch_ingest_messages_total", "outcome=\"stored\"") > 0.0);
    assert!(metric(&p, "perch_ingest_messages_total", "outcome=\"no_samples\"") > 0.0);
    let shown = p.get("/api/v1/messages?topic=%23&limit=1000").json();
    let reads: Vec<&serde_json::Value> = shown["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["read"])
        .collect();
    assert!(reads
        .iter()
        .all(|r| r["family"].is_string() && r["outcome"].is_string()));
    for family in [
        "tasmota",
        "shelly",
        "zigbee2mqtt",
        "esphome",
        "homeassistant",
    ] {
        assert!(
            reads.iter().any(|r| r["family"] == family),
            "no message read as {family}"
        );
    }
}
