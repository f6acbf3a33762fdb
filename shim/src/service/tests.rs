//! Unit tests of `service`.

use super::*;
use crate::container::EXIT_FILE;

#[test]
fn socket_address_matches_containerd() {
    let a = socket_address("/run/containerd/containerd.sock", "default", "123");
    assert_eq!(
        a,
        "unix:///run/containerd/s/0ddfbd72d02b3551e75f3a0ed90b9965b533401be618f43a568bc522764e0ad0"
    );
}

#[test]
fn socket_address_in_another_dir_keeps_the_hash() {
    let a = socket_address("/run/containerd/containerd.sock", "default", "123");
    let b = socket_address_in(
        "/tmp/s/",
        "/run/containerd/containerd.sock",
        "default",
        "123",
    );
    assert_eq!(b, a.replace("/run/containerd/s/", "/tmp/s/"));
}

fn start_flags(id: &str, ns: &str) -> Flags {
    Flags {
        id: id.into(),
        namespace: ns.into(),
        ..Default::default()
    }
}

#[test]
fn bootstrap_params_are_told_from_the_legacy_stdin() {
    let params = bootstrap::BootstrapParams {
        instance_id: "c1".into(),
        namespace: "default".into(),
        containerd_ttrpc_address: "/run/c.sock.ttrpc".into(),
        socket_dir: Some("/tmp/s".into()),
        ..Default::default()
    };
    let bytes = params.write_to_bytes().unwrap();
    let got = bootstrap_params(&bytes, &start_flags("c1", "default"))
        .unwrap()
        .unwrap();
    assert_eq!(got.socket_dir.as_deref(), Some("/tmp/s"));
    // Params for another container or namespace are refused, naming both sides.
    let e = bootstrap_params(&bytes, &start_flags("c2", "default")).unwrap_err();
    assert!(
        e.to_string().contains(r#"instance_id "c1""#) && e.to_string().contains(r#"-id "c2""#),
        "{e}"
    );
    assert!(bootstrap_params(&bytes, &start_flags("c1", "k8s.io")).is_err());
    // Empty stdin (ctr without options) and garbage: legacy.
    assert!(bootstrap_params(&[], &start_flags("c1", "default"))
        .unwrap()
        .is_none());
    assert!(bootstrap_params(b"\xff\xff", &start_flags("c1", "default"))
        .unwrap()
        .is_none());
    // An options Any decodes as BootstrapParams (type URL as instance_id, UTF-8 value as
    // namespace), but is not taken for one, even with an id equal to its type URL.
    let any = protobuf::well_known_types::any::Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: vec![0x50, 0x01],
        ..Default::default()
    };
    let legacy = any.write_to_bytes().unwrap();
    assert!(<bootstrap::BootstrapParams as Message>::parse_from_bytes(&legacy).is_ok());
    assert!(bootstrap_params(&legacy, &start_flags("c1", "default"))
        .unwrap()
        .is_none());
    assert!(bootstrap_params(
        &legacy,
        &start_flags("containerd.runc.v1.Options", "default")
    )
    .unwrap()
    .is_none());
}

#[test]
fn delete_action_on_an_empty_bundle_reports_137() {
    let dir = tempfile::tempdir().unwrap();
    let flags = Flags {
        bundle: dir.path().display().to_string(),
        id: "reaper-unit-empty".into(),
        namespace: "reaper-unit".into(),
        ..Default::default()
    };
    let r = delete_action(&flags).unwrap();
    assert_eq!((r.pid, r.exit_status), (0, 137));
    std::fs::write(dir.path().join("init.pid"), "4242").unwrap();
    std::fs::write(dir.path().join(EXIT_FILE), "7 100 5\n").unwrap();
    let r = delete_action(&flags).unwrap();
    assert_eq!((r.pid, r.exit_status), (4242, 7));
    assert_eq!(r.exited_at.seconds, 100);
}
