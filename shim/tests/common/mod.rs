//! Test fixture for driving a shim through a PRIVATE real containerd 1.6, 1.7 or 2.1 ([`Version`]):
//! the daemon (own root, state, sockets and config in a temp dir, the built shim first on its
//! PATH), bounded invocations of that version's own `ctr`, background `ctr` processes, and the
//! leak checks (shim processes, sockets under /run/containerd/s, task processes, zombies,
//! cgroups). Everything started here is stopped by pid and removed in `Drop`, also when a test
//! fails.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

/// Where shims put their sockets, whatever containerd's `--state` is: `<DefaultStateDir>/s` in
/// containerd's shim library of every version we run (`runtime/v2/shim/util_unix.go`
/// `SocketAddress` at v1.6.20 and v1.7.24, `pkg/shim/util_unix.go` at v2.1.9); the reaper hashes
/// the same way.
pub const SOCKET_DIR: &str = "/run/containerd/s";
/// Default bound for one `ctr` call.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(20);

/// The runtime under test: the reaper (default); to validate this fixture itself, Debian's
/// `containerd-shim-runc-v2` with a busybox rootfs (`REAPER_CTD_RUNTIME=runc`) or the reaper with
/// deliberate bugs (`REAPER_CTD_RUNTIME=faulty FAULTY_SHIM=<faults>`: the tests must fail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// `io.containerd.reaper.v2`, our shim from target/debug.
    Reaper,
    /// `io.containerd.runc.v2`, Debian's Go shim (fixture validation only).
    Runc,
    /// `io.containerd.faulty.v2`, the reaper with the bugs named by `FAULTY_SHIM` (which
    /// containerd passes on to the shim with the rest of its environment).
    Faulty,
}

impl Runtime {
    /// The runtime selected by `REAPER_CTD_RUNTIME` (`reaper` when unset).
    pub fn from_env() -> Runtime {
        match std::env::var("REAPER_CTD_RUNTIME").as_deref() {
            Ok("runc") => Runtime::Runc,
            Ok("faulty") => Runtime::Faulty,
            Ok("reaper") | Err(_) => Runtime::Reaper,
            Ok(other) => {
                panic!("REAPER_CTD_RUNTIME={other:?}: expected `reaper`, `runc` or `faulty`")
            }
        }
    }

    /// The containerd runtime name.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Reaper => "io.containerd.reaper.v2",
            Runtime::Runc => "io.containerd.runc.v2",
            Runtime::Faulty => "io.containerd.faulty.v2",
        }
    }
}

/// A real containerd release the tests run against: 1.6 is the system's (Debian bookworm,
/// /usr/bin); 1.7 and 2.1 are Debian trixie's and sid's packages, unpacked (never installed) by
/// `ci/setup.sh` (`ci/containerd-versions.sh`) into `target/containerd/<release>/usr/bin`. Each
/// runs with its own `ctr` and, for `REAPER_CTD_RUNTIME=runc`, its own `containerd-shim-runc-v2`
/// (runc itself stays bookworm's: sid's needs a newer glibc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// containerd 1.6.20, `/usr/bin` (Debian bookworm).
    V1_6,
    /// containerd 1.7.24 (Debian trixie `1.7.24~ds1-6+deb13u1`).
    V1_7,
    /// containerd 2.1.9 (Debian sid `2.1.9+ds1-5`).
    V2_1,
    /// containerd 2.3.4, built from its release source, in the project's `shared/containerd/2.3.4`
    /// beside the checkout (no Debian package has it yet).
    V2_3,
}

