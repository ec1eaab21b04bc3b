//! README.md's examples, run as written. The shell blocks of its "Using
//! it" section run command by command in one bash (so `export PATH=…` and
//! `read … PASSWORD` carry over, as in a terminal), in a directory laid out
//! like the clone after `./scripts/run` (`target/release/perch`,
//! `./perch-data`, `tests/fixtures/gen_sensors.py`), against a real perch
//! started as `./scripts/run` starts it: no accounts, default config. Each
//! command must exit 0 and show the values it should (the exported point
//! is 21.5 at the current time, the query answers 21.5, …); a command that
//! stops working fails here with the README line and its output. A command
//! without an expectation in [`expectations`] fails too: README examples
//! cannot rot unnoticed.
//!
//! The test changes only what [`substitutions`] lists. Not run: the
//! Set-up and Raspberry Pi blocks (`./scripts/run`, `./scripts/test`,
//! `sudo apt install ./perch_<version>_arm64.deb`), which install packages
//! and build images: CI runs `./scripts/test` itself.
//!
//! Also here, the data-directory commands' side of the README: they refuse
//! a directory that does not exist, and `perch check` on a running perch's
//! directory says it is in use, never that it is damaged.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::common::camera::{have_gstreamer, TestCamera};
use crate::common::{self, free_port, have_command, have_mosquitto, Perch, BIN};

/// The password typed at the README's `read … PASSWORD` line (URL-safe:
/// the ffplay line puts it in a URL).
const PASSWORD: &str = "readme-test-password";

/// One command of the README: its text and the line it starts on.
#[derive(Clone, Debug)]
struct Example {
    line: usize,
    text: String,
}

/// The commands of the `sh` blocks in the README section `heading`:
/// comments and blank lines dropped, `\`-continued lines joined.
fn examples(readme: &str, heading: &str) -> Vec<Example> {
    let mut out = Vec::new();
    let mut in_section = false;
    let mut in_block = false;
    let mut pending: Option<Example> = None;
    for (i, line) in readme.lines().enumerate() {
        if let Some(h) = line.strip_prefix("## ") {
            in_section = h.trim() == heading;
            continue;
        }
        if !in_section {
            continue;
        }
        if line.starts_with("```") {
            in_block = !in_block && line.trim() == "```sh";
            continue;
        }
        if !in_block {
            continue;
        }
        match pending.as_mut() {
            Some(p) => {
                p.text.push('\n');
                p.text.push_str(line);
            }
            None => {
                let t = line.trim();
                if t.is_empty() || t.starts_with('#') {
                    continue;
                }
                pending = Some(Example {
                    line: i + 1,
                    text: line.to_string(),
                });
            }
        }
        if !line.ends_with('\\') {
            out.extend(pending.take());
        }
    }
    out
}

/// Everything the test changes in a README command before running it, and
/// why. Nothing else is changed. (The password is not in the text: the
/// README's `read` line reads it, and gets [`PASSWORD`] as its input.)
fn substitutions(p: &Perch, camera: Option<&str>) -> Vec<(&'static str, String)> {
    let mut s = vec![
        // perch listens on free ports, not on the defaults.
        ("localhost:8080", format!("localhost:{}", p.http_port)),
        // mosquitto_pub's default port is 1883.
        (
            "mosquitto_pub ",
            format!("mosquitto_pub -p {} ", p.mqtt_port),
        ),
        // No window to play in: ffprobe reads what ffplay would play.
        ("ffplay ", "ffprobe ".to_string()),
    ];
    if let Some(url) = camera {
        // The example camera is the test's GStreamer camera.
        s.push(("rtsp://192.168.1.40:554/stream1", url.to_string()));
    }
    s
}

/// What a command printed.
struct Ran {
    code: i32,
    out: String,
    err: String,
}

type Check = Box<dyn Fn(&mut Shell, &Ran) -> Result<(), String>>;

