use std::sync::Arc;

use base::{Labels, ManualClock, SeriesSamples};
use ingest::conventions::{DeviceReport, Family, Reading, Signal};
use ingest::mqtt_payload::PayloadFormat;

use super::*;

const T0: i64 = 1_767_225_600_000;

fn config() -> config::DevicesConfig {
    config::DevicesConfig::default()
}

fn open(
    trees: &store::Trees,
    clock: &Arc<ManualClock>,
    c: &config::DevicesConfig,
) -> Arc<Registry> {
    Registry::open(trees, c, clock.clone()).unwrap()
}

fn sample(device: &str, metric: &str, t: i64) -> SeriesSamples {
    SeriesSamples::new(
        Labels::from_pairs([("__name__", metric), ("device", device)]),
        vec![(t, 1.0)],
    )
}

fn reading(series: Vec<SeriesSamples>, devices: Vec<DeviceReport>) -> Reading {
    Reading {
        series,
        devices,
        ..Reading::new(Family::Tasmota, PayloadFormat::Json)
    }
}

#[test]
fn devices_come_from_reports_and_series_labels() {
    let trees = store::Trees::temporary().unwrap();
    let clock = ManualClock::new(T0);
    let r = open(&trees, &clock, &config());
    let mut report = DeviceReport::new("kitchen", Family::Tasmota);
    report.model = Some("Sonoff Basic".into());
    report.online = Some(true);
    report.signal = Some(Signal::Percent(88.0));
    let mut m = reading(vec![sample("kitchen", "temperature", T0)], vec![report]);
    m.units.push(("temperature".into(), "°C".into()));
    r.observe("tele/kitchen/SENSOR", &m, T0);
    r.observe(
        "zigbee2mqtt/door",
        &reading(vec![sample("door", "contact", T0)], vec![]),
        T0,
    );
    let all = r.list();
    assert_eq!(all.len(), 2);
    let k = r.get("kitchen").unwrap();
    assert!(k.online);
    assert_eq!(k.status_reason, "reported");
    assert_eq!(k.device.model.as_deref(), Some("Sonoff Basic"));
    assert_eq!(k.device.family.as_deref(), Some("tasmota"));
    assert_eq!(
        k.device.metrics.get("temperature"),
        Some(&Some("°C".to_string()))
    );
    assert!(k.device.topics.contains("tele/kitchen/SENSOR"));
    assert_eq!(
        k.device.signal,
        Some(SignalValue {
            kind: SignalKind::Percent,
            value: 88.0
        })
    );
    assert_eq!(
        r.units().get("temperature").unwrap().iter().next().unwrap(),
        "°C"
    );
}

#[test]
fn offline_by_will_or_by_silence() {
    let trees = store::Trees::temporary().unwrap();
    let clock = ManualClock::new(T0);
    let r = open(&trees, &clock, &config());
    // Every 10 s, in bursts of two messages.
    for i in 0..5 {
        let t = T0 + i * 10_000;
        clock.set(t);
        r.observe("a/x", &reading(vec![sample("a", "x", t)], vec![]), t);
        r.observe("a/y", &reading(vec![sample("a", "y", t)], vec![]), t + 50);
    }
    let last = T0 + 40_050;
    let interval = r.get("a").unwrap().device.interval_ms.unwrap();
    assert!((9_900..=10_000).contains(&interval), "{interval}");
    // Three intervals would be 30 s; never less than a minute.
    clock.set(last + 59_000);
    assert!(r.get("a").unwrap().online);
    clock.set(last + 61_000);
    let s = r.get("a").unwrap();
    assert!(!s.online);
    assert_eq!(s.status_reason, "silent");

    let mut will = DeviceReport::new("a", Family::Tasmota);
    will.online = Some(false);
    clock.set(last + 62_000);
    r.observe("tele/a/LWT", &reading(vec![], vec![will]), last + 62_000);
    let s = r.get("a").unwrap();
    assert_eq!((s.online, s.status_reason), (false, "reported"));
    // Readings after an old will: it is there.
    r.observe(
        "a/x",
        &reading(vec![sample("a", "x", last + 63_000)], vec![]),
        last + 63_000,
    );
    assert!(r.get("a").unwrap().online);
}

