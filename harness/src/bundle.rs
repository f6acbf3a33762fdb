//! Per-container bundle directories as containerd lays them out (doc 2.3): `config.json` with
//! containerd's default Linux spec and the caller's process, an empty `rootfs/` mountpoint, and
//! optionally a busybox root filesystem outside the bundle referenced by an absolute `root.path`
//! (as `ctr run --rootfs` does).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilities, LinuxDeviceCgroup, LinuxNamespaceType,
    LinuxResources, Mount, Process, Root, Spec,
};

use crate::error::HarnessError;
use crate::events::validate_identifier;

/// The host's static busybox, the only source of the test root filesystem.
pub const BUSYBOX: &str = "/bin/busybox";

/// Applets linked into the busybox rootfs.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "ash", "echo", "cat", "sleep", "true", "false", "kill", "ps", "ls", "env", "id", "pwd",
    "wc", "head", "tail", "grep", "yes", "printf", "test", "[", "mkdir", "rm", "touch", "date",
    "hostname", "stty", "tty", "dd", "seq", "sync", "uname", "wait", "trap", "exit", "nproc",
];

/// What root filesystem a bundle gets (also the `--rootfs` value of every subcommand).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RootfsKind {
    /// A busybox rootfs: works for isolating shims (runc) and host shims alike (the host's
    /// static busybox and applet symlinks, `root.path` absolute).
    Busybox,
    /// An empty rootfs, the bundle's `rootfs/`: enough for shims that run the process on the
    /// host.
    #[default]
    None,
}

impl RootfsKind {
    /// `busybox` or `none`, as on the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            RootfsKind::Busybox => "busybox",
            RootfsKind::None => "none",
        }
    }
}

/// How to build a bundle.
#[derive(Debug, Clone, Default)]
pub struct BundleOptions {
    /// The root filesystem.
    pub rootfs: RootfsKind,
    /// Annotations put into the spec (e.g. `io.kubernetes.cri.sandbox-id` for grouping).
    pub annotations: BTreeMap<String, String>,
}

/// A bundle directory; dropping it removes the directory (and its work directory and busybox
/// rootfs).
#[derive(Debug)]
pub struct Bundle {
    dir: PathBuf,
    rootfs_dir: Option<PathBuf>,
    work_dir: PathBuf,
    id: String,
    spec: Spec,
    namespace: String,
}

/// containerd's default spec (`oci.populateDefaultUnixSpec`) for `ns`/`id` with `process`.
pub fn default_spec(ns: &str, id: &str, process: Process) -> Spec {
    let mut spec = Spec::default();
    spec.set_hostname(None);
    spec.set_mounts(Some(default_mounts()));
    spec.set_process(Some(process));
    let mut root = Root::default();
    root.set_path(PathBuf::from("rootfs"));
    root.set_readonly(Some(false));
    spec.set_root(Some(root));
    if let Some(linux) = spec.linux_mut() {
        // containerd: pid, ipc, uts, mount, network (no cgroup namespace by default).
        if let Some(nss) = linux.namespaces_mut() {
            nss.retain(|n| n.typ() != LinuxNamespaceType::Cgroup);
        }
        linux.set_cgroups_path(Some(PathBuf::from(format!("/{ns}/{id}"))));
        let mut deny_all = LinuxDeviceCgroup::default();
        deny_all.set_allow(false);
        deny_all.set_access(Some("rwm".to_string()));
        let mut res = LinuxResources::default();
        res.set_devices(Some(vec![deny_all]));
        linux.set_resources(Some(res));
    }
    spec
}

/// containerd's default mounts (`oci.defaultMounts`): no cgroup mount, a `/run` tmpfs.
pub fn default_mounts() -> Vec<Mount> {
    let m = |dest: &str, typ: &str, src: &str, opts: &[&str]| {
        let mut mount = Mount::default();
        mount.set_destination(PathBuf::from(dest));
        mount.set_typ(Some(typ.to_string()));
        mount.set_source(Some(PathBuf::from(src)));
        mount.set_options(Some(opts.iter().map(|o| o.to_string()).collect()));
        mount
    };
    vec![
        m("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        m(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        m(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        m(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        m(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        m(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        m(
            "/run",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
    ]
}

/// containerd's default capability set (`oci.defaultUnixCaps`).
pub fn default_capabilities() -> LinuxCapabilities {
    let set: Capabilities = [
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fsetid,
        Capability::Fowner,
        Capability::Mknod,
        Capability::NetRaw,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setfcap,
        Capability::Setpcap,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::Kill,
        Capability::AuditWrite,
    ]
    .into_iter()
    .collect();
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(set.clone()));
    caps.set_permitted(Some(set.clone()));
    caps.set_effective(Some(set));
    // No inheritable/ambient set since containerd 1.6.1 (CVE-2022-24769).
    caps.set_inheritable(None);
    caps.set_ambient(None);
    caps
}

