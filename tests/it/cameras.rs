//! Cameras end to end: a real RTSP camera (GStreamer's RTSP server from
//! Debian, `tests/fixtures/rtsp_cam.py`, an H.264 SMPTE test pattern) in
//! front of the real perch binary; what perch relays is checked with ffprobe
//! and ffmpeg, snapshots by decoding them.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::camera::{have_gstreamer, TestCamera};
use common::{free_port, Perch};
use serde_json::Value;

fn camera_toml(name: &str, url: &str, extra: &str) -> String {
    format!("[[cameras]]\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n")
}

fn status(p: &Perch, name: &str) -> Value {
    let r = p.get(&format!("/api/v1/cameras/{name}"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["data"].clone()
}

/// Polls the camera's status until `pred` holds.
fn wait_status(p: &Perch, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let s = status(p, name);
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "camera {name} never {what}; status {s}\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_online(p: &Perch, name: &str) -> Value {
    wait_status(p, name, "online", |s| s["status"] == "online")
}

/// ffprobe's view of a file or URL: (codec, width, height, frames counted).
fn probe(input: &str) -> (String, u64, u64, u64) {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-count_frames", "-select_streams", "v:0"]);
    if input.starts_with("http") {
        // A live playlist never ends: count the first 45 frames.
        cmd.args(["-read_intervals", "%+#45"]);
    }
    let out = cmd
        .args([
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
            "-of",
            "json",
            input,
        ])
        .output()
        .expect("ffprobe");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("ffprobe {input}: {}", String::from_utf8_lossy(&out.stderr)));
    let s = &v["streams"][0];
    (
        s["codec_name"].as_str().unwrap_or("").to_string(),
        s["width"].as_u64().unwrap_or(0),
        s["height"].as_u64().unwrap_or(0),
        s["nb_read_frames"]
            .as_str()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
    )
}

/// Decodes a JPEG with ffmpeg to 8-bit grey: (width, height, pixels).
fn decode_jpeg(jpeg: &[u8]) -> (u64, u64, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.jpg");
    std::fs::write(&path, jpeg).unwrap();
    let (codec, w, h, _) = probe(path.to_str().unwrap());
    assert_eq!(codec, "mjpeg");
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len() as u64, w * h);
    (w, h, out.stdout)
}

