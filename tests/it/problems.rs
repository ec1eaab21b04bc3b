//! Issue 15 end to end: failures show up where people look. Failed MQTT and
//! HTTP sign-ins, ACL refusals, refused writes and unreadable MQTT payloads
//! are listed by `/api/v1/problems` (the Overview's "Recent problems"), with
//! who, where and why, identical ones counted in one entry.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{basic, have_mosquitto, Perch};
use serde_json::Value;

const PASSWORD: &str = "secret-pass";

fn add_user(p: &Perch, name: &str, role: &str, extra: &[&str]) {
    let mut args = vec!["user", "add", name, "--role", role, "--password", PASSWORD];
    args.extend_from_slice(extra);
    let (code, out, err) = p.cli(&args, None);
    assert_eq!(code, 0, "{out}{err}");
}

fn problems(p: &Perch) -> Vec<Value> {
    let r = p.get("/api/v1/problems");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json().as_array().expect("a list").clone()
}

/// The problems of `kind` that `matches` accepts, once there are `n` of them
/// or the wait is over.
fn wait_for(p: &Perch, kind: &str, n: usize, matches: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found: Vec<Value> = problems(p)
            .into_iter()
            .filter(|e| e["kind"] == kind && matches(e))
            .collect();
        if found.len() >= n || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// mosquitto_pub as `user` with `password`; returns its exit code.
fn mosquitto_pub(p: &Perch, user: &str, password: &str, args: &[&str]) -> i32 {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &p.mqtt_port.to_string()])
        .args(["-u", user, "-P", password])
        .args(args)
        .output()
        .expect("mosquitto_pub")
        .status
        .code()
        .unwrap_or(-1)
}

