//! Bad input to the query API: malformed queries, absurd ranges, huge
//! regexes, deep nesting, non-numeric parameters. Each gets a 400 or 422 in
//! Prometheus' error JSON with the reason, and the server keeps answering.

use crate::common;

use std::time::{Duration, Instant};

use common::{urlencode, Perch};

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z, seconds

/// `m{dev="d0".."d4"}`: see [`common::import_ramp`].
fn load(p: &Perch) {
    common::import_ramp(p, T0, 5);
}

/// Asserts an error response: status, Prometheus' error JSON, and a reason
/// containing `needle`.
fn assert_error(r: &common::Resp, status: u16, error_type: &str, needle: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.body);
    let j = r.json();
    assert_eq!(j["status"], "error", "{what}: {}", r.body);
    assert_eq!(j["errorType"], error_type, "{what}: {}", r.body);
    let msg = j["error"].as_str().unwrap_or("");
    assert!(
        msg.to_lowercase().contains(&needle.to_lowercase()),
        "{what}: error {msg:?} should mention {needle:?}"
    );
}

fn healthy(p: &Perch) {
    assert_eq!(p.get("/healthz").status, 200);
    let r = p.get(&format!("/api/v1/query?query=sum(m)&time={}", T0 + 3600));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["result"][0]["value"][1], "5400");
}