/// The SMPTE pattern has bars from black to white: a picture of it has a
/// wide spread of brightness, a grey or broken frame has not.
fn assert_test_pattern(pixels: &[u8]) {
    let n = pixels.len() as f64;
    let mean = pixels.iter().map(|&p| p as f64).sum::<f64>() / n;
    let sd = (pixels
        .iter()
        .map(|&p| (p as f64 - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    let (lo, hi) = (*pixels.iter().min().unwrap(), *pixels.iter().max().unwrap());
    assert!(
        sd > 40.0,
        "brightness spread {sd:.1} too small for SMPTE bars"
    );
    assert!(
        lo < 40 && hi > 200,
        "range {lo}..{hi} is not black to white"
    );
}

fn get_bytes(p: &Perch, path: &str) -> (u16, Vec<u8>) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", p.http_port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: {}\r\n\r\n",
        p.auth.as_deref().unwrap_or("none")
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}

/// A WebSocket request with the test admin's credentials.
fn as_admin(p: &Perch, url: &str) -> tungstenite::handshake::client::Request {
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    request
        .headers_mut()
        .insert("Authorization", p.auth.as_deref().unwrap().parse().unwrap());
    request
}

/// A live viewer over WebSocket: the stream description, the init segment
/// and `seconds` of fragments, written into one fMP4 file.
struct Viewed {
    descriptions: Vec<Value>,
    file: Vec<u8>,
    fragments: usize,
}

fn view_live(p: &Perch, name: &str, seconds: u64) -> Viewed {
    let url = format!("ws://127.0.0.1:{}/api/v1/cameras/{name}/live", p.http_port);
    let (mut ws, _) = tungstenite::connect(as_admin(p, &url)).expect("WebSocket connect");
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let mut v = Viewed {
        descriptions: Vec::new(),
        file: Vec::new(),
        fragments: 0,
    };
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut init_seen = false;
    while Instant::now() < until {
        match ws.read().expect("live view ended early") {
            tungstenite::Message::Text(t) => {
                v.descriptions.push(serde_json::from_str(&t).unwrap());
                init_seen = false;
            }
            tungstenite::Message::Binary(b) => {
                // Only the first stream goes into the file.
                if v.descriptions.len() == 1 {
                    v.file.extend_from_slice(&b);
                }
                if init_seen {
                    v.fragments += 1;
                }
                init_seen = true;
            }
            _ => {}
        }
    }
    let _ = ws.close(None);
    v
}

fn probe_bytes(bytes: &[u8], ext: &str) -> (String, u64, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("x.{ext}"));
    std::fs::write(&path, bytes).unwrap();
    probe(path.to_str().unwrap())
}

fn metric(p: &Perch, name: &str, camera: &str) -> f64 {
    let body = p.get("/metrics").body;
    body.lines()
        .find(|l| l.starts_with(&format!("{name}{{camera=\"{camera}\"}}")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} for {camera} in /metrics"))
}

#[test]
fn relays_h264_over_websocket_and_hls_and_takes_scheduled_snapshots() {
    if !have_gstreamer() {
        return;
    }
    let cam = TestCamera::start(free_port(), "640x360", None);
    let p = Perch::start_with(&camera_toml(
        "yard",
        &cam.url(),
        "snapshot_schedule = \"*/2 * * * * *\"",
    ));
    let s = wait_online(&p, "yard");
    assert_eq!(s["width"], 640, "{s}");
    assert_eq!(s["height"], 360, "{s}");
    assert!(s["codec"].as_str().unwrap().starts_with("avc1."), "{s}");
    assert_eq!(s["source"], "config");

    // WebSocket live view: description, init, then H.264 of that size.
    let v = view_live(&p, "yard", 3);
    let d = &v.descriptions[0];
    assert_eq!(d["type"], "stream");
    assert!(
        d["mime"]
            .as_str()
            .unwrap()
            .starts_with("video/mp4; codecs=\"avc1."),
        "{d}"
    );
    assert_eq!(
        (d["width"].as_u64(), d["height"].as_u64()),
        (Some(640), Some(360))
    );
    assert!(
        v.fragments >= 30,
        "only {} fragments in 3 s at 15 fps",
        v.fragments
    );
    let (codec, w, h, frames) = probe_bytes(&v.file, "mp4");
    assert_eq!((codec.as_str(), w, h), ("h264", 640, 360));
    assert!(
        frames >= 30,
        "ffprobe decoded {frames} frames of the live view"
    );

    // Once fps is measured (over a full period), it matches the camera.
    let s = wait_status(&p, "yard", "measured fps", |s| {
        s["fps"].as_f64().unwrap() > 0.0
    });
    let fps = s["fps"].as_f64().unwrap();
    assert!((12.0..=18.0).contains(&fps), "fps {fps}");
    assert!(s["bitrate_bps"].as_f64().unwrap() > 10_000.0, "{s}");

    // HLS: ffprobe plays the playlist over HTTP.
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.get("/api/v1/cameras/yard/hls/index.m3u8").status != 200 {
        assert!(Instant::now() < deadline, "no HLS playlist");
        std::thread::sleep(Duration::from_millis(200));
    }
    let playlist = p.get("/api/v1/cameras/yard/hls/index.m3u8");
    assert!(playlist.body.starts_with("#EXTM3U"), "{}", playlist.body);
    assert!(
        playlist.body.contains("#EXT-X-MAP:URI="),
        "{}",
        playlist.body
    );
    let (codec, w, h, frames) = probe(&p.admin_url("/api/v1/cameras/yard/hls/index.m3u8"));
    assert_eq!((codec.as_str(), w, h), ("h264", 640, 360));
    assert!(frames >= 15, "ffprobe decoded {frames} frames over HLS");

    // Scheduled snapshots, every 2 s, each the size of the stream and a
    // picture of the test pattern.
    let deadline = Instant::now() + Duration::from_secs(30);
    let list = loop {
        let r = p.get("/api/v1/cameras/yard/snapshots");
        assert_eq!(r.status, 200, "{}", r.body);
        let list = r.json()["data"].as_array().unwrap().clone();
        if list.len() >= 3 {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "snapshots: {list:?}\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let ids: Vec<i64> = list.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    for m in &list {
        assert_eq!(m["trigger"], "schedule");
        assert_eq!(
            (m["width"].as_u64(), m["height"].as_u64()),
            (Some(640), Some(360))
        );
    }
    let mut sorted = ids.clone();
    sorted.sort();
    for pair in sorted.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            (1000..=3500).contains(&gap),
            "snapshots {gap} ms apart on a 2 s schedule: {sorted:?}"
        );
    }
    // Each lands within a second of its tick (ticks are on even seconds).
    for id in &sorted {
        assert!(
            id % 2000 < 1000,
            "snapshot {id} is {} ms after its tick",
            id % 2000
        );
    }
    let (st, jpeg) = get_bytes(
        &p,
        &format!("/api/v1/cameras/yard/snapshots/{}.jpg", ids[0]),
    );
    assert_eq!(st, 200);
    let (w, h, pixels) = decode_jpeg(&jpeg);
    assert_eq!((w, h), (640, 360));
    assert_test_pattern(&pixels);
    let (st, latest) = get_bytes(&p, "/api/v1/cameras/yard/latest.jpg");
    assert_eq!(st, 200);
    assert_test_pattern(&decode_jpeg(&latest).2);

    // On demand.
    let r = p.post("/api/v1/cameras/yard/snapshot", "application/json", "");
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["data"]["trigger"], "request");

    // Self-metrics.
    assert_eq!(metric(&p, "perch_camera_up", "yard"), 1.0);
    assert!(metric(&p, "perch_camera_fps", "yard") > 10.0);
}

