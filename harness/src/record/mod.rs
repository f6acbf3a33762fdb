//! Recording what a real containerd does with a shim: the recording proxy shim
//! `containerd-shim-record-v2` (its configuration, the shim command line it is given, the
//! recording's entries and files; the proxy itself in `proxy.rs`) and the turning of a
//! recording into a scenario ([`convert`]).
//!
//! A recording is one directory per shim instance, `<dir>/<namespace>/<id>[.N]/`, holding
//! `session.jsonl`: one JSON [`Entry`] per line, in the order they happened (each written by a
//! single `write` to a file opened for appending, by the `start` and `delete` actions and by the
//! proxy server alike).

pub mod convert;
pub mod proxy;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Environment variable naming the real shim (a path, or a name on `PATH`).
pub const SHIM_ENV: &str = "RECORD_SHIM";
/// Environment variable naming the directory recordings go to.
pub const DIR_ENV: &str = "RECORD_DIR";
/// Environment variable naming the config file (default [`DEFAULT_CONFIG`]).
pub const CONFIG_ENV: &str = "RECORD_CONFIG";
/// The config file read when the environment does not name the real shim: JSON
/// `{"shim": "/usr/bin/containerd-shim-runc-v2", "dir": "/var/lib/shim-record"}`.
pub const DEFAULT_CONFIG: &str = "/etc/containerd/shim-record.json";
/// Where recordings go when neither the environment nor the config file says.
pub const DEFAULT_DIR: &str = "/var/lib/shim-record";
/// The session file inside a recording directory.
pub const SESSION_FILE: &str = "session.jsonl";

/// The proxy's configuration: which shim it stands in front of and where it records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The real shim binary.
    pub shim: PathBuf,
    /// The recordings' root directory.
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
}

fn default_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DIR)
}

impl Config {
    /// From `RECORD_SHIM` and `RECORD_DIR`, else the config file (`RECORD_CONFIG` or
    /// [`DEFAULT_CONFIG`]); an error names what is missing.
    pub fn load() -> Result<Config> {
        let file = std::env::var_os(CONFIG_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        let from_file = match std::fs::read(&file) {
            Ok(bytes) => Some(
                serde_json::from_slice::<Config>(&bytes)
                    .with_context(|| format!("{}: not a recording config", file.display()))?,
            ),
            Err(_) => None,
        };
        let shim = std::env::var_os(SHIM_ENV)
            .map(PathBuf::from)
            .or_else(|| from_file.as_ref().map(|c| c.shim.clone()));
        let Some(shim) = shim else {
            bail!(
                "which shim to record is not configured: set {SHIM_ENV} in containerd's environment or write {} ({{\"shim\": PATH, \"dir\": DIR}})",
                file.display()
            );
        };
        let dir = std::env::var_os(DIR_ENV)
            .map(PathBuf::from)
            .or_else(|| from_file.map(|c| c.dir))
            .unwrap_or_else(default_dir);
        Ok(Config {
            shim: resolve(&shim)?,
            dir,
        })
    }
}

/// A binary given by path, or by name on `PATH`.
fn resolve(shim: &Path) -> Result<PathBuf> {
    if shim.components().count() > 1 {
        return Ok(shim.to_path_buf());
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(shim))
                .find(|p| p.is_file())
        })
        .with_context(|| format!("{SHIM_ENV}: {} is not on PATH", shim.display()))
}

/// The shim command line containerd gives (Go flags, `-name value` or `-name=value`; the action
/// last): what the proxy needs of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShimArgs {
    /// `-namespace`.
    pub namespace: String,
    /// `-id`.
    pub id: String,
    /// `-address` (containerd's gRPC socket).
    pub address: String,
    /// `-bundle` (delete).
    pub bundle: Option<String>,
    /// The action: `start`, `delete`, or none (`-v`, `-info`).
    pub action: Option<String>,
}

