//! Issue 16, query languages and exports: hostile input to every query
//! language and export answers a 4xx with the precise reason — never a
//! stack overflow that aborts the process, minutes of CPU or a wrong 200 —
//! and afterwards the server still answers with the data it had.
//!
//! - 3000-deep parentheses (and NOT chains) in search and its histogram;
//! - 50 000-deep `match[]` on series, export, CSV export, labels and label
//!   values; deep InfluxQL and PromQL;
//! - search and histogram bounds at the extremes of i64, negative, reversed;
//! - exports: an absent `end` is now (plus a few minutes), not the newest
//!   sample ever written (here in 2262); a far-future `end` costs a few
//!   reads, not one per empty day; `query.max_export_samples` answers 422
//!   before the 200, or cuts the stream after it; `query.export_timeout`
//!   answers 503.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{now_ms, urlencode, Perch};
use serde_json::Value;

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z, seconds

/// `m{dev="d0".."d2"}`: see [`common::import_ramp`].
fn load(p: &Perch) {
    common::import_ramp(p, T0, 3);
}

fn publish(p: &Perch, topic: &str, payload: &str) {
    let r = p.post(
        "/api/v1/publish",
        "application/json",
        format!(r#"{{"topic":"{topic}","payload":"{payload}"}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

fn search_total(p: &Perch, params: &str) -> u64 {
    let r = p.get(&format!("/api/v1/search?{params}"));
    assert_eq!(r.status, 200, "{params}: {}", r.body);
    r.json()["data"]["total"].as_u64().unwrap()
}

/// Asserts Prometheus' error shape with exactly `message`.
fn assert_refused(r: &common::Resp, status: u16, error_type: &str, message: &str, what: &str) {
    assert_eq!(
        r.status,
        status,
        "{what}: {}",
        &r.body[..r.body.len().min(500)]
    );
    let j = r.json();
    assert_eq!(j["status"], "error", "{what}: {}", r.body);
    assert_eq!(j["errorType"], error_type, "{what}: {}", r.body);
    assert_eq!(j["error"], message, "{what}");
}

/// Everything loaded is still there, the same, and every language answers.
fn intact(p: &Perch) {
    assert_eq!(p.get("/healthz").status, 200);
    let r = p.get(&format!("/api/v1/query?query=sum(m)&time={}", T0 + 3600));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["result"][0]["value"][1], "2160");
    let d1 = p.export("m{dev=\"d1\"}");
    assert_eq!(d1.len(), 1);
    let want: Vec<f64> = (0..720).map(|i| (i * 2) as f64).collect();
    assert_eq!(d1[0].2, want);
    assert_eq!(
        d1[0].1,
        (0..720).map(|i| (T0 + i * 10) * 1000).collect::<Vec<_>>()
    );
    let r = p.get(&format!(
        "/query?db=x&q={}",
        urlencode("SELECT max(value) FROM m WHERE dev = 'd2'")
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["results"][0]["series"][0]["values"][0][1], 2157);
    assert_eq!(search_total(p, "q=motion"), 2);
    let r = p.get("/api/v1/labels");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["data"]
        .as_array()
        .unwrap()
        .contains(&Value::from("dev")));
}

#[test]
fn deep_queries_in_every_language_are_refused_and_the_data_stays() {
    let p =
        Perch::start_with("[storage]\nretention = \"10y\"\n[search]\ncommit_interval = \"1s\"\n");
    load(&p);
    publish(&p, "home/garage/motion", "motion detected near the door");
    publish(&p, "home/hall/motion", "motion in the hall");
    let t = Instant::now();
    while search_total(&p, "q=motion") < 2 {
        assert!(t.elapsed() < Duration::from_secs(20), "{}", p.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    intact(&p);

    // Search: 3000 nested parentheses (a 6 KB query) and its histogram.
    let deep_search = format!("{}motion{}", "(".repeat(3000), ")".repeat(3000));
    for path in ["/api/v1/search", "/api/v1/search/histogram"] {
        assert_refused(
            &p.get(&format!("{path}?q={}", urlencode(&deep_search))),
            400,
            "bad_data",
            "search query nests deeper than 250 levels (at byte 250)",
            path,
        );
    }
    let nots = format!("{}motion", "NOT ".repeat(3000));
    assert_refused(
        &p.get(&format!("/api/v1/search?q={}", urlencode(&nots))),
        400,
        "bad_data",
        "search query has more than 250 parentheses and NOT operators (at byte 1000); split it up",
        "NOT chain",
    );

    // 50 000-deep match[] wherever series are selected.
    let deep_match = format!("{}m{}", "(".repeat(50_000), ")".repeat(50_000));
    let deep_msg = "match[] selector nests deeper than 250 levels (at byte 250)";
    let body = format!("match[]={}", urlencode(&deep_match));
    for path in [
        "/api/v1/series",
        "/api/v1/labels",
        "/api/v1/export",
        "/api/v1/export/csv",
    ] {
        let r = p.post(path, "application/x-www-form-urlencoded", &body);
        assert_refused(&r, 400, "bad_data", deep_msg, path);
    }
    // A URL holds at most 64 KiB (and a label's values are GET only):
    // 32 000 levels there, the parentheses unescaped.
    let deep_get = format!("{}m{}", "(".repeat(32_000), ")".repeat(32_000));
    for path in [
        "/api/v1/label/dev/values",
        "/api/v1/labels",
        "/api/v1/series",
        "/api/v1/export",
        "/api/v1/export/csv",
    ] {
        let r = p.get(&format!("{path}?match[]={deep_get}"));
        assert_refused(&r, 400, "bad_data", deep_msg, path);
    }
    let many = vec!["match[]=m"; 1001].join("&");
    assert_refused(
        &p.post("/api/v1/series", "application/x-www-form-urlencoded", many),
        400,
        "bad_data",
        "the request has more than 1000 match[] selectors; split it up",
        "1001 selectors",
    );

    // InfluxQL: deep parentheses, then an operator chain.
    let deep_influx = format!(
        "SELECT * FROM m WHERE {}dev = 'd0'{}",
        "(".repeat(50_000),
        ")".repeat(50_000)
    );
    let r = p.post(
        "/query",
        "application/x-www-form-urlencoded",
        format!("db=x&q={}", urlencode(&deep_influx)),
    );
    assert_eq!(r.status, 400, "{}", &r.body[..r.body.len().min(500)]);
    assert_eq!(
        r.json()["error"],
        "error parsing query: InfluxQL query nests deeper than 250 levels (at byte 272)"
    );
    let chain = format!(
        "SELECT * FROM m WHERE {}",
        vec!["dev = 'd0'"; 600].join(" OR ")
    );
    let r = p.get(&format!("/query?db=x&q={}", urlencode(&chain)));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.json()["error"],
        "error parsing query: InfluxQL query has more than 1000 operators and list items (at byte 7026); split it up"
    );

    // PromQL says where too.
    let deep_promql = format!("{}m{}", "(".repeat(50_000), ")".repeat(50_000));
    assert_refused(
        &p.post(
            "/api/v1/query",
            "application/x-www-form-urlencoded",
            format!("query={}", urlencode(&deep_promql)),
        ),
        400,
        "bad_data",
        "query nests deeper than 250 levels (at byte 250)",
        "deep PromQL",
    );

    // Search bounds: the extremes of i64 (as Unix seconds), negative,
    // reversed, a negative step.
    let outside = |key: &str, value: &str| {
        format!(
            "invalid parameter \"{key}\": \"{value}\" is outside the times search covers, 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z"
        )
    };
    let min = "-9223372036854775.808";
    let max = "9223372036854775.807";
    for path in ["/api/v1/search", "/api/v1/search/histogram"] {
        assert_refused(
            &p.get(&format!("{path}?q=motion&start={min}&end={max}")),
            400,
            "bad_data",
            &outside("start", min),
            "i64 extremes",
        );
        assert_refused(
            &p.get(&format!("{path}?q=motion&start=0&end={max}")),
            400,
            "bad_data",
            &outside("end", max),
            "i64 max",
        );
        assert_refused(
            &p.get(&format!("{path}?q=motion&start=-1")),
            400,
            "bad_data",
            &outside("start", "-1"),
            "negative start",
        );
        assert_refused(
            &p.get(&format!("{path}?q=motion&end=1e300")),
            400,
            "bad_data",
            &outside("end", "1e300"),
            "end 1e300",
        );
    }
    assert_refused(
        &p.get("/api/v1/search/histogram?q=motion&start=2000&end=1000"),
        400,
        "bad_data",
        "invalid parameter \"end\": end is before start",
        "reversed",
    );
    assert_refused(
        &p.get("/api/v1/search/histogram?q=motion&start=0&end=1000&step=-1"),
        400,
        "bad_data",
        "invalid parameter \"step\": must be positive",
        "negative step",
    );
    assert_refused(
        &p.get("/api/v1/search/histogram?q=motion&start=0&end=253402300799&step=1d"),
        400,
        "bad_data",
        "[start, end] in steps of 86400000 ms makes more than 11000 buckets; use a larger step or a shorter range",
        "too many buckets",
    );
    // The widest range allowed, in few buckets, counts right.
    let r = p.get("/api/v1/search/histogram?q=motion&start=0&end=253402300799&step=1y");
    assert_eq!(r.status, 200, "{}", r.body);
    let h = r.json()["data"].clone();
    assert_eq!(h["total"], 2, "{h}");
    assert_eq!(h["buckets"].as_array().unwrap().len(), 8036, "{h}");
    let r = p.get("/api/v1/search/histogram?q=motion&end=1");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["start"], 0);
    let r = p.get("/api/v1/search/histogram?q=motion");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["total"], 2);

    intact(&p);
}

/// A GET over a plain socket, for what an HTTP client library hides: the
/// status line, and whether a chunked body ended with its last chunk.
fn raw_get(p: &Perch, path: &str) -> (String, Vec<u8>, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", p.http_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        p.auth.as_deref().unwrap()
    )
    .unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 65536];
    // Until the server closes (or resets) the connection.
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
    }
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    assert!(
        head.to_lowercase().contains("transfer-encoding: chunked"),
        "{head}"
    );
    let mut rest = &all[split + 4..];
    let mut body = Vec::new();
    let complete = loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            break false;
        };
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16)
            .expect("a chunk size");
        rest = &rest[eol + 2..];
        if size == 0 {
            break true;
        }
        if rest.len() < size + 2 {
            body.extend_from_slice(&rest[..rest.len().min(size)]);
            break false;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    };
    (head, body, complete)
}