#[derive(Clone, Copy, PartialEq)]
enum Needs {
    Nothing,
    /// mosquitto_pub (Debian's mosquitto-clients).
    Mosquitto,
    /// The GStreamer test camera and ffprobe.
    Camera,
}

/// What one README command must do.
struct Expect {
    /// A piece of the command's text that names it (in exactly one).
    names: &'static str,
    needs: Needs,
    /// Standard input (the password typed at a prompt).
    stdin: String,
    /// Reads what arrives asynchronously (MQTT into the store, the search
    /// index, the camera's first segment): rerun, as a person would, until
    /// the check passes or this long has passed.
    retry_for: Duration,
    check: Check,
}

fn expect(
    names: &'static str,
    check: impl Fn(&mut Shell, &Ran) -> Result<(), String> + 'static,
) -> Expect {
    Expect {
        names,
        needs: Needs::Nothing,
        stdin: String::new(),
        retry_for: Duration::ZERO,
        check: Box::new(check),
    }
}

impl Expect {
    fn needs(mut self, n: Needs) -> Expect {
        self.needs = n;
        self
    }
    fn retry_for(mut self, secs: u64) -> Expect {
        self.retry_for = Duration::from_secs(secs);
        self
    }
    fn stdin(mut self, s: String) -> Expect {
        self.stdin = s;
        self
    }
}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

fn json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text.trim()).map_err(|e| format!("not JSON ({e})"))
}