#[test]
fn kept_across_restarts_and_written_sparingly() {
    let trees = store::Trees::temporary().unwrap();
    let clock = ManualClock::new(T0);
    let r = open(&trees, &clock, &config());
    let mut report = DeviceReport::new("plug", Family::Shelly);
    report.firmware = Some("1.0".into());
    r.observe("shellies/plug/online", &reading(vec![], vec![report]), T0);
    assert_eq!(r.persist(false).unwrap(), 1);
    // Only the last-seen time moves: not written until five minutes on.
    for i in 1..10 {
        let t = T0 + i * 10_000;
        clock.set(t);
        r.observe(
            "shellies/plug/x",
            &reading(vec![sample("plug", "x", t)], vec![]),
            t,
        );
    }
    // The first sample added a series name: written once.
    assert_eq!(r.persist(false).unwrap(), 1);
    clock.set(T0 + 95_000);
    r.observe(
        "shellies/plug/x",
        &reading(vec![sample("plug", "x", T0 + 95_000)], vec![]),
        T0 + 95_000,
    );
    assert_eq!(r.persist(false).unwrap(), 0);
    clock.set(T0 + LAST_SEEN_EVERY_MS + 95_000);
    r.observe(
        "shellies/plug/x",
        &reading(vec![], vec![DeviceReport::new("plug", Family::Shelly)]),
        T0 + LAST_SEEN_EVERY_MS + 95_000,
    );
    assert_eq!(r.persist(false).unwrap(), 1);

    let again = open(&trees, &clock, &config());
    let d = again.get("plug").unwrap().device;
    assert_eq!(d.firmware.as_deref(), Some("1.0"));
    assert!(d.metrics.contains_key("x"));
    assert_eq!(d.last_seen_ms, T0 + LAST_SEEN_EVERY_MS + 95_000);

    let mut gone = DeviceReport::new("plug", Family::Shelly);
    gone.removed = true;
    again.observe("x", &reading(vec![], vec![gone]), T0);
    assert!(again.get("plug").is_none());
    again.persist(false).unwrap();
    assert!(open(&trees, &clock, &config()).get("plug").is_none());
}

#[test]
fn bounded_and_odd_ids_refused() {
    let trees = store::Trees::temporary().unwrap();
    let clock = ManualClock::new(T0);
    let c = config::DevicesConfig {
        max_devices: 100,
        ..config()
    };
    let r = open(&trees, &clock, &c);
    for i in 0..10_000 {
        let id = format!("dev{i}");
        r.observe("t", &reading(vec![sample(&id, "x", T0)], vec![]), T0);
    }
    assert_eq!(r.list().len(), 100);
    for odd in ["", "a\u{0}b", &"x".repeat(MAX_ID_BYTES + 1)] {
        r.observe(
            "t",
            &reading(vec![], vec![DeviceReport::new(odd, Family::Generic)]),
            T0,
        );
    }
    r.observe(
        "t",
        &reading(vec![sample("bäckerei/ofen 1", "x", T0)], vec![]),
        T0,
    );
    assert_eq!(r.list().len(), 100, "the limit holds for odd ids too");
    let mut points = Vec::new();
    r.collect(&mut points);
    let untracked = points
        .iter()
        .find(|p| p.name == "perch_devices_untracked_total")
        .unwrap();
    assert_eq!(untracked.value, (9_900 + 3 + 1) as f64);
    let up: Vec<_> = points
        .iter()
        .filter(|p| p.name == "perch_device_up")
        .collect();
    assert_eq!(up.len(), 100);
}

