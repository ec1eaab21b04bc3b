//! Issue 2: power cuts (kill -9 of the real binary), damaged databases, a
//! second instance, and the disk budget.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{now_ms, Perch};

/// What a writer thread got acknowledged: (batch number, time of the ack).
type Acks = Arc<Mutex<Vec<(u64, Instant)>>>;

fn writer(
    p_url: String,
    base_ts: i64,
    start_batch: u64,
    stop: Arc<AtomicBool>,
    acks: Acks,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let mut n = start_batch;
        while !stop.load(Ordering::SeqCst) {
            // 20 samples per batch, each batch at its own timestamps.
            let mut body = String::new();
            for i in 0..20 {
                body.push_str(&format!(
                    "kill,w=a value={n}.{i:02} {}\n",
                    (base_ts + n as i64 * 20 + i) * 1_000_000
                ));
            }
            let admin = common::basic(common::ADMIN, common::ADMIN_PASSWORD);
            match agent
                .post(&p_url)
                .header("Authorization", &admin)
                .send(body.as_bytes())
            {
                Ok(r) if r.status() == 204 => acks.lock().unwrap().push((n, Instant::now())),
                _ => return, // the server went away
            }
            n += 1;
        }
    })
}

/// Batches acknowledged longer before the kill than the flush interval plus
/// `slack` (scheduling, the fsync itself) must survive a kill -9.
fn must_survive(acks: &Acks, killed_at: Instant, flush_interval: Duration) -> Vec<u64> {
    let slack = Duration::from_millis(400);
    acks.lock()
        .unwrap()
        .iter()
        .filter(|(_, at)| killed_at.duration_since(*at) > flush_interval + slack)
        .map(|(n, _)| *n)
        .collect()
}

fn stored_batches(p: &Perch) -> std::collections::BTreeSet<u64> {
    let mut out = std::collections::BTreeSet::new();
    for (_, _, values) in p.export("kill") {
        for v in values {
            out.insert(v.trunc() as u64);
        }
    }
    out
}