impl ShimArgs {
    /// Parses the arguments after the program name.
    pub fn parse(args: &[String]) -> ShimArgs {
        const BOOLS: &[&str] = &["debug", "v", "info", "version"];
        let mut out = ShimArgs::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(flag) = a.strip_prefix('-') else {
                out.action = Some(a.clone());
                continue;
            };
            let flag = flag.trim_start_matches('-');
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            if BOOLS.contains(&name) {
                continue;
            }
            let value = inline.or_else(|| it.next().cloned()).unwrap_or_default();
            match name {
                "namespace" => out.namespace = value,
                "id" => out.id = value,
                "address" => out.address = value,
                "bundle" => out.bundle = Some(value),
                _ => {}
            }
        }
        out
    }
}

/// One line of `session.jsonl`. Payloads are hex-encoded protobuf.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Entry {
    /// A shim action containerd ran (`start`, `delete`): its command line, environment, working
    /// directory and stdin, what the real shim printed and its exit status.
    Action {
        /// Milliseconds since the epoch.
        t: f64,
        /// The arguments after the program name.
        argv: Vec<String>,
        /// The environment, `K=V`.
        env: Vec<String>,
        /// The working directory.
        cwd: String,
        /// stdin, hex.
        stdin: String,
        /// The real shim's stdout, hex (for `start`, before the proxy put its own address in).
        stdout: String,
        /// Its exit status (128+N for a signal).
        status: i32,
        /// The real shim binary.
        real: String,
    },
    /// A TTRPC request from containerd to the shim (or, `events: true`, from the shim to
    /// containerd's events endpoint).
    Request {
        /// Milliseconds since the epoch.
        t: f64,
        /// Which connection (each accepted connection gets the next number).
        conn: u32,
        /// The TTRPC stream id.
        stream: u32,
        /// Whether this is the events side.
        #[serde(default)]
        events: bool,
        /// `containerd.task.v2.Task` and the like.
        service: String,
        /// `Create` and the like.
        method: String,
        /// The request message, hex.
        payload: String,
        /// The request's deadline in nanoseconds (0: none).
        timeout_nano: i64,
    },
    /// The answer to a request: its status and message.
    Response {
        /// Milliseconds since the epoch.
        t: f64,
        /// Which connection.
        conn: u32,
        /// The TTRPC stream id.
        stream: u32,
        /// Whether this is the events side.
        #[serde(default)]
        events: bool,
        /// The status code (0: OK).
        code: i32,
        /// The status message.
        message: String,
        /// The response message, hex.
        payload: String,
    },
    /// The bundle's `config.json` when its Create went through (the bundle is gone later).
    Bundle {
        /// Milliseconds since the epoch.
        t: f64,
        /// The container id.
        id: String,
        /// The OCI spec.
        spec: serde_json::Value,
    },
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// Appends entries to a recording's `session.jsonl`.
#[derive(Debug)]
pub struct Recorder {
    file: std::fs::File,
    dir: PathBuf,
}

impl Recorder {
    /// Opens (creating) `dir/session.jsonl` for appending.
    pub fn open(dir: &Path) -> Result<Recorder> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(SESSION_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Recorder {
            file,
            dir: dir.to_path_buf(),
        })
    }

    /// The recording directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one entry as one line, in one write.
    pub fn write(&self, e: &Entry) {
        let mut line = serde_json::to_vec(e).expect("an entry serialises");
        line.push(b'\n');
        // A lost line is not worth failing the real shim's work for; it is said on stderr.
        if let Err(err) = (&self.file).write_all(&line) {
            eprintln!("record: writing {}: {err}", self.dir.display());
        }
    }
}

/// Reads a recording's entries (the directory or its `session.jsonl`); a bad line is an error
/// naming `file:line`.
pub fn read_session(path: &Path) -> Result<Vec<Entry>> {
    let file = if path.is_dir() {
        path.join(SESSION_FILE)
    } else {
        path.to_path_buf()
    };
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a recording entry", file.display(), n + 1))
        })
        .collect()
}

