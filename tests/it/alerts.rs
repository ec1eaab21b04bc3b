//! Alerting and recording rules against the reference: the same rule files
//! and promtool unit tests (tests/fixtures/rules/) run through Debian's
//! `promtool test rules` and `perch rules test`, which evaluates them with
//! perch's store, PromQL engine and rule evaluator. Both must pass the
//! good files and both must fail a file whose expectations are wrong, so
//! the comparison can fail. Bad rule files get every problem with its line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{have_command, now_ms, Perch, BIN};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules")
}

/// Runs a command; its exit code and what it printed.
fn run(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().expect("the command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `promtool VERB rules FILE` and `perch rules VERB FILE`.
fn both(verb: &str, file: &Path) -> ((i32, String), (i32, String)) {
    let promtool = run(Command::new("promtool").args([verb, "rules"]).arg(file));
    let perch = run(Command::new(BIN).args(["rules", verb]).arg(file));
    (promtool, perch)
}

#[test]
fn rule_unit_tests_pass_in_promtool_and_in_perch() {
    if !have_command("promtool") {
        return;
    }
    for file in [
        "prometheus_unittest.yml",
        "iot_unittest.yml",
        "builtin_unittest.yml",
        "anomaly_unittest.yml",
    ] {
        let path = fixtures().join(file);
        let ((pc, pout), (c, out)) = both("test", &path);
        assert_eq!(pc, 0, "promtool on {file}:\n{pout}");
        assert_eq!(c, 0, "perch on {file}:\n{out}");
        assert!(out.contains("SUCCESS"), "{out}");
    }
}

#[test]
fn wrong_expectations_fail_in_both() {
    if !have_command("promtool") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The IoT tests with two expectations changed: the annotation's value
    // and the time the alert went active.
    let text = std::fs::read_to_string(fixtures().join("iot_unittest.yml"))
        .unwrap()
        .replace(
            "- iot_rules.yml",
            &format!("- {}", fixtures().join("iot_rules.yml").display()),
        )
        .replace("is at -5.4 °C", "is at -5.3 °C")
        .replace("value: 480", "value: 540");
    let path = dir.path().join("wrong.yml");
    std::fs::write(&path, text).unwrap();
    let ((pc, pout), (c, out)) = both("test", &path);
    assert_eq!(pc, 1, "promtool:\n{pout}");
    assert_eq!(c, 1, "perch:\n{out}");
    // perch says what it expected and what it got, as promtool does.
    assert!(
        out.contains("The freezer is at -5.3 °C") && out.contains("The freezer is at -5.4 °C"),
        "{out}"
    );
    assert!(
        out.contains("ALERTS_FOR_STATE") && out.contains(" 480]"),
        "{out}"
    );
}

#[test]
fn rule_files_check_like_promtool_with_lines() {
    if !have_command("promtool") {
        return;
    }
    let builtin = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/alerts/src/builtin_rules.yml");
    for path in [
        fixtures().join("prometheus_rules.yml"),
        fixtures().join("iot_rules.yml"),
        builtin,
    ] {
        let file = path.display();
        let ((pc, pout), (c, out)) = both("check", &path);
        assert_eq!((pc, c), (0, 0), "{file}:\npromtool: {pout}\nperch: {out}");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "groups:\n  - name: g\n    rules:\n      - alert: Broken\n        expr: rate(temperature[5m]\n      - record: job:x\n        expr: up\n        annotations: {a: b}\n      - alert: T\n        expr: up\n        labels:\n          severity: '{{ $labels.x '\n",
    )
    .unwrap();
    let ((pc, pout), (c, out)) = both("check", &bad);
    assert_eq!(pc, 1, "promtool accepted it:\n{pout}");
    assert_eq!(c, 1, "perch accepted it:\n{out}");
    let name = bad.display().to_string();
    for (line, what) in [
        (5, "could not parse expression"),
        (8, "invalid field 'annotations' in recording rule"),
        (12, "template"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{name}:{line}:")) && l.contains(what)),
            "line {line} {what}:\n{out}"
        );
    }
}

const SERVE_RULES: &str = r#"groups:
  - name: freezer
    rules:
      - record: device:env_temp:max
        expr: max by (device) (env_temp)
      - alert: FreezerWarm
        expr: env_temp{device="freezer"} > -12
        for: 2s
        labels:
          severity: page
        annotations:
          summary: '{{ $labels.device }} at {{ $value }} °C'
"#;

/// Writes line-protocol lines (without timestamps) stamped now, in seconds.
fn write_now(perch: &Perch, lines: &str) {
    let now = now_ms() / 1000;
    let body: String = lines.lines().map(|l| format!("{l} {now}\n")).collect();
    let r = perch.post("/write?precision=s", "text/plain", body);
    assert_eq!(r.status, 204, "{}", r.body);
}

/// mosquitto_sub on perch's broker as the test admin; the caller adds the
/// topic and options.
fn admin_sub(perch: &Perch) -> Command {
    let mut cmd = Command::new("mosquitto_sub");
    cmd.args(["-h", "127.0.0.1", "-p", &perch.mqtt_port.to_string()])
        .args([
            "-u",
            crate::common::ADMIN,
            "-P",
            crate::common::ADMIN_PASSWORD,
        ]);
    cmd
}

/// Polls `/api/v1/alerts` until an alert is in `state`; its JSON.
fn wait_for_alert(perch: &Perch, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = perch.get("/api/v1/alerts");
        assert_eq!(r.status, 200, "{}", r.body);
        let alerts = r.json()["data"]["alerts"].clone();
        if let Some(a) = alerts
            .as_array()
            .and_then(|a| a.iter().find(|a| a["state"] == state))
        {
            return a.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {state} alert: {alerts}\n{}",
            perch.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn rules_run_in_perch_serve_and_firing_alerts_survive_a_restart() {
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("freezer.yml"), SERVE_RULES).unwrap();
    let mut perch = Perch::start_with(&format!(
        "[alerts]\nrule_files = [{:?}]\nevaluation_interval = \"1s\"\n",
        rules.path()
    ));
    let now = now_ms() / 1000;
    let r = perch.post(
        "/write?precision=s",
        "text/plain",
        format!("env,device=freezer temp=-5 {now}\nenv,device=fridge temp=4 {now}"),
    );
    assert_eq!(r.status, 204, "{}", r.body);

    let pending = wait_for_alert(&perch, "pending");
    let firing = wait_for_alert(&perch, "firing");
    assert_eq!(pending["activeAt"], firing["activeAt"]);
    assert_eq!(firing["labels"]["alertname"], "FreezerWarm");
    assert_eq!(firing["labels"]["severity"], "page");
    assert_eq!(firing["labels"]["device"], "freezer");
    assert_eq!(firing["annotations"]["summary"], "freezer at -5 °C");
    assert_eq!(firing["value"], "-5e+00");

    // Prometheus' /api/v1/rules shape, as Grafana reads it.
    let groups = perch.get("/api/v1/rules").json()["data"]["groups"].clone();
    let group = &groups[0];
    assert_eq!(group["name"], "freezer");
    assert_eq!(group["interval"], 1.0);
    let kinds: Vec<&str> = group["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["recording", "alerting"]);
    assert_eq!(group["rules"][1]["state"], "firing");
    assert_eq!(group["rules"][1]["duration"], 2.0);
    assert_eq!(group["rules"][0]["health"], "ok");
    let only_alerts = perch.get("/api/v1/rules?type=alert").json();
    assert_eq!(
        only_alerts["data"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(perch.get("/api/v1/rules?type=nonsense").status, 400);

    // What the rules wrote is queryable: the recorded series and ALERTS.
    let q = |query: &str| {
        perch
            .get(&format!(
                "/api/v1/query?query={}",
                crate::common::urlencode(query)
            ))
            .json()["data"]["result"]
            .clone()
    };
    let recorded = q("device:env_temp:max");
    assert_eq!(recorded.as_array().unwrap().len(), 2, "{recorded}");
    let alerts = q(r#"ALERTS{alertname="FreezerWarm"}"#);
    assert_eq!(alerts[0]["metric"]["alertstate"], "firing", "{alerts}");
    assert_eq!(alerts[0]["value"][1], "1");

    // After a restart the alert is still firing, active since the same
    // time: its `for` is not started again (nor, later, its notification).
    perch.stop();
    perch.restart();
    let r = perch.get("/api/v1/alerts").json();
    let kept = &r["data"]["alerts"][0];
    assert_eq!(kept["state"], "firing", "{r}");
    assert_eq!(kept["activeAt"], firing["activeAt"]);
    std::thread::sleep(Duration::from_millis(2500));
    let again = wait_for_alert(&perch, "firing");
    assert_eq!(again["activeAt"], firing["activeAt"]);
    assert_eq!(again["value"], "-5e+00");
}

#[test]
fn a_rule_file_with_a_problem_stops_the_start_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("bad.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    rules:\n      - alert: Broken\n        expr: rate(x[5m]\n",
    )
    .unwrap();
    let config = dir.path().join("perch.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[http]\nlisten = \"127.0.0.1:{}\"\n[mqtt]\nlisten = \"127.0.0.1:{}\"\nws_listen = \"off\"\n[alerts]\nrule_files = [{:?}]\n",
            dir.path().join("data"),
            crate::common::free_port(),
            crate::common::free_port(),
            rules
        ),
    )
    .unwrap();
    let (code, out) = run(Command::new(BIN).args(["serve", "--config"]).arg(&config));
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "{}:5:15: could not parse expression",
            rules.display()
        )),
        "{out}"
    );
}

/// A webhook receiver on loopback: answers 200 and keeps each body.
struct Receiver {
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn start(port: u16) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok() {
                    kept.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&body).into_owned());
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        Receiver { bodies }
    }

    /// Waits until `n` bodies came; them, parsed.
    fn wait_for(&self, n: usize, perch: &Perch) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let got = self.bodies.lock().unwrap().clone();
            if got.len() >= n {
                return got
                    .iter()
                    .map(|b| serde_json::from_str(b).unwrap())
                    .collect();
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} webhooks: {got:?}\n{}",
                got.len(),
                perch.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn notifications_over_mqtt_and_a_webhook_that_was_down() {
    if !crate::common::have_mosquitto() {
        return;
    }
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("freezer.yml"), SERVE_RULES).unwrap();
    // The webhook's port is chosen but nothing listens yet: it is down.
    let hook_port = crate::common::free_port();
    let perch = Perch::start_with(&format!(
        "[alerts]\nrule_files = [{:?}]\nevaluation_interval = \"1s\"\n\
         [[alerts.notify]]\nname = \"home\"\nkind = \"mqtt\"\n\
         [[alerts.notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\n",
        rules.path()
    ));
    let mut sub = admin_sub(&perch)
        .args(["-t", "perch/alerts/#", "-v"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = crate::common::output_lines(&mut sub);
    std::thread::sleep(Duration::from_millis(500));
    let write = |v: f64| write_now(&perch, &format!("env,device=freezer temp={v}"));
    write(-5.0);
    let firing = wait_for_alert(&perch, "firing");

    // MQTT: the event on the topic, the state retained under it.
    let next_line = |what: &str| -> (String, serde_json::Value) {
        let line = lines
            .recv_timeout(Duration::from_secs(15))
            .unwrap_or_else(|_| panic!("no MQTT {what}\n{}", perch.log()));
        let (topic, payload) = line.split_once(' ').unwrap();
        (
            topic.to_string(),
            serde_json::from_str(payload).unwrap_or_else(|e| panic!("{line}: {e}")),
        )
    };
    let (topic, event) = next_line("event");
    assert_eq!(topic, "perch/alerts/FreezerWarm");
    assert_eq!(event["status"], "firing");
    assert_eq!(event["labels"]["device"], "freezer");
    assert_eq!(event["annotations"]["summary"], "freezer at -5 °C");
    let fingerprint = event["fingerprint"].as_str().unwrap().to_string();
    let (topic, state) = next_line("state");
    assert_eq!(topic, format!("perch/alerts/FreezerWarm/{fingerprint}"));
    assert_eq!(state["status"], "firing");

    // The webhook comes up a few seconds later and gets the firing alert,
    // once, in Alertmanager's shape.
    std::thread::sleep(Duration::from_secs(3));
    let receiver = Receiver::start(hook_port);
    let got = receiver.wait_for(1, &perch);
    assert_eq!(got[0]["version"], "4");
    assert_eq!(got[0]["status"], "firing");
    assert_eq!(got[0]["receiver"], "hook");
    assert_eq!(got[0]["alerts"][0]["labels"]["alertname"], "FreezerWarm");
    assert_eq!(got[0]["alerts"][0]["startsAt"], firing["activeAt"]);

    // Cold again: resolved, on both.
    write(-20.0);
    let got = receiver.wait_for(2, &perch);
    assert_eq!(got[1]["status"], "resolved");
    assert_ne!(got[1]["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    let (topic, event) = next_line("resolved event");
    assert_eq!(topic, "perch/alerts/FreezerWarm");
    assert_eq!(event["status"], "resolved");
    // Nothing was sent twice.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(receiver.bodies.lock().unwrap().len(), 2);
    let _ = sub.kill();

    // A subscriber that comes later reads the alert's state, retained.
    let late = admin_sub(&perch)
        .args([
            "-t",
            &format!("perch/alerts/FreezerWarm/{fingerprint}"),
            "-C",
            "1",
            "-W",
            "10",
        ])
        .output()
        .unwrap();
    let state: serde_json::Value = serde_json::from_slice(&late.stdout).unwrap();
    assert_eq!(state["status"], "resolved");
}

#[test]
fn history_and_a_rule_preview_say_when_alerts_fired() {
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("freezer.yml"), SERVE_RULES).unwrap();
    let perch = Perch::start_with(&format!(
        "[alerts]\nbuiltin = false\nrule_files = [{:?}]\nevaluation_interval = \"1s\"\n",
        rules.path()
    ));
    for v in [-20.0, -5.0] {
        write_now(&perch, &format!("env,device=freezer temp={v}"));
        std::thread::sleep(Duration::from_secs(1));
    }
    wait_for_alert(&perch, "firing");
    std::thread::sleep(Duration::from_secs(2));

    // The history, from the ALERTS series: pending for `for`, then firing,
    // still open.
    let r = perch.get("/api/v1/alerts/history");
    assert_eq!(r.status, 200, "{}", r.body);
    let episodes = r.json()["data"].as_array().unwrap().clone();
    let of = |state: &str| {
        episodes
            .iter()
            .find(|e| e["state"] == state && e["labels"]["alertname"] == "FreezerWarm")
            .unwrap_or_else(|| panic!("no {state} episode: {episodes:?}"))
            .clone()
    };
    let (pending, firing) = (of("pending"), of("firing"));
    assert_eq!(firing["labels"]["device"], "freezer");
    assert_eq!(firing["labels"]["severity"], "page");
    assert!(firing["labels"].get("alertstate").is_none(), "{firing}");
    assert_eq!(firing["open"], true);
    assert_eq!(pending["open"], false);
    let ms = |v: &serde_json::Value| v.as_i64().unwrap();
    assert!(
        ms(&pending["endMs"]) < ms(&firing["startMs"]),
        "{pending} {firing}"
    );
    // `for: 2s`: fired about 2 s after it became pending.
    let waited = ms(&firing["startMs"]) - ms(&pending["startMs"]);
    assert!((2000..=3000).contains(&waited), "{waited} ms");

    // A preview of the same rule over the last minute: the side compared
    // with a number, the threshold, where it would have fired.
    let now = now_ms() as f64 / 1000.0;
    let body = serde_json::json!({
        "expr": "env_temp{device=\"freezer\"} > -12", "for": "2s",
        "start": format!("{}", now - 60.0), "end": format!("{now}"),
    });
    let r = perch.post(
        "/api/v1/rules/preview",
        "application/json",
        body.to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let p = r.json()["data"].clone();
    assert_eq!(p["plot"], "env_temp{device=\"freezer\"}");
    assert_eq!(p["threshold"]["op"], ">");
    assert_eq!(p["threshold"]["value"], -12.0);
    assert_eq!(p["stepMs"], 1000);
    let fired: Vec<&serde_json::Value> = p["episodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["state"] == "firing")
        .collect();
    assert_eq!(fired.len(), 1, "{p}");
    assert_eq!(fired[0]["labels"]["device"], "freezer");
    assert!(
        (ms(&fired[0]["startMs"]) - ms(&firing["startMs"])).abs() <= 2000,
        "preview {} vs served {}",
        fired[0]["startMs"],
        firing["startMs"]
    );

    // Bad input is refused with what was wrong.
    for (body, says) in [
        (r#"{"expr": "env_temp >"}"#, "invalid parameter"),
        (r#"{"expr": "up", "for": "5x"}"#, "not a valid duration"),
        (
            r#"{"expr": "up", "start": "100", "end": "50"}"#,
            "before start",
        ),
        (r#"{"exp": "up"}"#, "unknown field"),
    ] {
        let r = perch.post("/api/v1/rules/preview", "application/json", body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.body.contains(says), "{body}: {}", r.body);
    }
}

#[test]
fn a_grouping_webhook_gets_one_message_per_group() {
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(
        rules.path().join("cold.yml"),
        "groups:\n  - name: cold\n    rules:\n      - alert: ColdChainWarm\n        \
         expr: env_temp > -12\n        labels:\n          severity: page\n        \
         annotations:\n          summary: '{{ $labels.device }} at {{ $value }} °C'\n",
    )
    .unwrap();
    let hook_port = crate::common::free_port();
    let receiver = Receiver::start(hook_port);
    // Beside it, a chat webhook with a body of its own, per alert.
    let chat_port = crate::common::free_port();
    let chat = Receiver::start(chat_port);
    let perch = Perch::start_with(&format!(
        "[alerts]\nrule_files = [{:?}]\nevaluation_interval = \"1s\"\n\
         [[alerts.notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\n\
         group_by = [\"alertname\"]\ngroup_wait = \"3s\"\ngroup_interval = \"4s\"\n\
         [[alerts.notify]]\nname = \"chat\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{chat_port}/chat\"\n\
         body = '{{\"text\": {{{{ printf \"%s: %s\" $status $annotations.summary | toJson }}}}}}'\n",
        rules.path()
    ));
    write_now(
        &perch,
        "env,device=freezer temp=-5\nenv,device=chest temp=-3",
    );
    // Both in one message, after group_wait.
    let got = receiver.wait_for(1, &perch);
    assert_eq!(got[0]["groupKey"], "{}:{alertname=\"ColdChainWarm\"}");
    assert_eq!(got[0]["groupLabels"]["alertname"], "ColdChainWarm");
    assert_eq!(got[0]["commonLabels"]["severity"], "page");
    let devices: Vec<&str> = got[0]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["labels"]["device"].as_str().unwrap())
        .collect();
    assert_eq!(devices, ["chest", "freezer"]);
    let mut texts: Vec<String> = chat
        .wait_for(2, &perch)
        .iter()
        .map(|b| b["text"].as_str().unwrap().to_string())
        .collect();
    texts.sort();
    assert_eq!(
        texts,
        ["firing: chest at -3 °C", "firing: freezer at -5 °C"]
    );
    // One resolves: the next message, a group_interval later, carries
    // the group as it is now.
    write_now(&perch, "env,device=chest temp=-20");
    let got = receiver.wait_for(2, &perch);
    assert_eq!(got[1]["status"], "firing");
    let states: Vec<(&str, &str)> = got[1]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["labels"]["device"].as_str().unwrap(),
                a["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(states, [("chest", "resolved"), ("freezer", "firing")]);
    // Nothing changed since: nothing more is sent.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(receiver.bodies.lock().unwrap().len(), 2);
}

#[test]
fn rule_files_are_imported_and_exported_as_is_through_the_api() {
    // With an anomaly rule of the config too: its generated group is listed.
    let mut perch = Perch::start_with(
        "[alerts]\nevaluation_interval = \"1s\"\n[[alerts.anomaly]]\nseries = 'env_temp{device=\"d0\"}'\n",
    );
    let text = std::fs::read_to_string(fixtures().join("iot_rules.yml")).unwrap();
    let yaml = [("Content-Type", "application/yaml")];
    let put = |name: &str, body: &str| {
        perch.request_as(
            perch.auth.as_deref(),
            "PUT",
            &format!("/api/v1/rules/files/{name}"),
            &yaml,
            Some(body),
        )
    };
    let r = put("kitchen", &text);
    assert_eq!(r.status, 200, "{}", r.body);
    // Exported exactly as imported: comments, order and quoting kept.
    let r = perch.get("/api/v1/rules/files/kitchen");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, text);
    assert_eq!(
        perch.get("/api/v1/rules/files").json()["data"],
        serde_json::json!(["kitchen"])
    );
    let groups = perch.get("/api/v1/rules").json()["data"]["groups"].clone();
    let names: Vec<(&str, &str)> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["file"].as_str().unwrap(), g["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("builtin", "perch"),
            ("anomaly", "anomalies"),
            ("api:kitchen", "kitchen"),
            ("api:kitchen", "anomalies")
        ]
    );
    let anomaly = &groups[1]["rules"][0];
    assert_eq!(
        anomaly["labels"]["series"], "env_temp{device=\"d0\"}",
        "{anomaly}"
    );

    // A broken file is refused with its lines, and the good one stays.
    let r = put(
        "kitchen",
        "groups:\n  - name: k\n    rules:\n      - alert: X\n        expr: rate(x[5m]\n",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("kitchen:5:15: could not parse expression"),
        "{}",
        r.body
    );
    assert_eq!(perch.get("/api/v1/rules/files/kitchen").body, text);
    assert_eq!(put("two%20words", &text).status, 400);

    // A viewer reads but cannot change them.
    let viewer = perch.api_token("viewer");
    let bearer = format!("Bearer {viewer}");
    let r = perch.request_as(
        Some(&bearer),
        "PUT",
        "/api/v1/rules/files/x",
        &yaml,
        Some(text.as_str()),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = perch.request_as(
        Some(&bearer),
        "GET",
        "/api/v1/rules/files/kitchen",
        &[],
        None::<&str>,
    );
    assert_eq!(r.status, 200);

    // Kept across a restart; then removed.
    perch.stop();
    perch.restart();
    assert_eq!(perch.get("/api/v1/rules/files/kitchen").body, text);
    assert_eq!(
        perch
            .request("DELETE", "/api/v1/rules/files/kitchen", None)
            .status,
        204
    );
    assert_eq!(perch.get("/api/v1/rules/files/kitchen").status, 404);
    let groups = perch.get("/api/v1/rules").json()["data"]["groups"].clone();
    assert_eq!(groups.as_array().unwrap().len(), 2, "{groups}");
}

/// A rule is a query like any other: held to the query limits, its error
/// shown as the rule's health; and a notification target that accepts
/// connections but never answers delays neither the evaluation nor other
/// targets.
#[test]
fn an_expensive_rule_is_bounded_and_a_hanging_target_delays_nothing() {
    if !crate::common::have_mosquitto() {
        return;
    }
    // Accepts and never answers.
    let hang = TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_port = hang.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for c in hang.incoming().flatten() {
            keep.lock().unwrap().push(c);
        }
    });
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(
        rules.path().join("r.yml"),
        "groups:\n  - name: g\n    rules:\n      - alert: Greedy\n        expr: count(env_temp) > 0\n      - alert: Warm\n        expr: env_temp{device=\"d0\"} > 0\n",
    )
    .unwrap();
    let perch = Perch::start_with(&format!(
        "[query]\nmax_samples = 10\n[alerts]\nrule_files = [{:?}]\nevaluation_interval = \"1s\"\n\
         [[alerts.notify]]\nname = \"stuck\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{hang_port}/\"\n\
         [[alerts.notify]]\nname = \"home\"\nkind = \"mqtt\"\n",
        rules.path()
    ));
    let sub = admin_sub(&perch)
        .args(["-t", "perch/alerts/Warm", "-C", "1", "-W", "30"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let now = now_ms() / 1000;
    let lines: String = (0..20)
        .map(|i| format!("env,device=d{i} temp=5 {now}\n"))
        .collect();
    assert_eq!(
        perch.post("/write?precision=s", "text/plain", lines).status,
        204
    );

    // Warm fires on time and reaches MQTT while the webhook hangs.
    let firing = wait_for_alert(&perch, "firing");
    assert_eq!(firing["labels"]["alertname"], "Warm");
    let out = sub.wait_with_output().unwrap();
    let event: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(event["status"], "firing");
    let deadline = Instant::now() + Duration::from_secs(15);
    while held.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the webhook was not tried");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Greedy touches more samples than query.max_samples allows: an
    // error of that rule, shown in its health, never a firing alert.
    let rules = perch.get("/api/v1/rules").json();
    let greedy = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .find(|r| r["name"] == "Greedy")
        .unwrap();
    assert_eq!(greedy["health"], "err", "{greedy}");
    assert!(
        greedy["lastError"].as_str().unwrap().contains("samples"),
        "{greedy}"
    );
    assert_eq!(greedy["alerts"].as_array().unwrap().len(), 0);
    // Evaluation goes on while the webhook hangs.
    let before = rules["data"]["groups"][0]["lastEvaluation"].clone();
    let deadline = Instant::now() + Duration::from_secs(15);
    while perch.get("/api/v1/rules").json()["data"]["groups"][0]["lastEvaluation"] == before {
        assert!(Instant::now() < deadline, "no evaluation since {before}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Debian's Alertmanager, on loopback, without clustering.
struct Alertmanager {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    fn start() -> Option<Alertmanager> {
        if !have_command("prometheus-alertmanager") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n",
        )
        .unwrap();
        let port = crate::common::free_port();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let am = Alertmanager {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while am.alerts().is_none() {
            assert!(Instant::now() < deadline, "Alertmanager did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(am)
    }

    /// Its `/api/v2/alerts` (active, not resolved).
    fn alerts(&self) -> Option<serde_json::Value> {
        let r = ureq::get(&format!("http://127.0.0.1:{}/api/v2/alerts", self.port))
            .call()
            .ok()?;
        let text = r.into_body().read_to_string().ok()?;
        serde_json::from_str(&text).ok()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn alerts_reach_a_real_alertmanager_and_resolve_there() {
    let Some(am) = Alertmanager::start() else {
        return;
    };
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("freezer.yml"), SERVE_RULES).unwrap();
    let perch = Perch::start_with(&format!(
        "[alerts]\nrule_files = [{:?}]\nevaluation_interval = \"1s\"\n\
         [[alerts.notify]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:{}\"\n",
        rules.path(),
        am.port
    ));
    let write = |v: f64| write_now(&perch, &format!("env,device=freezer temp={v}"));
    write(-5.0);
    let firing = wait_for_alert(&perch, "firing");
    let wait_am = |want: usize| -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = am.alerts().unwrap_or_default();
            let n = got.as_array().map_or(0, Vec::len);
            if n == want {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "Alertmanager has {got}, not {want} alerts\n{}",
                perch.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let got = wait_am(1);
    let a = &got[0];
    assert_eq!(a["labels"]["alertname"], "FreezerWarm");
    assert_eq!(a["labels"]["device"], "freezer");
    assert_eq!(a["annotations"]["summary"], "freezer at -5 °C");
    assert_eq!(a["status"]["state"], "active");
    // Alertmanager writes the time with its own precision.
    let starts = a["startsAt"].as_str().unwrap();
    let active = firing["activeAt"].as_str().unwrap();
    assert_eq!(&starts[..19], &active[..19], "{a}");

    // Resolved in perch: resolved in Alertmanager (gone from its active list).
    write(-20.0);
    wait_am(0);
}

#[test]
fn alerts_by_e_mail_over_starttls_with_a_password() {
    if !have_command("openssl")
        || Command::new("/usr/bin/python3")
            .args(["-c", "import aiosmtpd"])
            .status()
            .map_or(true, |s| !s.success())
    {
        crate::common::missing_peer("python3-aiosmtpd");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let smtp_port = crate::common::free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smtp_server.py");
    let mut server = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(smtp_port.to_string())
        .arg(dir.path())
        .args(["perch-alerts", "mail-secret"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.path().join("ready").exists() {
        assert!(Instant::now() < deadline, "the SMTP server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("freezer.yml"), SERVE_RULES).unwrap();
    let perch = Perch::start_with(&format!(
        "[alerts]\nrule_files = [{:?}]\nevaluation_interval = \"1s\"\n\
         [[alerts.notify]]\nname = \"mail\"\nkind = \"email\"\nurl = \"smtp://127.0.0.1:{smtp_port}\"\n\
         from = \"perch@example.org\"\nto = [\"kitchen@example.org\", \"me@example.org\"]\n\
         username = \"perch-alerts\"\npassword = \"mail-secret\"\nca_file = {:?}\n",
        rules.path(),
        dir.path().join("ca.pem"),
    ));
    let write = |v: f64| write_now(&perch, &format!("env,device=freezer temp={v}"));
    let mail = |n: usize| -> String {
        let path = dir.path().join("mail").join(format!("{n:04}.eml"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !path.exists() {
            assert!(Instant::now() < deadline, "no e-mail {n}\n{}", perch.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        std::fs::read_to_string(path).unwrap()
    };
    write(-5.0);
    let firing = mail(0);
    assert!(firing.contains("X-Authenticated: True"), "{firing}");
    assert!(
        firing.contains("X-Envelope-From: perch@example.org"),
        "{firing}"
    );
    assert!(
        firing.contains("X-Envelope-To: kitchen@example.org,me@example.org"),
        "{firing}"
    );
    assert!(
        firing.contains("Subject: [FIRING] FreezerWarm device=freezer severity=page"),
        "{firing}"
    );
    assert!(firing.contains("freezer at -5 °C"), "{firing}");
    write(-20.0);
    let resolved = mail(1);
    assert!(
        resolved.contains("Subject: [RESOLVED] FreezerWarm"),
        "{resolved}"
    );
    assert!(resolved.contains("Resolved at "), "{resolved}");
    // The password is nowhere in what perch logged.
    assert!(!perch.log().contains("mail-secret"));
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn silences_and_an_offline_device_hold_notifications_back() {
    if !crate::common::have_mosquitto() {
        return;
    }
    let rules = tempfile::tempdir().unwrap();
    // DeviceOffline first in its group: it holds back the other alerts of
    // its device (the built-in rule has the same name).
    std::fs::write(
        rules.path().join("r.yml"),
        "groups:\n  - name: g\n    rules:\n      - alert: DeviceOffline\n        expr: env_up == 0\n\
         \x20     - alert: Warm\n        expr: env_temp > 0\n",
    )
    .unwrap();
    let perch = Perch::start_with(&format!(
        "[alerts]\nrule_files = [{:?}]\nevaluation_interval = \"1s\"\n\
         [[alerts.notify]]\nname = \"home\"\nkind = \"mqtt\"\n",
        rules.path()
    ));
    let mut sub = admin_sub(&perch)
        .args(["-t", "perch/alerts/+", "-v"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = crate::common::output_lines(&mut sub);
    std::thread::sleep(Duration::from_millis(500));

    // A silence for the fridge, made before anything fires.
    let ends = chrono::Utc::now() + chrono::Duration::minutes(10);
    let r = perch.request(
        "POST",
        "/api/v1/silences",
        Some(&format!(
            r#"{{"matchers":[{{"name":"device","value":"fridge","isRegex":false}}],"endsAt":"{}","createdBy":"test","comment":"defrosting"}}"#,
            ends.to_rfc3339()
        )),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let silence_id = r.json()["silenceID"].as_str().unwrap().to_string();
    let listed = perch.get("/api/v1/silences").json();
    assert_eq!(listed[0]["status"]["state"], "active", "{listed}");
    assert_eq!(listed[0]["comment"], "defrosting");

    let now = now_ms() / 1000;
    let body = format!(
        "env,device=freezer temp=5,up=0 {now}\nenv,device=fridge temp=5,up=1 {now}\nenv,device=oven temp=5,up=1 {now}\n"
    );
    assert_eq!(
        perch.post("/write?precision=s", "text/plain", body).status,
        204
    );

    // Within a few evaluations: the oven's Warm and the freezer's
    // DeviceOffline are sent; the fridge is silenced, the freezer's Warm
    // held back because the freezer is offline.
    let mut got: Vec<(String, String)> = Vec::new();
    // Until the two expected messages came (however loaded the machine),
    // then 3 s more for anything that should not come.
    let mut deadline = Instant::now() + Duration::from_secs(30);
    let mut settled = false;
    while Instant::now() < deadline {
        if !settled && got.len() >= 2 {
            settled = true;
            deadline = Instant::now() + Duration::from_secs(3);
        }
        if let Ok(l) = lines.recv_timeout(Duration::from_millis(200)) {
            let (topic, payload) = l.split_once(' ').unwrap();
            let v: serde_json::Value = serde_json::from_str(payload).unwrap();
            got.push((
                topic.to_string(),
                v["labels"]["device"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    got.sort();
    assert_eq!(
        got,
        [
            (
                "perch/alerts/DeviceOffline".to_string(),
                "freezer".to_string()
            ),
            ("perch/alerts/Warm".to_string(), "oven".to_string()),
        ],
        "{}",
        perch.log()
    );
    // Both still fire and show: held back from notifications only.
    let firing = perch.get("/api/v1/alerts").json()["data"]["alerts"].clone();
    assert_eq!(firing.as_array().unwrap().len(), 4, "{firing}");

    // Expiring the silence sends the fridge's alert, once.
    let r = perch.request("DELETE", &format!("/api/v1/silences/{silence_id}"), None);
    assert_eq!(r.status, 204, "{}", r.body);
    let line = lines
        .recv_timeout(Duration::from_secs(10))
        .expect("the fridge's alert after the silence");
    assert!(
        line.starts_with("perch/alerts/Warm ") && line.contains("\"fridge\""),
        "{line}"
    );
    let _ = sub.kill();
}

/// Debian's Prometheus evaluating the same rule file over the same samples
/// (perch forwards what it is sent to it with remote write): the same
/// alerts fire, with the same labels, annotations and value, and resolve.
#[test]
fn the_same_alerts_as_a_running_prometheus_over_the_same_samples() {
    if !have_command("prometheus") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("freezer.yml");
    std::fs::write(&rules, SERVE_RULES).unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  evaluation_interval: 1s\nrule_files:\n  - {}\n",
            rules.display()
        ),
    )
    .unwrap();
    let prom_port = crate::common::free_port();
    let mut prometheus = Command::new("prometheus")
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .arg(format!("--config.file={}", config.display()))
        .arg("--web.enable-remote-write-receiver")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let prom = format!("http://127.0.0.1:{prom_port}");
    let get = |url: &str| -> Option<serde_json::Value> {
        let text = ureq::get(url)
            .call()
            .ok()?
            .into_body()
            .read_to_string()
            .ok()?;
        serde_json::from_str(&text).ok()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(&format!("{prom}/api/v1/status/buildinfo")).is_none() {
        assert!(Instant::now() < deadline, "Prometheus did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Only the input series go over: each side computes its own ALERTS.
    let perch = Perch::start_with(&format!(
        "[alerts]\nbuiltin = false\nrule_files = [{:?}]\nevaluation_interval = \"1s\"\n\
         [[forward]]\nname = \"prometheus\"\nkind = \"remote_write\"\nurl = \"{prom}/api/v1/write\"\nmatch = ['env_temp']\n",
        rules
    ));
    let write = |v: f64| {
        write_now(
            &perch,
            &format!("env,device=freezer temp={v}\nenv,device=fridge temp=4"),
        )
    };
    // (labels, annotations, value) of the firing alerts, sorted.
    let firing = |alerts: &serde_json::Value| -> Vec<String> {
        let mut v: Vec<String> = alerts
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(|a| a["state"] == "firing")
            .map(|a| format!("{} {} {}", a["labels"], a["annotations"], a["value"]))
            .collect();
        v.sort();
        v
    };
    let both_firing = |want: usize| -> (Vec<String>, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let p = firing(&perch.get("/api/v1/alerts").json()["data"]["alerts"]);
            let q = firing(
                &get(&format!("{prom}/api/v1/alerts")).unwrap_or_default()["data"]["alerts"],
            );
            if p.len() == want && q.len() == want {
                return (p, q);
            }
            assert!(
                Instant::now() < deadline,
                "perch {p:?}, Prometheus {q:?}, not {want} firing each\n{}",
                perch.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    write(-5.0);
    let (p, q) = both_firing(1);
    assert_eq!(p, q);
    assert!(
        p[0].contains("freezer at -5 °C") && p[0].contains("\"-5e+00\""),
        "{p:?}"
    );
    write(-20.0);
    let (p, q) = both_firing(0);
    assert_eq!(p, q);
    let _ = prometheus.kill();
    let _ = prometheus.wait();
}
