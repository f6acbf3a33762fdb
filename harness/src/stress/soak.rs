//! The soak part of the stress mode: what is sampled from the one shim server while lifecycles
//! run until a deadline (RSS, fds, threads, zombie children, unix sockets held, stale socket
//! files), and the verdict on its growth against noise thresholds.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::procfs;

/// How long to soak and how often to sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoakOptions {
    /// Lifecycles start until this much time has passed.
    pub duration: Duration,
    /// Time between samples; default: [`SoakOptions::default_interval`].
    pub interval: Option<Duration>,
}

impl SoakOptions {
    /// About 120 samples over the run, no closer than 250 ms and no further apart than 5 s.
    pub fn default_interval(duration: Duration) -> Duration {
        (duration / 120).clamp(Duration::from_millis(250), Duration::from_secs(5))
    }

    /// The sampling interval in use.
    pub fn interval(&self) -> Duration {
        self.interval
            .unwrap_or_else(|| Self::default_interval(self.duration))
    }

    /// Samples before this much time are the warm-up (the allocator and the runtime reach
    /// their working set): a tenth of the run, at least two intervals, at most 30 s.
    pub fn warm_up(&self) -> Duration {
        (self.duration / 10)
            .max(self.interval() * 2)
            .min(Duration::from_secs(30))
    }
}

/// One sample of the shim server.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct SoakSample {
    /// Milliseconds since the measured lifecycles began (0 for the idle sample).
    pub t_ms: u64,
    /// Lifecycles completed by then.
    pub lifecycles: u64,
    /// `VmRSS` in KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// Threads.
    pub threads: u64,
    /// Children of the server in state Z.
    pub zombies: u64,
    /// File descriptors of the server that are unix sockets.
    pub unix_sockets: u64,
    /// Socket files nobody listens on, in the server's socket directory (new since the run
    /// began) and in the run's bundles.
    pub socket_files: u64,
}

/// Reads one metric from a sample.
type Metric = fn(&SoakSample) -> u64;

/// The metrics judged, with how each is read from a sample.
const METRICS: [(&str, Metric); 6] = [
    ("rss-kib", |s| s.rss_kib),
    ("fds", |s| s.fds),
    ("threads", |s| s.threads),
    ("zombies", |s| s.zombies),
    ("unix-sockets", |s| s.unix_sockets),
    ("socket-files", |s| s.socket_files),
];

/// The growth of one metric over the soak.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct Growth {
    /// Before the measured lifecycles (after one warm-up lifecycle), quiescent.
    pub idle: u64,
    /// The first sample after the warm-up, under load.
    pub first: u64,
    /// The last sample under load.
    pub last: u64,
    /// After every lifecycle ended and the shim settled, quiescent.
    pub end: u64,
    /// `last - first`.
    pub growth: i64,
    /// Least-squares slope over the samples after the warm-up, per minute.
    pub slope_per_min: f64,
    /// The growth under load tolerated as noise (in-flight tasks, allocator).
    pub noise: u64,
    /// The growth from idle to end tolerated (quiescent states); `None`: not judged so.
    pub end_tolerance: Option<u64>,
    /// `ok`, or `growth` with the reason in [`Growth::reason`].
    pub verdict: String,
    /// Why the verdict is not `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the soak found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SoakReport {
    /// The soak's length as asked.
    pub duration_ms: u64,
    /// Time between samples.
    pub interval_ms: u64,
    /// Samples before this are the warm-up, not judged.
    pub warm_up_ms: u64,
    /// The quiescent sample before the run.
    pub idle: SoakSample,
    /// The quiescent sample after it.
    pub end: SoakSample,
    /// Every sample taken under load, in order.
    pub series: Vec<SoakSample>,
    /// Growth per metric (`rss-kib`, `fds`, `threads`, `zombies`, `unix-sockets`,
    /// `socket-files`).
    pub metrics: BTreeMap<String, Growth>,
    /// `ok` when no metric grew beyond noise and nothing leaked, else `growth`.
    pub verdict: String,
    /// One line per metric that grew, and the stale socket files found at the end.
    pub findings: Vec<String>,
}

impl SoakReport {
    /// Whether nothing grew beyond noise.
    pub fn ok(&self) -> bool {
        self.verdict == "ok"
    }

    /// The shortest span after the warm-up, in minutes, over which RSS growth is judged.
    pub const RSS_MIN_SPAN: Duration = Duration::from_secs(60);