impl Version {
    /// The release, as `containerd --version` prints it.
    pub fn release(self) -> &'static str {
        match self {
            Version::V1_6 => "1.6.20",
            Version::V1_7 => "1.7.24",
            Version::V2_1 => "2.1.9",
            Version::V2_3 => "2.3.4",
        }
    }

    /// `v1_6`, `v1_7` or `v2_1`: the suffix of a test's namespace. (The test cases' names end in
    /// the variant's name instead, `containerd_3_V2_1`: `cargo test ... V2_1` runs one release.)
    pub fn slug(self) -> &'static str {
        match self {
            Version::V1_6 => "v1_6",
            Version::V1_7 => "v1_7",
            Version::V2_1 => "v2_1",
            Version::V2_3 => "v2_3",
        }
    }

    /// The harness's dialect (`--containerd-version`) that imitates this release.
    pub fn dialect(self) -> &'static str {
        match self {
            Version::V1_6 => "1.6",
            Version::V1_7 => "1.7",
            Version::V2_1 => "2.0",
            Version::V2_3 => "2.3",
        }
    }

    /// A 2.x daemon: config version 3, CRI split into several plugins, NRI on by default.
    pub fn is_2x(self) -> bool {
        self >= Version::V2_1
    }

    /// The directory holding this release's `containerd`, `ctr` and `containerd-shim-runc-v2`,
    /// checked once per test binary (the binaries exist and `containerd --version` names the
    /// release), or a failure naming the set-up command. Never a silent skip.
    pub fn bin_dir(self) -> PathBuf {
        use std::sync::OnceLock;
        static DIRS: [OnceLock<Result<PathBuf, String>>; 4] = [
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
        ];
        DIRS[self as usize]
            .get_or_init(|| self.find_bin_dir())
            .clone()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn find_bin_dir(self) -> Result<PathBuf, String> {
        let dir = match self {
            Version::V1_6 => which("containerd")
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .ok_or(
                    "`containerd` is not on PATH: run ci/setup.sh (apt-get install containerd)",
                )?,
            Version::V2_3 => {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/containerd/2.3.4")
            }
            _ => Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("the workspace holds shim/")
                .join("target/containerd")
                .join(self.release())
                .join("usr/bin"),
        };
        let setup = match self {
            Version::V1_6 => "Debian bookworm's `containerd` package (ci/setup.sh installs it)",
            Version::V2_3 => "the project's shared/containerd/2.3.4 beside the checkout (shared/containerd/README.md says how it is built)",
            _ => "ci/setup.sh (as root; it fetches it with ci/containerd-versions.sh)",
        };
        for bin in ["containerd", "ctr", "containerd-shim-runc-v2"] {
            if !dir.join(bin).is_file() {
                return Err(format!(
                    "containerd {}: {} is missing; run {setup}",
                    self.release(),
                    dir.join(bin).display()
                ));
            }
        }
        let out = Command::new(dir.join("containerd"))
            .arg("--version")
            .output()
            .map_err(|e| format!("{}/containerd --version: {e}", dir.display()))?;
        let shown = String::from_utf8_lossy(&out.stdout);
        // e.g. `containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3`
        // (2.3.4 built from source says `... containerd/v2 v2.3.4`.)
        let release = self.release();
        if !shown.contains(&format!(" {release}")) && !shown.contains(&format!(" v{release}")) {
            return Err(format!(
                "{}/containerd --version says {:?}, expected {}; run {setup}",
                dir.display(),
                shown.trim(),
                self.release()
            ));
        }
        Ok(dir)
    }

    /// This release's `containerd`.
    pub fn containerd(self) -> PathBuf {
        self.bin_dir().join("containerd")
    }

    /// This release's `ctr`.
    pub fn ctr(self) -> PathBuf {
        self.bin_dir().join("ctr")
    }
}

/// Makes `cmd` get SIGKILL when the spawning test thread dies (e.g. the test binary is killed by
/// a timeout), so no containerd or ctr of ours outlives it. Shims are reparented on purpose and
/// are ended by [`Daemon`]'s drop instead.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Fails with the set-up command when a host tool is missing.
pub fn require_tools(tools: &[&str]) {
    for tool in tools {
        assert!(
            which(tool).is_some(),
            "`{tool}` is not on PATH: run ci/setup.sh (apt-get install containerd runc busybox-static bsdutils)"
        );
    }
}

/// The first `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The outcome of a bounded command.
#[derive(Debug)]
pub struct Out {
    /// Exit status.
    pub status: ExitStatus,
    /// Captured stdout.
    pub stdout: String,
    /// Captured stderr.
    pub stderr: String,
}

impl Out {
    /// The exit code (signal deaths as 128+N, like a shell).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| 128 + self.status.signal().unwrap_or(0))
    }

    /// Panics with everything known unless the command exited 0.
    pub fn ok(self, what: &str) -> Out {
        assert!(self.status.success(), "{what} failed: {self:#?}");
        self
    }
}

