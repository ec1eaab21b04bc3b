//! perch as a system service, for what can be checked without a VM: the
//! systemd unit (`systemd-analyze verify` and `security`), the sd_notify
//! protocol against a notify socket the test binds, SIGTERM under write load,
//! config errors, the TLS key generator and the Debian package. The image
//! itself is booted by `image-build/test-boot.sh` (docs/appliance.md).

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, BIN};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> (i32, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The unit with ExecStart pointing at the binary under test, in a temporary
/// directory (systemd-analyze checks that the command exists).
fn unit_for_test(dir: &Path) -> PathBuf {
    let unit = std::fs::read_to_string(repo().join("systemd/perch.service")).unwrap();
    assert!(unit.contains(
        "ExecStart=/usr/bin/perch serve --config /etc/perch/perch.toml --data-dir /var/lib/perch"
    ));
    let unit = unit.replace("ExecStart=/usr/bin/perch ", &format!("ExecStart={BIN} "));
    let path = dir.join("perch.service");
    std::fs::write(&path, unit).unwrap();
    let keygen = std::fs::read_to_string(repo().join("systemd/perch-tls-keygen.service"))
        .unwrap()
        .replace(
            "ExecStart=/usr/lib/perch/tls-keygen",
            &format!("ExecStart={}", repo().join("systemd/tls-keygen").display()),
        );
    std::fs::write(dir.join("perch-tls-keygen.service"), keygen).unwrap();
    path
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_test(dir.path());
    for u in [unit, dir.path().join("perch-tls-keygen.service")] {
        let (code, out) = run(Command::new("systemd-analyze")
            .arg("verify")
            .arg(&u)
            .env("SYSTEMD_LOG_LEVEL", "warning"));
        // Warnings about units the host lacks are not the unit's fault.
        let own: Vec<&str> = out
            .lines()
            .filter(|l| l.contains("perch"))
            .filter(|l| !l.contains("Failed to load configuration"))
            .collect();
        assert!(
            code == 0 && own.is_empty(),
            "systemd-analyze verify {} (exit {code}):\n{out}",
            u.display()
        );
    }
}

#[test]
fn unit_file_exposure_is_at_most_2() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_test(dir.path());
    let (code, out) = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager", "--threshold=20"])
        .arg(&unit));
    let level: f64 = out
        .lines()
        .find_map(|l| l.split("Overall exposure level for perch.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
    println!("systemd-analyze security: exposure {level}");
    assert!(
        level <= 2.0 && code == 0,
        "exposure {level} (exit {code}):\n{out}"
    );
    // The properties the issue names, present and not weakened.
    let text = std::fs::read_to_string(repo().join("systemd/perch.service")).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=30s",
        "Restart=always",
        "StateDirectory=perch",
        "ConfigurationDirectory=perch",
        "User=perch",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "RestartPreventExitStatus=78",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "perch.service lacks `{line}`"
        );
    }
}

/// A notify socket like systemd's, and perch started against it.
struct Supervised {
    _dir: tempfile::TempDir,
    socket: UnixDatagram,
    child: Child,
    http_port: u16,
    mqtt_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
}

impl Supervised {
    fn start(watchdog_usec: Option<u64>, extra_toml: &str) -> Supervised {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        let config = dir.path().join("perch.toml");
        std::fs::write(&config, extra_toml).unwrap();
        let (http_port, mqtt_port) = (free_port(), free_port());
        let data_dir = dir.path().join("data");
        let log = dir.path().join("perch.log");
        // Writes need an account, as for any client.
        common::add_test_admin(&data_dir, &config);
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--http", &format!("127.0.0.1:{http_port}")])
            .args(["--mqtt", &format!("127.0.0.1:{mqtt_port}")])
            .args(["--mqtt-ws", "off"])
            .env("NOTIFY_SOCKET", &path)
            .env("JOURNAL_STREAM", "8:1234")
            .env_remove("WATCHDOG_PID")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        match watchdog_usec {
            Some(u) => cmd.env("WATCHDOG_USEC", u.to_string()),
            None => cmd.env_remove("WATCHDOG_USEC"),
        };
        let child = cmd.spawn().unwrap();
        Supervised {
            _dir: dir,
            socket,
            child,
            http_port,
            mqtt_port,
            data_dir,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The next notification, if one arrives within `timeout`.
    fn recv(&self, timeout: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => None,
        }
    }

    fn wait_for(&self, what: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Some(m) = self.recv(Duration::from_millis(200)) {
                let done = m.lines().any(|l| l == what);
                seen.push(m);
                if done {
                    return seen;
                }
            }
        }
        panic!(
            "no {what} within {timeout:?}; got {seen:?}\nlog:\n{}",
            self.log()
        );
    }

