//! A newcomer's first hour in real Chromium: `tests/browser/newcomer.mjs`
//! (playwright-core driving Debian's /usr/bin/chromium) against a freshly
//! started perch with no accounts. The script onboards, follows the empty
//! Overview to "Connect a device", makes a device account there, publishes
//! what Tasmota publishes with those credentials (mosquitto_pub), waits for
//! the page to say what arrived and was stored, opens its chart (unit on
//! the axis, an alias in the legend), sees a wrong MQTT password under the
//! Overview's recent problems, and checks every page at 390 px and 1440 px
//! for sideways scrolling. It prints the time from start to the first
//! chart, a figure for docs/dashboard.md, not an assertion.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{have_mosquitto, Perch};

const STEPS: &[&str] = &[
    "onboarding on a fresh box",
    "the empty overview leads to Connect a device",
    "the page says where the broker is",
    "credentials made on the page",
    "every firmware guide is filled in",
    "the page says when the device arrived and what was stored",
    "its chart, with the unit and an alias in the legend",
    "a refused MQTT login shows under recent problems",
    "every page fits a phone and a desktop",
];

#[test]
fn a_newcomer_connects_a_device_and_sees_its_chart() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
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
    if !have_mosquitto() {
        return;
    }
    let p = Perch::start_bare("");
    let shots = root.join("test-artifacts/newcomer");
    std::fs::create_dir_all(&shots).unwrap();
    let mut child = Command::new("node")
        .arg(root.join("tests/browser/newcomer.mjs"))
        .env("PERCH_URL", p.url(""))
        .env("PERCH_MQTT_PORT", p.mqtt_port.to_string())
        .env("SCREENSHOT_DIR", &shots)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    // A hung page must fail the test, not the CI run.
    let deadline = Instant::now() + Duration::from_secs(240);
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
    for step in STEPS {
        assert!(
            stdout.lines().any(|l| l == format!("ok {step}")),
            "step {step:?} not reported:\n{stdout}"
        );
    }
    // The figure, for whoever reads the test's output.
    for line in stdout.lines().filter(|l| l.starts_with("# ")) {
        eprintln!("{line}");
    }
}
