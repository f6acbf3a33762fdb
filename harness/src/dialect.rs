//! How each containerd version (1.6, 1.7, 2.0) runs a shim's `start`: argv, environment and the
//! reading of its output (protocol doc sections 0, 2.1, 2.2, 2.5 and 3).

use std::fmt;
use std::str::FromStr;

use crate::error::AddressError;

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
}

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

/// A dialect name that is not one of `1.6`, `1.7`, `2.0`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown containerd version {0:?}: expected 1.6, 1.7 or 2.0")]
pub struct UnknownDialect(pub String);

impl FromStr for Dialect {
    type Err = UnknownDialect;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().trim_start_matches('v') {
            "1.6" => Ok(Dialect::V1_6),
            "1.7" => Ok(Dialect::V1_7),
            "2.0" | "2" => Ok(Dialect::V2_0),
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
        })
    }
}

impl Dialect {
    /// All dialects, oldest first.
    pub const ALL: [Dialect; 3] = [Dialect::V1_6, Dialect::V1_7, Dialect::V2_0];

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
        if debug && *self == Dialect::V2_0 {
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

    /// Reads the combined, trimmed output of `start` as this containerd version does
    /// [src v1.7.0 runtime/v2/shim.go parseStartResponse; v2.0.0 core/runtime/v2/shim.go].
    pub fn parse_start_output(
        &self,
        combined_trimmed: &str,
    ) -> Result<(String, TaskApi), AddressError> {
        let out = combined_trimmed;
        if out.is_empty() {
            return Err(AddressError::Empty);
        }
        let json = parse_bootstrap_json(out);
        match self {
            Dialect::V1_6 => {
                if json.is_some() {
                    return Err(AddressError::JsonOn16 {
                        output: out.to_string(),
                    });
                }
                Ok((check_bare(out)?, TaskApi::V2))
            }
            Dialect::V1_7 | Dialect::V2_0 => {
                let max = if *self == Dialect::V1_7 { 2 } else { 3 };
                match json {
                    // Go: unmarshal error or version < 2 → the whole output is a ttrpc address.
                    Some(b) if b.version >= 2 => {
                        if b.version > max {
                            return Err(AddressError::UnsupportedVersion { version: b.version });
                        }
                        if !b.protocol.is_empty() && b.protocol != "ttrpc" {
                            return Err(AddressError::UnsupportedProtocol {
                                protocol: b.protocol,
                            });
                        }
                        let api = if b.version == 3 {
                            TaskApi::V3
                        } else {
                            TaskApi::V2
                        };
                        Ok((check_bare(&b.address)?, api))
                    }
                    _ => Ok((check_bare(out)?, TaskApi::V2)),
                }
            }
        }
    }
}

/// The fields of a JSON bootstrap reply (Go `client.BootstrapParams`).
struct Bootstrap {
    version: i64,
    address: String,
    protocol: String,
}

/// Parses `out` as Go's `json.Unmarshal` into BootstrapParams would: an object whose known fields
/// have the right types; anything else is `None`.
fn parse_bootstrap_json(out: &str) -> Option<Bootstrap> {
    let v: serde_json::Value = serde_json::from_str(out).ok()?;
    let obj = v.as_object()?;
    let field_str = |k: &str| -> Option<String> {
        match obj.get(k) {
            None | Some(serde_json::Value::Null) => Some(String::new()),
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(_) => None,
        }
    };
    let version = match obj.get("version") {
        None | Some(serde_json::Value::Null) => 0,
        Some(v) => v.as_i64()?,
    };
    Some(Bootstrap {
        version,
        address: field_str("address")?,
        protocol: field_str("protocol")?,
    })
}

/// Accepts an address containerd could dial: non-empty, one token, no control characters.
fn check_bare(addr: &str) -> Result<String, AddressError> {
    if addr.is_empty() {
        return Err(AddressError::Empty);
    }
    if addr.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AddressError::NotAnAddress {
            output: addr.to_string(),
        });
    }
    Ok(addr.to_string())
}