    /// Judges the samples; `parallel` sizes the noise of the in-flight tasks.
    pub fn judge(
        opts: &SoakOptions,
        parallel: usize,
        idle: SoakSample,
        series: Vec<SoakSample>,
        end: SoakSample,
        stale_files: &[PathBuf],
    ) -> SoakReport {
        let warm_up = opts.warm_up();
        let steady: Vec<&SoakSample> = {
            let s: Vec<&SoakSample> = series
                .iter()
                .filter(|s| s.t_ms >= warm_up.as_millis() as u64)
                .collect();
            if s.len() >= 2 {
                s
            } else {
                series.iter().collect()
            }
        };
        let p = parallel.max(1) as u64;
        let mut metrics = BTreeMap::new();
        let mut findings = vec![];
        for (name, get) in METRICS {
            let first = steady.first().map(|s| get(s)).unwrap_or_else(|| get(&idle));
            let last = steady.last().map(|s| get(s)).unwrap_or_else(|| get(&end));
            // Noise under load: what P lifecycles in flight hold at once; RSS moves with the
            // allocator's arenas as well. Quiescent states must match exactly (threads: the
            // runtime may keep one spare).
            let (noise, end_tolerance) = match name {
                "rss-kib" => ((first / 10).max(1024), None),
                "fds" => (6 * p + 8, Some(0)),
                "threads" => (4, Some(1)),
                "zombies" => (p + 1, Some(0)),
                "unix-sockets" => (2 * p + 2, Some(0)),
                _ => (0, Some(0)),
            };
            let slope = slope_per_min(&steady, get);
            let span_min = match (steady.first(), steady.last()) {
                (Some(a), Some(b)) => b.t_ms.saturating_sub(a.t_ms) as f64 / 60_000.0,
                _ => 0.0,
            };
            let growth = last as i64 - first as i64;
            let (idle_v, end_v) = (get(&idle), get(&end));
            let mut reason = None;
            // RSS has no quiescent value to compare: under load the allocator's arenas and the
            // queues of a busy machine keep growing for tens of seconds, which a short soak
            // cannot tell from a leak. So RSS is judged on a trend of at least a minute.
            let judged = name != "rss-kib" || span_min * 60.0 >= Self::RSS_MIN_SPAN.as_secs_f64();
            if judged && growth > noise as i64 && slope * span_min > noise as f64 {
                reason = Some(format!(
                    "{name} grew from {first} to {last} under load ({slope:+.1}/min), beyond the \
                     noise of {noise}"
                ));
            }
            if let Some(tol) = end_tolerance {
                if end_v > idle_v + tol {
                    let r = format!(
                        "{name}: {end_v} after the run, {idle_v} at idle (tolerance {tol})"
                    );
                    reason = Some(match reason {
                        Some(a) => format!("{a}; {r}"),
                        None => r,
                    });
                }
            }
            if let Some(r) = &reason {
                findings.push(r.clone());
            }
            metrics.insert(
                name.to_string(),
                Growth {
                    idle: idle_v,
                    first,
                    last,
                    end: end_v,
                    growth,
                    slope_per_min: (slope * 100.0).round() / 100.0,
                    noise,
                    end_tolerance,
                    verdict: if reason.is_some() { "growth" } else { "ok" }.into(),
                    reason,
                },
            );
        }
        for f in stale_files {
            findings.push(format!(
                "socket file {} left with nobody listening",
                f.display()
            ));
        }
        SoakReport {
            duration_ms: opts.duration.as_millis() as u64,
            interval_ms: opts.interval().as_millis() as u64,
            warm_up_ms: warm_up.as_millis() as u64,
            idle,
            end,
            series,
            metrics,
            verdict: if findings.is_empty() { "ok" } else { "growth" }.into(),
            findings,
        }
    }

    /// A human-readable table.
    pub fn render_human(&self) -> String {
        let mut s = format!(
            "soak {} s, a sample every {} ms ({} samples, first {} ms not judged): {}\n",
            self.duration_ms / 1000,
            self.interval_ms,
            self.series.len(),
            self.warm_up_ms,
            self.verdict
        );
        s.push_str(&format!(
            "{:<13} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>6}  verdict\n",
            "metric", "idle", "first", "last", "end", "growth", "slope/min", "noise"
        ));
        for (name, g) in &self.metrics {
            s.push_str(&format!(
                "{:<13} {:>8} {:>8} {:>8} {:>8} {:>+8} {:>+10.1} {:>6}  {}\n",
                name, g.idle, g.first, g.last, g.end, g.growth, g.slope_per_min, g.noise, g.verdict
            ));
        }
        for f in &self.findings {
            s.push_str(&format!("soak: {f}\n"));
        }
        s
    }
}