/// A process spec running `args` as containerd's default process does: uid 0, cwd `/`,
/// no-new-privileges, containerd's capabilities, RLIMIT_NOFILE 1024, PATH only.
pub fn process(args: &[&str]) -> Process {
    let mut p = Process::default();
    p.set_capabilities(Some(default_capabilities()));
    p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    p.set_env(Some(vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
    ]));
    p
}

impl Bundle {
    /// Creates `<parent>/<id>` with `config.json` and `rootfs/`, in the `default` namespace.
    pub fn create(
        parent: &Path,
        id: &str,
        process: Process,
        opts: BundleOptions,
    ) -> Result<Bundle, HarnessError> {
        Self::create_in_namespace(parent, "default", id, process, opts)
    }

    /// As [`Bundle::create`], with the namespace used for the spec's cgroups path.
    pub fn create_in_namespace(
        parent: &Path,
        ns: &str,
        id: &str,
        process: Process,
        opts: BundleOptions,
    ) -> Result<Bundle, HarnessError> {
        validate_identifier(id).map_err(|m| HarnessError::Invalid {
            field: "container id".into(),
            message: m,
        })?;
        let parent = std::path::absolute(parent)
            .map_err(|e| HarnessError::io(format!("resolving {}", parent.display()), e))?;
        let dir = parent.join(id);
        std::fs::create_dir_all(&parent)
            .map_err(|e| HarnessError::io(format!("creating {}", parent.display()), e))?;
        std::fs::create_dir(&dir)
            .map_err(|e| HarnessError::io(format!("creating bundle {}", dir.display()), e))?;
        let work = parent.join(format!("{id}.work"));
        let mut bundle = Bundle {
            dir: dir.clone(),
            rootfs_dir: None,
            work_dir: work.clone(),
            id: id.to_string(),
            spec: Spec::default(),
            namespace: ns.to_string(),
        };
        std::fs::create_dir(dir.join("rootfs"))
            .map_err(|e| HarnessError::io(format!("creating {}/rootfs", dir.display()), e))?;
        // containerd gives every bundle a `work` symlink to a directory of its own under its
        // root (runtime/v2/bundle.go:100, v1.6.20; the same in 1.7.24 and 2.1.9).
        std::fs::create_dir(&work)
            .and_then(|()| std::os::unix::fs::symlink(&work, dir.join("work")))
            .map_err(|e| HarnessError::io(format!("creating {}/work", dir.display()), e))?;
        let mut spec = default_spec(ns, id, process);
        if opts.rootfs == RootfsKind::Busybox {
            let rf = parent.join(format!("{id}.rootfs"));
            bundle.rootfs_dir = Some(rf.clone());
            build_busybox_rootfs(&rf)?;
            let mut root = Root::default();
            root.set_path(rf);
            root.set_readonly(Some(false));
            spec.set_root(Some(root));
        }
        if !opts.annotations.is_empty() {
            spec.set_annotations(Some(opts.annotations.clone().into_iter().collect()));
        }
        let cfg = dir.join("config.json");
        let text = serde_json::to_vec_pretty(&spec).map_err(|e| HarnessError::Spec {
            id: id.to_string(),
            message: e.to_string(),
        })?;
        std::fs::write(&cfg, text)
            .map_err(|e| HarnessError::io(format!("writing {}", cfg.display()), e))?;
        bundle.spec = spec;
        Ok(bundle)
    }

    /// The bundle directory (absolute).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The namespace the spec was built for.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The spec written to `config.json`.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The busybox root filesystem directory, if any.
    pub fn rootfs_dir(&self) -> Option<&Path> {
        self.rootfs_dir.as_deref()
    }

    /// Replaces the spec's process and rewrites `config.json`: the same bundle then runs another
    /// program (a test that creates several tasks from one bundle, or changes the environment,
    /// working directory or terminal of its process).
    pub fn set_process(&mut self, process: Process) -> Result<(), HarnessError> {
        self.spec.set_process(Some(process));
        let cfg = self.dir.join("config.json");
        let text = serde_json::to_vec_pretty(&self.spec).map_err(|e| HarnessError::Spec {
            id: self.id.clone(),
            message: e.to_string(),
        })?;
        std::fs::write(&cfg, text)
            .map_err(|e| HarnessError::io(format!("writing {}", cfg.display()), e))
    }

