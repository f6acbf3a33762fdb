//! How each containerd version (1.6, 1.7, 2.0, 2.3) runs a shim's `start`: argv, environment,
//! stdin and the reading of its output (protocol doc sections 0, 2.1, 2.2, 2.5 and 3; for 2.3,
//! the protobuf bootstrap of pkg/shim/util.go `Command` and core/runtime/v2/shim.go
//! `parseStartResponse` v2.3.4).

use std::fmt;
use std::path::Path;
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

    /// What `start` gets on stdin, or `None` for /dev/null. Before 2.3: the runtime options
    /// `Any` when there are any. 2.3 (pkg/shim/util.go `Command` v2.3.4): a protobuf
    /// `BootstrapParams` always, except for a binary whose name contains `shim-runc-v1` or
    /// `shim-runhcs-v1`, which keeps the old stdin.
    pub fn start_stdin(&self, shim: &Path, p: &StartParams<'_>) -> Option<Vec<u8>> {
        use protobuf::Message;
        let legacy = || {
            p.runtime_options
                .map(|any| any.write_to_bytes().unwrap_or_default())
        };
        if *self != Dialect::V2_3 {
            return legacy();
        }
        let name = shim
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.contains("shim-runc-v1") || name.contains("shim-runhcs-v1") {
            return legacy();
        }
        // log.GetLevel().String() through bootstrap.LogLevelFromString (helpers.go v2.3.4):
        // the mock is at info, or at debug when it passes `-debug`.
        let o = p.overrides.cloned().unwrap_or_default();
        let level = match o.log_level {
            Some(l) => l,
            None if p.debug => bootstrap::LogLevel::Debug,
            None => bootstrap::LogLevel::Info,
        };
        let mut params = bootstrap::BootstrapParams {
            instance_id: o.instance_id.unwrap_or_else(|| p.id.to_string()),
            namespace: o.namespace.unwrap_or_else(|| p.namespace.to_string()),
            log_level: protobuf::EnumOrUnknown::new(level),
            containerd_version: CONTAINERD_2_3_VERSION.to_string(),
            containerd_ttrpc_address: p.ttrpc_address.to_string(),
            containerd_grpc_address: p.grpc_address.to_string(),
            containerd_binary: p.containerd_binary.to_string(),
            // Always sent: the runtime's `socket_dir`, else the daemon's default
            // (core/runtime/v2/shim_manager.go and binary.go `Start`, v2.3.4).
            socket_dir: Some(
                p.socket_dir
                    .map(str::to_string)
                    .unwrap_or_else(default_socket_dir),
            ),
            ..Default::default()
        };
        if let Some(any) = p.runtime_options {
            params.add_extension(any.clone());
        }
        for any in o.extensions {
            params.add_extension(any);
        }
        let mut bytes = params.write_to_bytes().unwrap_or_default();
        if o.cut {
            bytes.truncate(bytes.len() / 2);
        }
        Some(bytes)
    }

    /// Reads the raw output of `start` as [`Dialect::parse_start_bytes`] does and says what it
    /// was: the answer a scenario's `start-answer` step checks.
    pub fn read_start_answer(&self, raw: &[u8]) -> Result<StartAnswer, AddressError> {
        let (address, api) = self.parse_start_bytes(raw)?;
        let text = String::from_utf8_lossy(raw);
        let format = if *self == Dialect::V2_3
            && go_wire_valid(raw)
            && <bootstrap::BootstrapResult as protobuf::Message>::parse_from_bytes(raw).is_ok()
        {
            AnswerFormat::Protobuf
        } else if parse_bootstrap_json(text.trim()).is_some_and(|b| b.version >= 2) {
            AnswerFormat::Json
        } else {
            AnswerFormat::Bare
        };
        Ok(StartAnswer {
            format,
            version: if api == TaskApi::V3 { 3 } else { 2 },
            protocol: "ttrpc".into(),
            address,
        })
    }

    /// Reads the raw combined output of `start` as this containerd version does. 2.3
    /// (core/runtime/v2/shim.go `parseStartResponse` v2.3.4): the untrimmed bytes as a protobuf
    /// `BootstrapResult` first; if they do not decode, the trimmed text as the legacy JSON
    /// (version 2 or more; above 3 refused), else as a bare ttrpc address. The other dialects
    /// read the lossily decoded, trimmed text ([`Dialect::parse_start_output`]).
    pub fn parse_start_bytes(&self, raw: &[u8]) -> Result<(String, TaskApi), AddressError> {
        let text = String::from_utf8_lossy(raw).trim().to_string();
        if *self != Dialect::V2_3 {
            return self.parse_start_output(&text);
        }
        if text.is_empty() {
            // containerd decodes an empty answer as an empty BootstrapResult and refuses its
            // protocol ""; this says what happened.
            return Err(AddressError::Empty);
        }
        let decoded = if go_wire_valid(raw) {
            <bootstrap::BootstrapResult as protobuf::Message>::parse_from_bytes(raw)
        } else {
            Err(protobuf::Error::from(std::io::Error::other(
                "not well-formed protobuf wire data (as Go's proto.Unmarshal reads it)",
            )))
        };
        let pb_err = match decoded {
            Ok(r) => {
                // makeConnection: the protocol; then NewTaskClient: the version.
                check_protocol(&r.protocol)?;
                let address = check_bare(&r.address)?;
                return match r.version {
                    2 => Ok((address, TaskApi::V2)),
                    3 => Ok((address, TaskApi::V3)),
                    version => Err(AddressError::UnsupportedTaskClient { version }),
                };
            }
            Err(e) => e.to_string(),
        };
        let json_err = match serde_json::from_str::<serde_json::Value>(&text) {
            Err(e) => format!("not JSON: {e}"),
            Ok(_) => match parse_bootstrap_json(&text) {
                None => "JSON, but not a bootstrap object".to_string(),
                Some(b) if b.version < 2 => {
                    format!(
                        "version {} < 2, so the whole output is the address",
                        b.version
                    )
                }
                Some(_) => return self.parse_start_output(&text),
            },
        };
        check_bare(&text)
            .map(|a| (a, TaskApi::V2))
            .map_err(|e| match e {
                AddressError::NotAnAddress { output } => AddressError::Unreadable {
                    protobuf: pb_err,
                    json: json_err,
                    output,
                },
                other => other,
            })
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
            Dialect::V1_7 | Dialect::V2_0 | Dialect::V2_3 => {
                let max = if *self == Dialect::V1_7 { 2 } else { 3 };
                match json {
                    // Go: unmarshal error or version < 2 → the whole output is a ttrpc address.
                    Some(b) if b.version >= 2 => {
                        if b.version > max {
                            return Err(AddressError::UnsupportedVersion { version: b.version });
                        }
                        check_protocol(&b.protocol)?;
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

/// The longest `socket_dir` containerd 2.3 accepts on Linux (core/runtime/v2/socket_linux.go
/// `maxSocketDirLen` v2.3.4): the socket's name, 64 hex digits, must still fit a unix address.
pub const MAX_SOCKET_DIR_LEN: usize = 42;

/// Checks a `socket_dir` as containerd 2.3 checks its runtime setting (core/runtime/v2/
/// shim_manager.go v2.3.4): absolute and at most [`MAX_SOCKET_DIR_LEN`] bytes once cleaned.
pub fn check_socket_dir(dir: &str) -> Result<String, String> {
    let p = Path::new(dir);
    if !p.is_absolute() {
        return Err(format!("socket_dir must be an absolute path: {dir:?}"));
    }
    // Go's `filepath.Clean`, lexically: `.` dropped, `..` takes back one name.
    let mut names: Vec<&std::ffi::OsStr> = vec![];
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) => names.push(n),
            std::path::Component::ParentDir => {
                names.pop();
            }
            _ => {}
        }
    }
    let clean = format!(
        "/{}",
        names
            .iter()
            .map(|n| n.to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    );
    if clean.len() > MAX_SOCKET_DIR_LEN {
        return Err(format!(
            "socket_dir length must be no longer than {MAX_SOCKET_DIR_LEN} characters: {clean:?} has {}",
            clean.len()
        ));
    }
    Ok(clean)
}

/// containerd 2.3's socket directory when the runtime sets none (core/runtime/v2/shim_unix.go
/// `defaultSocketDir` v2.3.4): `/run/containerd/s` for root; otherwise the first of that,
/// `$XDG_RUNTIME_DIR/containerd/s`, `/run/<uid>/containerd/s` and `/tmp/containerd-s-<uid>`
/// that exists (or can be made, mode 0700) and is owned by the user.
pub fn default_socket_dir() -> String {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    const DEFAULT: &str = "/run/containerd/s";
    let uid = nix::unistd::geteuid().as_raw();
    if uid == 0 {
        return DEFAULT.to_string();
    }
    let mut candidates = vec![DEFAULT.to_string()];
    if let Ok(x) = std::env::var("XDG_RUNTIME_DIR") {
        if !x.is_empty() {
            candidates.push(format!("{x}/containerd/s"));
        }
    }
    candidates.push(format!("/run/{uid}/containerd/s"));
    candidates.push(format!("/tmp/containerd-s-{uid}"));
    candidates
        .into_iter()
        .find(|d| {
            let _ = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d);
            std::fs::metadata(d).is_ok_and(|m| m.is_dir() && m.uid() == uid)
        })
        .unwrap_or_default()
}

/// The protocol check of `makeConnection` (core/runtime/v2/shim.go v2.1.9 and v2.3.4,
/// runtime/v2/shim.go v1.7.24), the same for a JSON and a protobuf answer: lower-cased,
/// `ttrpc` is dialed, `grpc` would be dialed by the daemon but the mock speaks ttrpc only, and
/// anything else (the empty protocol of a JSON answer without one too) is refused.
fn check_protocol(protocol: &str) -> Result<(), AddressError> {
    match protocol.to_lowercase().as_str() {
        "ttrpc" => Ok(()),
        "grpc" => Err(AddressError::UnsupportedProtocol {
            protocol: protocol.to_string(),
        }),
        _ => Err(AddressError::UnexpectedProtocol {
            protocol: protocol.to_string(),
        }),
    }
}

/// What a `start` answered, as the dialect read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartAnswer {
    /// Which of the three forms it had.
    pub format: AnswerFormat,
    /// The shim API version the daemon takes from it (2 or 3).
    pub version: u8,
    /// The protocol dialed (`ttrpc`).
    pub protocol: String,
    /// The address.
    pub address: String,
}

