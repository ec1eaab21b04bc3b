//! The command line: `perch serve`, `perch user …`, `perch check`, `perch bench`.

use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use accounts::{Accounts, Role};
use config::{Config, Overrides};
use store::{check, format};

#[derive(Parser, Debug)]
#[command(
    name = "perch",
    version,
    about = "A self-hosted IoT appliance: MQTT broker, time-series store, PromQL, cameras and dashboard in one process",
    long_about = None,
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (HTTP on :8080, MQTT on :1883, data in ./perch-data by default)
    Serve(ServeArgs),
    /// Manage user accounts (works whether or not the server is running)
    #[command(subcommand)]
    User(UserCommand),
    /// Verify a data directory without changing it (a stopped perch's, or a
    /// restored backup's); exits 1 if it is damaged, 75 if a running perch
    /// holds it
    Check {
        #[command(flatten)]
        location: Location,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup (the tar from Settings or GET /api/v1/backup) into a
    /// new, empty data directory; start perch on it afterwards
    Restore {
        /// The backup tar file, or - for standard input
        file: PathBuf,
        #[command(flatten)]
        location: Location,
    },
    /// Measure ingestion speed and compression on generated or given data
    Bench(crate::bench::BenchArgs),
    /// Store and forward: re-send stored history to a target
    #[command(subcommand)]
    Forward(ForwardCommand),
    /// Alerting and recording rules in Prometheus' rule file format
    #[command(subcommand)]
    Rules(RulesCommand),
}

#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// Check rule files (as `promtool check rules`): every problem with its
    /// line and column; exits 1 if any file has one
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run rule unit tests in promtool's format (as `promtool test rules`)
    /// with perch's own store, PromQL engine and rule evaluator; exits 1 if
    /// any fails
    Test {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `perch rules`: the exit code.
pub fn rules(cmd: RulesCommand) -> anyhow::Result<i32> {
    let mut failed = false;
    match cmd {
        RulesCommand::Check { files } => {
            for file in files {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                match alerts::rulefile::parse(&file.display().to_string(), &text) {
                    Ok(parsed) => {
                        let rules: usize = parsed.groups.iter().map(|g| g.rules.len()).sum();
                        println!("{}: SUCCESS: {rules} rules found", file.display());
                    }
                    Err(e) => {
                        println!("{}: FAILED:\n{e}", file.display());
                        failed = true;
                    }
                }
            }
        }
        RulesCommand::Test { files } => {
            // A scratch store per test group, removed afterwards.
            let scratch =
                std::env::temp_dir().join(format!("perch-rules-test-{}", std::process::id()));
            for file in files {
                println!("Unit Testing: {}", file.display());
                match alerts::unittest::run_file(&file, &scratch) {
                    Ok(n) => println!("  SUCCESS ({n} test groups)"),
                    Err(e) => {
                        print!("{e}");
                        failed = true;
                    }
                }
            }
            let _ = std::fs::remove_dir_all(&scratch);
        }
    }
    Ok(i32::from(failed))
}

#[derive(Subcommand, Debug)]
pub enum ForwardCommand {
    /// Queue the stored samples of the last `--since` for a remote_write
    /// target again (through the running server, or on the data directory
    /// when perch is stopped: the next start sends them)
    Replay {
        /// The target's `name` in `[[forward]]`
        name: String,
        /// How far back, e.g. 24h, 7d
        #[arg(long, default_value = "24h")]
        since: String,
        #[command(flatten)]
        location: Location,
    },
}

/// `perch restore`.
pub fn restore(file: &Path, location: &Location) -> anyhow::Result<()> {
    let dir = location.load()?.data_dir;
    let input: Box<dyn std::io::Read> = if file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(file)
                .with_context(|| format!("cannot open the backup {}", file.display()))?,
        )
    };
    let summary = store::backup::restore(std::io::BufReader::new(input), &dir)
        .with_context(|| format!("cannot restore into {}", dir.display()))?;
    println!(
        "restored {} files and {} database entries in {} trees into {}",
        summary.files,
        summary.entries,
        summary.trees,
        dir.display()
    );
    Ok(())
}