#[test]
fn ten_viewers_at_once() {
    if !have_gstreamer() {
        return;
    }
    let cam = TestCamera::start(free_port(), "320x240", None);
    // RTP over UDP this time (the others use TCP interleaved).
    let p = Perch::start_with(&camera_toml("porch", &cam.url(), "transport = \"udp\""));
    wait_online(&p, "porch");
    let viewers: Vec<Viewed> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|_| s.spawn(|| view_live(&p, "porch", 4)))
            .collect();
        // While they watch, the status counts them.
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(status(&p, "porch")["viewers"], 10);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for v in &viewers {
        assert!(
            v.fragments >= 40,
            "a viewer got {} fragments in 4 s",
            v.fragments
        );
        let (codec, w, h, frames) = probe_bytes(&v.file, "mp4");
        assert_eq!((codec.as_str(), w, h), ("h264", 320, 240));
        assert!(frames >= 40);
    }
    wait_status(&p, "porch", "without viewers", |s| s["viewers"] == 0);
}

#[test]
fn reconnects_when_the_camera_comes_back_even_at_another_size() {
    if !have_gstreamer() {
        return;
    }
    // The camera is down when perch starts.
    let port = free_port();
    let p = Perch::start_with(&camera_toml(
        "gate",
        &format!("rtsp://127.0.0.1:{port}/cam"),
        "",
    ));
    let s = wait_status(&p, "gate", "reported the refused connection", |s| {
        s["status"] != "online" && !s["last_error"].is_null()
    });
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("refused"),
        "{s}"
    );
    let mut cam = TestCamera::start(port, "640x360", None);
    wait_online(&p, "gate");

    // A viewer watching through the change of size.
    let viewer = std::thread::scope(|sc| {
        let h = sc.spawn(|| {
            let url = format!("ws://127.0.0.1:{}/api/v1/cameras/gate/live", p.http_port);
            let (mut ws, _) = tungstenite::connect(as_admin(&p, &url)).unwrap();
            let mut descriptions = Vec::new();
            let until = Instant::now() + Duration::from_secs(60);
            while Instant::now() < until && descriptions.len() < 2 {
                if let Ok(tungstenite::Message::Text(t)) = ws.read() {
                    descriptions.push(serde_json::from_str::<Value>(&t).unwrap());
                }
            }
            descriptions
        });
        std::thread::sleep(Duration::from_secs(1));
        cam.kill();
        wait_status(&p, "gate", "noticed the camera is gone", |s| {
            s["status"] != "online"
        });
        assert!(p.get("/healthz").status == 200);
        cam = TestCamera::start(port, "320x240", None);
        let s = wait_status(&p, "gate", "online at the new size", |s| {
            s["status"] == "online" && s["width"] == 320
        });
        assert_eq!(s["height"], 240);
        assert!(s["reconnects"].as_u64().unwrap() >= 1, "{s}");
        h.join().unwrap()
    });
    assert_eq!(viewer.len(), 2, "the viewer was not told of the new stream");
    assert_eq!(viewer[1]["width"], 320);
    // Snapshots come from the new stream.
    let r = p.post("/api/v1/cameras/gate/snapshot", "application/json", "");
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["data"]["width"], 320);
    assert!(metric(&p, "perch_camera_reconnects_total", "gate") >= 1.0);
}

