//! Shim socket addresses as containerd forms and reads them: the 2.3 `socket_dir` check and
//! default, the path and `/proc/net/unix` name of an address, and the form the ttrpc client dials.

use std::path::Path;

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
