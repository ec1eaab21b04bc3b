//! Faults against the real binary: torn and damaged files, a disk that
//! fills during checkpoints and compaction (filled by perch itself, or by
//! something else during a checkpoint), the disk budget under fast ingest,
//! timestamps far in the future, a quarantined database on a box that had
//! accounts, and a camera URL carrying its credentials.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::camera::{have_gstreamer, TestCamera};
use common::{free_port, now_ms, Perch, ADMIN, ADMIN_PASSWORD};

const WINDOW_MS: i64 = 2 * 3_600_000;

/// Self-metrics off, so that only what a test writes is stored.
const QUIET: &str = "[storage]\nself_metrics_interval = \"0s\"\n";

/// Bytes under `path` as `du` counts them (allocated blocks, directories
/// included), leaving out the space ballast (`reserve.bin`, not data: space
/// held back on a nearly full partition and given up first).
fn du(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !m.is_dir() {
        return m.blocks() * 512;
    }
    let mut total = m.blocks() * 512;
    if let Ok(rd) = std::fs::read_dir(path) {
        for e in rd.flatten() {
            if e.file_name() == "reserve.bin" {
                continue;
            }
            total += du(&e.path());
        }
    }
    total
}

fn write_lines(p: &Perch, lines: &str) {
    let r = p.post("/write", "text/plain", lines);
    assert_eq!(r.status, 204, "{}", r.body);
}

/// The raw window holding `t` (windows are left-open: `(w, w + 2 h]`).
fn window_of(t: i64) -> i64 {
    (t - 1).div_euclid(WINDOW_MS) * WINDOW_MS
}

