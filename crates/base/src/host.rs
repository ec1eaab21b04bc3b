//! Facts about the machine perch runs on and about perch's own process, as
//! [`MetricPoint`]s: CPU, load, memory, swap, the data partition, network
//! bytes, temperatures, uptime, resident memory and CPU time; the host's
//! name and LAN addresses, for the page that connects devices; and the
//! memory and disk writes of another process, for benchmarks.
//!
//! Owns one long-lived sysinfo `System`, `Networks` and `Components` (sysinfo
//! computes CPU usage from the difference between two refreshes, and building
//! them afresh would re-read far more of `/proc` and `/sys`) and a short-lived
//! snapshot of the last reading. Calls `system::disk` only.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sysinfo::{
    Components, CpuRefreshKind, MemoryRefreshKind, Networks, Pid, ProcessRefreshKind,
    ProcessesToUpdate, System,
};

use super::disk::partition_usage;
use super::metrics::{MetricPoint, MetricSource};

/// How long a reading is reused: a burst of scrapes (several Prometheus
/// servers, a dashboard refresh) then costs one pass over `/proc`, not one each.
pub const DEFAULT_CACHE_FOR: Duration = Duration::from_secs(1);

/// Interfaces reported at most. Containers add a `veth*` pair each and are
/// skipped, but a bound keeps a host with many virtual interfaces from turning
/// into unbounded series.
const MAX_INTERFACES: usize = 32;

/// Host and process metrics. Register one per process: it keeps state between
/// readings.
pub struct HostMetrics {
    data_dir: PathBuf,
    cache_for: Duration,
    state: Mutex<State>,
}

struct State {
    /// `None` when sysinfo cannot read this platform; then only the parts
    /// that do not need it are reported.
    system: Option<System>,
    networks: Option<Networks>,
    sensors: Sensors,
    pid: Option<Pid>,
    /// When CPU times were last read. sysinfo's usage is the busy share
    /// between two reads, meaningless when they are too close together.
    cpu_read_at: Option<Instant>,
    /// A read at least `MINIMUM_CPU_UPDATE_INTERVAL` after the previous one
    /// has happened, so usage can be reported.
    cpu_usage_valid: bool,
    snapshot: Vec<MetricPoint>,
    taken: Option<Instant>,
}

/// Where temperatures come from, found once at start: sensors do not come and
/// go on the boards perch runs on, and listing them re-scans `/sys`.
enum Sensors {
    /// hwmon sensors as sysinfo finds them (a Raspberry Pi's `cpu_thermal`).
    Hwmon(Components),
    /// No hwmon: the kernel's thermal zones, `(label, temp file)`.
    ThermalZones(Vec<(String, PathBuf)>),
}

impl HostMetrics {
    /// `data_dir` is the directory whose partition's size and use are
    /// reported (perch's data directory).
    pub fn new(data_dir: impl Into<PathBuf>) -> HostMetrics {
        let mut system = System::new().ok();
        if let Some(s) = system.as_mut() {
            // A first reading, so the first CPU usage reported covers the time
            // since start rather than since boot.
            s.refresh_cpu_specifics(CpuRefreshKind::nothing().with_usage());
        }
        let cpu_read_at = system.as_ref().map(|_| Instant::now());
        let sensors = match Components::new_with_refreshed_list() {
            Ok(c) if c.iter().any(|c| !c.label().is_empty()) => Sensors::Hwmon(c),
            _ => Sensors::ThermalZones(thermal_zones(Path::new("/sys/class/thermal"))),
        };
        HostMetrics {
            data_dir: data_dir.into(),
            cache_for: DEFAULT_CACHE_FOR,
            state: Mutex::new(State {
                system,
                networks: Networks::new_with_refreshed_list().ok(),
                sensors,
                pid: sysinfo::get_current_pid().ok(),
                cpu_read_at,
                cpu_usage_valid: false,
                snapshot: Vec::new(),
                taken: None,
            }),
        }
    }

