//! How each containerd version (1.6, 1.7, 2.0, 2.3) runs a shim's `start`: argv, environment,
//! stdin and the reading of its output (protocol doc sections 0, 2.1, 2.2, 2.5 and 3; for 2.3,
//! the protobuf bootstrap of pkg/shim/util.go `Command` and core/runtime/v2/shim.go
//! `parseStartResponse` v2.3.4).

use std::fmt;
use std::str::FromStr;

mod answer;
mod socket;
mod stdin;

pub use answer::{AnswerFormat, StartAnswer};
pub use socket::{
    check_socket_dir, default_socket_dir, dial_address, proc_net_unix_name, socket_path,
    MAX_SOCKET_DIR_LEN,
};
pub use stdin::{BootstrapOverrides, StartParams};

/// The containerd version whose shim-facing behaviour the mock reproduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum Dialect {
    /// containerd 1.6.x: bare address only, task API v2, env `GOMAXPROCS` + `TTRPC_ADDRESS`.
    V1_6,
    /// containerd 1.7.x: bare address or JSON version 2; adds `MAX_SHIM_VERSION`, `GRPC_ADDRESS`, `NAMESPACE`.
    V1_7,
    /// containerd 2.0–2.2: bare address (v2) or JSON version 2/3 choosing task API v2/v3.
    #[default]
    V2_0,
    /// containerd 2.3: stdin is a protobuf `BootstrapParams` (legacy flags and environment kept);
    /// the answer is read as a protobuf `BootstrapResult`, then legacy JSON, then a bare address.
    V2_3,
}

/// The release whose behaviour [`Dialect::V2_3`] reproduces, as its `version.Version` reads
/// (containerd's Makefile takes `git describe`: the tag, `v` included); sent as
/// `containerd_version`.
pub const CONTAINERD_2_3_VERSION: &str = "v2.3.4";

/// Which task service name the shim is dialed with (v3 is a pure rename of v2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskApi {
    /// `containerd.task.v2.Task`.
    V2,
    /// `containerd.task.v3.Task`.
    V3,
}

impl TaskApi {
    /// The full ttrpc service name.
    pub fn service(&self) -> &'static str {
        match self {
            TaskApi::V2 => "containerd.task.v2.Task",
            TaskApi::V3 => "containerd.task.v3.Task",
        }
    }
}

impl fmt::Display for TaskApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaskApi::V2 => "v2",
            TaskApi::V3 => "v3",
        })
    }
}

/// A dialect name that is not one of `1.6`, `1.7`, `2.0`, `2.3`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown containerd version {0:?}: expected 1.6, 1.7, 2.0 or 2.3")]
pub struct UnknownDialect(pub String);

impl FromStr for Dialect {
    type Err = UnknownDialect;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().trim_start_matches('v') {
            "1.6" => Ok(Dialect::V1_6),
            "1.7" => Ok(Dialect::V1_7),
            "2.0" | "2" => Ok(Dialect::V2_0),
            "2.3" => Ok(Dialect::V2_3),
            _ => Err(UnknownDialect(s.to_string())),
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dialect::V1_6 => "1.6",
            Dialect::V1_7 => "1.7",
            Dialect::V2_0 => "2.0",
            Dialect::V2_3 => "2.3",
        })
    }
}

impl Dialect {
    /// All dialects, oldest first.
    pub const ALL: [Dialect; 4] = [Dialect::V1_6, Dialect::V1_7, Dialect::V2_0, Dialect::V2_3];

    /// The flags every action shares: `-namespace ns -address grpc -publish-binary pb`
    /// [src v1.6.20 runtime/v2/shim/util.go Command].
    fn common_argv(ns: &str, grpc_addr: &str, publish_binary: &str) -> Vec<String> {
        vec![
            "-namespace".into(),
            ns.into(),
            "-address".into(),
            grpc_addr.into(),
            "-publish-binary".into(),
            publish_binary.into(),
        ]
    }

