//! Reading the OCI spec: the bundle's `config.json` and an exec's JSON `Process`, into what the
//! shim needs to run a host process (argv, env, cwd, user, rlimits, no_new_privs, terminal).

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Process;

use crate::error::{Error, Result};

/// Annotation naming the shim group (several containers served by one shim).
pub const GROUP_ANNOTATION: &str = "io.containerd.reaper.v2.group";
/// CRI's sandbox annotation, the second choice for the group.
pub const SANDBOX_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";
/// CRI's container-type annotation: `sandbox` for a pod's pause container.
pub const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";

/// Whether the spec is a CRI pod sandbox (its `/pause` lives in an image the host lacks, so the
/// shim runs its own built-in pause instead).
pub fn is_sandbox(annotations: &HashMap<String, String>) -> bool {
    annotations
        .get(CONTAINER_TYPE_ANNOTATION)
        .map(String::as_str)
        == Some("sandbox")
}

/// One resource limit: the libc resource number and its soft/hard values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// `RLIMIT_*` number.
    pub resource: i32,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// Everything needed to start one host process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// argv; never empty.
    pub args: Vec<String>,
    /// Exactly the spec's environment (`K=V`).
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Resource limits applied before exec.
    pub rlimits: Vec<Rlimit>,
    /// `noNewPrivileges`.
    pub no_new_privileges: bool,
    /// `terminal`.
    pub terminal: bool,
}

/// The parts of `config.json` the shim uses.
#[derive(Debug, Clone)]
pub struct BundleSpec {
    /// The init process.
    pub process: ProcessSpec,
    /// `annotations`.
    pub annotations: HashMap<String, String>,
}

/// The largest `config.json` or exec spec accepted (ttrpc's own message limit, 4 MiB).
pub const MAX_SPEC_BYTES: usize = 4 << 20;
/// The deepest JSON nesting accepted: serde_json's recursion limit.
pub const MAX_SPEC_DEPTH: usize = 128;

fn json_error(source: &str, e: &serde_json::Error) -> Error {
    let limit = if e.to_string().starts_with("recursion limit exceeded") {
        format!(" (nested deeper than the limit of {MAX_SPEC_DEPTH} levels)")
    } else {
        String::new()
    };
    Error::InvalidArgument(format!("{source}:{}:{}: {e}{limit}", e.line(), e.column()))
}

fn check_size(len: usize, source: &str) -> Result<()> {
    if len > MAX_SPEC_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{source}: {len} bytes is over the size limit of {MAX_SPEC_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Loads `<bundle>/config.json` (at most [`MAX_SPEC_BYTES`] are read; anything but a regular
/// file, such as a FIFO that would block the open, is refused).
pub fn load_bundle(bundle: &Path) -> Result<BundleSpec> {
    use std::io::Read;
    let path = bundle.join("config.json");
    let source = path.display().to_string();
    let cannot = |e: std::io::Error| Error::InvalidArgument(format!("cannot read {source}: {e}"));
    if !std::fs::metadata(&path).map_err(cannot)?.is_file() {
        return Err(Error::InvalidArgument(format!(
            "{source}: not a regular file"
        )));
    }
    let file = std::fs::File::open(&path).map_err(cannot)?;
    let len = file.metadata().map_err(cannot)?.len();
    check_size(usize::try_from(len).unwrap_or(usize::MAX), &source)?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(MAX_SPEC_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    parse_config(&bytes, &source)
}

/// Parses the text of a `config.json`; `source` names it in errors. Over [`MAX_SPEC_BYTES`] or
/// nested deeper than [`MAX_SPEC_DEPTH`] is an InvalidArgument naming the limit.
pub fn parse_config(bytes: &[u8], source: &str) -> Result<BundleSpec> {
    check_size(bytes.len(), source)?;
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| json_error(source, &e))?;
    let obj = v
        .as_object()
        .ok_or_else(|| Error::InvalidArgument(format!("{source}: not a JSON object")))?;
    let process = obj
        .get("process")
        .ok_or_else(|| Error::InvalidArgument(format!("{source}: field `process` is missing")))?;
    let process = process_from_value(process.clone(), source, "process")?;
    let mut annotations = HashMap::new();
    if let Some(a) = obj.get("annotations") {
        let a = a.as_object().ok_or_else(|| {
            Error::InvalidArgument(format!("{source}: field `annotations` is not an object"))
        })?;
        for (k, v) in a {
            if let Some(s) = v.as_str() {
                annotations.insert(k.clone(), s.to_string());
            }
        }
    }
    Ok(BundleSpec {
        process,
        annotations,
    })
}

/// Parses an exec's JSON OCI `Process` (the `spec` Any value of ExecProcessRequest), with the
/// same size and depth limits as [`parse_config`].
pub fn parse_process(bytes: &[u8], source: &str) -> Result<ProcessSpec> {
    check_size(bytes.len(), source)?;
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| json_error(source, &e))?;
    process_from_value(v, source, "process")
}

fn process_from_value(v: serde_json::Value, source: &str, field: &str) -> Result<ProcessSpec> {
    let p: Process = serde_json::from_value(v)
        .map_err(|e| Error::InvalidArgument(format!("{source}: field `{field}`: {e}")))?;
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{source}: field `{field}.args` is empty"
        )));
    }
    let mut rlimits = Vec::new();
    for r in p.rlimits().clone().unwrap_or_default() {
        let name = r.typ().to_string();
        let resource = rlimit_number(&name).ok_or_else(|| {
            Error::InvalidArgument(format!("{source}: field `{field}.rlimits`: unknown {name}"))
        })?;
        rlimits.push(Rlimit {
            resource,
            soft: r.soft(),
            hard: r.hard(),
        });
    }
    let user = p.user();
    Ok(ProcessSpec {
        args,
        env: p.env().clone().unwrap_or_default(),
        cwd: if p.cwd().as_os_str().is_empty() {
            PathBuf::from("/")
        } else {
            p.cwd().clone()
        },
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        rlimits,
        no_new_privileges: p.no_new_privileges().unwrap_or(false),
        terminal: p.terminal().unwrap_or(false),
    })
}