#[test]
fn password_protected_camera_and_a_wrong_password() {
    if !have_gstreamer() {
        return;
    }
    let cam = TestCamera::start(free_port(), "320x240", Some("viewer:s3cret-pw"));
    let p = Perch::start();
    // Through the API, with a wrong password.
    let body = format!(
        r#"{{"name":"door","url":"{}","username":"viewer","password":"wrong-pw-123"}}"#,
        cam.url()
    );
    let r = p.post("/api/v1/cameras", "application/json", &body);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["data"]["has_password"], true);
    assert!(!r.body.contains("wrong-pw-123"));
    let s = wait_status(&p, "door", "reported the refused credentials", |s| {
        !s["last_error"].is_null()
    });
    assert_ne!(s["status"], "online");
    let err = s["last_error"].as_str().unwrap();
    assert!(
        err.contains("401") || err.to_lowercase().contains("unauthorized"),
        "{err}"
    );
    // It keeps trying with backoff, not in a tight loop.
    std::thread::sleep(Duration::from_secs(5));
    let reconnects = status(&p, "door")["reconnects"].as_u64().unwrap();
    assert!(reconnects <= 5, "{reconnects} attempts in ~6 s");

    // The right password (a PUT leaving the password out would keep it).
    let body = format!(
        r#"{{"url":"{}","username":"viewer","password":"s3cret-pw"}}"#,
        cam.url()
    );
    let r = p.request("PUT", "/api/v1/cameras/door", Some(&body));
    assert_eq!(r.status, 200, "{}", r.body);
    let s = wait_online(&p, "door");
    assert_eq!(s["width"], 320);
    // Never returned, never logged.
    let all = p.get("/api/v1/cameras").body;
    assert!(
        !all.contains("s3cret-pw") && !all.contains("wrong-pw-123"),
        "{all}"
    );
    assert!(!p.log().contains("s3cret-pw") && !p.log().contains("wrong-pw-123"));

    // API cameras survive a restart; DELETE removes them.
    let mut p = p;
    p.stop();
    p.restart();
    let s = wait_online(&p, "door");
    assert_eq!(s["source"], "api");
    assert_eq!(
        p.request("DELETE", "/api/v1/cameras/door", None).status,
        204
    );
    assert_eq!(p.get("/api/v1/cameras/door").status, 404);
}

#[test]
fn bad_cameras_get_clear_errors_and_perch_keeps_running() {
    // A server that answers with noise.
    let garbage = TcpListener::bind("127.0.0.1:0").unwrap();
    let garbage_port = garbage.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in garbage.incoming().flatten() {
            let mut conn = conn;
            let mut buf = [0u8; 1024];
            let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
            let _ = conn.read(&mut buf);
            let noise: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
            let _ = conn.write_all(&noise);
        }
    });
    let closed_port = free_port();
    let p = Perch::start();
    let add = |name: &str, url: &str, extra: &str| {
        let body = format!(r#"{{"name":"{name}","url":"{url}"{extra}}}"#);
        p.post("/api/v1/cameras", "application/json", &body)
    };
    // Refused at the door, with the key and the reason.
    for (name, url, extra, expect) in [
        ("../etc", "rtsp://127.0.0.1/x", "", "name"),
        ("a/b", "rtsp://127.0.0.1/x", "", "name"),
        ("ok", "http://127.0.0.1/x", "", "url"),
        ("ok", "not a url", "", "url"),
        (
            "ok",
            "rtsp://127.0.0.1/x",
            r#","snapshot_schedule":"every five minutes""#,
            "snapshot_schedule",
        ),
        (
            "ok",
            "rtsp://127.0.0.1/x",
            r#","transport":"carrier-pigeon""#,
            "expected `tcp` or `udp`",
        ),
    ] {
        let r = add(name, url, extra);
        assert_eq!(r.status, 400, "{name} {url} {extra}: {}", r.body);
        assert!(r.body.contains(expect), "{expect} not in {}", r.body);
    }
    let r = p.post("/api/v1/cameras", "application/json", "{not json");
    assert_eq!(r.status, 400);
    assert_eq!(p.get("/api/v1/cameras/..%2Fetc/snapshots").status, 404);
    assert_eq!(p.get("/api/v1/cameras/nope").status, 404);

    // Accepted, but the cameras behind them do not work: each says why.
    let http = format!("rtsp://127.0.0.1:{}/cam", p.http_port);
    for (name, url) in [
        ("closed", format!("rtsp://127.0.0.1:{closed_port}/cam")),
        ("noise", format!("rtsp://127.0.0.1:{garbage_port}/cam")),
        ("notrtsp", http),
        ("nohost", "rtsp://camera.invalid/cam".to_string()),
    ] {
        assert_eq!(add(name, &url, "").status, 201);
    }
    for name in ["closed", "noise", "notrtsp", "nohost"] {
        let s = wait_status(&p, name, "reported an error", |s| {
            !s["last_error"].is_null()
        });
        assert_ne!(s["status"], "online", "{s}");
    }
    // A snapshot from a camera without video: a clear 503, not a hang.
    let r = p.post("/api/v1/cameras/closed/snapshot", "application/json", "");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(p.get("/healthz").status == 200);

    // The config file is checked the same way, at start.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("perch.toml");
    std::fs::write(
        &cfg,
        camera_toml("x", "rtsp://127.0.0.1/x", "snapshot_schedule = \"*/5 * *\""),
    )
    .unwrap();
    let out = Command::new(common::BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("snapshot_schedule"), "{err}");
}