/// Least-squares slope of `get` over `samples`, per minute; 0 with fewer than two.
fn slope_per_min(samples: &[&SoakSample], get: Metric) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let xs: Vec<f64> = samples.iter().map(|s| s.t_ms as f64 / 60_000.0).collect();
    let ys: Vec<f64> = samples.iter().map(|s| get(s) as f64).collect();
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    if sxx <= f64::EPSILON {
        0.0
    } else {
        sxy / sxx
    }
}

/// Reads the soak's figures of one server from /proc.
#[derive(Debug, Clone)]
pub struct SoakProbe {
    pid: i32,
    socket_dir: Option<PathBuf>,
    bundles: PathBuf,
    since: SystemTime,
    preexisting: HashSet<PathBuf>,
}

impl SoakProbe {
    /// A probe of server `pid` whose socket lives in `socket_dir`, with the run's bundles
    /// under `bundles`. Stale socket files already in `socket_dir` now are not the run's.
    pub fn new(pid: i32, socket_dir: Option<PathBuf>, bundles: PathBuf) -> SoakProbe {
        let mut p = SoakProbe {
            pid,
            socket_dir,
            bundles,
            since: SystemTime::now(),
            preexisting: HashSet::new(),
        };
        p.preexisting = p.stale_socket_files().into_iter().collect();
        p
    }

