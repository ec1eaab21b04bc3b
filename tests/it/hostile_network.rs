//! perch on a network that is not friendly: password guessing over MQTT and
//! HTTP, a guesser behind the same address as honest users, clients that
//! stall half-way through a request or a packet, connection floods from one
//! address, and protocol slips. Each test reproduces what a tester found
//! (issue 16) and checks the fix, against the real binary with raw sockets.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{basic, Perch, ADMIN, ADMIN_PASSWORD};

// ---- raw MQTT ----

/// A CONNECT with an empty client id (see [`mqtt::wire::connect`]).
fn connect(name: &str, level: u8, extra_flags: u8, login: Option<(&str, &str)>) -> Vec<u8> {
    mqtt::wire::connect(name, level, extra_flags, "", login)
}

fn mqtt_socket(p: &Perch) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", p.mqtt_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Everything the server sends until it closes the connection (or 30 s).
fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("connection not closed: {e} (got {got:?})"),
        }
    }
}

/// The CONNACK's return code (v3.1.1) or reason code (v5) for `packet`;
/// `None` if the server closed the connection without one.
fn connack_code(p: &Perch, packet: &[u8]) -> Option<u8> {
    let mut s = mqtt_socket(p);
    s.write_all(packet).unwrap();
    let mut head = [0u8; 4];
    match s.read_exact(&mut head) {
        Ok(()) => {
            assert_eq!(head[0], 0x20, "not a CONNACK: {head:?}");
            Some(head[3])
        }
        Err(_) => None,
    }
}

/// Times `f`, which must end with the server closing a connection.
fn closed_within(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

// ---- raw HTTP ----

/// Sends raw bytes and reads the answer: status and body (the server
/// closes these connections, or the answer says its length).
fn raw_http(p: &Perch, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", p.http_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).unwrap();
    read_answer(&mut s)
}

fn read_answer(s: &mut TcpStream) -> (u16, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                let status = head[9..12].parse().unwrap();
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + length]).to_string();
                return (status, body);
            }
        }
        match s.read(&mut buf) {
            Ok(0) => panic!(
                "closed before a whole answer: {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no answer: {e}: {:?}", String::from_utf8_lossy(&got)),
        }
    }
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

fn add_user(p: &Perch, name: &str, role: &str, password: &str) {
    let r = p.request(
        "POST",
        "/api/v1/users",
        Some(&format!(
            r#"{{"name":"{name}","role":"{role}","password":"{password}"}}"#
        )),
    );
    assert_eq!(r.status, 201, "{}", r.body);
}

