//! Where and with what a measurement ran: the harness version, the containerd dialect imitated,
//! the machine (from `uname`, `/proc/cpuinfo` and `/proc/meminfo`) and the start time. One
//! definition for the stress report (kebab-case keys, through `kebab_case`) and the compare
//! report (snake_case keys, the derived ones); each report adds its own fields around it.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

/// Where, when and with what a measurement ran. `S` is what the report says about what it ran
/// (written after the harness version), `R` how the run went (written last); both are flattened
/// into the same JSON object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Provenance<S, R> {
    /// This harness's version.
    pub harness_version: String,
    /// What was run (the shim, or the command line).
    #[serde(flatten)]
    pub subject: S,
    /// The containerd dialect imitated.
    pub containerd_version: String,
    /// Kernel name, release and machine (`uname -srm`).
    pub kernel: String,
    /// CPU model (the stress report adds ` x<cpus>`).
    pub cpu: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Total memory in KiB.
    pub mem_total_kib: u64,
    /// Host name.
    pub host: String,
    /// When the run started (seconds since the epoch).
    pub started_unix: u64,
    /// How the run went (the compare report's settings and totals).
    #[serde(flatten)]
    pub run: R,
}

impl<S, R> Provenance<S, R> {
    /// Probes this machine now: the harness version, the containerd version imitated (a
    /// dialect's name), the machine and the time.
    pub fn probe(containerd_version: String, subject: S, run: R) -> Self {
        let m = machine();
        Provenance {
            harness_version: env!("CARGO_PKG_VERSION").into(),
            subject,
            containerd_version,
            kernel: m.kernel,
            cpu: m.cpu,
            cpus: m.cpus,
            mem_total_kib: m.mem_total_kib,
            host: m.host,
            started_unix: unix_now(),
            run,
        }
    }
}

/// The stress report's subject: the shim under test.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimUnderTest {
    /// The shim binary.
    pub shim: String,
    /// The shim's `-v` output, when it has one.
    pub shim_version: Option<String>,
}

/// Serializes a stress [`Provenance`] with the stress report's kebab-case keys, in the order of
/// the derived (snake_case) form.
pub(crate) fn kebab_case<S: Serializer>(
    p: &Provenance<ShimUnderTest, ()>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(10))?;
    m.serialize_entry("harness-version", &p.harness_version)?;
    m.serialize_entry("shim", &p.subject.shim)?;
    m.serialize_entry("shim-version", &p.subject.shim_version)?;
    m.serialize_entry("containerd-version", &p.containerd_version)?;
    m.serialize_entry("kernel", &p.kernel)?;
    m.serialize_entry("cpu", &p.cpu)?;
    m.serialize_entry("cpus", &p.cpus)?;
    m.serialize_entry("mem-total-kib", &p.mem_total_kib)?;
    m.serialize_entry("host", &p.host)?;
    m.serialize_entry("started-unix", &p.started_unix)?;
    m.end()
}

/// Seconds since the epoch, now (0 before 1970).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The machine a measurement ran on, as both reports (stress and compare) give it.
pub(crate) struct Machine {
    /// Kernel name, release and machine (`uname -srm`).
    pub(crate) kernel: String,
    /// CPU model.
    pub(crate) cpu: String,
    /// Online CPUs.
    pub(crate) cpus: usize,
    /// Total memory in KiB.
    pub(crate) mem_total_kib: u64,
    /// Host name.
    pub(crate) host: String,
}

/// Reads [`Machine`] from `uname`, `/proc/cpuinfo` and `/proc/meminfo`.
pub(crate) fn machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let uname = nix::sys::utsname::uname().ok();
    let kernel = uname
        .as_ref()
        .map(|u| {
            format!(
                "{} {} {}",
                u.sysname().to_string_lossy(),
                u.release().to_string_lossy(),
                u.machine().to_string_lossy()
            )
        })
        .unwrap_or_default();
    let host = uname
        .as_ref()
        .map(|u| u.nodename().to_string_lossy().into_owned())
        .unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let mem_total_kib = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Machine {
        kernel,
        cpu,
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        mem_total_kib,
        host,
    }
}

/// The first non-empty line of `<shim> -v`, bounded to two seconds.
pub(crate) fn shim_version(shim: &Path) -> Option<String> {
    let mut child = std::process::Command::new(shim)
        .arg("-v")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let out = child.wait_with_output().ok()?;
    version_line(&String::from_utf8_lossy(&out.stdout))
}

/// One line from a shim's `-v` output: its first line, or, when that is only a heading
/// (containerd's Go shims print `<path>:` and then `Version:`, `Revision:`, `Go version:`
/// lines), the lines under it joined.
fn version_line(text: &str) -> Option<String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next()?;
    if !first.ends_with(':') {
        return Some(first.to_string());
    }
    let rest: Vec<&str> = lines.take(3).collect();
    if rest.is_empty() {
        return Some(first.trim_end_matches(':').to_string());
    }
    Some(rest.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_lines() {
        assert_eq!(
            version_line("\ncontainerd-shim-reaper-v2 0.1.0\nmore\n").as_deref(),
            Some("containerd-shim-reaper-v2 0.1.0")
        );
        let go = "/usr/bin/containerd-shim-runc-v2:\n  Version:  1.6.20~ds1\n  Revision:  \n  Go version: go1.19.8\n";
        assert_eq!(
            version_line(go).as_deref(),
            Some("Version:  1.6.20~ds1, Revision:, Go version: go1.19.8")
        );
        assert_eq!(version_line(" \n"), None);
    }
}
