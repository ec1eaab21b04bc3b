//! Issue 2 end to end: the real binary, written to and read from over HTTP.

use crate::common;

use common::{now_ms, Perch};

#[test]
fn line_protocol_write_and_export_round_trip() {
    let p = Perch::start();
    let t = now_ms() - 60_000;
    let body = format!(
        "m,tag=a f=1.5,g=2i,value=7,ok=true,s=\"text\" {}\n\
         system,host=edge01 cpu_percent=12.5,mem_total=3977560064i,mem_used=1048576000i,mem_percent=26.4 {}\n",
        t * 1_000_000,
        (t + 1000) * 1_000_000
    );
    let r = p.post("/write", "text/plain", &body);
    assert_eq!(r.status, 204, "{}", r.body);
    let f = p.export(r#"m_f"#);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].0["tag"], "a");
    assert_eq!(f[0].1, vec![t]);
    assert_eq!(f[0].2, vec![1.5]);
    assert_eq!(p.export("m_g")[0].2, vec![2.0]);
    assert_eq!(
        p.export("m")[0].2,
        vec![7.0],
        "a field named value maps to the measurement"
    );
    assert_eq!(p.export("m_ok")[0].2, vec![1.0]);
    assert!(p.export("m_s").is_empty(), "strings are not samples");
    let mem = p.export(r#"system_mem_total{host="edge01"}"#);
    assert_eq!(mem[0].2, vec![3977560064.0]);
    // v2 API with seconds precision.
    let r = p.post(
        "/api/v2/write?org=o&bucket=b&precision=s",
        "text/plain",
        format!("v2,dev=x temp=21.53 {}\n", t / 1000),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(p.export("v2_temp")[0].1, vec![(t / 1000) * 1000]);
}

#[test]
fn malformed_lines_are_named_and_valid_lines_kept() {
    let p = Perch::start();
    let t = now_ms() * 1_000_000;
    let body = format!(
        "good value=1 {t}\nbad line\ngood value=2 {}\nalso,bad=1 x=\"unterminated {t}\ngood value=3 {}\n",
        t + 1_000_000,
        t + 2_000_000
    );
    let r = p.post("/write", "text/plain", body);
    assert_eq!(r.status, 400);
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(msg.contains("line 2"), "{msg}");
    assert!(msg.contains("line 4"), "{msg}");
    assert!(msg.contains("3 samples stored"), "{msg}");
    let good = p.export("good");
    assert_eq!(good[0].2, vec![1.0, 2.0, 3.0]);
    // v2 reports in its own shape.
    let r = p.post("/api/v2/write?precision=ns", "text/plain", "oops\n");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "invalid");
    // Unknown precision.
    let r = p.post("/write?precision=fortnight", "text/plain", "x v=1\n");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("precision"), "{}", r.body);
}

#[test]
fn oversized_bodies_get_413_and_bad_utf8_400() {
    let p = Perch::start_with("[http]\nmax_body_bytes = \"64KiB\"\n");
    let line = "big,tag=aaaaaaaaaa value=1.0\n";
    let body = line.repeat(70 * 1024 / line.len());
    let r = p.post("/write", "text/plain", &body);
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.contains("max_body_bytes"), "{}", r.body);
    let r = p.post("/write", "text/plain", b"x v=1 \xff\xfe\n");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("UTF-8"), "{}", r.body);
    // Nothing of the rejected bodies was stored, and the server still works.
    assert!(p.export("big").is_empty());
    assert_eq!(p.post("/write", "text/plain", "after v=1\n").status, 204);
}

#[test]
fn gzip_bodies_are_accepted() {
    use std::io::Write;
    let p = Perch::start();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(b"zipped value=42\n").unwrap();
    let body = enc.finish().unwrap();
    let r = p.post_with_headers("/write", &[("Content-Encoding", "gzip")], body);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(p.export("zipped")[0].2, vec![42.0]);
}

#[test]
fn opentsdb_put_maps_metric_and_tags() {
    // The fixture is from 2012: keep it inside retention.
    let p = Perch::start_with("[storage]\nretention = \"20y\"\n");
    let body = r#"[
      {"type": "Metric", "metric": "mqtt.home.pcroom", "timestamp": 1346846400, "value": 22.5,
       "tags": {"type": "temperature", "loc": "pcroom"}},
      {"type": "Metric", "metric": "mqtt.home.pcroom", "timestamp": 1346846400, "value": 18.2,
       "tags": {"type": "humidity", "loc": "pcroom"}},
      {"type": "Metric", "metric": "mqtt.home.pcroom", "timestamp": 1346846400, "value": 22.3,
       "tags": {"type": "dust", "loc": "pcroom"}}
    ]"#;
    let r = p.post("/api/put", "application/json", body);
    assert_eq!(r.status, 204, "{}", r.body);
    let got = p.export(r#"mqtt_home_pcroom{type="temperature"}"#);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0["loc"], "pcroom");
    assert_eq!(got[0].1, vec![1_346_846_400_000]);
    assert_eq!(got[0].2, vec![22.5]);
    assert_eq!(p.export("mqtt_home_pcroom").len(), 3);
    let r = p.post(
        "/api/put",
        "application/json",
        r#"{"metric":"x","timestamp":1,"value":"abc","tags":{}}"#,
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("data point 0"), "{}", r.body);
    let r = p.post("/api/put", "application/json", "{not json");
    assert_eq!(r.status, 400);
}

