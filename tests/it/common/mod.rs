//! Starts the real `perch` binary on free loopback ports with its own data
//! directory, and talks to it over HTTP like a user would.

pub mod camera;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_perch");

/// A loopback port nothing listens on, for perch or a peer to bind later.
/// The port is free again once this returns, so the kernel may offer it
/// anew; all tests share this process and run in parallel, so a port is
/// handed out at most once per process.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if GIVEN
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(port)
        {
            return port;
        }
    }
}

pub struct Perch {
    pub dir: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    pub http_port: u16,
    pub mqtt_port: u16,
    pub ws_port: u16,
    child: Option<Child>,
    log_path: PathBuf,
    /// The Authorization header sent by `get`, `post` and `request`: the
    /// admin created at start, or none for [`Perch::start_bare`].
    pub auth: Option<String>,
}

/// A test peer (a program from Debian) is missing. `scripts/test` installs
/// them all and sets `PERCH_REQUIRE_PEERS`, so there this fails the test
/// instead of letting it pass without having run; elsewhere it skips,
/// loudly.
pub fn missing_peer(what: &str) {
    if std::env::var_os("PERCH_REQUIRE_PEERS").is_some() {
        panic!("{what} is missing, and PERCH_REQUIRE_PEERS is set (scripts/test installs it)");
    }
    eprintln!("SKIP: {what} is missing (scripts/test installs it)");
}

/// Whether `cmd` runs; reports it missing otherwise.
pub fn have_command(cmd: &str) -> bool {
    let ok = Command::new(cmd)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        missing_peer(cmd);
    }
    ok
}

pub fn have_mosquitto() -> bool {
    have_command("mosquitto_pub")
}

/// The admin every [`Perch::start_with`] creates before perch starts.
pub const ADMIN: &str = "test-admin";
pub const ADMIN_PASSWORD: &str = "test-admin-password";

/// Creates [`ADMIN`] in a data directory, whether perch runs on it or not.
pub fn add_test_admin(data_dir: &Path, config: &Path) {
    let (code, _, err) = run_cli(
        &[
            "user",
            "add",
            ADMIN,
            "--role",
            "admin",
            "--password",
            ADMIN_PASSWORD,
        ],
        data_dir,
        config,
        None,
    );
    assert_eq!(code, 0, "cannot create the test admin: {err}");
}

pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64_lite::encode(&format!("{user}:{password}"))
    )
}