#[test]
fn kill9_during_writes_loses_at_most_the_flush_interval() {
    let mut p = Perch::start_with("[storage]\ncheckpoint_interval = \"2s\"\n");
    let base = now_ms() - 3_600_000;
    let acks: Acks = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(p.url("/write"), base, 0, stop.clone(), acks.clone());
    std::thread::sleep(Duration::from_millis(4500));
    let killed_at = Instant::now();
    p.kill9();
    stop.store(true, Ordering::SeqCst);
    w.join().unwrap();
    let required = must_survive(&acks, killed_at, Duration::from_secs(1));
    assert!(
        required.len() > 50,
        "the writer made too little progress: {}",
        required.len()
    );
    p.restart();
    let stored = stored_batches(&p);
    let lost: Vec<u64> = required
        .iter()
        .filter(|n| !stored.contains(n))
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "lost {} acknowledged batches: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}

#[test]
fn hundreds_of_kill9s_always_reopen_and_keep_data() {
    let cycles: usize = std::env::var("PERCH_KILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let flush = Duration::from_millis(100);
    let mut p =
        Perch::start_with("[storage]\ncheckpoint_interval = \"1s\"\nflush_interval = \"100ms\"\n");
    let base = now_ms() - 6 * 3_600_000;
    let mut next_batch = 0u64;
    let mut required = Vec::new();
    let mut acked = 0usize;
    let mut rng = 0x2545f4914f6cdd1du64;
    for cycle in 0..cycles {
        // Each cycle judges only its own acknowledgements against its own kill.
        let acks: Acks = Default::default();
        let stop = Arc::new(AtomicBool::new(false));
        let w = writer(
            p.url("/write"),
            base,
            next_batch,
            stop.clone(),
            acks.clone(),
        );
        // Kill at a pseudo-random moment: during writes, checkpoints or merges.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(50 + rng % 650));
        let killed_at = Instant::now();
        p.kill9();
        stop.store(true, Ordering::SeqCst);
        w.join().unwrap();
        required.extend(must_survive(&acks, killed_at, flush));
        let acks = acks.lock().unwrap();
        acked += acks.len();
        next_batch = acks.last().map_or(next_batch, |(n, _)| n + 1);
        drop(acks);
        p.restart();
        if cycle % 50 == 49 || cycle + 1 == cycles {
            let stored = stored_batches(&p);
            let lost: Vec<&u64> = required.iter().filter(|n| !stored.contains(n)).collect();
            assert!(
                lost.is_empty(),
                "after {} cycles lost {:?}",
                cycle + 1,
                &lost[..lost.len().min(10)]
            );
        }
    }
    assert!(
        required.len() > cycles,
        "writers made progress: {} required of {acked} acked",
        required.len()
    );
    // A clean stop, then the checker finds nothing wrong.
    assert!(p.stop().success());
    let (code, out, err) = p.cli(&["check"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn damaged_database_is_moved_aside_and_perch_still_boots() {
    let mut p = Perch::start();
    assert_eq!(
        p.post("/write", "text/plain", "before value=1\n").status,
        204
    );
    assert!(p.stop().success());
    // Scribble over sled's log.
    let db_file = p.data_dir.join("db").join("db");
    let len = std::fs::metadata(&db_file).unwrap().len();
    let garbage: Vec<u8> = (0..len).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&db_file, garbage).unwrap();
    std::fs::write(p.data_dir.join("db").join("conf"), b"garbage\n").unwrap();
    p.restart();
    // The accounts went with the database, but the box had accounts:
    // onboarding stays closed (whoever reaches it first must not become
    // admin) until an admin is made again from the shell.
    let state = p.get_anon("/api/v1/auth/state").json();
    assert!(
        state["onboarding_refused"]
            .as_str()
            .is_some_and(|r| r.contains("perch user add")),
        "{state}"
    );
    common::add_test_admin(&p.data_dir, &p.config_path);
    let status = p.get("/api/v1/status/tsdb").json();
    let problems = status["data"]["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|m| m.as_str().unwrap().contains("moved to")),
        "{problems:?}"
    );
    let q = std::fs::read_dir(p.data_dir.join("quarantine"))
        .unwrap()
        .count();
    assert_eq!(q, 1);
    assert_eq!(
        p.post("/write", "text/plain", "after value=2\n").status,
        204
    );
    assert_eq!(p.export("after")[0].2, vec![2.0]);
    assert!(p.log().contains("moved"), "the log says so too");
}

#[test]
fn a_second_instance_on_the_same_directory_is_refused_without_damage() {
    let p = Perch::start();
    assert_eq!(p.post("/write", "text/plain", "x value=1\n").status, 204);
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--data-dir"])
        .arg(&p.data_dir)
        .args(["--http", &format!("127.0.0.1:{}", common::free_port())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use"), "{err}");
    assert!(!p.data_dir.join("quarantine").exists());
    assert_eq!(p.export("x")[0].2, vec![1.0]);
}

#[test]
fn a_disk_budget_too_small_for_anything_refuses_writes_and_says_why() {
    // The budget is a limit, not a target (docs/storage.md): with room for
    // nothing, a write is refused up front with the key to change, rather
    // than written and then dropped. faults::the_disk_budget_holds_under_
    // fast_ingest and the store's disk_budget_drops_oldest_first_and_keeps
    // _the_present cover a budget that fills.
    let mut p = Perch::start_with("[storage]\nmax_disk_bytes = \"1\"\n");
    let now = now_ms();
    let r = p.post(
        "/write",
        "text/plain",
        format!("budget value=1 {}\n", now * 1_000_000),
    );
    assert_eq!(r.status, 507, "{}", r.body);
    assert!(r.body.contains("storage.max_disk_bytes"), "{}", r.body);
    assert!(p.export("budget").is_empty());
    // Everything else still answers.
    assert_eq!(p.get("/api/v1/status/tsdb").status, 200);
    assert!(p.stop().success());
}