/// What each command of "Using it" must show.
fn expectations(p: &Perch, clone: &Path) -> Vec<Expect> {
    let http_port = p.http_port;
    let signs_in = move |user: &'static str| {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let r = agent
            .get(format!("http://127.0.0.1:{http_port}/api/v1/labels"))
            .header("Authorization", common::basic(user, PASSWORD))
            .call();
        r.map(|r| r.status().as_u16()).unwrap_or(0)
    };
    let release = clone.join("target/release/perch");
    let backup = clone.join("backup.tar");
    let data_lp = clone.join("data.lp");
    vec![
        expect("export PATH=", move |sh, _| {
            let which = sh.probe("command -v perch");
            ensure(Path::new(which.trim()) == release, || {
                format!("perch is {which:?} on PATH, not {}", release.display())
            })
        }),
        expect("read -rsp", |sh, _| {
            let got = sh.probe("printf %s \"$PASSWORD\"");
            ensure(got == PASSWORD, || format!("PASSWORD is {got:?}"))
        })
        .stdin(format!("{PASSWORD}\n")),
        expect("perch user add alice", move |_, r| {
            ensure(r.out.trim() == "added admin \"alice\"", || {
                "alice was not added".into()
            })?;
            ensure(signs_in("alice") == 200, || "alice cannot sign in".into())
        }),
        expect("/write?precision=s", |_, r| {
            ensure(r.out.is_empty(), || "an answer to a write (204)".into())
        }),
        expect("api/v1/export", |_, r| {
            let lines: Vec<&str> = r.out.lines().collect();
            ensure(lines.len() == 1, || "not one series".into())?;
            let v = json(lines[0])?;
            ensure(
                v["metric"] == serde_json::json!({"__name__": "env_temp", "room": "lab"}),
                || "not the series env_temp{room=\"lab\"}".into(),
            )?;
            ensure(v["values"] == serde_json::json!([21.5]), || {
                "not the value 21.5".into()
            })?;
            let ts = v["timestamps"][0].as_i64().unwrap_or(0);
            let age = common::now_ms() - ts;
            ensure((0..600_000).contains(&age), || {
                format!("the point is not from now but {age} ms old")
            })
        }),
        // A device account may not use the HTTP API but MQTT: the
        // mosquitto_pub lines below sign in as sensor1.
        expect("perch user add sensor1", |_, r| {
            ensure(r.out.trim() == "added device \"sensor1\"", || {
                "sensor1 was not added".into()
            })
        }),
        expect("-t lab/temperature", |_, r| {
            ensure(r.out.is_empty() && r.err.is_empty(), || {
                "mosquitto_pub said something".into()
            })
        })
        .needs(Needs::Mosquitto),
        expect("api/v1/query", |_, r| {
            let v = json(&r.out)?;
            let result = &v["data"]["result"][0];
            ensure(result["metric"]["topic"] == "lab/temperature", || {
                "no series of topic lab/temperature".into()
            })?;
            ensure(result["value"][1] == "21.5", || "not the value 21.5".into())
        })
        .needs(Needs::Mosquitto)
        .retry_for(30),
        expect("-t lab/status", |_, r| {
            ensure(r.out.is_empty() && r.err.is_empty(), || {
                "mosquitto_pub said something".into()
            })
        })
        .needs(Needs::Mosquitto),
        expect("api/v1/search", |_, r| {
            let v = json(&r.out)?;
            let hit = &v["data"]["hits"][0];
            ensure(
                hit["topic"] == "lab/status"
                    && hit["payload"]
                        .as_str()
                        .is_some_and(|p| p.contains("low battery")),
                || "the low battery message was not found".into(),
            )
        })
        .needs(Needs::Mosquitto)
        .retry_for(30),
        expect("api/v1/cameras -H", |_, r| {
            let v = json(&r.out)?;
            ensure(v["data"]["name"] == "yard", || "no camera yard".into())
        })
        .needs(Needs::Camera),
        expect("ffplay ", |_, r| {
            ensure(r.err.contains("Video: h264"), || "no H.264 video".into())
        })
        .needs(Needs::Camera)
        .retry_for(60),
        expect("-o backup.tar", move |_, _| {
            let tar = std::fs::read(&backup).map_err(|e| format!("backup.tar: {e}"))?;
            ensure(tar.get(257..262) == Some(b"ustar"), || {
                "backup.tar is no tar file".into()
            })
        }),
        expect("perch restore", |_, r| {
            ensure(
                r.out.starts_with("restored ") && r.out.trim_end().ends_with("into ./restored"),
                || "not restored into ./restored".into(),
            )
        }),
        expect("perch check", |_, r| {
            let series = r
                .out
                .lines()
                .find_map(|l| l.strip_prefix("series:"))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            ensure(r.out.lines().last() == Some("OK"), || "not OK".into())?;
            ensure(series >= 1, || {
                "the restored directory has no series".into()
            })
        }),
        expect("gen_sensors.py", move |_, _| {
            let text = std::fs::read_to_string(&data_lp).map_err(|e| format!("data.lp: {e}"))?;
            ensure(text.lines().count() > 1000, || {
                "data.lp has hardly any lines".into()
            })
        }),
        expect("perch bench storage", |_, r| {
            ensure(
                r.out.contains("overall:") && r.out.contains("bytes/sample"),
                || "no measurements".into(),
            )
        }),
        expect("perch --help", |_, r| {
            let missing: Vec<&str> = ["serve", "user", "check", "restore", "forward", "bench"]
                .into_iter()
                .filter(|c| !r.out.contains(&format!("  {c} ")))
                .collect();
            ensure(missing.is_empty(), || format!("{missing:?} not listed"))
        }),
    ]
}

