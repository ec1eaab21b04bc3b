//! Frigate (NVR): see docs/devices.md.
//!
//! Frigate publishes under its topic prefix (`[devices] frigate_prefix`,
//! `frigate` by default): `available` (`online`, `offline` as
//! its last will, `stopped`), `stats` (the JSON of `/api/stats`, at
//! `mqtt.stats_interval`), the JSON of `events`, `reviews`,
//! `tracked_object_update` and the like, and per camera (or zone)
//! `<camera>/<object>` (a count), `<camera>/<object>/active`,
//! `<camera>/<object>/snapshot` (JPEG bytes), `<camera>/motion`,
//! `<camera>/<feature>/state` (`ON`/`OFF`, or a number),
//! `<camera>/status/<role>`, `<camera>/audio/<type>`, and command topics
//! ending in `set`.
//!
//! The device is the Frigate server (its id is the prefix, `frigate`); cameras, zones,
//! objects, detectors and the like are labels: the count topics do not say
//! whether their first level is a camera or a zone, and what is online or
//! offline is the server.

use serde_json::{Map, Value};

use super::values::{self, DeviceSeries};
use super::{Ctx, DeviceReport, Family, Message, Notice, NoticeKind, Reading, Settings};
use crate::mqtt_payload::PayloadFormat;

/// The topic prefix, and the server's device id.
/// Whether [`read`] may claim `topic`, whatever the payload.
pub(crate) fn may_claim(topic: &str, settings: &Settings) -> bool {
    topic
        .strip_prefix(settings.frigate_prefix.as_str())
        .is_some_and(|r| r.starts_with('/'))
}

/// The message read as Frigate's, or `None` if it is not one.
pub(crate) fn read(msg: &Message, ctx: &mut Ctx) -> Option<Reading> {
    let prefix = ctx.settings.frigate_prefix.as_str();
    let rest = msg.topic.strip_prefix(prefix)?.strip_prefix('/')?;
    if rest.is_empty() {
        return None;
    }
    let levels: Vec<&str> = rest.split('/').collect();
    if levels.iter().any(|l| l.is_empty()) {
        return None;
    }
    Some(Out::new(msg, prefix).read(&levels))
}

/// What one message gives, while it is read.
struct Out<'a, 'm> {
    msg: &'a Message<'m>,
    r: Reading,
    series: DeviceSeries<'a>,
    device: DeviceReport,
}

impl<'a, 'm> Out<'a, 'm> {
    fn new(msg: &'a Message<'m>, server: &'a str) -> Self {
        Out {
            msg,
            r: Reading::new(Family::Frigate, PayloadFormat::Unparsed),
            series: DeviceSeries::new(server, msg.topic),
            device: DeviceReport::new(server, Family::Frigate),
        }
    }

    fn finish(mut self) -> Reading {
        self.r.devices.push(self.device);
        self.series.finish(&mut self.r);
        self.r
    }

    /// A sample of `metric` with the family's labels (`device`, `topic`)
    /// and `labels`.
    fn sample(&mut self, metric: &str, labels: &[(&str, &str)], t: i64, v: f64) {
        self.series.push(metric, labels, t, v, None);
    }

    fn unit(&mut self, metric: &str, unit: &str) {
        self.series.unit(metric, Some(unit));
    }

