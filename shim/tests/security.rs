//! Security checks of the reaper (issue 6) through the built binary: the spec's user with its
//! supplementary groups replaced, ids that would escape a directory, and oversized or deeply
//! nested specs refused cleanly while the server keeps serving.
//! (The socket's mode 0600 is checked in `tests/shim/handshake.rs`.)

#[allow(dead_code)]
#[path = "shim/support.rs"]
mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use containerd_shim_protos::api::*;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;

use support::*;

/// 10 MB, over any limit.
const TEN_MB: usize = 10 << 20;

fn process_json(args: &[&str], user: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"args": args, "env": [PATH_ENV], "cwd": "/", "user": user})
}

fn exec_any(bytes: Vec<u8>) -> Any {
    Any {
        type_url: harness::client::PROCESS_SPEC_TYPE_URL.into(),
        value: bytes,
        ..Default::default()
    }
}

fn write_config(bundle: &Bundle, text: &[u8]) {
    std::fs::write(bundle.path().join("config.json"), text).unwrap();
}

/// The `Uid:`, `Gid:` and `Groups:` lines of /proc/<pid>/status, tabs and spaces collapsed.
fn ids_of(pid: u32) -> Vec<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .filter(|l| ["Uid:", "Gid:", "Groups:"].iter().any(|p| l.starts_with(p)))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

