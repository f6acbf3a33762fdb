//! The format's process: `args`, `env`, `cwd`, `user`, `terminal` and the stdio kind, as the
//! OCI process of a bundle.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An OCI `process` (the subset the harness sets; the rest comes from containerd's default spec).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Process {
    /// argv; the first element is looked up in PATH.
    pub args: Vec<String>,
    /// `KEY=value` strings (default: containerd's default PATH).
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// Working directory (default `/`).
    #[serde(default)]
    pub cwd: Option<String>,
    /// User to run as (default root).
    #[serde(default)]
    pub user: Option<User>,
    /// Allocate a terminal for the process.
    #[serde(default)]
    pub terminal: Option<bool>,
}

impl Process {
    /// This process with the `${var}`s of its args expanded; an unknown variable is an error
    /// naming it.
    pub fn expanded(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Process, String> {
        let mut p = self.clone();
        p.args = self
            .args
            .iter()
            .map(|a| crate::scenario::expand(a, lookup))
            .collect::<Result<_, _>>()?;
        Ok(p)
    }

    /// The OCI process spec of this scenario process: containerd's defaults
    /// ([`crate::bundle::process`]) with the scenario's args, env, cwd and user, and `terminal`.
    pub fn to_oci(&self, terminal: bool) -> oci_spec::runtime::Process {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut op = crate::bundle::process(&args);
        if let Some(env) = &self.env {
            op.set_env(Some(env.clone()));
        }
        if let Some(cwd) = &self.cwd {
            op.set_cwd(cwd.into());
        }
        if let Some(u) = &self.user {
            let mut user = oci_spec::runtime::User::default();
            user.set_uid(u.uid);
            user.set_gid(u.gid);
            if !u.additional_gids.is_empty() {
                user.set_additional_gids(Some(u.additional_gids.clone()));
            }
            op.set_user(user);
        }
        op.set_terminal(Some(terminal));
        op
    }
}

/// An OCI `process.user`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct User {
    /// Numeric user id.
    pub uid: u32,
    /// Numeric group id.
    pub gid: u32,
    /// Supplementary group ids.
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

/// Where a stdio stream of a task or exec goes. YAML's `null` (unquoted) means `null` too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StdioKind {
    /// A FIFO created and opened by the harness, as containerd's `cio` does (default).
    #[default]
    Fifo,
    /// No stream: the empty string is sent.
    Null,
    /// A `file:///abs/path` URI; the harness reads the file afterwards.
    File,
}

impl From<StdioKind> for crate::stdio::StdioMode {
    fn from(k: StdioKind) -> Self {
        match k {
            StdioKind::Fifo => crate::stdio::StdioMode::Fifo,
            StdioKind::Null => crate::stdio::StdioMode::Null,
            StdioKind::File => crate::stdio::StdioMode::File,
        }
    }
}

/// A process's stdio as a step asks for it: the kinds of stdin, stdout and stderr, a terminal,
/// the bytes to write to stdin. A `fifo` stdin is no stream when there is nothing to write and
/// the scenario does not need stdin: containerd's cio opens a stdin FIFO only when the client
/// has input.
pub fn stdio_options(
    [stdin, stdout, stderr]: [StdioKind; 3],
    terminal: bool,
    stdin_data: Option<Vec<u8>>,
    wants_stdin: bool,
) -> crate::stdio::StdioOptions {
    use crate::stdio::StdioMode;
    crate::stdio::StdioOptions {
        stdin: if stdin == StdioKind::Fifo && stdin_data.is_none() && !wants_stdin {
            StdioMode::Null
        } else {
            StdioMode::from(stdin)
        },
        stdout: StdioMode::from(stdout),
        stderr: StdioMode::from(stderr),
        terminal,
        stdin_data,
    }
}

impl<'de> Deserialize<'de> for StdioKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = StdioKind;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("one of `fifo`, `null`, `file`")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<StdioKind, E> {
                Ok(StdioKind::Null)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StdioKind, E> {
                match v {
                    "fifo" => Ok(StdioKind::Fifo),
                    "null" | "" => Ok(StdioKind::Null),
                    "file" => Ok(StdioKind::File),
                    other => Err(E::custom(format!(
                        "unknown stdio kind `{other}`, expected one of `fifo`, `null`, `file`"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}
