//! Issue 14: Home Assistant uses perch as its broker. A real Home Assistant
//! (PyPI's `homeassistant`, installed into build/ha-venv by scripts/ha-venv;
//! `PERCH_HASS` names its `hass`) runs on loopback against the real perch
//! binary, with the MQTT discovery examples of Home Assistant's own
//! documentation (tests/fixtures/homeassistant/). Checked from both sides:
//! Home Assistant's REST API says which entities it made, with which state
//! and unit; Debian's mosquitto clients and perch's API say what the broker
//! kept, relayed and stored: Home Assistant's birth and will, the retained
//! discovery configs byte for byte across a perch restart, the states as
//! series.

use crate::common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{free_port, have_mosquitto, missing_peer, Perch};

/// The broker account Home Assistant connects with: an admin, since it
/// subscribes to many integrations' discovery topics and publishes its birth.
const HA_USER: &str = "homeassistant";
const HA_PASSWORD: &str = "ha-broker-password";

/// The discovery configs from Home Assistant's MQTT documentation, with the
/// topics they are published (retained) on.
const CONFIGS: &[(&str, &str)] = &[
    (
        "homeassistant/sensor/sensorBedroomT/config",
        "sensorBedroomT.config.json",
    ),
    (
        "homeassistant/sensor/sensorBedroomH/config",
        "sensorBedroomH.config.json",
    ),
    (
        "homeassistant/device/ea334450945afc/config",
        "kitchen.device.config.json",
    ),
];
/// The state topic of the two bedroom sensors (single-component discovery)
/// and of the kitchen device (device discovery, subscribed at QoS 2).
const BEDROOM_STATE: &str = "homeassistant/sensor/sensorBedroom/state";
const KITCHEN_STATE: &str = "sensorBedroom/state";

/// Home Assistant 2025.4 starts in 10-20 s here (2 cores); a cold CI
/// machine running other tests alongside gets ample room.
const HA_START: Duration = Duration::from_secs(240);
/// Home Assistant retries a lost broker every 10 s, then waits for its
/// subscriptions to settle before the birth.
const HA_RECONNECT: Duration = Duration::from_secs(90);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/homeassistant")
        .join(name)
}