#[test]
fn exports_end_at_now_and_stop_at_their_limits() {
    let p = Perch::start_with(
        "[storage]\nretention = \"10y\"\nmax_future = \"300y\"\nself_metrics_interval = \"0s\"\n[query]\nmax_export_samples = 5000\n",
    );
    let now = now_ms();
    let ns = |ms: i64| ms as i128 * 1_000_000;
    // 400 series an hour ago; d0 also a minute ahead and in 2262.
    let mut lines = String::new();
    for d in 0..400 {
        lines.push_str(&format!("dev,id=d{d} v={d} {}\n", ns(now - 3_600_000)));
    }
    lines.push_str(&format!("dev,id=d0 v=-1 {}\n", ns(now + 60_000)));
    lines.push_str("dev,id=d0 v=2262 9223372036000000000\n");
    let r = p.post("/write", "text/plain", &lines);
    assert_eq!(r.status, 204, "{}", r.body);

    // An absent end is now plus a few minutes: the minute ahead is in, 2262
    // is not.
    let r = p.get(&format!(
        "/api/v1/export?match[]={}",
        urlencode("dev_v{id=\"d0\"}")
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    let line: Value = serde_json::from_str(r.body.trim()).unwrap();
    let values: Vec<f64> = line["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(values, [0.0, -1.0], "{}", r.body);

    // A far-future end reads to 2262 in a few reads per batch, not one per
    // empty day (the old export needed minutes for this).
    for path in ["/api/v1/export", "/api/v1/export/csv"] {
        let t = Instant::now();
        let r = p.get(&format!("{path}?match[]=dev_v&end=1e300"));
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{path} took {:?}",
            t.elapsed()
        );
        assert!(r.body.contains("2262"), "{path}: the sample of 2262");
    }
    let all = p.export("dev_v");
    assert_eq!(all.len(), 400);
    assert_eq!(p.export("dev_v{id=\"d0\"}")[0].2, vec![0.0, -1.0]);
    let r = p.get(&format!(
        "/api/v1/export?match[]={}&end=1e300",
        urlencode("dev_v{id=\"d0\"}")
    ));
    let line: Value = serde_json::from_str(r.body.lines().last().unwrap()).unwrap();
    assert_eq!(line["timestamps"][0], 9_223_372_036_000i64, "{}", r.body);

    // More samples than query.max_export_samples in the first bytes: 422.
    let mut lines = String::new();
    for i in 0..6000 {
        lines.push_str(&format!("big v={i} {}\n", ns(now - 7_000_000 + i)));
    }
    let r = p.post("/write", "text/plain", &lines);
    assert_eq!(r.status, 204, "{}", r.body);
    let limit = "export would return more than 5000 samples (query.max_export_samples); narrow match[] or the time range";
    for path in ["/api/v1/export", "/api/v1/export/csv"] {
        assert_refused(
            &p.get(&format!("{path}?match[]=big_v")),
            422,
            "execution",
            limit,
            path,
        );
    }

    // ... and after the 200 went out: the stream ends without its last
    // chunk (clients report a truncated transfer), and the log says why.
    let pad = "x".repeat(200);
    let mut lines = String::new();
    for i in 0..40 {
        for j in 0..150i64 {
            lines.push_str(&format!(
                "wide,i={i},pad={pad} v={j} {}\n",
                ns(now - 9_000_000 + j * 1000)
            ));
        }
    }
    let r = p.post("/write", "text/plain", &lines);
    assert_eq!(r.status, 204, "{}", r.body);
    let (head, body, complete) = raw_get(&p, "/api/v1/export/csv?match[]=wide_v");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!complete, "the cut stream must not end like a whole one");
    let rows = String::from_utf8_lossy(&body).lines().count();
    assert!((1000..=5000).contains(&rows), "{rows} rows before the cut");
    let t = Instant::now();
    while !p.log().contains("export cut short") {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", p.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(p.log().contains(limit), "{}", p.log());

    // Still answering, with the data it had.
    assert_eq!(p.get("/healthz").status, 200);
    let one = p.export("wide_v{i=\"39\"}");
    assert_eq!(one[0].2, (0..150).map(|j| j as f64).collect::<Vec<_>>());
    assert_eq!(p.export("dev_v{id=\"d7\"}")[0].2, vec![7.0]);
    let r = p.get(&format!(
        "/api/v1/query?query={}",
        urlencode("count_over_time(big_v[1d])")
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["result"][0]["value"][1], "6000");
}

#[test]
fn exports_stop_at_their_deadline() {
    let p = Perch::start_with(
        "[storage]\nretention = \"10y\"\nself_metrics_interval = \"0s\"\n[query]\nexport_timeout = \"1ms\"\n",
    );
    // 2 500 series in 79 batches: some milliseconds of work in a debug
    // build, and an answer (about 200 KB) that stays under the first chunk,
    // so the deadline is an error answer rather than a cut stream.
    let t = (now_ms() - 60_000) as i128 * 1_000_000;
    let lines: String = (0..2500).map(|i| format!("t,i={i} v={i} {t}\n")).collect();
    let r = p.post("/write", "text/plain", &lines);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_refused(
        &p.get(&format!(
            "/api/v1/export?match[]={}",
            urlencode("{__name__=~\"t.*\"}")
        )),
        503,
        "timeout",
        "export ran longer than query.export_timeout (1ms); narrow match[] or the time range",
        "deadline",
    );
    let r = p.get("/api/v1/query?query=count(t_v)");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["result"][0]["value"][1], "2500");
    let r = p.get("/api/v1/query?query=sum(t_v)");
    assert_eq!(r.json()["data"]["result"][0]["value"][1], "3123750");
}