#[test]
fn vm_import_export_and_csv() {
    let p = Perch::start();
    let t = now_ms() - 10_000;
    let lines = format!(
        "{{\"metric\":{{\"__name__\":\"imp\",\"job\":\"a\"}},\"values\":[1,2.5,-3],\"timestamps\":[{},{},{}]}}\n\
         {{\"metric\":{{\"__name__\":\"imp\",\"job\":\"b\"}},\"values\":[4],\"timestamps\":[{}]}}\n",
        t,
        t + 1000,
        t + 2000,
        t
    );
    let r = p.post("/api/v1/import", "application/json", &lines);
    assert_eq!(r.status, 204, "{}", r.body);
    let got = p.export("imp");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].2, vec![1.0, 2.5, -3.0]);
    let csv = p.get(&format!(
        "/api/v1/export/csv?format=__name__,job,__timestamp__:unix_ms,__value__&match[]={}",
        common::urlencode(r#"imp{job="a"}"#)
    ));
    assert_eq!(csv.status, 200);
    assert_eq!(
        csv.body,
        format!(
            "imp,a,{t},1\nimp,a,{},2.5\nimp,a,{},-3\n",
            t + 1000,
            t + 2000
        )
    );
    // Time range restricts.
    let r = p.get(&format!(
        "/api/v1/export?match[]=imp&start={}&end={}",
        (t + 500) as f64 / 1000.0,
        (t + 1500) as f64 / 1000.0
    ));
    assert!(
        r.body.contains("2.5") && !r.body.contains("-3"),
        "{}",
        r.body
    );
    let r = p.get("/api/v1/export?match[]=rate(x[5m])");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errorType"], "bad_data");
    let r = p.post(
        "/api/v1/import",
        "application/json",
        "{\"metric\":{},\"values\":[1],\"timestamps\":[]}\n",
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("line 1"), "{}", r.body);
}

#[test]
fn basic_auth_accepts_existing_users_and_rejects_others() {
    let p = Perch::start();
    // The server holds the database: the CLI goes through the control socket.
    let (code, out, err) = p.cli(
        &[
            "user",
            "add",
            "grafana",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        Some("s3cret-pass\n"),
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = p.cli(&["user", "list"], None);
    assert_eq!(code, 0);
    assert!(out.contains("grafana") && out.contains("viewer"), "{out}");
    assert_eq!(
        p.get_auth("/api/v1/status/tsdb", "grafana", "s3cret-pass")
            .status,
        200
    );
    let r = p.get_auth("/api/v1/status/tsdb", "grafana", "wrong-pass");
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    assert_eq!(
        p.get_auth("/api/v1/status/tsdb", "nobody", "s3cret-pass")
            .status,
        401
    );
    let (code, _, err) = p.cli(
        &[
            "user",
            "add",
            "grafana",
            "--role",
            "viewer",
            "--password",
            "another-pass",
        ],
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");
    let (code, _, _) = p.cli(&["user", "del", "grafana"], None);
    assert_eq!(code, 0);
    assert_eq!(
        p.get_auth("/api/v1/status/tsdb", "grafana", "s3cret-pass")
            .status,
        401
    );
}

#[test]
fn users_can_be_managed_while_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let cfg = dir.path().join("none.toml");
    std::fs::write(&cfg, "").unwrap();
    let (code, out, err) = common::run_cli(
        &[
            "user",
            "add",
            "admin",
            "--role",
            "admin",
            "--password",
            "long-enough",
        ],
        &data,
        &cfg,
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = common::run_cli(&["user", "list"], &data, &cfg, None);
    assert_eq!(code, 0);
    assert!(out.contains("admin"));
    let (code, _, err) = common::run_cli(
        &[
            "user",
            "add",
            "x",
            "--role",
            "king",
            "--password",
            "long-enough",
        ],
        &data,
        &cfg,
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("king"), "{err}");
}

#[test]
fn bad_config_is_refused_with_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[storage]\nretention = \"forever\"\n").unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("storage.retention") && err.contains("forever"),
        "{err}"
    );
    std::fs::write(&cfg, "[storage]\nflush_intervall = \"1s\"\n").unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("flush_intervall"), "{err}");
}

#[test]
fn help_and_version_document_every_subcommand() {
    let out = std::process::Command::new(common::BIN)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in ["serve", "user", "check", "bench"] {
        assert!(help.contains(sub), "{help}");
    }
    let out = std::process::Command::new(common::BIN)
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("perch "));
}

#[test]
fn status_reports_counts_and_sizes() {
    let p = Perch::start();
    // perch stores its own metrics right after start (then every 10 s):
    // count from there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let before = loop {
        let d = p.get("/api/v1/status/tsdb").json()["data"].clone();
        if d["series"].as_u64().unwrap() > 0 {
            break d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no self-metrics stored"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let t = now_ms();
    let mut body = String::new();
    for i in 0..100 {
        body.push_str(&format!(
            "st,d=x a={i},b={} {}\n",
            i * 2,
            (t - 100_000 + i * 1000) * 1_000_000
        ));
    }
    assert_eq!(p.post("/write", "text/plain", &body).status, 204);
    let s = p.get("/api/v1/status/tsdb").json();
    let d = &s["data"];
    let delta = |k: &str| d[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    assert_eq!(delta("series"), 2);
    assert_eq!(delta("samples"), 200);
    assert_eq!(d["oldestTimestamp"], t - 100_000);
    assert!(d["newestTimestamp"].as_i64().unwrap() >= t - 100_000 + 99_000);
    assert!(d["bytesOnDisk"].as_u64().unwrap() > 0);
    assert!(d["problems"].as_array().unwrap().is_empty());
}
