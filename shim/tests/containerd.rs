//! The reaper shim under a real containerd 1.6 (issue 2's acceptance): each test starts a private
//! daemon (own root, state, sockets; the built shim first on its PATH), drives it with `ctr`, and
//! ends by checking that no shim process, socket, task process, zombie, cgroup or other process
//! of ours remains. `REAPER_CTD_RUNTIME=runc` runs the same checks against Debian's runc shim
//! and `REAPER_CTD_RUNTIME=faulty FAULTY_SHIM=<fault>` against the deliberately broken shim, to
//! validate the fixture and the checks themselves.

mod common;

#[path = "containerd/deploy.rs"]
mod deploy;
#[path = "containerd/lifecycle.rs"]
mod lifecycle;
#[path = "containerd/run.rs"]
mod run;
#[path = "containerd/tasks.rs"]
mod tasks;

use std::time::Duration;

use common::{parse_events, poll, Daemon, DaemonOpts, Runtime};

/// A private daemon for the runtime under test, its containers in namespace `ns` (one per test).
fn daemon(ns: &str) -> Daemon {
    Daemon::start(Runtime::from_env(), ns, DaemonOpts::default())
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