/// Where the data directory is: `--data-dir`, else the config file's
/// `data_dir`, else ./perch-data.
#[derive(Args, Debug, Clone)]
pub struct Location {
    /// Configuration file (TOML)
    #[arg(long, short = 'c', env = "PERCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides the config file)
    #[arg(long, env = "PERCH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl Location {
    pub fn load(&self) -> anyhow::Result<Config> {
        Ok(Config::load(
            self.config.as_deref(),
            &Overrides {
                data_dir: self.data_dir.clone(),
                ..Default::default()
            },
            CONFIG_CHECKS,
        )?)
    }

    /// [`Location::load`] for a command on an existing data directory
    /// (`perch user`, `perch forward`, `perch check`): a directory that
    /// does not exist is refused, not created, or a forgotten `--data-dir`
    /// would quietly work on a new, empty ./perch-data.
    pub fn load_existing(&self) -> anyhow::Result<Config> {
        let config = self.load()?;
        if !config.data_dir.exists() {
            bail!("{}", no_data_dir(&config.data_dir));
        }
        Ok(config)
    }

    /// Whether the data directory was named (`--data-dir`, `PERCH_DATA_DIR`
    /// or the config file's `data_dir`) rather than the default.
    fn names_data_dir(&self, config: &Config) -> bool {
        self.data_dir.is_some() || config.data_dir != Config::default().data_dir
    }
}

/// Why a data-directory command refuses a directory that does not exist.
fn no_data_dir(dir: &Path) -> String {
    format!(
        "no data directory at {}: pass --data-dir with the directory `perch serve` uses \
         (or --config with its config file; the Debian package's is /etc/perch/perch.toml, \
         its data directory /var/lib/perch)",
        dir.display()
    )
}

/// The checks of what configuration values mean, each by the crate that
/// owns those values; the config crate checks only the shape.
pub const CONFIG_CHECKS: &[config::Check] = &[ingest::check_config, forward::check_config];

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub location: Location,
    /// HTTP listen address (overrides http.listen)
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// MQTT listen address (overrides mqtt.listen)
    #[arg(long, value_name = "ADDR")]
    pub mqtt: Option<SocketAddr>,
    /// MQTT-over-WebSocket listen address, or `off` (overrides mqtt.ws_listen)
    #[arg(long, value_name = "ADDR|off")]
    pub mqtt_ws: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user
    Add {
        name: String,
        /// admin (everything), viewer (read and watch) or device (MQTT and write APIs)
        #[arg(long, value_parser = role_parser())]
        role: Role,
        /// The password (visible in the process list; prefer --password-stdin)
        #[arg(
            long,
            conflicts_with = "password_stdin",
            required_unless_present = "password_stdin"
        )]
        password: Option<String>,
        /// Read the password from the first line of standard input
        #[arg(long)]
        password_stdin: bool,
        /// For devices: an MQTT topic filter the device may publish and
        /// subscribe within (repeat for more); default `<name>/#`
        #[arg(long = "topic", value_name = "FILTER")]
        topics: Vec<String>,
        #[command(flatten)]
        location: Location,
    },
    /// List users
    List {
        #[command(flatten)]
        location: Location,
    },
    /// Delete a user
    Del {
        name: String,
        #[command(flatten)]
        location: Location,
    },
}

/// `--role`: the names `accounts::Role` parses, offered as clap's
/// possible values.
fn role_parser() -> impl clap::builder::TypedValueParser<Value = Role> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["admin", "viewer", "device"])
        .map(|s| s.parse::<Role>().expect("one of the possible values"))
}

pub fn serve_config(args: &ServeArgs) -> anyhow::Result<Config> {
    Ok(Config::load(
        args.location.config.as_deref(),
        &Overrides {
            data_dir: args.location.data_dir.clone(),
            http_listen: args.http,
            mqtt_listen: args.mqtt,
            mqtt_ws_listen: match args.mqtt_ws.as_deref() {
                None => None,
                Some("off") | Some("") => Some(None),
                Some(a) => Some(Some(a.parse().map_err(|e| {
                    anyhow::anyhow!("--mqtt-ws {a:?}: not an address ({e})")
                })?)),
            },
        },
        CONFIG_CHECKS,
    )?)
}

