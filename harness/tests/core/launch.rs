//! The launch as seen from inside a recording shim (argv, env, cwd, stdin, setpgid, `log` FIFO,
//! `delete` argv) per dialect, and the legacy publish route.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_matches_each_dialect_argv_env_cwd_stdin_and_log_fifo() -> Result<()> {
    for (dialect, debug) in [
        (Dialect::V1_6, true),
        (Dialect::V1_7, false),
        (Dialect::V2_0, true),
    ] {
        let id = format!("rec{}", dialect.to_string().replace('.', ""));
        let mock = MockContainerd::new(MockConfig {
            dialect,
            namespace: "probe".into(),
            debug,
            timeouts: tight(),
        })
        .await?;
        let bundle = Bundle::create(
            &mock.bundle_parent(),
            &id,
            process(&["true"]),
            BundleOptions::default(),
        )?;
        let dir = tempfile::tempdir()?;
        let shim = recorder_shim(dir.path())?;
        let opts = protobuf::well_known_types::any::Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: b"\x12\x0f/run/ctd/rt.toml".to_vec(),
            ..Default::default()
        };
        let s = mock
            .launch(
                &shim,
                &bundle,
                LaunchOptions {
                    runtime_options: Some(opts.clone()),
                    extra_env: vec![("RUNTIME_ENV".into(), "from-config".into())],
                    bootstrap: None,
                },
            )
            .await
            .with_context(|| format!("launch under {dialect}"))?;
        let pb = mock.publish_binary().display().to_string();
        ensure!(
            mock.publish_binary()
                .file_name()
                .is_some_and(|n| n == "harness"),
            "-publish-binary is {pb}, not the harness binary"
        );
        let argv: Vec<String> = read(&bundle, "argv")?.lines().map(String::from).collect();
        ensure!(
            argv == dialect.start_argv("probe", mock.grpc_address(), &pb, &id, debug),
            "{dialect} argv {argv:?}"
        );
        let env = read(&bundle, "env")?;
        let has = |kv: &str| env.lines().any(|l| l == kv);
        ensure!(has("GOMAXPROCS=2"), "{dialect} env lacks GOMAXPROCS=2");
        ensure!(has(&format!("TTRPC_ADDRESS={}", mock.ttrpc_address())));
        ensure!(has("RUNTIME_ENV=from-config"));
        let newer = dialect != Dialect::V1_6;
        ensure!(
            has("MAX_SHIM_VERSION=2") == newer,
            "{dialect} MAX_SHIM_VERSION"
        );
        ensure!(has("NAMESPACE=probe") == newer, "{dialect} NAMESPACE");
        ensure!(
            has(&format!("GRPC_ADDRESS={}", mock.grpc_address())) == newer,
            "{dialect} GRPC_ADDRESS"
        );
        ensure!(read(&bundle, "cwd")?.trim() == bundle.path().display().to_string());
        let stdin = std::fs::read(bundle.path().join("stdin.bin"))?;
        ensure!(
            stdin == protobuf::Message::write_to_bytes(&opts)?,
            "stdin {stdin:?}"
        );
        // setpgid: the start process leads its own group.
        ensure!(read(&bundle, "pgid")?.trim() == read(&bundle, "pid")?.trim());
        ensure!(
            read(&bundle, "log.kind")?.trim() == "fifo",
            "log was not a FIFO"
        );
        let drained = s.log_lines();
        ensure!(
            drained.iter().any(|l| l == "hello from start"),
            "log lines {drained:?}"
        );
        ensure!(
            std::fs::read_to_string(bundle.path().join("shim-binary-path"))?
                == shim.display().to_string()
        );
        let bootstrap = bundle.path().join("bootstrap.json");
        if dialect == Dialect::V2_0 {
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&bootstrap)?)?;
            ensure!(
                v["version"] == 2 && v["address"] == s.address.as_str(),
                "{v}"
            );
        } else {
            ensure!(!bootstrap.exists(), "{dialect} wrote bootstrap.json");
        }
        let report = s.close().await;
        ensure!(report.delete_action.is_ok(), "{:?}", report.delete_action);
        let dargv: Vec<String> = read(&bundle, "delete.argv")?
            .lines()
            .map(String::from)
            .collect();
        let b = bundle.path().display().to_string();
        ensure!(
            dargv == dialect.delete_argv("probe", mock.grpc_address(), &pb, &id, &b, debug),
            "{dialect} delete argv {dargv:?}"
        );
        ensure!(read(&bundle, "delete.cwd")?.trim() == b);
        // The silent listener never exits on its own: reported, ended, its socket removed.
        let kinds: Vec<_> = report.leaks.iter().map(|l| l.kind).collect();
        ensure!(
            kinds.contains(&leaks::LeakKind::Process) && kinds.contains(&leaks::LeakKind::Socket),
            "{dialect} leaks {:#?}",
            report.leaks
        );
        ensure!(
            report.leaks.iter().all(|l| l.cleaned),
            "{:#?}",
            report.leaks
        );
        assert_all_gone(&recorded_pids(&bundle))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_without_runtime_options_gives_an_empty_stdin() -> Result<()> {
    let mock = MockContainerd::new(MockConfig {
        timeouts: tight(),
        ..Default::default()
    })
    .await?;
    let bundle = Bundle::create(
        &mock.bundle_parent(),
        "nostdin",
        process(&["true"]),
        Default::default(),
    )?;
    let dir = tempfile::tempdir()?;
    let s = mock
        .launch(
            &recorder_shim(dir.path())?,
            &bundle,
            LaunchOptions::default(),
        )
        .await?;
    ensure!(std::fs::read(bundle.path().join("stdin.bin"))?.is_empty());
    drop(s); // dropping without close still ends the server
    assert_all_gone(&recorded_pids(&bundle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_binary_route_feeds_the_same_log() -> Result<()> {
    use containerd_shim_protos::events::task::TaskOOM;
    use harness::events::TaskEvent;
    let mock = MockContainerd::new(MockConfig::default()).await?;
    let any = TaskEvent::Oom(TaskOOM {
        container_id: "c9".into(),
        ..Default::default()
    })
    .to_any()
    .context("any")?;
    let bytes = protobuf::Message::write_to_bytes(&any)?;
    let bin = env!("CARGO_BIN_EXE_harness");
    let run = |topic: &str, ns: &str| {
        let mut child = std::process::Command::new(bin)
            .args([
                "--address",
                mock.grpc_address(),
                "publish",
                "--topic",
                topic,
                "--namespace",
                ns,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        std::io::Write::write_all(child.stdin.as_mut().context("stdin")?, &bytes)?;
        drop(child.stdin.take());
        let out = child.wait_with_output()?;
        anyhow::Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        ))
    };
    let (ok, err) = tokio::task::block_in_place(|| run("/tasks/oom", "default"))?;
    ensure!(ok, "publish failed: {err}");
    let evs = mock.events().snapshot();
    ensure!(evs.len() == 1, "{evs:?}");
    ensure!(evs[0].source == EventSource::PublishBinary && evs[0].topic == "/tasks/oom");
    ensure!(evs[0].fields["container-id"] == "c9");
    // containerd validates the topic: a bad one is refused and the command fails.
    let (ok, err) = tokio::task::block_in_place(|| run("tasks/oom", "default"))?;
    ensure!(
        !ok && err.contains("must start with '/'"),
        "bad topic accepted: {err}"
    );
    ensure!(mock.events().rejected().len() == 1);
    Ok(())
}

/// One recorded call: service name, metadata pairs, `timeout_nano`.
type Call = (String, Vec<(String, String)>, i64);

/// An in-process fake shim server recording, per call, which service name was used, the
/// request metadata and its deadline.
#[derive(Clone, Default)]
struct Recorder {
    label: &'static str,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Call>>>,
}

#[async_trait::async_trait]
impl containerd_shim_protos::shim_async::Task for Recorder {
    async fn create(
        &self,
        ctx: &ttrpc::r#async::TtrpcContext,
        _req: containerd_shim_protos::api::CreateTaskRequest,
    ) -> ttrpc::Result<containerd_shim_protos::api::CreateTaskResponse> {
        let md = ctx
            .metadata
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
            .collect();
        self.seen
            .lock()
            .unwrap()
            .push((self.label.to_string(), md, ctx.timeout_nano));
        Ok(containerd_shim_protos::api::CreateTaskResponse {
            pid: 42,
            ..Default::default()
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_requests_use_the_dialects_service_name_metadata_and_deadline() -> Result<()> {
    use containerd_shim_protos::shim_async::create_task;
    let cases = [
        (Dialect::V1_6, false, "containerd.task.v2.Task", false),
        (Dialect::V1_7, false, "containerd.task.v2.Task", true),
        (Dialect::V2_0, false, "containerd.task.v2.Task", true),
        (Dialect::V2_0, true, "containerd.task.v3.Task", true),
    ];
    for (n, (dialect, json_v3, want_service, want_md)) in cases.into_iter().enumerate() {
        let dir = tempfile::tempdir()?;
        let sock = dir.path().join("fake.sock");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let v2 = Recorder {
            label: "containerd.task.v2.Task",
            seen: seen.clone(),
        };
        let v3 = Recorder {
            label: "containerd.task.v3.Task",
            seen: seen.clone(),
        };
        let mut services = create_task(std::sync::Arc::new(v3));
        let v2svc = create_task(std::sync::Arc::new(v2))
            .remove("containerd.task.v3.Task")
            .context("generated service name")?;
        services.insert("containerd.task.v2.Task".into(), v2svc);
        let mut server = ttrpc::r#async::Server::new()
            .bind(&format!("unix://{}", sock.display()))?
            .register_service(services);
        server.start().await?;
        let addr = format!("unix://{}", sock.display());
        let print = if json_v3 {
            format!(r#"{{\"version\":3,\"address\":\"{addr}\",\"protocol\":\"ttrpc\"}}"#)
        } else {
            addr.clone()
        };
        let shim = script(
            dir.path(),
            "fake",
            &format!("case \"$*\" in *delete) exit 0;; esac\nprintf '%s' \"{print}\""),
            true,
        )?;
        let mock = MockContainerd::new(MockConfig {
            dialect,
            namespace: "ns1".into(),
            debug: false,
            timeouts: tight(),
        })
        .await?;
        let id = format!("fake{n}");
        let bundle = Bundle::create(
            &mock.bundle_parent(),
            &id,
            process(&["true"]),
            Default::default(),
        )?;
        let s = mock
            .launch(&shim, &bundle, LaunchOptions::default())
            .await?;
        let r = s
            .client()
            .create(
                bundle.create_request(Default::default(), false, None),
                Duration::from_secs(3),
            )
            .await?;
        ensure!(r.pid == 42);
        let got = seen.lock().unwrap().clone();
        ensure!(got.len() == 1, "{dialect}: {got:?}");
        let (service, md, deadline) = &got[0];
        ensure!(
            service == want_service,
            "{dialect} json_v3={json_v3}: called {service}"
        );
        let ns_md = md
            .iter()
            .any(|(k, v)| k == "containerd-namespace-ttrpc" && v == "ns1");
        ensure!(ns_md == want_md, "{dialect}: metadata {md:?}");
        ensure!(
            *deadline > 0 && *deadline <= 3_000_000_000,
            "{dialect}: timeout_nano {deadline}"
        );
        // The fake server lives in this process: the leak check must not touch it.
        let report = s.close().await;
        ensure!(
            report.leaks.iter().all(|l| l.pid.is_none()),
            "{:#?}",
            report.leaks
        );
        server.shutdown().await?;
    }
    Ok(())
}
