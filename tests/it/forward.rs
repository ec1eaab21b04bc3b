//! Issue 9, store and forward, end to end against real peers on loopback:
//! Debian's mosquitto as the upstream broker (checked with mosquitto_sub),
//! Debian's prometheus (with --web.enable-remote-write-receiver) and
//! victoria-metrics as remote-write targets, checked by querying them.
//! Outages are real: the peer process is stopped during steady ingest and
//! started again; perch is restarted mid-outage; queues are filled past
//! their cap. Every test counts what arrived: nothing missing, in order,
//! duplicates counted (at-least-once allows some).

use crate::common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, now_ms, urlencode, Perch};

fn have(cmd: &str) -> bool {
    common::have_command(cmd)
}

/// A peer process that is killed when the test ends.
struct Daemon {
    child: Option<Child>,
    args: Vec<String>,
    program: String,
    log: PathBuf,
}

impl Daemon {
    fn start(program: &str, args: &[String], log: &Path) -> Daemon {
        let mut d = Daemon {
            child: None,
            args: args.to_vec(),
            program: program.into(),
            log: log.to_path_buf(),
        };
        d.spawn();
        d
    }
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program));
        self.child = Some(child);
    }
    /// SIGTERM and wait: a clean stop, like `systemctl stop`.
    fn stop(&mut self) {
        let mut c = self.child.take().expect("running");
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = c.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.wait();
    }
    fn restart(&mut self) {
        assert!(self.child.is_none());
        self.spawn();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- {} log ---\n{}",
                self.program,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// mosquitto started as root drops to its own user: let it write its
/// persistence file and read its certificates in the test's directory.
fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

fn mosquitto(dir: &Path, port: u16) -> Daemon {
    open_up(dir);
    let conf = dir.join(format!("mosquitto-{port}.conf"));
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 100000\n",
            dir.display()
        ),
    )
    .unwrap();
    let d = Daemon::start(
        "mosquitto",
        &["-c".into(), conf.display().to_string()],
        &dir.join(format!("mosquitto-{port}.log")),
    );
    wait_port(port);
    d
}

/// A durable subscriber (persistent session, QoS 1) writing `topic payload`
/// lines to a file; mosquitto_sub reconnects by itself when the broker
/// comes back.
struct Sub {
    child: Child,
    out: PathBuf,
}