#[test]
fn the_using_it_examples_run_as_written() {
    if !have_command("curl") {
        return;
    }
    let mosquitto = have_mosquitto();
    let camera = (have_gstreamer() && have_command("ffprobe"))
        .then(|| TestCamera::start(free_port(), "320x240", None));
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let examples = examples(&readme, "Using it");
    assert!(
        examples.len() >= 10,
        "README examples not found: {examples:?}"
    );

    // Like `./scripts/run`: no accounts, the default configuration.
    let p = Perch::start_bare("");
    // The clone: the binary where `cargo build --release` puts it, the
    // data directory where `perch serve` keeps it, the generator script.
    let clone = p.dir.path().join("clone");
    std::fs::create_dir_all(clone.join("target/release")).unwrap();
    std::fs::create_dir_all(clone.join("tests/fixtures")).unwrap();
    std::os::unix::fs::symlink(BIN, clone.join("target/release/perch")).unwrap();
    std::os::unix::fs::symlink(&p.data_dir, clone.join("perch-data")).unwrap();
    std::os::unix::fs::symlink(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gen_sensors.py"),
        clone.join("tests/fixtures/gen_sensors.py"),
    )
    .unwrap();

    let substitutions = substitutions(&p, camera.as_ref().map(|c| c.url()).as_deref());
    let expectations = expectations(&p, &clone);
    for e in &expectations {
        let n = examples.iter().filter(|x| x.text.contains(e.names)).count();
        assert_eq!(
            n, 1,
            "{n} README commands in \"Using it\" contain {:?}; this test expects one",
            e.names
        );
    }

    let mut sh = Shell::start(&clone, &p.dir.path().join("readme-io"));
    for ex in &examples {
        let matching: Vec<&Expect> = expectations
            .iter()
            .filter(|e| ex.text.contains(e.names))
            .collect();
        let [e] = matching[..] else {
            panic!(
                "README.md line {}: {}\nhas {} expectations in tests/it/readme.rs; give it one",
                ex.line,
                ex.text,
                matching.len()
            );
        };
        let skip = match e.needs {
            Needs::Mosquitto if !mosquitto => Some("mosquitto_pub"),
            Needs::Camera if camera.is_none() => Some("the GStreamer camera or ffprobe"),
            _ => None,
        };
        if let Some(what) = skip {
            eprintln!(
                "SKIP: README.md line {}: {what} is missing:\n  {}",
                ex.line, ex.text
            );
            continue;
        }
        let mut command = ex.text.clone();
        for (from, to) in &substitutions {
            command = command.replace(from, to);
        }
        let deadline = Instant::now() + e.retry_for;
        loop {
            let ran = sh.run(&command, &e.stdin, Duration::from_secs(120));
            let verdict = if ran.code != 0 {
                Err(format!("exit status {}", ran.code))
            } else {
                (e.check)(&mut sh, &ran)
            };
            match verdict {
                Ok(()) => break,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(500))
                }
                Err(why) => panic!(
                    "README.md line {}: {why}\n  {}\nran as\n  {command}\n\
                     --- stdout ---\n{}--- stderr ---\n{}",
                    ex.line, ex.text, ran.out, ran.err
                ),
            }
        }
    }
}

/// One bash that runs commands in turn, keeping its state between them
/// like a terminal does. It has no controlling terminal (its own session),
/// so nothing can prompt the person running the tests.
struct Shell {
    child: Child,
    commands: ChildStdin,
    exits: Receiver<i32>,
    io: PathBuf,
}

