//! Bad shims (scripts written into temp dirs): each fails with a clear error within its bound,
//! the harness never hangs or panics, and nothing is left running.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_shim_not_executable() -> Result<()> {
    let b = bad_setup(Dialect::V2_0, "noexec").await?;
    let shim = script(
        b.dir.path(),
        "containerd-shim-noexec-v2",
        "echo unix:///x",
        false,
    )?;
    let t0 = Instant::now();
    let err = b
        .mock
        .launch(&shim, &b.bundle, LaunchOptions::default())
        .await
        .err()
        .context("a non-executable shim launched")?;
    ensure!(matches!(err, LaunchError::Binary { .. }), "{err:?}");
    ensure!(err.to_string().contains("not executable"), "{err}");
    ensure!(
        err.to_string().contains("containerd-shim-noexec-v2"),
        "{err}"
    );
    ensure!(t0.elapsed() < ms(500));
    let missing = b
        .mock
        .launch(
            &b.dir.path().join("nope"),
            &b.bundle,
            LaunchOptions::default(),
        )
        .await
        .err()
        .context("a missing shim launched")?;
    ensure!(missing.to_string().contains("nope"), "{missing}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_shim_exits_non_zero_at_start() -> Result<()> {
    let b = bad_setup(Dialect::V2_0, "exit3").await?;
    let shim = script(
        b.dir.path(),
        "shim",
        "echo $$ >> pids; echo 'cannot start: no runtime' >&2; exit 3",
        true,
    )?;
    let t0 = Instant::now();
    let err = b
        .mock
        .launch(&shim, &b.bundle, LaunchOptions::default())
        .await
        .err()
        .context("launched")?;
    match &err {
        LaunchError::StartFailed { output, status } => {
            ensure!(
                *status == 3 && output == "cannot start: no runtime",
                "{err:?}"
            );
        }
        other => bail!("unexpected {other:?}"),
    }
    ensure!(
        err.to_string() == "start failed: cannot start: no runtime: exit status 3",
        "{err}"
    );
    ensure!(t0.elapsed() < Duration::from_secs(5));
    assert_all_gone(&recorded_pids(&b.bundle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_shim_prints_garbage() -> Result<()> {
    let b = bad_setup(Dialect::V1_7, "garbage").await?;
    let shim = script(b.dir.path(), "shim", "echo 'hello, I am a shim!'", true)?;
    let err = b
        .mock
        .launch(&shim, &b.bundle, LaunchOptions::default())
        .await
        .err()
        .context("launched")?;
    ensure!(
        matches!(
            &err,
            LaunchError::Address {
                reason: AddressError::NotAnAddress { .. },
                ..
            }
        ),
        "{err:?}"
    );
    ensure!(err.to_string().contains("hello, I am a shim!"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_shim_never_prints_is_bounded_and_killed() -> Result<()> {
    let b = bad_setup(Dialect::V2_0, "silent").await?;
    // A child that keeps the output pipe open, as a daemon that forgot to detach would.
    let shim = script(
        b.dir.path(),
        "shim",
        "sleep 60 & echo $! >> pids; echo $$ >> pids; wait",
        true,
    )?;
    let t0 = Instant::now();
    let err = b
        .mock
        .launch(&shim, &b.bundle, LaunchOptions::default())
        .await
        .err()
        .context("launched")?;
    let took = t0.elapsed();
    ensure!(matches!(err, LaunchError::StartTimeout { .. }), "{err:?}");
    ensure!(
        err.to_string().contains("did not finish within 5s"),
        "{err}"
    );
    ensure!(took < Duration::from_secs(8), "took {took:?}");
    let pids = recorded_pids(&b.bundle);
    ensure!(pids.len() == 2, "pids {pids:?}");
    assert_all_gone(&pids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_shim_writes_to_stderr_during_start() -> Result<()> {
    let runc = require(
        RUNC_SHIM,
        "run ci/setup.sh (apt-get install containerd runc)",
    )?;
    let b = bad_setup(Dialect::V2_0, "chatty").await?;
    // The real runc shim, but something logs to stderr first: CombinedOutput mixes it in.
    let shim = script(
        b.dir.path(),
        "shim",
        &format!(
            "echo 'level=info msg=\"starting shim\"' >&2\nexec {} \"$@\"",
            runc.display()
        ),
        true,
    )?;
    let err = b
        .mock
        .launch(&shim, &b.bundle, LaunchOptions::default())
        .await
        .err()
        .context("launched")?;
    let LaunchError::Address { reason, killed } = &err else {
        bail!("unexpected {err:?}");
    };
    ensure!(
        matches!(reason, AddressError::NotAnAddress { .. }),
        "{reason:?}"
    );
    ensure!(err.to_string().contains("starting shim"), "{err}");
    // The server the runc shim started is found through its socket and ended.
    ensure!(
        !killed.is_empty(),
        "leaked runc shim server not found: {err}"
    );
    assert_all_gone(killed)?;
    let addr = std::fs::read_to_string(b.bundle.path().join("address"))?;
    let sock = harness::dialect::socket_path(addr.trim()).context("address file")?;
    ensure!(!sock.exists(), "socket {} left", sock.display());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_shim_server_never_answers() -> Result<()> {
    let b = bad_setup(Dialect::V2_0, "mute").await?;
    let shim = silent_server_shim(b.dir.path(), "@ADDR@")?;
    let s = b
        .mock
        .launch(&shim, &b.bundle, LaunchOptions::default())
        .await
        .context("launch of a shim whose server accepts but never answers")?;
    let helper = recorded_pids(&b.bundle);
    ensure!(helper.len() == 1, "{helper:?}");
    ensure!(
        s.pid == Some(helper[0]),
        "server pid {:?} vs {helper:?}",
        s.pid
    );
    ensure!(s.api == TaskApi::V2);
    let t0 = Instant::now();
    let err = s
        .client()
        .create(
            b.bundle.create_request(Default::default(), false, None),
            tight().rpc,
        )
        .await
        .err()
        .context("create answered")?;
    let took = t0.elapsed();
    ensure!(matches!(err, RpcError::Timeout(_)), "{err:?}");
    ensure!(err.code_name() == "deadline-exceeded");
    ensure!(took < Duration::from_secs(5), "took {took:?}");
    let t1 = Instant::now();
    let report = s.close().await;
    ensure!(
        t1.elapsed() < Duration::from_secs(8),
        "close took {:?}",
        t1.elapsed()
    );
    let de = report
        .delete_action
        .as_ref()
        .err()
        .context("delete action succeeded")?;
    ensure!(
        de.contains("nothing to delete") && de.contains("exit status 1"),
        "{de}"
    );
    ensure!(report.sent_shutdown && !report.server_exited);
    ensure!(
        report
            .leaks
            .iter()
            .any(|l| l.pid == Some(helper[0]) && l.cleaned),
        "leaks {:#?}",
        report.leaks
    );
    ensure!(report.synthetic_events.is_empty(), "no task was created");
    let sock = b.bundle.path().join("s.sock");
    ensure!(
        report
            .leaks
            .iter()
            .any(|l| l.kind == leaks::LeakKind::Socket && l.path.as_deref() == Some(&*sock)),
        "socket leak not reported: {:#?}",
        report.leaks
    );
    ensure!(!sock.exists());
    assert_all_gone(&helper)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bootstrap_under_1_6_is_refused_and_its_server_ended() -> Result<()> {
    let b = bad_setup(Dialect::V1_6, "json16").await?;
    let shim = silent_server_shim(
        b.dir.path(),
        r#"{\"version\":3,\"address\":\"@ADDR@\",\"protocol\":\"ttrpc\"}"#,
    )?;
    let err = b
        .mock
        .launch(&shim, &b.bundle, LaunchOptions::default())
        .await
        .err()
        .context("launched under 1.6")?;
    ensure!(
        err.to_string()
            .starts_with("start printed a JSON bootstrap; containerd 1.6 dials it as a path"),
        "{err}"
    );
    let helper = recorded_pids(&b.bundle);
    let LaunchError::Address { killed, .. } = &err else {
        bail!("{err:?}")
    };
    ensure!(killed == &helper, "killed {killed:?}, started {helper:?}");
    assert_all_gone(&helper)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_version_3_under_1_7_is_unsupported() -> Result<()> {
    let b = bad_setup(Dialect::V1_7, "json17").await?;
    let shim = silent_server_shim(
        b.dir.path(),
        r#"{\"version\":3,\"address\":\"@ADDR@\",\"protocol\":\"ttrpc\"}"#,
    )?;
    let err = b
        .mock
        .launch(&shim, &b.bundle, LaunchOptions::default())
        .await
        .err()
        .context("launched under 1.7")?;
    ensure!(
        err.to_string().contains("unsupported shim version (3)"),
        "{err}"
    );
    assert_all_gone(&recorded_pids(&b.bundle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreaped_children_of_a_shim_are_reported_as_zombies() -> Result<()> {
    let b = bad_setup(Dialect::V2_0, "zombie").await?;
    let shim = silent_server_shim(b.dir.path(), "@ADDR@")?;
    let s = b
        .mock
        .launch(
            &shim,
            &b.bundle,
            LaunchOptions {
                extra_env: vec![("HARNESS_TEST_ZOMBIE".into(), "1".into())],
                ..Default::default()
            },
        )
        .await?;
    let server = s.pid.context("server pid")?;
    // Wait until the server's child has exited unreaped.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !procfs::descendants(server, None)
        .iter()
        .any(|d| d.state == 'Z')
    {
        ensure!(
            Instant::now() < deadline,
            "no zombie appeared under {server}"
        );
        tokio::time::sleep(ms(20)).await;
    }
    let report = s.close().await;
    let zombies: Vec<_> = report
        .leaks
        .iter()
        .filter(|l| l.kind == leaks::LeakKind::Zombie)
        .collect();
    ensure!(zombies.len() == 1, "leaks {:#?}", report.leaks);
    ensure!(
        zombies[0].detail.contains(&format!("parent {server}")),
        "{:?}",
        zombies[0]
    );
    assert_all_gone(&recorded_pids(&b.bundle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_shim_prints_an_address_nobody_listens_on() -> Result<()> {
    let b = bad_setup(Dialect::V2_0, "nolisten").await?;
    let shim = script(
        b.dir.path(),
        "shim",
        "printf unix:///nonexistent/s.sock",
        true,
    )?;
    let t0 = Instant::now();
    let err = b
        .mock
        .launch(&shim, &b.bundle, LaunchOptions::default())
        .await
        .err()
        .context("launched")?;
    ensure!(matches!(err, LaunchError::Connect { .. }), "{err:?}");
    ensure!(
        err.to_string()
            .starts_with("connecting to unix:///nonexistent/s.sock"),
        "{err}"
    );
    ensure!(t0.elapsed() < Duration::from_secs(3));
    Ok(())
}