/// The form of a `start` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFormat {
    /// A protobuf `BootstrapResult` (read by 2.3 only).
    Protobuf,
    /// The JSON bootstrap, version 2 or more.
    Json,
    /// An address alone.
    Bare,
}

impl AnswerFormat {
    /// `protobuf`, `json` or `bare`.
    pub fn as_str(&self) -> &'static str {
        match self {
            AnswerFormat::Protobuf => "protobuf",
            AnswerFormat::Json => "json",
            AnswerFormat::Bare => "bare",
        }
    }
}

/// What a scenario changes in the `BootstrapParams` of one `start` (dialect 2.3).
#[derive(Debug, Clone, Default)]
pub struct BootstrapOverrides {
    /// `log_level` (default: from `-debug`).
    pub log_level: Option<bootstrap::LogLevel>,
    /// Extensions after the runtime options.
    pub extensions: Vec<protobuf::well_known_types::any::Any>,
    /// `instance_id` instead of `-id`.
    pub instance_id: Option<String>,
    /// `namespace` instead of `-namespace`.
    pub namespace: Option<String>,
    /// Send only the first half of the encoded message.
    pub cut: bool,
}

/// What [`Dialect::start_stdin`] needs to know about one `start`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartParams<'a> {
    /// `-id`.
    pub id: &'a str,
    /// `-namespace`.
    pub namespace: &'a str,
    /// `-debug` (containerd at debug level).
    pub debug: bool,
    /// `TTRPC_ADDRESS`.
    pub ttrpc_address: &'a str,
    /// `-address`.
    pub grpc_address: &'a str,
    /// The daemon's executable (`-publish-binary`).
    pub containerd_binary: &'a str,
    /// The runtime options.
    pub runtime_options: Option<&'a protobuf::well_known_types::any::Any>,
    /// The runtime's configured socket directory (2.3 sends its default when unset).
    pub socket_dir: Option<&'a str>,
    /// A scenario's changes to the `BootstrapParams`.
    pub overrides: Option<&'a BootstrapOverrides>,
}