    /// A `CreateTaskRequest` for this bundle with the given stdio paths (as containerd sends it:
    /// no rootfs mounts since `root.path` is set, options only when given).
    pub fn create_request(
        &self,
        stdio: (String, String, String),
        terminal: bool,
        options: Option<protobuf::well_known_types::any::Any>,
    ) -> containerd_shim_protos::api::CreateTaskRequest {
        containerd_shim_protos::api::CreateTaskRequest {
            id: self.id.clone(),
            bundle: self.dir.display().to_string(),
            terminal,
            stdin: stdio.0,
            stdout: stdio.1,
            stderr: stdio.2,
            options: options.into(),
            ..Default::default()
        }
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let dirs = [&self.dir, &self.work_dir].into_iter();
        for d in dirs.chain(self.rootfs_dir.iter()) {
            // Never recurse into something still mounted (a shim that did not unmount rootfs).
            for m in crate::leaks::mounts_under(d).into_iter().rev() {
                let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
            }
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Builds a busybox rootfs at `dir`: `bin/busybox` copied from the host plus applet symlinks in
/// `bin/`, and empty mountpoint directories.
pub fn build_busybox_rootfs(dir: &Path) -> Result<(), HarnessError> {
    if !Path::new(BUSYBOX).is_file() {
        return Err(HarnessError::Prerequisite {
            what: BUSYBOX.into(),
            hint: "run ci/setup.sh (apt-get install busybox-static)".into(),
        });
    }
    let io = |what: String| move |e| HarnessError::io(what, e);
    for sub in ["bin", "proc", "dev", "sys", "tmp", "etc", "root", "run"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).map_err(io(format!("creating {}", p.display())))?;
    }
    let bb = dir.join("bin/busybox");
    std::fs::copy(BUSYBOX, &bb).map_err(io(format!("copying {BUSYBOX} to {}", bb.display())))?;
    for a in BUSYBOX_APPLETS {
        let l = dir.join("bin").join(a);
        std::os::unix::fs::symlink("busybox", &l)
            .map_err(io(format!("linking {}", l.display())))?;
    }
    for (name, text) in [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("etc/group", "root:x:0:\n"),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(io(format!("writing {}", p.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_has_default_spec_with_process_and_is_removed_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let b = Bundle::create(
            tmp.path(),
            "c1",
            process(&["sh", "-c", "exit 3"]),
            BundleOptions::default(),
        )
        .unwrap();
        let text = std::fs::read_to_string(b.path().join("config.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["process"]["args"][2], "exit 3");
        assert_eq!(v["root"]["path"], "rootfs");
        assert_eq!(v["linux"]["cgroupsPath"], "/default/c1");
        let nss: Vec<_> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap().to_string())
            .collect();
        assert!(nss.contains(&"pid".to_string()) && !nss.contains(&"cgroup".to_string()));
        assert!(b.path().join("rootfs").is_dir());
        let mounts: Vec<_> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap().to_string())
            .collect();
        assert!(
            mounts.contains(&"/run".to_string()) && !mounts.iter().any(|m| m.contains("cgroup"))
        );
        let caps = v["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert_eq!(caps.len(), 14);
        assert!(v["process"]["capabilities"].get("inheritable").is_none());
        let p = b.path().to_path_buf();
        drop(b);
        assert!(!p.exists());
    }

    #[test]
    fn busybox_rootfs_is_absolute_and_runnable() {
        let tmp = tempfile::tempdir().unwrap();
        let b = Bundle::create(
            tmp.path(),
            "bb",
            process(&["true"]),
            BundleOptions {
                rootfs: RootfsKind::Busybox,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e} (run ci/setup.sh)"));
        let root = b.spec().root().as_ref().unwrap().path().clone();
        assert!(root.is_absolute());
        let out = std::process::Command::new(root.join("bin/sh"))
            .args(["-c", "echo ok"])
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"ok\n");
    }

    #[test]
    fn set_process_rewrites_config_json() {
        let tmp = tempfile::tempdir().unwrap();
        let mut b =
            Bundle::create(tmp.path(), "c2", process(&["true"]), Default::default()).unwrap();
        let mut p = process(&["sh", "-c", "exit 4"]);
        p.set_cwd("/tmp".into());
        b.set_process(p).unwrap();
        let text = std::fs::read_to_string(b.path().join("config.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["process"]["args"][2], "exit 4");
        assert_eq!(v["process"]["cwd"], "/tmp");
        assert_eq!(v["linux"]["cgroupsPath"], "/default/c2", "the rest is kept");
        let args = b.spec().process().as_ref().unwrap().args().clone();
        assert_eq!(args.unwrap()[0], "sh");
    }

    #[test]
    fn bad_ids_are_refused_with_the_field_named() {
        let tmp = tempfile::tempdir().unwrap();
        let e =
            Bundle::create(tmp.path(), "../x", process(&["true"]), Default::default()).unwrap_err();
        assert!(e.to_string().contains("container id"), "{e}");
    }
}