fn rlimit_number(name: &str) -> Option<i32> {
    let n = match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    };
    Some(n as i32)
}

/// The shim group of a container: the group annotation, else CRI's sandbox id, else the id.
pub fn group_of(annotations: &HashMap<String, String>, id: &str) -> String {
    annotations
        .get(GROUP_ANNOTATION)
        .or_else(|| annotations.get(SANDBOX_ANNOTATION))
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| id.to_string())
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Resolves `args[0]` like execvp would, on the spec's own `PATH` (default
/// `/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`); a relative path with a
/// slash is taken relative to `cwd`. A missing program is InvalidArgument naming it.
pub fn resolve_program(spec: &ProcessSpec) -> Result<PathBuf> {
    let prog = &spec.args[0];
    if prog.contains('/') {
        let p = if prog.starts_with('/') {
            PathBuf::from(prog)
        } else {
            spec.cwd.join(prog)
        };
        if is_executable(&p) {
            return Ok(p);
        }
        return Err(Error::InvalidArgument(format!(
            "executable {prog:?} not found or not executable: no such file or directory"
        )));
    }
    let path = spec
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(dir).join(prog);
        if is_executable(&p) {
            return Ok(p);
        }
    }
    Err(Error::InvalidArgument(format!(
        "executable {prog:?} not found in $PATH ({path})"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"ociVersion":"1.0.2","process":{"args":["sh","-c","true"],
        "env":["PATH=/bin","A=1"],"cwd":"/tmp","user":{"uid":1,"gid":2,"additionalGids":[3]},
        "rlimits":[{"type":"RLIMIT_NOFILE","soft":100,"hard":200}],"noNewPrivileges":true,
        "terminal":true},"annotations":{"io.kubernetes.cri.sandbox-id":"sb"}}"#;

    #[test]
    fn parses_a_full_process() {
        let b = parse_config(GOOD.as_bytes(), "config.json").unwrap();
        let p = b.process;
        assert_eq!(p.args, ["sh", "-c", "true"]);
        assert_eq!(p.env, ["PATH=/bin", "A=1"]);
        assert_eq!(p.cwd, Path::new("/tmp"));
        assert_eq!((p.uid, p.gid, p.additional_gids.clone()), (1, 2, vec![3]));
        assert_eq!(
            p.rlimits,
            [Rlimit {
                resource: libc::RLIMIT_NOFILE as i32,
                soft: 100,
                hard: 200
            }]
        );
        assert!(p.no_new_privileges && p.terminal);
        assert_eq!(group_of(&b.annotations, "c1"), "sb");
    }

    #[test]
    fn bad_json_is_invalid_argument_with_line_and_column() {
        let e = parse_config(b"{\n  \"process\": ,\n}", "config.json").unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
        assert!(e.to_string().contains("config.json:2:"), "{e}");
    }

    #[test]
    fn missing_process_names_the_field() {
        let e = parse_config(br#"{"ociVersion":"1.0.2"}"#, "config.json").unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
        assert!(e.to_string().contains("`process`"), "{e}");
    }

    #[test]
    fn empty_args_names_the_field() {
        let cfg = r#"{"process":{"args":[],"cwd":"/","user":{"uid":0,"gid":0}}}"#;
        let e = parse_config(cfg.as_bytes(), "config.json").unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
        assert!(e.to_string().contains("`process.args`"), "{e}");
        let e = parse_process(br#"{"cwd":"/","user":{"uid":0,"gid":0}}"#, "exec e1").unwrap_err();
        assert!(e.to_string().contains("`process.args`"), "{e}");
    }

    #[test]
    fn oversized_specs_name_the_size_limit() {
        let big = format!(
            r#"{{"process":{{"args":["true"],"env":["A={}"]}}}}"#,
            "x".repeat(MAX_SPEC_BYTES)
        );
        for e in [
            parse_config(big.as_bytes(), "config.json").unwrap_err(),
            parse_process(big.as_bytes(), "exec e1 spec").unwrap_err(),
        ] {
            assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
            assert!(
                e.to_string()
                    .contains(&format!("limit of {MAX_SPEC_BYTES} bytes")),
                "{e}"
            );
        }
    }

    #[test]
    fn config_json_must_be_a_regular_file_under_the_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let cfg = dir.join("config.json");
        // A FIFO would block the open forever.
        nix::unistd::mkfifo(&cfg, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = load_bundle(dir).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        // A symlink to an endless device: stat says not a regular file either.
        std::fs::remove_file(&cfg).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &cfg).unwrap();
        let e = load_bundle(dir).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        std::fs::remove_file(&cfg).unwrap();
        std::fs::write(&cfg, vec![b' '; MAX_SPEC_BYTES + 1]).unwrap();
        let e = load_bundle(dir).unwrap_err();
        assert!(e.to_string().contains("size limit"), "{e}");
    }

    #[test]
    fn deep_nesting_names_the_depth_limit() {
        let deep = format!(
            r#"{{"process":{{"args":["true"]}},"annotations":{{"a":{}{}}}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let e = parse_config(deep.as_bytes(), "config.json").unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
        assert!(e.to_string().contains("limit of 128 levels"), "{e}");
        let e = parse_process(deep.as_bytes(), "exec e1 spec").unwrap_err();
        assert!(e.to_string().contains("limit of 128 levels"), "{e}");
        // Just under the limit still parses (the limit is serde_json's, not ours to lower).
        let ok = format!(
            r#"{{"process":{{"args":["true"],"cwd":"/","user":{{"uid":0,"gid":0}}}},
                "annotations":{{"a":{}{}}}}}"#,
            "[".repeat(MAX_SPEC_DEPTH - 3),
            "]".repeat(MAX_SPEC_DEPTH - 3)
        );
        parse_config(ok.as_bytes(), "config.json").unwrap();
    }

    #[test]
    fn group_prefers_reaper_annotation_then_id() {
        let mut a = HashMap::new();
        assert_eq!(group_of(&a, "c1"), "c1");
        a.insert(SANDBOX_ANNOTATION.to_string(), "sb".to_string());
        a.insert(GROUP_ANNOTATION.to_string(), "g".to_string());
        assert_eq!(group_of(&a, "c1"), "g");
    }

    #[test]
    fn resolves_on_the_spec_path_only() {
        let mut p = parse_config(GOOD.as_bytes(), "c").unwrap().process;
        assert_eq!(resolve_program(&p).unwrap(), Path::new("/bin/sh"));
        p.args[0] = "no-such-program-xyz".into();
        let e = resolve_program(&p).unwrap_err();
        assert!(e.to_string().contains("no-such-program-xyz"), "{e}");
        p.env = vec!["PATH=/nonexistent".into()];
        p.args[0] = "sh".into();
        assert!(resolve_program(&p).is_err());
    }
}
