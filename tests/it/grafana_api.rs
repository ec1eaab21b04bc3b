//! The requests Grafana's Prometheus data source makes, as it makes them
//! (methods, parameters, headers), with the response shapes and values it
//! relies on: the health check, version detection, the metric browser
//! (label names, label values with `match[]`, series), panel queries
//! (`query_range` as a form POST with Grafana's step), exemplars and
//! metadata.

use crate::common;

/// Long retention for 2026 fixtures; perch's own metrics off, since they
/// would show up among the names, labels and measurements compared here.
const QUIET: &str = "[storage]\nretention = \"10y\"\nself_metrics_interval = \"0s\"\n";

use common::{urlencode, Perch};
use serde_json::Value;

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

/// Two metrics, two sites, four devices, one sample every 15 s for 2 h:
/// `env_temp` = 20 + device index + minutes / 60, `env_energy_total` a
/// counter growing 1 per sample.
fn load(p: &Perch) {
    let mut body = String::new();
    for d in 0..4 {
        let site = format!("s{}", d % 2);
        let ts: Vec<String> = (0..480)
            .map(|i| ((T0 + i * 15) * 1000).to_string())
            .collect();
        let temp: Vec<String> = (0..480)
            .map(|i| format!("{}", 20.0 + d as f64 + (i as f64 * 0.25) / 60.0))
            .collect();
        let energy: Vec<String> = (0..480).map(|i| i.to_string()).collect();
        body.push_str(&format!(
            "{{\"metric\":{{\"__name__\":\"env_temp\",\"site\":\"{site}\",\"device\":\"d{d}\"}},\"values\":[{}],\"timestamps\":[{}]}}\n",
            temp.join(","),
            ts.join(",")
        ));
        body.push_str(&format!(
            "{{\"metric\":{{\"__name__\":\"env_energy_total\",\"site\":\"{site}\",\"device\":\"d{d}\"}},\"values\":[{}],\"timestamps\":[{}]}}\n",
            energy.join(","),
            ts.join(",")
        ));
    }
    let r = p.post("/api/v1/import", "application/json", body);
    assert_eq!(r.status, 204, "{}", r.body);
}