    /// The payload as trimmed text, or an error.
    fn text(&mut self) -> Option<&'m str> {
        self.r.format = super::values::payload_format(self.msg.payload);
        match self.msg.text() {
            Some(t) => Some(t.trim()),
            None => {
                self.r.errors.push("payload is not UTF-8 text".into());
                None
            }
        }
    }

    fn read(mut self, levels: &[&str]) -> Reading {
        let t = self.msg.received_ms;
        match levels {
            ["available"] => self.available(),
            ["stats"] => self.stats(),
            ["events"] => self.events(),
            ["reviews"
            | "tracked_object_update"
            | "triggers"
            | "camera_activity"
            | "model_state"
            | "job_state"
            | "birdseye_layout"
            | "audio_detections"
            | "embeddings_reindex_progress"
            | "audio_transcription_state"
            | "camera_monitoring"] => self.json_not_samples(),
            // `restart`, `onConnect`, `notification_test`, and what later
            // versions add: nothing to store.
            [_] => {
                self.text();
            }
            // Commands to Frigate, and their echo.
            [.., "set"] | [_, "ptz"] | [_, "notifications", "suspend"] => {
                self.text();
            }
            ["notifications", "state"] => self.on_off("frigate_notifications_enabled", &[], t),
            // The active profile's name.
            ["profile", "state"] => {
                self.text();
            }
            [camera, "motion"] => self.on_off("frigate_motion", &[("camera", camera)], t),
            [camera, "review_status"] => self.review_status(camera),
            [area, object] => self.count("frigate_objects", area, object),
            [camera, "ptz_autotracker", "active"] => {
                self.on_off("frigate_ptz_autotracking", &[("camera", camera)], t)
            }
            [area, object, "active"] => self.count("frigate_active_objects", area, object),
            // JPEG bytes: never read.
            [_, _, "snapshot"] => {}
            [camera, "status", role] => self.stream_status(camera, role),
            [camera, "audio", "dBFS"] => {
                self.number("frigate_audio_dbfs", &[("camera", camera)]);
                if !self.series.is_empty() {
                    self.unit("frigate_audio_dbfs", "dBFS");
                }
            }
            [camera, "audio", "rms"] => self.number("frigate_audio_rms", &[("camera", camera)]),
            // Text, a class name, a time (`suspended`: until when), a mode
            // word: not samples.
            [_, "audio", "transcription"]
            | [_, "classification", _]
            | [_, "notifications", "suspended"]
            | [_, "birdseye_mode", "state"] => {
                self.text();
            }
            [camera, "audio", "state"] => {
                self.on_off("frigate_audio_enabled", &[("camera", camera)], t)
            }
            [camera, "audio", kind] => self.on_off(
                "frigate_audio_detected",
                &[("audio", kind), ("camera", camera)],
                t,
            ),
            [camera, feature, "state"] => self.feature_state(camera, feature),
            [camera, kind @ ("motion_mask" | "object_mask" | "zone"), name, "state"] => {
                let metric = format!("frigate_{kind}_enabled");
                let key = if *kind == "zone" { "zone" } else { "mask" };
                self.on_off(&metric, &[("camera", camera), (key, name)], t);
            }
            _ => {
                self.text();
                self.r
                    .errors
                    .push("not a topic Frigate documents: nothing stored".into());
            }
        }
        self.finish()
    }

    /// `available`: the server's availability (`stopped` when it stops
    /// normally, `offline` as its last will).
    fn available(&mut self) {
        let Some(text) = self.text() else { return };
        self.r.format = PayloadFormat::Boolean;
        match text {
            "online" => self.device.online = Some(true),
            "offline" | "stopped" => self.device.online = Some(false),
            _ => self
                .r
                .errors
                .push(format!("{text:?} is not online, offline or stopped")),
        }
    }

    /// `ON`/`OFF` as 1/0.
    fn on_off(&mut self, metric: &str, labels: &[(&str, &str)], t: i64) {
        let Some(text) = self.text() else { return };
        match on_off(text) {
            Some(v) => {
                self.r.format = PayloadFormat::Boolean;
                self.sample(metric, labels, t, v);
            }
            None => self
                .r
                .errors
                .push(format!("{text:?} is neither ON nor OFF")),
        }
    }

    /// A plain number.
    fn number(&mut self, metric: &str, labels: &[(&str, &str)]) {
        let Some(text) = self.text() else { return };
        match values::number_in_string(text) {
            Some(v) => self.sample(metric, labels, self.msg.received_ms, v),
            None => self.r.errors.push(format!("{text:?} is not a number")),
        }
    }

    /// `<camera or zone>/<object>[/active]`: how many objects are seen.
    fn count(&mut self, metric: &str, area: &str, object: &str) {
        let Some(text) = self.text() else { return };
        match values::number_in_string(text) {
            Some(v) => self.sample(
                metric,
                &[("camera_or_zone", area), ("object", object)],
                self.msg.received_ms,
                v,
            ),
            None => self
                .r
                .errors
                .push(format!("{text:?} is not a count of objects")),
        }
    }

    /// `<camera>/review_status`: `NONE`, `DETECTION` or `ALERT` as 0, 1, 2.
    fn review_status(&mut self, camera: &str) {
        let Some(text) = self.text() else { return };
        let v = match text {
            "NONE" => 0.0,
            "DETECTION" => 1.0,
            "ALERT" => 2.0,
            _ => {
                self.r
                    .errors
                    .push(format!("{text:?} is not NONE, DETECTION or ALERT"));
                return;
            }
        };
        self.sample(
            "frigate_review_severity",
            &[("camera", camera)],
            self.msg.received_ms,
            v,
        );
    }

    /// `<camera>/status/<role>`: a stream `online` (1) or `offline` (0);
    /// `disabled` (the camera is turned off) is not a stream state.
    fn stream_status(&mut self, camera: &str, role: &str) {
        let Some(text) = self.text() else { return };
        let v = match text {
            "online" => 1.0,
            "offline" => 0.0,
            "disabled" => return,
            _ => {
                self.r
                    .errors
                    .push(format!("{text:?} is not online, offline or disabled"));
                return;
            }
        };
        self.r.format = PayloadFormat::Boolean;
        self.sample(
            "frigate_stream_online",
            &[("camera", camera), ("role", role)],
            self.msg.received_ms,
            v,
        );
    }

    /// `<camera>/<feature>/state`: `ON`/`OFF` as `frigate_<feature>_enabled`
    /// (`enabled` → `frigate_camera_enabled`, `motion` →
    /// `frigate_motion_detection_enabled`), a number as `frigate_<feature>`
    /// (`motion_threshold`, `motion_contour_area`).
    fn feature_state(&mut self, camera: &str, feature: &str) {
        let Some(text) = self.text() else { return };
        let labels = [("camera", camera)];
        let t = self.msg.received_ms;
        if let Some(v) = on_off(text) {
            let metric = match feature {
                "enabled" => "frigate_camera_enabled".to_string(),
                "motion" => "frigate_motion_detection_enabled".to_string(),
                _ => values::metric_name(["frigate", feature, "enabled"]),
            };
            self.sample(&metric, &labels, t, v);
        } else if let Some(v) = values::number_in_string(text) {
            self.sample(&values::metric_name(["frigate", feature]), &labels, t, v);
        } else {
            self.r
                .errors
                .push(format!("{text:?} is neither ON, OFF nor a number"));
        }
    }

    /// The payload as a JSON object, or an error naming `what` it is.
    fn json_object(&mut self, what: &str) -> Option<Map<String, Value>> {
        // Json, or Unparsed when the payload is not even text.
        self.r.format = values::payload_format(self.msg.payload);
        match serde_json::from_slice::<Value>(self.msg.payload) {
            Ok(Value::Object(m)) => Some(m),
            Ok(_) => {
                self.r.errors.push(format!("{what}: not a JSON object"));
                None
            }
            Err(e) => {
                self.r.errors.push(format!("{what}: not JSON: {e}"));
                None
            }
        }
    }

    /// The sample time a time field `field` gives, believed as a device
    /// clock is (within 15 minutes, else the arrival time and a notice);
    /// the arrival time without it.
    fn time_of(&mut self, v: Option<&Value>, field: &str) -> i64 {
        let Some(v) = v else {
            return self.msg.received_ms;
        };
        let (t, why) = values::device_time(
            values::time_value(v, &values::Zone::Utc),
            self.msg.received_ms,
        );
        if let Some(why) = why {
            self.r.notices.push(Notice {
                kind: NoticeKind::Time,
                message: format!("{field} {v}: {why}"),
            });
        }
        t
    }

    /// `events`: while an object is tracked, its score at the frame's time
    /// (`after.frame_time`); when it ends, how long it was tracked and its
    /// top score, at `after.end_time`. Labelled by `camera` and `label` (the
    /// object class), never by the event id: that would make a series per
    /// object. The times are believed as device clocks are (15 minutes).
    fn events(&mut self) {
        let Some(event) = self.json_object("the event") else {
            return;
        };
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        let Some(after) = event.get("after").and_then(Value::as_object) else {
            self.r
                .errors
                .push("the event has no \"after\" object".into());
            return;
        };
        let text = |k: &str| {
            after
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let (Some(camera), Some(label)) = (text("camera"), text("label")) else {
            self.r
                .errors
                .push("the event names no camera or label".into());
            return;
        };
        let number = |k: &str| {
            after
                .get(k)
                .and_then(Value::as_f64)
                .filter(|v| v.is_finite())
        };
        let ended = kind == "end";
        let time_key = if ended { "end_time" } else { "frame_time" };
        let t = self.time_of(
            after.get(time_key).filter(|v| !v.is_null()),
            &format!("event {time_key}"),
        );
        let labels = [("camera", camera), ("label", label)];
        if let Some(score) = number("score") {
            self.sample("frigate_event_score", &labels, t, score);
        }
        if ended {
            if let (Some(start), Some(end)) = (number("start_time"), number("end_time")) {
                if end >= start {
                    self.sample("frigate_event_duration", &labels, t, end - start);
                    self.unit("frigate_event_duration", "s");
                }
            }
            if let Some(top) = number("top_score") {
                self.sample("frigate_event_top_score", &labels, t, top);
            }
        }
    }

    /// Reviews, object updates and the web UI's states: JSON that is
    /// checked but not stored.
    fn json_not_samples(&mut self) {
        self.r.format = PayloadFormat::Json;
        if let Err(e) = serde_json::from_slice::<Value>(self.msg.payload) {
            self.r.errors.push(format!("payload is not JSON: {e}"));
        }
    }

    /// `stats`: the server's, its cameras', detectors', storage's, GPUs'
    /// and processes' figures, at the time the stats were taken
    /// (`service.last_updated`).
    fn stats(&mut self) {
        let Some(obj) = self.json_object("stats") else {
            return;
        };
        let service = obj.get("service").and_then(Value::as_object);
        let t = self.time_of(
            service.and_then(|s| s.get("last_updated")),
            "service.last_updated",
        );
        if let Some(v) = service
            .and_then(|s| s.get("version"))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            self.device.firmware = Some(v.to_string());
        }
        for (key, v) in sorted(&obj) {
            match (key, v) {
                ("cameras", Value::Object(m)) => {
                    for (name, cam) in sorted(m) {
                        if let Value::Object(cam) = cam {
                            self.camera_stats(name, cam, t);
                        }
                    }
                }
                ("detectors", Value::Object(m)) => {
                    for (name, d) in sorted(m) {
                        if let Value::Object(d) = d {
                            self.detector_stats(name, d, t);
                        }
                    }
                }
                ("service", Value::Object(m)) => self.service_stats(m, t),
                ("cpu_usages", Value::Object(m)) => {
                    // Per process id: ids change at every restart, and the
                    // cameras', detectors' and processes' own figures are
                    // in their sections. The whole system's only.
                    if let Some(Value::Object(sys)) = m.get("frigate.full_system") {
                        for (k, metric) in
                            [("cpu", "frigate_system_cpu"), ("mem", "frigate_system_mem")]
                        {
                            if let Some(v) = sys.get(k).and_then(percent_value) {
                                self.sample(metric, &[], t, v);
                                self.unit(metric, "%");
                            }
                        }
                    }
                }
                ("gpu_usages" | "npu_usages", Value::Object(m)) => {
                    let kind = &key[..3];
                    for (name, g) in sorted(m) {
                        if let Value::Object(g) = g {
                            self.accelerator_stats(kind, name, g, t);
                        }
                    }
                }
                ("processes", Value::Object(m)) => {
                    for (name, p) in sorted(m) {
                        let Value::Object(p) = p else { continue };
                        for (k, v) in sorted(p) {
                            if k == "pid" {
                                continue;
                            }
                            let Some(v) = percent_value(v) else { continue };
                            let metric = values::metric_name(["frigate", "process", k]);
                            self.sample(&metric, &[("process", name)], t, v);
                            if matches!(k, "cpu" | "mem") {
                                self.unit(&metric, "%");
                            }
                        }
                    }
                }
                ("embeddings", Value::Object(m)) => {
                    for (k, v) in sorted(m) {
                        let Some(v) = values::sample_value(v) else {
                            continue;
                        };
                        let metric = values::metric_name(["frigate", "embeddings", k]);
                        self.sample(&metric, &[], t, v);
                        if k.ends_with("_speed") {
                            self.unit(&metric, "ms");
                        }
                    }
                }
                // Up to 0.12, cameras were at the top level.
                (name, Value::Object(cam)) if cam.contains_key("camera_fps") => {
                    self.camera_stats(name, cam, t)
                }
                // Sums over all cameras.
                ("camera_fps" | "process_fps" | "skipped_fps" | "detection_fps", v) => {
                    if let Some(v) = values::sample_value(v) {
                        let metric = values::metric_name(["frigate", "total", key]);
                        self.sample(&metric, &[], t, v);
                        self.unit(&metric, "fps");
                    }
                }
                // Per process id (bandwidth), and what later versions add.
                _ => {}
            }
        }
    }

    fn camera_stats(&mut self, name: &str, cam: &Map<String, Value>, t: i64) {
        for (k, v) in sorted(cam) {
            // Process ids are not quantities; connection_quality is a word.
            if matches!(k, "pid" | "capture_pid" | "ffmpeg_pid") {
                continue;
            }
            let Some(v) = values::sample_value(v) else {
                continue;
            };
            let metric = values::metric_name(["frigate", &k.to_ascii_lowercase()]);
            self.sample(&metric, &[("camera", name)], t, v);
            if k.ends_with("_fps") {
                self.unit(&metric, "fps");
            } else if k.ends_with("_cpu") {
                self.unit(&metric, "%");
            } else if k == "audio_dBFS" {
                self.unit(&metric, "dBFS");
            }
        }
    }

    fn detector_stats(&mut self, name: &str, d: &Map<String, Value>, t: i64) {
        for (k, v) in sorted(d) {
            // `detection_start` is a time (0 when idle), `pid` an id.
            if matches!(k, "pid" | "detection_start") {
                continue;
            }
            let Some(v) = percent_value(v) else { continue };
            let metric = values::metric_name(["frigate", "detector", k]);
            self.sample(&metric, &[("detector", name)], t, v);
            match k {
                "inference_speed" => self.unit(&metric, "ms"),
                "temperature" => self.unit(&metric, "°C"),
                "cpu" | "mem" => self.unit(&metric, "%"),
                _ => {}
            }
        }
    }

    fn service_stats(&mut self, s: &Map<String, Value>, t: i64) {
        if let Some(v) = s.get("uptime").and_then(values::sample_value) {
            self.sample("frigate_uptime", &[], t, v);
            self.unit("frigate_uptime", "s");
        }
        if let Some(Value::Object(storage)) = s.get("storage") {
            for (path, st) in sorted(storage) {
                let Value::Object(st) = st else { continue };
                for k in ["free", "total", "used"] {
                    if let Some(v) = st.get(k).and_then(values::sample_value) {
                        let metric = values::metric_name(["frigate", "storage", k]);
                        self.sample(&metric, &[("storage", path)], t, v);
                        self.unit(&metric, "MiB");
                    }
                }
            }
        }
        if let Some(Value::Object(temps)) = s.get("temperatures") {
            for (name, v) in sorted(temps) {
                if let Some(v) = values::sample_value(v) {
                    self.sample("frigate_temperature", &[("sensor", name)], t, v);
                    self.unit("frigate_temperature", "°C");
                }
            }
        }
    }

    /// A GPU's or NPU's usage: percentages written as `"19 %"`.
    fn accelerator_stats(&mut self, kind: &str, name: &str, g: &Map<String, Value>, t: i64) {
        for (k, v) in sorted(g) {
            let metric = match k {
                "vendor" => continue,
                "gpu" | "npu" => format!("frigate_{kind}_usage"),
                "mem" => format!("frigate_{kind}_mem_usage"),
                "enc" => format!("frigate_{kind}_encoder_usage"),
                "dec" => format!("frigate_{kind}_decoder_usage"),
                "temp" => format!("frigate_{kind}_temperature"),
                _ => values::metric_name(["frigate", kind, k]),
            };
            let Some(n) = percent_value(v) else { continue };
            self.sample(&metric, &[(kind, name)], t, n);
            if k == "temp" {
                self.unit(&metric, "°C");
            } else if v.as_str().is_some_and(|s| s.trim_end().ends_with('%')) {
                self.unit(&metric, "%");
            }
        }
    }
}

