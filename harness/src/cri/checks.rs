//! What the CRI smoke test checks, apart from the calls: the kubelet's log format, exit codes
//! and reasons, the pid in a verbose status, and the cgroups a pod may leave behind.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use k8s_cri::v1 as cri;

/// What the first container prints on each stream, and its exit code.
pub(super) const ECHO_OUT: &str = "hello from the cri smoke test";
pub(super) const ECHO_ERR: &str = "to stderr from the cri smoke test";
pub(super) const ECHO_CODE: i32 = 3;
/// What the ExecSync prints, and its exit code.
pub(super) const EXEC_OUT: &str = "exec output";
pub(super) const EXEC_CODE: i32 = 7;

/// Cgroup directories (down to `depth` levels) named by one of `ids`: runc's `/k8s.io/<id>`,
/// the reaper's `reaper/k8s.io/<id>`, under each v1 controller or the v2 root.
pub(super) fn cgroups_named(dir: &Path, ids: &[String], depth: u32) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = e.path();
        if ids
            .iter()
            .any(|id| e.file_name().to_str() == Some(id.as_str()))
        {
            found.push(format!("cgroup {}", path.display()));
        } else if depth > 1 {
            found.extend(cgroups_named(&path, ids, depth - 1));
        }
    }
    found
}

/// The first 12 characters of an id, as `crictl` shows them.
pub(super) fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// The pid in a verbose status's `info` JSON (containerd's `ContainerInfo`).
pub(super) fn info_pid(info: &HashMap<String, String>) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    v.get("pid")?.as_u64().and_then(|p| u32::try_from(p).ok())
}

pub(super) fn check_exit(
    s: &cri::ContainerStatus,
    code: i32,
    reason: &str,
) -> Result<((), String)> {
    if s.exit_code != code || s.reason != reason {
        bail!(
            "exit code {} reason {:?} (expected {code} and {reason:?}), message {:?}",
            s.exit_code,
            s.reason,
            s.message
        );
    }
    Ok((
        (),
        format!("CONTAINER_EXITED, exit code {code}, reason {reason}"),
    ))
}

/// Checks the kubelet's log format (`<RFC 3339 nano> <stdout|stderr> <F|P> <text>`, as the CRI
/// plugin writes it: `internal/cri/io/logger.go` at v2.1.9) and that both expected lines are
/// there; the number of lines.
pub(super) fn check_log(text: &str) -> Result<usize> {
    let mut seen = (false, false);
    for (n, line) in text.lines().enumerate() {
        let mut f = line.splitn(4, ' ');
        let (time, stream, tag, msg) = (f.next(), f.next(), f.next(), f.next());
        let (Some(time), Some(stream), Some(tag), Some(msg)) = (time, stream, tag, msg) else {
            bail!(
                "line {}: {line:?} is not `<time> <stream> <tag> <text>`",
                n + 1
            );
        };
        humantime::parse_rfc3339(time).with_context(|| format!("line {}: time {time:?}", n + 1))?;
        if !matches!(tag, "F" | "P") {
            bail!("line {}: tag {tag:?} (F or P expected)", n + 1);
        }
        match (stream, msg) {
            ("stdout", ECHO_OUT) => seen.0 = true,
            ("stderr", ECHO_ERR) => seen.1 = true,
            ("stdout" | "stderr", _) => {}
            _ => bail!("line {}: stream {stream:?}", n + 1),
        }
    }
    if !(seen.0 && seen.1) {
        bail!("expected `stdout F {ECHO_OUT}` and `stderr F {ECHO_ERR}`");
    }
    Ok(text.lines().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelet_log_format_is_checked_line_by_line() {
        let good = format!(
            "2026-12-04T23:30:00.123456789Z stdout F {ECHO_OUT}\n2026-12-04T23:30:00.2Z stderr F {ECHO_ERR}\n"
        );
        assert_eq!(check_log(&good).unwrap(), 2);
        let raw = format!("{ECHO_OUT}\n{ECHO_ERR}\n");
        assert!(check_log(&raw).is_err());
        let no_err = format!("2026-12-04T23:30:00Z stdout F {ECHO_OUT}\n");
        assert!(format!("{:#}", check_log(&no_err).unwrap_err()).contains("stderr F"));
        let bad_time = format!("yesterday stdout F {ECHO_OUT}\n");
        assert!(format!("{:#}", check_log(&bad_time).unwrap_err()).contains("line 1: time"));
    }

    #[test]
    fn the_pid_comes_from_the_verbose_info() {
        let info = HashMap::from([("info".to_string(), r#"{"pid": 4242}"#.to_string())]);
        assert_eq!(info_pid(&info), Some(4242));
        assert_eq!(info_pid(&HashMap::new()), None);
    }
}
