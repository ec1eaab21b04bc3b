//! Running as a systemd service (`Type=notify`, see `systemd/perch.service`):
//! tells the service manager when perch is ready, that it is alive (the
//! watchdog), and that it is stopping. Every call does nothing when perch was
//! not started by systemd (no `NOTIFY_SOCKET`), so `perch serve` from a shell
//! behaves as before.
//!
//! The watchdog ping is only sent after every [`Probe`] has answered: a
//! process whose runtime still ticks but whose store is deadlocked, or whose
//! HTTP listener no longer serves, counts as hung and is restarted by
//! systemd. Probes are given by the caller, so this module calls nothing else
//! in perch.

use std::error::Error;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// Tells systemd that perch is up (`READY=1`), with a status line for
/// `systemctl status`.
pub fn notify_ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd that perch has begun to shut down (`STOPPING=1`).
pub fn notify_stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// The watchdog period systemd asked for (`WatchdogSec=` sets
/// `WATCHDOG_USEC`), if any and if meant for this process.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}

/// What a blocking probe's function says is wrong; logged as it reads.
pub type CheckError = Box<dyn Error + Send + Sync>;

type BlockingCheck = Arc<dyn Fn() -> Result<(), CheckError> + Send + Sync>;

/// One thing that must answer before the watchdog is pinged.
#[derive(Clone)]
pub enum Probe {
    /// A function run on the blocking thread pool (so it may take locks);
    /// it proves that pool and whatever the function touches are not stuck.
    Blocking(&'static str, BlockingCheck),
    /// `GET /healthz` on perch's own HTTP listener must answer 200: proves
    /// the accept loop and the router run.
    Http(SocketAddr),
}

impl Probe {
    pub fn blocking(
        name: &'static str,
        f: impl Fn() -> Result<(), CheckError> + Send + Sync + 'static,
    ) -> Probe {
        Probe::Blocking(name, Arc::new(f))
    }

    fn name(&self) -> String {
        match self {
            Probe::Blocking(name, _) => name.to_string(),
            Probe::Http(addr) => format!("HTTP on {addr}"),
        }
    }

    async fn run(&self) -> Result<(), ProbeError> {
        match self {
            Probe::Blocking(_, f) => {
                let f = f.clone();
                tokio::task::spawn_blocking(move || f())
                    .await
                    .map_err(ProbeError::Panicked)?
                    .map_err(ProbeError::Check)
            }
            Probe::Http(addr) => http_health(*addr).await,
        }
    }
}

/// Why a probe failed: logged, and the watchdog ping withheld.
#[derive(Debug)]
enum ProbeError {
    Check(CheckError),
    /// The blocking function panicked.
    Panicked(tokio::task::JoinError),
    NoAnswerWithin(Duration),
    Connect {
        addr: SocketAddr,
        source: io::Error,
    },
    Request {
        addr: SocketAddr,
        source: io::Error,
    },
    Response {
        addr: SocketAddr,
        source: io::Error,
    },
    /// The start of the answer, which should read `HTTP/1.1 200`.
    NotOk([u8; 12]),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Check(e) => fmt::Display::fmt(e, f),
            ProbeError::Panicked(e) => write!(f, "panicked: {e}"),
            ProbeError::NoAnswerWithin(d) => write!(f, "no answer within {} ms", d.as_millis()),
            ProbeError::Connect { addr, source } => write!(f, "cannot connect to {addr}: {source}"),
            ProbeError::Request { addr, source } => write!(f, "cannot send to {addr}: {source}"),
            ProbeError::Response { addr, source } => write!(f, "no answer from {addr}: {source}"),
            ProbeError::NotOk(head) => {
                write!(f, "/healthz answered {:?}", String::from_utf8_lossy(head))
            }
        }
    }
}

impl Error for ProbeError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            // Displayed as the check's own error, so its cause comes next.
            ProbeError::Check(e) => e.source(),
            ProbeError::Panicked(e) => Some(e),
            ProbeError::Connect { source, .. }
            | ProbeError::Request { source, .. }
            | ProbeError::Response { source, .. } => Some(source),
            ProbeError::NoAnswerWithin(_) | ProbeError::NotOk(_) => None,
        }
    }
}