#[test]
fn bad_queries_get_clear_errors_and_the_server_stays_up() {
    let p = Perch::start_with("[storage]\nretention = \"10y\"\n");
    load(&p);
    healthy(&p);
    let q = |query: &str| {
        format!(
            "/api/v1/query?time={}&query={}",
            T0 + 3600,
            urlencode(query)
        )
    };
    let qr = |query: &str, start: &str, end: &str, step: &str| {
        format!(
            "/api/v1/query_range?query={}&start={}&end={}&step={}",
            urlencode(query),
            urlencode(start),
            urlencode(end),
            urlencode(step)
        )
    };

    // Malformed PromQL.
    for (query, needle) in [
        ("sum(", "query"),
        ("rate(m)", "matrix"),
        ("m{", "query"),
        ("m[5m", "query"),
        ("sum by (dev (m)", "query"),
        ("unknown_function(m)", "query"),
        ("m + \"string\"", "query"),
        ("{}", "query"),
        ("m offset 1.5s", "duration"),
        ("topk(m, m)", "scalar"),
        (
            "label_replace(m, \"a-b\", \"\", \"dev\", \".*\")",
            "label name",
        ),
        (
            "label_replace(m, \"a\", \"\", \"dev\", \"(\")",
            "regular expression",
        ),
        ("m{dev=~\"(\"}", "regex"),
        ("histogram_count(m)", "not supported"),
    ] {
        assert_error(&p.get(&q(query)), 400, "bad_data", needle, query);
    }
    // Execution errors.
    assert_error(
        &p.get(&q("m + on() m")),
        422,
        "execution",
        "many-to-many",
        "many-to-many matching",
    );
    assert_error(
        &p.get(&q(
            "abs(m or on(__name__) label_replace(m, \"__name__\", \"m2\", \"\", \"\"))",
        )),
        422,
        "execution",
        "same labelset",
        "duplicate labels",
    );
    assert_error(
        &p.get(&q("max_over_time(m[1y:1ms])")),
        422,
        "execution",
        "too many samples",
        "absurd subquery",
    );

    // Missing and malformed parameters.
    assert_error(
        &p.get("/api/v1/query"),
        400,
        "bad_data",
        "query",
        "no query",
    );
    assert_error(
        &p.get("/api/v1/query?query=m&time=yesterday"),
        400,
        "bad_data",
        "time",
        "bad time",
    );
    assert_error(
        &p.get(&qr("m", "abc", "1", "1")),
        400,
        "bad_data",
        "start",
        "bad start",
    );
    assert_error(
        &p.get(&qr("m", "1", "", "1")),
        400,
        "bad_data",
        "end",
        "no end",
    );
    assert_error(
        &p.get(&qr("m", "10", "5", "1")),
        400,
        "bad_data",
        "end",
        "end before start",
    );
    assert_error(
        &p.get(&qr("m", "1", "5", "often")),
        400,
        "bad_data",
        "step",
        "bad step",
    );
    assert_error(
        &p.get(&qr("m", "1", "5", "0")),
        400,
        "bad_data",
        "step",
        "zero step",
    );
    assert_error(
        &p.get(&qr("m", "1", "5", "-1")),
        400,
        "bad_data",
        "step",
        "negative step",
    );
    assert_error(
        &p.get(&qr("m", "1", "5", "NaN")),
        400,
        "bad_data",
        "step",
        "NaN step",
    );
    assert_error(
        &p.get("/api/v1/query?query=m&timeout=soon"),
        400,
        "bad_data",
        "timeout",
        "bad timeout",
    );
    assert_error(
        &p.get("/api/v1/series"),
        400,
        "bad_data",
        "match[]",
        "series without match[]",
    );
    assert_error(
        &p.get(&format!(
            "/api/v1/series?match[]={}",
            urlencode("rate(m[5m])")
        )),
        400,
        "bad_data",
        "selector",
        "series with an expression",
    );
    assert_error(
        &p.get("/api/v1/label/a-b/values"),
        400,
        "bad_data",
        "label name",
        "bad label name",
    );
    assert_error(
        &p.get("/api/v1/labels?start=x"),
        400,
        "bad_data",
        "start",
        "labels bad start",
    );

    // Absurd ranges: step=0.001 over a year → the 11 000-points limit.
    let year_start = (T0 - 365 * 86_400).to_string();
    let t = Instant::now();
    assert_error(
        &p.get(&qr("m", &year_start, &T0.to_string(), "0.001")),
        400,
        "bad_data",
        "points per timeseries",
        "step=0.001 over a year",
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "the limit must be checked before evaluating"
    );
    // A year at the finest allowed step over nothing is cheap and empty.
    let r = p.get(&qr("m", &year_start, &(T0 - 86_400).to_string(), "2867"));
    assert_eq!(r.status, 200, "{}", r.body);
    // Extreme times.
    let r = p.get(&qr("m", "-9999999999", "-9999999000", "1"));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = p.get("/api/v1/query?query=m&time=1e300");
    assert!(r.status == 200 || r.status == 400, "{}", r.body);

    // Huge regexes: a pattern past the compiled-size limit, and a long
    // alternation that is fine.
    let huge = "m{dev=~\"(\\\\w{1000}){100}\"}";
    assert_error(&p.get(&q(huge)), 400, "bad_data", "regex", "huge regex");
    let alternation = format!(
        "m{{dev=~\"{}|d1\"}}",
        (0..2000)
            .map(|i| format!("x{i}"))
            .collect::<Vec<_>>()
            .join("|")
    );
    let r = p.post(
        "/api/v1/query",
        "application/x-www-form-urlencoded",
        format!("query={}&time={}", urlencode(&alternation), T0 + 3600),
    );
    assert_eq!(r.status, 200, "{}", &r.body[..r.body.len().min(300)]);
    assert_eq!(r.json()["data"]["result"].as_array().unwrap().len(), 1);

    // Deep nesting and long operator chains.
    let deep = format!("{}m{}", "(".repeat(10_000), ")".repeat(10_000));
    let r = p.post(
        "/api/v1/query",
        "application/x-www-form-urlencoded",
        format!("query={}", urlencode(&deep)),
    );
    assert_error(&r, 400, "bad_data", "nests deeper", "deep parentheses");
    let nested = format!("{}m{}", "abs(".repeat(1000), ")".repeat(1000));
    assert_error(
        &p.get(&q(&nested)),
        400,
        "bad_data",
        "nests deeper",
        "deep calls",
    );
    let chain = vec!["m"; 20_000].join("+");
    let t = Instant::now();
    let r = p.post(
        "/api/v1/query",
        "application/x-www-form-urlencoded",
        format!("query={}", urlencode(&chain)),
    );
    assert_error(&r, 400, "bad_data", "operators", "long operator chain");
    assert!(t.elapsed() < Duration::from_secs(5));
    let negs = format!("{}m", "-".repeat(5000));
    assert_error(
        &p.get(&q(&negs)),
        400,
        "bad_data",
        "operators",
        "unary chain",
    );

    // Garbage bytes and odd literals.
    for junk in [
        "%FF%FE%00",
        "%00",
        &urlencode("\u{1F600}(m)"),
        &urlencode("m @ nan"),
        &urlencode("1 / 0 +"),
    ] {
        let r = p.get(&format!("/api/v1/query?query={junk}"));
        assert!(
            r.status == 400 || r.status == 422,
            "{junk}: {} {}",
            r.status,
            r.body
        );
        assert_eq!(r.json()["status"], "error");
    }
    for odd in [
        "m offset 99999999999y",
        "m @ 1e18",
        "m[100000000d]",
        "vector(1e308) * 10",
    ] {
        let r = p.get(&q(odd));
        assert!(
            [200, 400, 422].contains(&r.status),
            "{odd}: {} {}",
            r.status,
            r.body
        );
        r.json();
    }

    healthy(&p);
}

#[test]
fn memory_and_time_limits_answer_instead_of_dying() {
    let p = Perch::start_with(
        "[storage]\nretention = \"10y\"\n[query]\nmax_samples = 2000\nmax_series = 3\ntimeout = \"5s\"\n",
    );
    load(&p);
    let q = |query: &str| {
        format!(
            "/api/v1/query?time={}&query={}",
            T0 + 7200,
            urlencode(query)
        )
    };
    assert_error(
        &p.get(&q("sum(count_over_time(m{dev=~\"d[012]\"}[2h]))")),
        422,
        "execution",
        "too many samples",
        "samples",
    );
    assert_error(&p.get(&q("m")), 422, "execution", "max_series", "series");
    // Within the limits all is well.
    let r = p.get(&q("count_over_time(m{dev=\"d1\"}[10m])"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["result"][0]["value"][1], "59");
}
