//! The systems a benchmark measures, each its own process on loopback:
//! perch (this binary, `serve`), Debian's Prometheus and VictoriaMetrics,
//! and a small blocking HTTP client that authenticates to perch.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::bail;

/// A server process, killed when dropped.
pub struct Server {
    pub name: &'static str,
    pub child: Child,
    pub url: String,
}

impl Server {
    /// Asks the server to stop (SIGTERM) and waits, at most `timeout`, for
    /// it to exit; its resource usage over its whole life, which counts
    /// what it wrote to disk up to the end (`ru_oublock`, 512-byte units).
    pub fn stop(self, timeout: Duration) -> anyhow::Result<libc::rusage> {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling and reaping our own child by its id.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        loop {
            let mut status = 0;
            // SAFETY: an all-zero rusage is valid; wait4 fills it in.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
            if r == pid {
                // Reaped: Drop's kill could hit a process that took the pid.
                std::mem::forget(self);
                return Ok(usage);
            }
            if r < 0 {
                bail!(
                    "waiting for {}: {}",
                    self.name,
                    std::io::Error::last_os_error()
                );
            }
            if Instant::now() > deadline {
                bail!("{} did not stop within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_ready(client: &Client, url: &str, server: &mut Server) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(s) = server.child.try_wait()? {
            bail!("{} exited with {s} during start", server.name);
        }
        if client.get_status(url).is_ok_and(|s| s == 200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} did not become ready at {url}", server.name);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A tiny blocking HTTP client over reqwest's async one, authenticated as
/// [`BENCH_USER`].
pub mod client {
    use super::BENCH_USER;

    pub struct Client {
        rt: tokio::runtime::Runtime,
        inner: ::reqwest::Client,
    }

    impl Client {
        pub fn new() -> anyhow::Result<Client> {
            Ok(Client {
                rt: tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?,
                inner: ::reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(600))
                    .build()?,
            })
        }

        pub fn get_status(&self, url: &str) -> anyhow::Result<u16> {
            self.rt.block_on(async {
                let r = self
                    .inner
                    .get(url)
                    .basic_auth(BENCH_USER.0, Some(BENCH_USER.1))
                    .send()
                    .await?;
                Ok(r.status().as_u16())
            })
        }

        pub fn post(
            &self,
            url: &str,
            content_type: &str,
            body: String,
        ) -> anyhow::Result<(u16, String)> {
            self.rt.block_on(async {
                let r = self
                    .inner
                    .post(url)
                    .basic_auth(BENCH_USER.0, Some(BENCH_USER.1))
                    .header("Content-Type", content_type)
                    .body(body)
                    .send()
                    .await?;
                let s = r.status().as_u16();
                Ok((s, r.text().await?))
            })
        }

        pub fn get(&self, url: &str) -> anyhow::Result<(u16, String)> {
            self.rt.block_on(async {
                let r = self
                    .inner
                    .get(url)
                    .basic_auth(BENCH_USER.0, Some(BENCH_USER.1))
                    .send()
                    .await?;
                let s = r.status().as_u16();
                Ok((s, r.text().await?))
            })
        }
    }
}

pub use client::Client;

pub fn which(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// The user every request to perch authenticates as (Basic); Prometheus
/// and VictoriaMetrics, run without authentication, ignore the header.
pub const BENCH_USER: (&str, &str) = ("bench", "bench-password");

/// perch answers nothing without credentials: the benchmark's user is
/// added to the data directory before the first start.
pub fn add_bench_user(perch: &Path, dir: &Path) -> anyhow::Result<()> {
    let out = Command::new(perch)
        .args(["user", "add", BENCH_USER.0, "--role", "admin"])
        .args(["--password", BENCH_USER.1, "--data-dir"])
        .arg(dir.join("data"))
        .output()?;
    if !out.status.success() {
        bail!(
            "cannot add the benchmark's user: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Starts `cmd` as the server `name` on `port`, its output to `log`, and
/// waits until `ready` (a path) answers 200.
pub fn launch(
    client: &Client,
    name: &'static str,
    mut cmd: Command,
    port: u16,
    log: &Path,
    ready: &str,
) -> anyhow::Result<Server> {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()?;
    let mut s = Server {
        name,
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    wait_ready(client, &format!("{}{ready}", s.url), &mut s)?;
    Ok(s)
}

/// The perch binary `perch` (this one, or another build to compare) on
/// free ports, data under `dir/data`, configured by `config` (TOML).
pub fn start_perch(
    client: &Client,
    perch: &Path,
    dir: &Path,
    config: &str,
) -> anyhow::Result<Server> {
    let config_path = dir.join("perch.toml");
    std::fs::write(&config_path, config)?;
    let port = free_port()?;
    let help = Command::new(perch).args(["serve", "--help"]).output()?;
    let mut cmd = Command::new(perch);
    cmd.args(["serve", "--config"])
        .arg(&config_path)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--http", &format!("127.0.0.1:{port}")])
        .args(["--mqtt", &format!("127.0.0.1:{}", free_port()?)])
        .env("RUST_LOG", "warn");
    if String::from_utf8_lossy(&help.stdout).contains("--mqtt-ws") {
        cmd.args(["--mqtt-ws", "off"]);
    }
    launch(
        client,
        "perch",
        cmd,
        port,
        &dir.join("perch.log"),
        "/healthz",
    )
}

/// VictoriaMetrics on a free port with its data under `dir/vm`, retention
/// long enough for any fixture.
pub fn start_victoria(client: &Client, dir: &Path, extra: &[&str]) -> anyhow::Result<Server> {
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    let mut cmd = Command::new("victoria-metrics");
    cmd.arg(format!("-storageDataPath={}", dir.join("vm").display()))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg("-retentionPeriod=100y")
        .args(extra);
    let log = dir.join("victoria-metrics.log");
    launch(client, "VictoriaMetrics", cmd, port, &log, "/health")
}
