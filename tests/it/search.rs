//! Issue 7 end to end: messages published with Debian's mosquitto_pub to
//! the real binary are found through `/api/v1/search` within the commit
//! interval — words, phrases, topics, JSON keys, time ranges; the index
//! survives a restart and a kill -9 while indexing; a damaged day is set
//! aside and reported; retention deletes whole days by age and by size.

use crate::common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{now_ms, urlencode, Perch};

const CONFIG: &str = r#"
[storage]
retention = "20y"

[search]
commit_interval = "1s"
"#;

const COMMIT: Duration = Duration::from_secs(1);

use common::have_mosquitto;

fn start(config: &str) -> Perch {
    let p = Perch::start_with(config);
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
    p
}

/// mosquitto_pub as admin with `args` (e.g. `-t`, `-m`).
fn publish(p: &Perch, args: &[&str]) {
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &p.mqtt_port.to_string()])
        .args(["-u", "admin", "-P", "secret-pass"])
        .args(args)
        .output()
        .expect("mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `GET /api/v1/search?<params>`; asserts success and returns `data`.
fn search(p: &Perch, params: &str) -> serde_json::Value {
    let r = p.get(&format!("/api/v1/search?{params}"));
    assert_eq!(r.status, 200, "{params}: {}", r.body);
    let v = r.json();
    assert_eq!(v["status"], "success", "{}", r.body);
    v["data"].clone()
}

fn q(query: &str) -> String {
    format!("q={}", urlencode(query))
}

fn total(p: &Perch, params: &str) -> u64 {
    search(p, params)["total"].as_u64().unwrap()
}

/// Waits until `params` finds at least `n` messages; returns how long it took.
fn wait_found(p: &Perch, params: &str, n: u64, within: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let got = total(p, params);
        if got >= n {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < within,
            "{params}: {got} of {n} found after {:?}\n{}",
            t.elapsed(),
            p.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn search_dirs(data_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data_dir.join("search"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn today_dir(data_dir: &Path) -> PathBuf {
    let dirs: Vec<String> = search_dirs(data_dir)
        .into_iter()
        .filter(|d| d.len() == 8)
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    data_dir.join("search").join(&dirs[0])
}

fn status(p: &Perch) -> serde_json::Value {
    let r = p.get("/api/v1/search/status");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["data"].clone()
}

#[test]
fn published_messages_are_found() {
    if !have_mosquitto() {
        return;
    }
    let p = start(CONFIG);
    let t0 = now_ms();
    publish(
        &p,
        &[
            "-i",
            "garage-cam",
            "-t",
            "home/garage/motion",
            "-m",
            "motion detected near the door",
        ],
    );
    let found_after = wait_found(&p, &q("motion"), 1, COMMIT + Duration::from_secs(5));
    assert!(
        found_after < COMMIT + Duration::from_secs(2),
        "found after {found_after:?}, commit interval {COMMIT:?}"
    );
    publish(
        &p,
        &[
            "-i",
            "garage-sensor",
            "-q",
            "1",
            "-t",
            "home/garage/battery",
            "-m",
            r#"{"battery": 12, "state": "low battery", "details": {"cell": "B2"}}"#,
        ],
    );
    publish(&p, &["-r", "-t", "home/kitchen/temp", "-m", "21.5"]);
    publish(
        &p,
        &[
            "-t",
            "home/kitchen/status",
            "-m",
            "firmware 2.4.1 <installed> & running",
        ],
    );
    // A binary payload is counted, not indexed.
    let bin = p.dir.path().join("binary.bin");
    std::fs::write(&bin, [0xffu8, 0xfe, 0x00, 0x81]).unwrap();
    publish(&p, &["-t", "home/garage/raw", "-f", bin.to_str().unwrap()]);
    wait_found(&p, "", 4, Duration::from_secs(10));
    let t1 = now_ms();

    // Words and the hit's fields.
    let d = search(&p, &q("motion"));
    assert_eq!(d["total"], 1, "{d}");
    let hit = &d["hits"][0];
    assert_eq!(hit["topic"], "home/garage/motion");
    assert_eq!(hit["payload"], "motion detected near the door");
    assert_eq!(hit["client_id"], "garage-cam");
    let time = hit["time"].as_i64().unwrap();
    assert!(
        time >= t0 - 1000 && time <= t1 + 1000,
        "{time} not in {t0}..{t1}"
    );
    assert!(
        hit["highlight"].as_str().unwrap().contains("<b>motion</b>"),
        "{hit}"
    );
    // Highlights are HTML-escaped.
    let d = search(&p, &q("firmware"));
    let h = d["hits"][0]["highlight"].as_str().unwrap();
    assert!(h.contains("&lt;installed&gt; &amp;"), "{h}");

    // Phrases: JSON values are words in key order.
    assert_eq!(total(&p, &q("\"low battery\"")), 1);
    assert_eq!(total(&p, &q("\"battery low\"")), 0);
    assert_eq!(total(&p, &q("payload:\"low battery\"")), 1);
    // JSON keys, nested ones by leaf and by path, case-insensitively.
    assert_eq!(total(&p, &q("field:battery")), 1);
    assert_eq!(total(&p, &q("field:Cell")), 1);
    assert_eq!(total(&p, &q("field:details.cell")), 1);
    assert_eq!(total(&p, &q("field:motion")), 0);
    assert_eq!(total(&p, &q("B2")), 1);
    // Topics: words and exact.
    assert_eq!(total(&p, &q("topic:garage")), 2);
    assert_eq!(total(&p, &q("topic:kitchen")), 2);
    assert_eq!(total(&p, &q("topic_exact:home/garage/motion")), 1);
    assert_eq!(total(&p, &q("topic_exact:home/garage")), 0);
    assert_eq!(total(&p, &q("topic_exact:/home\\/kitchen\\/.*/")), 2);
    // Boolean operators, client ids, qos and retained flags.
    assert_eq!(total(&p, &q("topic:garage AND NOT motion")), 1);
    assert_eq!(total(&p, &q("motion OR firmware")), 2);
    assert_eq!(total(&p, &q("client_id:garage-sensor")), 1);
    assert_eq!(total(&p, &q("qos:1")), 1);
    assert_eq!(total(&p, &q("retained:true")), 1);
    // Numbers are text too (search.index_numeric defaults to true).
    assert_eq!(total(&p, &q("21.5")), 1);
    assert_eq!(total(&p, &q("*")), 4);

    // Time ranges: parameters in seconds or RFC 3339, `time:` in ms.
    let secs = |ms: i64| format!("{:.3}", ms as f64 / 1000.0);
    assert_eq!(total(&p, &format!("q=motion&end={}", secs(t0 - 60_000))), 0);
    assert_eq!(
        total(
            &p,
            &format!("q=motion&start={}&end={}", secs(t0 - 1000), secs(t1 + 1000))
        ),
        1
    );
    assert_eq!(total(&p, &format!("q=*&start={}", secs(t1 + 60_000))), 0);
    assert_eq!(
        total(&p, &q(&format!("time:[{} TO {}]", t0 - 1000, t1 + 1000))),
        4
    );
    assert_eq!(
        total(&p, &q(&format!("motion AND time:[0 TO {}]", t0 - 60_000))),
        0
    );

    // Newest first; limit and offset; relevance.
    let d = search(&p, "q=*&limit=2");
    let hits = d["hits"].as_array().unwrap();
    assert_eq!((d["total"].as_u64(), hits.len()), (Some(4), 2));
    assert!(hits[0]["time"].as_i64() >= hits[1]["time"].as_i64());
    let second = search(&p, "q=*&limit=1&offset=1");
    assert_eq!(second["hits"][0], hits[1]);
    let d = search(&p, &format!("{}&sort=relevance", q("battery OR garage")));
    assert_eq!(d["hits"][0]["topic"], "home/garage/battery", "{d}");
    assert!(d["hits"][0]["score"].as_f64().unwrap() > 0.0);

    // Bad queries and parameters: 400 with the reason.
    for bad in [
        q("\"unclosed"),
        q("nosuchfield:x"),
        q("qos:high"),
        "q=x&sort=newest".to_string(),
        "q=x&limit=-1".to_string(),
        "q=x&start=yesterday".to_string(),
        "q=x&start=2000&end=1000".to_string(),
    ] {
        let r = p.get(&format!("/api/v1/search?{bad}"));
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        let v = r.json();
        assert_eq!(v["status"], "error");
        assert_eq!(v["errorType"], "bad_data");
        assert!(!v["error"].as_str().unwrap().is_empty());
    }
    let r = p.get(&format!("/api/v1/search?{}", q("nosuchfield:x")));
    assert!(r.body.contains("nosuchfield"), "{}", r.body);

    // Histogram: every message in one of the buckets.
    let r = p.get(&format!(
        "/api/v1/search/histogram?q=*&start={}&end={}&step=1s",
        secs(t0 - 5000),
        secs(t1 + 5000)
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    let h = r.json()["data"].clone();
    assert_eq!(h["total"], 4, "{h}");
    let buckets = h["buckets"].as_array().unwrap();
    let sum: u64 = buckets.iter().map(|b| b[1].as_u64().unwrap()).sum();
    assert_eq!(sum, 4);
    assert_eq!(buckets[0][0].as_i64(), Some(t0 - 5000));
    assert_eq!(buckets[1][0].as_i64(), Some(t0 - 4000));
    let r = p.get("/api/v1/search/histogram?q=garage&step=0");
    assert_eq!(r.status, 400, "{}", r.body);
    let r = p.get("/api/v1/search/histogram?q=garage&start=0&end=100000000&step=1ms");
    assert_eq!(r.status, 400, "{}", r.body);
    let r = p.get("/api/v1/search/histogram?q=garage");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["total"], 2);

    // Status and self-metrics count the binary payload.
    let s = status(&p);
    assert_eq!(s["skippedBinary"], 1, "{s}");
    assert_eq!(s["indexed"], 4, "{s}");
    assert_eq!(s["problems"].as_array().unwrap().len(), 0, "{s}");
    let m = p.get("/metrics").body;
    assert!(m.contains("perch_search_messages_indexed_total 4"), "{m}");
    assert!(
        m.contains("perch_search_messages_skipped_total{reason=\"binary\"} 1"),
        "{m}"
    );
}

#[test]
fn series_search_for_autocomplete() {
    let p = Perch::start_with(CONFIG);
    let lines = "room_temperature,room=garage value=1\n\
                 room_temperature,room=kitchen value=2\n\
                 temperature_outside value=3\n\
                 humidity,room=garage value=4\n";
    let r = p.post("/write", "text/plain", lines);
    assert_eq!(r.status, 204, "{}", r.body);
    let get = |query: &str| {
        let r = p.get(&format!("/api/v1/series/search?{query}"));
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["data"].clone()
    };
    let d = get("q=temp");
    assert_eq!(d["total"], 3, "{d}");
    // A name starting with the word ranks before one containing it.
    assert_eq!(d["series"][0]["__name__"], "temperature_outside", "{d}");
    let d = get(&format!("q={}", urlencode("temperature GARAGE")));
    assert_eq!(d["total"], 1, "{d}");
    assert_eq!(d["series"][0]["room"], "garage");
    let d = get("q=garage&limit=1");
    assert_eq!(d["total"], 2);
    assert_eq!(d["series"].as_array().unwrap().len(), 1);
    assert_eq!(get("q=nothing")["total"], 0);
}

#[test]
fn restart_and_kill9_keep_the_index() {
    if !have_mosquitto() {
        return;
    }
    let mut p = start(CONFIG);
    publish(
        &p,
        &["-t", "door/front", "-m", "front door opened by alice"],
    );
    wait_found(&p, &q("alice"), 1, Duration::from_secs(10));

    // A clean stop commits; the restart finds everything.
    // QoS 1: acknowledged means perch has it (a QoS 0 publish can still be
    // in the socket when SIGTERM lands, and lost by design).
    publish(
        &p,
        &[
            "-q",
            "1",
            "-t",
            "door/back",
            "-m",
            "back door opened by bob",
        ],
    );
    assert!(p.stop().success(), "{}", p.log());
    assert!(p.log().contains("search index committed"), "{}", p.log());
    p.restart();
    assert_eq!(total(&p, &q("alice")), 1);
    assert_eq!(total(&p, &q("bob")), 1);

    // kill -9 in the middle of a stream of messages.
    let n = 20_000;
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &p.mqtt_port.to_string()])
        .args(["-u", "admin", "-P", "secret-pass", "-t", "stream/x", "-l"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for i in 0..n {
            if writeln!(stdin, "stream message number {i} of the flood").is_err() {
                break;
            }
        }
    });
    wait_found(&p, &q("flood"), 1, Duration::from_secs(30));
    p.kill9();
    let _ = writer.join();
    let _ = child.kill();
    let _ = child.wait();
    p.restart();
    let s = status(&p);
    assert_eq!(s["problems"].as_array().unwrap().len(), 0, "{s}");
    assert!(
        !search_dirs(&p.data_dir)
            .iter()
            .any(|d| d.contains("damaged")),
        "{:?}",
        search_dirs(&p.data_dir)
    );
    let kept = total(&p, &q("flood"));
    assert!(kept >= 1 && kept <= n, "{kept}");
    assert_eq!(total(&p, &q("alice")), 1);
    // And it keeps indexing.
    publish(
        &p,
        &["-t", "door/front", "-m", "front door opened by carol"],
    );
    wait_found(&p, &q("carol"), 1, Duration::from_secs(10));
    assert_eq!(total(&p, &q("flood")), kept);
}

#[test]
fn a_damaged_day_is_set_aside_and_reported() {
    if !have_mosquitto() {
        return;
    }
    let mut p = start(CONFIG);
    publish(&p, &["-t", "door/front", "-m", "opened by alice"]);
    wait_found(&p, &q("alice"), 1, Duration::from_secs(10));
    assert!(p.stop().success());
    let day = today_dir(&p.data_dir);
    std::fs::write(day.join("meta.json"), b"{ not json").unwrap();
    p.restart();
    let s = status(&p);
    let problems = s["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{s}");
    assert!(
        problems[0].as_str().unwrap().contains("started afresh"),
        "{s}"
    );
    assert!(p.log().contains("search index damaged"), "{}", p.log());
    assert!(
        search_dirs(&p.data_dir)
            .iter()
            .any(|d| d.contains(".damaged-")),
        "{:?}",
        search_dirs(&p.data_dir)
    );
    publish(&p, &["-t", "door/front", "-m", "opened by bob"]);
    wait_found(&p, &q("bob"), 1, Duration::from_secs(10));
    assert_eq!(total(&p, &q("alice")), 0);
}

/// Copies a directory tree (the index files of a day).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn retention_deletes_whole_days() {
    if !have_mosquitto() {
        return;
    }
    let mut p = start(CONFIG);
    publish(&p, &["-t", "door/front", "-m", "opened by alice"]);
    wait_found(&p, &q("alice"), 1, Duration::from_secs(10));
    assert!(p.stop().success());
    // Three older days holding the same messages as today.
    let today = today_dir(&p.data_dir);
    let root = p.data_dir.join("search");
    for d in ["20200101", "20200102", "20200103"] {
        copy_dir(&today, &root.join(d));
    }
    // By age: 2020 is older than 30 days (the default retention).
    std::fs::write(&p.config_path, format!("{CONFIG}retention = \"30d\"\n")).unwrap();
    p.restart();
    assert_eq!(
        search_dirs(&p.data_dir).len(),
        1,
        "{:?}",
        search_dirs(&p.data_dir)
    );
    assert!(p.log().contains("deleted a day of the search index"));
    assert_eq!(total(&p, &q("alice")), 1);
    assert!(p.stop().success());

    // By size: a budget of two and a half days keeps the newest two.
    for d in ["20200101", "20200102"] {
        copy_dir(&today, &root.join(d));
    }
    let day_bytes: u64 = std::fs::read_dir(&today)
        .unwrap()
        .flatten()
        .map(|e| {
            use std::os::unix::fs::MetadataExt;
            e.metadata().unwrap().blocks() * 512
        })
        .sum();
    std::fs::write(
        &p.config_path,
        format!(
            "{CONFIG}retention = \"20y\"\nmax_disk_bytes = {}\n",
            day_bytes * 5 / 2
        ),
    )
    .unwrap();
    p.restart();
    let dirs = search_dirs(&p.data_dir);
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    assert_eq!(dirs[0], "20200102", "{dirs:?}");
    // Both days answer: the copy and today.
    assert_eq!(total(&p, &q("alice")), 2);
    let s = status(&p);
    assert_eq!(s["periods"].as_array().unwrap().len(), 2, "{s}");
}

#[test]
fn search_can_be_disabled() {
    let p = Perch::start_with("[search]\nenabled = false\n");
    let r = p.get("/api/v1/search?q=x");
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("search.enabled"), "{}", r.body);
    assert!(!p.data_dir.join("search").exists());
}