async fn kill_wait_delete(shim: &ShimProc, id: &str, exec_id: &str) {
    shim.client
        .kill(
            KillRequest {
                id: id.into(),
                exec_id: exec_id.into(),
                signal: 9,
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    let w = shim
        .client
        .wait(
            WaitRequest {
                id: id.into(),
                exec_id: exec_id.into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    assert_eq!(w.exit_status, 137, "{id}/{exec_id}");
    shim.client
        .delete(
            DeleteRequest {
                id: id.into(),
                exec_id: exec_id.into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
}

/// The shim still runs a fresh task to completion and reports its exit code.
async fn still_serves(shim: &ShimProc, id: &str) {
    let b = Bundle::new(id, &["sh", "-c", "exit 4"]).unwrap();
    shim.client.create(create_req(id, &b), RPC).await.unwrap();
    shim.start_task(id).await;
    let w = shim.wait_task(id).await;
    assert_eq!(w.exit_status, 4);
    shim.delete_task(id).await;
}

/// The test runs as root with its own groups; the task must get exactly the spec's uid, gid
/// and additionalGids (setgroups replaces, nothing inherited), for init and for an exec.
#[tokio::test]
async fn spec_user_sets_uid_gid_and_replaces_supplementary_groups() {
    // SAFETY: getuid has no preconditions.
    assert_eq!(
        unsafe { libc::getuid() },
        0,
        "this test needs root (setgroups); run it as root like ci/test.sh"
    );
    let bundle = Bundle::new("usr1", &["sleep", "30"]).unwrap();
    let cfg = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": process_json(
            &["sleep", "30"],
            serde_json::json!({"uid": 65534, "gid": 65534, "additionalGids": [123]})
        ),
        "root": {"path": "rootfs"},
    });
    write_config(&bundle, cfg.to_string().as_bytes());
    let shim = ShimProc::start(&bundle).await.unwrap();
    let c = shim
        .client
        .create(create_req("usr1", &bundle), RPC)
        .await
        .unwrap();
    shim.start_task("usr1").await;
    assert_eq!(
        ids_of(c.pid),
        [
            "Uid: 65534 65534 65534 65534",
            "Gid: 65534 65534 65534 65534",
            "Groups: 123"
        ],
        "init pid {}",
        c.pid
    );

    let spec = process_json(
        &["sleep", "30"],
        serde_json::json!({"uid": 1000, "gid": 1001, "additionalGids": [124, 125]}),
    );
    shim.client
        .exec(
            ExecProcessRequest {
                id: "usr1".into(),
                exec_id: "e1".into(),
                spec: Some(exec_any(serde_json::to_vec(&spec).unwrap())).into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    let s = shim
        .client
        .start(
            StartRequest {
                id: "usr1".into(),
                exec_id: "e1".into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    assert_eq!(
        ids_of(s.pid),
        [
            "Uid: 1000 1000 1000 1000",
            "Gid: 1001 1001 1001 1001",
            "Groups: 124 125"
        ],
        "exec pid {}",
        s.pid
    );
    kill_wait_delete(&shim, "usr1", "e1").await;
    kill_wait_delete(&shim, "usr1", "").await;
    shim.stop().await;
}

/// Container and exec ids that would escape a directory are InvalidArgument naming the id, and
/// nothing is created next to the bundle.
#[tokio::test]
async fn ids_that_escape_a_directory_are_refused_by_name() {
    let bundle = Bundle::new("ids1", &["sleep", "30"]).unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    let parent = bundle.path().parent().unwrap().to_path_buf();
    let listing = |d: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        v.sort();
        v
    };
    let in_bundle = listing(bundle.path());
    for bad in ["../x", "a/b", "..", ""] {
        let e = shim
            .client
            .create(create_req(bad, &bundle), RPC)
            .await
            .unwrap_err();
        assert_eq!(code(&e), ttrpc::Code::INVALID_ARGUMENT, "id {bad:?}: {e:?}");
        let want = if bad.is_empty() {
            "container id is empty".to_string()
        } else {
            format!("{bad:?}")
        };
        assert!(message(&e).contains(&want), "id {bad:?}: {e:?}");
        assert!(!parent.join("x").exists() && !bundle.path().join("a").exists());
        assert_eq!(listing(bundle.path()), in_bundle, "id {bad:?}");
    }
    shim.client
        .create(create_req("ids1", &bundle), RPC)
        .await
        .unwrap();
    for bad in ["../x", "a/b", "..", ""] {
        let spec = process_json(&["true"], serde_json::json!({"uid": 0, "gid": 0}));
        let e = shim
            .client
            .exec(
                ExecProcessRequest {
                    id: "ids1".into(),
                    exec_id: bad.into(),
                    spec: Some(exec_any(serde_json::to_vec(&spec).unwrap())).into(),
                    ..Default::default()
                },
                RPC,
            )
            .await
            .unwrap_err();
        assert_eq!(
            code(&e),
            ttrpc::Code::INVALID_ARGUMENT,
            "exec {bad:?}: {e:?}"
        );
        let want = if bad.is_empty() {
            "exec id is empty".to_string()
        } else {
            format!("{bad:?}")
        };
        assert!(message(&e).contains(&want), "exec {bad:?}: {e:?}");
    }
    kill_wait_delete(&shim, "ids1", "").await;
    still_serves(&shim, "ids2").await;
    shim.stop().await;
}

/// A 10 MB config.json and one nested 100 000 arrays deep are InvalidArgument naming the limit;
/// the server survives (no stack overflow) and serves the next task.
#[tokio::test]
async fn huge_or_deep_config_json_is_refused_and_the_shim_stays_up() {
    let good = Bundle::new("cfg0", &["true"]).unwrap();
    let shim = ShimProc::start(&good).await.unwrap();

    let big = Bundle::new("cfg1", &["true"]).unwrap();
    let cfg = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": process_json(&["true"], serde_json::json!({"uid": 0, "gid": 0})),
        "annotations": {"big": "x".repeat(TEN_MB)},
    });
    write_config(&big, cfg.to_string().as_bytes());
    let e = shim
        .client
        .create(create_req("cfg1", &big), RPC)
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::INVALID_ARGUMENT, "{e:?}");
    assert!(
        message(&e).contains("over the size limit of 4194304 bytes"),
        "{e:?}"
    );

    let deep = Bundle::new("cfg2", &["true"]).unwrap();
    let text = format!(
        r#"{{"ociVersion":"1.0.2","process":{},"annotations":{{"deep":{}{}}}}}"#,
        process_json(&["true"], serde_json::json!({"uid": 0, "gid": 0})),
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    write_config(&deep, text.as_bytes());
    let e = shim
        .client
        .create(create_req("cfg2", &deep), RPC)
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::INVALID_ARGUMENT, "{e:?}");
    assert!(
        message(&e).contains("recursion limit exceeded")
            && message(&e).contains("limit of 128 levels"),
        "{e:?}"
    );

    assert!(shim.alive(), "the shim died on a bad config.json");
    still_serves(&shim, "cfg3").await;
    shim.stop().await;
}

/// Writes one ttrpc request frame by hand (the client library refuses to send over 4 MiB) and
/// reads the response frame's status.
fn raw_request(address: &str, method: &str, payload: Vec<u8>) -> ttrpc::Response {
    let req = ttrpc::Request {
        service: "containerd.task.v2.Task".into(),
        method: method.into(),
        payload,
        timeout_nano: RPC.as_nanos() as i64,
        ..Default::default()
    };
    let body = req.write_to_bytes().unwrap();
    let mut s = UnixStream::connect(address.trim_start_matches("unix://")).unwrap();
    s.set_read_timeout(Some(RPC)).unwrap();
    s.set_write_timeout(Some(RPC)).unwrap();
    let mut frame = Vec::with_capacity(10 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&1u32.to_be_bytes()); // stream id (odd: client side)
    frame.push(1); // request
    frame.push(0); // flags
    frame.extend_from_slice(&body);
    s.write_all(&frame).unwrap();
    let mut header = [0u8; 10];
    s.read_exact(&mut header).unwrap();
    let len = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
    assert_eq!(header[8], 2, "not a response frame: {header:?}");
    let mut resp = vec![0u8; len];
    s.read_exact(&mut resp).unwrap();
    ttrpc::Response::parse_from_bytes(&resp).unwrap()
}

/// A 10 MB exec spec is refused with InvalidArgument naming the 4 MiB message limit (ttrpc's,
/// before the shim parses anything); a deeply nested one is refused by the spec parser naming
/// the depth limit. The task and the server are untouched.
#[tokio::test]
async fn huge_or_deep_exec_spec_is_refused_and_the_shim_stays_up() {
    let bundle = Bundle::new("ex0", &["sleep", "30"]).unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    let init = shim
        .client
        .create(create_req("ex0", &bundle), RPC)
        .await
        .unwrap()
        .pid;
    shim.start_task("ex0").await;

    let mut spec = process_json(&["true"], serde_json::json!({"uid": 0, "gid": 0}));
    spec["env"] = serde_json::json!([format!("BIG={}", "x".repeat(TEN_MB))]);
    let req = ExecProcessRequest {
        id: "ex0".into(),
        exec_id: "big".into(),
        spec: Some(exec_any(serde_json::to_vec(&spec).unwrap())).into(),
        ..Default::default()
    };
    let address = shim.address.clone();
    let payload = req.write_to_bytes().unwrap();
    assert!(payload.len() > TEN_MB);
    let resp = tokio::task::spawn_blocking(move || raw_request(&address, "Exec", payload))
        .await
        .unwrap();
    let status = resp.status.into_option().unwrap_or_default();
    assert_eq!(
        status.code.enum_value_or_default(),
        ttrpc::Code::INVALID_ARGUMENT,
        "{status:?}"
    );
    assert!(
        status
            .message
            .contains("exceed maximum message size of 4194304"),
        "{status:?}"
    );

    let deep = format!(
        r#"{{"args":["true"],"cwd":"/","user":{{"uid":0,"gid":0}},"env":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let e = shim
        .client
        .exec(
            ExecProcessRequest {
                id: "ex0".into(),
                exec_id: "deep".into(),
                spec: Some(exec_any(deep.into_bytes())).into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::INVALID_ARGUMENT, "{e:?}");
    assert!(
        message(&e).contains("exec deep spec") && message(&e).contains("limit of 128 levels"),
        "{e:?}"
    );

    assert!(shim.alive(), "the shim died on a bad exec spec");
    assert!(pid_alive(init as i32), "the task died");
    let st = shim.state_task("ex0").await;
    assert_eq!(st.status.enum_value_or_default(), Status::RUNNING);
    kill_wait_delete(&shim, "ex0", "").await;
    still_serves(&shim, "ex1").await;
    shim.stop().await;
}
