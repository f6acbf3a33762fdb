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
    ensure!(leaks::kill_and_wait(server, Duration::from_secs(5)));
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
        !leaks::is_alive(created.pid as i32),
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