pub struct Resp {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        // Redirects (pages → /login) are asserted, not followed.
        .max_redirects(0)
        .max_redirects_will_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn to_resp(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Resp {
    let mut r = r.expect("HTTP request failed");
    let status = r.status().as_u16();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = r
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_string()
        .unwrap_or_default();
    Resp {
        status,
        body,
        headers,
    }
}

impl Perch {
    /// Starts perch with extra TOML appended to its config file, with an
    /// admin account ([`ADMIN`]) whose Basic auth the request helpers send.
    pub fn start_with(extra_toml: &str) -> Perch {
        Perch::start_inner(extra_toml, true)
    }

    /// Starts perch with no accounts at all (a freshly flashed box); the
    /// request helpers send no credentials.
    pub fn start_bare(extra_toml: &str) -> Perch {
        Perch::start_inner(extra_toml, false)
    }

    fn start_inner(extra_toml: &str, with_admin: bool) -> Perch {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let config_path = dir.path().join("perch.toml");
        std::fs::write(&config_path, extra_toml).unwrap();
        let mut p = Perch {
            log_path: dir.path().join("perch.log"),
            dir,
            data_dir,
            config_path,
            http_port: free_port(),
            mqtt_port: free_port(),
            ws_port: free_port(),
            child: None,
            auth: None,
        };
        if with_admin {
            add_test_admin(&p.data_dir, &p.config_path);
            p.auth = Some(basic(ADMIN, ADMIN_PASSWORD));
        }
        // free_port() releases its port before perch binds it, so a test
        // running alongside may take it first: then try other ports.
        for _ in 0..5 {
            p.spawn();
            match p.try_wait_ready() {
                Ok(()) => return p,
                Err(log) if log.contains("Address already in use") => {
                    p.child = None;
                    std::fs::write(&p.log_path, "").unwrap();
                    p.http_port = free_port();
                    p.mqtt_port = free_port();
                    p.ws_port = free_port();
                }
                Err(log) => panic!("{log}"),
            }
        }
        panic!("no free ports for perch:\n{}", p.log());
    }

    pub fn start() -> Perch {
        Perch::start_with("")
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("perch runs").id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--http", &format!("127.0.0.1:{}", self.http_port)])
            .args(["--mqtt", &format!("127.0.0.1:{}", self.mqtt_port)])
            .args(["--mqtt-ws", &format!("127.0.0.1:{}", self.ws_port)])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start perch");
        self.child = Some(child);
    }

    pub fn wait_ready(&mut self) {
        if let Err(log) = self.try_wait_ready() {
            panic!("{log}");
        }
    }

    /// Waits for /healthz; the reason with the log if perch exits first.
    fn try_wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!(
                    "perch exited with {status} during start:\n{}",
                    self.log()
                ));
            }
            if let Ok(r) = agent().get(&self.url("/healthz")).call() {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            assert!(
                Instant::now() < deadline,
                "perch did not become ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request_as(self.auth.as_deref(), "GET", path, &[], None::<&[u8]>)
    }

    /// A GET without credentials.
    pub fn get_anon(&self, path: &str) -> Resp {
        self.request_as(None, "GET", path, &[], None::<&[u8]>)
    }

    /// A URL carrying the admin's credentials, for players (ffprobe).
    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "http://{ADMIN}:{ADMIN_PASSWORD}@127.0.0.1:{}{path}",
            self.http_port
        )
    }

    /// A new API token with `role`, created by the admin.
    pub fn api_token(&self, role: &str) -> String {
        let r = self.request(
            "POST",
            "/api/v1/tokens",
            Some(&format!(r#"{{"name":"test-{role}","role":"{role}"}}"#)),
        );
        assert_eq!(r.status, 201, "token: {}", r.body);
        r.json()["token"].as_str().unwrap().to_string()
    }

    pub fn get_auth(&self, path: &str, user: &str, password: &str) -> Resp {
        self.request_as(
            Some(&basic(user, password)),
            "GET",
            path,
            &[],
            None::<&[u8]>,
        )
    }

    pub fn post(&self, path: &str, content_type: &str, body: impl AsRef<[u8]>) -> Resp {
        self.request_as(
            self.auth.as_deref(),
            "POST",
            path,
            &[("Content-Type", content_type)],
            Some(body),
        )
    }

    /// A POST with these headers; an Authorization among them replaces the
    /// admin's.
    pub fn post_with_headers(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl AsRef<[u8]>,
    ) -> Resp {
        self.request_as(self.auth.as_deref(), "POST", path, headers, Some(body))
    }

    /// Any method with an optional JSON body.
    pub fn request(&self, method: &str, path: &str, json: Option<&str>) -> Resp {
        let headers: &[(&str, &str)] = if json.is_some() {
            &[("Content-Type", "application/json")]
        } else {
            &[]
        };
        self.request_as(self.auth.as_deref(), method, path, headers, json)
    }

    /// Any request, with `auth` as the Authorization header (none: none).
    pub fn request_as(
        &self,
        auth: Option<&str>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<impl AsRef<[u8]>>,
    ) -> Resp {
        let mut builder = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(path));
        let explicit = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        if let (Some(a), false) = (auth, explicit) {
            builder = builder.header("Authorization", a);
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        match body {
            Some(b) => to_resp(agent().run(builder.body(b.as_ref().to_vec()).unwrap())),
            None => to_resp(agent().run(builder.body(()).unwrap())),
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "perch did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: what a pulled plug does to the process.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill first");
        self.spawn();
        self.wait_ready();
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// mosquitto_pub as the test admin, QoS 1; the payload on standard
    /// input, so that large and odd payloads pass as they are.
    pub fn publish(&self, topic: &str, payload: &[u8], retain: bool) {
        let mut cmd = Command::new("mosquitto_pub");
        cmd.args(["-h", "127.0.0.1", "-p", &self.mqtt_port.to_string()])
            .args(["-u", ADMIN, "-P", ADMIN_PASSWORD])
            .args(["-q", "1", "-t", topic]);
        if retain {
            cmd.arg("-r");
        }
        if payload.is_empty() {
            cmd.arg("-n");
        } else {
            cmd.arg("-s");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_pub");
        child.stdin.take().unwrap().write_all(payload).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "mosquitto_pub -t {topic}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a perch subcommand against this instance's data directory.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
        run_cli(args, &self.data_dir, &self.config_path, stdin)
    }

    /// Exports all data (future timestamps included) of the series matching
    /// `selector` as (labels JSON, timestamps, values).
    pub fn export(&self, selector: &str) -> Vec<(serde_json::Value, Vec<i64>, Vec<f64>)> {
        let r = self.get(&format!(
            "/api/v1/export?match[]={}&end=4102444800",
            urlencode(selector)
        ));
        assert_eq!(r.status, 200, "export failed: {}", r.body);
        let mut out: Vec<(serde_json::Value, Vec<i64>, Vec<f64>)> = Vec::new();
        for line in r.body.lines().filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let ts: Vec<i64> = v["timestamps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_i64().unwrap())
                .collect();
            let vals: Vec<f64> = v["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| match x {
                    serde_json::Value::Number(n) => n.as_f64().unwrap(),
                    serde_json::Value::String(s) => s.parse().unwrap(),
                    other => panic!("bad value {other}"),
                })
                .collect();
            // Lines of the same series (one per day) are joined.
            match out.iter_mut().find(|(m, _, _)| *m == v["metric"]) {
                Some(e) => {
                    e.1.extend(ts);
                    e.2.extend(vals);
                }
                None => out.push((v["metric"].clone(), ts, vals)),
            }
        }
        out.sort_by_key(|a| a.0.to_string());
        out
    }
}

impl Drop for Perch {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- perch log ---\n{}", self.log());
            // Keep the evidence.
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            eprintln!("--- data kept in {} ---", dir.keep().display());
        }
    }
}