    /// Reuse a reading for `d` instead of [`DEFAULT_CACHE_FOR`]; zero reads
    /// afresh every time.
    pub fn with_cache_for(mut self, d: Duration) -> HostMetrics {
        self.cache_for = d;
        self
    }
}

impl MetricSource for HostMetrics {
    fn collect(&self, out: &mut Vec<MetricPoint>) {
        // Holding the lock while reading makes concurrent callers wait for
        // this reading and then share it, instead of each reading /proc.
        let mut st = self.state.lock();
        let fresh = st.taken.is_some_and(|t| t.elapsed() < self.cache_for);
        if !fresh {
            let mut points = std::mem::take(&mut st.snapshot);
            points.clear();
            st.read(&self.data_dir, &mut points);
            st.snapshot = points;
            st.taken = Some(Instant::now());
        }
        out.extend(st.snapshot.iter().cloned());
    }
}

impl State {
    fn read(&mut self, data_dir: &Path, out: &mut Vec<MetricPoint>) {
        self.read_system(out);
        if let Ok(p) = partition_usage(data_dir) {
            let used = p.total_bytes.saturating_sub(p.free_bytes);
            out.push(MetricPoint::gauge(
                "perch_host_disk_total_bytes",
                "Size of the partition holding perch's data directory.",
                p.total_bytes as f64,
            ));
            out.push(MetricPoint::gauge(
                "perch_host_disk_used_bytes",
                "Bytes of that partition not available to perch (total minus free; includes blocks reserved for root).",
                used as f64,
            ));
            out.push(MetricPoint::gauge(
                "perch_host_disk_free_bytes",
                "Bytes of that partition perch can still write.",
                p.free_bytes as f64,
            ));
        }
        self.read_networks(out);
        self.read_temperatures(out);
        if let Ok(up) = System::uptime() {
            out.push(MetricPoint::gauge(
                "perch_host_uptime_seconds",
                "Time since the host booted.",
                up as f64,
            ));
        }
    }

