//! Encoding tests against bytes derived by hand from bootstrap.proto's field numbers (v2.3.4).
//! A tag byte is `field_number << 3 | wire_type` (0 varint, 2 length-delimited).

use super::*;

fn any(type_url: &str, value: &[u8]) -> Any {
    Any {
        type_url: type_url.into(),
        value: value.to_vec(),
        ..Default::default()
    }
}

fn params_full() -> BootstrapParams {
    let mut p = BootstrapParams {
        instance_id: "c1".into(),
        namespace: "default".into(),
        log_level: EnumOrUnknown::new(LogLevel::Debug),
        containerd_version: "2.3.4".into(),
        containerd_ttrpc_address: "/t".into(),
        containerd_grpc_address: "/g".into(),
        containerd_binary: "/b".into(),
        socket_dir: Some("/s".into()),
        ..Default::default()
    };
    p.add_extension(any("x/y", &[0x08, 0x01]));
    p
}

/// Every field of BootstrapParams, in field-number order.
#[rustfmt::skip]
const PARAMS_FULL: &[u8] = &[
    0x0a, 2, b'c', b'1', // 1 instance_id: (1<<3)|2 = 0x0a, length 2
    0x12, 7, b'd', b'e', b'f', b'a', b'u', b'l', b't', // 2 namespace: (2<<3)|2 = 0x12
    // 3 log_level DEBUG = -4: (3<<3)|0 = 0x18; an int32 enum is sign-extended to 64 bits,
    // 0xffff_ffff_ffff_fffc, as a varint: 0x7c|0x80 = 0xfc, eight 0xff, then the top bit 0x01.
    0x18, 0xfc, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
    0x22, 5, b'2', b'.', b'3', b'.', b'4', // 4 containerd_version: (4<<3)|2 = 0x22
    0x2a, 2, b'/', b't', // 5 containerd_ttrpc_address: 0x2a
    0x32, 2, b'/', b'g', // 6 containerd_grpc_address: 0x32
    0x3a, 2, b'/', b'b', // 7 containerd_binary: 0x3a
    // 8 extensions: (8<<3)|2 = 0x42, length 11 = the Extension: its field 1 (0x0a) holding
    // the 9-byte Any: type_url (0x0a, 3, "x/y") + value (0x12, 2, 0x08 0x01).
    0x42, 11, 0x0a, 9, 0x0a, 3, b'x', b'/', b'y', 0x12, 2, 0x08, 0x01,
    0x4a, 2, b'/', b's', // 9 socket_dir: (9<<3)|2 = 0x4a
];

#[test]
fn params_encode_every_field_by_number() {
    assert_eq!(params_full().write_to_bytes().unwrap(), PARAMS_FULL);
    let back = BootstrapParams::parse_from_bytes(PARAMS_FULL).unwrap();
    assert_eq!(back, params_full());
    assert_eq!(back.level(), LogLevel::Debug);
    assert_eq!(back.runtime_options(), Some(&any("x/y", &[0x08, 0x01])));
}

#[test]
fn params_defaults_are_omitted_but_an_empty_socket_dir_is_present() {
    // INFO (0) and empty strings are proto3 defaults: nothing on the wire.
    let p = BootstrapParams {
        instance_id: "a".into(),
        ..Default::default()
    };
    assert_eq!(p.write_to_bytes().unwrap(), [0x0a, 1, b'a']);
    assert!(BootstrapParams::default()
        .write_to_bytes()
        .unwrap()
        .is_empty());
    // `optional string socket_dir = 9` has presence: Some("") is tag 0x4a, length 0.
    let p = BootstrapParams {
        socket_dir: Some(String::new()),
        ..Default::default()
    };
    assert_eq!(p.write_to_bytes().unwrap(), [0x4a, 0]);
    assert_eq!(
        BootstrapParams::parse_from_bytes(&[0x4a, 0])
            .unwrap()
            .socket_dir,
        Some(String::new())
    );
    assert_eq!(
        BootstrapParams::parse_from_bytes(&[]).unwrap().socket_dir,
        None
    );
}

#[test]
fn open_log_levels_survive_and_map_to_the_nearest() {
    // 3 log_level = 6: 0x18, 0x06 (not a known level).
    let p = BootstrapParams::parse_from_bytes(&[0x18, 6]).unwrap();
    assert_eq!(p.log_level.value(), 6);
    assert_eq!(p.level(), LogLevel::Warn); // 4 and 8 are both 2 away: the more verbose wins
    assert_eq!(p.write_to_bytes().unwrap(), [0x18, 6]);
    assert_eq!(LogLevel::nearest(-100), LogLevel::Trace);
    assert_eq!(LogLevel::nearest(11), LogLevel::Fatal);
    assert!(LogLevel::Trace.is_debug() && LogLevel::Debug.is_debug());
    assert!(!LogLevel::Info.is_debug());
    // TRACE = -8: 0xffff_ffff_ffff_fff8 → 0xf8, eight 0xff, 0x01.
    let t = BootstrapParams {
        log_level: EnumOrUnknown::new(LogLevel::Trace),
        ..Default::default()
    };
    let mut want = vec![0x18, 0xf8];
    want.extend([0xff; 8]);
    want.push(0x01);
    assert_eq!(t.write_to_bytes().unwrap(), want);
}

