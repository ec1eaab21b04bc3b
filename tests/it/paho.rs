//! perch against clients it did not write: Eclipse Paho's interoperability
//! suites for MQTT 3.1.1 and 5 (tests/paho, run by tests/paho/run_suite.py)
//! and paho-mqtt from PyPI (tests/python/mqtt_semantics.py) over TCP and
//! WebSocket. docs/mqtt.md has the scores beside Mosquitto's and why each
//! test perch does not pass fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::Perch;

/// Anonymous clients, as the suites connect without credentials.
const ANONYMOUS: &str = "[mqtt]\nallow_anonymous = true\n";

/// test_server_keep_alive expects the keep-alive limit of Paho's own test
/// broker, 60 s.
const AS_PAHOS_BROKER: &str = "[mqtt]\nallow_anonymous = true\nmax_keep_alive = \"60s\"\n";

/// Tests of a suite perch does not pass, with why (docs/mqtt.md says more).
/// Every other test of the suite must pass.
const V311_NOT_PASSED: &[(&str, &str)] = &[(
    "test_subscribe_failure",
    "needs a broker configured to refuse subscriptions to test/nosubscribe",
)];

const V5_NOT_PASSED: &[(&str, &str)] = &[
    (
        "test_subscribe_failure",
        "needs a broker configured to refuse subscriptions to test/nosubscribe",
    ),
    (
        "test_subscribe_identifiers",
        "expects one message carrying both identifiers of two overlapping subscriptions; perch sends one per subscription, as the spec also allows",
    ),
];

fn suite_results(suite: &str, perch: &Perch) -> serde_json::Value {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/paho");
    let out = Command::new("python3")
        .current_dir(&dir)
        .args([
            "run_suite.py",
            suite,
            "127.0.0.1",
            &perch.mqtt_port.to_string(),
        ])
        .output()
        .expect("python3 runs the Paho suites");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The tests of the suite that did not pass and are not in `not_passed`.
fn check_suite(suite: &str, config: &str, not_passed: &[(&str, &str)]) -> Vec<String> {
    let perch = Perch::start_with(config);
    let got = suite_results(suite, &perch);
    let results = got["results"].as_object().unwrap();
    assert!(results.len() >= 10, "{got}");
    if let Some(retried) = got["retried"].as_array().filter(|r| !r.is_empty()) {
        eprintln!("{suite}: passed on a second run: {retried:?}");
    }
    results
        .iter()
        .filter(|(name, outcome)| *outcome != "pass" && !not_passed.iter().any(|(n, _)| n == name))
        .map(|(name, outcome)| format!("{suite} {name}: {outcome}: {}", got["details"][name]))
        .collect()
}

/// What paho-mqtt saw over one transport, against what the specs say.
fn check_library(python: &Path, transport: &str, port: u16) -> Vec<String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/mqtt_semantics.py");
    let out = Command::new(python)
        .arg(&script)
        .args(["127.0.0.1", &port.to_string(), transport, transport])
        .output()
        .unwrap();
    if !out.status.success() {
        return vec![format!(
            "paho-mqtt over {transport}: {}",
            String::from_utf8_lossy(&out.stderr)
        )];
    }
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = format!("{transport}t/");
    let want = serde_json::json!({
        // min(published, granted), MQTT 5 and 3.1.1 alike.
        "delivery_qos_v5": {"q0": 0, "q1": 1, "q2": 2},
        "delivery_qos_v311": {"q0": 0, "q1": 1, "q2": 2},
        "qos1_subscription_v5": [1],
        "qos1_subscription_v311": [1],
        "no_local": ["other"],
        "retain_as_published": [true],
        "retain_not_as_published": [false],
        // 0: on every subscribe; 1: on a new one only; 2: never.
        "retain_handling": {"0": [true, true], "1": [true], "2": []},
        "user_properties": {
            "props/msg": [[["a", "1"], ["b", "2"], ["a", "3"]], "application/json"],
            "props/will": [[["why", "gone"]], "text/plain"],
        },
        "will_qos": [2],
        "will_on_clean_start": ["willdelay/ended"],
        "session_kept": ["while away"],
        "resumed_options": [["other", [7]]],
        "session_expired": [],
        "session_without_expiry": [],
        // The first publish on a topic sets alias 1, the next ones send
        // only the alias (paho-mqtt does not resolve it).
        "aliased": [
            [format!("{t}alias/x"), 1, [42]],
            ["", 1, [42]],
            ["", 1, [42]],
        ],
    });
    if got == want {
        Vec::new()
    } else {
        vec![format!(
            "paho-mqtt over {transport}:\n got {got}\nwant {want}"
        )]
    }
}

/// Both suites and paho-mqtt at once, each against a perch of its own (the
/// suites use fixed client ids and clear every retained message): they
/// mostly wait, so together they take the time of the longest.
#[test]
fn paho_suites_and_paho_mqtt_against_perch() {
    let python = crate::influx_clients::python();
    let v311 = std::thread::spawn(|| check_suite("client_test", ANONYMOUS, V311_NOT_PASSED));
    let v5 = std::thread::spawn(|| check_suite("client_test5", AS_PAHOS_BROKER, V5_NOT_PASSED));
    let mut failed = Vec::new();
    if let Some(python) = python {
        let perch = Perch::start_with(ANONYMOUS);
        failed.extend(check_library(&python, "tcp", perch.mqtt_port));
        failed.extend(check_library(&python, "websockets", perch.ws_port));
    }
    failed.extend(v311.join().unwrap());
    failed.extend(v5.join().unwrap());
    assert!(failed.is_empty(), "{failed:#?}");
}