    /// One sample (`t_ms` and `lifecycles` are the caller's).
    pub fn sample(&self, t_ms: u64, lifecycles: u64) -> SoakSample {
        let pid = self.pid;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| super::status_field(&status, name);
        let unix = unix_socket_table();
        let (mut fds, mut unix_sockets) = (0, 0);
        if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            for e in rd.flatten() {
                fds += 1;
                let Ok(t) = std::fs::read_link(e.path()) else {
                    continue;
                };
                let t = t.to_string_lossy();
                if let Some(ino) = t
                    .strip_prefix("socket:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    if unix.inodes.contains(&ino) {
                        unix_sockets += 1;
                    }
                }
            }
        }
        let zombies = procfs::all_processes()
            .iter()
            .filter(|p| p.ppid == pid && p.state == 'Z')
            .count() as u64;
        SoakSample {
            t_ms,
            lifecycles,
            rss_kib: field("VmRSS:"),
            fds,
            threads: field("Threads:"),
            zombies,
            unix_sockets,
            socket_files: self.stale_socket_files().len() as u64,
        }
    }

    /// Socket files nobody listens on: in the socket directory (made since the probe began,
    /// not there before) and anywhere in the run's bundles (two levels deep).
    pub fn stale_socket_files(&self) -> Vec<PathBuf> {
        let bound = unix_socket_table().paths;
        let mut out = vec![];
        if let Some(dir) = &self.socket_dir {
            for f in socket_files_in(dir) {
                let new = std::fs::symlink_metadata(&f)
                    .and_then(|m| m.modified())
                    .is_ok_and(|m| m >= self.since);
                if new && !self.preexisting.contains(&f) && !bound.contains(&f) {
                    out.push(f);
                }
            }
        }
        let mut dirs = vec![self.bundles.clone()];
        if let Ok(rd) = std::fs::read_dir(&self.bundles) {
            dirs.extend(
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        for d in dirs {
            out.extend(
                socket_files_in(&d)
                    .into_iter()
                    .filter(|f| !bound.contains(f)),
            );
        }
        out
    }
}

struct UnixTable {
    inodes: HashSet<u64>,
    paths: HashSet<PathBuf>,
}

/// Inodes and bound paths of every unix socket in `/proc/net/unix`.
fn unix_socket_table() -> UnixTable {
    let mut t = UnixTable {
        inodes: HashSet::new(),
        paths: HashSet::new(),
    };
    let Ok(text) = std::fs::read_to_string("/proc/net/unix") else {
        return t;
    };
    for l in text.lines().skip(1) {
        // Num RefCount Protocol Flags Type St Inode Path
        let f: Vec<&str> = l.split_whitespace().collect();
        if let Some(ino) = f.get(6).and_then(|v| v.parse().ok()) {
            t.inodes.insert(ino);
        }
        if f.len() >= 8 && f[7].starts_with('/') {
            t.paths.insert(PathBuf::from(f[7..].join(" ")));
        }
    }
    t
}

fn socket_files_in(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    rd.flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
        .map(|e| e.path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t_ms: u64, fds: u64, rss_kib: u64) -> SoakSample {
        SoakSample {
            t_ms,
            fds,
            rss_kib,
            threads: 1,
            ..Default::default()
        }
    }

    const OPTS: SoakOptions = SoakOptions {
        duration: Duration::from_secs(60),
        interval: Some(Duration::from_secs(1)),
    };

    #[test]
    fn flat_series_within_noise_is_ok() {
        let idle = at(0, 13, 5000);
        let series: Vec<_> = (1..=60)
            .map(|i| at(i * 1000, 13 + (i % 7), 5200 + (i % 5) * 100))
            .collect();
        let r = SoakReport::judge(&OPTS, 8, idle, series, at(61_000, 13, 5300), &[]);
        assert_eq!(r.verdict, "ok", "{}", r.render_human());
        assert!(r.findings.is_empty());
        assert_eq!(r.metrics["fds"].first, 13 + 6); // t = 6 s is the first after warm-up
    }

    #[test]
    fn a_sustained_fd_leak_and_an_unequal_end_are_growth() {
        let idle = at(0, 13, 5000);
        let series: Vec<_> = (1..=60).map(|i| at(i * 1000, 13 + 3 * i, 5000)).collect();
        let r = SoakReport::judge(&OPTS, 8, idle, series, at(61_000, 200, 5000), &[]);
        assert_eq!(r.verdict, "growth");
        let g = &r.metrics["fds"];
        assert_eq!(g.verdict, "growth");
        assert!((g.slope_per_min - 180.0).abs() < 0.01, "{g:?}");
        assert!(g.reason.as_deref().unwrap().contains("200 after the run"));
        assert_eq!(r.metrics["rss-kib"].verdict, "ok");
    }

    #[test]
    fn rss_growth_is_judged_over_a_minute_not_over_seconds() {
        // 1.5 MB of growth over 6 s (a short soak on a busy machine): not judged.
        let short = SoakOptions {
            duration: Duration::from_secs(6),
            interval: Some(Duration::from_millis(250)),
        };
        let idle = at(0, 13, 12000);
        let series: Vec<_> = (1..=24).map(|i| at(i * 250, 13, 12000 + i * 65)).collect();
        let r = SoakReport::judge(&short, 4, idle, series, at(6_250, 13, 13600), &[]);
        assert_eq!(r.metrics["rss-kib"].verdict, "ok", "{}", r.render_human());
        // The same rate sustained over five minutes is growth.
        let long = SoakOptions {
            duration: Duration::from_secs(300),
            interval: Some(Duration::from_secs(5)),
        };
        let series: Vec<_> = (1..=60)
            .map(|i| at(i * 5000, 13, 12000 + i * 1300))
            .collect();
        let r = SoakReport::judge(&long, 4, idle, series, at(301_000, 13, 90000), &[]);
        assert_eq!(
            r.metrics["rss-kib"].verdict,
            "growth",
            "{}",
            r.render_human()
        );
    }

    #[test]
    fn one_spike_at_the_end_is_not_a_trend_but_stale_files_are_findings() {
        let idle = at(0, 13, 5000);
        let mut series: Vec<_> = (1..=60).map(|i| at(i * 1000, 13, 5000)).collect();
        series.last_mut().unwrap().rss_kib = 9000;
        let stale = [PathBuf::from("/run/x.sock")];
        let r = SoakReport::judge(&OPTS, 8, idle, series, at(61_000, 13, 5000), &stale);
        assert_eq!(r.metrics["rss-kib"].verdict, "ok", "{:?}", r.metrics);
        assert_eq!(r.verdict, "growth");
        assert!(r.findings[0].contains("/run/x.sock"));
    }

    #[test]
    fn probe_counts_this_process_sockets_and_a_stale_socket_file() {
        let tmp = tempfile::tempdir().unwrap();
        let bundles = tmp.path().join("b");
        std::fs::create_dir_all(bundles.join("c1")).unwrap();
        let probe = SoakProbe::new(std::process::id() as i32, None, bundles.clone());
        let before = probe.sample(0, 0);
        let live = std::os::unix::net::UnixListener::bind(bundles.join("c1/live.sock")).unwrap();
        let gone = std::os::unix::net::UnixListener::bind(bundles.join("c1/gone.sock")).unwrap();
        drop(gone); // the file stays, nobody listens
        let after = probe.sample(1, 0);
        assert_eq!(after.unix_sockets, before.unix_sockets + 1);
        assert!(after.fds > before.fds && after.rss_kib > 0 && after.threads > 0);
        assert_eq!(
            probe.stale_socket_files(),
            vec![bundles.join("c1/gone.sock")]
        );
        assert_eq!(after.socket_files, 1);
        drop(live);
    }
}