/// Runs a `perch user` command: directly on the database when no server
/// holds it, otherwise through the running server's control socket.
pub fn user(cmd: UserCommand) -> anyhow::Result<()> {
    let location = match &cmd {
        UserCommand::Add { location, .. }
        | UserCommand::List { location }
        | UserCommand::Del { location, .. } => location.clone(),
    };
    let config = location.load()?;
    let dir = config.data_dir.clone();
    // Only `user add` on a directory named outright may create it: the
    // first admin of a perch not started yet. Nothing else starts a new one.
    let create = !dir.exists();
    if create && !(matches!(cmd, UserCommand::Add { .. }) && location.names_data_dir(&config)) {
        bail!("{}", no_data_dir(&dir));
    }
    let socket = dir.join(crate::server::CONTROL_SOCKET);
    let request = match &cmd {
        UserCommand::Add {
            name,
            role,
            password,
            password_stdin,
            topics,
            ..
        } => {
            let password = match password {
                Some(p) => p.clone(),
                None => {
                    debug_assert!(password_stdin);
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    line.trim_end_matches(['\n', '\r']).to_string()
                }
            };
            UserRequest::Add(name.clone(), *role, password, topics.clone())
        }
        UserCommand::List { .. } => UserRequest::List,
        UserCommand::Del { name, .. } => UserRequest::Del(name.clone()),
    };
    if create {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        eprintln!(
            "perch: created the new data directory {} (`perch serve --data-dir {0}` uses it)",
            dir.display()
        );
    }
    let prepared = format::prepare(&dir)?;
    match format::open_trees(&dir) {
        Ok(trees) => {
            // A directory's first use may be `perch user add`: stamp the
            // database as `serve` would, or `serve` takes it for damaged.
            format::stamp_or_check(&trees, &dir, prepared)?;
            let accounts = Accounts::open(&trees)?;
            run_local(&accounts, request)
        }
        Err(e) if socket.exists() => {
            tracing::debug!(error = %e, "database busy; using the control socket");
            run_remote(&socket, request)
        }
        Err(e) => Err(e).with_context(|| format!("cannot open the database in {}", dir.display())),
    }
}

enum UserRequest {
    Add(String, Role, String, Vec<String>),
    List,
    Del(String),
}

fn print_users(users: &[accounts::UserInfo]) {
    if users.is_empty() {
        println!("no users");
        return;
    }
    println!("{:<32} {:<8} {:<17} MQTT TOPICS", "NAME", "ROLE", "CREATED");
    for u in users {
        let created = chrono::DateTime::from_timestamp_millis(u.created_ms)
            .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default();
        let topics = match u.role {
            accounts::Role::Device => u.topics.join(" "),
            _ => "all".into(),
        };
        println!(
            "{:<32} {:<8} {created:<17} {topics}",
            u.name,
            u.role.to_string()
        );
    }
}

fn run_local(accounts: &Accounts, request: UserRequest) -> anyhow::Result<()> {
    match request {
        UserRequest::Add(name, role, password, topics) => {
            let now = chrono::Utc::now().timestamp_millis();
            accounts.add(&name, role, &password, &topics, now)?;
            println!("added {role} {name:?}");
        }
        UserRequest::List => print_users(&accounts.list()?),
        UserRequest::Del(name) => {
            if !accounts.delete(&name)? {
                bail!("no user {name:?}");
            }
            println!("deleted {name:?}");
        }
    }
    Ok(())
}

/// A minimal HTTP/1.1 exchange over the control socket.
fn control_request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<(u16, String)> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("cannot reach the running perch at {}", socket.display()))?;
    let body = body.unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: perch\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status: u16 = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("malformed answer from the control socket")?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn remote_error(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| body.to_string())
}

fn run_remote(socket: &Path, request: UserRequest) -> anyhow::Result<()> {
    match request {
        UserRequest::Add(name, role, password, topics) => {
            let body =
                serde_json::json!({"name": name, "role": role, "password": password, "topics": topics}).to_string();
            let (status, resp) = control_request(socket, "POST", "/users", Some(body))?;
            if status != 201 {
                bail!("{}", remote_error(&resp));
            }
            println!("added {role} {name:?}");
        }
        UserRequest::List => {
            let (status, resp) = control_request(socket, "GET", "/users", None)?;
            if status != 200 {
                bail!("{}", remote_error(&resp));
            }
            let users: Vec<accounts::UserInfo> = serde_json::from_str(&resp)?;
            print_users(&users);
        }
        UserRequest::Del(name) => {
            let path = format!("/users/{}", utf8_percent(&name));
            let (status, resp) = control_request(socket, "DELETE", &path, None)?;
            if status != 204 {
                bail!("{}", remote_error(&resp));
            }
            println!("deleted {name:?}");
        }
    }
    Ok(())
}

