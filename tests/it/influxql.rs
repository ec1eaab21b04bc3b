//! InfluxQL on `/query`: the field-station `SELECT * FROM JNU_rasp` check
//! (tests/../shared/reference/seed-payloads.md §3), `GROUP BY time` with
//! every fill, tags, `WHERE`, `LIMIT`, the `SHOW` statements, `epoch`, and
//! errors, answered in InfluxDB 1.x's JSON shape.

use crate::common;

/// Long retention for 2026 fixtures; perch's own metrics off, since they
/// would show up among the names, labels and measurements compared here.
const QUIET: &str = "[storage]\nretention = \"10y\"\nself_metrics_interval = \"0s\"\n";

use common::{urlencode, Perch};
use serde_json::{json, Value};

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn query(p: &Perch, q: &str, extra: &str) -> (u16, Value, String) {
    let r = p.get(&format!("/query?db=station&q={}{extra}", urlencode(q)));
    let j = r.json();
    (r.status, j, r.body)
}

fn ok(p: &Perch, q: &str, extra: &str) -> Value {
    let (status, j, body) = query(p, q, extra);
    assert_eq!(status, 200, "{q}: {body}");
    assert!(j["results"][0].get("error").is_none(), "{q}: {body}");
    j
}

fn write(p: &Perch, lines: &str, precision: &str) {
    let r = p.post(
        &format!("/write?precision={precision}"),
        "text/plain",
        lines,
    );
    assert_eq!(r.status, 204, "{}", r.body);
}

/// `env,site=…,device=… temp=…,hum=…` once a minute for 10 minutes, with
/// minute 4 missing for d1 and minutes 5-6 missing for everyone.
fn load_env(p: &Perch) {
    let mut lines = String::new();
    for m in 0..10i64 {
        if m == 5 || m == 6 {
            continue;
        }
        for (d, site) in [(0, "s0"), (1, "s1")] {
            if d == 1 && m == 4 {
                continue;
            }
            let t = T0 + m * 60 + 10;
            lines.push_str(&format!(
                "env,site={site},device=d{d} temp={},hum={}i {t}\n",
                20 + m + d * 10,
                40 + d
            ));
        }
    }
    write(p, &lines, "s");
}