/// Runs `cmd` in its own process group with `stdin` piped in, killing the group (by its pid) if
/// it outlives `timeout`.
pub fn run_bounded(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Out {
    let shown = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
    let pid = child.id() as i32;
    if let Some(data) = stdin {
        let mut w = child.stdin.take().expect("piped stdin");
        let data = data.to_vec();
        // A writer thread: the child may echo stdin to a stdout nobody drains yet. The program
        // may not read it all; a broken pipe is its business. The pipe closes when it is done.
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
        });
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let res = match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(_) => {
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
            let _ = rx.recv_timeout(Duration::from_secs(5));
            panic!("{shown} did not finish within {timeout:?}: killed its process group {pid}");
        }
    };
    let o = res.unwrap_or_else(|e| panic!("wait {shown}: {e}"));
    Out {
        status: o.status,
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A background process (its own process group) whose stdout and stderr go to files; killed by
/// pid and reaped on drop.
pub struct Bg {
    child: Option<Child>,
    what: String,
    /// File receiving stdout.
    pub stdout: PathBuf,
    /// File receiving stderr.
    pub stderr: PathBuf,
}

impl Bg {
    /// Spawns `cmd` with stdout/stderr to `<dir>/<name>.out|.err`.
    pub fn spawn(mut cmd: Command, dir: &Path, name: &str) -> Bg {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let what = format!("{cmd:?}");
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("create stdout file"))
            .stderr(fs::File::create(&stderr).expect("create stderr file"))
            .process_group(0);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        Bg {
            child: Some(child),
            what,
            stdout,
            stderr,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// What it has written to stdout so far.
    pub fn output(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What it has written to stderr so far.
    pub fn errors(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits (bounded) for it to exit; returns its status with stdout and stderr.
    pub fn wait(&mut self, timeout: Duration) -> Out {
        let child = self.child.as_mut().expect("not yet waited");
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Out {
                    status,
                    stdout: self.output(),
                    stderr: self.errors(),
                };
            }
            if Instant::now() > end {
                panic!(
                    "{} still running after {timeout:?}; stdout: {:?} stderr: {:?}",
                    self.what,
                    self.output(),
                    self.errors()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(-(child.id() as i32)), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

/// Polls `f` every 20 ms until it returns `Some` or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The reaper's cgroup v1 controllers (the shim makes `<ctrl>/reaper/<ns>/<id>`).
const CGROUP_CONTROLLERS: [&str; 4] = ["freezer", "pids", "cpuacct", "memory"];

/// Removes `/sys/fs/cgroup/<ctrl>/reaper/<ns>` and the cgroups in it, killing (by pid) any
/// process still in them: they belong to this test's namespace. Used before a daemon starts (a
/// killed earlier run) and when it is dropped (a failed test).
fn remove_reaper_cgroups(ns: &str) {
    for ctrl in CGROUP_CONTROLLERS {
        let base = Path::new("/sys/fs/cgroup")
            .join(ctrl)
            .join("reaper")
            .join(ns);
        remove_cgroup_tree(&base, ctrl == "freezer");
    }
}

/// The same for runc's cgroups (`REAPER_CTD_RUNTIME=runc`): containerd's default cgroupsPath is
/// `/<ns>/<id>` in every v1 hierarchy, and runc removes only `<id>` on delete, leaving the
/// namespace's directory (seen with bookworm's runc 1.1.5); a failed test leaves `<id>` too.
fn remove_runc_cgroups(ns: &str) {
    let Ok(ctrls) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for ctrl in ctrls.filter_map(|e| e.ok()) {
        let freezer = ctrl.file_name() == "freezer";
        remove_cgroup_tree(&ctrl.path().join(ns), freezer);
    }
}

/// Removes cgroup `base` and its child cgroups (one level), thawing them first if `freezer` and
/// killing (by pid) whatever is still in them.
fn remove_cgroup_tree(base: &Path, freezer: bool) {
    if !base.is_dir() {
        return;
    }
    let mut dirs: Vec<PathBuf> = fs::read_dir(base)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.push(base.to_path_buf());
    for d in dirs {
        if freezer {
            let _ = fs::write(d.join("freezer.state"), "THAWED");
        }
        let end = Instant::now() + Duration::from_secs(2);
        while fs::remove_dir(&d).is_err() && d.exists() && Instant::now() < end {
            let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `/proc/<pid>/stat` field 22 (start time), to tell a pid from a reused one.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The one-letter state of `/proc/<pid>/status` (`R`, `S`, `T`, `D`, `Z`...).
pub fn proc_state(pid: u32) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .map(|s| s.trim().chars().next().unwrap_or('?').to_string())
}

/// A `/proc/<pid>/status` field in kB (e.g. `VmRSS`).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let v = l.strip_prefix(field)?.strip_prefix(':')?;
        v.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

fn ppid(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The argv of `pid` (empty once it is gone). A process between `execve` and its new image's
/// argument set-up reads as an empty `/proc/<pid>/cmdline` (the exec's close-on-exec pipe, which
/// ends the spawner's wait, closes before the loader sets `mm->arg_start`: `begin_new_exec`
/// then `load_elf_binary` in the kernel), so an empty argv of a live process that is neither a
/// kernel thread nor a zombie is read again for up to 1 s.
fn argv_of(pid: u32) -> Vec<String> {
    let end = Instant::now() + Duration::from_secs(1);
    loop {
        let argv = nul_split(&fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default());
        if !argv.is_empty() || Instant::now() > end || !mid_exec(pid) {
            return argv;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Whether `pid` is a live user process (not a kernel thread, not a zombie), from
/// `/proc/<pid>/stat`: field 3 the state, field 9 the flags (`PF_KTHREAD` = 0x00200000).
fn mid_exec(pid: u32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return false;
    };
    let mut fields = after.split_whitespace();
    let state = fields.next().unwrap_or("Z");
    let flags: u64 = fields
        .nth(5)
        .and_then(|f| f.parse().ok())
        .unwrap_or(PF_KTHREAD);
    state != "Z" && state != "X" && flags & PF_KTHREAD == 0
}

fn nul_split(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Options for a private daemon.
#[derive(Clone, Debug, Default)]
pub struct DaemonOpts {
    /// Keep the CRI plugin enabled (off by default, for speed).
    pub cri: bool,
    /// Extra TOML appended to the generated config.
    pub extra_config: String,
    /// Keys of the CRI plugin's own table (`[plugins."io.containerd.grpc.v1.cri"]`, which the
    /// fixture writes when `cri` is on), one `key = value` per line.
    pub cri_keys: String,
    /// The config file's `version`; `None`: the release's own (2 for 1.x, 3 for 2.x).
    pub config_version: Option<u32>,
    /// The directory first on the daemon's PATH, whose shim binary it runs (another release's
    /// runc shim, a recording wrapper); `None`: the built reaper's, or for [`Runtime::Runc`] the
    /// daemon's own release's.
    pub shim_dir: Option<PathBuf>,
}

/// A private containerd (1.6, 1.7 or 2.1) with its own root, state, sockets and config in a temp
/// dir.
pub struct Daemon {
    /// The temp dir holding everything of this daemon.
    pub dir: tempfile::TempDir,
    /// gRPC socket (what `ctr --address` and the shim's `-address` get).
    pub address: PathBuf,
    /// ttrpc socket (the shim's `TTRPC_ADDRESS`).
    pub ttrpc: PathBuf,
    /// containerd's combined log.
    pub log: PathBuf,
    /// The namespace all our containers live in.
    pub namespace: String,
    /// The runtime `run` uses.
    pub runtime: Runtime,
    /// The rootfs dir given to `ctr run --rootfs`.
    pub rootfs: PathBuf,
    /// The containerd release (and its `ctr`).
    pub version: Version,
    child: Option<Child>,
    ids: BTreeSet<String>,
    tracked: Vec<(u32, u64, String)>,
    config: PathBuf,
    path: OsString,
}

impl Daemon {
    /// Starts a containerd `version` daemon for `runtime` and waits until it answers. Its
    /// containers live in namespace `<ns>-<version slug>` (e.g. `echo-v2_1`): the same test on
    /// the three releases runs in parallel, and the reaper's cgroups (`reaper/<ns>/<id>`) and the
    /// clean-up of a killed earlier run are per namespace.
    pub fn start(version: Version, runtime: Runtime, ns: &str, opts: DaemonOpts) -> Daemon {
        let bin_dir = version.bin_dir();
        let ns = &format!("{ns}-{}", version.slug());
        assert!(
            nix::unistd::geteuid().is_root(),
            "the containerd tests need root (containerd, shim sockets under {SOCKET_DIR}, cgroups)"
        );
        let shim_dir = match opts.shim_dir.clone() {
            Some(dir) => dir,
            None => match runtime {
                Runtime::Reaper => testkit::reaper().parent().expect("shim dir").to_path_buf(),
                Runtime::Faulty => testkit::faulty().parent().expect("shim dir").to_path_buf(),
                // This release's own runc shim (found first on PATH), bookworm's runc.
                Runtime::Runc => bin_dir.clone(),
            },
        };
        if runtime == Runtime::Runc {
            require_tools(&["runc"]);
        }
        // A test binary killed earlier cannot have cleaned up after itself.
        if runtime == Runtime::Runc {
            remove_runc_cgroups(ns);
        } else {
            remove_reaper_cgroups(ns);
        }
        let dir = tempfile::Builder::new()
            .prefix("reaper-ctd-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        let address = dir.path().join("c.sock");
        let ttrpc = dir.path().join("c.sock.ttrpc");
        let log = dir.path().join("containerd.log");
        let rootfs = dir.path().join("rootfs");
        fs::create_dir_all(rootfs.join("bin")).expect("rootfs");
        fs::create_dir_all(dir.path().join("fifo")).expect("fifo dir");
        if runtime == Runtime::Runc {
            populate_busybox(&rootfs);
        }
        let mut disabled: Vec<&str> = Vec::new();
        if !opts.cri {
            // The CRI service. 2.x also loads its runtime and images plugins and the pod sandbox
            // controller (`plugins/cri/runtime/plugin.go` etc. at v2.1.9); left on: they cost
            // about 2 ms of start-up, and disabling them makes `sandbox-controllers` fail to load.
            disabled.push("io.containerd.grpc.v1.cri");
        }
        if version.is_2x() {
            // NRI is on by default in 2.x and, once CRI starts it, listens on the host-wide
            // /var/run/nri/nri.sock (`internal/nri/config.go` at v2.1.9, the path from its
            // vendored `nri/pkg/api/plugin.go`), shared by parallel tests; 1.7 defaults it off
            // (`pkg/nri/config.go` at v1.7.24). CRI runs without it (`getNRIAPI` in
            // `plugins/cri/cri.go` at v2.1.9: "NRI support disabled").
            disabled.push("io.containerd.nri.v1.nri");
        }
        let disabled = format!("{disabled:?}");
        let cri = if opts.cri {
            // The CRI server's own settings keep their 1.x table in a version 3 config
            // (`ServerConfig` in `internal/cri/config/config.go` at v2.1.9).
            format!(
                "[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_tcp_service = true\n  stream_server_port = \"0\"\n{}",
                opts.cri_keys
            )
        } else {
            String::new()
        };
        // 2.x migrates a version 2 file at every start and warns; version 3 is its own format
        // (`ConfigVersion = 3` in `version/version.go`, the migrations in
        // `cmd/containerd/server/config/config.go` at v2.1.9). The top-level keys and tables
        // written here are the same in both.
        let own = if version.is_2x() { 3 } else { 2 };
        let config_version = opts.config_version.unwrap_or(own);
        let config = format!(
            "version = {config_version}\nroot = {root:?}\nstate = {state:?}\ndisabled_plugins = {disabled}\n\n\
             [grpc]\n  address = {address:?}\n\n[ttrpc]\n  address = {ttrpc:?}\n\n\
             [debug]\n  level = \"debug\"\n\n{cri}\n{extra}\n",
            extra = opts.extra_config
        );
        let config_path = dir.path().join("config.toml");
        fs::write(&config_path, config).expect("write config");

        let mut path = OsString::from(shim_dir.as_os_str());
        if let Some(p) = std::env::var_os("PATH") {
            path.push(":");
            path.push(p);
        }
        let mut d = Daemon {
            dir,
            address,
            ttrpc,
            log,
            namespace: ns.to_string(),
            runtime,
            rootfs,
            version,
            child: None,
            ids: BTreeSet::new(),
            tracked: Vec::new(),
            config: config_path,
            path,
        };
        d.spawn();
        d
    }

    /// Spawns containerd (appending to the log) and waits until it answers.
    fn spawn(&mut self) {
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let mut cmd = Command::new(self.version.containerd());
        cmd.arg("--config")
            .arg(&self.config)
            .env("PATH", &self.path)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .process_group(0);
        die_with_parent(&mut cmd);
        self.child = Some(cmd.spawn().expect("spawn containerd"));
        self.wait_ready();
    }

    /// Stops containerd (SIGTERM, then SIGKILL after 5 s) and starts it again with the same
    /// config; shims keep running and must be reloaded from their bundles.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Stops containerd only (shims keep running); see [`Daemon::start_daemon`].
    pub fn stop_daemon(&mut self) {
        self.stop();
    }

    /// Starts containerd again after [`Daemon::stop_daemon`].
    pub fn start_daemon(&mut self) {
        assert!(self.child.is_none(), "containerd is already running");
        self.spawn();
    }

    fn wait_ready(&mut self) {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "containerd exited with {status} before serving; log:\n{}",
                    self.log_text()
                );
            }
            if self.address.exists() {
                let out = run_bounded(self.ctr_cmd(&["version"]), None, Duration::from_secs(5));
                if out.status.success() && out.stdout.contains("Server:") {
                    return;
                }
            }
            assert!(
                Instant::now() < end,
                "containerd not ready within 20 s; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// containerd's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// containerd's log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// This daemon's release's `ctr`.
    pub fn ctr_path(&self) -> PathBuf {
        self.version.ctr()
    }

    /// A `ctr --address <ours> --namespace <ours> <args>` command (not yet run), with this
    /// daemon's release's `ctr`.
    pub fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.ctr_path());
        cmd.arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args);
        cmd
    }

    /// Runs `ctr <args>` bounded by [`CTR_TIMEOUT`].
    pub fn ctr(&self, args: &[&str]) -> Out {
        run_bounded(self.ctr_cmd(args), None, CTR_TIMEOUT)
    }

    /// Runs `ctr <args>` with `stdin` piped in, bounded by [`CTR_TIMEOUT`].
    pub fn ctr_stdin(&self, args: &[&str], stdin: &[u8]) -> Out {
        run_bounded(self.ctr_cmd(args), Some(stdin), CTR_TIMEOUT)
    }

    /// The argv of `ctr run --rm? <opts> --runtime R --rootfs DIR <id> <cmd...>` for our runtime,
    /// with FIFOs in our temp dir; records `id` for the leak checks.
    pub fn run_args(&mut self, rm: bool, opts: &[&str], id: &str, cmd: &[&str]) -> Vec<String> {
        self.ids.insert(id.to_string());
        let mut a: Vec<String> = vec!["run".into()];
        if rm {
            a.push("--rm".into());
        }
        a.push("--fifo-dir".into());
        a.push(self.dir.path().join("fifo").display().to_string());
        a.extend(opts.iter().map(|s| s.to_string()));
        if self.runtime == Runtime::Runc {
            // Keep runc's state in our temp dir too.
            a.push("--runc-root".into());
            a.push(self.dir.path().join("runc").display().to_string());
        }
        a.push("--runtime".into());
        a.push(self.runtime.name().into());
        a.push("--rootfs".into());
        a.push(self.rootfs.display().to_string());
        a.push(id.into());
        a.extend(cmd.iter().map(|s| s.to_string()));
        a
    }

    /// `ctr run --rm` of `cmd` as container `id`, bounded.
    pub fn run_rm(&mut self, opts: &[&str], id: &str, cmd: &[&str], stdin: Option<&[u8]>) -> Out {
        let args = self.run_args(true, opts, id, cmd);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_bounded(self.ctr_cmd(&args), stdin, CTR_TIMEOUT)
    }

    /// Starts an attached `ctr run --rm` of `cmd` in the background and waits until its task is
    /// RUNNING; returns the background process and the task pid (tracked for leak checks).
    pub fn run_bg(&mut self, opts: &[&str], id: &str, cmd: &[&str]) -> (Bg, u32) {
        let args = self.run_args(true, opts, id, cmd);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut bg = Bg::spawn(self.ctr_cmd(&args), self.dir.path(), &format!("run-{id}"));
        let pid = poll(Duration::from_secs(15), || {
            if let Ok(Some(status)) = bg.child.as_mut().expect("child").try_wait() {
                panic!(
                    "ctr run {id} exited with {status} before running: {} {}",
                    bg.output(),
                    bg.errors()
                );
            }
            self.task_status(id)
                .filter(|(_, s)| s == "RUNNING")
                .map(|(p, _)| p)
        })
        .unwrap_or_else(|| panic!("task {id} not RUNNING within 15 s: {}", bg.errors()));
        self.track(pid, &format!("init of {id}"));
        (bg, pid)
    }

    /// `(pid, STATUS)` of task `id` from `ctr task ls`.
    pub fn task_status(&self, id: &str) -> Option<(u32, String)> {
        let out = self.ctr(&["task", "ls"]);
        out.stdout.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && f[0] == id).then(|| (f[1].parse().unwrap_or(0), f[2].to_string()))
        })
    }

    /// Records a container id whose socket must be gone at [`Daemon::assert_no_leaks`].
    pub fn use_id(&mut self, id: &str) {
        self.ids.insert(id.to_string());
    }

    /// The shim binary of our runtime (the one containerd finds first on its PATH).
    pub fn shim_binary(&self) -> PathBuf {
        match self.runtime {
            Runtime::Reaper => testkit::reaper(),
            Runtime::Faulty => testkit::faulty(),
            Runtime::Runc => self.version.bin_dir().join("containerd-shim-runc-v2"),
        }
    }

    /// Remembers a process that must be gone at [`Daemon::assert_no_leaks`].
    pub fn track(&mut self, pid: u32, what: &str) {
        if let Some(t) = start_time(pid) {
            self.tracked.push((pid, t, what.to_string()));
        }
    }

    /// Shim processes serving this daemon: their argv or environment names our socket.
    pub fn shim_pids(&self) -> Vec<u32> {
        let addr = self.address.display().to_string();
        let ttrpc = format!("TTRPC_ADDRESS={}", self.ttrpc.display());
        let me = self.pid();
        all_pids()
            .into_iter()
            .filter(|&p| p != me && p != std::process::id())
            .filter(|&p| {
                let argv = argv_of(p);
                let env = fs::read(format!("/proc/{p}/environ")).unwrap_or_default();
                let is_ctr = argv.first().map(|a| a.ends_with("ctr")).unwrap_or(false);
                !is_ctr && (argv.contains(&addr) || nul_split(&env).contains(&ttrpc))
            })
            .collect()
    }

    /// Shim *servers* of this daemon: [`Daemon::shim_pids`] without short-lived `start` and
    /// `delete` action processes (their argv ends with the action word).
    pub fn server_pids(&self) -> Vec<u32> {
        self.shim_pids()
            .into_iter()
            .filter(|p| {
                let argv = argv_of(*p);
                !matches!(argv.last().map(String::as_str), Some("start" | "delete"))
            })
            .collect()
    }

    /// The socket paths our ids hash to (containerd's `sha256(address/namespace/id)`).
    pub fn socket_paths(&self) -> Vec<PathBuf> {
        self.hashed_paths("")
    }

    /// The debug socket paths our ids hash to: under a `-debug` containerd (our config's debug
    /// level) the 2.x runc shim also listens on `sha256(address/namespace/id/debug)`
    /// (`cmd/containerd-shim-runc-v2/manager/manager_linux.go` and `pkg/shim/util_unix.go`
    /// `SocketAddress` at v2.1.9). Checked for every runtime and release: none may remain.
    pub fn debug_socket_paths(&self) -> Vec<PathBuf> {
        self.hashed_paths("/debug")
    }

    fn hashed_paths(&self, suffix: &str) -> Vec<PathBuf> {
        self.ids
            .iter()
            .map(|id| self.hashed_path(&format!("{id}{suffix}")))
            .collect()
    }

    fn hashed_path(&self, id: &str) -> PathBuf {
        let key = format!("{}/{}/{id}", self.address.display(), self.namespace);
        Path::new(SOCKET_DIR).join(hex::encode(Sha256::digest(key.as_bytes())))
    }

    /// Asserts (waiting up to 5 s for asynchronous shim exits) that no shim process, socket,
    /// tracked task process, zombie child of a shim or of containerd, or reaper cgroup of ours
    /// remains. (The test process's own children are reaped by `Child::wait`; parallel tests make
    /// a scan of them racy.)
    pub fn assert_no_leaks(&self) {
        let found = poll(Duration::from_secs(5), || {
            let leaks = self.leaks();
            leaks.is_empty().then_some(())
        });
        if found.is_none() {
            panic!(
                "leaks after the test: {:#?}\ncontainerd log tail:\n{}",
                self.leaks(),
                tail(&self.log_text(), 40)
            );
        }
    }

    /// Everything of ours still present (empty when clean).
    pub fn leaks(&self) -> Vec<String> {
        let mut leaks = Vec::new();
        let shims = self.shim_pids();
        for p in &shims {
            let argv = argv_of(*p);
            leaks.push(format!("shim process {p}: {argv:?}"));
        }
        // Anything else still naming our temp dir (task scripts, loggers...), except containerd
        // itself and the test's own ctr processes.
        let dir = self.dir.path().display().to_string();
        for p in all_pids() {
            if p == self.pid() || p == std::process::id() || shims.contains(&p) {
                continue;
            }
            let argv = argv_of(p);
            let is_ctr = argv
                .first()
                .is_some_and(|a| a.ends_with("ctr") || a == "script");
            if !is_ctr && argv.iter().any(|a| a.contains(&dir)) {
                leaks.push(format!("process {p} names our temp dir: {argv:?}"));
            }
        }
        for id in &self.ids {
            for (suffix, what) in [("", "socket"), ("/debug", "debug socket")] {
                let s = self.hashed_path(&format!("{id}{suffix}"));
                if s.exists() {
                    leaks.push(format!("{what} of {id}: {}", s.display()));
                }
            }
        }
        for (pid, t, what) in &self.tracked {
            if start_time(*pid) == Some(*t) {
                leaks.push(format!(
                    "{what} (pid {pid}) still exists in state {:?}",
                    proc_state(*pid)
                ));
            }
        }
        let parents: BTreeSet<u32> = shims.iter().copied().chain([self.pid()]).collect();
        for p in all_pids() {
            if proc_state(p).as_deref() == Some("Z")
                && ppid(p).is_some_and(|pp| parents.contains(&pp))
            {
                leaks.push(format!("zombie {p} (parent {:?})", ppid(p)));
            }
        }
        if self.runtime != Runtime::Runc {
            // Each test has its own namespace: nothing may remain under reaper/<ns>.
            for ctrl in CGROUP_CONTROLLERS {
                let d = Path::new("/sys/fs/cgroup")
                    .join(ctrl)
                    .join("reaper")
                    .join(&self.namespace);
                if d.exists() {
                    leaks.push(format!("cgroup {}", d.display()));
                }
            }
        }
        leaks
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = child.try_wait() {
                let _ = kill(pid, Signal::SIGKILL);
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Leftovers of a failed test: end shims and tracked processes by pid, then the daemon.
        for p in self.shim_pids() {
            let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
        }
        for (pid, t, _) in &self.tracked {
            if start_time(*pid) == Some(*t) {
                let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
            }
        }
        self.stop();
        for s in self
            .socket_paths()
            .into_iter()
            .chain(self.debug_socket_paths())
        {
            let _ = fs::remove_file(s);
        }
        if self.runtime != Runtime::Runc {
            remove_reaper_cgroups(&self.namespace);
        } else {
            remove_runc_cgroups(&self.namespace);
        }
        // Mounts under state (none expected with --rootfs) would make removal fail loudly.
        let _ = fs::remove_dir_all(self.dir.path());
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Puts busybox and the applets the tests use into `rootfs/bin` (runc validation only).
fn populate_busybox(rootfs: &Path) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .expect("busybox is missing: run ci/setup.sh (apt-get install busybox-static)");
    fs::copy(busybox, rootfs.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "echo", "cat", "sleep", "env", "pwd", "true"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).expect("symlink");
    }
}

/// One line of `ctr events`: topic and JSON payload.
#[derive(Debug, Clone)]
pub struct Event {
    /// The envelope's timestamp (set by the publisher), as [`normalize_time`] gives it.
    pub time: String,
    /// e.g. `/tasks/exit`.
    pub topic: String,
    /// The event as JSON.
    pub body: serde_json::Value,
}

/// Parses `ctr events` output (`<date> <time> +0000 UTC <ns> <topic> <json>`).
pub fn parse_events(text: &str) -> Vec<Event> {
    text.lines()
        .filter_map(|l| {
            let start = l.find(" /")? + 1;
            let rest = &l[start..];
            let (topic, json) = rest.split_once(' ').unwrap_or((rest, "{}"));
            let mut f = l.split_whitespace();
            let time = normalize_time(&format!("{}T{}", f.next()?, f.next()?));
            Some(Event {
                time,
                topic: topic.to_string(),
                body: serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
            })
        })
        .collect()
}

/// A timestamp field of an event's JSON (`exited_at`) as [`normalize_time`] gives it. ctr 1.6
/// prints it as an RFC 3339 string (its gogo-generated events hold a `time.Time`); ctr 1.7 and
/// 2.1 print the Go struct of
/// `timestamppb.Timestamp` through `encoding/json`, `{"seconds": S, "nanos": N}` (`ctr events`
/// marshals the decoded event with `json.Marshal`: `cmd/ctr/commands/events/events.go` at
/// v1.7.24 and v2.1.9).
pub fn json_time(v: &serde_json::Value) -> Option<String> {
    if let Some(s) = v.as_str() {
        return Some(normalize_time(s));
    }
    let secs = v.get("seconds")?.as_i64()?;
    let nanos = v.get("nanos").and_then(|n| n.as_u64()).unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    Some(format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ))
}

/// The proleptic Gregorian (year, month, day) of `days` since 1970-01-01, counted in 400-year
/// eras of 146097 days, each era starting on a 1 March so that leap days fall at its end.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days from 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year
    let mp = (5 * doy + 2) / 153; // March = 0
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `YYYY-MM-DDTHH:MM:SS[.f…][Z]` (ctr's envelope time with `T`, or a JSON timestamp) as
/// `YYYY-MM-DDTHH:MM:SS.fffffffff`, so that UTC times compare as strings.
pub fn normalize_time(t: &str) -> String {
    let t = t.trim_end_matches('Z');
    let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
    format!("{secs}.{frac:0<9}")
}
