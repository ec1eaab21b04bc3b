//! Issue 3 end to end: Debian's mosquitto clients (and rumqttc for WebSocket)
//! against the real binary; payloads become series, rules apply, retained
//! messages survive restarts, QoS 2 and wills work, auth and ACLs hold, and
//! bad input gets a protocol answer or a disconnect while nothing is lost.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{now_ms, Perch};
use mqtt::wire::{frame as packet, string as mqtt_string};

const CONFIG: &str = r#"
[storage]
retention = "20y"

[mqtt]
max_payload_bytes = "64KiB"
max_topics = 1000

[[mqtt.rules]]
topic = "station/{station}"
drop_values = [-1, -999]
timestamp_field = "time"

[[mqtt.rules]]
topic = "sites/{site}/{device}/#"
"#;

use common::have_mosquitto;

fn start() -> Perch {
    let p = Perch::start_with(CONFIG);
    let add = |name: &str, role: &str, extra: &[&str]| {
        let mut args = vec![
            "user",
            "add",
            name,
            "--role",
            role,
            "--password",
            "secret-pass",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = p.cli(&args, None);
        assert_eq!(code, 0, "{out}{err}");
    };
    add("admin", "admin", &[]);
    add("viewer", "viewer", &[]);
    add(
        "dev1",
        "device",
        &["--topic", "sensors/dev1/#", "--topic", "cmd/dev1"],
    );
    p
}

/// Runs mosquitto_pub as `user` (or anonymously); returns (exit code, stderr).
fn publish(p: &Perch, user: Option<&str>, args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &p.mqtt_port.to_string()]);
    if let Some(u) = user {
        cmd.args(["-u", u, "-P", "secret-pass"]);
    }
    let out = cmd.args(args).output().expect("mosquitto_pub");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A mosquitto_sub whose output lines arrive on a channel.
