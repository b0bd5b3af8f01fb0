//! This host's health as a report: CPU, load, memory, swap, disks and uptime, read with
//! the `sysinfo` crate.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! let mut probe = monitor_cli::HealthProbe::new()
//!     .with_host("web1") // default: this machine's host name
//!     .with_interval(Duration::from_secs(10)); // said in each report as `interval_secs`
//! std::thread::sleep(monitor_cli::HealthProbe::MIN_INTERVAL); // CPU use needs two readings
//! let report = probe.snapshot();
//! assert_eq!(report.code, "host.health");
//! assert_eq!(report.host, "web1");
//! assert_eq!(report.interval_secs, Some(10.0));
//! let json = serde_json::to_string(&report).unwrap(); // `{"code":"host.health","host":"web1",…`
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sysinfo::{Disks, System};

/// The `code` of a health report.
pub const HEALTH_CODE: &str = "host.health";

/// One mounted file system in a health report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskHealth {
    /// Mount point.
    pub mount: String,
    /// File system type (`ext4`, `xfs`, ...).
    pub fs: String,
    /// Size, bytes.
    pub total: u64,
    /// Space available to unprivileged users, bytes.
    pub available: u64,
}

/// A health report; serialises to
/// `{"code":"host.health","host":…,"ts":…,"interval_secs":…,"cpu_percent":…,"load":[…],
/// "mem_used":…,"mem_total":…,"swap_used":…,"swap_total":…,"disks":[…],"uptime_secs":…}`
/// (`interval_secs` only when the probe was given one).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// Always [`HEALTH_CODE`].
    pub code: &'static str,
    /// The host name: the one given with [`HealthProbe::with_host`] (`--host`), else this
    /// machine's (`"unknown"` if it cannot be read).
    pub host: String,
    /// When the reading was taken, unix seconds.
    pub ts: u64,
    /// Seconds between two reports (the agent's `--interval`, fractional allowed), so that
    /// a reader can tell when reports have stopped: the dashboard marks a host stale after
    /// three intervals without one. Absent (`None`, not serialised) when not given with
    /// [`HealthProbe::with_interval`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_secs: Option<f64>,
    /// CPU use over all cores since the previous reading, 0 to 100, one decimal.
    pub cpu_percent: f64,
    /// Load average over 1, 5 and 15 minutes.
    pub load: [f64; 3],
    /// Memory in use, bytes.
    pub mem_used: u64,
    /// Memory installed, bytes.
    pub mem_total: u64,
    /// Swap in use, bytes.
    pub swap_used: u64,
    /// Swap configured, bytes.
    pub swap_total: u64,
    /// Mounted file systems.
    pub disks: Vec<DiskHealth>,
    /// Time since boot, seconds.
    pub uptime_secs: u64,
}

/// Reads this host's health. Keep one and call [`HealthProbe::snapshot`] (or [`HealthProbe::report_json`]) at each interval:
/// CPU use is measured between two readings.
pub struct HealthProbe {
    system: System,
    disks: Disks,
    /// The host name to report instead of the machine's.
    host: Option<String>,
    /// The interval to announce in each report.
    interval: Option<Duration>,
}

impl std::fmt::Debug for HealthProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthProbe").finish_non_exhaustive()
    }
}

impl Default for HealthProbe {
    fn default() -> Self {
        HealthProbe::new()
    }
}

impl HealthProbe {
    /// The shortest useful time between two readings for the CPU figure.
    pub const MIN_INTERVAL: Duration = sysinfo::MINIMUM_CPU_UPDATE_INTERVAL;

    /// A probe, with a first CPU reading taken.
    pub fn new() -> HealthProbe {
        let mut system = System::new();
        system.refresh_cpu_usage();
        HealthProbe {
            system,
            disks: Disks::new_with_refreshed_list(),
            host: None,
            interval: None,
        }
    }

    /// Reports `host` as the host name instead of this machine's (`--host`): e.g. one
    /// agent per container, or a name more telling than the kernel's.
    #[must_use]
    pub fn with_host(mut self, host: impl Into<String>) -> HealthProbe {
        self.host = Some(host.into());
        self
    }

    /// Announces `interval` as each report's `interval_secs`: the time the caller waits
    /// between two readings (`--interval`).
    #[must_use]
    pub fn with_interval(mut self, interval: Duration) -> HealthProbe {
        self.interval = Some(interval);
        self
    }

    /// A fresh reading, as a typed report.
    pub fn snapshot(&mut self) -> HealthReport {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.disks.refresh(true);
        let load = System::load_average();
        let cpu = self.system.global_cpu_usage();
        HealthReport {
            code: HEALTH_CODE,
            host: match &self.host {
                Some(host) => host.clone(),
                None => System::host_name().unwrap_or_else(|| "unknown".into()),
            },
            ts: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            interval_secs: self.interval.map(|d| d.as_secs_f64()),
            cpu_percent: if cpu.is_finite() {
                (f64::from(cpu) * 10.0).round() / 10.0
            } else {
                0.0
            },
            load: [load.one, load.five, load.fifteen].map(|v| if v.is_finite() { v } else { 0.0 }),
            mem_used: self.system.used_memory(),
            mem_total: self.system.total_memory(),
            swap_used: self.system.used_swap(),
            swap_total: self.system.total_swap(),
            disks: self
                .disks
                .list()
                .iter()
                .map(|d| DiskHealth {
                    mount: d.mount_point().to_string_lossy().into_owned(),
                    fs: d.file_system().to_string_lossy().into_owned(),
                    total: d.total_space(),
                    available: d.available_space(),
                })
                .collect(),
            uptime_secs: System::uptime(),
        }
    }

    /// A fresh reading as JSON text, keys in the order of [`HealthReport`] (`code` first).
    pub fn report_json(&mut self) -> String {
        // Plain numbers and strings: serialising cannot fail.
        serde_json::to_string(&self.snapshot()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_has_every_field() {
        let mut probe = HealthProbe::new();
        let text = probe.report_json();
        assert!(
            text.starts_with(r#"{"code":"host.health","host":"#),
            "{text}"
        );
        let report: serde_json::Value = serde_json::from_str(&text).unwrap();
        for key in [
            "code",
            "host",
            "ts",
            "cpu_percent",
            "load",
            "mem_used",
            "mem_total",
            "swap_used",
            "disks",
            "uptime_secs",
        ] {
            assert!(report.get(key).is_some(), "{key} missing from {report}");
        }
        assert_eq!(report["code"], HEALTH_CODE);
        assert_eq!(report["load"].as_array().map(Vec::len), Some(3));
        assert!(report["mem_total"].as_u64().is_some_and(|m| m > 0));
        assert!(
            report.get("interval_secs").is_none(),
            "no interval given: {report}"
        );
    }

    #[test]
    fn host_and_interval_as_given() {
        let mut probe = HealthProbe::new()
            .with_host("alpha")
            .with_interval(Duration::from_millis(2500));
        let report: serde_json::Value = serde_json::from_str(&probe.report_json()).unwrap();
        assert_eq!(report["host"], "alpha");
        assert_eq!(report["interval_secs"], 2.5);
        let text = probe.report_json();
        assert!(
            text.starts_with(r#"{"code":"host.health","host":"alpha","ts":"#),
            "{text}"
        );
    }
}
