//! Stdio: FIFO output (16 MiB burst intact), stdin with CloseIO, terminals and ResizePty, file://.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use containerd_shim_protos::api::*;

use crate::support::*;

async fn start_and_wait(shim: &ShimProc, id: &str) -> u32 {
    shim.start_task(id).await;
    shim.client
        .wait(
            WaitRequest {
                id: id.into(),
                ..Default::default()
            },
            Duration::from_secs(30),
        )
        .await
        .unwrap()
        .exit_status
}

#[tokio::test]
async fn sixteen_mib_burst_before_exit_is_intact() {
    // seq 1..2300000 is about 16.7 MB, written as fast as possible, then the process exits.
    let bundle = Bundle::new("big1", &["seq", "1", "2300000"]).unwrap();
    let out = bundle.fifo("stdout").unwrap();
    let errp = bundle.fifo("stderr").unwrap();
    let reader = OutFifo::open(&out).unwrap();
    let ereader = OutFifo::open(&errp).unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    let mut req = create_req("big1", &bundle);
    req.stdout = out.display().to_string();
    req.stderr = errp.display().to_string();
    shim.client.create(req, RPC).await.unwrap();
    let h = reader.collect();
    let eh = ereader.collect();
    // Let the pipe fill before anyone reads much: the reader thread is slowed by nothing, but the
    // process exits long before the copy can finish.
    assert_eq!(start_and_wait(&shim, "big1").await, 0);
    let got = join_output(h).await.unwrap();
    let mut want = String::with_capacity(17 << 20);
    for i in 1..=2_300_000u32 {
        want.push_str(&i.to_string());
        want.push('\n');
    }
    assert!(want.len() > 16 << 20);
    assert_eq!(got.len(), want.len(), "output length");
    assert!(got == want.as_bytes(), "output differs");
    assert!(join_output(eh).await.unwrap().is_empty());
    let st = shim.state_task("big1").await;
    assert_eq!(st.stdout, out.display().to_string(), "stdout path echoed");
    assert_eq!(st.stderr, errp.display().to_string());
    shim.stop().await;
}

#[tokio::test]
async fn stdin_reaches_the_process_and_close_io_ends_it() {
    let bundle = Bundle::new("in1", &["cat"]).unwrap();
    let inp = bundle.fifo("stdin").unwrap();
    let out = bundle.fifo("stdout").unwrap();
    // The client's write side (O_RDWR never blocks); kept open so only CloseIO can end stdin.
    let mut writer = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&inp)
        .unwrap();
    let reader = OutFifo::open(&out).unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    let mut req = create_req("in1", &bundle);
    req.stdin = inp.display().to_string();
    req.stdout = out.display().to_string();
    shim.client.create(req, RPC).await.unwrap();
    let h = reader.collect();
    shim.start_task("in1").await;
    writer.write_all(b"hello reaper\n").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let st = shim.state_task("in1").await;
    assert_eq!(
        st.status.enum_value_or_default(),
        Status::RUNNING,
        "cat must still run"
    );
    shim.client
        .close_io(
            CloseIORequest {
                id: "in1".into(),
                stdin: true,
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    let w = shim.wait_task("in1").await;
    assert_eq!(w.exit_status, 0);
    assert_eq!(join_output(h).await.unwrap(), b"hello reaper\n");
    drop(writer);
    shim.stop().await;
}

#[tokio::test]
async fn terminal_process_runs_on_a_resizable_pty() {
    let mut bundle = Bundle::new("tty1", &["true"]).unwrap();
    bundle
        .write_spec(
            &["sh", "-c", "sleep 0.3; tty; stty size"],
            &[PATH_ENV],
            "/",
            true,
        )
        .unwrap();
    let out = bundle.fifo("stdout").unwrap();
    let reader = OutFifo::open(&out).unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    let mut req = create_req("tty1", &bundle);
    req.stdout = out.display().to_string();
    req.terminal = true;
    shim.client.create(req, RPC).await.unwrap();
    let h = reader.collect();
    shim.client
        .resize_pty(
            ResizePtyRequest {
                id: "tty1".into(),
                width: 123,
                height: 45,
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    assert_eq!(start_and_wait(&shim, "tty1").await, 0);
    let text = String::from_utf8(join_output(h).await.unwrap()).unwrap();
    assert!(text.contains("/dev/pts/"), "not on a pty: {text:?}");
    assert!(text.contains("45 123"), "size not applied: {text:?}");
    let st = shim.state_task("tty1").await;
    assert!(st.terminal);
    shim.stop().await;
}

#[tokio::test]
async fn file_uri_appends_stdout_and_stderr_and_resize_without_tty_is_ok() {
    let bundle = Bundle::new("file1", &["sh", "-c", "echo out; echo err >&2"]).unwrap();
    let log = bundle.path().join("task.log");
    std::fs::write(&log, "before\n").unwrap();
    let shim = ShimProc::start(&bundle).await.unwrap();
    let mut req = create_req("file1", &bundle);
    req.stdout = format!("file://{}", log.display());
    req.stderr = format!("file://{}", log.display());
    shim.client.create(req, RPC).await.unwrap();
    shim.client
        .resize_pty(
            ResizePtyRequest {
                id: "file1".into(),
                width: 1,
                height: 1,
                ..Default::default()
            },
            RPC,
        )
        .await
        .unwrap();
    assert_eq!(start_and_wait(&shim, "file1").await, 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text, "before\nout\nerr\n");
    shim.stop().await;
}

#[tokio::test]
async fn binary_logger_gets_stdout_stderr_and_identity() {
    let bundle = Bundle::new("bin1", &["sh", "-c", "echo to-out; echo to-err >&2"]).unwrap();
    let logger = bundle.path().join("logger.sh");
    std::fs::write(
        &logger,
        "#!/bin/sh\nexec 5>&-\necho \"$CONTAINER_NAMESPACE/$CONTAINER_ID\" > \"$2.env\"\n\
         cat <&3 > \"$2.out\" &\ncat <&4 > \"$2.err\" &\nwait\ntouch \"$2.done\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&logger, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let base = bundle.path().join("captured");
    let shim = ShimProc::start(&bundle).await.unwrap();
    let mut req = create_req("bin1", &bundle);
    req.stdout = format!("binary://{}?prefix={}", logger.display(), base.display());
    req.stderr = req.stdout.clone();
    shim.client.create(req, RPC).await.unwrap();
    assert_eq!(start_and_wait(&shim, "bin1").await, 0);
    let done = base.with_extension("done");
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while !done.exists() {
        assert!(std::time::Instant::now() < end, "logger never saw EOF");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let read = |ext: &str| std::fs::read_to_string(base.with_extension(ext)).unwrap();
    assert_eq!(read("out"), "to-out\n");
    assert_eq!(read("err"), "to-err\n");
    assert_eq!(read("env"), "reaper-test/bin1\n");
    shim.stop().await;
}
