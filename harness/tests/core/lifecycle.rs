//! Full lifecycles through the library API against real shims (Debian's runc shim with a
//! busybox rootfs, the bundled reaper shim), a shim killed while its task exists, a terminal.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_runc_shim_dialect_2_0() -> Result<()> {
    let shim = require(
        RUNC_SHIM,
        "run ci/setup.sh (apt-get install containerd runc)",
    )?;
    lifecycle(
        &shim,
        Dialect::V2_0,
        RootfsKind::Busybox,
        "runc20",
        Some(TaskApi::V2),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_runc_shim_dialect_1_6() -> Result<()> {
    let shim = require(
        RUNC_SHIM,
        "run ci/setup.sh (apt-get install containerd runc)",
    )?;
    lifecycle(
        &shim,
        Dialect::V1_6,
        RootfsKind::Busybox,
        "runc16",
        Some(TaskApi::V2),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_runc_shim_dialect_1_7() -> Result<()> {
    let shim = require(
        RUNC_SHIM,
        "run ci/setup.sh (apt-get install containerd runc)",
    )?;
    lifecycle(
        &shim,
        Dialect::V1_7,
        RootfsKind::Busybox,
        "runc17",
        Some(TaskApi::V2),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_reaper_shim_dialect_2_0() -> Result<()> {
    let shim = reaper_shim()?;
    lifecycle(&shim, Dialect::V2_0, RootfsKind::None, "reaper20", None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_reaper_shim_dialect_1_6() -> Result<()> {
    let shim = reaper_shim()?;
    lifecycle(
        &shim,
        Dialect::V1_6,
        RootfsKind::None,
        "reaper16",
        Some(TaskApi::V2),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_shim_gets_containerds_synthetic_exit_and_delete() -> Result<()> {
    let runc = require(
        RUNC_SHIM,
        "run ci/setup.sh (apt-get install containerd runc)",
    )?;
    let mock = MockContainerd::new(MockConfig::default()).await?;
    let id = "killed9";
    let bundle = Bundle::create(
        &mock.bundle_parent(),
        id,
        process(&["sleep", "30"]),
        BundleOptions {
            rootfs: RootfsKind::Busybox,
            ..Default::default()
        },
    )?;
    let stdio = StdioSet::create(
        &mock.state_dir().join("fifo"),
        id,
        StdioOptions {
            stdin: StdioMode::Null,
            ..Default::default()
        },
    )?;
    let shim = mock
        .launch(&runc, &bundle, LaunchOptions::default())
        .await?;
    let client = shim.client();
    let rpc = Duration::from_secs(10);
    let created = client
        .create(bundle.create_request(stdio.paths(), false, None), rpc)
        .await?;
    client
        .start(
            StartRequest {
                id: id.into(),
                ..Default::default()
            },
            rpc,
        )
        .await?;
    let server = shim.pid.context("server pid unknown")?;
    // The shim dies (as `kill -9 <shim>` in the doc's observation).
    ensure!(harness::pidguard::end_found(server, Duration::from_secs(5)));
    let err = client
        .state(
            StateRequest {
                id: id.into(),
                ..Default::default()
            },
            ms(2000),
        )
        .await
        .err()
        .context("a dead shim answered")?;
    ensure!(err.code_name() == "unavailable", "{err:?}");
    let report = shim.close().await;
    let outcome = report
        .delete_action
        .as_ref()
        .map_err(|e| anyhow::anyhow!("runc delete action: {e}"))?;
    ensure!(outcome.exit_status == 137, "delete action {outcome:?}");
    let syn: Vec<_> = report
        .synthetic_events
        .iter()
        .map(|e| (e.topic.as_str(), e.source, e.fields["exit-status"].clone()))
        .collect();
    ensure!(
        syn == vec![
            ("/tasks/exit", EventSource::Mock, 137.into()),
            ("/tasks/delete", EventSource::Mock, 137.into())
        ],
        "synthetic {syn:?}"
    );
    ensure!(report.synthetic_events[0].fields["container-id"] == id);
    let logged = mock.events().snapshot();
    ensure!(
        topics_for(&logged, id).ends_with(&["/tasks/exit", "/tasks/delete"]),
        "{:?}",
        topics_for(&logged, id)
    );
    // runc delete --force ended the container's process; nothing is left.
    ensure!(
        !procfs::is_alive(created.pid as i32),
        "container init survived"
    );
    ensure!(
        report.leaks.iter().all(|l| l.cleaned),
        "{:#?}",
        report.leaks
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_output_arrives_on_stdout_through_a_pty() -> Result<()> {
    let runc = require(
        RUNC_SHIM,
        "run ci/setup.sh (apt-get install containerd runc)",
    )?;
    let mock = MockContainerd::new(MockConfig::default()).await?;
    let id = "tty1";
    let mut p = process(&["sh", "-c", "tty; exit 5"]);
    p.set_terminal(Some(true));
    let bundle = Bundle::create(
        &mock.bundle_parent(),
        id,
        p,
        BundleOptions {
            rootfs: RootfsKind::Busybox,
            ..Default::default()
        },
    )?;
    let stdio = StdioSet::create(
        &mock.state_dir().join("fifo"),
        id,
        StdioOptions {
            terminal: true,
            ..Default::default()
        },
    )?;
    let (i, o, e) = stdio.paths();
    ensure!(
        !i.is_empty() && !o.is_empty() && e.is_empty(),
        "cio with a tty has no stderr"
    );
    let shim = mock
        .launch(&runc, &bundle, LaunchOptions::default())
        .await?;
    let c = shim.client();
    let rpc = Duration::from_secs(10);
    c.create(bundle.create_request(stdio.paths(), true, None), rpc)
        .await?;
    c.start(
        StartRequest {
            id: id.into(),
            ..Default::default()
        },
        rpc,
    )
    .await?;
    let w = c
        .wait(
            WaitRequest {
                id: id.into(),
                ..Default::default()
            },
            rpc,
        )
        .await?;
    ensure!(w.exit_status == 5, "exit {}", w.exit_status);
    ensure!(
        stdio
            .wait_output(
                |o, _| String::from_utf8_lossy(o).contains("/dev/pts/"),
                ms(5000)
            )
            .await,
        "stdout {:?}",
        String::from_utf8_lossy(&stdio.stdout())
    );
    c.delete(
        DeleteRequest {
            id: id.into(),
            ..Default::default()
        },
        rpc,
    )
    .await?;
    let ev = mock.events().snapshot();
    let create = ev
        .iter()
        .find(|e| e.topic == "/tasks/create")
        .context("no create event")?;
    ensure!(create.fields["io"]["terminal"] == true, "{}", create.fields);
    let report = shim.close().await;
    ensure!(report.sent_shutdown && report.server_exited);
    ensure!(report.leaks.is_empty(), "{:#?}", report.leaks);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_events_are_decoded_with_their_fields() -> Result<()> {
    use harness::client::exec_request;
    use harness::events::TaskEvent;
    let runc = require(
        RUNC_SHIM,
        "run ci/setup.sh (apt-get install containerd runc)",
    )?;
    let mock = MockContainerd::new(MockConfig::default()).await?;
    let id = "exec1";
    let bundle = Bundle::create(
        &mock.bundle_parent(),
        id,
        process(&["sleep", "30"]),
        BundleOptions {
            rootfs: RootfsKind::Busybox,
            ..Default::default()
        },
    )?;
    let fifo = mock.state_dir().join("fifo");
    let null_stdin = StdioOptions {
        stdin: StdioMode::Null,
        ..Default::default()
    };
    let stdio = StdioSet::create(&fifo, id, null_stdin.clone())?;
    let shim = mock
        .launch(&runc, &bundle, LaunchOptions::default())
        .await?;
    let c = shim.client();
    let rpc = Duration::from_secs(10);
    c.create(bundle.create_request(stdio.paths(), false, None), rpc)
        .await?;
    c.start(
        StartRequest {
            id: id.into(),
            ..Default::default()
        },
        rpc,
    )
    .await?;
    let estdio = StdioSet::create(&fifo, "exec1-e1", null_stdin)?;
    let req = exec_request(
        id,
        "e1",
        &process(&["sh", "-c", "echo from-exec; exit 7"]),
        estdio.paths(),
        false,
    )?;
    c.exec(req, rpc).await.context("exec")?;
    let sreq = StartRequest {
        id: id.into(),
        exec_id: "e1".into(),
        ..Default::default()
    };
    let started = c.start(sreq, rpc).await.context("start exec")?;
    let w = c
        .wait(
            WaitRequest {
                id: id.into(),
                exec_id: "e1".into(),
                ..Default::default()
            },
            rpc,
        )
        .await?;
    ensure!(w.exit_status == 7, "exec exit {}", w.exit_status);
    ensure!(
        estdio
            .wait_output(|o, _| o == b"from-exec\n", ms(5000))
            .await,
        "exec stdout {:?}",
        String::from_utf8_lossy(&estdio.stdout())
    );
    let evs = mock.events();
    ensure!(
        evs.wait_until(
            |e| e
                .iter()
                .any(|x| x.topic == "/tasks/exit" && x.fields["id"] == "e1"),
            ms(5000)
        )
        .await,
        "no exec exit event"
    );
    let all = evs.snapshot();
    let added = all
        .iter()
        .find(|e| e.topic == "/tasks/exec-added")
        .context("no exec-added")?;
    ensure!(matches!(added.event, TaskEvent::ExecAdded(_)));
    ensure!(added.fields["exec-id"] == "e1" && added.fields["container-id"] == id);
    let est = all
        .iter()
        .find(|e| e.topic == "/tasks/exec-started")
        .context("no exec-started")?;
    ensure!(est.fields["pid"] == started.pid, "{}", est.fields);
    let exit = all
        .iter()
        .find(|e| e.topic == "/tasks/exit")
        .context("no exit")?;
    ensure!(exit.fields["exit-status"] == 7 && exit.fields["pid"] == started.pid);
    // Clean up as containerd would: kill, wait, delete, then close.
    c.kill(
        KillRequest {
            id: id.into(),
            signal: 9,
            ..Default::default()
        },
        rpc,
    )
    .await?;
    c.wait(
        WaitRequest {
            id: id.into(),
            ..Default::default()
        },
        rpc,
    )
    .await?;
    c.delete(
        DeleteRequest {
            id: id.into(),
            ..Default::default()
        },
        rpc,
    )
    .await?;
    let report = shim.close().await;
    ensure!(report.leaks.is_empty(), "{:#?}", report.leaks);
    Ok(())
}

/// A shim whose `start` says task API v3 while its server speaks only v2: containerd 2.0 dials
/// v3 and every call fails with "service absent" (Go ttrpc: UNIMPLEMENTED `service ...`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_bootstrap_to_a_v2_only_server_is_service_absent() -> Result<()> {
    let runc = require(
        RUNC_SHIM,
        "run ci/setup.sh (apt-get install containerd runc)",
    )?;
    let mock = MockContainerd::new(MockConfig::default()).await?;
    let dir = tempfile::tempdir()?;
    let shim = script(
        dir.path(),
        "v3liar",
        &format!(
            "case \"$*\" in *delete) exec {r} \"$@\";; esac\naddr=$({r} \"$@\") || exit 1\nprintf '{{\"version\":3,\"address\":\"%s\",\"protocol\":\"ttrpc\"}}' \"$addr\"",
            r = runc.display()
        ),
        true,
    )?;
    let bundle = Bundle::create(
        &mock.bundle_parent(),
        "v3liar",
        process(&["true"]),
        BundleOptions {
            rootfs: RootfsKind::Busybox,
            ..Default::default()
        },
    )?;
    let s = mock
        .launch(&shim, &bundle, LaunchOptions::default())
        .await?;
    ensure!(s.api == TaskApi::V3);
    let err = s
        .client()
        .create(
            bundle.create_request(Default::default(), false, None),
            Duration::from_secs(5),
        )
        .await
        .err()
        .context("a v2-only server answered v3")?;
    ensure!(err.is_service_absent(), "{err:?}");
    ensure!(err.code_name() == "unimplemented", "{err:?}");
    let report = s.close().await;
    // Shutdown over v3 fails too, so the server outlives the connection: reported and ended.
    ensure!(report.sent_shutdown && !report.server_exited);
    ensure!(
        report
            .leaks
            .iter()
            .any(|l| l.kind == leaks::LeakKind::Process && l.cleaned),
        "{:#?}",
        report.leaks
    );
    Ok(())
}

/// Two containers grouped into one runc shim server (same `io.kubernetes.cri.sandbox-id`):
/// closing the first leaves the shared server alone; closing the last ends it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_containers_share_one_server_until_the_last_close() -> Result<()> {
    let runc = require(
        RUNC_SHIM,
        "run ci/setup.sh (apt-get install containerd runc)",
    )?;
    let mock = MockContainerd::new(MockConfig::default()).await?;
    let rpc = Duration::from_secs(10);
    let mut shims = vec![];
    let mut keep = vec![];
    for id in ["grp1", "grp2"] {
        let bundle = Bundle::create(
            &mock.bundle_parent(),
            id,
            process(&["sleep", "30"]),
            BundleOptions {
                rootfs: RootfsKind::Busybox,
                annotations: [(
                    "io.kubernetes.cri.sandbox-id".to_string(),
                    "sb1".to_string(),
                )]
                .into(),
            },
        )?;
        let stdio = StdioSet::create(
            &mock.state_dir().join("fifo"),
            id,
            StdioOptions {
                stdin: StdioMode::Null,
                ..Default::default()
            },
        )?;
        let shim = mock
            .launch(&runc, &bundle, LaunchOptions::default())
            .await?;
        let c = shim.client();
        c.create(bundle.create_request(stdio.paths(), false, None), rpc)
            .await?;
        c.start(
            StartRequest {
                id: id.into(),
                ..Default::default()
            },
            rpc,
        )
        .await?;
        shims.push((id, shim));
        keep.push((bundle, stdio));
    }
    ensure!(shims[0].1.address == shims[1].1.address, "not grouped");
    let server = shims[0].1.pid.context("server pid")?;
    ensure!(
        shims[1].1.pid == Some(server),
        "second connection lost the server pid"
    );
    let mut reports = vec![];
    for (id, shim) in shims {
        let c = shim.client();
        c.kill(
            KillRequest {
                id: id.into(),
                signal: 9,
                ..Default::default()
            },
            rpc,
        )
        .await?;
        c.wait(
            WaitRequest {
                id: id.into(),
                ..Default::default()
            },
            rpc,
        )
        .await?;
        c.delete(
            DeleteRequest {
                id: id.into(),
                ..Default::default()
            },
            rpc,
        )
        .await?;
        let report = shim.close().await;
        ensure!(report.leaks.is_empty(), "{id}: {:#?}", report.leaks);
        reports.push((
            report.server_shared,
            report.server_exited,
            procfs::is_alive(server),
        ));
    }
    ensure!(
        reports == vec![(true, false, true), (false, true, false)],
        "(shared, exited, alive) per close: {reports:?}"
    );
    Ok(())
}