/// The WAL segment with the highest number.
fn last_wal_segment(data: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(data.join("wal"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
        .collect();
    segs.sort();
    segs.pop().expect("a non-empty WAL segment")
}

fn problems(p: &Perch) -> String {
    let s = p.get("/api/v1/status/tsdb");
    assert_eq!(s.status, 200, "{}", s.body);
    s.json()["data"]["problems"].to_string()
}

/// Writes the data the damage tests look for: a day-old series in windows
/// of their own, then two blocks in the newest window (two clean stops),
/// then two batches only in the WAL (a kill). Returns (old timestamps,
/// the newest window).
fn data_in_blocks_and_wal(p: &mut Perch) -> (Vec<i64>, i64) {
    let now = now_ms();
    let old: Vec<i64> = (0..100).map(|i| now - 86_400_000 + i * 60_000).collect();
    let body: String = old
        .iter()
        .enumerate()
        .map(|(i, t)| format!("old value={i} {}\n", t * 1_000_000))
        .collect();
    write_lines(p, &body);
    assert!(p.stop().success());
    let w = window_of(now);
    p.restart();
    write_lines(p, &format!("kept value=1 {}\n", (w + 1) * 1_000_000));
    assert!(p.stop().success());
    p.restart();
    write_lines(p, &format!("cut value=2 {}\n", (w + 2) * 1_000_000));
    assert!(p.stop().success());
    p.restart();
    write_lines(p, &format!("walok value=3 {}\n", (w + 3) * 1_000_000));
    std::thread::sleep(Duration::from_millis(500));
    write_lines(p, &format!("waltorn value=4 {}\n", (w + 4) * 1_000_000));
    std::thread::sleep(Duration::from_millis(500));
    p.kill9();
    (old, w)
}

#[test]
fn a_torn_wal_and_a_cut_block_file_are_reported_and_older_data_kept() {
    let mut p = Perch::start_with(
        "[storage]\nflush_interval = \"100ms\"\ncheckpoint_interval = \"1h\"\nself_metrics_interval = \"0s\"\n",
    );
    let (old, w) = data_in_blocks_and_wal(&mut p);
    // A power cut: the WAL's last record torn, the newest block file cut
    // in the middle of its last block.
    let seg = last_wal_segment(&p.data_dir);
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let block = p.data_dir.join("blocks/raw").join(format!("{w}-1.dat"));
    let len = std::fs::metadata(&block).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&block)
        .unwrap()
        .set_len(len - 10)
        .unwrap();

    // The checker sees both before perch starts.
    let (code, out, err) = p.cli(&["check"], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("past its end"), "{out}{err}");
    assert!(out.contains("torn write"), "{out}{err}");

    // perch boots, says so loudly, and keeps everything older.
    p.restart();
    let log = p.log();
    assert!(log.contains("are lost"), "{log}");
    assert!(log.contains("write-ahead log had"), "{log}");
    let problems = problems(&p);
    assert!(
        problems.contains("are lost") && problems.contains("write-ahead log"),
        "{problems}"
    );
    let got = p.export("old");
    assert_eq!(got[0].1, old, "every old sample is there");
    assert_eq!(got[0].2, (0..100).map(f64::from).collect::<Vec<_>>());
    assert_eq!(p.export("kept")[0].2, vec![1.0]);
    assert_eq!(p.export("walok")[0].2, vec![3.0]);
    assert!(p.export("cut").is_empty(), "the cut block is gone");
    assert!(p.export("waltorn").is_empty(), "the torn record is gone");
    // New writes go on, and the directory is sound again.
    write_lines(&p, "after value=5\n");
    assert!(p.stop().success());
    let (code, out, err) = p.cli(&["check"], None);
    assert_eq!(code, 0, "{out}{err}");
    p.restart();
    assert_eq!(p.export("after")[0].2, vec![5.0]);
    assert_eq!(p.export("old")[0].1.len(), 100);
}

#[test]
fn a_corrupt_newest_block_is_reported_at_start_and_skipped() {
    let mut p = Perch::start_with(
        "[storage]\nflush_interval = \"100ms\"\ncheckpoint_interval = \"1h\"\nself_metrics_interval = \"0s\"\n",
    );
    let (old, w) = data_in_blocks_and_wal(&mut p);
    // Bits flipped in the newest block (the last record of the newest
    // window's file), as a failing card does.
    let block = p.data_dir.join("blocks/raw").join(format!("{w}-1.dat"));
    let mut data = std::fs::read(&block).unwrap();
    let n = data.len();
    for b in &mut data[n - 12..n - 4] {
        *b ^= 0x5a;
    }
    std::fs::write(&block, data).unwrap();
    let (code, out, err) = p.cli(&["check"], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("checksum"), "{out}{err}");

    p.restart();
    // Reported at start, before anything reads the block.
    let log = p.log();
    assert!(log.contains("damaged block"), "{log}");
    assert!(problems(&p).contains("damaged block"));
    assert_eq!(p.export("old")[0].1, old);
    assert_eq!(p.export("kept")[0].2, vec![1.0]);
    assert_eq!(p.export("walok")[0].2, vec![3.0]);
    assert_eq!(p.export("waltorn")[0].2, vec![4.0], "the WAL was whole");
    assert!(p.export("cut").is_empty(), "the damaged block is skipped");
    write_lines(&p, "after value=5\n");
    assert_eq!(p.export("after")[0].2, vec![5.0]);
}

/// A small tmpfs to fill (needs root; the tests skip without).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP: mounting a small tmpfs needs root");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIP: cannot mount a tmpfs here");
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }

    /// Writes `filler` until the partition is full; perch gives up its
    /// space ballast when it notices, so this goes on until a second look
    /// finds nothing more to take.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let chunk = vec![0xa5u8; 4096];
        for _ in 0..3 {
            while f.write_all(&chunk).is_ok() {}
            let _ = f.sync_all();
            std::thread::sleep(Duration::from_millis(1500));
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// perch on a fresh tmpfs data directory with `toml`.
fn perch_on_tmpfs(size: &str, toml: &str) -> Option<(Perch, Tmpfs)> {
    let p0 = Perch::start_with(QUIET);
    let mnt = p0.dir.path().join("small");
    drop(p0);
    let fs = Tmpfs::mount(&mnt, size)?;
    let data = mnt.join("data");
    let mut p = Perch::start_with(&format!("data_dir = \"{}\"\n{toml}", data.display()));
    assert!(p.stop().success());
    p.data_dir = data;
    common::add_test_admin(&p.data_dir, &p.config_path);
    p.restart();
    Some((p, fs))
}

/// Noisy samples (incompressible) of `series` at `ts`, as line protocol.
fn noisy_lines(series: &str, ts: impl Iterator<Item = i64>, seed: &mut u64) -> String {
    let mut body = String::new();
    for t in ts {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        body.push_str(&format!(
            "{series} value={} {}\n",
            (*seed >> 11) as f64 / (1u64 << 53) as f64,
            t * 1_000_000
        ));
    }
    body
}

#[test]
fn a_disk_that_fills_during_a_checkpoint_loses_nothing_acknowledged() {
    let Some((mut p, fs)) = perch_on_tmpfs(
        "16m",
        "[storage]\nmin_free_disk_bytes = \"0\"\nflush_interval = \"100ms\"\ncheckpoint_interval = \"3s\"\nself_metrics_interval = \"0s\"\n",
    ) else {
        return;
    };
    // Acknowledged samples of the present, in the WAL until the next
    // checkpoint, which the filled disk makes fail.
    let now = now_ms();
    let mut seed = 0x2545_f491_4f6c_dd1d;
    let ts: Vec<i64> = (0..30_000).map(|i| now - 30_000 + i).collect();
    write_lines(&p, &noisy_lines("acked", ts.iter().copied(), &mut seed));
    std::thread::sleep(Duration::from_millis(300));
    let filler = fs.fill();
    // Checkpoints fail for want of space; perch says so and keeps serving
    // what it holds.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pr = problems(&p);
        if pr.contains("checkpoint failed") {
            break;
        }
        assert!(Instant::now() < deadline, "no problem reported: {pr}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(p.is_running());
    assert_eq!(
        p.export("acked")[0].1,
        ts,
        "readable while the disk is full"
    );
    let r = p.post("/write", "text/plain", "refused value=1\n");
    assert_eq!(r.status, 507, "{}", r.body);
    // Space comes back: the checkpoint goes through, writes are taken again.
    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = p.post("/write", "text/plain", "back value=1\n");
        if r.status == 204 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes still refused: {}",
            r.body
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(p.stop().success(), "a clean stop after a full disk");
    let (code, out, err) = p.cli(&["check"], None);
    assert_eq!(code, 0, "{out}{err}");
    p.restart();
    assert_eq!(p.export("acked")[0].1, ts, "nothing acknowledged was lost");
    assert_eq!(p.export("back")[0].2, vec![1.0]);
}

#[test]
fn the_disk_budget_holds_under_fast_ingest() {
    let budget: u64 = 16 << 20;
    let p = Arc::new(Perch::start_with(
        "[storage]\nmax_disk_bytes = \"16MiB\"\nflush_interval = \"200ms\"\ncheckpoint_interval = \"5s\"\nself_metrics_interval = \"0s\"\n[search]\nenabled = false\n",
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    // Measures the data directory as fast as it can.
    let sampler = {
        let (dir, stop, peak) = (p.data_dir.clone(), stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(du(&dir), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // Two writers as fast as perch takes them: noisy samples over three
    // days, each in time order; refusals are retried, as clients do.
    let now = now_ms();
    let start = now - 3 * 86_400_000;
    let per_batch = 5000i64;
    let step = 50i64;
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 + w;
                let (mut refusals, mut stored, mut message) = (0u64, 0u64, String::new());
                let mut t = start;
                let deadline = Instant::now() + Duration::from_secs(120);
                while t < now && Instant::now() < deadline {
                    let ts = (0..per_batch).map(|i| t + i * step);
                    let body = noisy_lines(&format!("fast,w={w}"), ts, &mut seed);
                    let r = p.post("/write", "text/plain", &body);
                    match r.status {
                        204 => {
                            stored += per_batch as u64;
                            t += per_batch * step;
                        }
                        507 => {
                            refusals += 1;
                            message = r.body;
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        503 => std::thread::sleep(Duration::from_millis(50)),
                        other => panic!("{other}: {}", r.body),
                    }
                }
                (refusals, stored, message, t)
            })
        })
        .collect();
    let results: Vec<_> = writers.into_iter().map(|h| h.join().unwrap()).collect();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::SeqCst);
    let stored: u64 = results.iter().map(|r| r.1).sum();
    let refusals: u64 = results.iter().map(|r| r.0).sum();
    eprintln!("budget {budget}, peak {peak}, {stored} samples stored, {refusals} refusals");
    assert!(
        peak <= budget,
        "the data directory reached {peak} bytes, the budget is {budget}"
    );
    assert!(stored > 3_000_000, "{stored} samples stored");
    assert!(refusals > 0, "ingest outran maintenance at some point");
    // The refusal says what is full and what to do.
    let msg = &results.iter().find(|r| r.0 > 0).unwrap().2;
    eprintln!("{msg}");
    assert!(
        msg.contains("storage.max_disk_bytes") && msg.contains("disk budget is full"),
        "{msg}"
    );
    // The newest data is kept and readable, the oldest went.
    let got = p.export("fast");
    assert_eq!(got.len(), 2);
    for (metric, ts, _) in &got {
        let w: u64 = metric["w"].as_str().unwrap().parse().unwrap();
        let end = results[w as usize].3;
        assert_eq!(
            *ts.last().unwrap(),
            end - step,
            "the newest sample of {metric}"
        );
        assert!(ts[0] > start, "the oldest data was dropped for the budget");
    }
    let s = p.get("/api/v1/status/tsdb").json();
    assert_eq!(s["data"]["diskBudgetBytes"], budget);
}

#[test]
fn samples_far_in_the_future_are_refused_on_every_write_path() {
    let p = Perch::start_with(QUIET);
    let year_2262_ns: i64 = 9_214_646_400_000_000_000;
    let now = now_ms();
    // Line protocol: the good line is stored, the other refused by name.
    let body = format!(
        "soon value=1 {}\nfar value=2 {year_2262_ns}\n",
        (now + 3_600_000) * 1_000_000
    );
    let r = p.post("/write", "text/plain", &body);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("storage.max_future (2d)"), "{}", r.body);
    assert!(r.body.contains("2262-01-01"), "{}", r.body);
    assert_eq!(p.export("soon")[0].2, vec![1.0]);
    assert!(p.export("far").is_empty());
    // VictoriaMetrics import (JSON lines, ms).
    let line = format!(
        r#"{{"metric":{{"__name__":"imported"}},"values":[1,2],"timestamps":[{now},{}]}}"#,
        year_2262_ns / 1_000_000
    );
    let r = p.post("/api/v1/import", "application/json", &line);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("storage.max_future"), "{}", r.body);
    assert_eq!(p.export("imported")[0].1, vec![now]);
    // OpenTSDB (seconds).
    let r = p.post(
        "/api/put",
        "application/json",
        r#"[{"metric":"tsdb.far","timestamp":9214646400,"value":1,"tags":{"a":"b"}}]"#,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("storage.max_future"), "{}", r.body);
    // MQTT: the collector's samples go through the same check.
    if common::have_mosquitto() {
        let pubs = |msg: &str| {
            let out = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &p.mqtt_port.to_string()])
                .args(["-u", ADMIN, "-P", ADMIN_PASSWORD, "-q", "1"])
                .args(["-t", "sensors/far/env", "-m", msg])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        };
        pubs(&format!(
            r#"{{"mqtt_far": 1, "ts": {}}}"#,
            year_2262_ns / 1_000_000
        ));
        pubs(&format!(r#"{{"mqtt_near": 2, "ts": {now}}}"#));
        let deadline = Instant::now() + Duration::from_secs(20);
        while p.export("mqtt_near").is_empty() {
            assert!(Instant::now() < deadline, "the MQTT sample never arrived");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            p.export("mqtt_far").is_empty(),
            "the far-future sample was stored"
        );
    }
    // A larger allowance lets forecasts in.
    let p = Perch::start_with("[storage]\nmax_future = \"300y\"\nself_metrics_interval = \"0s\"\n");
    let r = p.post(
        "/write",
        "text/plain",
        format!("far value=2 {year_2262_ns}\n"),
    );
    assert_eq!(r.status, 204, "{}", r.body);
}

#[test]
fn a_quarantined_database_keeps_onboarding_closed_until_an_admin_is_made_on_the_box() {
    let mut p = Perch::start_with(QUIET);
    assert!(p.stop().success());
    // Scribble over sled's log: the database is quarantined at start, the
    // accounts with it.
    let db_file = p.data_dir.join("db").join("db");
    let len = std::fs::metadata(&db_file).unwrap().len();
    let garbage: Vec<u8> = (0..len).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&db_file, garbage).unwrap();
    std::fs::write(p.data_dir.join("db").join("conf"), b"garbage\n").unwrap();
    p.restart();
    assert!(p.data_dir.join("quarantine").exists());

    // The sign-in state says why, and onboarding is refused.
    let state = p.get_anon("/api/v1/auth/state").json();
    let reason = state["onboarding_refused"].as_str().unwrap_or_default();
    assert!(reason.contains("had accounts"), "{state}");
    assert!(reason.contains("perch user add"), "{state}");
    let onboard = |user: &str| {
        p.request_as(
            None,
            "POST",
            "/api/v1/auth/onboard",
            &[("Content-Type", "application/json")],
            Some(format!(
                r#"{{"username":"{user}","password":"first-come-1"}}"#
            )),
        )
    };
    let r = onboard("intruder");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("perch user add"), "{}", r.body);
    assert_eq!(
        p.get_auth("/api/v1/users", "intruder", "first-come-1")
            .status,
        401
    );
    // The page says so.
    let page = p.get_anon("/assets/pages/login.js");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("onboarding_refused"));

    // An admin made on the box (through the control socket) opens it again.
    let (code, out, err) = p.cli(
        &[
            "user",
            "add",
            "rescuer",
            "--role",
            "admin",
            "--password-stdin",
        ],
        Some("rescue-password-1\n"),
    );
    assert_eq!(code, 0, "{out}{err}");
    let state = p.get_anon("/api/v1/auth/state").json();
    assert!(state["onboarding_refused"].is_null(), "{state}");
    assert_eq!(state["onboarding"], false);
    assert_eq!(
        p.get_auth("/api/v1/users", "rescuer", "rescue-password-1")
            .status,
        200
    );
    assert_eq!(onboard("late").status, 409);
    // A restart changes nothing.
    assert!(p.stop().success());
    p.restart();
    assert!(p.get_anon("/api/v1/auth/state").json()["onboarding_refused"].is_null());
}