struct Subscriber {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Subscriber {
    fn start(p: &Perch, user: Option<&str>, args: &[&str]) -> Subscriber {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &p.mqtt_port.to_string()]);
        if let Some(u) = user {
            cmd.args(["-u", u, "-P", "secret-pass"]);
        }
        let mut child = cmd
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub");
        let rx = common::output_lines(&mut child);
        // Give it time to connect and subscribe.
        std::thread::sleep(Duration::from_millis(400));
        Subscriber { child, lines: rx }
    }

    fn next(&self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }

    fn expect(&self, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Some(l) = self.next(Duration::from_millis(200)) {
                if l == want {
                    return;
                }
                seen.push(l);
            }
        }
        panic!("did not receive {want:?}; got {seen:?}");
    }

    /// Waits for the client to exit by itself.
    fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn kill9(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls the export until `selector` has `n` samples (or times out).
fn wait_for(p: &Perch, selector: &str, n: usize) -> Vec<(serde_json::Value, Vec<i64>, Vec<f64>)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = p.export(selector);
        let count: usize = got.iter().map(|s| s.1.len()).sum();
        if count >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_payload_shape_becomes_series() {
    if !have_mosquitto() {
        return;
    }
    let p = start();
    let pubm = |topic: &str, msg: &str| {
        let (code, err) = publish(&p, Some("admin"), &["-q", "1", "-t", topic, "-m", msg]);
        assert_eq!(code, 0, "{err}");
    };
    pubm("a/b/temperature", " 21.5\n");
    pubm("a/b/door", "on");
    pubm(
        "plant/env",
        r#"{"env":{"co2":612,"ok":true},"name":"x","list":[1,2]}"#,
    );
    let t0 = now_ms() - 5000;
    pubm(
        "plant/batch",
        &format!(r#"[{{"v":1,"ts":{t0}}},{{"v":2,"ts":{}}}]"#, t0 + 1000),
    );
    pubm("pi/stats", "system,host=edge01 cpu_percent=12.5,mem_total=3977560064i,mem_used=1048576000i,mem_percent=26.4");
    pubm(
        "pi/json",
        r#"{"host": "edge01", "cpu_percent": 12.5, "mem_total": 3977560064, "mem_used": 1048576000, "mem_percent": 26.4}"#,
    );
    pubm(
        "arduino/pcroom",
        r#"[{"type": "Metric", "metric": "mqtt.home.pcroom", "timestamp": 1346846400, "value": 22.5, "tags": {"type": "temperature", "loc": "pcroom"}},
            {"type": "Metric", "metric": "mqtt.home.pcroom", "timestamp": 1346846400, "value": 18.2, "tags": {"type": "humidity", "loc": "pcroom"}},
            {"type": "Metric", "metric": "mqtt.home.pcroom", "timestamp": 1346846400, "value": 22.3, "tags": {"type": "dust", "loc": "pcroom"}}]"#,
    );
    pubm("a/b/garbage", "this is not a number");

    let t = wait_for(&p, "temperature", 1);
    assert_eq!(t[0].0["topic"], "a/b/temperature");
    assert_eq!(t[0].2, vec![21.5]);
    assert_eq!(wait_for(&p, "door", 1)[0].2, vec![1.0]);
    assert_eq!(wait_for(&p, "env_co2", 1)[0].2, vec![612.0]);
    assert_eq!(wait_for(&p, "env_ok", 1)[0].2, vec![1.0]);
    let batch = wait_for(&p, "v", 2);
    assert_eq!(
        batch[0].1,
        vec![t0, t0 + 1000],
        "arrays of objects, element by element"
    );
    assert_eq!(batch[0].2, vec![1.0, 2.0]);
    assert!(p.export("name").is_empty(), "strings are not samples");
    assert!(
        p.export("list").is_empty(),
        "arrays inside objects are not samples"
    );
    let lp = wait_for(&p, r#"system_mem_total{host="edge01"}"#, 1);
    assert_eq!(lp[0].2, vec![3977560064.0]);
    assert_eq!(lp[0].0["topic"], "pi/stats");
    assert_eq!(
        wait_for(&p, r#"cpu_percent{topic="pi/json"}"#, 1)[0].2,
        vec![12.5]
    );
    let otsdb = wait_for(&p, r#"mqtt_home_pcroom{type="temperature"}"#, 1);
    assert_eq!(otsdb[0].0["loc"], "pcroom");
    assert_eq!(otsdb[0].0["topic"], "arduino/pcroom");
    assert_eq!(otsdb[0].1, vec![1_346_846_400_000]);
    assert_eq!(otsdb[0].2, vec![22.5]);
    // The unparsed payload is kept as a message and counted.
    let msgs = p.get("/api/v1/messages?topic=a/b/garbage").json();
    assert_eq!(msgs["data"][0]["payload"], "this is not a number");
}

#[test]
fn rules_capture_labels_drop_sentinels_and_take_the_time_field() {
    if !have_mosquitto() {
        return;
    }
    let p = start();
    let record = r#"{"device_id":"RaspberryPi","status":1,"time":"2017-09-18T08:52:56.794724369Z","lat":35.17959,"lon":126.90822,"alcohol_gas":9,"co_gas":-1,"temp":-999,"light":554,"dust":0.05}"#;
    assert_eq!(
        publish(
            &p,
            Some("admin"),
            &["-q", "1", "-t", "station/JNU_rasp", "-m", record]
        )
        .0,
        0
    );
    let light = wait_for(&p, "light", 1);
    assert_eq!(light[0].0["station"], "JNU_rasp");
    assert_eq!(light[0].1, vec![1_505_724_776_794]);
    assert_eq!(light[0].2, vec![554.0]);
    assert_eq!(wait_for(&p, "status", 1)[0].2, vec![1.0]);
    assert!(p.export("co_gas").is_empty(), "-1 is a sentinel");
    assert!(p.export("temp").is_empty(), "-999 is a sentinel");
    let ts = now_ms();
    let msg = format!(r#"{{"temp": 21.53, "ts": {ts}}}"#);
    assert_eq!(
        publish(&p, Some("admin"), &["-t", "sites/s0/d7/env", "-m", &msg]).0,
        0
    );
    let t = wait_for(&p, "temp", 1);
    assert_eq!(t[0].0["site"], "s0");
    assert_eq!(t[0].0["device"], "d7");
    assert_eq!(t[0].1, vec![ts]);
}

#[test]
fn retained_messages_survive_a_restart() {
    if !have_mosquitto() {
        return;
    }
    let mut p = start();
    assert_eq!(
        publish(
            &p,
            Some("admin"),
            &["-r", "-q", "1", "-t", "home/door", "-m", "open"]
        )
        .0,
        0
    );
    assert_eq!(
        publish(&p, Some("admin"), &["-r", "-t", "home/lamp", "-m", "on"]).0,
        0
    );
    // An empty retained payload clears the topic.
    assert_eq!(
        publish(&p, Some("admin"), &["-r", "-t", "home/lamp", "-n"]).0,
        0
    );
    let s = Subscriber::start(
        &p,
        Some("viewer"),
        &["-t", "home/#", "-F", "%r %t %p", "-C", "1"],
    );
    s.expect("1 home/door open");
    drop(s);
    assert!(p.stop().success());
    p.restart();
    let s = Subscriber::start(
        &p,
        Some("viewer"),
        &["-t", "home/#", "-F", "%r %t %p", "-W", "2"],
    );
    s.expect("1 home/door open");
    assert!(
        s.next(Duration::from_millis(1500))
            .is_none_or(|l| !l.contains("lamp")),
        "cleared retained stays cleared"
    );
}

#[test]
fn qos2_and_last_will() {
    if !have_mosquitto() {
        return;
    }
    let p = start();
    let s = Subscriber::start(
        &p,
        Some("admin"),
        &["-q", "2", "-t", "q2/#", "-t", "wills/#", "-F", "%q %t %p"],
    );
    assert_eq!(
        publish(
            &p,
            Some("admin"),
            &["-q", "2", "-t", "q2/x", "-m", "exactly once"]
        )
        .0,
        0
    );
    s.expect("2 q2/x exactly once");
    // A client that dies without DISCONNECT has its will published.
    let mut dying = Subscriber::start(
        &p,
        Some("dev1"),
        &[
            "-t",
            "sensors/dev1/in",
            "--will-topic",
            "sensors/dev1/status",
            "--will-payload",
            "gone",
            "--will-qos",
            "1",
            "-k",
            "60",
        ],
    );
    let w = Subscriber::start(
        &p,
        Some("admin"),
        &["-t", "sensors/dev1/status", "-F", "%t %p"],
    );
    dying.kill9();
    w.expect("sensors/dev1/status gone");
    // A clean disconnect publishes no will.
    let mut clean = Subscriber::start(
        &p,
        Some("dev1"),
        &[
            "-t",
            "sensors/dev1/in",
            "--will-topic",
            "sensors/dev1/status",
            "--will-payload",
            "clean?",
            "-C",
            "1",
        ],
    );
    assert_eq!(
        publish(&p, Some("dev1"), &["-t", "sensors/dev1/in", "-m", "bye"]).0,
        0
    );
    // -C 1: it disconnects cleanly after one message.
    assert!(clean.wait_exit(Duration::from_secs(10)));
    assert!(
        w.next(Duration::from_millis(1500)).is_none(),
        "no will after a clean disconnect"
    );
}

#[test]
fn authentication_and_topic_acls() {
    if !have_mosquitto() {
        return;
    }
    let p = start();
    // Anonymous clients are refused with "not authorized" (mosquitto_pub
    // exits with the CONNACK code, 5), a wrong password with "bad user name
    // or password" (4).
    let (code, err) = publish(&p, None, &["-t", "x", "-m", "1"]);
    assert_eq!(code, 5, "{err}");
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &p.mqtt_port.to_string(),
            "-u",
            "admin",
            "-P",
            "wrong",
            "-t",
            "x",
            "-m",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    // A device publishes within its filters only; the rest is dropped.
    let all = Subscriber::start(&p, Some("admin"), &["-t", "#", "-F", "%t %p"]);
    assert_eq!(
        publish(
            &p,
            Some("dev1"),
            &["-q", "1", "-t", "sensors/dev2/temp", "-m", "66"]
        )
        .0,
        0
    );
    assert_eq!(
        publish(
            &p,
            Some("dev1"),
            &["-q", "1", "-t", "sensors/dev1/temp", "-m", "42"]
        )
        .0,
        0
    );
    all.expect("sensors/dev1/temp 42");
    assert_eq!(
        wait_for(&p, r#"temp{topic="sensors/dev1/temp"}"#, 1)[0].2,
        vec![42.0]
    );
    assert!(
        p.export(r#"temp{topic="sensors/dev2/temp"}"#).is_empty(),
        "refused publish not stored"
    );
    // Viewers may read but not write.
    assert_eq!(
        publish(
            &p,
            Some("viewer"),
            &["-q", "1", "-t", "sensors/dev1/temp", "-m", "7"]
        )
        .0,
        0
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        p.export(r#"temp{topic="sensors/dev1/temp"}"#)[0].2,
        vec![42.0]
    );
    // Subscribing outside the filters is refused in the SUBACK.
    let out = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &p.mqtt_port.to_string(),
            "-u",
            "dev1",
            "-P",
            "secret-pass",
            "-t",
            "sensors/#",
            "-W",
            "3",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("denied"), "{err}");
    // Allowed and refused filters in one SUBSCRIBE: only the allowed one works.
    let mixed = Subscriber::start(
        &p,
        Some("dev1"),
        &["-t", "sensors/#", "-t", "cmd/dev1", "-F", "%t %p"],
    );
    assert_eq!(
        publish(&p, Some("admin"), &["-t", "sensors/dev9/x", "-m", "no"]).0,
        0
    );
    assert_eq!(
        publish(&p, Some("admin"), &["-t", "cmd/dev1", "-m", "reboot"]).0,
        0
    );
    mixed.expect("cmd/dev1 reboot");
}

#[test]
fn anonymous_clients_when_allowed() {
    if !have_mosquitto() {
        return;
    }
    let p = Perch::start_with("[mqtt]\nallow_anonymous = true\n");
    assert_eq!(publish(&p, None, &["-t", "anon/x", "-m", "5"]).0, 0);
    assert_eq!(wait_for(&p, "x", 1)[0].2, vec![5.0]);
}

#[test]
fn websocket_clients_speak_mqtt_too() {
    let p = start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut opts = rumqttc::MqttOptions::new(
            "ws-client",
            format!("ws://127.0.0.1:{}/mqtt", p.ws_port),
            p.ws_port,
        );
        opts.set_transport(rumqttc::Transport::Ws);
        opts.set_credentials("admin", "secret-pass");
        let (client, mut events) = rumqttc::AsyncClient::new(opts, 10);
        client
            .publish(
                "ws/room/temperature",
                rumqttc::QoS::AtLeastOnce,
                false,
                "19.5",
            )
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout(Duration::from_secs(1), events.poll()).await {
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("websocket connection failed: {e}"),
                Err(_) => {}
            }
            assert!(Instant::now() < deadline, "no PUBACK over WebSocket");
        }
    });
    assert_eq!(
        wait_for(&p, r#"temperature{topic="ws/room/temperature"}"#, 1)[0].2,
        vec![19.5]
    );
}

#[test]
fn publish_api_and_explorer() {
    if !have_mosquitto() {
        return;
    }
    let p = start();
    let s = Subscriber::start(&p, Some("viewer"), &["-t", "api/#", "-F", "%r %t %p"]);
    let r = p.post(
        "/api/v1/publish",
        "application/json",
        r#"{"topic":"api/lamp","payload":"1","qos":1,"retain":true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    s.expect("0 api/lamp 1");
    assert_eq!(wait_for(&p, "lamp", 1)[0].2, vec![1.0]);
    let r = p.post(
        "/api/v1/publish",
        "application/json",
        r#"{"topic":"api/#","payload":"1"}"#,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("wildcards"), "{}", r.body);
    let r = p.post(
        "/api/v1/publish",
        "application/json",
        r#"{"topic":"api/x","qos":3}"#,
    );
    assert_eq!(r.status, 400);
    // A viewer may not publish over HTTP either.
    let r = p.post_with_headers(
        "/api/v1/publish",
        &[
            (
                "Authorization",
                &format!(
                    "Basic {}",
                    common::base64_lite::encode("viewer:secret-pass")
                ),
            ),
            ("Content-Type", "application/json"),
        ],
        r#"{"topic":"api/x","payload":"1"}"#,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let tree = p.get("/api/v1/topics").json();
    let api = tree["data"]["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "api")
        .unwrap()
        .clone();
    assert_eq!(api["children"][0]["topic"], "api/lamp");
    assert_eq!(api["children"][0]["retained"], true);
    assert_eq!(api["children"][0]["last"]["payload"], "1");
}

#[test]
fn live_feed_streams_matching_messages() {
    if !have_mosquitto() {
        return;
    }
    let p = start();
    let mut stream = TcpStream::connect(("127.0.0.1", p.http_port)).unwrap();
    write!(
        stream,
        "GET /api/v1/live?topic=live/%23 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nAuthorization: {}\r\n\r\n",
        p.auth.as_deref().unwrap()
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        publish(&p, Some("admin"), &["-t", "other/x", "-m", "no"]).0,
        0
    );
    assert_eq!(
        publish(&p, Some("admin"), &["-t", "live/x", "-m", "hello"]).0,
        0
    );
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !got.contains("hello") && Instant::now() < deadline {
        let n = stream.read(&mut buf).unwrap_or(0);
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        got.contains("event: message") && got.contains(r#""payload":"hello""#),
        "{got}"
    );
    assert!(!got.contains("other/x"), "{got}");
}

// ---- bad input, at the protocol level ----

fn connect_packet(client: &str, user: &str, pass: &str) -> Vec<u8> {
    mqtt::wire::connect("MQTT", 4, 0, client, Some((user, pass)))
}

/// A QoS 0 PUBLISH; the topic as bytes, so that it may be invalid UTF-8.
fn publish_packet(topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_string(&mut body, topic);
    body.extend_from_slice(payload);
    packet(0x30, &body)
}

/// Connects as admin with raw packets; returns the stream after CONNACK.
fn raw_client(p: &Perch, client: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", p.mqtt_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&connect_packet(client, "admin", "secret-pass"))
        .unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).unwrap();
    assert_eq!(ack, [0x20, 2, 0, 0], "CONNACK accepted");
    s
}

/// True once the server has closed the connection.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn bad_packets_get_disconnects_and_nothing_is_lost() {
    if !have_mosquitto() {
        return;
    }
    let p = start();
    assert_eq!(
        publish(&p, Some("admin"), &["-q", "1", "-t", "keep/me", "-m", "1"]).0,
        0
    );
    wait_for(&p, "me", 1);
    // Garbage instead of CONNECT.
    let mut s = TcpStream::connect(("127.0.0.1", p.mqtt_port)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(closed_by_server(&mut s));
    // MQTT 3.1 (MQIsdp): refused with "unacceptable protocol version".
    let mut s = TcpStream::connect(("127.0.0.1", p.mqtt_port)).unwrap();
    let mut body = Vec::new();
    mqtt_string(&mut body, b"MQIsdp");
    body.extend_from_slice(&[3, 2, 0, 60]);
    mqtt_string(&mut body, b"old");
    s.write_all(&packet(0x10, &body)).unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).unwrap();
    assert_eq!(ack, [0x20, 2, 0, 1]);
    // A publish to a wildcard topic, an invalid UTF-8 topic, a truncated
    // packet type, a payload over the limit: each closes that connection.
    for bad in [
        publish_packet(b"a/+/b", b"1"),
        publish_packet(b"a/\xff\xfe", b"1"),
        vec![0xf0, 0x00],
        publish_packet(b"big", &vec![b'x'; 70 * 1024]),
        vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x7f],
    ] {
        let mut s = raw_client(&p, "bad");
        let _ = s.write_all(&bad);
        assert!(
            closed_by_server(&mut s),
            "server kept a connection after {:?}",
            &bad[..bad.len().min(8)]
        );
    }
    // mosquitto_pub with a payload over the limit is disconnected too.
    let big = p.dir.path().join("big.bin");
    std::fs::write(&big, vec![b'7'; 65 * 1024]).unwrap();
    let (code, _) = publish(
        &p,
        Some("admin"),
        &["-q", "1", "-t", "big/x", "-f", big.to_str().unwrap()],
    );
    assert_ne!(code, 0);
    assert!(p.export("x").is_empty());
    // Still serving, nothing lost.
    assert_eq!(p.get("/healthz").status, 200);
    assert_eq!(wait_for(&p, "me", 1)[0].2, vec![1.0]);
    assert_eq!(
        publish(&p, Some("admin"), &["-q", "1", "-t", "keep/me", "-m", "2"]).0,
        0
    );
    assert_eq!(wait_for(&p, "me", 2)[0].2, vec![1.0, 2.0]);
}

#[test]
fn ten_thousand_topics_stay_bounded() {
    let p = start();
    let mut s = raw_client(&p, "many");
    let mut batch = Vec::new();
    for i in 0..10_000 {
        batch.extend_from_slice(&publish_packet(
            format!("many/t{i}/value").as_bytes(),
            format!("{i}").as_bytes(),
        ));
    }
    s.write_all(&batch).unwrap();
    // A PINGREQ answered means everything before it was read.
    s.write_all(&[0xc0, 0]).unwrap();
    let mut pong = [0u8; 2];
    s.read_exact(&mut pong).unwrap();
    assert_eq!(pong, [0xd0, 0]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = p.get("/api/v1/status/tsdb").json();
        if st["data"]["series"].as_u64().unwrap() >= 10_000 {
            break;
        }
        assert!(Instant::now() < deadline, "not all stored: {st}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The explorer keeps at most mqtt.max_topics (1000).
    let tree = p.get("/api/v1/topics?filter=many/%23").json();
    let n = tree["data"]["children"][0]["children"]
        .as_array()
        .map_or(0, |c| c.len());
    assert!(n > 0 && n <= 1000, "explorer holds {n} topics");
}

#[test]
fn a_subscriber_that_never_reads_stalls_nobody() {
    if !have_mosquitto() {
        return;
    }
    let p = start();
    // Subscribes to everything, then never reads its socket.
    let mut stuck = raw_client(&p, "stuck");
    stuck.write_all(&mqtt::wire::subscribe(1, "#", 0)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let healthy = Subscriber::start(&p, Some("admin"), &["-t", "flood/last", "-F", "%p"]);
    // Flood: 2 000 messages of 4 KiB, far more than the stuck socket buffers.
    let mut pubr = raw_client(&p, "flooder");
    let payload = format!(r#"{{"x":1,"pad":"{}"}}"#, "a".repeat(4096)).into_bytes();
    let mut batch = Vec::new();
    for _ in 0..2000 {
        batch.extend_from_slice(&publish_packet(b"flood/x", &payload));
    }
    pubr.write_all(&batch).unwrap();
    pubr.write_all(&publish_packet(b"flood/last", b"done"))
        .unwrap();
    healthy.expect("done");
    // Ingestion went on: every flood message is stored.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: usize = p
            .export(r#"x{topic="flood/x"}"#)
            .iter()
            .map(|s| s.1.len())
            .sum();
        // Same timestamp twice in a millisecond is one sample: count the
        // messages instead.
        let msgs = p.get("/api/v1/topics?filter=flood/x").json();
        let count = msgs["data"]["children"][0]["children"][0]["messages"]
            .as_u64()
            .unwrap_or(0);
        if count == 2000 && got > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "collector saw {count} of 2000");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(stuck);
}

#[test]
fn tls_listener_with_a_configured_certificate() {
    if !have_mosquitto() || Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: needs mosquitto-clients and openssl");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .args([
            "-subj",
            "/CN=perch.local",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:perch.local",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let tls_port = common::free_port();
    let p = Perch::start_with(&format!(
        "[mqtt]\nallow_anonymous = true\ntls_listen = \"127.0.0.1:{tls_port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &tls_port.to_string(), "--cafile"])
        .arg(&cert)
        .args(["-q", "1", "-t", "tls/t/temperature", "-m", "23.5"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        wait_for(&p, r#"temperature{topic="tls/t/temperature"}"#, 1)[0].2,
        vec![23.5]
    );
    // Plain MQTT on the TLS port is not accepted.
    let (code, _) = publish(
        &p,
        None,
        &["-p", &tls_port.to_string(), "-t", "x", "-m", "1"],
    );
    assert_ne!(code, 0);
}

#[test]
fn mqtt5_clients_get_reason_codes() {
    if !have_mosquitto() {
        return;
    }
    let p = start();
    // A refused publish: v5 PUBACK "not authorized", which mosquitto_pub reports.
    let (_, err) = publish(
        &p,
        Some("dev1"),
        &["-V", "mqttv5", "-q", "1", "-t", "sensors/dev2/x", "-m", "1"],
    );
    assert!(err.to_lowercase().contains("not authori"), "{err}");
    assert!(p.export("x").is_empty());
    // Allowed ones work, with v5 properties stripped for v3.1.1 subscribers.
    let v311 = Subscriber::start(&p, Some("admin"), &["-t", "v5/#", "-F", "%t %p"]);
    let (code, err) = publish(
        &p,
        Some("admin"),
        &[
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            "v5/a",
            "-m",
            "7",
            "-D",
            "publish",
            "user-property",
            "k",
            "v",
        ],
    );
    assert_eq!(code, 0, "{err}");
    v311.expect("v5/a 7");
    assert_eq!(wait_for(&p, r#"a{topic="v5/a"}"#, 1)[0].2, vec![7.0]);
}

#[test]
fn keep_alive_and_connection_limits() {
    if !have_mosquitto() {
        return;
    }
    let p = Perch::start_with("[mqtt]\nmax_connections = 2\n");
    let (code, out, err) = p.cli(
        &[
            "user",
            "add",
            "admin",
            "--role",
            "admin",
            "--password",
            "secret-pass",
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    let w = Subscriber::start(&p, Some("admin"), &["-t", "ka/#", "-F", "%t %p"]);
    // A raw client with a 1 s keep-alive and a will, then silence.
    let mut body = Vec::new();
    mqtt_string(&mut body, b"MQTT");
    body.push(4);
    body.push(0b1100_0110); // user, password, will (QoS 0), clean session
    body.extend_from_slice(&1u16.to_be_bytes());
    mqtt_string(&mut body, b"sleepy");
    mqtt_string(&mut body, b"ka/sleepy");
    mqtt_string(&mut body, b"timed out");
    mqtt_string(&mut body, b"admin");
    mqtt_string(&mut body, b"secret-pass");
    let mut s = TcpStream::connect(("127.0.0.1", p.mqtt_port)).unwrap();
    s.write_all(&packet(0x10, &body)).unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).unwrap();
    assert_eq!(ack, [0x20, 2, 0, 0]);
    let started = Instant::now();
    assert!(closed_by_server(&mut s), "silent client not dropped");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "dropped after {:?}",
        started.elapsed()
    );
    w.expect("ka/sleepy timed out");
    // Two connections (the subscriber above and one more) are the limit.
    let _second = raw_client(&p, "second");
    let mut third = TcpStream::connect(("127.0.0.1", p.mqtt_port)).unwrap();
    third
        .write_all(&connect_packet("third", "admin", "secret-pass"))
        .unwrap();
    let mut ack = [0u8; 4];
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    third.read_exact(&mut ack).unwrap();
    assert_eq!(ack, [0x20, 2, 0, 3], "CONNACK server unavailable");
}

#[test]
fn self_metrics_are_served_and_recorded() {
    if !have_mosquitto() {
        return;
    }
    let p = start();
    assert_eq!(
        publish(&p, Some("admin"), &["-t", "m/x", "-m", "not a number"]).0,
        0
    );
    assert_eq!(publish(&p, Some("admin"), &["-t", "m/y", "-m", "1"]).0, 0);
    std::thread::sleep(Duration::from_millis(300));
    let r = p.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let value = |name: &str| -> f64 {
        r.body
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{}", r.body))
    };
    assert!(value("perch_mqtt_messages_received_total") >= 2.0);
    assert_eq!(value("perch_ingest_unparsed_total"), 1.0);
    assert!(value("perch_host_memory_total_bytes") > 0.0);
    assert!(value("perch_storage_series") >= 1.0);
    // The same measurements are stored as series every 10 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.export("perch_mqtt_messages_received_total").is_empty() {
        assert!(Instant::now() < deadline, "self-metrics never recorded");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The last member of a shared subscription leaves with its session kept
/// and a message unacknowledged: the broker goes on routing (rumqttd's
/// router thread used to panic there, taking every client with it).
#[test]
fn a_shared_subscriber_with_a_kept_session_can_leave() {
    let p = start();
    let mut sharer = TcpStream::connect(("127.0.0.1", p.mqtt_port)).unwrap();
    sharer
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut connect = connect_packet("sharer", "admin", "secret-pass");
    // Byte 9 is the connect flags: clean session 0, the session is kept.
    connect[9] &= !0b10;
    sharer.write_all(&connect).unwrap();
    let mut ack = [0u8; 4];
    sharer.read_exact(&mut ack).unwrap();
    assert_eq!(ack, [0x20, 2, 0, 0]);
    sharer
        .write_all(&mqtt::wire::subscribe(1, "$share/g/kept/#", 1))
        .unwrap();
    let mut suback = [0u8; 5];
    sharer.read_exact(&mut suback).unwrap();
    assert_eq!(suback, [0x90, 3, 0, 1, 1]);

    let mut publisher = raw_client(&p, "publisher");
    publisher
        .write_all(&mqtt::wire::publish("kept/a", b"1", 1, 7))
        .unwrap();
    let mut puback = [0u8; 4];
    publisher.read_exact(&mut puback).unwrap();
    assert_eq!(puback, [0x40, 2, 0, 7]);
    // Delivered at QoS 1 and never acknowledged.
    let mut first = [0u8; 1];
    sharer.read_exact(&mut first).unwrap();
    assert_eq!(first[0] & 0xF6, 0x32, "a QoS 1 PUBLISH");
    drop(sharer);
    std::thread::sleep(Duration::from_millis(500));

    let mut after = raw_client(&p, "after");
    after
        .write_all(&mqtt::wire::subscribe(2, "kept/#", 0))
        .unwrap();
    let mut suback = [0u8; 5];
    after.read_exact(&mut suback).unwrap();
    assert_eq!(suback, [0x90, 3, 0, 2, 0]);
    publisher
        .write_all(&mqtt::wire::publish("kept/b", b"2", 0, 0))
        .unwrap();
    let mut first = [0u8; 1];
    after.read_exact(&mut first).unwrap();
    assert_eq!(first[0], 0x30, "the broker still routes");
}

/// A v3.1.1 client that never releases its QoS 2 publishes (no PUBREL)
/// would have the router hold every one of them: past mqtt.max_inflight
/// (100) it is dropped, and what it released before is kept.
#[test]
fn qos2_publishes_never_released_are_bounded() {
    let p = start();
    let mut s = raw_client(&p, "withholder");
    let mut burst = Vec::new();
    for pkid in 1..=101u16 {
        burst.extend(mqtt::wire::publish("withheld/t", b"1", 2, pkid));
    }
    s.write_all(&burst).unwrap();
    // Every one is acknowledged with its PUBREC, none released.
    let mut pubrecs = vec![0u8; 101 * 4];
    s.read_exact(&mut pubrecs).unwrap();
    assert!(pubrecs.chunks(4).all(|rec| rec[0] == 0x50));
    s.write_all(&mqtt::wire::publish("withheld/t", b"1", 2, 102))
        .unwrap();
    assert!(closed_by_server(&mut s), "dropped past 100 unreleased");
    // Logged as the session ends, which may be just after the close.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !p.log().contains("QoS 2 publishes without their PUBREL")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        p.log().contains("QoS 2 publishes without their PUBREL"),
        "{}",
        p.log()
    );
}