pub fn run_cli(
    args: &[&str],
    data_dir: &Path,
    config: &Path,
    stdin: Option<&str>,
) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("PERCH_DATA_DIR", data_dir)
        .env("PERCH_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Base64 for Basic auth headers, to avoid a dev-dependency.
pub mod base64_lite {
    pub fn encode(s: &str) -> String {
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let b = s.as_bytes();
        let mut out = String::new();
        for c in b.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

/// Wall-clock now in ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A child's output lines on a channel as they come, its standard error's
/// prefixed `stderr: ` (for mosquitto_sub and the like).
pub fn output_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::{BufRead, BufReader};
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().expect("stdout piped");
    let err = child.stderr.take().expect("stderr piped");
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx2.send(format!("stderr: {l}"));
        }
    });
    rx
}

/// `m{dev="d0"…}` through the VictoriaMetrics import, for `devices`
/// devices: 720 samples every 10 s from `t0_s`, device d's value at step
/// i being i * (d + 1).
pub fn import_ramp(p: &Perch, t0_s: i64, devices: i64) {
    let mut lines = String::new();
    for d in 0..devices {
        let ts: Vec<String> = (0..720)
            .map(|i| ((t0_s + i * 10) * 1000).to_string())
            .collect();
        let vs: Vec<String> = (0..720).map(|i| (i * (d + 1)).to_string()).collect();
        lines.push_str(&format!(
            "{{\"metric\":{{\"__name__\":\"m\",\"dev\":\"d{d}\"}},\"values\":[{}],\"timestamps\":[{}]}}\n",
            vs.join(","),
            ts.join(",")
        ));
    }
    let r = p.post("/api/v1/import", "application/json", lines);
    assert_eq!(r.status, 204, "{}", r.body);
}