/// Whether `b` is well-formed protobuf wire data as Go's `proto.Unmarshal` requires of unknown
/// fields too (protowire `ConsumeFieldValue`): valid tags (field number ≥ 1, wire types 0–5),
/// complete values, and every start-group closed by an end-group of the same number. The
/// rust-protobuf parser is more lenient with unknown groups, so text such as a legacy JSON
/// answer (`{` is a start-group tag) could otherwise decode as an empty `BootstrapResult`.
fn go_wire_valid(b: &[u8]) -> bool {
    fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*i)?;
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    // Walks fields until the end (`group == None`) or the end-group of `group`.
    fn fields(b: &[u8], i: &mut usize, group: Option<u64>, depth: usize) -> bool {
        while *i < b.len() {
            let Some(tag) = varint(b, i) else {
                return false;
            };
            let (num, wire) = (tag >> 3, tag & 7);
            if num == 0 || num > (1 << 29) - 1 {
                return false;
            }
            let ok = match wire {
                0 => varint(b, i).is_some(),
                1 => {
                    *i += 8;
                    *i <= b.len()
                }
                2 => match varint(b, i) {
                    Some(n) if (n as usize) <= b.len() - *i => {
                        *i += n as usize;
                        true
                    }
                    _ => false,
                },
                3 => depth < 100 && fields(b, i, Some(num), depth + 1),
                4 => return group == Some(num),
                5 => {
                    *i += 4;
                    *i <= b.len()
                }
                _ => false,
            };
            if !ok {
                return false;
            }
        }
        group.is_none()
    }
    fields(b, &mut 0, None, 0)
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

    #[test]
    fn wire_validity_follows_go_for_unknown_groups() {
        // A legacy JSON answer starts with `{` (0x7b: field 15, start-group) and never closes it.
        let json = br#"{"address":"unix:///run/containerd/s/x","protocol":"ttrpc","version":3}"#;
        assert!(!go_wire_valid(json));
        // field 1 varint 3; field 15 group holding field 1 varint 1, closed by field 15's end.
        assert!(go_wire_valid(&[0x08, 0x03, 0x7b, 0x08, 0x01, 0x7c]));
        // The same group closed by another field's end-group, or not at all: invalid.
        assert!(!go_wire_valid(&[0x7b, 0x08, 0x01, 0x74]));
        assert!(!go_wire_valid(&[0x7b, 0x08, 0x01]));
        // A length past the end, a field number 0, wire type 6.
        assert!(!go_wire_valid(&[0x12, 0x05, b'a']));
        assert!(!go_wire_valid(&[0x00, 0x01]));
        assert!(!go_wire_valid(&[0x0e]));
        assert!(go_wire_valid(&[]));
        // Under 2.3 the JSON is therefore read as JSON, as containerd 2.3.4 does.
        let (addr, api) = Dialect::V2_3
            .parse_start_bytes(json)
            .expect("JSON version 3 under 2.3");
        assert_eq!(
            (addr.as_str(), api),
            ("unix:///run/containerd/s/x", TaskApi::V3)
        );
    }

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
        let d23 = Dialect::V2_3.delete_argv(NS, GRPC, PB, "wrap1", "/b", true);
        assert_eq!(d23, d20);
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
        for d in [Dialect::V1_7, Dialect::V2_0, Dialect::V2_3] {
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
    fn json_without_a_ttrpc_protocol_is_refused_as_make_connection_does() {
        for d in [Dialect::V1_7, Dialect::V2_0, Dialect::V2_3] {
            let none = r#"{"version":2,"address":"unix:///x"}"#;
            let e = d.parse_start_output(none).unwrap_err();
            assert_eq!(e.to_string(), r#"unexpected protocol: """#, "{d}");
            let upper = r#"{"version":2,"address":"unix:///x","protocol":"TTRPC"}"#;
            assert_eq!(
                d.parse_start_output(upper),
                Ok(("unix:///x".into(), TaskApi::V2)),
                "{d}"
            );
            let other = r#"{"version":2,"address":"unix:///x","protocol":"http"}"#;
            assert_eq!(
                d.parse_start_output(other),
                Err(AddressError::UnexpectedProtocol {
                    protocol: "http".into()
                }),
                "{d}"
            );
        }
        let none = br#"{"version":2,"address":"unix:///x"}"#;
        assert_eq!(
            Dialect::V2_3.parse_start_bytes(none),
            Err(AddressError::UnexpectedProtocol {
                protocol: String::new()
            })
        );
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
        assert_eq!("2.3".parse::<Dialect>(), Ok(Dialect::V2_3));
        assert_eq!(Dialect::ALL.len(), 4);
        assert!("1.5".parse::<Dialect>().is_err());
        assert_eq!(TaskApi::V2.service(), "containerd.task.v2.Task");
        assert_eq!(TaskApi::V3.service(), "containerd.task.v3.Task");
    }

    fn any_opts() -> protobuf::well_known_types::any::Any {
        protobuf::well_known_types::any::Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![0x50, 0x01],
            ..Default::default()
        }
    }

    fn start_params(opts: Option<&protobuf::well_known_types::any::Any>) -> StartParams<'_> {
        StartParams {
            id: "wrap1",
            namespace: NS,
            debug: true,
            ttrpc_address: "/run/ctd/c.sock.ttrpc",
            grpc_address: GRPC,
            containerd_binary: PB,
            runtime_options: opts,
            socket_dir: None,
            overrides: None,
        }
    }

    fn decode_params(b: &[u8]) -> bootstrap::BootstrapParams {
        protobuf::Message::parse_from_bytes(b).unwrap()
    }

    #[test]
    fn stdin_before_2_3_is_the_options_any_or_nothing() {
        use protobuf::Message;
        let opts = any_opts();
        let shim = Path::new("/x/containerd-shim-reaper-v2");
        for d in [Dialect::V1_6, Dialect::V1_7, Dialect::V2_0] {
            assert_eq!(d.start_stdin(shim, &start_params(None)), None);
            assert_eq!(
                d.start_stdin(shim, &start_params(Some(&opts))),
                Some(opts.write_to_bytes().unwrap())
            );
        }
    }

    #[test]
    fn stdin_for_2_3_is_bootstrap_params() {
        let shim = Path::new("/x/containerd-shim-reaper-v2");
        // Without options and socket dir: still BootstrapParams (never /dev/null).
        let p = decode_params(
            &Dialect::V2_3
                .start_stdin(shim, &start_params(None))
                .unwrap(),
        );
        assert_eq!(p.instance_id, "wrap1");
        assert_eq!(p.namespace, NS);
        assert_eq!(p.level(), bootstrap::LogLevel::Debug);
        assert_eq!(p.containerd_version, CONTAINERD_2_3_VERSION);
        assert_eq!(p.containerd_ttrpc_address, "/run/ctd/c.sock.ttrpc");
        assert_eq!(p.containerd_grpc_address, GRPC);
        assert_eq!(p.containerd_binary, PB);
        assert!(p.extensions.is_empty());
        // No socket dir configured: the daemon's default is sent all the same.
        assert_eq!(p.socket_dir, Some(default_socket_dir()));
        assert_eq!(
            nix::unistd::geteuid().is_root(),
            p.socket_dir.as_deref() == Some("/run/containerd/s")
        );
        // Options as the one extension, the socket dir when asked, info without -debug.
        let opts = any_opts();
        let mut sp = start_params(Some(&opts));
        sp.socket_dir = Some("/run/s");
        sp.debug = false;
        let p = decode_params(&Dialect::V2_3.start_stdin(shim, &sp).unwrap());
        assert_eq!(p.runtime_options(), Some(&opts));
        assert_eq!(p.extensions.len(), 1);
        assert_eq!(p.socket_dir.as_deref(), Some("/run/s"));
        assert_eq!(p.log_level.value(), 0);
    }

    #[test]
    fn a_scenario_changes_the_2_3_params_as_asked() {
        let shim = Path::new("/x/containerd-shim-reaper-v2");
        let opts = any_opts();
        let unknown = protobuf::well_known_types::any::Any {
            type_url: "type.googleapis.com/harness.test.Unknown".into(),
            value: vec![7; 3],
            ..Default::default()
        };
        let o = BootstrapOverrides {
            log_level: Some(bootstrap::LogLevel::Trace),
            extensions: vec![unknown.clone()],
            instance_id: Some("other".into()),
            namespace: Some("ns2".into()),
            cut: false,
        };
        let mut sp = start_params(Some(&opts));
        sp.overrides = Some(&o);
        let whole = Dialect::V2_3.start_stdin(shim, &sp).unwrap();
        let p = decode_params(&whole);
        assert_eq!(
            (p.instance_id.as_str(), p.namespace.as_str()),
            ("other", "ns2")
        );
        // The level overrides -debug (the start params ask for debug).
        assert_eq!(p.log_level.value(), -8);
        // The runtime options stay first; the scenario's extension follows.
        assert_eq!(p.runtime_options(), Some(&opts));
        assert_eq!(p.extensions.len(), 2);
        assert_eq!(p.extensions[1].value.as_ref(), Some(&unknown));
        // `cut`: exactly the first half of the same bytes.
        let cut = BootstrapOverrides {
            cut: true,
            ..o.clone()
        };
        sp.overrides = Some(&cut);
        let half = Dialect::V2_3.start_stdin(shim, &sp).unwrap();
        assert_eq!(half, whole[..whole.len() / 2]);
    }

    #[test]
    fn a_socket_dir_is_checked_as_containerd_checks_it() {
        assert_eq!(check_socket_dir("/run/x/../s/./"), Ok("/run/s".into()));
        assert_eq!(check_socket_dir("/run/s"), Ok("/run/s".into()));
        let e = check_socket_dir("run/s").unwrap_err();
        assert!(e.contains("absolute"), "{e}");
        let long = format!("/{}", "d".repeat(42));
        let e = check_socket_dir(&long).unwrap_err();
        assert!(
            e.contains("no longer than 42") && e.contains("has 43"),
            "{e}"
        );
        assert!(check_socket_dir(&long[..42]).is_ok());
    }

    #[test]
    fn the_answer_format_is_named() {
        use protobuf::Message;
        let pb = bootstrap::BootstrapResult {
            version: 3,
            address: BARE.into(),
            protocol: "ttrpc".into(),
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap();
        let a = Dialect::V2_3.read_start_answer(&pb).unwrap();
        assert_eq!(
            (a.format, a.version, a.address.as_str()),
            (AnswerFormat::Protobuf, 3, BARE)
        );
        let a = Dialect::V2_3.read_start_answer(J2.as_bytes()).unwrap();
        assert_eq!((a.format, a.version), (AnswerFormat::Json, 2));
        let a = Dialect::V2_0.read_start_answer(J3.as_bytes()).unwrap();
        assert_eq!((a.format, a.version), (AnswerFormat::Json, 3));
        let a = Dialect::V1_6.read_start_answer(BARE.as_bytes()).unwrap();
        assert_eq!(
            (a.format, a.version, a.protocol.as_str()),
            (AnswerFormat::Bare, 2, "ttrpc")
        );
        // A JSON bootstrap below version 2 is dialed whole: bare.
        let j1 = r#"{"version":1,"address":"unix:///x"}"#;
        assert_eq!(
            Dialect::V2_0
                .read_start_answer(j1.as_bytes())
                .unwrap()
                .format,
            AnswerFormat::Bare
        );
    }

    #[test]
    fn stdin_for_2_3_keeps_the_old_form_for_v1_shim_names() {
        use protobuf::Message;
        let opts = any_opts();
        for name in [
            "containerd-shim-runc-v1",
            "containerd-shim-runhcs-v1.exe",
            "my-shim-runc-v1-wrapper",
        ] {
            let shim = Path::new("/bin").join(name);
            assert_eq!(
                Dialect::V2_3.start_stdin(&shim, &start_params(None)),
                None,
                "{name}"
            );
            assert_eq!(
                Dialect::V2_3.start_stdin(&shim, &start_params(Some(&opts))),
                Some(opts.write_to_bytes().unwrap())
            );
        }
        // Only the base name counts.
        let shim = Path::new("/opt/shim-runc-v1/containerd-shim-runc-v2");
        assert!(Dialect::V2_3
            .start_stdin(shim, &start_params(None))
            .is_some());
    }

    fn result(version: i32, address: &str, protocol: &str) -> Vec<u8> {
        protobuf::Message::write_to_bytes(&bootstrap::BootstrapResult {
            version,
            address: address.into(),
            protocol: protocol.into(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn v2_3_reads_a_protobuf_result_first() {
        let d = Dialect::V2_3;
        assert_eq!(
            d.parse_start_bytes(&result(3, BARE, "ttrpc")),
            Ok((BARE.into(), TaskApi::V3))
        );
        assert_eq!(
            d.parse_start_bytes(&result(2, BARE, "TTRPC")),
            Ok((BARE.into(), TaskApi::V2))
        );
        let e = d.parse_start_bytes(&result(4, BARE, "ttrpc")).unwrap_err();
        assert_eq!(e, AddressError::UnsupportedTaskClient { version: 4 });
        assert_eq!(
            e.to_string(),
            "containerd client supports only v2 and v3 TTRPC task client (got 4)"
        );
        // No version at all (0) is refused the same way.
        assert_eq!(
            d.parse_start_bytes(&result(0, BARE, "ttrpc")),
            Err(AddressError::UnsupportedTaskClient { version: 0 })
        );
        let e = d.parse_start_bytes(&result(3, BARE, "")).unwrap_err();
        assert_eq!(e.to_string(), r#"unexpected protocol: """#);
        assert!(matches!(
            d.parse_start_bytes(&result(3, BARE, "grpc")),
            Err(AddressError::UnsupportedProtocol { .. })
        ));
        assert!(matches!(
            d.parse_start_bytes(&result(3, "two words", "ttrpc")),
            Err(AddressError::NotAnAddress { .. })
        ));
    }

    #[test]
    fn v2_3_falls_back_to_json_then_to_a_bare_address() {
        let d = Dialect::V2_3;
        assert_eq!(
            d.parse_start_bytes(BARE.as_bytes()),
            Ok((BARE.into(), TaskApi::V2))
        );
        assert_eq!(
            d.parse_start_bytes(format!("{BARE}\n").as_bytes()),
            Ok((BARE.into(), TaskApi::V2))
        );
        assert_eq!(
            d.parse_start_bytes(J2.as_bytes()),
            Ok((BARE.into(), TaskApi::V2))
        );
        assert_eq!(
            d.parse_start_bytes(J3.as_bytes()),
            Ok((BARE.into(), TaskApi::V3))
        );
        let e = d
            .parse_start_bytes(br#"{"version":4,"address":"unix:///x"}"#)
            .unwrap_err();
        assert_eq!(e, AddressError::UnsupportedVersion { version: 4 });
        assert!(e.to_string().starts_with("unsupported shim version (4)"));
        let j1 = r#"{"version":1,"address":"unix:///x"}"#;
        assert_eq!(
            d.parse_start_bytes(j1.as_bytes()),
            Ok((j1.into(), TaskApi::V2))
        );
        assert_eq!(d.parse_start_bytes(b""), Err(AddressError::Empty));
    }

    #[test]
    fn v2_3_says_which_reading_failed() {
        let e = Dialect::V2_3
            .parse_start_bytes(b"time=\"x\" level=info msg=hello\nunix:///run/x")
            .unwrap_err();
        let AddressError::Unreadable { protobuf, json, .. } = &e else {
            panic!("{e:?}");
        };
        assert!(!protobuf.is_empty());
        assert!(json.starts_with("not JSON"), "{json}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("start output is neither a protobuf BootstrapResult ("),
            "{msg}"
        );
        assert!(msg.contains("nor a JSON bootstrap (not JSON"), "{msg}");
        // A protobuf answer followed by a newline no longer decodes (the last byte, 0x0a, is a
        // field-1 tag without its length), and is not text either: containerd 2.3 refuses it.
        let mut nl = result(3, BARE, "ttrpc");
        nl.push(b'\n');
        assert!(matches!(
            Dialect::V2_3.parse_start_bytes(&nl),
            Err(AddressError::Unreadable { .. })
        ));
    }

    #[test]
    fn older_dialects_read_bytes_as_trimmed_text() {
        for d in [Dialect::V1_6, Dialect::V1_7, Dialect::V2_0] {
            for out in [BARE, J2, J3, "", "a b"] {
                let padded = format!("  {out}\n");
                assert_eq!(
                    d.parse_start_bytes(padded.as_bytes()),
                    d.parse_start_output(out),
                    "{d} {out}"
                );
            }
            // A protobuf answer is dialed as text: never an address.
            assert!(
                d.parse_start_bytes(&result(3, BARE, "ttrpc")).is_err(),
                "{d}"
            );
        }
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