#[test]
fn station_select_star_has_influxdbs_shape() {
    let p = Perch::start_with(QUIET);
    write(
        &p,
        "JNU_rasp,id=RaspberryPi alcohol_gas=9i,co_gas=117i,dust=0.05,latitude=35.17959,light=554i,longitude=126.90822,temp=26.52 1505724776794724369\n",
        "ns",
    );
    let r = p.get(&format!(
        "/query?pretty=false&db=station&q={}",
        urlencode("SELECT * FROM JNU_rasp")
    ));
    assert_eq!(r.status, 200);
    // perch keeps milliseconds: the nanoseconds of the original are cut.
    assert_eq!(
        r.body,
        r#"{"results":[{"statement_id":0,"series":[{"name":"JNU_rasp","columns":["time","alcohol_gas","co_gas","dust","id","latitude","light","longitude","temp"],"values":[["2017-09-18T08:52:56.794Z",9,117,0.05,"RaspberryPi",35.17959,554,126.90822,26.52]]}]}]}"#
    );
    // The same with pretty=true is the same JSON.
    let r = p.get(&format!(
        "/query?pretty=true&db=station&q={}",
        urlencode("SELECT * FROM JNU_rasp")
    ));
    assert!(r.body.contains('\n'));
    assert_eq!(
        r.json()["results"][0]["series"][0]["values"][0][4],
        "RaspberryPi"
    );
    // POST with the query in a form body, as the influx CLI does.
    let r = p.post(
        "/query",
        "application/x-www-form-urlencoded",
        format!(
            "db=station&q={}",
            urlencode("SELECT temp, id FROM JNU_rasp")
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["results"][0]["series"][0],
        json!({"name": "JNU_rasp", "columns": ["time", "temp", "id"],
               "values": [["2017-09-18T08:52:56.794Z", 26.52, "RaspberryPi"]]})
    );
}

#[test]
fn group_by_time_fill_tags_where_limit() {
    let p = Perch::start_with(QUIET);
    load_env(&p);
    let range = "time >= '2026-01-01T00:00:00Z' AND time < '2026-01-01T00:08:00Z'";
    let series0 = |j: &Value| j["results"][0]["series"][0].clone();

    // fill(null) is the default: every bucket of the range, null when empty.
    let j = ok(
        &p,
        &format!("SELECT mean(temp) FROM env WHERE {range} AND device = 'd0' GROUP BY time(1m)"),
        "",
    );
    let s = series0(&j);
    assert_eq!(s["columns"], json!(["time", "mean"]));
    assert_eq!(s["values"].as_array().unwrap().len(), 8);
    assert_eq!(s["values"][0], json!(["2026-01-01T00:00:00Z", 20]));
    assert_eq!(s["values"][5], json!(["2026-01-01T00:05:00Z", null]));
    let with = |fill: &str| {
        let j = ok(
            &p,
            &format!("SELECT mean(temp) FROM env WHERE {range} AND device = 'd0' GROUP BY time(1m) fill({fill})"),
            "",
        );
        series0(&j)["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[1].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        with("null"),
        vec![
            json!(20),
            json!(21),
            json!(22),
            json!(23),
            json!(24),
            Value::Null,
            Value::Null,
            json!(27)
        ]
    );
    assert_eq!(
        with("none"),
        vec![
            json!(20),
            json!(21),
            json!(22),
            json!(23),
            json!(24),
            json!(27)
        ]
    );
    assert_eq!(
        with("0"),
        vec![
            json!(20),
            json!(21),
            json!(22),
            json!(23),
            json!(24),
            json!(0),
            json!(0),
            json!(27)
        ]
    );
    assert_eq!(
        with("-1"),
        vec![
            json!(20),
            json!(21),
            json!(22),
            json!(23),
            json!(24),
            json!(-1),
            json!(-1),
            json!(27)
        ]
    );
    assert_eq!(
        with("previous"),
        vec![
            json!(20),
            json!(21),
            json!(22),
            json!(23),
            json!(24),
            json!(24),
            json!(24),
            json!(27)
        ]
    );

    // Several functions, both devices together, 2 minute buckets.
    let j = ok(
        &p,
        &format!("SELECT mean(temp), min(temp), max(temp), sum(temp), count(temp), first(temp), last(temp) FROM env WHERE {range} GROUP BY time(2m) fill(none)"),
        "",
    );
    let s = series0(&j);
    assert_eq!(
        s["columns"],
        json!(["time", "mean", "min", "max", "sum", "count", "first", "last"])
    );
    // Minutes 0 and 1: d0 20, 21; d1 30, 31.
    assert_eq!(
        s["values"][0],
        json!(["2026-01-01T00:00:00Z", 25.5, 20, 31, 102, 4, 20, 31])
    );
    // Minutes 4 (d0 only) and 5 (nobody).
    assert_eq!(
        s["values"][2],
        json!(["2026-01-01T00:04:00Z", 24, 24, 24, 24, 1, 24, 24])
    );

    // GROUP BY a tag: one series per value, with "tags".
    let j = ok(
        &p,
        &format!("SELECT max(temp) FROM env WHERE {range} GROUP BY time(4m), site fill(none)"),
        "",
    );
    let all = j["results"][0]["series"].as_array().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["name"], "env");
    assert_eq!(all[0]["tags"], json!({"site": "s0"}));
    assert_eq!(
        all[0]["values"],
        json!([["2026-01-01T00:00:00Z", 23], ["2026-01-01T00:04:00Z", 27]])
    );
    assert_eq!(all[1]["tags"], json!({"site": "s1"}));
    assert_eq!(
        all[1]["values"],
        json!([["2026-01-01T00:00:00Z", 33], ["2026-01-01T00:04:00Z", 37]])
    );

    // No GROUP BY time: one row at the start of the range; a lone selector
    // keeps its point's time.
    let j = ok(
        &p,
        &format!("SELECT count(temp) FROM env WHERE {range}"),
        "",
    );
    assert_eq!(series0(&j)["values"], json!([["2026-01-01T00:00:00Z", 11]]));
    let j = ok(&p, "SELECT max(temp) FROM env", "");
    assert_eq!(series0(&j)["values"], json!([["2026-01-01T00:09:10Z", 39]]));

    // Raw selects with WHERE on tags and fields, ORDER BY, LIMIT, OFFSET.
    let j = ok(
        &p,
        "SELECT temp, hum FROM env WHERE site =~ /s1/ AND temp > 35 ORDER BY time DESC LIMIT 2",
        "",
    );
    assert_eq!(
        series0(&j)["values"],
        json!([
            ["2026-01-01T00:09:10Z", 39, 41],
            ["2026-01-01T00:08:10Z", 38, 41]
        ])
    );
    let j = ok(
        &p,
        "SELECT temp FROM env WHERE device != 'd1' LIMIT 2 OFFSET 1",
        "",
    );
    assert_eq!(
        series0(&j)["values"],
        json!([["2026-01-01T00:01:10Z", 21], ["2026-01-01T00:02:10Z", 22]])
    );
    let j = ok(&p, "SELECT * FROM env WHERE time > now() - 1h", "");
    assert!(
        j["results"][0].get("series").is_none(),
        "nothing in the last hour"
    );
    let j = ok(
        &p,
        "SELECT temp FROM env WHERE device = 'd0' OR device = 'd1' GROUP BY device",
        "",
    );
    assert_eq!(j["results"][0]["series"].as_array().unwrap().len(), 2);

    // epoch: integer times in the unit asked for.
    let j = ok(
        &p,
        "SELECT temp FROM env WHERE device = 'd0' LIMIT 1",
        "&epoch=s",
    );
    assert_eq!(series0(&j)["values"][0][0], json!(T0 + 10));
    let j = ok(
        &p,
        "SELECT temp FROM env WHERE device = 'd0' LIMIT 1",
        "&epoch=ms",
    );
    assert_eq!(series0(&j)["values"][0][0], json!((T0 + 10) * 1000));
    let j = ok(
        &p,
        "SELECT temp FROM env WHERE device = 'd0' LIMIT 1",
        "&epoch=ns",
    );
    assert_eq!(
        series0(&j)["values"][0][0],
        json!((T0 + 10) * 1_000_000_000)
    );
    let j = ok(
        &p,
        &format!("SELECT mean(temp) FROM env WHERE {range} GROUP BY time(1m) fill(none) LIMIT 1"),
        "&epoch=m",
    );
    assert_eq!(series0(&j)["values"][0][0], json!(T0 / 60));
}

#[test]
fn show_statements_and_errors() {
    let p = Perch::start_with(QUIET);
    load_env(&p);
    write(
        &p,
        "JNU_rasp,id=RaspberryPi temp=26.52,dust=0.05 1767225600\n",
        "s",
    );

    let j = ok(&p, "SHOW MEASUREMENTS", "");
    assert_eq!(
        j["results"][0]["series"][0],
        json!({"name": "measurements", "columns": ["name"], "values": [["JNU_rasp"], ["env"]]})
    );
    let j = ok(&p, "SHOW TAG KEYS FROM env", "");
    assert_eq!(
        j["results"][0]["series"][0],
        json!({"name": "env", "columns": ["tagKey"], "values": [["device"], ["site"]]})
    );
    let j = ok(&p, "SHOW FIELD KEYS FROM env", "");
    assert_eq!(
        j["results"][0]["series"][0],
        json!({"name": "env", "columns": ["fieldKey", "fieldType"], "values": [["hum", "float"], ["temp", "float"]]})
    );
    let j = ok(&p, "SHOW TAG VALUES FROM env WITH KEY = site", "");
    assert_eq!(
        j["results"][0]["series"][0],
        json!({"name": "env", "columns": ["key", "value"], "values": [["site", "s0"], ["site", "s1"]]})
    );
    let j = ok(&p, "SHOW TAG VALUES WITH KEY IN (device, id)", "");
    let all = j["results"][0]["series"].as_array().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["name"], "JNU_rasp");
    assert_eq!(all[0]["values"], json!([["id", "RaspberryPi"]]));
    assert_eq!(
        all[1]["values"],
        json!([["device", "d0"], ["device", "d1"]])
    );
    // Several statements, each with its own result.
    let j = ok(&p, "SHOW MEASUREMENTS; SHOW TAG KEYS", "");
    assert_eq!(j["results"][1]["statement_id"], 1);
    assert_eq!(j["results"][1]["series"].as_array().unwrap().len(), 2);

    // Errors: missing q and parse errors are 400 with {"error": …};
    // unsupported statements say so; statement errors sit in their result.
    let r = p.get("/query?db=station");
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("\"q\""),
        "{}",
        r.body
    );
    for (q, needle) in [
        ("SELEC * FROM env", "not supported"),
        ("SELECT * FROM", "expected identifier"),
        ("DROP MEASUREMENT env", "read-only"),
        ("CREATE DATABASE x", "not supported"),
        ("SELECT * INTO y FROM env", "read-only"),
        ("SHOW RETENTION POLICIES", "not supported"),
        ("SELECT * FROM /env/", "not supported"),
        (
            "SELECT temp FROM env WHERE site = 'unterminated",
            "unterminated",
        ),
    ] {
        let (status, j, body) = query(&p, q, "");
        assert_eq!(status, 400, "{q}: {body}");
        let e = j["error"].as_str().unwrap_or("");
        assert!(e.contains("error parsing query"), "{q}: {e}");
        assert!(e.contains(needle), "{q}: {e} should mention {needle}");
    }
    for (q, needle) in [
        ("SELECT mean(temp), temp FROM env", "mixing aggregate"),
        ("SELECT median(temp) FROM env", "not supported"),
        ("SELECT temp FROM env GROUP BY time(1m)", "aggregate"),
        (
            "SELECT mean(temp) FROM env WHERE time > now() - 1000w GROUP BY time(1s)",
            "buckets",
        ),
        (
            "SELECT temp FROM env WHERE time > now() - 1h OR site = 's0'",
            "OR",
        ),
        (
            "SELECT mean(temp) FROM env GROUP BY time(1m) fill(linear)",
            "linear",
        ),
    ] {
        let (status, j, body) = query(&p, q, "");
        assert_eq!(status, 200, "{q}: {body}");
        let e = j["results"][0]["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{q}: no error in {body}"));
        assert!(e.contains(needle), "{q}: {e} should mention {needle}");
    }
    let r = p.get(&format!(
        "/query?q={}&epoch=fortnight",
        urlencode("SHOW MEASUREMENTS")
    ));
    assert_eq!(r.status, 400);
    // Unknown measurements answer with no series, like InfluxDB.
    let j = ok(&p, "SELECT * FROM nothing_here", "");
    assert_eq!(j, json!({"results": [{"statement_id": 0}]}));
}