#[test]
fn snapshot_retention_keeps_within_the_byte_budget() {
    if !have_gstreamer() {
        return;
    }
    let cam = TestCamera::start(free_port(), "320x240", None);
    let p = Perch::start_with(&camera_toml(
        "shed",
        &cam.url(),
        "snapshot_schedule = \"* * * * * *\"\nsnapshot_max_bytes = \"40KiB\"",
    ));
    wait_online(&p, "shed");
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let taken = p
            .get("/metrics")
            .body
            .lines()
            .find_map(|l| l.strip_prefix("perch_camera_snapshots_total "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        let s = status(&p, "shed");
        let kept = p.get("/api/v1/cameras/shed/snapshots").json()["data"]
            .as_array()
            .unwrap()
            .len();
        assert!(s["snapshot_bytes"].as_u64().unwrap() <= 40 * 1024, "{s}");
        if taken as usize > kept + 2 && kept >= 1 {
            // The newest are the ones kept.
            let latest = s["latest_snapshot"]["id"].as_i64().unwrap();
            assert!(common::now_ms() - latest < 5_000, "{s}");
            break;
        }
        assert!(Instant::now() < deadline, "taken {taken}, kept {kept}: {s}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Percent-decoding for the report the browser sends.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn chromium_plays_the_live_view_through_media_source_extensions() {
    if !have_gstreamer() {
        return;
    }
    if !Path::new("/usr/bin/chromium").exists() {
        common::missing_peer("/usr/bin/chromium");
        return;
    }
    let cam = TestCamera::start(free_port(), "640x360", None);
    let p = Perch::start_with(&camera_toml("yard", &cam.url(), ""));
    wait_online(&p, "yard");
    // The page reports to this listener.
    let report = TcpListener::bind("127.0.0.1:0").unwrap();
    let report_url = format!(
        "http://127.0.0.1:{}/report",
        report.local_addr().unwrap().port()
    );
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mse_live.html");
    // A page of another origin cannot send credentials with a WebSocket:
    // an API token in the URL stands in.
    let ws = format!(
        "ws://127.0.0.1:{}/api/v1/cameras/yard/live?token={}",
        p.http_port,
        p.api_token("viewer")
    );
    let url = format!(
        "file://{}?ws={}&report={}",
        page.display(),
        common::urlencode(&ws),
        common::urlencode(&report_url)
    );
    let profile = tempfile::tempdir().unwrap();
    let mut browser = Command::new("/usr/bin/chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--autoplay-policy=no-user-gesture-required",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(&url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    report.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let line = loop {
        match report.accept() {
            Ok((mut conn, _)) => {
                conn.set_nonblocking(false).unwrap();
                let mut line = String::new();
                BufReader::new(&mut conn).read_line(&mut line).unwrap();
                break line;
            }
            Err(_) => {
                assert!(Instant::now() < deadline, "the page never reported");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    let _ = browser.kill();
    let _ = browser.wait();
    let query = line
        .split(' ')
        .nth(1)
        .and_then(|path| path.split_once('?'))
        .map(|(_, q)| percent_decode(q))
        .unwrap();
    let r: Value = serde_json::from_str(&query).unwrap();
    assert_eq!(r["error"], "", "{r}");
    assert!(r["mime"].as_str().unwrap().contains("avc1."), "{r}");
    assert_eq!(
        (r["width"].as_u64(), r["height"].as_u64()),
        (Some(640), Some(360)),
        "{r}"
    );
    // Playing, not just buffering: most of the 4 s went by on screen.
    let played = r["played"].as_f64().unwrap();
    assert!(played > 1.5, "played only {played} s: {r}");
}

#[test]
fn only_signed_in_people_watch_once_they_have_accounts() {
    if !have_gstreamer() {
        return;
    }
    let cam = TestCamera::start(free_port(), "320x240", None);
    let p = Perch::start_with(&camera_toml("yard", &cam.url(), ""));
    wait_online(&p, "yard");
    for (name, role) in [("alice", "admin"), ("bob", "viewer"), ("dev1", "device")] {
        let (code, out, err) = p.cli(
            &[
                "user",
                "add",
                name,
                "--role",
                role,
                "--password",
                "pass-word-1",
            ],
            None,
        );
        assert_eq!(code, 0, "{out}{err}");
    }
    // Anonymous: 401 everywhere, with a Basic challenge.
    for path in [
        "/api/v1/cameras",
        "/api/v1/cameras/yard",
        "/api/v1/cameras/yard/hls/index.m3u8",
        "/api/v1/cameras/yard/latest.jpg",
        "/api/v1/cameras/yard/snapshots",
    ] {
        let r = p.get_anon(path);
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    }
    let ws = format!("ws://127.0.0.1:{}/api/v1/cameras/yard/live", p.http_port);
    match tungstenite::connect(&ws) {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("anonymous live view: {:?}", other.map(|_| ())),
    }
    // A device account may publish, not watch.
    assert_eq!(
        p.get_auth("/api/v1/cameras/yard", "dev1", "pass-word-1")
            .status,
        403
    );
    // A viewer watches, over HLS (ffprobe with credentials in the URL) and
    // the live view, but may not change cameras.
    assert_eq!(
        p.get_auth("/api/v1/cameras/yard", "bob", "pass-word-1")
            .status,
        200
    );
    let hls = format!(
        "http://bob:pass-word-1@127.0.0.1:{}/api/v1/cameras/yard/hls/index.m3u8",
        p.http_port
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while p
        .get_auth("/api/v1/cameras/yard/hls/index.m3u8", "bob", "pass-word-1")
        .status
        != 200
    {
        assert!(Instant::now() < deadline, "no HLS playlist");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (codec, w, h, _) = probe(&hls);
    assert_eq!((codec.as_str(), w, h), ("h264", 320, 240));
    // A player with only a read token in the URL gets every segment too.
    let token = p.api_token("viewer");
    let (codec, w, h, _) = probe(&p.url(&format!(
        "/api/v1/cameras/yard/hls/index.m3u8?token={token}"
    )));
    assert_eq!((codec.as_str(), w, h), ("h264", 320, 240));
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(&ws).unwrap();
    request.headers_mut().insert(
        "Authorization",
        format!("Basic {}", common::base64_lite::encode("bob:pass-word-1"))
            .parse()
            .unwrap(),
    );
    let (mut socket, _) = tungstenite::connect(request).expect("viewer's live view");
    match socket.read().unwrap() {
        tungstenite::Message::Text(t) => assert!(t.contains("\"stream\""), "{t}"),
        other => panic!("first message {other:?}"),
    }
    let change = format!(r#"{{"name":"other","url":"{}"}}"#, cam.url());
    let basic = |user: &str| {
        format!(
            "Basic {}",
            common::base64_lite::encode(&format!("{user}:pass-word-1"))
        )
    };
    let r = p.post_with_headers(
        "/api/v1/cameras",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &basic("bob")),
        ],
        &change,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // An admin may.
    let r = p.post_with_headers(
        "/api/v1/cameras",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &basic("alice")),
        ],
        &change,
    );
    assert_eq!(r.status, 201, "{}", r.body);
}