    fn sigterm(&self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> (std::process::ExitStatus, Duration) {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return (s, t.elapsed());
            }
            if t.elapsed() > timeout {
                let _ = self.child.kill();
                panic!("perch did not exit within {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn ready_is_sent_once_http_and_mqtt_listen_then_watchdog_then_stopping() {
    let mut p = Supervised::start(Some(2_000_000), "");
    let seen = p.wait_for("READY=1", Duration::from_secs(60));
    // READY=1 is the first notification, and by then both listeners answer.
    assert!(seen[0].lines().any(|l| l == "READY=1"), "{seen:?}");
    assert_eq!(http_status(p.http_port, "/healthz"), Some(200));
    assert!(TcpStream::connect(("127.0.0.1", p.mqtt_port)).is_ok());
    assert!(p.log().contains("systemd watchdog enabled"), "{}", p.log());

    // WATCHDOG_USEC=2 s: a ping every 0.5 s.
    let t = Instant::now();
    let mut pings = 0;
    while t.elapsed() < Duration::from_secs(3) {
        if let Some(m) = p.recv(Duration::from_millis(100)) {
            pings += m.lines().filter(|l| *l == "WATCHDOG=1").count();
        }
    }
    assert!((4..=8).contains(&pings), "{pings} pings in 3 s");

    p.sigterm();
    p.wait_for("STOPPING=1", Duration::from_secs(10));
    let (status, took) = p.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "exit {status}:\n{}", p.log());
    println!("stopped in {took:?}");
    // Under JOURNAL_STREAM the journal adds the time: perch does not.
    let first = p.log().lines().next().unwrap_or_default().to_string();
    assert!(
        first.trim_start().starts_with("INFO"),
        "log lines should not carry a timestamp under the journal: {first:?}"
    );
}

#[test]
fn no_watchdog_pings_unless_systemd_asks() {
    let mut p = Supervised::start(None, "");
    p.wait_for("READY=1", Duration::from_secs(60));
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1500) {
        if let Some(m) = p.recv(Duration::from_millis(100)) {
            assert!(!m.contains("WATCHDOG=1"), "unexpected {m:?}");
        }
    }
    p.sigterm();
    let (status, _) = p.wait_exit(Duration::from_secs(60));
    assert!(status.success());
}

/// systemd's stop timeout for perch.service (TimeoutStopSec=90s).
const STOP_TIMEOUT: Duration = Duration::from_secs(90);

#[test]
fn sigterm_under_write_load_exits_0_within_the_stop_timeout_and_keeps_the_data() {
    let mut p = Supervised::start(Some(10_000_000), "");
    p.wait_for("READY=1", Duration::from_secs(60));
    let port = p.http_port;
    let admin = common::basic(common::ADMIN, common::ADMIN_PASSWORD);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (stop, acked, admin) = (stop.clone(), acked.clone(), admin.clone());
            std::thread::spawn(move || {
                let mut batch = 0u64;
                let base = common::now_ms() / 1000 * 1000 - 3_600_000;
                while !stop.load(Ordering::SeqCst) && batch < 100_000 {
                    let mut body = String::new();
                    for i in 0..500u64 {
                        let ts = base + ((batch * 500 + i) as i64);
                        body.push_str(&format!(
                            "load,writer=w{w},dev=d{} v={}.5 {ts}\n",
                            i % 50,
                            i
                        ));
                    }
                    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                        break;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let req = format!(
                        "POST /write?precision=ms HTTP/1.1\r\nHost: t\r\nAuthorization: {admin}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(req.as_bytes()).is_err() {
                        break;
                    }
                    let mut resp = String::new();
                    let _ = s.read_to_string(&mut resp);
                    if resp.starts_with("HTTP/1.1 204") {
                        acked.fetch_add(500, Ordering::SeqCst);
                    }
                    batch += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let before = acked.load(Ordering::SeqCst);
    assert!(before > 10_000, "only {before} samples written in 3 s");
    p.sigterm();
    let (status, took) = p.wait_exit(STOP_TIMEOUT);
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    println!(
        "SIGTERM after {before} samples; exited {status} in {took:?}; {} acknowledged in all",
        acked.load(Ordering::SeqCst)
    );
    assert!(status.success(), "exit {status}:\n{}", p.log());
    assert!(
        took < Duration::from_secs(30),
        "stopping took {took:?}, a third of the stop timeout"
    );
    // A clean stop leaves a consistent store with an empty WAL.
    let (code, out) = run(Command::new(BIN)
        .args(["check", "--json", "--data-dir"])
        .arg(&p.data_dir));
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["wal_samples"], 0, "{out}");
    assert!(
        report["samples"].as_u64().unwrap() >= acked.load(Ordering::SeqCst),
        "{out}"
    );
}

#[test]
fn a_config_error_exits_78_naming_the_key_and_the_fixed_file_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("perch.toml");
    std::fs::write(&config, "[storage]\nretention = \"forever\"\n").unwrap();
    let serve = |config: &Path| {
        let mut c = Command::new(BIN);
        c.args(["serve", "--config"])
            .arg(config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--http", &format!("127.0.0.1:{}", free_port())])
            .args(["--mqtt", &format!("127.0.0.1:{}", free_port())])
            .args(["--mqtt-ws", "off"]);
        c
    };
    let (code, out) = run(&mut serve(&config));
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("storage.retention"), "{out}");
    assert!(out.contains("perch.toml"), "{out}");

    std::fs::write(&config, "[storage]\nretention = \"30d\"\n").unwrap();
    let mut p = Supervised::start(None, "[storage]\nretention = \"30d\"\n");
    p.wait_for("READY=1", Duration::from_secs(60));
    p.sigterm();
    assert!(p.wait_exit(Duration::from_secs(60)).0.success());
}

#[test]
fn the_packaged_config_is_valid_and_uses_the_state_directory() {
    let path = repo().join("packaging/perch.toml");
    let config = config::Config::load(
        Some(&path),
        &config::Overrides::default(),
        &[ingest::check_config, forward::check_config],
    )
    .unwrap();
    assert_eq!(config.data_dir, Path::new("/var/lib/perch"));
    assert_eq!(
        config.mqtt.tls_cert.as_deref(),
        Some(Path::new("/etc/perch/tls/cert.pem"))
    );
    assert!(!config.mqtt.allow_anonymous);
}

#[test]
fn the_tls_key_generator_makes_a_pair_perch_serves_mqtt_tls_with() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let (code, out) =
        run(Command::new(repo().join("systemd/tls-keygen")).env("PERCH_TLS_DIR", &tls));
    assert_eq!(code, 0, "{out}");
    let port = free_port();
    let toml = format!(
        "[mqtt]\ntls_listen = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        tls.join("cert.pem").display(),
        tls.join("key.pem").display()
    );
    let mut p = Supervised::start(None, &toml);
    p.wait_for("READY=1", Duration::from_secs(60));
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "{}",
        p.log()
    );
    p.sigterm();
    assert!(p.wait_exit(Duration::from_secs(60)).0.success());
}