    /// The argv (without argv\[0\]) of the `start` action:
    /// `-namespace ns -address grpc -publish-binary pb -id id [-debug] start`.
    pub fn start_argv(
        &self,
        ns: &str,
        grpc_addr: &str,
        publish_binary: &str,
        id: &str,
        debug: bool,
    ) -> Vec<String> {
        let mut v = Self::common_argv(ns, grpc_addr, publish_binary);
        v.push("-id".into());
        v.push(id.into());
        if debug {
            v.push("-debug".into());
        }
        v.push("start".into());
        v
    }

    /// The argv (without argv\[0\]) of the `delete` action:
    /// `-namespace ns -address grpc -publish-binary pb -id id -bundle B [-debug (2.x)] delete`.
    pub fn delete_argv(
        &self,
        ns: &str,
        grpc_addr: &str,
        publish_binary: &str,
        id: &str,
        bundle: &str,
        debug: bool,
    ) -> Vec<String> {
        let mut v = Self::common_argv(ns, grpc_addr, publish_binary);
        v.extend(["-id".into(), id.into(), "-bundle".into(), bundle.into()]);
        if debug && *self >= Dialect::V2_0 {
            v.push("-debug".into());
        }
        v.push("delete".into());
        v
    }

    /// The variables this dialect adds to its own environment when running a shim action.
    pub fn start_env(&self, ttrpc_addr: &str, grpc_addr: &str, ns: &str) -> Vec<(String, String)> {
        let mut v = vec![
            ("GOMAXPROCS".to_string(), "2".to_string()),
            ("TTRPC_ADDRESS".to_string(), ttrpc_addr.to_string()),
        ];
        if *self != Dialect::V1_6 {
            v.push(("MAX_SHIM_VERSION".into(), "2".into()));
            v.push(("GRPC_ADDRESS".into(), grpc_addr.into()));
            v.push(("NAMESPACE".into(), ns.into()));
        }
        v
    }

    /// The environment a shim inherits from the daemon, before [`Dialect::start_env`]: the
    /// harness's own as it was started (read from `/proc/self/environ`, so a scratch `TMPDIR`
    /// the harness chose for itself does not leak into the shim), with `PATH` and
    /// `LD_LIBRARY_PATH` prefixed by `/opt/containerd/bin` and `/opt/containerd/lib` as the
    /// daemon's default `opt` plugin does to its own environment at start-up
    /// (services/opt/service.go:47 and :55, v1.6.20; the same in 1.7.24 and 2.1.9, observed).
    pub fn inherited_env() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        use std::ffi::OsString;
        use std::os::unix::ffi::{OsStrExt, OsStringExt};
        let raw = std::fs::read("/proc/self/environ").unwrap_or_default();
        let mut env: Vec<(OsString, OsString)> = raw
            .split(|b| *b == 0)
            .filter_map(|kv| {
                let eq = kv.iter().position(|b| *b == b'=')?;
                Some((
                    OsString::from_vec(kv[..eq].to_vec()),
                    OsString::from_vec(kv[eq + 1..].to_vec()),
                ))
            })
            .collect();
        for (key, dir) in [
            ("PATH", "/opt/containerd/bin"),
            ("LD_LIBRARY_PATH", "/opt/containerd/lib"),
        ] {
            // Go's `fmt.Sprintf("%s%c%s", dir, ':', os.Getenv(key))`: the colon even when unset.
            let old = env
                .iter()
                .position(|(k, _)| k.as_bytes() == key.as_bytes())
                .map(|i| env.remove(i).1)
                .unwrap_or_default();
            let mut v = OsString::from(format!("{dir}:"));
            v.push(old);
            env.push((OsString::from(key), v));
        }
        env
    }

    /// Whether task requests carry `containerd-namespace-ttrpc` metadata (1.6.20 sends none, observed).
    pub fn sends_namespace_metadata(&self) -> bool {
        *self != Dialect::V1_6
    }
}

#[cfg(test)]
mod tests;