fn utf8_percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Runs a `perch forward` command through the running server's control
/// socket: forwarding happens in the server, which holds the queues.
pub fn forward(cmd: ForwardCommand) -> anyhow::Result<()> {
    match cmd {
        ForwardCommand::Replay {
            name,
            since,
            location,
        } => {
            let since =
                base::units::parse_duration(&since).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
            let config = location.load_existing()?;
            let socket = config.data_dir.join(crate::server::CONTROL_SOCKET);
            let since_ms = chrono::Utc::now().timestamp_millis() - since.as_millis() as i64;
            let r = if UnixStream::connect(&socket).is_ok() {
                let body = serde_json::json!({ "since_ms": since_ms }).to_string();
                let path = format!("/forward/{}/replay", utf8_percent(&name));
                let (status, resp) = control_request(&socket, "POST", &path, Some(body))?;
                if status != 200 {
                    bail!("{}", remote_error(&resp));
                }
                serde_json::from_str::<forward::ReplayReport>(&resp)?
            } else {
                // perch is stopped: queue on the data directory directly;
                // the next start sends it.
                replay_offline(&config, &name, since_ms)?
            };
            if let Some(messages) = r.messages {
                println!(
                    "queued {messages} messages for {name} ({} queue items)",
                    r.items_queued
                );
            } else {
                println!(
                    "queued {} samples of {} series for {name} ({} queue items)",
                    r.samples, r.series, r.items_queued
                );
            }
            Ok(())
        }
    }
}

fn replay_offline(
    config: &Config,
    name: &str,
    since_ms: i64,
) -> anyhow::Result<forward::ReplayReport> {
    let clock: std::sync::Arc<dyn base::Clock> = std::sync::Arc::new(base::SystemClock);
    let (storage, _) = store::Storage::open(&config.storage, &config.data_dir, clock.clone())
        .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
    let fwd = forward::Forwarder::open(&config.forward, &storage.trees(), clock.clone())?;
    // MQTT targets replay the message history of the search index.
    let search = if config.search.enabled {
        Some(
            search::Search::open(&config.search, &config.data_dir, clock)
                .context("cannot open the search index")?,
        )
    } else {
        None
    };
    let r = fwd.replay(name, &storage, search.as_deref(), since_ms);
    if let Some(s) = search {
        s.close();
    }
    fwd.close_queues();
    storage.close()?;
    Ok(r?)
}

/// `perch check`'s exit status when a running perch holds the directory
/// (EX_TEMPFAIL: try again once it is stopped).
const CHECK_IN_USE: i32 = 75;

pub fn check(location: &Location, json: bool) -> anyhow::Result<i32> {
    let config = location.load_existing()?;
    let report = check::check(&config.data_dir);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.in_use {
        println!("data directory: {}", config.data_dir.display());
        println!(
            "IN USE:         a running perch holds it, so it was not checked (no sign of damage)"
        );
        println!(
            "                stop that perch first (the package's: sudo systemctl stop perch),"
        );
        println!(
            "                or check a backup: perch restore backup.tar --data-dir ./restored"
        );
        println!("                                   perch check --data-dir ./restored");
    } else {
        println!("data directory: {}", config.data_dir.display());
        if let Some(v) = report.format_version {
            println!("format:         {v}");
        }
        println!("series:         {}", report.series);
        println!("measurements:   {} metric names", report.measurements);
        println!("windows:        {}", report.windows);
        println!(
            "blocks:         {} ({} raw samples)",
            report.blocks, report.samples
        );
        println!(
            "wal:            {} segments, {} samples",
            report.wal_segments, report.wal_samples
        );
        for n in &report.notes {
            println!("note:           {n}");
        }
        for p in &report.problems {
            println!("PROBLEM:        {p}");
        }
        println!("{}", if report.ok() { "OK" } else { "DAMAGED" });
    }
    Ok(if report.in_use {
        CHECK_IN_USE
    } else if report.ok() {
        0
    } else {
        1
    })
}