#[test]
fn a_fresh_box_still_onboards() {
    let p = Perch::start_bare(QUIET);
    let state = p.get_anon("/api/v1/auth/state").json();
    assert_eq!(state["onboarding"], true);
    assert!(state["onboarding_refused"].is_null(), "{state}");
    let r = p.request_as(
        None,
        "POST",
        "/api/v1/auth/onboard",
        &[("Content-Type", "application/json")],
        Some(r#"{"username":"first","password":"first-password"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(p.data_dir.join("accounts-existed").exists());
}

#[test]
fn a_camera_url_with_credentials_connects() {
    if !have_gstreamer() {
        return;
    }
    // A password with characters that must be percent-encoded in a URL.
    let cam = TestCamera::start(free_port(), "320x240", Some("viewer:p@ss:w0rd"));
    let p = Perch::start_with(QUIET);
    let url = format!("rtsp://viewer:p%40ss%3Aw0rd@127.0.0.1:{}/cam", cam.port);
    let r = p.post(
        "/api/v1/cameras",
        "application/json",
        format!(r#"{{"name":"gate","url":"{url}"}}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let view = &r.json()["data"];
    assert_eq!(view["url"], cam.url(), "stored without the credentials");
    assert_eq!(view["username"], "viewer");
    assert_eq!(view["has_password"], true);
    assert!(!r.body.contains("w0rd"), "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let s = p.get("/api/v1/cameras/gate").json()["data"].clone();
        if s["status"] == "online" {
            assert_eq!(s["width"], 320);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the camera never connected: {s}\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let all = p.get("/api/v1/cameras").body;
    assert!(!all.contains("w0rd") && !p.log().contains("w0rd"), "{all}");
    // Contradicting credentials are refused up front, naming the key.
    let r = p.post(
        "/api/v1/cameras",
        "application/json",
        format!(r#"{{"name":"gate2","url":"{url}","username":"someone-else"}}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("url"), "{}", r.body);
    assert!(!r.body.contains("w0rd"), "{}", r.body);
}

/// Free bytes on the partition holding `path`.
fn free_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail as u64 * st.f_frsize as u64
}

/// perch fills its partition itself (the budget is larger): checkpoints
/// and merges of closed windows run all along, and none may take the last
/// of the free space, which sled needs to record the dropping of old data.
#[test]
fn a_filling_partition_keeps_room_through_checkpoints_and_compaction() {
    // The budget is larger than the partition: the partition fills.
    let Some((mut p, fs)) = perch_on_tmpfs(
        "16m",
        "[storage]\nmax_disk_bytes = \"1GiB\"\nmin_free_disk_bytes = \"0\"\nflush_interval = \"100ms\"\ncheckpoint_interval = \"1s\"\nself_metrics_interval = \"0s\"\n",
    ) else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let low = Arc::new(AtomicU64::new(u64::MAX));
    let sampler = {
        let (dir, stop, low) = (fs.0.clone(), stop.clone(), low.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                low.fetch_min(free_bytes(&dir), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    // Noisy samples into closed windows (compacted as they come) and the
    // present, as fast as perch takes them.
    let now = now_ms();
    let start = now - 20 * WINDOW_MS;
    let mut seed = 0x2545_f491_4f6c_dd1d;
    let mut t = start;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut refusals = 0;
    while t < now && Instant::now() < deadline {
        let body = noisy_lines("fill", (0..4000).map(|i| t + i * 20), &mut seed);
        match p.post("/write", "text/plain", &body).status {
            204 => t += 4000 * 20,
            503 | 507 => {
                refusals += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            other => panic!("{other}"),
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let low = low.load(Ordering::SeqCst);
    eprintln!("lowest free space {low}, {refusals} refusals");
    assert!(refusals > 0, "the partition filled");
    assert!(
        low >= 512 << 10,
        "the partition fell to {low} bytes free: too little for the database to drop old data"
    );
    assert!(p.is_running());
}