#[test]
fn result_encodes_by_number_with_packed_capabilities_and_map_entries() {
    let mut r = BootstrapResult {
        version: 3,
        address: "unix:///s/a".into(),
        protocol: "ttrpc".into(),
        ..Default::default()
    };
    let mut want: Vec<u8> = vec![0x08, 3]; // 1 version: (1<<3)|0 = 0x08, varint 3
    want.extend([0x12, 11]); // 2 address: 0x12, 11 bytes
    want.extend(b"unix:///s/a");
    want.extend([0x1a, 5]); // 3 protocol: (3<<3)|2 = 0x1a
    want.extend(b"ttrpc");
    assert_eq!(r.write_to_bytes().unwrap(), want);
    assert_eq!(BootstrapResult::parse_from_bytes(&want).unwrap(), r);

    r.capabilities
        .push(EnumOrUnknown::new(Capability::Unspecified));
    r.metadata.insert("k".into(), "v".into());
    // 4 capabilities, packed: (4<<3)|2 = 0x22, length 1, the varint 0.
    want.extend([0x22, 1, 0]);
    // 5 metadata: (5<<3)|2 = 0x2a, length 6 = an entry {1: "k"} 0x0a 1 'k', {2: "v"} 0x12 1 'v'.
    want.extend([0x2a, 6, 0x0a, 1, b'k', 0x12, 1, b'v']);
    assert_eq!(r.write_to_bytes().unwrap(), want);
    assert_eq!(BootstrapResult::parse_from_bytes(&want).unwrap(), r);
}

#[test]
fn result_reads_unpacked_capabilities_and_keeps_unknown_fields() {
    // 4 as one unpacked varint: (4<<3)|0 = 0x20, 0; then field 15 varint 7 (0x78, 7): unknown.
    let r = BootstrapResult::parse_from_bytes(&[0x20, 0, 0x78, 7]).unwrap();
    assert_eq!(r.capabilities.len(), 1);
    assert_eq!(r.write_to_bytes().unwrap(), [0x22, 1, 0, 0x78, 7]);
    // A known number with another wire type is an unknown field, as in Go: version (1) as
    // length-delimited (0x0a, 1, 'x') leaves version 0.
    let r = BootstrapResult::parse_from_bytes(&[0x0a, 1, b'x']).unwrap();
    assert_eq!(r.version, 0);
    assert_eq!(r.write_to_bytes().unwrap(), [0x0a, 1, b'x']);
}

#[test]
fn text_answers_and_bad_strings_do_not_decode() {
    // A bare address: 'u' (0x75) is field 14 fixed32 ("nix:"), then '/' (0x2f) has wire type 7.
    assert!(BootstrapResult::parse_from_bytes(b"unix:///run/containerd/s/ab").is_err());
    // JSON: '{' (0x7b) opens a group (field 15) that never ends.
    assert!(BootstrapResult::parse_from_bytes(br#"{"version":3,"address":"x"}"#).is_err());
    // address (0x12) of one byte 0xff: not UTF-8, refused as Go refuses a proto3 string.
    assert!(BootstrapResult::parse_from_bytes(&[0x12, 1, 0xff]).is_err());
    // Truncated: address says 5 bytes, 2 follow.
    assert!(BootstrapParams::parse_from_bytes(&[0x0a, 5, b'a', b'b']).is_err());
}

#[test]
fn a_legacy_options_any_can_decode_as_params() {
    // Why a shim must not trust a successful decode alone: an options Any is
    // {1: type_url, 2: value}, the same tags as instance_id and namespace.
    let legacy = any("containerd.runc.v1.Options", &[0x50, 0x01])
        .write_to_bytes()
        .unwrap();
    let p = BootstrapParams::parse_from_bytes(&legacy).unwrap();
    assert_eq!(p.instance_id, "containerd.runc.v1.Options");
    assert_eq!(p.namespace, "P\u{1}");
    // ...unless its value is not UTF-8.
    let legacy = any("x/y", &[0x80]).write_to_bytes().unwrap();
    assert!(BootstrapParams::parse_from_bytes(&legacy).is_err());
}