/// Grafana's backend sends form POSTs with these headers.
fn grafana_post(p: &Perch, path: &str, form: &[(&str, String)]) -> Value {
    let body: String = form
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let r = p.post_with_headers(
        path,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Accept", "application/json, text/plain, */*"),
            ("User-Agent", "Grafana/11.2.0"),
            ("X-Grafana-Org-Id", "1"),
        ],
        body,
    );
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("application/json"),
        "{path}: content type {:?}",
        r.header("content-type")
    );
    let j = r.json();
    assert_eq!(j["status"], "success", "{path}: {}", r.body);
    j
}

fn grafana_get(p: &Perch, path: &str) -> Value {
    let r = p.get(path);
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    let j = r.json();
    assert_eq!(j["status"], "success", "{path}: {}", r.body);
    j
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn grafana_prometheus_data_source() {
    let mut p = Perch::start_with(QUIET);
    load(&p);
    // Series' time spans reach the index at a checkpoint (a restart makes
    // one); the label APIs filter by them.
    p.stop();
    p.restart();
    let (start, end) = (T0, T0 + 7200);

    // Version detection (data source settings).
    let b = grafana_get(&p, "/api/v1/status/buildinfo");
    let version = b["data"]["version"].as_str().unwrap();
    assert!(
        version.split('.').count() == 3 && version.split('.').all(|x| x.parse::<u32>().is_ok()),
        "{version}"
    );
    for key in ["revision", "branch", "buildUser", "buildDate", "goVersion"] {
        assert!(b["data"][key].is_string(), "buildinfo lacks {key}");
    }

    // "Save & test": an instant query of 1+1.
    let h = grafana_post(
        &p,
        "/api/v1/query",
        &[("query", "1+1".into()), ("time", format!("{}.123", end))],
    );
    assert_eq!(h["data"]["resultType"], "scalar");
    assert_eq!(h["data"]["result"][0].as_f64(), Some(end as f64 + 0.123));
    assert_eq!(h["data"]["result"][1], "2");

    // Metric browser: names, label names, label values, series.
    let names = grafana_get(
        &p,
        &format!("/api/v1/label/__name__/values?start={start}&end={end}"),
    );
    assert_eq!(
        strings(&names["data"]),
        vec!["env_energy_total", "env_temp"]
    );
    let later = grafana_get(
        &p,
        &format!(
            "/api/v1/label/__name__/values?start={}&end={}",
            end + 86_400,
            end + 90_000
        ),
    );
    assert_eq!(
        strings(&later["data"]),
        Vec::<String>::new(),
        "no series outside the range"
    );
    let labels = grafana_get(&p, &format!("/api/v1/labels?start={start}&end={end}"));
    assert_eq!(strings(&labels["data"]), vec!["__name__", "device", "site"]);
    let labels = grafana_post(
        &p,
        "/api/v1/labels",
        &[
            ("match[]", "env_temp".into()),
            ("start", start.to_string()),
            ("end", end.to_string()),
        ],
    );
    assert_eq!(strings(&labels["data"]), vec!["__name__", "device", "site"]);
    let sites = grafana_get(
        &p,
        &format!(
            "/api/v1/label/site/values?match[]={}&start={start}&end={end}",
            urlencode("env_temp")
        ),
    );
    assert_eq!(strings(&sites["data"]), vec!["s0", "s1"]);
    let devices = grafana_get(
        &p,
        &format!(
            "/api/v1/label/device/values?match[]={}&start={start}&end={end}",
            urlencode("env_temp{site=\"s1\"}")
        ),
    );
    assert_eq!(strings(&devices["data"]), vec!["d1", "d3"]);
    let series = grafana_get(
        &p,
        &format!(
            "/api/v1/series?match[]={}&start={start}&end={end}",
            urlencode("{__name__=\"env_temp\",site=\"s0\"}")
        ),
    );
    let series = series["data"].as_array().unwrap();
    assert_eq!(series.len(), 2);
    for s in series {
        assert_eq!(s["__name__"], "env_temp");
        assert_eq!(s["site"], "s0");
        assert!(s["device"].is_string());
    }
    let series = grafana_post(
        &p,
        "/api/v1/series",
        &[
            ("match[]", "env_temp".into()),
            ("match[]", "env_energy_total{device=\"d0\"}".into()),
        ],
    );
    assert_eq!(series["data"].as_array().unwrap().len(), 5);

    // A panel: query_range as Grafana sends it (form POST, step in seconds,
    // start and end aligned to the step).
    let step = 60;
    let r = grafana_post(
        &p,
        "/api/v1/query_range",
        &[
            ("query", "avg by (site) (env_temp)".into()),
            ("start", start.to_string()),
            ("end", (end - 60).to_string()),
            ("step", step.to_string()),
        ],
    );
    assert_eq!(r["data"]["resultType"], "matrix");
    let result = r["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 2);
    assert_eq!(result[0]["metric"], serde_json::json!({"site": "s0"}));
    let values = result[0]["values"].as_array().unwrap();
    assert_eq!(values.len(), 120);
    // At start: devices 0 and 2 → (20 + 22) / 2.
    assert_eq!(values[0][0].as_i64(), Some(start));
    assert_eq!(values[0][1], "21");
    // One hour in: + 1.
    assert_eq!(values[60][0].as_i64(), Some(start + 3600));
    assert_eq!(values[60][1], "22");

    // A rate panel with Grafana's $__rate_interval-style range and step.
    let r = grafana_post(
        &p,
        "/api/v1/query_range",
        &[
            (
                "query",
                "sum by (site) (rate(env_energy_total[1m0s]))".into(),
            ),
            ("start", (start + 600).to_string()),
            ("end", (start + 1200).to_string()),
            ("step", "15".into()),
        ],
    );
    for s in r["data"]["result"].as_array().unwrap() {
        for v in s["values"].as_array().unwrap() {
            // Two devices per site, one per 15 s each.
            let x: f64 = v[1].as_str().unwrap().parse().unwrap();
            assert!((x - 2.0 / 15.0).abs() < 1e-9, "{x}");
        }
    }

    // Durations as steps, RFC 3339 times, GET works the same.
    let r = grafana_get(
        &p,
        &format!(
            "/api/v1/query_range?query={}&start=2026-01-01T00:00:00Z&end=2026-01-01T00:10:00Z&step=5m",
            urlencode("env_temp{device=\"d1\"}")
        ),
    );
    let v = &r["data"]["result"][0]["values"];
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert_eq!(v[2][0].as_i64(), Some(T0 + 600));

    // A table panel: an instant query, vector result.
    let r = grafana_post(
        &p,
        "/api/v1/query",
        &[
            ("query", "env_temp{site=\"s1\"}".into()),
            ("time", (start + 3600).to_string()),
        ],
    );
    assert_eq!(r["data"]["resultType"], "vector");
    let mut got: Vec<(String, String)> = r["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["metric"]["device"].as_str().unwrap().to_string(),
                x["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![("d1".into(), "22".into()), ("d3".into(), "24".into())]
    );

    // Exemplars: Grafana asks alongside every range query.
    let e = grafana_get(
        &p,
        &format!(
            "/api/v1/query_exemplars?query={}&start={start}&end={end}",
            urlencode("env_temp")
        ),
    );
    assert_eq!(e["data"], serde_json::json!([]));
    let e = grafana_post(
        &p,
        "/api/v1/query_exemplars",
        &[
            ("query", "rate(env_energy_total[5m])".into()),
            ("start", start.to_string()),
            ("end", end.to_string()),
        ],
    );
    assert_eq!(e["data"], serde_json::json!([]));

    // Metadata for the query editor's hints.
    let m = grafana_get(&p, "/api/v1/metadata");
    assert!(m["data"].is_object());
    let m = grafana_get(&p, "/api/v1/metadata?metric=env_temp&limit=1");
    assert!(m["data"].is_object());

    // Query formatting (the editor's "format query" button).
    let f = grafana_get(
        &p,
        &format!(
            "/api/v1/format_query?query={}",
            urlencode("sum(rate(x[5m]))by(a)")
        ),
    );
    assert_eq!(f["data"], "sum by (a) (rate(x[5m]))");

    // Compressed responses when asked (Grafana's backend asks).
    let r = p.post_with_headers(
        "/api/v1/query_range",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Accept-Encoding", "gzip"),
        ],
        format!("query=env_temp&start={start}&end={end}&step=15"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"]["result"].as_array().unwrap().len(), 4);
}