/// The directory for a new recording of `id` in `ns`: `<root>/<ns>/<id>`, or `<id>.2`, `.3`...
/// when an earlier shim of that id was recorded there.
pub fn new_session_dir(root: &Path, ns: &str, id: &str) -> Result<PathBuf> {
    let base = root.join(safe_name(ns)).join(safe_name(id));
    for n in 1.. {
        let dir = if n == 1 {
            base.clone()
        } else {
            base.with_file_name(format!("{}.{n}", safe_name(id)))
        };
        match std::fs::create_dir_all(dir.parent().expect("has a parent"))
            .and_then(|()| std::fs::create_dir(&dir))
        {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    unreachable!("an unbounded range")
}

/// The latest recording of `id` in `ns`, if any.
pub fn latest_session_dir(root: &Path, ns: &str, id: &str) -> Option<PathBuf> {
    let base = root.join(safe_name(ns)).join(safe_name(id));
    let mut last = None;
    for n in 1.. {
        let dir = if n == 1 {
            base.clone()
        } else {
            base.with_file_name(format!("{}.{n}", safe_name(id)))
        };
        if !dir.is_dir() {
            return last;
        }
        last = Some(dir);
    }
    last
}

/// A namespace or id as one path component (they are identifiers already: `/` and `..` are
/// replaced so that a hostile one cannot leave the directory).
fn safe_name(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    match s.as_str() {
        "" | "." | ".." => format!("_{s}"),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn shim_command_lines_of_every_containerd_parse() {
        let a = ShimArgs::parse(&v(&[
            "-namespace",
            "k8s.io",
            "-address",
            "/run/c.sock",
            "-publish-binary",
            "/bin/c",
            "-id",
            "abc",
            "-debug",
            "start",
        ]));
        assert_eq!(a.namespace, "k8s.io");
        assert_eq!(a.id, "abc");
        assert_eq!(a.address, "/run/c.sock");
        assert_eq!(a.action.as_deref(), Some("start"));
        let d = ShimArgs::parse(&v(&["-namespace=n", "-id=x", "-bundle", "/b", "delete"]));
        assert_eq!(
            (
                d.namespace.as_str(),
                d.bundle.as_deref(),
                d.action.as_deref()
            ),
            ("n", Some("/b"), Some("delete"))
        );
        assert_eq!(ShimArgs::parse(&v(&["-v"])).action, None);
    }

    #[test]
    fn sessions_are_numbered_and_hostile_names_stay_inside() {
        let root = tempfile::tempdir().unwrap();
        let a = new_session_dir(root.path(), "default", "echo").unwrap();
        let b = new_session_dir(root.path(), "default", "echo").unwrap();
        assert_eq!(a, root.path().join("default/echo"));
        assert_eq!(b, root.path().join("default/echo.2"));
        assert_eq!(latest_session_dir(root.path(), "default", "echo"), Some(b));
        let h = new_session_dir(root.path(), "..", "../x").unwrap();
        assert!(h.starts_with(root.path()), "{}", h.display());
        assert_eq!(latest_session_dir(root.path(), "default", "none"), None);
    }

    #[test]
    fn entries_round_trip_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let r = Recorder::open(dir.path()).unwrap();
        let e = Entry::Response {
            t: 1.0,
            conn: 1,
            stream: 3,
            events: false,
            code: 5,
            message: "not found".into(),
            payload: String::new(),
        };
        r.write(&e);
        assert_eq!(read_session(dir.path()).unwrap(), vec![e]);
        std::fs::write(dir.path().join(SESSION_FILE), "{\"kind\":\"nope\"}\n").unwrap();
        let err = format!("{:#}", read_session(dir.path()).unwrap_err());
        assert!(err.contains("session.jsonl:1"), "{err}");
    }
}