    fn read_system(&mut self, out: &mut Vec<MetricPoint>) {
        if let Ok(l) = System::load_average() {
            for (name, help, v) in [
                ("perch_host_load1", "Load average over 1 minute.", l.one),
                ("perch_host_load5", "Load average over 5 minutes.", l.five),
                (
                    "perch_host_load15",
                    "Load average over 15 minutes.",
                    l.fifteen,
                ),
            ] {
                out.push(MetricPoint::gauge(name, help, v));
            }
        }
        let Some(sys) = self.system.as_mut() else {
            return;
        };
        let now = Instant::now();
        let cpu_due = self
            .cpu_read_at
            .is_none_or(|t| now.duration_since(t) >= sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        if cpu_due {
            sys.refresh_cpu_specifics(CpuRefreshKind::nothing().with_usage());
            self.cpu_usage_valid |= self.cpu_read_at.is_some();
            self.cpu_read_at = Some(now);
        }
        sys.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram().with_swap());
        if let Some(pid) = self.pid {
            sys.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                false,
                ProcessRefreshKind::nothing().with_memory().with_cpu(),
            );
        }
        let cpus = sys.cpus();
        if !cpus.is_empty() {
            out.push(MetricPoint::gauge(
                "perch_host_cpus",
                "Logical CPUs of the host.",
                cpus.len() as f64,
            ));
        }
        // Until two reads far enough apart, report no usage rather than a
        // made-up one (the first scrape right after start).
        if !cpus.is_empty() && self.cpu_usage_valid {
            out.push(MetricPoint::gauge(
                "perch_host_cpu_usage_ratio",
                "Share of CPU time spent busy since the previous reading, all CPUs (0-1).",
                ratio(sys.global_cpu_usage()),
            ));
            for (i, c) in cpus.iter().enumerate() {
                out.push(
                    MetricPoint::gauge(
                        "perch_host_cpu_core_usage_ratio",
                        "Share of CPU time spent busy since the previous reading, per CPU (0-1).",
                        ratio(c.usage()),
                    )
                    .with_label("cpu", i.to_string()),
                );
            }
        }
        let total = sys.total_memory();
        // sysinfo leaves everything at 0 when /proc/meminfo cannot be read:
        // report nothing rather than a host without memory.
        if total > 0 {
            for (name, help, v) in [
                (
                    "perch_host_memory_total_bytes",
                    "Physical memory of the host.",
                    total,
                ),
                (
                    "perch_host_memory_used_bytes",
                    "Memory in use (total minus available).",
                    sys.used_memory(),
                ),
                (
                    "perch_host_memory_available_bytes",
                    "Memory available to start new work without swapping (MemAvailable).",
                    sys.available_memory(),
                ),
                (
                    "perch_host_swap_total_bytes",
                    "Swap space of the host.",
                    sys.total_swap(),
                ),
                (
                    "perch_host_swap_used_bytes",
                    "Swap space in use.",
                    sys.used_swap(),
                ),
            ] {
                out.push(MetricPoint::gauge(name, help, v as f64));
            }
        }
        if let Some(p) = self.pid.and_then(|pid| sys.process(pid)) {
            out.push(MetricPoint::gauge(
                "perch_process_resident_memory_bytes",
                "Resident memory of the perch process.",
                p.memory() as f64,
            ));
            out.push(MetricPoint::counter(
                "perch_process_cpu_seconds_total",
                "CPU time (user and system) used by the perch process.",
                p.accumulated_cpu_time() as f64 / 1000.0,
            ));
            out.push(MetricPoint::gauge(
                "perch_process_start_time_seconds",
                "When the perch process started, in seconds since the Unix epoch.",
                p.start_time() as f64,
            ));
        }
    }

    fn read_networks(&mut self, out: &mut Vec<MetricPoint>) {
        let Some(nets) = self.networks.as_mut() else {
            return;
        };
        // `true`: forget interfaces that went away, so they stop being reported.
        nets.refresh(true);
        // Interface names are OS strings; a name that is not UTF-8 is shown
        // lossily rather than dropped.
        let mut ifaces: Vec<(String, u64, u64)> = nets
            .iter()
            .map(|(name, data)| {
                (
                    name.to_string_lossy().into_owned(),
                    data.total_received(),
                    data.total_transmitted(),
                )
            })
            .filter(|(name, _, _)| name != "lo" && !name.starts_with("veth"))
            .collect();
        // A stable order keeps the exposition diff-friendly and the cap fair.
        ifaces.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        ifaces.truncate(MAX_INTERFACES);
        for (name, rx, tx) in ifaces {
            out.push(
                MetricPoint::counter(
                    "perch_host_network_receive_bytes_total",
                    "Bytes received on a network interface since boot.",
                    rx as f64,
                )
                .with_label("interface", name.clone()),
            );
            out.push(
                MetricPoint::counter(
                    "perch_host_network_transmit_bytes_total",
                    "Bytes sent on a network interface since boot.",
                    tx as f64,
                )
                .with_label("interface", name),
            );
        }
    }

    fn read_temperatures(&mut self, out: &mut Vec<MetricPoint>) {
        let mut readings: Vec<(String, f64)> = Vec::new();
        match &mut self.sensors {
            Sensors::Hwmon(components) => {
                for c in components.iter_mut() {
                    c.refresh();
                    if let Some(t) = c.temperature() {
                        readings.push((c.label().to_string(), f64::from(t)));
                    }
                }
            }
            Sensors::ThermalZones(zones) => {
                for (label, file) in zones.iter() {
                    if let Some(t) = read_millidegrees(file) {
                        readings.push((label.clone(), t));
                    }
                }
            }
        }
        // A missing or broken sensor reads as nothing, never as 0 (or as the
        // -273 °C some drivers report for a disconnected probe).
        readings
            .retain(|(label, t)| !label.is_empty() && t.is_finite() && (-60.0..=200.0).contains(t));
        let cpu = readings
            .iter()
            .filter_map(|(label, t)| cpu_sensor_rank(label).map(|r| (r, *t)))
            .min_by_key(|(r, _)| *r);
        if let Some((_, t)) = cpu {
            out.push(MetricPoint::gauge(
                "perch_host_cpu_temperature_celsius",
                "Temperature of the CPU (or SoC), where the board has a sensor for it.",
                t,
            ));
        }
        for (label, t) in readings {
            out.push(
                MetricPoint::gauge(
                    "perch_host_temperature_celsius",
                    "Temperature of each sensor of the host.",
                    t,
                )
                .with_label("sensor", label),
            );
        }
    }
}