/// Home Assistant's `hass`: `PERCH_HASS`, else scripts/ha-venv's.
fn hass_program() -> Option<PathBuf> {
    let hass = std::env::var_os("PERCH_HASS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("build/ha-venv/bin/hass"));
    let runs = Command::new(&hass)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    runs.then_some(hass)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn mosquitto(program: &str, p: &Perch) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(["-h", "127.0.0.1", "-p", &p.mqtt_port.to_string()])
        .args(["-u", common::ADMIN, "-P", common::ADMIN_PASSWORD]);
    cmd
}

fn publish(p: &Perch, args: &[&str]) {
    let out = mosquitto("mosquitto_pub", p).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A mosquitto_sub whose output lines arrive on a channel.
struct Subscriber {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Subscriber {
    fn start(p: &Perch, args: &[&str]) -> Subscriber {
        let mut child = mosquitto("mosquitto_sub", p)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub");
        let rx = common::output_lines(&mut child);
        // Time to connect and subscribe.
        std::thread::sleep(Duration::from_millis(500));
        Subscriber {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for the line `want`; panics with what came instead.
    fn expect(&mut self, want: &str, within: Duration, ha: &mut HomeAssistant) {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Ok(l) = self
                .lines
                .recv_timeout(left.min(Duration::from_millis(500)))
            {
                let done = l == want;
                self.seen.push(l);
                if done {
                    return;
                }
            }
            ha.assert_running();
        }
        panic!(
            "no {want:?} within {within:?}; the subscriber got {:?}",
            self.seen
        );
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The messages perch holds retained under `filter`, as (topic, payload
/// in hex): what a new subscriber is sent, read with mosquitto_sub.
fn retained(p: &Perch, filter: &str) -> Vec<(String, String)> {
    let out = mosquitto("mosquitto_sub", p)
        .args(["-t", filter, "-F", "%r %t %x", "-W", "3"])
        .output()
        .unwrap();
    let mut got: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ' ');
            let (flag, topic, payload) = (f.next()?, f.next()?, f.next().unwrap_or(""));
            // Messages published meanwhile would arrive with retain 0.
            (flag == "1").then(|| (topic.to_string(), payload.to_string()))
        })
        .collect();
    got.sort();
    got
}

/// One Home Assistant, its configuration directory a fresh temporary one:
/// MQTT set up by a config entry written before the first start (the storage
/// format of Home Assistant's `.storage/core.config_entries`, version 1.1,
/// which every later version migrates from), HTTP on loopback, no onboarding
/// done until [`HomeAssistant::token`] does it through the REST API.
struct HomeAssistant {
    hass: PathBuf,
    dir: Option<tempfile::TempDir>,
    http_port: u16,
    child: Option<Child>,
}

impl HomeAssistant {
    fn new(hass: PathBuf) -> HomeAssistant {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".storage")).unwrap();
        let http_port = free_port();
        std::fs::write(
            dir.path().join("configuration.yaml"),
            format!(
                "homeassistant:
  name: perch test
  latitude: 0
  longitude: 0
  elevation: 0
  unit_system: metric
  time_zone: UTC
  country: DE
http:
  server_host: 127.0.0.1
  server_port: {http_port}
logger:
  default: info
  logs:
    homeassistant.components.mqtt: debug
"
            ),
        )
        .unwrap();
        HomeAssistant {
            hass,
            dir: Some(dir),
            http_port,
            child: None,
        }
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    /// Writes the MQTT config entry: perch on `port`, MQTT `protocol` ("3.1.1"
    /// or "5"), Home Assistant's defaults otherwise (discovery under
    /// `homeassistant/`, birth `online` and will `offline` on
    /// `homeassistant/status`, QoS 0, not retained). Home Assistant must be
    /// stopped.
    fn configure_mqtt(&self, port: u16, protocol: &str) {
        assert!(self.child.is_none());
        let entries = serde_json::json!({
            "version": 1,
            "minor_version": 1,
            "key": "core.config_entries",
            "data": {"entries": [{
                "entry_id": "01perchtestmqttbroker0000",
                "domain": "mqtt",
                "title": "perch",
                "source": "user",
                "version": 1,
                "minor_version": 2,
                "data": {
                    "broker": "127.0.0.1",
                    "port": port,
                    "username": HA_USER,
                    "password": HA_PASSWORD,
                    "protocol": protocol,
                },
                "options": {},
            }]},
        });
        std::fs::write(
            self.dir().join(".storage/core.config_entries"),
            serde_json::to_string_pretty(&entries).unwrap(),
        )
        .unwrap();
    }

    fn start(&mut self) {
        assert!(self.child.is_none());
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join("hass.out"))
            .unwrap();
        self.child = Some(
            Command::new(&self.hass)
                .arg("--config")
                .arg(self.dir())
                // scripts/ha-venv installed every requirement: Home
                // Assistant never reaches for PyPI here.
                .args(["--skip-pip", "--log-no-color"])
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("start hass"),
        );
    }

    /// Panics (the log follows from `drop`) if Home Assistant exited.
    fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Some(status) = c.try_wait().unwrap() {
                self.child = None;
                panic!("Home Assistant exited with {status}");
            }
        }
    }

    /// SIGTERM, and the time Home Assistant took to exit.
    fn stop(&mut self) -> Duration {
        let mut c = self.child.take().expect("running");
        let t = Instant::now();
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        loop {
            if c.try_wait().unwrap().is_some() {
                return t.elapsed();
            }
            if t.elapsed() > Duration::from_secs(60) {
                let _ = c.kill();
                let _ = c.wait();
                panic!("Home Assistant did not stop within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: Home Assistant disappears without a word to the broker.
    fn kill9(&mut self) {
        let mut c = self.child.take().expect("running");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// Finishes onboarding's first step (the owner account) through the REST
    /// API, as the first page of the UI does, and trades the authorization
    /// code it returns for an access token (valid 30 minutes).
    fn token(&self) -> String {
        let client_id = self.url("/");
        let deadline = Instant::now() + Duration::from_secs(60);
        let code = loop {
            let r = http(
                "POST",
                &self.url("/api/onboarding/users"),
                None,
                "application/json",
                &serde_json::json!({
                    "client_id": client_id,
                    "name": "perch test",
                    "username": "perch",
                    "password": "perch-test-password",
                    "language": "en",
                })
                .to_string(),
            );
            match r {
                Some((200, body)) => break json(&body)["auth_code"].as_str().unwrap().to_string(),
                other => assert!(Instant::now() < deadline, "onboarding refused: {other:?}"),
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        let (status, body) = http(
            "POST",
            &self.url("/auth/token"),
            None,
            "application/x-www-form-urlencoded",
            &format!(
                "grant_type=authorization_code&code={code}&client_id={}",
                common::urlencode(&client_id)
            ),
        )
        .expect("Home Assistant's HTTP server");
        assert_eq!(status, 200, "token: {body}");
        json(&body)["access_token"].as_str().unwrap().to_string()
    }

    /// Home Assistant's states: its REST API's `/api/states`.
    fn states(&self, token: &str) -> Vec<serde_json::Value> {
        match http("GET", &self.url("/api/states"), Some(token), "", "") {
            Some((200, body)) => json(&body).as_array().unwrap().clone(),
            other => panic!("GET /api/states: {other:?}"),
        }
    }

    /// Waits until Home Assistant has an entity named `name` (its friendly
    /// name: the device's name and the entity's) with this state and unit;
    /// returns its entity id. Found by name, not id: an id is made from the
    /// device's name as Home Assistant knew it when the entity's config
    /// arrived, and the bedroom humidity config names its device by
    /// identifiers only, so its id depends on the order in which the broker
    /// delivers the retained configs (`sensor.bedroom_humidity` when the
    /// temperature config, which names the device, comes first;
    /// `sensor.none_humidity` otherwise).
    fn expect_state(&mut self, token: &str, name: &str, state: &str, unit: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let states = self.states(token);
            let found = states
                .iter()
                .find(|s| s["attributes"]["friendly_name"] == name);
            if let Some(s) = found {
                if s["state"] == state && s["attributes"]["unit_of_measurement"] == unit {
                    return s["entity_id"].as_str().unwrap().to_string();
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "Home Assistant has no {name:?} = {state:?} {unit:?}; it has {found:?}\n\
                     all its states: {states:#?}"
                );
            }
            self.assert_running();
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for HomeAssistant {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let dir = self.dir.take().unwrap();
            for name in ["hass.out", "home-assistant.log"] {
                let log = std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(150).collect();
                eprintln!("--- Home Assistant's {name}, last lines ---");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
            eprintln!(
                "--- Home Assistant's configuration kept in {} ---",
                dir.keep().display()
            );
        }
    }
}

/// One request to Home Assistant; None when nothing listens yet.
fn http(
    method: &str,
    url: &str,
    token: Option<&str>,
    content_type: &str,
    body: &str,
) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    if !content_type.is_empty() {
        req = req.header("Content-Type", content_type);
    }
    let sent = if body.is_empty() {
        agent.run(req.body(()).unwrap())
    } else {
        agent.run(req.body(body.as_bytes().to_vec()).unwrap())
    };
    let mut r = sent.ok()?;
    let mut text = String::new();
    r.body_mut().as_reader().read_to_string(&mut text).ok()?;
    Some((r.status().as_u16(), text))
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Waits until perch stores `metric{topic=...}` with `value` among its samples.
fn expect_series(p: &Perch, topic: &str, metric: &str, value: f64) {
    let selector = format!("{{topic=\"{topic}\"}}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = p.export(&selector);
        if got
            .iter()
            .any(|(m, _, vals)| m["__name__"] == metric && vals.contains(&value))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "perch stored no {metric} = {value} for {topic}; it has {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn home_assistant_uses_perch_as_its_broker() {
    if !have_mosquitto() {
        return;
    }
    // scripts/test could not install Home Assistant (it needs PyPI and a
    // Python 3.13) and said so; the discovery corpus still runs.
    if std::env::var_os("PERCH_SKIP_HASS").is_some() {
        eprintln!("SKIP: PERCH_SKIP_HASS is set: Home Assistant is not installed");
        return;
    }
    let Some(hass) = hass_program() else {
        missing_peer("Home Assistant (scripts/ha-venv installs it into build/ha-venv)");
        return;
    };
    let mut p = Perch::start();
    let (code, out, err) = p.cli(
        &[
            "user",
            "add",
            HA_USER,
            "--role",
            "admin",
            "--password",
            HA_PASSWORD,
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");

    // A device announces itself with retained configs before Home Assistant
    // is up, the documented way to survive restarts of either.
    let mut want_retained: Vec<(String, String)> = CONFIGS
        .iter()
        .map(|(topic, file)| {
            let path = fixture(file);
            publish(
                &p,
                &["-r", "-q", "1", "-t", topic, "-f", path.to_str().unwrap()],
            );
            (topic.to_string(), hex(&std::fs::read(&path).unwrap()))
        })
        .collect();
    want_retained.sort();
    assert_eq!(retained(&p, "homeassistant/#"), want_retained);

    // Home Assistant connects and announces itself: its birth, relayed to a
    // subscriber (`-F '%q %t %p'`: QoS 0, as configured).
    let mut ha = HomeAssistant::new(hass);
    ha.configure_mqtt(p.mqtt_port, "3.1.1");
    let mut status = Subscriber::start(&p, &["-t", "homeassistant/status", "-F", "%q %t %p"]);
    let started = Instant::now();
    ha.start();
    status.expect("0 homeassistant/status online", HA_START, &mut ha);
    let ha_start = started.elapsed();
    let token = ha.token();

    // The retained configs made the entities; a state message sets them.
    ha.expect_state(&token, "Bedroom Temperature", "unknown", "°C");
    let state = fixture("sensorBedroom.state.json");
    let state = state.to_str().unwrap();
    publish(&p, &["-t", BEDROOM_STATE, "-f", state]);
    // The kitchen device subscribes its state topic at QoS 2.
    publish(&p, &["-q", "2", "-t", KITCHEN_STATE, "-f", state]);
    ha.expect_state(&token, "Bedroom Temperature", "23.2", "°C");
    let humidity_id = ha.expect_state(&token, "Bedroom Humidity", "43.7", "%");
    ha.expect_state(&token, "Kitchen Temperature", "23.2", "°C");
    ha.expect_state(&token, "Kitchen Humidity", "43.7", "%");
    // perch read the same messages into series.
    expect_series(&p, BEDROOM_STATE, "temperature", 23.2);
    expect_series(&p, BEDROOM_STATE, "humidity", 43.7);
    expect_series(&p, KITCHEN_STATE, "temperature", 23.2);
    expect_series(&p, KITCHEN_STATE, "humidity", 43.7);

    // perch restarts under Home Assistant: the retained configs are back byte
    // for byte (and nothing else is retained: the birth was not), and Home
    // Assistant reconnects by itself, announces itself again and follows
    // the state topics again.
    drop(status);
    assert!(p.stop().success());
    p.restart();
    let restarted = Instant::now();
    let mut status = Subscriber::start(&p, &["-t", "homeassistant/status", "-F", "%q %t %p"]);
    assert_eq!(retained(&p, "homeassistant/#"), want_retained);
    status.expect("0 homeassistant/status online", HA_RECONNECT, &mut ha);
    let ha_reconnect = restarted.elapsed();
    publish(
        &p,
        &[
            "-t",
            BEDROOM_STATE,
            "-m",
            r#"{"temperature":24.5,"humidity":40.1}"#,
        ],
    );
    publish(
        &p,
        &[
            "-q",
            "2",
            "-t",
            KITCHEN_STATE,
            "-m",
            r#"{"temperature":19.5,"humidity":61}"#,
        ],
    );
    ha.expect_state(&token, "Bedroom Temperature", "24.5", "°C");
    ha.expect_state(&token, "Bedroom Humidity", "40.1", "%");
    ha.expect_state(&token, "Kitchen Temperature", "19.5", "°C");
    ha.expect_state(&token, "Kitchen Humidity", "61", "%");
    expect_series(&p, BEDROOM_STATE, "temperature", 24.5);
    expect_series(&p, KITCHEN_STATE, "humidity", 61.0);

    // Home Assistant dies without a DISCONNECT: perch publishes its will.
    ha.kill9();
    status.expect(
        "0 homeassistant/status offline",
        Duration::from_secs(10),
        &mut ha,
    );

    // Home Assistant comes back over MQTT 5: the retained configs alone
    // (no device republishes anything) bring its entities back.
    ha.configure_mqtt(p.mqtt_port, "5");
    let started = Instant::now();
    ha.start();
    status.expect("0 homeassistant/status online", HA_START, &mut ha);
    let ha_restart = started.elapsed();
    assert!(
        p.log().contains("v5=true"),
        "perch logged no MQTT 5 connection"
    );
    publish(
        &p,
        &[
            "-q",
            "2",
            "-t",
            KITCHEN_STATE,
            "-m",
            r#"{"temperature":20.25,"humidity":58}"#,
        ],
    );
    ha.expect_state(&token, "Kitchen Temperature", "20.25", "°C");
    ha.expect_state(&token, "Kitchen Humidity", "58", "%");
    // A clean shutdown: Home Assistant closes the connection without a
    // DISCONNECT on purpose, so that the broker sends its will.
    let ha_stop = ha.stop();
    status.expect(
        "0 homeassistant/status offline",
        Duration::from_secs(10),
        &mut ha,
    );
    assert_eq!(retained(&p, "homeassistant/#"), want_retained);

    eprintln!(
        "Home Assistant: first start to birth {ha_start:.1?}, reconnect after perch's \
         restart {ha_reconnect:.1?}, restart over MQTT 5 to birth {ha_restart:.1?}, \
         stop {ha_stop:.1?}; the bedroom humidity became {humidity_id}"
    );
}
