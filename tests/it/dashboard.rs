//! The web dashboard in real Chromium: `tests/browser/dashboard.mjs`
//! (playwright-core driving Debian's /usr/bin/chromium) against the real
//! perch binary with a GStreamer test camera, a written series and
//! zigbee2mqtt devices published with mosquitto_pub. The script onboards the
//! first admin, signs in and out, visits every page, draws a chart, saves a
//! dashboard, lists the devices and charts one (units on the axis), follows
//! a device's topic to the Explorer and from there to its chart, checks the
//! charts' time ranges (presets, `now-10m`, relative dashboards), legends
//! (templates, short names), units, tooltips and "Find series", and that
//! Metrics, Explorer and Search fit a 390 px phone, watches the camera and
//! checks that a viewer cannot reach Settings; screenshots land in
//! `test-artifacts/dashboard/`.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::camera::{have_gstreamer, TestCamera};
use common::{basic, free_port, have_mosquitto, Perch};

/// A zigbee2mqtt device whose id holds a `/` (its page is
/// `/devices/garden/shed`), and one that says it is offline.
const DEVICE: &str = "garden/shed";
const OFFLINE_DEVICE: &str = "porch_light";

/// Every step the script reports, in order.
const STEPS: &[&str] = &[
    "onboarding",
    "sign out",
    "wrong password refused",
    "sign in",
    "page Overview",
    "page Explorer",
    "page Devices",
    "page Metrics",
    "page Cameras",
    "page Search",
    "page Settings",
    "overview shows host health",
    "metrics chart of env_temp",
    "metrics zoom by dragging",
    "metrics chart shows units",
    "dashboard saved and found after reload",
    "metrics range preset 5m and typed now-10m",
    "relative dashboard reopens as relative",
    "legend alias from a template and unit on the axis",
    "chart tooltip shows values",
    "find series by a label value",
    "camera yard plays live",
    "camera yard page",
    "viewer created in Settings",
    "API token shown once",
    "forwarding status shown",
    "footprint shows memory and disk writes by component",
    "forwarding target added, changed and deleted in Settings",
    "backup download",
    "viewer may not see Settings",
    "metrics, explorer and search fit a 390 px screen",
    "no page errors",
];

/// The steps of the devices, run when mosquitto_pub could publish them.
const DEVICE_STEPS: &[&str] = &[
    "devices list shows garden/shed",
    "devices search and status filter",
    "device page of garden/shed with charts",
    "device topic opens in the Explorer with how it was read",
    "explorer topic links to its chart",
    "overview lists offline devices",
    "devices on a phone",
];