/// sysinfo reports usage in percent; Prometheus' base unit is a ratio.
fn ratio(percent: f32) -> f64 {
    (f64::from(percent) / 100.0).clamp(0.0, 1.0)
}

/// How surely a sensor label names the CPU: lower is surer, `None` is not a
/// CPU sensor. Covers the Raspberry Pi (`cpu_thermal` in hwmon, `cpu-thermal`
/// as a thermal zone), other ARM SoCs, Intel and AMD.
fn cpu_sensor_rank(label: &str) -> Option<u8> {
    let l = label.to_ascii_lowercase();
    const KNOWN: [&str; 7] = [
        "cpu_thermal",
        "cpu-thermal",
        "coretemp package id 0",
        "k10temp tctl",
        "x86_pkg_temp",
        "soc_thermal",
        "soc-thermal",
    ];
    KNOWN.iter().position(|k| l.starts_with(k)).map(|i| i as u8)
}

/// The kernel's thermal zones under `root` (normally `/sys/class/thermal`):
/// each `thermal_zoneN` with a `temp` file, labelled by its `type`, or by type
/// and zone where two zones share a type.
fn thermal_zones(root: &Path) -> Vec<(String, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut zones: Vec<(String, String, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let zone = e.file_name().to_str()?.to_string();
            if !zone.starts_with("thermal_zone") {
                return None;
            }
            let dir = e.path();
            let temp = dir.join("temp");
            if !temp.exists() {
                return None;
            }
            let kind = std::fs::read_to_string(dir.join("type"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            Some((kind, zone, temp))
        })
        .collect();
    zones.sort_by(|a, b| a.1.cmp(&b.1));
    zones
        .iter()
        .map(|(kind, zone, temp)| {
            let shared = zones.iter().filter(|z| &z.0 == kind).count() > 1;
            let label = if kind.is_empty() {
                zone.clone()
            } else if shared {
                format!("{kind} {zone}")
            } else {
                kind.clone()
            };
            (label, temp.clone())
        })
        .collect()
}

/// A sysfs temperature file: an integer in thousandths of a degree Celsius.
fn read_millidegrees(file: &Path) -> Option<f64> {
    let s = std::fs::read_to_string(file).ok()?;
    let milli: i64 = s.trim().parse().ok()?;
    Some(milli as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thermal_zones_are_found_and_labelled() {
        let dir = tempfile::tempdir().unwrap();
        let zone = |n: &str, kind: &str, temp: Option<&str>| {
            let d = dir.path().join(n);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("type"), format!("{kind}\n")).unwrap();
            if let Some(t) = temp {
                std::fs::write(d.join("temp"), format!("{t}\n")).unwrap();
            }
        };
        zone("thermal_zone0", "cpu-thermal", Some("48312"));
        zone("thermal_zone1", "acpitz", Some("27800"));
        zone("thermal_zone2", "acpitz", Some("29800"));
        zone("thermal_zone3", "no-temp", None);
        std::fs::create_dir_all(dir.path().join("cooling_device0")).unwrap();
        let zones = thermal_zones(dir.path());
        let labels: Vec<&str> = zones.iter().map(|z| z.0.as_str()).collect();
        assert_eq!(
            labels,
            [
                "cpu-thermal",
                "acpitz thermal_zone1",
                "acpitz thermal_zone2"
            ]
        );
        assert_eq!(read_millidegrees(&zones[0].1), Some(48.312));

        let mut st = State {
            system: None,
            networks: None,
            sensors: Sensors::ThermalZones(zones),
            pid: None,
            cpu_read_at: None,
            cpu_usage_valid: false,
            snapshot: Vec::new(),
            taken: None,
        };
        let mut out = Vec::new();
        st.read_temperatures(&mut out);
        assert_eq!(out[0].name, "perch_host_cpu_temperature_celsius");
        assert_eq!(out[0].value, 48.312);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn no_sensor_means_no_temperature() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = State {
            system: None,
            networks: None,
            sensors: Sensors::ThermalZones(thermal_zones(dir.path())),
            pid: None,
            cpu_read_at: None,
            cpu_usage_valid: false,
            snapshot: Vec::new(),
            taken: None,
        };
        let mut out = Vec::new();
        st.read_temperatures(&mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn cpu_sensors_are_recognised() {
        assert_eq!(cpu_sensor_rank("cpu_thermal temp1"), Some(0));
        assert!(cpu_sensor_rank("coretemp Package id 0").is_some());
        assert!(cpu_sensor_rank("nvme Composite").is_none());
    }

    #[test]
    fn readings_are_cached_briefly() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostMetrics::new(dir.path()).with_cache_for(Duration::from_secs(3600));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        host.collect(&mut a);
        host.collect(&mut b);
        assert_eq!(
            a, b,
            "the second reading within the cache time is the first"
        );
        assert!(a.iter().any(|p| p.name == "perch_host_disk_total_bytes"));
    }
}

/// Resident memory of process `pid` (`VmRSS`): how benchmarks measure a
/// server they started.
pub fn process_rss_bytes(pid: u32) -> std::io::Result<u64> {
    Ok(proc_number(pid, "status", "VmRSS:")? * 1024)
}

/// Bytes process `pid` has caused to be written to storage so far
/// (`write_bytes` of `/proc/PID/io`).
pub fn process_written_bytes(pid: u32) -> std::io::Result<u64> {
    proc_number(pid, "io", "write_bytes:")
}

/// The first number after `key` in `/proc/<pid>/<file>`.
fn proc_number(pid: u32, file: &str, key: &str) -> std::io::Result<u64> {
    file_number(&format!("/proc/{pid}/{file}"), key)
}

/// The first number after `key` in the `key: value` file at `path`
/// (`/proc/self/io`, `/proc/self/smaps_rollup`, …).
pub(crate) fn file_number(path: &str, key: &str) -> std::io::Result<u64> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}")))?;
    number_after(&text, key).ok_or_else(|| std::io::Error::other(format!("{path} has no {key}")))
}