/// The measurements `SHOW MEASUREMENTS` lists.
fn measurements(p: &Perch) -> Value {
    ok(p, "SHOW MEASUREMENTS", "")["results"][0]["series"][0]["values"].clone()
}

/// Polls (bounded) until `q` answers `want` at `pointer`: MQTT messages are
/// stored a moment after mosquitto_pub returns.
fn wait_for(p: &Perch, q: &str, pointer: &str, want: &Value) {
    for _ in 0..100 {
        if ok(p, q, "").pointer(pointer) == Some(want) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{q}: {} is not {want}", ok(p, q, ""));
}

/// The measurement and field names a write used are the answer, whatever
/// arrives later (issue 18: reconstructed from metric names, `room_aaa`
/// became `room` once `room_bbb` arrived, `cpu` split into `cpu_ram` and
/// `cpu_usage`, and Telegraf's cpu lines were `cpu_usage`).
#[test]
fn measurements_are_what_was_written() {
    let mut p = Perch::start_with(QUIET);
    write(&p, &format!("room_aaa,loc=lab temp=1,hum=2 {T0}\n"), "s");
    assert_eq!(measurements(&p), json!([["room_aaa"]]));
    write(&p, &format!("room_bbb,loc=lab temp=1,hum=2 {T0}\n"), "s");
    assert_eq!(measurements(&p), json!([["room_aaa"], ["room_bbb"]]));
    write(&p, &format!("cpu usage=1 {T0}\n"), "s");
    write(&p, &format!("cpu ram=2 {}\n", T0 + 60), "s");
    assert_eq!(
        measurements(&p),
        json!([["cpu"], ["room_aaa"], ["room_bbb"]])
    );
    // A measurement and a field whose names are not metric names.
    write(
        &p,
        &format!("boiler\\ room,loc=cellar temp.c=60 {T0}\n"),
        "s",
    );
    // Telegraf's cpu plugin through MQTT (outputs.mqtt, data_format =
    // "influx"), and a plain number from an MQTT device, whose measurement
    // is still guessed from the metric name.
    let telegraf = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/telegraf/cpu_usage.lp"),
    )
    .unwrap();
    p.publish("telegraf/loaner/cpu", &telegraf, false);
    p.publish("home/pcroom/temperature", b"21.5", false);
    // Telegraf's JSON (outputs.mqtt, data_format = "json"): a batch of two
    // one-field metrics, which the guess named `expression_count_sum` and
    // `impression_count_sum`; from the devices corpus, with its source.
    let corpus: toml::Value = toml::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/devices/telegraf.toml"),
        )
        .unwrap(),
    )
    .unwrap();
    let batch = corpus["message"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["source"]
                .as_str()
                .unwrap()
                .contains("transformation_single")
        })
        .unwrap();
    p.publish(
        "telegraf",
        batch["payload"].as_str().unwrap().as_bytes(),
        false,
    );
    let listed = json!([
        ["boiler room"],
        ["cpu"],
        ["expression"],
        ["impression"],
        ["room_aaa"],
        ["room_bbb"],
        ["temperature"]
    ]);
    wait_for(
        &p,
        "SHOW MEASUREMENTS",
        "/results/0/series/0/values",
        &listed,
    );
    let cpu_fields = json!([
        "ram",
        "usage",
        "usage_active",
        "usage_guest",
        "usage_guest_nice",
        "usage_idle",
        "usage_iowait",
        "usage_irq",
        "usage_nice",
        "usage_softirq",
        "usage_steal",
        "usage_system",
        "usage_user"
    ]);
    let answers = |p: &Perch| {
        let fields = ok(p, "SHOW FIELD KEYS FROM cpu", "");
        let names: Vec<&Value> = fields["results"][0]["series"][0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| &v[0])
            .collect();
        assert_eq!(json!(names), cpu_fields);
        assert_eq!(
            ok(p, "SELECT * FROM room_bbb", "")["results"][0]["series"][0],
            json!({
                "name": "room_bbb",
                "columns": ["time", "hum", "loc", "temp"],
                "values": [["2026-01-01T00:00:00Z", 2, "lab", 1]]
            })
        );
        assert_eq!(
            ok(p, "SELECT \"temp.c\" FROM \"boiler room\"", "")["results"][0]["series"][0],
            json!({
                "name": "boiler room",
                "columns": ["time", "temp.c"],
                "values": [["2026-01-01T00:00:00Z", 60]]
            })
        );
        assert_eq!(
            ok(
                p,
                "SELECT usage_idle FROM cpu WHERE \"cpu\" = 'cpu-total'",
                ""
            )["results"][0]["series"][0]["values"],
            json!([["2019-09-17T22:55:22Z", 82.3834196941197]])
        );
        let all = ok(p, "SHOW FIELD KEYS", "");
        let per: Vec<(&Value, usize)> = all["results"][0]["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (&s["name"], s["values"].as_array().unwrap().len()))
            .collect();
        assert_eq!(
            json!(per),
            json!([
                ["boiler room", 1],
                ["cpu", 13],
                ["expression", 1],
                ["impression", 1],
                ["room_aaa", 2],
                ["room_bbb", 2],
                ["temperature", 1]
            ])
        );
    };
    answers(&p);
    // Remembered on disk: the same answers after a restart, and
    // `perch check` reads what was remembered.
    p.stop();
    let (code, out, err) = p.cli(&["check"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("measurements:   20 metric names\n"), "{out}");
    p.restart();
    assert_eq!(measurements(&p), listed);
    answers(&p);
}