/// The filesystem path of a `unix://` address, or `None` for abstract (`unix://@x` or scheme-less)
/// and non-unix addresses.
pub fn socket_path(address: &str) -> Option<std::path::PathBuf> {
    let rest = address.strip_prefix("unix://")?;
    if rest.starts_with('@') || rest.is_empty() {
        return None;
    }
    Some(std::path::PathBuf::from(rest))
}

/// The name as it appears in `/proc/net/unix` (`@name` for abstract sockets, the path otherwise),
/// following containerd's rule that an address without `unix://` is abstract.
pub fn proc_net_unix_name(address: &str) -> Option<String> {
    match address.strip_prefix("unix://") {
        Some(rest) if !rest.is_empty() => Some(rest.to_string()),
        Some(_) => None,
        None if address.contains("://") => None,
        None => Some(format!("@{address}")),
    }
}

/// The address in the form `ttrpc::asynchronous::Client::connect` takes.
pub fn dial_address(address: &str) -> String {
    if address.starts_with("unix://") || address.contains("://") {
        address.to_string()
    } else {
        format!("unix://@{address}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "default";
    const GRPC: &str = "/run/ctd/c.sock";
    const PB: &str = "/usr/bin/containerd";

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn start_argv_matches_observed_order_for_every_dialect() {
        for d in Dialect::ALL {
            assert_eq!(
                d.start_argv(NS, GRPC, PB, "wrap1", true),
                s(&[
                    "-namespace",
                    "default",
                    "-address",
                    "/run/ctd/c.sock",
                    "-publish-binary",
                    "/usr/bin/containerd",
                    "-id",
                    "wrap1",
                    "-debug",
                    "start"
                ]),
                "{d}"
            );
            let no_debug = d.start_argv(NS, GRPC, PB, "wrap1", false);
            assert!(!no_debug.contains(&"-debug".to_string()), "{d}");
            assert_eq!(no_debug.last().map(String::as_str), Some("start"));
        }
    }

    #[test]
    fn delete_argv_has_bundle_and_debug_only_on_2_0() {
        let d16 = Dialect::V1_6.delete_argv(NS, GRPC, PB, "wrap1", "/b", true);
        assert_eq!(
            d16,
            s(&[
                "-namespace",
                "default",
                "-address",
                "/run/ctd/c.sock",
                "-publish-binary",
                "/usr/bin/containerd",
                "-id",
                "wrap1",
                "-bundle",
                "/b",
                "delete"
            ])
        );
        let d20 = Dialect::V2_0.delete_argv(NS, GRPC, PB, "wrap1", "/b", true);
        assert_eq!(&d20[d20.len() - 2..], &s(&["-debug", "delete"])[..]);
    }

    #[test]
    fn env_per_dialect() {
        let e16 = Dialect::V1_6.start_env("/run/ctd/c.sock.ttrpc", GRPC, NS);
        assert_eq!(
            e16,
            vec![
                ("GOMAXPROCS".to_string(), "2".to_string()),
                (
                    "TTRPC_ADDRESS".to_string(),
                    "/run/ctd/c.sock.ttrpc".to_string()
                ),
            ]
        );
        for d in [Dialect::V1_7, Dialect::V2_0] {
            let e = d.start_env("/run/ctd/c.sock.ttrpc", GRPC, NS);
            let get = |k: &str| e.iter().find(|(a, _)| a == k).map(|(_, b)| b.as_str());
            assert_eq!(get("GOMAXPROCS"), Some("2"));
            assert_eq!(get("TTRPC_ADDRESS"), Some("/run/ctd/c.sock.ttrpc"));
            assert_eq!(get("MAX_SHIM_VERSION"), Some("2"));
            assert_eq!(get("GRPC_ADDRESS"), Some(GRPC));
            assert_eq!(get("NAMESPACE"), Some(NS));
            assert_eq!(e.len(), 5);
        }
    }

    const BARE: &str = "unix:///run/containerd/s/58bdfb81";
    const J2: &str =
        r#"{"version":2,"address":"unix:///run/containerd/s/58bdfb81","protocol":"ttrpc"}"#;
    const J3: &str =
        r#"{"address":"unix:///run/containerd/s/58bdfb81","protocol":"ttrpc","version":3}"#;

    #[test]
    fn v1_6_takes_only_a_bare_address() {
        let d = Dialect::V1_6;
        assert_eq!(d.parse_start_output(BARE), Ok((BARE.into(), TaskApi::V2)));
        for j in [J2, J3] {
            let e = d.parse_start_output(j).unwrap_err();
            assert!(matches!(e, AddressError::JsonOn16 { .. }));
            assert!(e
                .to_string()
                .starts_with("start printed a JSON bootstrap; containerd 1.6 dials it as a path"));
        }
    }

    #[test]
    fn v1_7_takes_json_version_2_but_not_3() {
        let d = Dialect::V1_7;
        assert_eq!(d.parse_start_output(BARE), Ok((BARE.into(), TaskApi::V2)));
        assert_eq!(d.parse_start_output(J2), Ok((BARE.into(), TaskApi::V2)));
        let e = d.parse_start_output(J3).unwrap_err();
        assert_eq!(e, AddressError::UnsupportedVersion { version: 3 });
        assert!(e.to_string().starts_with("unsupported shim version (3)"));
    }

    #[test]
    fn v2_0_picks_task_api_from_version() {
        let d = Dialect::V2_0;
        assert_eq!(d.parse_start_output(BARE), Ok((BARE.into(), TaskApi::V2)));
        assert_eq!(d.parse_start_output(J2), Ok((BARE.into(), TaskApi::V2)));
        assert_eq!(d.parse_start_output(J3), Ok((BARE.into(), TaskApi::V3)));
        let j4 = r#"{"version":4,"address":"unix:///x"}"#;
        assert_eq!(
            d.parse_start_output(j4),
            Err(AddressError::UnsupportedVersion { version: 4 })
        );
        let grpc = r#"{"version":3,"address":"unix:///x","protocol":"grpc"}"#;
        assert!(matches!(
            d.parse_start_output(grpc),
            Err(AddressError::UnsupportedProtocol { .. })
        ));
    }

    #[test]
    fn json_below_version_2_is_dialed_as_a_whole() {
        let j1 = r#"{"version":1,"address":"unix:///x"}"#;
        for d in [Dialect::V1_7, Dialect::V2_0] {
            assert_eq!(d.parse_start_output(j1), Ok((j1.into(), TaskApi::V2)));
        }
    }

    #[test]
    fn empty_and_garbage_are_rejected_by_every_dialect() {
        for d in Dialect::ALL {
            assert_eq!(d.parse_start_output(""), Err(AddressError::Empty));
            let g = "time=\"x\" level=info msg=hello\nunix:///run/x";
            assert!(matches!(
                d.parse_start_output(g),
                Err(AddressError::NotAnAddress { .. })
            ));
        }
    }

    #[test]
    fn dialect_names_round_trip() {
        for d in Dialect::ALL {
            assert_eq!(d.to_string().parse::<Dialect>(), Ok(d));
        }
        assert_eq!(Dialect::default(), Dialect::V2_0);
        assert!("1.5".parse::<Dialect>().is_err());
        assert_eq!(TaskApi::V2.service(), "containerd.task.v2.Task");
        assert_eq!(TaskApi::V3.service(), "containerd.task.v3.Task");
    }

    #[test]
    fn address_forms() {
        assert_eq!(
            socket_path("unix:///run/x"),
            Some(std::path::PathBuf::from("/run/x"))
        );
        assert_eq!(socket_path("unix://@abs"), None);
        assert_eq!(proc_net_unix_name("abs"), Some("@abs".into()));
        assert_eq!(proc_net_unix_name("unix:///run/x"), Some("/run/x".into()));
        assert_eq!(dial_address("abs"), "unix://@abs");
    }
}