/// The first number after `key` at the start of a line of `text`.
pub(crate) fn number_after(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The RAM perch may use: the machine's (`MemTotal` of `/proc/meminfo`),
/// or the limit of its cgroup (a container's, or a systemd unit's
/// `MemoryMax=`) when that is smaller.
pub fn total_ram_bytes() -> Option<u64> {
    let total = file_number("/proc/meminfo", "MemTotal:").ok()? * 1024;
    Some(total.min(cgroup_memory_max().unwrap_or(u64::MAX)))
}

/// The memory limit of this process's cgroup: `memory.max` (v2) or
/// `memory.limit_in_bytes` (v1); unlimited reads as `max` or a huge
/// number. A container may see its cgroup at the root of its
/// `/sys/fs/cgroup` rather than at its path.
fn cgroup_memory_max() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            match controllers {
                "" => Some(("/sys/fs/cgroup", "memory.max", path)),
                c if c.split(',').any(|c| c == "memory") => {
                    Some(("/sys/fs/cgroup/memory", "memory.limit_in_bytes", path))
                }
                _ => None,
            }
        })
        .flat_map(|(root, file, path)| {
            [
                format!("{root}{}/{file}", path.trim_end_matches('/')),
                format!("{root}/{file}"),
            ]
        })
        .find_map(|f| std::fs::read_to_string(f).ok()?.trim().parse::<u64>().ok())
}

