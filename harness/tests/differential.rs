//! Differential mode against a private containerd 1.6 (feature `containerd`; root needed):
//! the reaper agrees with the mock on a lifecycle and an exec scenario with real events seen,
//! and a mock run that behaves differently (the faulty reaper answering SIGTERM with 0) is
//! reported as a fidelity difference showing both exit statuses.
//! Run: `cargo test -p harness --features containerd --test differential`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::differential::{self, DiffConfig, Verdict};
use harness::engine::RunConfig;
use harness::scenario::{discover, Loaded};

use testkit::built;

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A private containerd: own root, state, sockets and config in a temp dir; killed by pid and
/// removed on drop.
struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Containerd {
        let bin = which("containerd").expect("containerd is not on PATH: run ci/setup.sh");
        assert!(
            nix::unistd::geteuid().is_root(),
            "the differential tests need root (containerd, shim sockets under /run/containerd/s)"
        );
        let dir = tempfile::Builder::new()
            .prefix("harness-diff-test-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let d = dir.path();
        let config = format!(
            "version = 2\nroot = {:?}\nstate = {:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = {:?}\n[ttrpc]\n  address = {:?}\n",
            d.join("root"),
            d.join("state"),
            d.join("c.sock"),
            d.join("c.sock.ttrpc")
        );
        std::fs::write(d.join("config.toml"), config).expect("config");
        let log = std::fs::File::create(d.join("containerd.log")).expect("log");
        let child = Command::new(bin)
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let c = Containerd { child, dir };
        let end = Instant::now() + Duration::from_secs(20);
        while !c.socket().exists() {
            assert!(Instant::now() < end, "containerd did not serve within 20s");
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scenarios(names: &[&str]) -> Vec<Loaded> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let all = discover(&[dir]).expect("the suite loads");
    let picked: Vec<Loaded> = all
        .into_iter()
        .filter(|l| names.contains(&l.name.as_str()))
        .collect();
    assert_eq!(picked.len(), names.len(), "scenarios {names:?} exist");
    picked
}

fn config(ctd: &Containerd, mock_shim: PathBuf, env: Vec<(String, String)>) -> DiffConfig {
    DiffConfig {
        socket: ctd.socket(),
        namespace: "harness-diff-test".into(),
        // An absolute path as the runtime: containerd 1.6 runs that binary.
        runtime: built("containerd-shim-reaper-v2").display().to_string(),
        run: RunConfig {
            shim: mock_shim,
            dialect: "1.6".parse().expect("dialect"),
            shim_env: env,
            ..RunConfig::default()
        },
    }
}

#[test]
fn reaper_agrees_with_containerd_on_lifecycle_and_exec() {
    let ctd = Containerd::start();
    let cfg = config(&ctd, built("containerd-shim-reaper-v2"), vec![]);
    let report = differential::run_blocking(
        &cfg,
        scenarios(&["lifecycle/sigkill", "exec/sigterm"]),
        |_| {},
    )
    .expect("the differential run happens");
    for sc in &report.scenarios {
        assert_eq!(sc.verdict, Verdict::Same, "{}: {:#?}", sc.name, sc);
    }
    let sigkill = report
        .scenarios
        .iter()
        .find(|s| s.name == "lifecycle/sigkill")
        .expect("lifecycle/sigkill ran");
    assert_eq!(
        sigkill.containerd_events,
        testkit::LIFECYCLE_TOPICS,
        "containerd's own events were compared"
    );
    assert_eq!(sigkill.steps_compared, (7, 7));
    assert_eq!(report.exit_code(), 0);
    // Nothing of ours is left in containerd: each scenario's namespace (with its container and
    // task) was removed.
    let ctr = which("ctr").expect("ctr is not on PATH: run ci/setup.sh");
    let out = Command::new(ctr)
        .arg("--address")
        .arg(ctd.socket())
        .args(["namespaces", "ls", "-q"])
        .output()
        .expect("ctr namespaces ls");
    let left = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ctr failed: {out:?}");
    assert!(
        !left.contains("harness-diff-test"),
        "namespaces left behind: {left}"
    );
}

#[test]
fn a_mock_run_that_differs_is_a_fidelity_failure_with_both_sides() {
    let ctd = Containerd::start();
    // The mock side runs the faulty reaper (SIGTERM reported as exit 0); containerd runs the
    // correct one: the comparison must catch it.
    let cfg = config(
        &ctd,
        built("containerd-shim-faulty-v2"),
        vec![("FAULTY_SHIM".into(), "sigterm-exit-zero".into())],
    );
    let report = differential::run_blocking(&cfg, scenarios(&["lifecycle/sigterm"]), |_| {})
        .expect("the differential run happens");
    let sc = &report.scenarios[0];
    assert_eq!(sc.verdict, Verdict::Different, "{sc:#?}");
    let wait = sc
        .differences
        .iter()
        .find(|d| d.what.contains("(wait)"))
        .unwrap_or_else(|| panic!("a Wait difference in {:#?}", sc.differences));
    assert_eq!(wait.containerd["ok"]["exit-status"], 143);
    assert_eq!(wait.mock["ok"]["exit-status"], 0);
    assert!(
        sc.differences.iter().any(|d| d.what == "events"),
        "the exit events differ too: {:#?}",
        sc.differences
    );
    assert_eq!(report.exit_code(), 1);
}