impl Sub {
    fn start(dir: &Path, port: u16, filter: &str) -> Sub {
        let out = dir.join(format!("sub-{port}.txt"));
        let child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-q", "1", "-c", "-i", &format!("fwdtest-{port}")])
            .args(["-t", filter, "-v"])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Sub { child, out }
    }
    fn lines(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mosquitto_pub -l` into perch: one message per line written.
struct Publisher {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Publisher {
    fn start(perch: &Perch, topic: &str) -> Publisher {
        let mut child = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &perch.mqtt_port.to_string()])
            .args(["-q", "1", "-t", topic, "-l"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        Publisher { child, stdin }
    }
    fn send(&mut self, line: &str) {
        let s = self.stdin.as_mut().unwrap();
        writeln!(s, "{line}").unwrap();
        s.flush().unwrap();
    }
    fn finish(mut self) {
        drop(self.stdin.take());
        let st = self.child.wait().unwrap();
        assert!(st.success(), "mosquitto_pub failed");
    }
}

/// Sequence numbers seen, in order of arrival: (missing, duplicates,
/// first-arrivals in order?).
fn tally(seqs: &[u64], expected: std::ops::Range<u64>) -> (Vec<u64>, usize, bool) {
    let mut seen = std::collections::BTreeSet::new();
    let mut dups = 0;
    let mut firsts = Vec::new();
    for &s in seqs {
        if seen.insert(s) {
            firsts.push(s);
        } else {
            dups += 1;
        }
    }
    let missing = expected.filter(|s| !seen.contains(s)).collect();
    let ordered = firsts.windows(2).all(|w| w[0] < w[1]);
    (missing, dups, ordered)
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn target_status(p: &Perch, name: &str) -> serde_json::Value {
    let r = p.get("/api/v1/forward");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no target {name} in {}", r.body))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

fn mqtt_target(name: &str, port: u16, extra: &str) -> String {
    format!(
        "[mqtt]\nallow_anonymous = true\n\n[[forward]]\nname = \"{name}\"\nkind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{port}\"\ntopics = [\"sensors/#\"]\nremote_prefix = \"site/{{hostname}}/\"\nqos = 1\nmax_backoff = \"1s\"\ntimeout = \"5s\"\n{extra}\n"
    )
}

#[test]
fn mqtt_bridge_survives_an_upstream_outage() {
    if !have("mosquitto") || !have("mosquitto_sub") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = mosquitto(dir.path(), port);
    let sub = Sub::start(dir.path(), port, "site/#");
    std::thread::sleep(Duration::from_millis(500));
    let p = Perch::start_with(&mqtt_target("up", port, ""));
    wait_until("the bridge to connect", Duration::from_secs(20), || {
        target_status(&p, "up")["connected"] == true
    });
    // Not forwarded: outside the topic filter.
    let mut other = Publisher::start(&p, "other/x");
    other.send("nope");
    other.finish();
    // Steady ingest, 25 messages/s for 8 s; the upstream broker is down
    // from 2 s to 5 s.
    let n = 200u64;
    let mut pubr = Publisher::start(&p, "sensors/t1");
    let mut stopped_at = None;
    for i in 0..n {
        if i == 50 {
            broker.stop();
            stopped_at = Some(i);
        }
        if i == 125 {
            let st = target_status(&p, "up");
            assert_eq!(st["connected"], false, "{st}");
            assert!(st["queue_items"].as_u64().unwrap() > 0, "{st}");
            assert!(st["errors_total"].as_u64().unwrap() > 0, "{st}");
            assert!(st["last_error"].is_string(), "{st}");
            broker.restart();
        }
        pubr.send(&format!("{i}"));
        std::thread::sleep(Duration::from_millis(40));
    }
    assert!(stopped_at.is_some());
    pubr.finish();
    let topic = format!("site/{}/sensors/t1", hostname());
    wait_until("every message upstream", Duration::from_secs(60), || {
        let seqs: Vec<u64> = sub
            .lines()
            .iter()
            .filter(|(t, _)| *t == topic)
            .filter_map(|(_, v)| v.parse().ok())
            .collect();
        tally(&seqs, 0..n).0.is_empty()
    });
    let lines = sub.lines();
    assert!(
        lines.iter().all(|(t, _)| t == &topic),
        "only the filtered topic, with the prefix: {:?}",
        lines.iter().find(|(t, _)| t != &topic)
    );
    let seqs: Vec<u64> = lines.iter().map(|(_, v)| v.parse().unwrap()).collect();
    let (missing, dups, ordered) = tally(&seqs, 0..n);
    eprintln!(
        "mqtt outage: {n} published, {} received, {dups} duplicates",
        seqs.len()
    );
    assert!(missing.is_empty(), "missing {missing:?}");
    assert!(ordered, "out of order: {seqs:?}");
    // At-least-once: only a batch in flight when the broker went can repeat.
    assert!(dups <= 100, "{dups} duplicates");
    wait_until("the queue to drain", Duration::from_secs(10), || {
        target_status(&p, "up")["queue_items"] == 0
    });
    let st = target_status(&p, "up");
    assert_eq!(st["connected"], true, "{st}");
    assert_eq!(st["dropped_total"], 0, "{st}");
    assert!(st["sent_total"].as_u64().unwrap() >= n, "{st}");
    let metrics = p.get("/metrics").body;
    for name in [
        "perch_forward_queue_bytes{target=\"up\"} 0",
        "perch_forward_up{target=\"up\"} 1",
        "perch_forward_dropped_total{target=\"up\"} 0",
    ] {
        assert!(metrics.contains(name), "{name} not in /metrics");
    }
    assert!(metrics.contains("perch_forward_errors_total{target=\"up\"}"));
    assert!(metrics.contains("perch_forward_sent_total{target=\"up\"}"));
}

#[test]
fn mqtt_queue_survives_a_perch_restart_mid_outage() {
    if !have("mosquitto") || !have("mosquitto_sub") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = mosquitto(dir.path(), port);
    let sub = Sub::start(dir.path(), port, "site/#");
    std::thread::sleep(Duration::from_millis(500));
    broker.stop();
    let mut p = Perch::start_with(&mqtt_target("up", port, ""));
    let mut pubr = Publisher::start(&p, "sensors/a");
    for i in 0..100 {
        pubr.send(&i.to_string());
    }
    pubr.finish();
    wait_until("100 queued", Duration::from_secs(10), || {
        target_status(&p, "up")["queue_items"] == 100
    });
    p.stop();
    p.restart();
    assert_eq!(
        target_status(&p, "up")["queue_items"],
        100,
        "the queue is on disk"
    );
    let mut pubr = Publisher::start(&p, "sensors/a");
    for i in 100..150 {
        pubr.send(&i.to_string());
    }
    pubr.finish();
    broker.restart();
    let seqs = || -> Vec<u64> {
        sub.lines()
            .iter()
            .filter_map(|(_, v)| v.parse().ok())
            .collect()
    };
    wait_until("all 150 upstream", Duration::from_secs(60), || {
        tally(&seqs(), 0..150).0.is_empty()
    });
    let s = seqs();
    let (missing, dups, ordered) = tally(&s, 0..150);
    eprintln!(
        "perch restart: 150 published, {} received, {dups} duplicates",
        s.len()
    );
    assert!(missing.is_empty() && ordered, "{s:?}");
    assert_eq!(dups, 0, "nothing was in flight: no duplicates");
}

/// Fills a queue past its cap while the upstream broker is down, then
/// brings it up: exactly the oldest (drop_oldest) or the newest
/// (reject_new) messages are gone.
#[test]
fn overflow_policies_drop_exactly_what_they_say() {
    if !have("mosquitto") || !have("mosquitto_sub") {
        return;
    }
    for (policy, expected) in [("drop_oldest", 37..100u64), ("reject_new", 0..63u64)] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut broker = mosquitto(dir.path(), port);
        let sub = Sub::start(dir.path(), port, "site/#");
        std::thread::sleep(Duration::from_millis(500));
        broker.stop();
        let p = Perch::start_with(&mqtt_target(
            "cap",
            port,
            &format!("queue_max_bytes = \"64KiB\"\noverflow = \"{policy}\""),
        ));
        // Item = 1 kind + 2 + topic (9) + qos + retain + 8 time + 1000
        // payload = 1022 bytes, + 16 in the queue = 1038: 63 fit in 64 KiB.
        let mut pubr = Publisher::start(&p, "sensors/x");
        for i in 0..100u64 {
            pubr.send(&format!("{i:0>1000}"));
        }
        pubr.finish();
        wait_until("all 100 handled", Duration::from_secs(10), || {
            let st = target_status(&p, "cap");
            st["queue_items"].as_u64().unwrap() + st["dropped_total"].as_u64().unwrap() == 100
        });
        let st = target_status(&p, "cap");
        assert_eq!(st["queue_items"], 63, "{policy}: {st}");
        assert_eq!(st["dropped_total"], 37, "{policy}: {st}");
        assert_eq!(st["queue_bytes"], 63 * 1038, "{policy}: {st}");
        broker.restart();
        wait_until("63 upstream", Duration::from_secs(30), || {
            sub.lines().len() >= 63
        });
        std::thread::sleep(Duration::from_secs(1));
        let got: Vec<u64> = sub
            .lines()
            .iter()
            .map(|(_, v)| v.parse().unwrap())
            .collect();
        assert_eq!(got, expected.clone().collect::<Vec<_>>(), "{policy}");
    }
}

// ---- remote write ----------------------------------------------------------

fn prometheus(dir: &Path, port: u16) -> Daemon {
    let conf = dir.join("prometheus.yml");
    std::fs::write(&conf, "global:\n  scrape_interval: 1h\n").unwrap();
    let d = Daemon::start(
        "prometheus",
        &[
            format!("--config.file={}", conf.display()),
            format!("--storage.tsdb.path={}", dir.join("prom").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--web.enable-remote-write-receiver".into(),
        ],
        &dir.join("prometheus.log"),
    );
    wait_port(port);
    d
}

fn victoria(dir: &Path, port: u16) -> Daemon {
    let d = Daemon::start(
        "victoria-metrics",
        &[
            format!("-storageDataPath={}", dir.join("vm").display()),
            format!("-httpListenAddr=127.0.0.1:{port}"),
            "-retentionPeriod=100y".into(),
            "-search.disableCache".into(),
        ],
        &dir.join("vm.log"),
    );
    wait_port(port);
    d
}

fn http_get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    match agent.get(url).call() {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(e) => (0, e.to_string()),
    }
}

/// Raw samples of `selector` in VictoriaMetrics, duplicates included.
fn vm_samples(port: u16, selector: &str) -> Vec<(i64, f64)> {
    let _ = http_get(&format!("http://127.0.0.1:{port}/internal/force_flush"));
    let (status, body) = http_get(&format!(
        "http://127.0.0.1:{port}/api/v1/export?match[]={}",
        urlencode(selector)
    ));
    if status != 200 {
        // Still starting after a restart: nothing to see yet.
        eprintln!("VictoriaMetrics export: {status} {body}");
        return Vec::new();
    }
    let mut out = Vec::new();
    for line in body.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let ts = v["timestamps"].as_array().unwrap();
        let vals = v["values"].as_array().unwrap();
        for (t, x) in ts.iter().zip(vals) {
            out.push((t.as_i64().unwrap(), x.as_f64().unwrap()));
        }
    }
    out.sort_by_key(|s| s.0);
    out
}

/// Samples of `selector` in Prometheus over the last hour.
fn prom_samples(port: u16, selector: &str) -> Vec<(i64, f64)> {
    let q = format!("{selector}[1h]");
    let (status, body) = http_get(&format!(
        "http://127.0.0.1:{port}/api/v1/query?query={}",
        urlencode(&q)
    ));
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut out = Vec::new();
    for series in v["data"]["result"].as_array().unwrap() {
        for p in series["values"].as_array().unwrap() {
            let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
            out.push((t, p[1].as_str().unwrap().parse().unwrap()));
        }
    }
    out.sort_by_key(|s| s.0);
    out
}

fn import_line(name: &str, site: &str, t: i64, v: f64) -> String {
    format!(
        "{{\"metric\":{{\"__name__\":\"{name}\",\"site\":\"{site}\"}},\"values\":[{v}],\"timestamps\":[{t}]}}\n"
    )
}

fn rw_target(name: &str, url: &str, extra: &str) -> String {
    format!(
        "\n[[forward]]\nname = \"{name}\"\nkind = \"remote_write\"\nurl = \"{url}\"\nmatch = ['{{__name__=~\"env_.*\"}}']\nmax_backoff = \"1s\"\ntimeout = \"5s\"\n{extra}\n"
    )
}

/// Two remote-write targets at once — Prometheus and VictoriaMetrics — fed
/// by steady writes; VictoriaMetrics goes down for a while and comes back.
/// Both end with every sample, in order; only `env_*` series are forwarded.
#[test]
fn remote_write_to_prometheus_and_victoria_metrics_through_an_outage() {
    if !have("prometheus") || !have("victoria-metrics") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (prom_port, vm_port) = (free_port(), free_port());
    let _prom = prometheus(dir.path(), prom_port);
    let mut vm = victoria(dir.path(), vm_port);
    let token = dir.path().join("vm.token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let p = Perch::start_with(&format!(
        "{}{}",
        rw_target(
            "prom",
            &format!("http://127.0.0.1:{prom_port}/api/v1/write"),
            ""
        ),
        rw_target(
            "vm",
            &format!("http://127.0.0.1:{vm_port}/api/v1/write"),
            &format!("bearer_token_file = \"{}\"", token.display())
        )
    ));
    let start = now_ms() - 60_000;
    let n = 300i64;
    for i in 0..n {
        if i == 60 {
            vm.stop();
        }
        if i == 200 {
            let st = target_status(&p, "vm");
            assert_eq!(st["connected"], false, "{st}");
            assert!(st["queue_items"].as_u64().unwrap() > 0, "{st}");
            assert!(st["oldest_age_seconds"].as_f64().unwrap() > 0.5, "{st}");
            assert_eq!(target_status(&p, "prom")["connected"], true);
            vm.restart();
        }
        // Two forwarded series per write: one queue item holds both.
        let body = format!(
            "{}{}{}",
            import_line("env_temp", "a", start + i * 100, i as f64),
            import_line("env_temp", "b", start + i * 100, -(i as f64)),
            import_line("other_temp", "a", start + i * 100, i as f64)
        );
        let r = p.post("/api/v1/import", "application/json", body);
        assert!(r.status == 204 || r.status == 200, "{}", r.body);
        std::thread::sleep(Duration::from_millis(20));
    }
    let want: Vec<(i64, f64)> = (0..n).map(|i| (start + i * 100, i as f64)).collect();
    let want_b: Vec<(i64, f64)> = (0..n).map(|i| (start + i * 100, -(i as f64))).collect();
    wait_until(
        "every sample in VictoriaMetrics",
        Duration::from_secs(60),
        || {
            let got = vm_samples(vm_port, "env_temp{site=\"a\"}");
            let mut uniq = got.clone();
            uniq.dedup();
            uniq == want
        },
    );
    let got = vm_samples(vm_port, "env_temp{site=\"a\"}");
    let mut uniq = got.clone();
    uniq.dedup();
    eprintln!(
        "remote write outage: {n} written, {} in VictoriaMetrics, {} duplicates",
        got.len(),
        got.len() - uniq.len()
    );
    assert_eq!(uniq, want);
    wait_until(
        "every sample in Prometheus",
        Duration::from_secs(30),
        || prom_samples(prom_port, "env_temp{site=\"a\"}") == want,
    );
    assert_eq!(prom_samples(prom_port, "env_temp{site=\"b\"}"), want_b);
    let mut b = vm_samples(vm_port, "env_temp{site=\"b\"}");
    b.dedup();
    assert_eq!(b, want_b);
    assert!(
        prom_samples(prom_port, "other_temp").is_empty(),
        "the match selector keeps other_temp out"
    );
    assert!(vm_samples(vm_port, "other_temp").is_empty());
    for t in ["vm", "prom"] {
        wait_until("the queue to drain", Duration::from_secs(10), || {
            target_status(&p, t)["queue_items"] == 0
        });
        let st = target_status(&p, t);
        assert_eq!(st["connected"], true, "{st}");
        assert_eq!(st["rejected_total"], 0, "{st}");
        assert_eq!(st["dropped_total"], 0, "{st}");
        assert!(st["sent_total"].as_u64().unwrap() >= 2 * n as u64, "{st}");
    }
    assert!(target_status(&p, "vm")["errors_total"].as_u64().unwrap() > 0);
}

/// VictoriaMetrics is down; perch is stopped mid-outage and started again;
/// everything written before and after arrives once VictoriaMetrics is back.
#[test]
fn remote_write_queue_survives_a_perch_restart_mid_outage() {
    if !have("victoria-metrics") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vm_port = free_port();
    let mut vm = victoria(dir.path(), vm_port);
    vm.stop();
    let mut p = Perch::start_with(&rw_target(
        "vm",
        &format!("http://127.0.0.1:{vm_port}/api/v1/write"),
        "",
    ));
    let start = now_ms() - 60_000;
    let write = |p: &Perch, r: std::ops::Range<i64>| {
        let body: String = r
            .map(|i| import_line("env_hum", "b", start + i * 100, i as f64 * 0.5))
            .collect();
        let resp = p.post("/api/v1/import", "application/json", body);
        assert!(resp.status == 204 || resp.status == 200, "{}", resp.body);
    };
    write(&p, 0..100);
    wait_until("queued", Duration::from_secs(10), || {
        target_status(&p, "vm")["queue_bytes"].as_u64().unwrap() > 0
    });
    p.stop();
    p.restart();
    assert!(target_status(&p, "vm")["queue_bytes"].as_u64().unwrap() > 0);
    write(&p, 100..200);
    vm.restart();
    let want: Vec<(i64, f64)> = (0..200)
        .map(|i| (start + i * 100, i as f64 * 0.5))
        .collect();
    wait_until(
        "every sample in VictoriaMetrics",
        Duration::from_secs(60),
        || {
            let mut got = vm_samples(vm_port, "env_hum");
            got.dedup();
            got == want
        },
    );
    let got = vm_samples(vm_port, "env_hum");
    assert_eq!(got.len(), 200, "nothing was in flight: no duplicates");
}

/// A stopped perch holding `n` samples of `metric` from `start`, every
/// `step_ms`, stored before its config gained the target `vm`.
fn stopped_with_history(
    vm_port: u16,
    metric: &str,
    label: &str,
    start: i64,
    n: i64,
    step_ms: i64,
) -> Perch {
    let mut p = Perch::start();
    let body: String = (0..n)
        .map(|i| import_line(metric, label, start + i * step_ms, i as f64))
        .collect();
    assert_eq!(
        p.post("/api/v1/import", "application/json", body).status,
        204
    );
    p.stop();
    std::fs::write(
        &p.config_path,
        rw_target(
            "vm",
            &format!("http://127.0.0.1:{vm_port}/api/v1/write"),
            "",
        ),
    )
    .unwrap();
    p
}

/// `perch forward replay NAME --since`: history stored before the target
/// existed is sent when asked.
#[test]
fn replay_resends_stored_history() {
    if !have("victoria-metrics") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vm_port = free_port();
    let _vm = victoria(dir.path(), vm_port);
    let start = now_ms() - 3 * 3600 * 1000;
    let mut p = stopped_with_history(vm_port, "env_old", "c", start, 500, 10_000);
    p.restart();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        vm_samples(vm_port, "env_old").is_empty(),
        "not sent by itself"
    );
    // Older than --since stays home: samples 0..=138 are more than 157
    // minutes old by the time the command runs.
    let (code, out, err) = p.cli(&["forward", "replay", "vm", "--since", "157m"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("samples of 1 series"), "{out}");
    let all: Vec<(i64, f64)> = (0..500).map(|i| (start + i * 10_000, i as f64)).collect();
    wait_until(
        "the replay in VictoriaMetrics",
        Duration::from_secs(30),
        || vm_samples(vm_port, "env_old").last() == all.last(),
    );
    let got = vm_samples(vm_port, "env_old");
    let skipped = all.len() - got.len();
    assert_eq!(got, all[skipped..], "a contiguous, complete suffix");
    // 138 plus one per 10 s the test took between writing and replaying.
    assert!((139..=145).contains(&skipped), "{skipped} skipped");
    let (code, _, err) = p.cli(&["forward", "replay", "nope", "--since", "1h"], None);
    assert_ne!(code, 0);
    assert!(err.contains("no forwarding target \"nope\""), "{err}");
}

/// mqtts with a private CA (`ca_file`) and user name/password upstream:
/// mosquitto with a TLS listener and a password file.
#[test]
fn mqtt_bridge_over_tls_with_credentials() {
    if !have("mosquitto") || !have("mosquitto_sub") || !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| {
        let out = Command::new(args[0])
            .args(&args[1..])
            .current_dir(d)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=perch test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "openssl",
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "openssl",
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    run(&[
        "mosquitto_passwd",
        "-b",
        "-c",
        "passwd",
        "site1",
        "pw-site1",
    ]);
    let port = free_port();
    let conf = d.join("tls.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\ncafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\nallow_anonymous false\npassword_file {0}/passwd\n",
            d.display()
        ),
    )
    .unwrap();
    open_up(d);
    let _broker = Daemon::start(
        "mosquitto",
        &["-c".into(), conf.display().to_string()],
        &d.join("tls.log"),
    );
    wait_port(port);
    let out = d.join("tls-sub.txt");
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--cafile"])
        .arg(d.join("ca.pem"))
        .args([
            "-u", "site1", "-P", "pw-site1", "-q", "1", "-t", "up/#", "-v",
        ])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let p = Perch::start_with(&format!(
        "[mqtt]\nallow_anonymous = true\n\n[[forward]]\nname = \"tls\"\nkind = \"mqtt\"\nurl = \"mqtts://127.0.0.1:{port}\"\nca_file = \"{}\"\nusername = \"site1\"\npassword = \"pw-site1\"\ntopics = [\"sensors/#\"]\nremote_prefix = \"up/\"\nqos = 2\nmax_backoff = \"1s\"\n",
        d.join("ca.pem").display()
    ));
    let mut pubr = Publisher::start(&p, "sensors/tls");
    for i in 0..20 {
        pubr.send(&i.to_string());
    }
    pubr.finish();
    let want: String = (0..20).map(|i| format!("up/sensors/tls {i}\n")).collect();
    let read = || std::fs::read_to_string(&out).unwrap_or_default();
    wait_until("20 messages over TLS", Duration::from_secs(30), || {
        read() == want
    });
    let st = target_status(&p, "tls");
    assert_eq!(st["connected"], true, "{st}");
    assert_eq!(st["sent_total"], 20, "{st}");
    let _ = sub.kill();
    let _ = sub.wait();
}

/// A batch the receiver refuses as invalid (Prometheus: a sample older than
/// its head takes, HTTP 400) is given up and counted, not retried forever:
/// what follows still arrives.
#[test]
fn remote_write_gives_up_a_refused_batch_and_goes_on() {
    if !have("prometheus") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _prom = prometheus(dir.path(), port);
    let p = Perch::start_with(&rw_target(
        "prom",
        &format!("http://127.0.0.1:{port}/api/v1/write"),
        "",
    ));
    let now = now_ms();
    let post = |body: String| {
        let r = p.post("/api/v1/import", "application/json", body);
        assert!(r.status == 204 || r.status == 200, "{}", r.body);
    };
    post(import_line("env_x", "a", now - 1000, 1.0));
    wait_until(
        "the first sample in Prometheus",
        Duration::from_secs(20),
        || prom_samples(port, "env_x") == vec![(now - 1000, 1.0)],
    );
    // Two hours older than what Prometheus holds: out of bounds.
    post(import_line("env_y", "a", now - 2 * 3600 * 1000, 2.0));
    wait_until("the refusal", Duration::from_secs(20), || {
        target_status(&p, "prom")["rejected_total"] == 1
    });
    post(import_line("env_x", "a", now, 3.0));
    wait_until(
        "the next sample in Prometheus",
        Duration::from_secs(20),
        || prom_samples(port, "env_x") == vec![(now - 1000, 1.0), (now, 3.0)],
    );
    let st = target_status(&p, "prom");
    assert_eq!(st["queue_items"], 0, "{st}");
    assert_eq!(st["connected"], true, "{st}");
    assert!(st["last_error"].as_str().unwrap().contains("400"), "{st}");
}

/// `max_bandwidth` paces sending: 50 messages of ~1 kB in batches of 10 at
/// 80 kbit/s (10 kB/s) take at least 4 s (a pause after each batch).
#[test]
fn max_bandwidth_paces_the_sender() {
    if !have("mosquitto") || !have("mosquitto_sub") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = mosquitto(dir.path(), port);
    let sub = Sub::start(dir.path(), port, "site/#");
    std::thread::sleep(Duration::from_millis(500));
    let p = Perch::start_with(&mqtt_target(
        "slow",
        port,
        "max_bandwidth = \"80kbit\"\nbatch_max = 10",
    ));
    wait_until("connected", Duration::from_secs(20), || {
        target_status(&p, "slow")["connected"] == true
    });
    let t = Instant::now();
    let mut pubr = Publisher::start(&p, "sensors/bw");
    for i in 0..50u64 {
        pubr.send(&format!("{i:0>1000}"));
    }
    pubr.finish();
    wait_until("50 upstream", Duration::from_secs(30), || {
        sub.lines().len() >= 50
    });
    let took = t.elapsed();
    eprintln!("50 kB at 80 kbit/s: {took:.2?}");
    assert!(took >= Duration::from_millis(3900), "{took:?}: not paced");
    assert!(took < Duration::from_secs(15), "{took:?}");
}

/// With perch stopped, `perch forward replay` queues on the data directory;
/// the next start sends it.
#[test]
fn replay_while_perch_is_stopped_is_sent_at_the_next_start() {
    if !have("victoria-metrics") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vm_port = free_port();
    let _vm = victoria(dir.path(), vm_port);
    let start = now_ms() - 2 * 3600 * 1000;
    let mut p = stopped_with_history(vm_port, "env_off", "d", start, 100, 60_000);
    let (code, out, err) = p.cli(&["forward", "replay", "vm", "--since", "24h"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("queued 100 samples of 1 series"), "{out}");
    p.restart();
    let all: Vec<(i64, f64)> = (0..100).map(|i| (start + i * 60_000, i as f64)).collect();
    wait_until(
        "the replay in VictoriaMetrics",
        Duration::from_secs(30),
        || vm_samples(vm_port, "env_off") == all,
    );
}

/// A Kafka-protocol broker: tansu (`cargo install tansu --features
/// dynostore`), keeping topics in memory.
fn tansu(dir: &Path, port: u16) -> Daemon {
    let url = format!("tcp://127.0.0.1:{port}");
    let d = Daemon::start(
        &tansu_program(),
        &[
            "broker".into(),
            format!("--listener-url={url}"),
            format!("--advertised-listener-url={url}"),
            "--storage-engine=memory://tansu/".into(),
        ],
        &dir.join(format!("tansu-{port}.log")),
    );
    wait_port(port);
    d
}

fn tansu_program() -> String {
    std::env::var("PERCH_TANSU").unwrap_or_else(|_| "tansu".into())
}

/// Runs tests/fixtures/kafka_consume.py (Debian's python3-kafka, a client
/// independent of perch's) and returns its lines.
fn kafka_client(port: u16, arg: &str) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kafka_consume.py");
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(format!("127.0.0.1:{port}"))
        .arg(arg)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "kafka_consume.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Records of `topic` from the beginning: (key, value) in partition order.
fn kafka_records(port: u16, topic: &str) -> Vec<(String, String)> {
    kafka_client(port, topic)
        .iter()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn have_python_kafka() -> bool {
    Command::new("/usr/bin/python3")
        .args(["-c", "import kafka, snappy"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn kafka_target(name: &str, port: u16, topic: &str, format: &str) -> String {
    format!(
        "\n[[forward]]\nname = \"{name}\"\nkind = \"kafka\"\nbrokers = [\"127.0.0.1:{port}\"]\ntopic = \"{topic}\"\nformat = \"{format}\"\nmatch = ['{{__name__=~\"env_.*\"}}']\nmax_backoff = \"1s\"\ntimeout = \"5s\"\n"
    )
}

/// Three Kafka targets (one per record format) on a real Kafka-protocol
/// broker (tansu), read back with python3-kafka. The broker goes down during steady writes;
/// perch is restarted mid-outage; once the broker is back every sample
/// written during the outage arrives, in order per series, duplicates
/// counted. (tansu keeps topics in memory: what it held before the outage
/// is checked before stopping it.)
#[test]
fn kafka_targets_through_an_outage_and_a_perch_restart() {
    if !have(&tansu_program()) || !have_python_kafka() {
        common::missing_peer("tansu and python3-kafka");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = tansu(dir.path(), port);
    let mut p = Perch::start_with(&format!(
        "{}{}{}",
        kafka_target("json", port, "site_{site}_{__name__}", "json"),
        kafka_target("lines", port, "lines.{__name__}", "influx-line"),
        kafka_target("tsdb", port, "tsdb", "opentsdb-json"),
    ));
    let start = now_ms() - 60_000;
    let write = |p: &Perch, r: std::ops::Range<i64>| {
        for i in r {
            let body = format!(
                "{}{}{}",
                import_line("env_temp", "a", start + i * 100, i as f64),
                import_line("env_temp", "b", start + i * 100, -(i as f64)),
                import_line("other_temp", "a", start + i * 100, i as f64)
            );
            let resp = p.post("/api/v1/import", "application/json", body);
            assert!(resp.status == 204 || resp.status == 200, "{}", resp.body);
        }
    };
    // (timestamp, value) of the json records of site a, in arrival order.
    let json_a = || -> Vec<(i64, f64)> {
        kafka_records(port, "site_a_env_temp")
            .iter()
            .map(|(k, v)| {
                assert_eq!(k, r#"env_temp{site="a"}"#);
                let v: serde_json::Value = serde_json::from_str(v).unwrap();
                assert_eq!(v["name"], "env_temp");
                assert_eq!(v["labels"], serde_json::json!({"site": "a"}));
                (
                    v["timestamp"].as_i64().unwrap(),
                    v["value"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let want = |r: std::ops::Range<i64>| -> Vec<(i64, f64)> {
        r.map(|i| (start + i * 100, i as f64)).collect()
    };
    write(&p, 0..60);
    wait_until("the first 60 in Kafka", Duration::from_secs(60), || {
        json_a() == want(0..60)
    });
    let lines: Vec<String> = kafka_records(port, "lines.env_temp")
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert!(lines.len() >= 120, "{lines:?}");
    assert_eq!(
        lines.iter().find(|l| l.contains("site=b")).unwrap(),
        &format!("env_temp,site=b value=-0.0 {}", start * 1_000_000)
    );
    let tsdb = kafka_records(port, "tsdb");
    let first: serde_json::Value = serde_json::from_str(&tsdb[0].1).unwrap();
    assert_eq!(first["metric"], "env_temp");
    assert!(first["tags"]["site"].is_string(), "{first}");
    assert_eq!(first["timestamp"], start);
    for t in ["json", "lines", "tsdb"] {
        wait_until("sent", Duration::from_secs(20), || {
            target_status(&p, t)["queue_items"] == 0
        });
    }

    broker.stop();
    write(&p, 60..130);
    wait_until("the outage noticed", Duration::from_secs(30), || {
        target_status(&p, "json")["connected"] == false
    });
    p.stop();
    p.restart();
    let st = target_status(&p, "json");
    assert!(st["queue_items"].as_u64().unwrap() > 0, "{st}");
    write(&p, 130..200);
    broker.restart();
    wait_port(port);
    wait_until(
        "the outage's samples in Kafka",
        Duration::from_secs(90),
        || {
            let got = json_a();
            let (missing, _, _) = tally_ts(&got, start, 60..200);
            missing.is_empty()
        },
    );
    let got = json_a();
    let (missing, dups, ordered) = tally_ts(&got, start, 60..200);
    eprintln!(
        "kafka outage: 140 written, {} records, {dups} duplicates",
        got.len()
    );
    assert!(missing.is_empty(), "missing {missing:?}");
    assert!(ordered, "out of order: {got:?}");
    assert!(got.iter().all(|&(t, v)| v == ((t - start) / 100) as f64));
    let b: Vec<String> = kafka_records(port, "site_b_env_temp")
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert!(b.len() >= 140, "{}", b.len());
    let topics = kafka_client(port, "--list");
    assert!(
        topics.contains(&"site_a_env_temp".to_string()),
        "{topics:?}"
    );
    assert!(
        !topics.iter().any(|t| t.contains("other_temp")),
        "match keeps other_temp out: {topics:?}"
    );
    for t in ["json", "lines", "tsdb"] {
        wait_until("drained", Duration::from_secs(30), || {
            target_status(&p, t)["queue_items"] == 0
        });
        let st = target_status(&p, t);
        assert_eq!(st["connected"], true, "{st}");
        assert_eq!(st["dropped_total"], 0, "{st}");
        assert_eq!(st["rejected_total"], 0, "{st}");
    }
}

/// Sample numbers (from timestamps) seen in `got`, against those expected.
fn tally_ts(
    got: &[(i64, f64)],
    start: i64,
    expected: std::ops::Range<i64>,
) -> (Vec<u64>, usize, bool) {
    let seqs: Vec<u64> = got
        .iter()
        .map(|&(t, _)| ((t - start) / 100) as u64)
        .filter(|&s| s >= expected.start as u64)
        .collect();
    tally(&seqs, expected.start as u64..expected.end as u64)
}

/// `priority`: after an outage of both targets, the target of priority 1
/// (VictoriaMetrics, slowed by `max_bandwidth`) drains its backlog before
/// the target of priority 2 (Prometheus) sends anything; then the second
/// gets everything too.
#[test]
fn higher_priority_target_catches_up_first() {
    if !have("victoria-metrics") || !have("prometheus") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (vm_port, prom_port) = (free_port(), free_port());
    let mut p = Perch::start_with(&format!(
        "{}{}",
        rw_target(
            "first",
            &format!("http://127.0.0.1:{vm_port}/api/v1/write"),
            "priority = 1\nbatch_max = 100\nmax_bandwidth = \"24kbit\""
        ),
        rw_target(
            "second",
            &format!("http://127.0.0.1:{prom_port}/api/v1/write"),
            "priority = 2\nbatch_max = 100"
        ),
    ));
    let start = now_ms() - 30 * 60_000;
    for chunk in 0..20i64 {
        let body: String = (chunk * 100..(chunk + 1) * 100)
            .map(|i| import_line("env_prio", "x", start + i * 500, i as f64))
            .collect();
        let r = p.post("/api/v1/import", "application/json", body);
        assert!(r.status == 204 || r.status == 200, "{}", r.body);
    }
    wait_until("both queues hold 20 items", Duration::from_secs(20), || {
        target_status(&p, "first")["queue_items"] == 20
            && target_status(&p, "second")["queue_items"] == 20
    });
    p.stop();
    let _vm = victoria(dir.path(), vm_port);
    let _prom = prometheus(dir.path(), prom_port);
    p.restart();
    let mut held_seen = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = p.get("/api/v1/forward");
        let all = r.json();
        let find = |n: &str| {
            all.as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"] == n)
                .cloned()
                .unwrap()
        };
        let (first, second) = (find("first"), find("second"));
        let first_sent = first["sent_total"].as_u64().unwrap();
        held_seen |= second["held_by_priority"] == true;
        if first_sent < 1900 {
            assert_eq!(
                second["sent_total"], 0,
                "the second target sent while the first caught up: {first} {second}"
            );
        }
        if first["queue_items"] == 0 && second["queue_items"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "not drained: {first} {second}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(held_seen, "the second target was never shown as held back");
    let all: Vec<(i64, f64)> = (0..2000).map(|i| (start + i * 500, i as f64)).collect();
    wait_until("everything in Prometheus", Duration::from_secs(30), || {
        prom_samples(prom_port, "env_prio") == all
    });
    let mut got = vm_samples(vm_port, "env_prio");
    got.dedup();
    assert_eq!(got, all);
}

/// Targets added through the API (what Settings does): validated with the
/// field named, admins only, forwarding at once, kept across a restart,
/// changed (password kept when left out) and deleted; the config file's
/// targets are read-only here.
#[test]
fn targets_added_through_the_api_forward_and_survive_a_restart() {
    if !have("victoria-metrics") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vm_port = free_port();
    let _vm = victoria(dir.path(), vm_port);
    let mut p = Perch::start_with(&rw_target("filed", "http://127.0.0.1:9/api/v1/write", ""));
    let target = |extra: &str| {
        format!(
            r#"{{"name":"api-vm","kind":"remote_write","url":"http://127.0.0.1:{vm_port}/api/v1/write","match":["{{__name__=\"env_api\"}}"],"max_backoff":"1s"{extra}}}"#
        )
    };
    let r = p.request(
        "POST",
        "/api/v1/forward/targets",
        Some(r#"{"name":"k","kind":"kafka","brokers":["nohost"]}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("brokers[0]") && r.body.contains("host:port"),
        "{}",
        r.body
    );
    let r = p.request(
        "POST",
        "/api/v1/forward/targets",
        Some(r#"{"name":"x","kind":"ftp"}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let viewer = format!("Bearer {}", p.api_token("viewer"));
    let r = p.request_as(
        Some(&viewer),
        "POST",
        "/api/v1/forward/targets",
        &[("Content-Type", "application/json")],
        Some(target("").as_bytes()),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = p.request("POST", "/api/v1/forward/targets", Some(&target("")));
    assert_eq!(r.status, 201, "{}", r.body);
    let r = p.request("POST", "/api/v1/forward/targets", Some(&target("")));
    assert_eq!(r.status, 409, "{}", r.body);
    let start = now_ms() - 60_000;
    let write = |p: &Perch, r: std::ops::Range<i64>| {
        let body: String = r
            .map(|i| import_line("env_api", "s", start + i * 100, i as f64))
            .collect();
        let resp = p.post("/api/v1/import", "application/json", body);
        assert!(resp.status == 204 || resp.status == 200, "{}", resp.body);
    };
    let want =
        |n: i64| -> Vec<(i64, f64)> { (0..n).map(|i| (start + i * 100, i as f64)).collect() };
    write(&p, 0..50);
    wait_until("forwarded at once", Duration::from_secs(30), || {
        let mut got = vm_samples(vm_port, "env_api");
        got.dedup();
        got == want(50)
    });
    let defs = p.get("/api/v1/forward/targets").json();
    let by_name = |n: &str| {
        defs.as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_name("api-vm")["source"], "api");
    assert_eq!(by_name("filed")["source"], "config");
    assert_eq!(by_name("api-vm")["has_password"], false);

    p.stop();
    p.restart();
    assert_eq!(target_status(&p, "api-vm")["kind"], "remote_write");
    write(&p, 50..100);
    wait_until("forwarded after a restart", Duration::from_secs(30), || {
        let mut got = vm_samples(vm_port, "env_api");
        got.dedup();
        got == want(100)
    });

    // A password set once stays when an edit leaves it out.
    let r = p.request(
        "PUT",
        "/api/v1/forward/targets/api-vm",
        Some(&target(r#","username":"u","password":"pw","priority":3"#)),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = p.request(
        "PUT",
        "/api/v1/forward/targets/api-vm",
        Some(&target(r#","username":"u","priority":4"#)),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let defs = p.get("/api/v1/forward/targets");
    assert!(!defs.body.contains("pw"), "a password shown: {}", defs.body);
    let t = defs
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "api-vm")
        .cloned()
        .unwrap();
    assert_eq!(t["has_password"], true, "{t}");
    assert_eq!(t["priority"], 4, "{t}");
    assert_eq!(target_status(&p, "api-vm")["priority"], 4);
    assert!(
        target_status(&p, "api-vm")["sent_total"].as_u64().unwrap() >= 50,
        "the counters (since the restart) carry on across an edit"
    );
    // Edits while samples stream in lose none of them: the queue carries on.
    let writer = {
        let url = p.url("/api/v1/import");
        let auth = common::basic(common::ADMIN, common::ADMIN_PASSWORD);
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            for i in 100..300i64 {
                let body = import_line("env_api", "s", start + i * 100, i as f64);
                let r = agent
                    .post(&url)
                    .header("Authorization", &auth)
                    .header("Content-Type", "application/json")
                    .send(body.as_bytes())
                    .expect("import");
                assert!(r.status().is_success(), "{}", r.status());
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    for prio in [5, 6, 7] {
        let r = p.request(
            "PUT",
            "/api/v1/forward/targets/api-vm",
            Some(&target(&format!(r#","username":"u","priority":{prio}"#))),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        std::thread::sleep(Duration::from_millis(150));
    }
    writer.join().unwrap();
    wait_until(
        "every sample through the edits",
        Duration::from_secs(30),
        || {
            let mut got = vm_samples(vm_port, "env_api");
            got.dedup();
            got == want(300)
        },
    );
    let moved = target(r#","username":"u""#).replace(
        &format!("127.0.0.1:{vm_port}/api/v1/write"),
        "elsewhere.example:1/w",
    );
    let r = p.request("PUT", "/api/v1/forward/targets/api-vm", Some(&moved));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("give it again"), "{}", r.body);
    let r = p.request(
        "PUT",
        "/api/v1/forward/targets/api-vm",
        Some(&target(
            r#","username":"u","bearer_token_file":"/etc/shadow""#,
        )),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("config file"), "{}", r.body);
    let r = p.request(
        "PUT",
        "/api/v1/forward/targets/api-vm",
        Some(&target(r#","username":"u""#).replace("remote_write", "mqtt")),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("kind"), "{}", r.body);
    let r = p.request(
        "PUT",
        "/api/v1/forward/targets/api-vm",
        Some(&target(r#","username":"u","queue_max_bytes":"1KiB""#)),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("queue_max_bytes"), "{}", r.body);

    let r = p.request("DELETE", "/api/v1/forward/targets/filed", None);
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("config file"), "{}", r.body);
    let r = p.request("DELETE", "/api/v1/forward/targets/api-vm", None);
    assert_eq!(r.status, 204, "{}", r.body);
    let r = p.request("DELETE", "/api/v1/forward/targets/api-vm", None);
    assert_eq!(r.status, 404, "{}", r.body);
    let all = p.get("/api/v1/forward").json();
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .all(|t| t["name"] != "api-vm"),
        "{all}"
    );
    p.stop();
    p.restart();
    let all = p.get("/api/v1/forward").json();
    assert_eq!(all.as_array().unwrap().len(), 1, "deleted for good: {all}");
}

/// `perch forward replay` of an MQTT target re-publishes the message
/// history the search index kept (messages from before the target
/// existed), oldest first, only the target's topics.
#[test]
fn replay_republishes_stored_mqtt_messages() {
    if !have("mosquitto") || !have("mosquitto_sub") || !have("mosquitto_pub") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = mosquitto(dir.path(), port);
    let sub = Sub::start(dir.path(), port, "site/#");
    let mut p = Perch::start_with("[mqtt]\nallow_anonymous = true\n");
    let mut old = Publisher::start(&p, "sensors/old/x");
    for i in 0..30 {
        old.send(&format!("{{\"seq\":{i},\"note\":\"before the target\"}}"));
    }
    old.finish();
    let mut other = Publisher::start(&p, "other/x");
    other.send("not for this target");
    other.finish();
    std::thread::sleep(Duration::from_millis(500));
    p.stop();
    std::fs::write(&p.config_path, mqtt_target("up", port, "")).unwrap();
    p.restart();
    wait_until("connected", Duration::from_secs(20), || {
        target_status(&p, "up")["connected"] == true
    });
    assert!(
        sub.lines().is_empty(),
        "nothing live yet: {:?}",
        sub.lines()
    );
    let (code, out, err) = p.cli(&["forward", "replay", "up", "--since", "1h"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("queued 30 messages for up"), "{out}");
    let prefix = format!("site/{}/", hostname());
    wait_until("30 replayed upstream", Duration::from_secs(30), || {
        sub.lines().len() >= 30
    });
    std::thread::sleep(Duration::from_millis(300));
    let lines = sub.lines();
    assert_eq!(lines.len(), 30, "{lines:?}");
    for (i, (topic, payload)) in lines.iter().enumerate() {
        assert_eq!(topic, &format!("{prefix}sensors/old/x"));
        assert_eq!(
            payload,
            &format!("{{\"seq\":{i},\"note\":\"before the target\"}}")
        );
    }
}