/// The host's name (`perch` when the system does not say).
pub fn host_name() -> String {
    sysinfo::System::host_name().unwrap_or_else(|_| "perch".into())
}

/// The host's addresses, those a device on the LAN can use first: private
/// IPv4, other IPv4, global IPv6; link-local and loopback addresses only
/// when there is nothing else. Bridges of containers and VMs (`docker0`,
/// `br-…`, `veth…`, `virbr…`) are left out: no device reaches perch there.
pub fn lan_addresses() -> Vec<String> {
    let Ok(networks) = sysinfo::Networks::new_with_refreshed_list() else {
        return Vec::new();
    };
    let all: Vec<std::net::IpAddr> = (&networks)
        .into_iter()
        .filter(|(name, _)| !is_virtual_bridge(&name.to_string_lossy()))
        .flat_map(|(_, data)| data.ip_networks().iter().map(|n| n.addr))
        .collect();
    order_addresses(all)
}

fn is_virtual_bridge(interface: &str) -> bool {
    ["docker", "br-", "veth", "virbr", "cni", "flannel", "podman"]
        .iter()
        .any(|p| interface.starts_with(p))
}

fn order_addresses(mut all: Vec<std::net::IpAddr>) -> Vec<String> {
    all.sort_by_key(|a| (address_rank(a), *a));
    all.dedup();
    let usable = all.iter().filter(|a| address_rank(a) < 3).count();
    let shown = if usable == 0 {
        &all[..]
    } else {
        &all[..usable]
    };
    shown.iter().map(ToString::to_string).collect()
}

/// 0: private IPv4 (the LAN), 1: other IPv4, 2: global IPv6, 3:
/// link-local, 4: loopback.
fn address_rank(a: &std::net::IpAddr) -> u8 {
    use std::net::IpAddr;
    match a {
        IpAddr::V4(v4) if v4.is_loopback() => 4,
        IpAddr::V4(v4) if v4.is_link_local() => 3,
        IpAddr::V4(v4) if v4.is_private() => 0,
        IpAddr::V4(_) => 1,
        IpAddr::V6(v6) if v6.is_loopback() => 4,
        // fe80::/10
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => 3,
        IpAddr::V6(_) => 2,
    }
}

#[cfg(test)]
mod address_tests {
    use super::order_addresses;

    fn order(list: &[&str]) -> Vec<String> {
        order_addresses(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    #[test]
    fn lan_addresses_come_first_and_loopback_only_alone() {
        let all = [
            "127.0.0.1",
            "fe80::1",
            "2001:db8::5",
            "192.168.1.20",
            "169.254.3.3",
            "8.8.4.4",
        ];
        assert_eq!(order(&all), ["192.168.1.20", "8.8.4.4", "2001:db8::5"]);
        assert_eq!(
            order(&["::1", "127.0.0.1", "fe80::2"]),
            ["fe80::2", "127.0.0.1", "::1"]
        );
        assert!(super::is_virtual_bridge("docker0") && super::is_virtual_bridge("veth12ab"));
        assert!(!super::is_virtual_bridge("eth0") && !super::is_virtual_bridge("wlan0"));
    }
}

#[cfg(test)]
mod process_tests {
    #[test]
    fn a_process_memory_and_writes_are_read_and_a_missing_one_named() {
        let me = std::process::id();
        assert!(super::process_rss_bytes(me).unwrap() > 1 << 20);
        super::process_written_bytes(me).unwrap();
        let e = super::process_rss_bytes(u32::MAX).unwrap_err().to_string();
        assert!(e.contains(&format!("/proc/{}/status", u32::MAX)), "{e}");
    }
}