#[test]
fn mqtt_failures_are_listed_with_who_where_and_why() {
    if !have_mosquitto() {
        return;
    }
    let p = Perch::start();
    add_user(&p, "admin", "admin", &[]);
    add_user(&p, "dev1", "device", &["--topic", "sensors/dev1/#"]);
    assert!(problems(&p).is_empty(), "a fresh perch has no problems");

    // Three wrong passwords, each a new mosquitto_pub with a client id of
    // its own: one entry, counted three times.
    const N: u64 = 3;
    for i in 0..N {
        let id = format!("try-{i}");
        let args = ["-i", id.as_str(), "-t", "sensors/dev1/t", "-m", "1"];
        let code = mosquitto_pub(&p, "dev1", "wrong", &args);
        assert_eq!(code, 4, "bad user name or password");
    }
    assert_eq!(mosquitto_pub(&p, "ghost", "x", &["-t", "a", "-m", "1"]), 4);
    let logins = wait_for(&p, "mqtt_sign_in", 2, |_| true);
    let dev1: Vec<&Value> = logins.iter().filter(|e| e["who"] == "dev1").collect();
    assert_eq!(dev1.len(), 1, "aggregated: {logins:?}");
    let e = dev1[0];
    assert_eq!(e["count"], N, "{e}");
    assert_eq!(e["address"], "127.0.0.1", "{e}");
    assert_eq!(e["why"], "wrong password", "{e}");
    assert_eq!(e["what"], "MQTT sign-in refused", "{e}");
    assert_eq!(e["client_id"], "try-2", "the last attempt's: {e}");
    assert_eq!(e["where"], "127.0.0.1, client try-2", "{e}");
    assert!(e["first_ms"].as_i64().unwrap() <= e["last_ms"].as_i64().unwrap());
    let ghost = logins.iter().find(|e| e["who"] == "ghost").expect("ghost");
    assert_eq!(ghost["why"], "unknown user", "{ghost}");
    assert_eq!(ghost["count"], 1);

    // A publish outside the device's topics: refused, and named.
    assert_eq!(
        mosquitto_pub(
            &p,
            "dev1",
            PASSWORD,
            &[
                "-q",
                "1",
                "-i",
                "dev1-board",
                "-t",
                "sensors/dev2/temp",
                "-m",
                "5"
            ]
        ),
        0
    );
    let refused = wait_for(&p, "mqtt_publish_refused", 1, |_| true);
    assert_eq!(refused.len(), 1, "{refused:?}");
    let e = &refused[0];
    assert_eq!(e["topic"], "sensors/dev2/temp", "{e}");
    assert_eq!(e["who"], "dev1", "{e}");
    assert_eq!(e["address"], "127.0.0.1", "{e}");
    assert_eq!(e["client_id"], "dev1-board", "{e}");
    assert_eq!(e["why"], "topic outside the account's topics", "{e}");

    // A subscription outside them too.
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &p.mqtt_port.to_string()])
        .args(["-u", "dev1", "-P", PASSWORD, "-t", "sensors/#", "-W", "3"])
        .output()
        .expect("mosquitto_sub");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("denied"),
        "{out:?}"
    );
    let subs = wait_for(&p, "mqtt_subscribe_refused", 1, |_| true);
    assert_eq!(subs.len(), 1, "{subs:?}");
    assert_eq!(subs[0]["topic"], "sensors/#", "{}", subs[0]);
    assert_eq!(subs[0]["who"], "dev1", "{}", subs[0]);

    // A payload claiming JSON that does not parse stores nothing: listed.
    // What is deliberately not stored (an availability word) and what is
    // stored are not.
    for (topic, payload) in [
        ("lab/broken", r#"{"t": 21"#),
        ("lab/status", "offline"),
        ("lab/temp", "21.5"),
    ] {
        assert_eq!(
            mosquitto_pub(
                &p,
                "admin",
                PASSWORD,
                &["-i", "lab-1", "-t", topic, "-m", payload]
            ),
            0
        );
    }
    let unreadable = wait_for(&p, "unreadable_payload", 1, |_| true);
    assert_eq!(unreadable.len(), 1, "{unreadable:?}");
    let e = &unreadable[0];
    assert_eq!(e["topic"], "lab/broken", "{e}");
    assert_eq!(e["who"], "admin", "{e}");
    assert_eq!(e["address"], "127.0.0.1", "{e}");
    assert_eq!(e["client_id"], "lab-1", "{e}");
    assert!(
        e["why"].as_str().unwrap().starts_with("invalid JSON"),
        "{e}"
    );
    // The stored reading went through (and so the availability word, sent
    // before it, was read and not listed).
    let deadline = Instant::now() + Duration::from_secs(15);
    while p.export(r#"temp{topic="lab/temp"}"#).is_empty() {
        assert!(Instant::now() < deadline, "lab/temp never stored");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !problems(&p).iter().any(|e| e["topic"] == "lab/status"),
        "an availability word is not a problem"
    );

    // Newest first.
    let all = problems(&p);
    let times: Vec<i64> = all.iter().map(|e| e["last_ms"].as_i64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    assert_eq!(all[0]["kind"], "unreadable_payload");
}

#[test]
fn http_failures_are_listed_with_who_where_and_why() {
    let p = Perch::start();
    add_user(&p, "watcher", "viewer", &[]);
    add_user(&p, "sensor", "device", &[]);

    // Two failed Basic logins (fewer than the rate limiter's five per
    // address): one entry, counted twice.
    for _ in 0..2 {
        let r = p.get_auth("/api/v1/labels", common::ADMIN, "nope");
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let basic_fail = wait_for(&p, "http_sign_in", 1, |e| e["who"] == common::ADMIN);
    assert_eq!(basic_fail.len(), 1, "{basic_fail:?}");
    let e = &basic_fail[0];
    assert_eq!(e["count"], 2, "{e}");
    assert_eq!(e["address"], "127.0.0.1", "{e}");
    assert_eq!(e["why"], "wrong password (Basic auth)", "{e}");
    assert_eq!(e["what"], "HTTP sign-in refused", "{e}");

    // The sign-in page, with a user that does not exist.
    let r = p.request_as(
        None,
        "POST",
        "/api/v1/auth/login",
        &[("Content-Type", "application/json")],
        Some(br#"{"username":"nobody","password":"x"}"#.as_slice()),
    );
    assert_eq!(r.status, 401, "{}", r.body);
    let page = wait_for(&p, "http_sign_in", 1, |e| e["who"] == "nobody");
    assert_eq!(page.len(), 1, "{page:?}");
    assert_eq!(page[0]["why"], "unknown user (sign-in page)", "{}", page[0]);

    // An API token that does not exist.
    let r = p.request_as(
        Some("Bearer not-a-token"),
        "GET",
        "/api/v1/labels",
        &[],
        None::<&[u8]>,
    );
    assert_eq!(r.status, 401, "{}", r.body);
    let token = wait_for(&p, "http_sign_in", 1, |e| {
        e["why"] == "invalid or deleted API token"
    });
    assert_eq!(token.len(), 1, "{token:?}");
    assert_eq!(token[0]["who"], "anonymous");

    // A viewer writing: refused for its role, with the route.
    let r = p.request_as(
        Some(&basic("watcher", PASSWORD)),
        "POST",
        "/write",
        &[],
        Some(b"m v=1".as_slice()),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let role = wait_for(&p, "http_sign_in", 1, |e| e["who"] == "watcher");
    assert_eq!(role.len(), 1, "{role:?}");
    assert_eq!(role[0]["route"], "/write", "{}", role[0]);
    assert_eq!(
        role[0]["why"], "viewer accounts may read and watch, not write",
        "{}",
        role[0]
    );

    // Refused writes: the route and the reason the client was given.
    let r = p.request_as(
        Some(&basic("sensor", PASSWORD)),
        "POST",
        "/write",
        &[],
        Some(b"this is not line protocol".as_slice()),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let told = r.json()["error"].as_str().unwrap().to_string();
    let writes = wait_for(&p, "write_refused", 1, |e| e["route"] == "/write");
    assert_eq!(writes.len(), 1, "{writes:?}");
    let e = &writes[0];
    assert_eq!(e["why"], told.as_str(), "{e}");
    assert_eq!(e["who"], "sensor", "{e}");
    assert_eq!(e["address"], "127.0.0.1", "{e}");
    assert_eq!(e["where"], "127.0.0.1, /write", "{e}");

    let r = p.post("/api/v1/import", "application/json", "{not json\n");
    assert_eq!(r.status, 400, "{}", r.body);
    let import = wait_for(&p, "write_refused", 1, |e| e["route"] == "/api/v1/import");
    assert_eq!(import.len(), 1, "{import:?}");
    assert_eq!(import[0]["who"], common::ADMIN);
    assert_eq!(
        import[0]["why"].as_str(),
        r.json()["error"].as_str(),
        "{}",
        import[0]
    );

    // Admins only: the user names people tried say which accounts exist.
    // Nor do those attempts reach the recent warnings viewers read.
    assert_eq!(
        p.get_auth("/api/v1/problems", "watcher", PASSWORD).status,
        403
    );
    let events = p.get_auth("/api/v1/events", "watcher", PASSWORD);
    assert_eq!(events.status, 200);
    assert!(!events.body.contains("nobody"), "{}", events.body);
    assert_eq!(
        p.get_auth("/api/v1/problems", "sensor", PASSWORD).status,
        403
    );
}