/// perch's resident memory, from its own `/metrics`.
fn resident_bytes(p: &Perch, auth: &str) -> f64 {
    let r = p.request_as(Some(auth), "GET", "/metrics", &[], None::<&[u8]>);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
        .lines()
        .find_map(|l| l.strip_prefix("perch_process_resident_memory_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .expect("resident memory in /metrics")
}

// ---- the tests ----

/// The MQTT codec catches rumqttd's panics (`crates/mqtt/src/codec.rs`,
/// `catch_unwind`): with `panic = "abort"` a malformed packet from any
/// client would abort the whole appliance instead. As long as the broker
/// relies on that, the release profile — and every profile inheriting
/// from it — must unwind.
#[test]
fn the_release_profile_unwinds_while_the_broker_catches_panics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let codec = std::fs::read_to_string(root.join("crates/mqtt/src/codec.rs")).unwrap();
    assert!(
        codec.contains("catch_unwind"),
        "the codec no longer catches panics: this test can go"
    );
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
    let profiles = manifest.get("profile").and_then(|p| p.as_table());
    let panic_of = |name: &str| {
        profiles
            .and_then(|p| p.get(name))
            .and_then(|p| p.get("panic"))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    // A profile inherits from release directly or through others.
    let inherits_release = |name: &str| {
        let mut name = name.to_string();
        for _ in 0..16 {
            if name == "release" {
                return true;
            }
            match profiles
                .and_then(|p| p.get(&name))
                .and_then(|p| p.get("inherits"))
                .and_then(|v| v.as_str())
            {
                Some(parent) => name = parent.to_string(),
                None => return false,
            }
        }
        false
    };
    let mut checked = vec!["release".to_string()];
    checked.extend(
        profiles
            .into_iter()
            .flat_map(|p| p.keys())
            .filter(|n| *n != "release" && inherits_release(n))
            .cloned(),
    );
    for name in &checked {
        // A profile without its own `panic` has its parent's; release's
        // default is unwind.
        assert_ne!(
            panic_of(name).as_deref(),
            Some("abort"),
            "[profile.{name}] sets panic = \"abort\", but the MQTT broker relies on catch_unwind"
        );
    }
}

/// The tester's finding: 200 wrong-password CONNECTs, 50 at a time, were
/// all checked (argon2) at once — no lockout, RSS from 441 MB to 1.47 GB —
/// and admins could guess over MQTT beyond HTTP's limit. Now the guesses
/// share HTTP's limiter and its bound of two argon2 checks; the guesser's
/// name is held back (over MQTT and HTTP alike), and an honest user at the
/// same address still signs in over both.
#[test]
fn mqtt_password_guessing_is_limited_and_locks_out_only_the_guessed_name() {
    let p = Perch::start();
    add_user(&p, "dev1", "device", "device-pass-1");
    let token = format!("Bearer {}", p.api_token("admin"));
    let before = resident_bytes(&p, &token);
    let started = Instant::now();
    let guess = connect("MQTT", 4, 0, Some((ADMIN, "not-the-password")));
    let mut codes = Vec::new();
    for _wave in 0..4 {
        let wave: Vec<Option<u8>> = std::thread::scope(|scope| {
            let all: Vec<_> = (0..50)
                .map(|_| scope.spawn(|| connack_code(&p, &guess)))
                .collect();
            all.into_iter().map(|h| h.join().unwrap()).collect()
        });
        codes.extend(wave);
    }
    let took = started.elapsed();
    let count = |c: u8| codes.iter().filter(|&&x| x == Some(c)).count();
    // Every guess was refused with a CONNACK: 4 bad user name or password
    // (checked), 5 not authorized (held back unchecked), 3 server
    // unavailable (too many in progress from the address: retry).
    assert_eq!(codes.len(), 200);
    assert_eq!(count(4) + count(5) + count(3), 200, "{codes:?}");
    // Only a handful were checked at all: five failures hold the name back.
    assert!(
        (1..=10).contains(&count(4)),
        "{} checked: {codes:?}",
        count(4)
    );
    assert!(count(5) > 0, "never held back: {codes:?}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    let after = resident_bytes(&p, &token);
    assert!(
        after - before < 150e6,
        "resident memory grew from {before} to {after}"
    );
    // The right password for the guessed name waits too (guessing does not
    // pay), over HTTP as well: one limiter.
    assert_eq!(
        connack_code(&p, &connect("MQTT", 4, 0, Some((ADMIN, ADMIN_PASSWORD)))),
        Some(5)
    );
    let r = p.get("/api/v1/labels");
    assert_eq!(r.status, 429, "{}", r.body);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("too many failed sign-ins"));
    // v5 hears 0x9F connection rate exceeded.
    assert_eq!(
        connack_code(&p, &connect("MQTT", 5, 0, Some((ADMIN, ADMIN_PASSWORD)))),
        Some(0x9F)
    );
    // A neighbour behind the same address signs in over MQTT and HTTP.
    assert_eq!(
        connack_code(&p, &connect("MQTT", 4, 0, Some(("dev1", "device-pass-1")))),
        Some(0)
    );
    let r = p.post_with_headers(
        "/write",
        &[("Authorization", &basic("dev1", "device-pass-1"))],
        "neighbour v=1\n",
    );
    assert_eq!(r.status, 204, "{}", r.body);
    // Tokens are not held back either; the Overview lists the guesses.
    let problems = p.request_as(Some(&token), "GET", "/api/v1/problems", &[], None::<&[u8]>);
    assert_eq!(problems.status, 200, "{}", problems.body);
    assert!(
        problems.body.contains("too many failed sign-ins"),
        "{}",
        problems.body
    );
    assert!(!p.log().contains("panic"), "{}", p.log());
}

/// The tester's finding: four uploads that stop after 3 of their 100
/// declared bytes blocked /write for everyone for over 100 s. Now another
/// client writes at once, and the stalled ones get 408 after
/// `http.body_timeout`.
#[test]
fn stalled_uploads_do_not_block_writes_and_get_408() {
    let p = Perch::start_with("[http]\nbody_timeout = \"6s\"\n");
    add_user(&p, "slow", "device", "slow-pass-1");
    let stalled: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", p.http_port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let head = format!(
                "POST /write HTTP/1.1\r\nHost: perch\r\nAuthorization: {}\r\nContent-Length: 100\r\n\r\nabc",
                basic("slow", "slow-pass-1")
            );
            s.write_all(head.as_bytes()).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    for i in 0..3 {
        let r = p.post("/write", "text/plain", format!("other v={i}\n"));
        assert_eq!(r.status, 204, "{}", r.body);
    }
    // Well within the body timeout: the stalled uploads are still open.
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "writes waited {:?} behind stalled uploads",
        t.elapsed()
    );
    for mut s in stalled {
        let (status, body) = read_answer(&mut s);
        assert_eq!(status, 408, "{body}");
        // In the write API's own shape (InfluxDB 1.x).
        let v = json(&body);
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("did not arrive within http.body_timeout (6s)"),
            "{v}"
        );
    }
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "408 after {:?}",
        t.elapsed()
    );
}