impl Shell {
    fn start(cwd: &Path, io: &Path) -> Shell {
        std::fs::create_dir_all(io).unwrap();
        // Commands arrive NUL-terminated on standard input (bash's `read`
        // takes no more than one); each runs with its own input and output
        // files; its exit status goes back on standard output.
        let driver = r#"while IFS= read -r -d '' __readme_command; do
    eval "$__readme_command" <"$README_IO/in" >"$README_IO/out" 2>"$README_IO/err"
    printf '%s\n' "$?"
done"#;
        let mut cmd = Command::new("bash");
        cmd.args(["--noprofile", "--norc", "-c", driver])
            .current_dir(cwd)
            .env("README_IO", io)
            .env_remove("PERCH_DATA_DIR")
            .env_remove("PERCH_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("bash");
        let commands = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, exits) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l.trim().parse().unwrap_or(-1));
            }
        });
        Shell {
            child,
            commands,
            exits,
            io: io.to_path_buf(),
        }
    }

    fn run(&mut self, command: &str, stdin: &str, timeout: Duration) -> Ran {
        std::fs::write(self.io.join("in"), stdin).unwrap();
        self.commands
            .write_all(format!("{command}\0").as_bytes())
            .unwrap();
        self.commands.flush().unwrap();
        let read = |f: &str| std::fs::read_to_string(self.io.join(f)).unwrap_or_default();
        match self.exits.recv_timeout(timeout) {
            Ok(code) => Ran {
                code,
                out: read("out"),
                err: read("err"),
            },
            Err(RecvTimeoutError::Timeout) => panic!(
                "still running after {timeout:?}:\n  {command}\n--- stdout ---\n{}--- stderr ---\n{}",
                read("out"),
                read("err")
            ),
            Err(RecvTimeoutError::Disconnected) => panic!("bash exited running\n  {command}"),
        }
    }

    /// A command of the test's own, e.g. to see a variable; its stdout.
    fn probe(&mut self, command: &str) -> String {
        let r = self.run(command, "", Duration::from_secs(10));
        assert_eq!(r.code, 0, "{command}: {}", r.err);
        r.out
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        // bash leads its own process group: end it and whatever it left.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Runs perch in `cwd` with nothing naming a data directory but `args`.
fn perch_in(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("PERCH_DATA_DIR")
        .env_remove("PERCH_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn data_directory_commands_refuse_a_directory_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let add = [
        "user",
        "add",
        "bob",
        "--role",
        "admin",
        "--password",
        "pass-word-1",
    ];
    let commands: [&[&str]; 6] = [
        &add,
        &["user", "list"],
        &["user", "del", "bob"],
        &["check"],
        &["check", "--json"],
        &["forward", "replay", "vm", "--since", "1h"],
    ];
    for args in commands {
        let (code, out, err) = perch_in(dir.path(), args);
        assert_eq!(code, 2, "perch {args:?}: {out}{err}");
        assert!(
            err.contains("no data directory at ./perch-data: pass --data-dir")
                && err.contains("/var/lib/perch"),
            "perch {args:?}: {err}"
        );
        assert!(
            !dir.path().join("perch-data").exists(),
            "perch {args:?} created ./perch-data"
        );
    }
    // A named directory that does not exist is refused as well…
    let (code, _, err) = perch_in(dir.path(), &["user", "list", "--data-dir", "elsewhere"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no data directory at elsewhere"), "{err}");
    assert!(!dir.path().join("elsewhere").exists());
    // … except by `user add`: the first admin of a perch not started yet,
    // in a directory `perch serve` then takes as its own.
    let (code, out, err) = perch_in(dir.path(), &[&add[..], &["--data-dir", "new"]].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("created the new data directory new"), "{err}");
    let (code, out, err) = perch_in(dir.path(), &["check", "--data-dir", "new"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().last(), Some("OK"), "{out}");
    let (code, out, err) = perch_in(dir.path(), &["user", "list", "--data-dir", "new"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("bob"), "{out}");
}

#[test]
fn check_on_a_running_perchs_directory_says_in_use_not_damaged() {
    let mut p = Perch::start();
    assert_eq!(p.post("/write", "text/plain", "x value=1\n").status, 204);
    let (code, out, err) = p.cli(&["check"], None);
    assert_eq!(code, 75, "{out}{err}");
    assert!(out.contains("IN USE"), "{out}");
    assert!(out.contains("stop that perch first"), "{out}");
    assert!(
        !out.contains("DAMAGED") && !out.contains("PROBLEM"),
        "{out}"
    );
    let (code, out, _) = p.cli(&["check", "--json"], None);
    assert_eq!(code, 75, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["in_use"], true, "{out}");
    assert_eq!(report["problems"], serde_json::json!([]), "{out}");
    // Meanwhile the other commands go through the running server.
    let (code, out, err) = p.cli(&["user", "list"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(common::ADMIN), "{out}");
    let (code, out, err) = p.cli(
        &[
            "user",
            "add",
            "carol",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        Some("pass-word-2\n"),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        p.get_auth("/api/v1/labels", "carol", "pass-word-2").status,
        200
    );
    // Stopped, it checks.
    assert!(p.stop().success());
    let (code, out, err) = p.cli(&["check"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().last(), Some("OK"), "{out}");
}
