//! Go-style command-line flags of a containerd shim (`-namespace ns -id x ... start`).

use crate::error::{Error, Result};

/// The flags containerd passes to a shim binary, plus the trailing action word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    /// `-namespace`: containerd namespace of the task.
    pub namespace: String,
    /// `-id`: container id.
    pub id: String,
    /// `-address`: containerd's gRPC socket path (hashed into the shim socket name).
    pub address: String,
    /// `-publish-binary`: path of the containerd binary (unused; events go over TTRPC).
    pub publish_binary: String,
    /// `-debug`: log at debug level.
    pub debug: bool,
    /// `-bundle`: bundle directory (the `delete` action); defaults to the cwd.
    pub bundle: String,
    /// `-socket`: socket address for the server (instead of an inherited fd 3).
    pub socket: String,
    /// `-v`: print the version and exit.
    pub version: bool,
    /// `-info` (containerd 2.x): print a `RuntimeInfo` protobuf and exit.
    pub info: bool,
    /// The action word: `start`, `delete`, or none (server mode).
    pub action: Option<String>,
}

fn parse_bool(name: &str, v: &str) -> Result<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(Error::InvalidArgument(format!(
            "flag -{name}: invalid boolean value {v:?}"
        ))),
    }
}

/// Parses Go `flag` syntax: `-name value`, `-name=value`, `--name`, boolean flags bare.
/// Parsing stops at the first non-flag word, which is the action.
pub fn parse<I, S>(args: I) -> Result<Flags>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    let mut f = Flags::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            i += 1;
            break;
        }
        let Some(stripped) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
            break;
        };
        if stripped.is_empty() {
            break;
        }
        let (name, inline) = match stripped.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (stripped.to_string(), None),
        };
        match name.as_str() {
            "debug" | "v" | "info" => {
                let v = match inline {
                    Some(v) => parse_bool(&name, &v)?,
                    None => true,
                };
                match name.as_str() {
                    "debug" => f.debug = v,
                    "info" => f.info = v,
                    _ => f.version = v,
                }
            }
            "namespace" | "id" | "address" | "publish-binary" | "bundle" | "socket" => {
                let v = match inline {
                    Some(v) => v,
                    None => {
                        i += 1;
                        args.get(i).cloned().ok_or_else(|| {
                            Error::InvalidArgument(format!("flag needs an argument: -{name}"))
                        })?
                    }
                };
                match name.as_str() {
                    "namespace" => f.namespace = v,
                    "id" => f.id = v,
                    "address" => f.address = v,
                    "publish-binary" => f.publish_binary = v,
                    "bundle" => f.bundle = v,
                    _ => f.socket = v,
                }
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "flag provided but not defined: -{other}"
                )))
            }
        }
        i += 1;
    }
    f.action = args.get(i).cloned();
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_containerd_start_argv() {
        let f = parse([
            "-namespace",
            "default",
            "-address",
            "/run/c.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "c1",
            "-debug",
            "start",
        ])
        .unwrap();
        assert_eq!(f.namespace, "default");
        assert_eq!(f.address, "/run/c.sock");
        assert_eq!(f.publish_binary, "/usr/bin/containerd");
        assert_eq!(f.id, "c1");
        assert!(f.debug);
        assert_eq!(f.action.as_deref(), Some("start"));
    }

    #[test]
    fn parses_inline_values_and_server_mode() {
        let f = parse([
            "--namespace=ns",
            "-id=x",
            "-debug=false",
            "-socket",
            "unix:///s",
        ])
        .unwrap();
        assert_eq!(f.namespace, "ns");
        assert_eq!(f.id, "x");
        assert!(!f.debug);
        assert_eq!(f.socket, "unix:///s");
        assert_eq!(f.action, None);
    }

    #[test]
    fn rejects_unknown_flag_and_missing_value() {
        let e = parse(["-bogus", "start"]).unwrap_err().to_string();
        assert!(e.contains("-bogus"), "{e}");
        let e = parse(["-id"]).unwrap_err().to_string();
        assert!(e.contains("-id"), "{e}");
    }
}
