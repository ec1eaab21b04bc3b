//! A data partition that really fills up (a small tmpfs; needs root, skipped
//! otherwise): perch keeps running and serving reads, refuses writes it could
//! not make durable with a clear status, drops its oldest data, and accepts
//! writes again.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{now_ms, Perch};

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_partition_is_survived() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let p0 = Perch::start_with("");
    let mnt = p0.dir.path().join("small");
    drop(p0);
    std::fs::create_dir_all(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    let _guard = Mount(mnt.clone());
    let data = mnt.join("data");
    // The budget is larger than the partition and no free space is reserved:
    // the partition really fills and writes hit ENOSPC.
    let mut p = Perch::start_with(&format!(
        "data_dir = \"{}\"\n[storage]\nmax_disk_bytes = \"1GiB\"\nmin_free_disk_bytes = \"0\"\ncheckpoint_interval = \"1s\"\nflush_interval = \"200ms\"\n",
        data.display()
    ));
    // The harness passes --data-dir; keep both pointing at the tmpfs.
    assert!(p.stop().success());
    p.data_dir = data.clone();
    common::add_test_admin(&p.data_dir, &p.config_path);
    p.restart();

    // Noisy values over many 2 h windows, written as fast as perch takes
    // them; when it refuses, wait and go on, as a client with a retry would.
    let start = now_ms() - 25 * 24 * 3_600_000;
    let mut refusals = 0;
    let mut saw_status = false;
    let mut x = 0x9e3779b97f4a7c15u64;
    let batches = 12_000i64;
    let mut batch = 0i64;
    let deadline = Instant::now() + Duration::from_secs(240);
    while batch < batches {
        assert!(
            Instant::now() < deadline,
            "ingestion stalled at batch {batch}:\n{}",
            p.get("/api/v1/status/tsdb").body
        );
        let mut body = String::new();
        for i in 0..200i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let t = start + (batch * 200 + i) * 500;
            body.push_str(&format!(
                "fill,d=x value={} {}\n",
                (x >> 11) as f64 / (1u64 << 53) as f64,
                t * 1_000_000
            ));
        }
        let r = p.post("/write", "text/plain", &body);
        match r.status {
            204 => batch += 1,
            503 | 507 => {
                refusals += 1;
                assert!(
                    r.body.contains("disk is full") || r.body.contains("behind"),
                    "{}",
                    r.body
                );
                if !saw_status {
                    // Reads keep working while writes are refused, and the
                    // status says why.
                    let s = p.get("/api/v1/status/tsdb");
                    assert_eq!(s.status, 200);
                    saw_status = s.body.contains("disk") || s.body.contains("write-ahead log");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert!(p.is_running(), "perch survived a full disk");
    assert!(refusals > 0, "the partition never filled");
    assert!(saw_status, "the status explained the refusal");
    assert!(
        p.log().contains("dropping the oldest window"),
        "old data was dropped to make room"
    );
    // The newest data is kept, the oldest was dropped.
    let got = p.export("fill");
    let ts = &got[0].1;
    assert_eq!(*ts.last().unwrap(), start + (batches * 200 - 1) * 500);
    assert!(ts[0] > start + 24 * 3_600_000, "the oldest day was dropped");
    assert!(p.stop().success());
    p.restart();
    assert!(
        !p.export("fill").is_empty(),
        "the store reopens after the disk was full"
    );
    assert!(p.stop().success());
    let (code, out, err) = p.cli(&["check"], None);
    assert_eq!(code, 0, "{out}{err}");
}