/// Starts pinging systemd's watchdog if `WatchdogSec=` is set. Pings every
/// quarter period, each after all probes answered within half a period; a
/// probe that fails or does not answer is logged and the ping withheld, so
/// systemd restarts perch once that has lasted a whole period. Once `stop`
/// is true the listeners close, so it pings without probes (the stop
/// timeout bounds shutdown) until the caller aborts the task at the end.
pub fn start_watchdog(
    probes: Vec<Probe>,
    stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let period = watchdog_period()?;
    tracing::info!(
        period_ms = period.as_millis() as u64,
        "systemd watchdog enabled"
    );
    let ping = || send(&[NotifyState::Watchdog]);
    Some(tokio::spawn(watchdog_loop(period, probes, stop, ping)))
}

async fn watchdog_loop(
    period: Duration,
    probes: Vec<Probe>,
    mut stop: watch::Receiver<bool>,
    ping: impl Fn(),
) {
    let every = (period / 4).max(Duration::from_millis(50));
    let deadline = period / 2;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        if *stop.borrow_and_update() {
            ping();
            continue;
        }
        let mut healthy = true;
        for probe in &probes {
            let outcome = match tokio::time::timeout(deadline, probe.run()).await {
                Ok(r) => r,
                Err(_) => Err(ProbeError::NoAnswerWithin(deadline)),
            };
            if let Err(e) = outcome {
                healthy = false;
                tracing::error!(
                    probe = %probe.name(),
                    error = %e,
                    "watchdog: withholding the ping; systemd restarts perch if this lasts"
                );
            }
        }
        if healthy {
            if failing {
                tracing::info!("watchdog: all probes answer again");
            }
            ping();
        }
        failing = !healthy;
    }
}

/// The address to reach a listener on from this host: the loopback address
/// for a wildcard listener.
fn local_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

async fn http_health(listen: SocketAddr) -> Result<(), ProbeError> {
    let addr = local_address(listen);
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| ProbeError::Connect { addr, source })?;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: perch\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|source| ProbeError::Request { addr, source })?;
    let mut head = [0u8; 12];
    conn.read_exact(&mut head)
        .await
        .map_err(|source| ProbeError::Response { addr, source })?;
    // "HTTP/1.1 200"
    if &head[9..12] == b"200" {
        Ok(())
    } else {
        Err(ProbeError::NotOk(head))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listeners_are_reached_on_loopback() {
        assert_eq!(
            local_address("0.0.0.0:8080".parse().unwrap()),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            local_address("[::]:8080".parse().unwrap()),
            "[::1]:8080".parse().unwrap()
        );
        assert_eq!(
            local_address("192.0.2.7:80".parse().unwrap()),
            "192.0.2.7:80".parse().unwrap()
        );
    }

    #[tokio::test]
    async fn a_failing_or_stuck_probe_withholds_pings() {
        use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::SeqCst};
        let pings = Arc::new(AtomicUsize::new(0));
        let counted = pings.clone();
        let take = || pings.swap(0, SeqCst);
        // 0: healthy, 1: fails, 2: hangs past the deadline
        let mode = Arc::new(AtomicU32::new(0));
        let m = mode.clone();
        let probe = Probe::blocking("test", move || match m.load(SeqCst) {
            0 => Ok(()),
            1 => Err("broken".into()),
            _ => {
                std::thread::sleep(Duration::from_millis(400));
                Ok(())
            }
        });
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(watchdog_loop(
            Duration::from_millis(400),
            vec![probe],
            rx,
            move || {
                counted.fetch_add(1, SeqCst);
            },
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(take() >= 3, "pings while healthy");

        for broken in [1, 2] {
            mode.store(broken, SeqCst);
            tokio::time::sleep(Duration::from_millis(250)).await;
            take();
            tokio::time::sleep(Duration::from_millis(600)).await;
            assert_eq!(take(), 0, "no ping while the probe is in mode {broken}");
        }

        mode.store(0, SeqCst);
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(take() >= 2, "pings again once healthy");

        // Shutting down: the probes no longer run, the pings go on.
        mode.store(1, SeqCst);
        tx.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        take();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(take() >= 3, "pings while stopping");
        task.abort();
    }
}
