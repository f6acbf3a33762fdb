//! Unit tests of `dialect`.

use super::answer::go_wire_valid;
use super::*;
use crate::error::AddressError;
use std::path::Path;

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