/// Publishes `payload` on `topic` as the device account `zigbee`.
fn publish(p: &Perch, topic: &str, payload: &str, retain: bool) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &p.mqtt_port.to_string()])
        .args(["-u", "zigbee", "-P", "zigbee-pass", "-q", "1"])
        .args(["-t", topic, "-m", payload]);
    if retain {
        cmd.arg("-r");
    }
    let out = cmd.output().expect("mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_dashboard_works_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/browser/dashboard.mjs");
    if !Path::new("/usr/bin/chromium").exists() {
        common::missing_peer("/usr/bin/chromium");
        return;
    }
    if !root
        .join("tests/browser/node_modules/playwright-core")
        .exists()
    {
        common::missing_peer("playwright-core (npm ci --prefix tests/browser)");
        return;
    }
    if !have_gstreamer() {
        return;
    }
    let cam = TestCamera::start(free_port(), "640x360", None);
    // A forwarding target whose upstream is down: Settings shows it so.
    let p = Perch::start_bare(&format!(
        "[[cameras]]\nname = \"yard\"\nurl = \"{}\"\nsnapshot_schedule = \"*/5 * * * * *\"\n\
         [[forward]]\nname = \"central\"\nkind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{}\"\ntopics = [\"#\"]\n",
        cam.url(),
        free_port()
    ));
    // A device writes a series before anyone has signed in (devices are no
    // people: onboarding is still due).
    let (code, _, err) = p.cli(
        &[
            "user",
            "add",
            "sensor",
            "--role",
            "device",
            "--password",
            "sensor-pass",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let now = common::now_ms();
    let mut lines = String::new();
    for i in 0..120 {
        let v = 20.0 + (i as f64 / 10.0).sin();
        lines.push_str(&format!(
            "env_temp,room=lab value={v:.3} {}\n",
            (now - (120 - i) * 30_000) * 1_000_000
        ));
    }
    let r = p.post_with_headers(
        "/write",
        &[("Authorization", &basic("sensor", "sensor-pass"))],
        lines,
    );
    assert_eq!(r.status, 204, "{}", r.body);

    // Devices as zigbee2mqtt publishes them: a state message per device
    // (read by the zigbee2mqtt convention: series with a `device` label and
    // units, battery and link quality in the registry), and an
    // availability message saying a third is offline.
    let devices = have_mosquitto();
    if devices {
        let (code, _, err) = p.cli(
            &[
                "user",
                "add",
                "zigbee",
                "--role",
                "device",
                "--password",
                "zigbee-pass",
                "--topic",
                "zigbee2mqtt/#",
            ],
            None,
        );
        assert_eq!(code, 0, "{err}");
        publish(
            &p,
            "zigbee2mqtt/living_room",
            r#"{"temperature":21.5,"humidity":48,"battery":97,"linkquality":120}"#,
            false,
        );
        for (i, t) in [20.5, 21.0, 21.25, 21.5].iter().enumerate() {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(1100));
            }
            publish(
                &p,
                &format!("zigbee2mqtt/{DEVICE}"),
                &format!(
                    r#"{{"temperature":{t},"humidity":{},"battery":87,"linkquality":90}}"#,
                    60 + i
                ),
                false,
            );
        }
        publish(
            &p,
            &format!("zigbee2mqtt/{OFFLINE_DEVICE}/availability"),
            r#"{"state":"offline"}"#,
            true,
        );
    }

    let shots = root.join("test-artifacts/dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let mut node = Command::new("node");
    if devices {
        node.env("PERCH_DEVICE", DEVICE)
            .env("PERCH_DEVICE_METRIC", "temperature")
            .env("PERCH_DEVICE_UNIT", "°C")
            .env("PERCH_OFFLINE_DEVICE", OFFLINE_DEVICE);
    }
    let mut child = node
        .arg(&script)
        .env("PERCH_URL", p.url(""))
        .env("PERCH_CAMERA", "yard")
        .env("PERCH_SERIES", "env_temp")
        .env("PERCH_FORWARD", "central")
        .env("SCREENSHOT_DIR", &shots)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    // A hung page must fail the test, not the CI run.
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser script failed:\n{stdout}\n{stderr}\n--- perch log ---\n{}",
        p.log()
    );
    let device_steps = if devices { DEVICE_STEPS } else { &[] };
    for step in STEPS.iter().chain(device_steps) {
        assert!(
            stdout.lines().any(|l| l == format!("ok {step}")),
            "step {step:?} not reported:\n{stdout}"
        );
    }
    let device_pages: &[&str] = if devices {
        &[
            "devices-list",
            "device-page",
            "devices-phone",
            "device-page-phone",
        ]
    } else {
        &[]
    };
    for page in [
        "overview",
        "explorer",
        "devices",
        "metrics",
        "cameras",
        "search",
        "settings",
        "metrics-range",
        "metrics-tooltip",
        "metrics-phone",
        "explorer-phone",
        "search-phone",
    ]
    .iter()
    .chain(device_pages)
    {
        let shot = shots.join(format!("{page}.png"));
        let size = std::fs::metadata(&shot).map_or(0, |m| m.len());
        assert!(
            size > 10_000,
            "screenshot {} is {size} bytes",
            shot.display()
        );
    }
}