#[test]
fn an_untracked_device_counts_once_per_message() {
    let trees = store::Trees::temporary().unwrap();
    let clock = ManualClock::new(T0);
    let c = config::DevicesConfig {
        max_devices: 1,
        ..config()
    };
    let r = open(&trees, &clock, &c);
    r.observe("t", &reading(vec![sample("a", "x", T0)], vec![]), T0);
    // Five series and a report of a device past the limit: one message.
    let series = ["a", "b", "c", "d", "e"]
        .map(|m| sample("over", m, T0))
        .to_vec();
    let m = reading(series, vec![DeviceReport::new("over", Family::Tasmota)]);
    r.observe("t", &m, T0);
    r.observe("t", &m, T0);
    let mut points = Vec::new();
    r.collect(&mut points);
    let untracked = points
        .iter()
        .find(|p| p.name == "perch_devices_untracked_total")
        .unwrap();
    assert_eq!(untracked.value, 2.0);
    assert_eq!(r.list().len(), 1);
}

/// Telegraf's readings name `host` as the device label.
#[test]
fn a_telegraf_host_has_its_series() {
    let trees = store::Trees::temporary().unwrap();
    let clock = ManualClock::new(T0);
    let r = open(&trees, &clock, &config());
    let series = |host: &str| {
        SeriesSamples::new(
            Labels::from_pairs([
                ("__name__", "docker_n_images"),
                ("host", host),
                ("topic", "telegraf"),
            ]),
            vec![(T0, 660.0)],
        )
    };
    let m = Reading {
        series: vec![series("raynor"), series("amaranth")],
        devices: vec![DeviceReport::new("raynor", Family::Telegraf)],
        device_label: Some("host"),
        ..Reading::new(Family::Telegraf, PayloadFormat::Json)
    };
    r.observe("telegraf", &m, T0);
    for host in ["raynor", "amaranth"] {
        let d = r.get(host).unwrap();
        assert!(d.device.metrics.contains_key("docker_n_images"), "{host}");
    }
    // Elsewhere `host` is only a label.
    r.observe("x", &reading(vec![series("edge01")], vec![]), T0);
    assert!(r.get("edge01").is_none());
}

/// Line protocol's tags name anything: `device=sda1` is a partition.
#[test]
fn line_protocol_device_tags_are_not_devices() {
    let trees = store::Trees::temporary().unwrap();
    let clock = ManualClock::new(T0);
    let r = open(&trees, &clock, &config());
    let m = Reading {
        series: vec![sample("sda1", "disk_used", T0)],
        ..Reading::new(Family::Generic, PayloadFormat::LineProtocol)
    };
    r.observe("telegraf/disk", &m, T0);
    assert!(r.list().is_empty());
    // A rule's capture on a JSON topic is one.
    let m = Reading {
        series: vec![sample("shed", "t", T0)],
        ..Reading::new(Family::Generic, PayloadFormat::Json)
    };
    r.observe("sensors/shed/env", &m, T0);
    assert!(r.get("shed").is_some());
}

/// Long texts are cut; long topics and series names are not remembered.
#[test]
fn long_details_are_bounded() {
    let trees = store::Trees::temporary().unwrap();
    let clock = ManualClock::new(T0);
    let r = open(&trees, &clock, &config());
    let mut report = DeviceReport::new("plug", Family::Shelly);
    report.model = Some("é".repeat(MAX_TEXT_BYTES));
    let long = "x".repeat(MAX_DETAIL_BYTES + 1);
    r.observe(
        &long,
        &reading(vec![sample("plug", &long, T0)], vec![report]),
        T0,
    );
    let d = r.get("plug").unwrap();
    let model = d.device.model.unwrap();
    assert!(model.len() <= MAX_TEXT_BYTES && model.chars().all(|c| c == 'é'));
    assert!(d.device.metrics.is_empty() && d.device.topics.is_empty());
}
