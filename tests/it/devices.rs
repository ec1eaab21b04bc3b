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
            p.publish(&m.topic, m.payload.as_bytes(), m.retain);
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

/// Many messages over one MQTT connection (rumqttc), QoS 1, each
/// acknowledged before this returns: faster than a mosquitto_pub each.
fn publish_many(p: &Perch, messages: &[(String, Vec<u8>)]) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CLIENTS: AtomicU32 = AtomicU32::new(0);
    let id = format!(
        "perch-it-devices-{}-{}",
        std::process::id(),
        CLIENTS.fetch_add(1, Ordering::Relaxed)
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", p.mqtt_port);
        opts.set_credentials(crate::common::ADMIN, crate::common::ADMIN_PASSWORD);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        opts.set_inflight(64);
        let (client, mut events) = rumqttc::AsyncClient::new(opts, 64);
        let to_send = messages.to_vec();
        let sender = tokio::spawn(async move {
            for (topic, payload) in to_send {
                client
                    .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                    .await
                    .unwrap();
            }
            // Kept until every PUBACK is in: dropping it ends the event loop.
            client
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut acked = 0;
        while acked < messages.len() {
            match tokio::time::timeout(Duration::from_secs(1), events.poll()).await {
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => acked += 1,
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(e)) => panic!("MQTT connection failed: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "only {acked} of {} PUBACKs",
                messages.len()
            );
        }
        let client = sender.await.unwrap();
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
    });
}

