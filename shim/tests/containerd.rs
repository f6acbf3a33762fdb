//! The reaper shim under real containerd 1.6, 1.7, 2.1 and 2.3 (issues 2, 12 and 18): each test
//! runs once per release (`containerd_<n>_V1_6`, `_V1_7`, `_V2_1`, `_V2_3`; filter by that suffix
//! to run one), starts a private daemon of that release (own root, state, sockets; the built shim
//! first on its PATH), drives it with the release's own `ctr`, and ends by checking that no shim
//! process, socket, task process, zombie, cgroup or other process of ours remains. 1.6 is the
//! system's; 1.7 and 2.1 come from `ci/setup.sh` (target/containerd), 2.3.4 from the project's
//! shared/containerd beside the checkout; a missing one fails the test with where to get it.
//! `REAPER_CTD_RUNTIME=runc` runs the same checks against the release's own runc shim and
//! `REAPER_CTD_RUNTIME=faulty FAULTY_SHIM=<fault>` against the deliberately broken shim, to
//! validate the fixture and the checks themselves.
mod common;

#[path = "containerd/deploy.rs"]
mod deploy;
#[path = "containerd/fidelity.rs"]
mod fidelity;
#[path = "containerd/lifecycle.rs"]
mod lifecycle;
#[path = "containerd/matrix.rs"]
mod matrix;
#[path = "containerd/run.rs"]
mod run;
#[path = "containerd/tasks.rs"]
mod tasks;

use std::time::Duration;

use common::{parse_events, poll, Daemon, DaemonOpts, Runtime, Version};

/// A private containerd `version` for the runtime under test, its containers in namespace `ns`
/// (one per test; the fixture adds the release).
fn daemon(version: Version, ns: &str) -> Daemon {
    Daemon::start(version, Runtime::from_env(), ns, DaemonOpts::default())
}

/// `ctr events` in the background, returned once it is subscribed (one of our own probe events
/// came through: ctr may subscribe after it starts).
fn subscribe_events(d: &Daemon) -> common::Bg {
    let ev = common::Bg::spawn(d.ctr_cmd(&["events"]), d.dir.path(), "events");
    // Subscribed once one of our own probe events comes through (ctr may subscribe late).
    let subscribed = (0..40).any(|i| {
        let name = format!("probe{i}");
        d.ctr(&["namespaces", "create", &name])
            .ok("namespaces create");
        poll(Duration::from_millis(250), || {
            parse_events(&ev.output())
                .iter()
                .any(|e| e.topic == "/namespaces/create" && e.body["name"] == name.as_str())
                .then_some(())
        })
        .is_some()
    });
    assert!(
        subscribed,
        "ctr events never showed our /namespaces/create: {}",
        ev.errors()
    );
    ev
}

/// [`common::json_time`] reads both ctr forms of an event timestamp to the same string.
#[test]
fn json_time_reads_both_ctr_timestamp_forms() {
    use serde_json::json;
    let as_object = json!({"seconds": 1_796_394_988_i64, "nanos": 139_697_350});
    let as_string = json!("2026-12-04T14:36:28.13969735Z");
    assert_eq!(
        common::json_time(&as_object).as_deref(),
        Some("2026-12-04T14:36:28.139697350")
    );
    assert_eq!(common::json_time(&as_string), common::json_time(&as_object));
    // A leap day, and the second before the epoch.
    assert_eq!(
        common::json_time(&json!({"seconds": 951_782_400})).as_deref(),
        Some("2000-02-29T00:00:00.000000000")
    );
    assert_eq!(
        common::json_time(&json!({"seconds": -1})).as_deref(),
        Some("1969-12-31T23:59:59.000000000")
    );
}