#[test]
fn the_debian_package_holds_binary_units_conffile_and_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let arch = String::from_utf8(
        Command::new("dpkg")
            .arg("--print-architecture")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    // PERCH_FAST_BUILD: the package uncompressed, as for CI's image.
    let (code, out) = run(Command::new(repo().join("packaging/build-deb.sh"))
        .env("PERCH_FAST_BUILD", "1")
        .args(["--arch", &arch, "--binary", BIN, "--out"])
        .arg(dir.path()));
    assert_eq!(code, 0, "{out}");
    let version = env!("CARGO_PKG_VERSION");
    let deb = dir.path().join(format!("perch_{version}_{arch}.deb"));
    assert!(deb.exists(), "{out}");

    let (_, files) = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for f in [
        "./usr/bin/perch",
        "./lib/systemd/system/perch.service",
        "./lib/systemd/system/perch-tls-keygen.service",
        "./usr/lib/perch/tls-keygen",
        "./usr/lib/sysusers.d/perch.conf",
        "./etc/perch/perch.toml",
        "./etc/avahi/services/perch.service",
        "./usr/share/doc/perch/copyright",
    ] {
        assert!(files.lines().any(|l| l.ends_with(f)), "no {f} in:\n{files}");
    }
    let (_, control) = run(Command::new("dpkg-deb").args(["--field"]).arg(&deb));
    assert!(
        control.contains(&format!("Architecture: {arch}")),
        "{control}"
    );
    assert!(control.contains("libc6 (>= 2."), "{control}");
    assert!(
        control.contains("Recommends: avahi-daemon, libnss-mdns"),
        "{control}"
    );
    let x = dir.path().join("control");
    run(Command::new("dpkg-deb").arg("--control").arg(&deb).arg(&x));
    assert_eq!(
        std::fs::read_to_string(x.join("conffiles")).unwrap().trim(),
        "/etc/perch/perch.toml\n/etc/avahi/services/perch.service"
    );
    let postinst = std::fs::read_to_string(x.join("postinst")).unwrap();
    assert!(postinst.contains("systemd-sysusers perch.conf"));
    assert!(postinst.contains("deb-systemd-helper enable perch.service"));
    for script in ["postinst", "prerm", "postrm"] {
        let (code, out) = run(Command::new("sh").arg("-n").arg(x.join(script)));
        assert_eq!(code, 0, "{script}: {out}");
    }
}

#[test]
fn shell_scripts_are_shellcheck_clean() {
    let scripts = [
        "packaging/build-deb.sh",
        "packaging/cross-build.sh",
        "packaging/debian/postinst",
        "packaging/debian/prerm",
        "packaging/debian/postrm",
        "systemd/tls-keygen",
        "image-build/build.sh",
        "image-build/lib.sh",
        "image-build/customize.sh",
        "image-build/raspios.sh",
        "image-build/test-boot.sh",
        "image-build/overlay/usr/lib/perch-image/setup",
        "scripts/run",
        "scripts/test",
        "scripts/setup-rust",
        "scripts/fuzz",
        "scripts/ha-venv",
        "scripts/vendor-web",
        "scripts/bench-forward.sh",
    ];
    let (code, out) = run(Command::new("shellcheck")
        .current_dir(repo())
        .args(["-x", "-P", "SCRIPTDIR"])
        .args(scripts));
    assert_eq!(code, 0, "shellcheck:\n{out}");
}