/// How the explorer says the last message on `topic` was read.
fn read_summary(p: &Perch, topic: &str) -> serde_json::Value {
    let r = p.get(&format!(
        "/api/v1/messages?topic={}&limit=1",
        urlencode(topic)
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let m = &v["data"][0];
    assert_eq!(m["topic"], topic, "no message on {topic:?} in the explorer");
    m["read"].clone()
}

/// The one series matching `selector`: its times and values.
fn one_series(p: &Perch, selector: &str) -> (Vec<i64>, Vec<f64>) {
    let mut found = p.export(selector);
    assert_eq!(found.len(), 1, "{selector}: {found:?}");
    let (_, t, v) = found.remove(0);
    (t, v)
}

/// A device over `/api/v1/devices/{id}`, each level of the id percent-encoded
/// (dots too, so that `..` is an id, not a path step).
fn device(p: &Perch, id: &str) -> crate::common::Resp {
    let enc = |level: &str| urlencode(level).replace('.', "%2E");
    p.get(&format!(
        "/api/v1/devices/{}",
        id.split('/').map(enc).collect::<Vec<_>>().join("/")
    ))
}

fn listed_devices(p: &Perch) -> Vec<serde_json::Value> {
    let r = p.get("/api/v1/devices");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["data"].as_array().unwrap().clone()
}

/// Seconds since the epoch as Tasmota writes its `Time`: local time without
/// an offset (here the zone is UTC).
fn tasmota_time(epoch_s: i64) -> String {
    chrono::DateTime::from_timestamp(epoch_s, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// tests/fixtures/devices/tasmota.toml, docs/DS18x20.md line 69, with its
/// `Time` replaced.
fn ds18b20(time: &str) -> String {
    format!(
        r#"{{"Time":"{time}","DS18B20-1":{{"Id":"00000566CC39","Temperature":13.3}},"DS18B20-2":{{"Id":"0000059352D4","Temperature":1.2}},"DS18B20-3":{{"Id":"000005937C90","Temperature":22.5}},"TempUnit":"C"}}"#
    )
}

/// tests/fixtures/devices/owntracks.toml (quicksetup.md line 140) with `tst`
/// and `created_at` replaced.
fn owntracks_location(tst: i64) -> String {
    format!(
        r#"{{"_type":"location","SSID":"mywifi","alt":154,"batt":53,"conn":"w","created_at":{tst},"lat":48.856826,"lon":2.292713,"tid":"j1","tst":{tst},"vel":0}}"#
    )
}

#[test]
fn device_clocks_are_the_sample_time_when_they_are_right() {
    if !have_mosquitto() {
        return;
    }
    let p = Perch::start_with(&format!("{CONFIG}[devices]\ntime_zone = \"UTC\"\n"));
    let now_s = now_ms() / 1000;
    let device_s = now_s - 120;
    p.publish(
        "tele/cellar/SENSOR",
        ds18b20(&tasmota_time(device_s)).as_bytes(),
        false,
    );
    p.publish(
        "owntracks/jane/nokia",
        owntracks_location(device_s).as_bytes(),
        false,
    );
    wait_read(&p, 2.0);
    let (t, v) = one_series(
        &p,
        r#"temperature{device="cellar",id="0000059352D4",sensor="DS18B20",topic="tele/cellar/SENSOR"}"#,
    );
    assert_eq!(
        (t, v),
        (vec![device_s * 1000], vec![1.2]),
        "Tasmota's Time, read in UTC"
    );
    for (metric, value) in [
        ("latitude", 48.856826),
        ("altitude", 154.0),
        ("battery", 53.0),
    ] {
        let (t, v) = one_series(
            &p,
            &format!(r#"{metric}{{device="jane/nokia",topic="owntracks/jane/nokia"}}"#),
        );
        assert_eq!(
            (t, v),
            (vec![device_s * 1000], vec![value]),
            "OwnTracks {metric}"
        );
    }
    assert_eq!(
        metric(&p, "perch_ingest_notices_total", ""),
        0.0,
        "times within 15 minutes are believed without a notice"
    );

    // Clocks 2 hours off: the arrival time, and a notice each.
    let off = tasmota_time(now_s - 7200);
    let before = now_ms();
    p.publish("tele/attic/SENSOR", ds18b20(&off).as_bytes(), false);
    p.publish(
        "owntracks/jane/phone",
        owntracks_location(now_s + 7200).as_bytes(),
        false,
    );
    wait_read(&p, 4.0);
    let after = now_ms();
    let (t, v) = one_series(
        &p,
        r#"temperature{device="attic",id="00000566CC39",sensor="DS18B20"}"#,
    );
    assert_eq!(v, vec![13.3]);
    assert!(
        (before..=after).contains(&t[0]),
        "a clock 2 h late: sample at {} not at the arrival time ({before}..{after})",
        t[0]
    );
    let (t, _) = one_series(&p, r#"latitude{device="jane/phone"}"#);
    assert!(
        (before..=after).contains(&t[0]),
        "a clock 2 h ahead: sample at {} not at the arrival time ({before}..{after})",
        t[0]
    );
    assert_eq!(metric(&p, "perch_ingest_notices_total", ""), 2.0);
    let read = read_summary(&p, "tele/attic/SENSOR");
    assert_eq!(read["outcome"], "stored");
    let note = read["note"].as_str().unwrap_or_default();
    assert!(
        note.contains(&off),
        "the explorer says which time was not believed: {read}"
    );
    // Once per topic: the same clock again is not a new notice.
    p.publish("tele/attic/SENSOR", ds18b20(&off).as_bytes(), false);
    wait_read(&p, 5.0);
    assert_eq!(metric(&p, "perch_ingest_notices_total", ""), 2.0);
}

/// tests/fixtures/devices/homeassistant.toml's humidity config (the Home
/// Assistant docs' "Sensors" example no2) with a `device` block added.
const BEDROOM_HUMIDITY: &str = r#"{"device_class": "humidity", "name": "Humidity", "state_topic": "homeassistant/sensor/sensorBedroom/state", "unit_of_measurement": "%", "value_template": "{{ value_json.humidity}}", "device": {"identifiers": ["th-0042"], "name": "Bedroom sensor", "manufacturer": "Acme", "model": "TH-2", "sw_version": "1.4.2"}}"#;

#[test]
fn devices_and_discovery_configs_survive_a_restart() {
    if !have_mosquitto() {
        return;
    }
    let mut p = Perch::start_with(CONFIG);
    p.publish(
        "homeassistant/sensor/sensorBedroomH/config",
        BEDROOM_HUMIDITY.as_bytes(),
        true,
    );
    // tests/fixtures/devices/tasmota.toml: INFO1 of wemos2, and a reading.
    p.publish(
        "tele/wemos2/INFO1",
        br#"{"Module":"Generic","Version":"7.0.0.3(tasmota)","FallbackTopic":"cmnd/DVES_15568C_fb/","GroupTopic":"cmnd/sonoffs/"}"#,
        false,
    );
    p.publish(
        "tele/wemos2/SENSOR",
        ds18b20("2021-01-02T09:09:44").as_bytes(),
        false,
    );
    wait_read(&p, 3.0);
    let status = p.stop();
    assert!(status.success(), "perch stopped with {status}");
    p.restart();

    let listed = listed_devices(&p);
    let ids: Vec<&str> = listed.iter().filter_map(|d| d["id"].as_str()).collect();
    // The device's first identifier is its id (docs/devices.md).
    assert_eq!(ids, ["th-0042", "wemos2"], "{listed:?}");
    let ha = device(&p, "th-0042").json()["data"].clone();
    assert_eq!(ha["family"], "homeassistant");
    assert_eq!(ha["name"], "Bedroom sensor");
    assert_eq!(ha["manufacturer"], "Acme");
    assert_eq!(ha["model"], "TH-2");
    assert_eq!(ha["firmware"], "1.4.2");
    let tasmota = device(&p, "wemos2").json()["data"].clone();
    assert_eq!(tasmota["family"], "tasmota");
    assert_eq!(tasmota["model"], "Generic");
    assert_eq!(tasmota["firmware"], "7.0.0.3(tasmota)");
    assert_eq!(tasmota["metrics"]["temperature"], "°C", "{tasmota}");
    assert_eq!(
        one_series(&p, r#"temperature{device="wemos2",id="000005937C90"}"#).1,
        vec![22.5],
        "samples from before the restart"
    );

    // A state on the config's topic, after the restart: read as the entity
    // only if the retained config was learnt at start.
    p.publish(
        "homeassistant/sensor/sensorBedroom/state",
        br#"{ "temperature": 23.20, "humidity": 43.70 }"#,
        false,
    );
    wait_read(&p, 1.0);
    let (_, v) = one_series(
        &p,
        r#"humidity{device="th-0042",entity="sensorBedroomH",topic="homeassistant/sensor/sensorBedroom/state"}"#,
    );
    assert_eq!(v, vec![43.7]);
    let read = read_summary(&p, "homeassistant/sensor/sensorBedroom/state");
    assert_eq!(read["family"], "homeassistant", "{read}");
    assert_eq!(read["samples"], 1, "{read}");
    let meta = p.get("/api/v1/metadata?metric=humidity").json();
    assert_eq!(meta["data"]["humidity"][0]["unit"], "%", "{meta}");
    let ha = device(&p, "th-0042").json()["data"].clone();
    assert_eq!(ha["metrics"]["humidity"], "%", "{ha}");
}

/// Bytes that are no format: not UTF-8, not JSON, not a number.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = vec![0xff, 0xfe];
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push((x >> 24) as u8);
    }
    out
}

#[test]
fn bad_device_input_is_explained_counted_and_survived() {
    if !have_mosquitto() {
        return;
    }
    let p = Perch::start_with(CONFIG);
    p.publish(
        "tele/keep/SENSOR",
        ds18b20("2021-01-02T09:09:44").as_bytes(),
        false,
    );
    wait_read(&p, 1.0);
    let unparsed0 = metric(&p, "perch_ingest_messages_total", "outcome=\"unparsed\"");
    let notices0 = metric(&p, "perch_ingest_notices_total", "");
    let untracked0 = metric(&p, "perch_devices_untracked_total", "");
    let mut sent = 1.0;

    // Discovery configs that cannot be used, each with a reason.
    // MAX_CONFIG_BYTES in crates/ingest/src/conventions/homeassistant.rs.
    let big = format!(
        r#"{{"name":"Big","state_topic":"bad/big/state","unit_of_measurement":"W","icon":"{}"}}"#,
        "x".repeat(64 * 1024)
    );
    let not_json = r#"{"name": "Broken", "state_topic": "bad/broken/state""#;
    let template = "{{ value_json.x * 2 }}";
    let with_template = format!(
        r#"{{"name":"Doubled","state_topic":"bad/tpl/state","value_template":"{template}"}}"#
    );
    let bad_configs: [(&str, &[u8], &str); 4] = [
        ("homeassistant/sensor/big/config", big.as_bytes(), "64 KiB"),
        (
            "homeassistant/sensor/broken/config",
            not_json.as_bytes(),
            "not JSON",
        ),
        (
            "zigbee2mqtt/bridge/devices",
            br#"{"friendly_name":"not a list"}"#,
            "",
        ),
        (
            "homeassistant/sensor/doubled/config",
            with_template.as_bytes(),
            "",
        ),
    ];
    for (topic, payload, _) in &bad_configs {
        p.publish(topic, payload, true);
        sent += 1.0;
    }
    p.publish("bad/tpl/state", br#"{"x": 21}"#, false);
    p.publish("bad/big/state", b"12", false);
    sent += 2.0;

    // Random bytes where each family's messages go.
    let random_topics = [
        "tele/rnd/SENSOR",
        "stat/rnd/STATUS8",
        "shellies/shelly1pm-rnd/relay/0/power",
        "shellyplus1pm-rnd/status/switch:0",
        "shellyplus1pm-rnd/events/rpc",
        "zigbee2mqtt/rnd_sensor",
        "zigbee2mqtt/bridge/devices",
        "rndnode/sensor/temperature/state",
        "owntracks/rnd/phone",
        "frigate/stats",
        "frigate/front_door/person",
        "homeassistant/sensor/rnd/config",
    ];
    for (i, topic) in random_topics.iter().enumerate() {
        p.publish(topic, &random_bytes(i as u64, 64 + 37 * i), false);
        sent += 1.0;
    }

    // Odd device ids, by Tasmota topics and zigbee2mqtt friendly names.
    let long_tasmota = "t".repeat(300);
    let long_z2m = format!("room/{}", "z".repeat(300));
    let odd_ids = [
        "bäckerei ofen ☃",
        "..",
        "%2F",
        "a b/c d",
        "キッチン",
        long_tasmota.as_str(),
    ];
    for id in odd_ids {
        p.publish(
            &format!("tele/{id}/SENSOR"),
            ds18b20("2021-01-02T09:09:44").as_bytes(),
            false,
        );
        sent += 1.0;
    }
    // tests/fixtures/devices/zigbee2mqtt.toml, office/sensor's state.
    let z2m_state =
        r#"{"battery":30,"humidity":63.4,"linkquality":47,"temperature":21.1,"voltage":2500}"#;
    let odd_names = ["Küche/Lampe 1", "..%2F..", " lead", long_z2m.as_str()];
    for name in odd_names {
        p.publish(&format!("zigbee2mqtt/{name}"), z2m_state.as_bytes(), false);
        sent += 1.0;
    }
    wait_read(&p, sent);

    // Counted: every random payload as unparsed (and nothing else: the
    // relay check's text below would be).
    assert_eq!(
        metric(&p, "perch_ingest_messages_total", "outcome=\"unparsed\"") - unparsed0,
        random_topics.len() as f64,
        "{:#?}",
        random_topics
            .iter()
            .map(|t| (t, read_summary(&p, t)))
            .collect::<Vec<_>>()
    );
    // A notice each for the big, broken and random configs, the bridge
    // list that is not an array (the random one after it is the same
    // topic and kind: reported once), the template not evaluated.
    let notices = metric(&p, "perch_ingest_notices_total", "") - notices0;

    // Still answering, still relaying.
    assert_eq!(p.get("/api/v1/devices").status, 200);
    assert_eq!(p.get("/healthz").status, 200);
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &p.mqtt_port.to_string()])
        .args([
            "-u",
            crate::common::ADMIN,
            "-P",
            crate::common::ADMIN_PASSWORD,
        ])
        .args(["-t", "relay/check", "-C", "1", "-W", "15"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub");
    let mut tries = 0;
    while sub.try_wait().unwrap().is_none() {
        assert!(tries < 50, "mosquitto_sub received nothing");
        tries += 1;
        p.publish("relay/check", b"still here", false);
        sent += 1.0;
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = sub.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "still here");
    wait_read(&p, sent);

    // What was stored before is there.
    assert_eq!(
        one_series(&p, r#"temperature{device="keep",id="000005937C90"}"#).1,
        vec![22.5]
    );

    // The reasons, in the explorer.
    for (topic, _, why) in &bad_configs[..2] {
        let read = read_summary(&p, topic);
        assert_eq!(read["outcome"], "no_samples", "{topic}: {read}");
        let note = read["note"].as_str().unwrap_or_default();
        assert!(note.contains(why), "{topic}: {read}");
    }
    let read = read_summary(&p, "bad/tpl/state");
    assert_eq!(read["samples"], 0, "{read}");
    assert!(
        read["note"].as_str().unwrap_or_default().contains(template),
        "the explorer names the template: {read}"
    );
    assert!(p.export(r#"{__name__="doubled"}"#).is_empty());
    // A refused config names no state topic: its topic is read generically.
    let read = read_summary(&p, "bad/big/state");
    assert_eq!(read["family"], "generic", "{read}");
    assert!(p.export(r#"{topic="bad/big/state",entity!=""}"#).is_empty());
    for topic in random_topics {
        let read = read_summary(&p, topic);
        assert_eq!(read["outcome"], "unparsed", "{topic}: {read}");
    }
    // And a time notice per odd Tasmota topic: the fixture's 2021 clock.
    assert_eq!(notices, 5.0 + odd_ids.len() as f64);

    // Odd ids are devices like any other, their samples stored under them;
    // ids over MAX_ID_BYTES are not tracked, counted, their samples stored.
    let listed = listed_devices(&p);
    let ids: Vec<&str> = listed.iter().filter_map(|d| d["id"].as_str()).collect();
    for id in odd_ids.iter().chain(&odd_names) {
        let tracked = id.len() <= devices::MAX_ID_BYTES;
        assert_eq!(ids.contains(id), tracked, "{id:?} in {ids:?}");
        let r = device(&p, id);
        if tracked {
            assert_eq!(r.status, 200, "{id:?}: {}", r.body);
            assert_eq!(r.json()["data"]["id"], *id);
        } else {
            assert_eq!(r.status, 404, "{id:?}: {}", r.body);
        }
        let sel = format!(
            "{{__name__=\"temperature\",device={}}}",
            serde_json::to_string(id).unwrap()
        );
        let found = p.export(&sel);
        assert!(!found.is_empty(), "no samples of {id:?}");
    }
    assert_eq!(
        metric(&p, "perch_devices_untracked_total", "") - untracked0,
        2.0,
        "one per message of an id over {} bytes",
        devices::MAX_ID_BYTES
    );
}

#[test]
fn many_devices_past_the_limit_are_stored_but_not_tracked() {
    if !have_mosquitto() {
        return;
    }
    let p = Perch::start_with(&format!("{CONFIG}[devices]\nmax_devices = 50\n"));
    let messages: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| {
            (
                format!("zigbee2mqtt/room{i:03}/sensor"),
                format!(
                    r#"{{"battery":30,"humidity":63.4,"linkquality":47,"temperature":{},"voltage":2500}}"#,
                    10.0 + f64::from(i) / 10.0
                )
                .into_bytes(),
            )
        })
        .collect();
    let started = Instant::now();
    publish_many(&p, &messages);
    wait_read(&p, 200.0);
    eprintln!("200 devices published and read in {:?}", started.elapsed());

    let listed = listed_devices(&p);
    assert_eq!(listed.len(), 50);
    assert!(listed
        .iter()
        .all(|d| d["family"] == "zigbee2mqtt" && d["battery"] == 30.0));
    assert_eq!(metric(&p, "perch_devices_untracked_total", ""), 150.0);
    let series = p.export(r#"temperature{device=~"room[0-9]+/sensor"}"#);
    assert_eq!(series.len(), 200);
    for (labels, _, values) in &series {
        let device = labels["device"].as_str().unwrap();
        let i: u32 = device[4..7].parse().unwrap();
        assert_eq!(values, &vec![10.0 + f64::from(i) / 10.0], "{device}");
    }
    assert_eq!(
        p.export(r#"{__name__=~"humidity|battery|linkquality|voltage",device=~"room.*"}"#)
            .len(),
        800
    );
    // Again: known devices stay, the others are still not tracked.
    publish_many(&p, &messages);
    wait_read(&p, 400.0);
    assert_eq!(listed_devices(&p).len(), 50);
    assert_eq!(metric(&p, "perch_devices_untracked_total", ""), 300.0);
}