/// The tester's finding: half-sent request headers stayed open over 70 s,
/// without credentials. Now they, and idle connections, are closed after
/// `http.header_timeout`, and one address may hold
/// `http.max_connections_per_client` connections.
#[test]
fn half_sent_headers_idle_and_surplus_http_connections_are_closed() {
    let p = Perch::start_with("[http]\nheader_timeout = \"2s\"\nmax_connections_per_client = 6\n");
    // Surplus connections from one address get 503 with a JSON body.
    let mut held = Vec::new();
    let refused = loop {
        assert!(held.len() <= 6, "more than 6 connections accepted");
        let mut s = TcpStream::connect(("127.0.0.1", p.http_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut byte = [0u8; 1];
        match s.read(&mut byte) {
            // Nothing to say yet: an accepted connection.
            Err(_) => held.push(s),
            Ok(0) => panic!("closed unanswered"),
            Ok(_) => {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
                let mut all = byte.to_vec();
                all.extend(rest);
                break String::from_utf8(all).unwrap();
            }
        }
    };
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
    let body = refused.split_once("\r\n\r\n").unwrap().1;
    assert!(json(body)["error"]
        .as_str()
        .unwrap()
        .contains("http.max_connections_per_client = 6"));
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    // Half-sent headers: closed after the header timeout, unanswered.
    let mut s = TcpStream::connect(("127.0.0.1", p.http_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /api/v1/labels HTTP/1.1\r\nHost: perch\r\nX-Slow: ")
        .unwrap();
    let took = closed_within(|| assert!(until_closed(&mut s).is_empty()));
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(10)).contains(&took),
        "closed after {took:?}"
    );
    // An idle keep-alive connection after its answer: closed as well.
    let mut s = TcpStream::connect(("127.0.0.1", p.http_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: perch\r\n\r\n")
        .unwrap();
    assert_eq!(read_answer(&mut s).0, 200);
    let took = closed_within(|| assert!(until_closed(&mut s).is_empty()));
    assert!(took < Duration::from_secs(10), "closed after {took:?}");
    // Still serving.
    assert_eq!(p.get("/api/v1/labels").status, 200);
}

/// A CONNECT must arrive within `mqtt.connect_timeout`, a packet begun must
/// complete within `mqtt.read_timeout`, and one address may hold
/// `mqtt.max_connections_per_client` connections.
#[test]
fn half_sent_mqtt_packets_and_surplus_connections_are_closed() {
    let p = Perch::start_with(
        "[mqtt]\nconnect_timeout = \"2s\"\nread_timeout = \"2s\"\nmax_connections_per_client = 4\n",
    );
    // Half a CONNECT.
    let mut s = mqtt_socket(&p);
    let full = connect("MQTT", 4, 0, Some((ADMIN, ADMIN_PASSWORD)));
    s.write_all(&full[..10]).unwrap();
    let took = closed_within(|| assert!(until_closed(&mut s).is_empty()));
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(10)).contains(&took),
        "closed after {took:?}"
    );
    // Half a PUBLISH after a good CONNECT (keep-alive 60 s).
    let mut s = mqtt_socket(&p);
    s.write_all(&full).unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).unwrap();
    assert_eq!(ack, [0x20, 2, 0, 0]);
    s.write_all(&[0x30, 100, 0, 3, b'a']).unwrap();
    let took = closed_within(|| {
        until_closed(&mut s);
    });
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(10)).contains(&took),
        "closed after {took:?}"
    );
    let logged = Instant::now();
    while !p.log().contains("(mqtt.read_timeout)") {
        assert!(logged.elapsed() < Duration::from_secs(5), "{}", p.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Four connections from one address; the fifth is closed at once.
    let held: Vec<TcpStream> = (0..4).map(|_| mqtt_socket(&p)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut fifth = mqtt_socket(&p);
    let took = closed_within(|| assert!(until_closed(&mut fifth).is_empty()));
    assert!(took < Duration::from_millis(1500), "closed after {took:?}");
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(connack_code(&p, &full), Some(0));
}

/// The tester's findings: a v3.1.1 CONNECT with a wrong protocol name made
/// perch log a caught panic and send no CONNACK; one with the reserved flag
/// was accepted. Now each gets what the specification says.
#[test]
fn protocol_slips_get_the_answers_the_specifications_give() {
    let p = Perch::start();
    let login = Some((ADMIN, ADMIN_PASSWORD));
    // MQTT-3.1.2-1: another protocol's name; v3.1.1 0x01 unacceptable
    // protocol version, v5 0x84 unsupported protocol version.
    for _ in 0..3 {
        let mut s = mqtt_socket(&p);
        s.write_all(&connect("MQTX", 4, 0, login)).unwrap();
        assert_eq!(until_closed(&mut s), vec![0x20, 2, 0, 1]);
    }
    assert_eq!(connack_code(&p, &connect("MQTX", 5, 0, login)), Some(0x84));
    // MQTT-3.1.2-3: the reserved flag set; v3.1.1 closes without a CONNACK,
    // v5 answers 0x81 malformed packet.
    let mut s = mqtt_socket(&p);
    s.write_all(&connect("MQTT", 4, 1, login)).unwrap();
    assert_eq!(until_closed(&mut s), Vec::<u8>::new());
    let mut s = mqtt_socket(&p);
    s.write_all(&connect("MQTT", 5, 1, login)).unwrap();
    let answer = until_closed(&mut s);
    assert_eq!(&answer[..1], &[0x20]);
    assert_eq!(answer[3], 0x81, "{answer:?}");
    // The same CONNECTs done right are accepted.
    assert_eq!(connack_code(&p, &connect("MQTT", 4, 0, login)), Some(0));
    assert_eq!(connack_code(&p, &connect("MQTT", 5, 0, login)), Some(0));
    std::thread::sleep(Duration::from_millis(300));
    let log = p.log();
    assert!(!log.to_lowercase().contains("panic"), "{log}");
}

/// The tester's findings: 414, 431 and unknown Content-Encoding answers had
/// empty bodies; a 1 MiB measurement name got a 2 MB error body naming the
/// series twice.
#[test]
fn http_refusals_have_small_json_bodies() {
    let p = Perch::start();
    let auth = basic(ADMIN, ADMIN_PASSWORD);
    // 414: a URL over hyper's 64 KiB.
    let long = format!(
        "GET /api/v1/labels?x={} HTTP/1.1\r\nHost: perch\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let (status, body) = raw_http(&p, long.as_bytes());
    assert_eq!(status, 414);
    assert!(json(&body)["error"]
        .as_str()
        .unwrap()
        .contains("URL is too long"));
    assert!(body.len() < 200, "{body}");
    // 431: more headers than hyper reads.
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: perch\r\n");
    for i in 0..120 {
        many.push_str(&format!("X-H{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    let (status, body) = raw_http(&p, many.as_bytes());
    assert_eq!(status, 431);
    assert_eq!(json(&body)["status"], "error");
    // 415: an encoding perch cannot read, in the API's own shape.
    let r = p.post_with_headers(
        "/write",
        &[("Content-Encoding", "br"), ("Authorization", &auth)],
        "x v=1\n",
    );
    assert_eq!(r.status, 415);
    assert_eq!(r.header("accept-encoding"), Some("gzip"));
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains(r#"unsupported Content-Encoding "br""#),
        "{error}"
    );
    let r = p.post_with_headers(
        "/api/v1/query",
        &[("Content-Encoding", "zstd"), ("Authorization", &auth)],
        "query=1",
    );
    assert_eq!(r.status, 415);
    assert_eq!(r.json()["status"], "error");
    // Gzip still works.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"zipped v=1\n").unwrap();
    let r = p.post_with_headers(
        "/write",
        &[("Content-Encoding", "gzip"), ("Authorization", &auth)],
        gz.finish().unwrap(),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    // A 1 MiB measurement name: a small answer naming the series once.
    let name = "m".repeat(1 << 20);
    let r = p.post("/write", "text/plain", format!("{name} v=1\n"));
    assert_eq!(r.status, 400);
    assert!(r.body.len() < 1024, "{} bytes", r.body.len());
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert_eq!(error.matches('…').count(), 1, "{error}");
    assert_eq!(error.matches("series").count(), 1, "{error}");
    let longest_run = error.split(|c| c != 'm').map(str::len).max().unwrap_or(0);
    assert!(longest_run <= 256, "{longest_run}");
    assert!(error.contains("value of label"), "{error}");
    // A long precision is quoted in part only.
    let r = p.post(
        &format!("/write?precision={}", "x".repeat(5000)),
        "text/plain",
        "x v=1\n",
    );
    assert_eq!(r.status, 400);
    assert!(r.body.len() < 200, "{}", r.body);
}