/// `ON` or `OFF`, any case.
fn on_off(s: &str) -> Option<f64> {
    if s.eq_ignore_ascii_case("on") {
        Some(1.0)
    } else if s.eq_ignore_ascii_case("off") {
        Some(0.0)
    } else {
        None
    }
}

/// A sample value that may be a percentage written as text (`"19 %"`,
/// `"57.0%"`). (A candidate for `values`.)
fn percent_value(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => {
            let s = s.trim();
            let s = s.strip_suffix('%').unwrap_or(s);
            values::number_in_string(s)
        }
        _ => values::sample_value(v),
    }
}

/// An object's entries by key, so that the order of series does not depend
/// on how the JSON map keeps its keys.
fn sorted(m: &Map<String, Value>) -> Vec<(&str, &Value)> {
    let mut v: Vec<(&str, &Value)> = m.iter().map(|(k, v)| (k.as_str(), v)).collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

#[cfg(test)]
mod tests {
    use super::super::corpus::render_samples;
    use super::super::{Interpreter, Settings};
    use super::*;
    use crate::rules::Rules;

    fn read_bytes(topic: &str, payload: &[u8]) -> Reading {
        Interpreter::new(Rules::default(), Settings::default()).read(topic, payload, 5_000)
    }

    fn read(topic: &str, payload: &str) -> Reading {
        read_bytes(topic, payload.as_bytes())
    }

    fn s(topic: &str, payload: &str) -> Vec<String> {
        render_samples(&read(topic, payload))
    }

    fn read_at(topic: &str, payload: &str, received_ms: i64) -> Reading {
        Interpreter::new(Rules::default(), Settings::default()).read(
            topic,
            payload.as_bytes(),
            received_ms,
        )
    }

    fn s_of(r: &Reading) -> Vec<String> {
        render_samples(r)
    }

    #[test]
    fn other_topics_are_not_frigates() {
        for t in [
            "frigatex/a/b",
            "frigate",
            "frigate/",
            "frigate//x",
            "x/frigate/y",
        ] {
            assert_ne!(read(t, "1").family, Family::Frigate, "{t}");
        }
    }

    #[test]
    fn states_and_counts() {
        assert_eq!(
            s("frigate/front/detect/state", "ON"),
            [
                r#"frigate_detect_enabled{camera="front",device="frigate",topic="frigate/front/detect/state"} 1.0 @5000"#
            ]
        );
        assert_eq!(
            s("frigate/front/motion/state", "OFF"),
            [
                r#"frigate_motion_detection_enabled{camera="front",device="frigate",topic="frigate/front/motion/state"} 0.0 @5000"#
            ]
        );
        assert_eq!(
            s("frigate/front/motion", "ON"),
            [
                r#"frigate_motion{camera="front",device="frigate",topic="frigate/front/motion"} 1.0 @5000"#
            ]
        );
        assert_eq!(
            s("frigate/yard/all/active", "3"),
            [
                r#"frigate_active_objects{camera_or_zone="yard",device="frigate",object="all",topic="frigate/yard/all/active"} 3.0 @5000"#
            ]
        );
        assert_eq!(
            s("frigate/front/ptz_autotracker/active", "OFF"),
            [
                r#"frigate_ptz_autotracking{camera="front",device="frigate",topic="frigate/front/ptz_autotracker/active"} 0.0 @5000"#
            ]
        );
        assert_eq!(
            s("frigate/front/zone/porch/state", "ON"),
            [
                r#"frigate_zone_enabled{camera="front",device="frigate",topic="frigate/front/zone/porch/state",zone="porch"} 1.0 @5000"#
            ]
        );
        assert_eq!(
            s("frigate/front/motion_mask/m1/state", "OFF"),
            [
                r#"frigate_motion_mask_enabled{camera="front",device="frigate",mask="m1",topic="frigate/front/motion_mask/m1/state"} 0.0 @5000"#
            ]
        );
        assert_eq!(
            s("frigate/front/status/detect", "offline"),
            [
                r#"frigate_stream_online{camera="front",device="frigate",role="detect",topic="frigate/front/status/detect"} 0.0 @5000"#
            ]
        );
        assert!(s("frigate/front/status/detect", "disabled").is_empty());
        assert_eq!(s("frigate/front/audio/dBFS", "-38.6").len(), 1);
        assert_eq!(
            read("frigate/front/audio/dBFS", "-38.6").units,
            [("frigate_audio_dbfs".to_string(), "dBFS".to_string())]
        );
        assert_eq!(s("frigate/notifications/state", "ON").len(), 1);
        assert_eq!(s("frigate/front/notifications/state", "ON").len(), 1);
    }

    #[test]
    fn not_samples() {
        for (t, p) in [
            ("frigate/front/detect/set", "ON"),
            ("frigate/front/motion_threshold/set", "30"),
            ("frigate/front/ptz", "MOVE_LEFT"),
            ("frigate/front/notifications/suspend", "30"),
            ("frigate/front/notifications/suspended", "1718987129"),
            ("frigate/front/birdseye_mode/state", "CONTINUOUS"),
            ("frigate/front/classification/door", "open"),
            ("frigate/front/audio/transcription", "hello there"),
            ("frigate/profile/state", "home"),
            ("frigate/restart", ""),
        ] {
            let r = read(t, p);
            assert_eq!(r.family, Family::Frigate, "{t}");
            assert!(r.series.is_empty() && r.errors.is_empty(), "{t}: {r:?}");
        }
    }

    #[test]
    fn snapshots_are_never_read() {
        let jpeg = [
            0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00,
        ];
        let r = read_bytes("frigate/front/person/snapshot", &jpeg);
        assert_eq!(r.family, Family::Frigate);
        assert_eq!(r.format, PayloadFormat::Unparsed);
        assert!(r.series.is_empty() && r.errors.is_empty());
        // Even a snapshot that happens to be a number.
        assert!(read("frigate/front/person/snapshot", "1").series.is_empty());
    }

    #[test]
    fn events_give_scores_and_durations_at_their_time() {
        let new = r#"{"type":"new","before":null,"after":{"camera":"yard","label":"car","frame_time":1700000000.25,"score":0.71,"top_score":0.71,"start_time":1700000000.0,"end_time":null,"id":"1700000000.0-abc"}}"#;
        let r = read_at("frigate/events", new, 1_700_000_001_000);
        assert_eq!(
            s_of(&r),
            [
                r#"frigate_event_score{camera="yard",device="frigate",label="car",topic="frigate/events"} 0.71 @1700000000250"#
            ]
        );
        let end = r#"{"type":"end","after":{"camera":"yard","label":"car","frame_time":1700000030.5,"score":0.8,"top_score":0.93,"start_time":1700000000.0,"end_time":1700000031.0}}"#;
        let r = read_at("frigate/events", end, 1_700_000_032_000);
        assert_eq!(
            s_of(&r),
            [
                r#"frigate_event_score{camera="yard",device="frigate",label="car",topic="frigate/events"} 0.8 @1700000031000"#,
                r#"frigate_event_duration{camera="yard",device="frigate",label="car",topic="frigate/events"} 31.0 @1700000031000"#,
                r#"frigate_event_top_score{camera="yard",device="frigate",label="car",topic="frigate/events"} 0.93 @1700000031000"#,
            ]
        );
        assert_eq!(r.units, [("frigate_event_duration".into(), "s".into())]);
        // A frame an hour old: the arrival time, and why.
        let r = read_at("frigate/events", new, 1_700_003_600_000);
        assert!(s_of(&r)[0].ends_with("@1700003600000"), "{:?}", s_of(&r));
        assert_eq!(r.notices.len(), 1);
        for (payload, why) in [
            (r#"{"type":"new"}"#, "no \"after\""),
            (r#"{"type":"new","after":{"label":"car"}}"#, "no camera"),
            ("[1]", "not a JSON object"),
        ] {
            let r = read_at("frigate/events", payload, 0);
            assert!(r.series.is_empty());
            assert!(r.errors[0].contains(why), "{:?}", r.errors);
        }
    }

    #[test]
    fn malformed() {
        for (t, p) in [
            ("frigate/front/person", "NOT_AN_INT"),
            ("frigate/front/person/active", ""),
            ("frigate/front/detect/state", "INVALID_VALUE"),
            ("frigate/front/motion", "maybe"),
            ("frigate/front/review_status", "MAYBE"),
            ("frigate/front/status/record", "gone"),
            ("frigate/front/audio/rms", "loud"),
            ("frigate/available", "yes"),
            ("frigate/events", "EVENT_DATA"),
            ("frigate/reviews", "{"),
            ("frigate/stats", "{\"cameras\":"),
            ("frigate/stats", "[1,2]"),
            ("frigate/a/b/c/d/e", "1"),
        ] {
            let r = read(t, p);
            assert_eq!(r.family, Family::Frigate, "{t}");
            assert!(r.series.is_empty(), "{t}");
            assert_eq!(r.errors.len(), 1, "{t} {p}: {:?}", r.errors);
        }
        let r = read_bytes("frigate/front/person", &[0xff, 0xfe]);
        assert_eq!(r.errors, ["payload is not UTF-8 text"]);
    }

    #[test]
    fn stats_time_and_odd_shapes() {
        // last_updated within 15 minutes is the sample time, never a value.
        let r = read(
            "frigate/stats",
            r#"{"service":{"uptime":10,"last_updated":4,"version":"0.14.1"},"detection_fps":2}"#,
        );
        assert_eq!(
            render_samples(&r),
            [
                r#"frigate_total_detection_fps{device="frigate",topic="frigate/stats"} 2.0 @4000"#,
                r#"frigate_uptime{device="frigate",topic="frigate/stats"} 10.0 @4000"#,
            ]
        );
        assert_eq!(r.devices[0].firmware.as_deref(), Some("0.14.1"));
        assert!(r.notices.is_empty());
        // Far off, or not a time: arrival time and a notice.
        for lu in ["1718987129", "\"soon\"", "null"] {
            let r = read(
                "frigate/stats",
                &format!(r#"{{"service":{{"uptime":10,"last_updated":{lu}}}}}"#),
            );
            assert_eq!(r.series[0].samples, [(5000, 10.0)]);
            assert_eq!(r.notices.len(), 1);
            assert_eq!(r.notices[0].kind, NoticeKind::Time);
        }
        // Wrong types inside are skipped, not errors.
        let r = read(
            "frigate/stats",
            r#"{"cameras":{"c":{"camera_fps":"x","pid":3,"connection_quality":"fair"},"d":7},"detectors":[],"gpu_usages":{"g":{"gpu":"","mem":"12%"}}}"#,
        );
        assert!(r.errors.is_empty());
        assert_eq!(
            render_samples(&r),
            [r#"frigate_gpu_mem_usage{device="frigate",gpu="g",topic="frigate/stats"} 12.0 @5000"#]
        );
    }

    #[test]
    fn stats_of_other_versions() {
        // Up to 0.12 the cameras were at the top level (the layout of
        // frigate/test/http_api/base_http_test.py); later versions add the
        // whole system's CPU, processes' and detectors' own figures.
        let r = read(
            "frigate/stats",
            r#"{"front_door":{"camera_fps":0.0,"capture_pid":53,"detection_fps":0.0,"pid":52},
                "cpu_usages":{"1":{"cpu":"0.0","mem":"0.0"},"frigate.full_system":{"cpu":"12.5","mem":"40.1"}},
                "detectors":{"coral":{"inference_speed":8.5,"temperature":41.2,"cpu":"3.0","detection_start":1718987129.1}},
                "processes":{"go2rtc":{"pid":89,"cpu":"1.5","mem":"0.7"}}}"#,
        );
        let names: Vec<String> = r
            .series
            .iter()
            .map(|s| s.labels.to_string())
            .map(|l| l.split('{').next().unwrap().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "frigate_system_cpu",
                "frigate_system_mem",
                "frigate_detector_cpu",
                "frigate_detector_inference_speed",
                "frigate_detector_temperature",
                "frigate_camera_fps",
                "frigate_detection_fps",
                "frigate_process_cpu",
                "frigate_process_mem",
            ]
        );
        assert!(r
            .units
            .contains(&("frigate_detector_temperature".into(), "°C".into())));
    }

    #[test]
    fn percents() {
        assert_eq!(percent_value(&serde_json::json!("19 %")), Some(19.0));
        assert_eq!(percent_value(&serde_json::json!("57.0%")), Some(57.0));
        assert_eq!(percent_value(&serde_json::json!("")), None);
        assert_eq!(percent_value(&serde_json::json!(3)), Some(3.0));
    }
}
