//! InfluxDB's own client libraries against perch: the 1.x `influxdb` and
//! 2.x `influxdb_client` Python packages (pinned in
//! tests/python/requirements.txt, installed by scripts/py-clients) call
//! `/ping` and `/health` before anything else, without credentials.

use std::path::PathBuf;
use std::process::Command;

use crate::common::{self, Perch};

/// The python of scripts/py-clients' venv: `PERCH_PY_CLIENTS`, else the
/// venv where scripts/py-clients puts it.
pub fn python() -> Option<PathBuf> {
    let path = std::env::var_os("PERCH_PY_CLIENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("build/py-clients/bin/python")
        });
    if path.exists() {
        Some(path)
    } else {
        common::missing_peer("the Python client libraries (scripts/py-clients)");
        None
    }
}

#[test]
fn influxdb_clients_ping_and_check_health() {
    let Some(python) = python() else { return };
    let perch = Perch::start();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/influx_ping.py");
    let out = Command::new(python)
        .arg(script)
        .args(["127.0.0.1", &perch.http_port.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["v1_ping"], "1.8-perch", "{got}");
    assert_eq!(got["v2_ping"], true, "{got}");
    assert_eq!(got["v2_version"], "1.8-perch", "{got}");
    assert_eq!(got["v2_health"]["status"], "pass", "{got}");
    assert_eq!(
        got["v2_health"]["message"], "ready for queries and writes",
        "{got}"
    );

    // As InfluxDB answers them, without credentials; HEAD too.
    let r = perch.get_anon("/ping");
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(r.header("x-influxdb-version"), Some("1.8-perch"));
    assert_eq!(r.body, "");
    let r = perch.get_anon("/ping?verbose=true");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["version"], "1.8-perch");
    let r = perch.request_as(None, "HEAD", "/ping", &[], None::<&[u8]>);
    assert_eq!(r.status, 204);
    let r = perch.get_anon("/health");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "pass");
}
