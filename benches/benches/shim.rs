//! criterion latency benches, one group per measure with every shim in it (the stub, the reaper,
//! the Go runc shim): handshake, lifecycle, rpc/state (with the bare ttrpc baseline that shows
//! the protocol's own cost), exec, event-delay.
//!
//! `cargo bench -p reaper-benches` measures; `cargo test -p reaper-benches --benches` runs every
//! bench once as a smoke check (what CI does). `BENCH_SKIP_RUNC=1` leaves the Go runc shim out.

use std::time::{Duration, Instant, SystemTime};

use containerd_shim_protos::api::{
    DeleteRequest, ExecProcessRequest, KillRequest, StartRequest, StateRequest, WaitRequest,
};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use harness::bundle::RootfsKind;
use harness::launch::MockContainerd;
use reaper_benches::{
    launch_created, mock, next_id, null_stdio, targets, Baseline, Live, Target, RPC,
};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The JSON OCI Process of `args` as an exec `spec` Any, as containerd sends it.
fn exec_spec(args: &[&str]) -> protobuf::well_known_types::any::Any {
    let p = harness::bundle::process(args);
    protobuf::well_known_types::any::Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
        value: serde_json::to_vec(&p).expect("process json"),
        ..Default::default()
    }
}

fn handshake(g: &mut Group<'_>, rt: &Runtime, t: &Target, m: &MockContainerd) {
    g.bench_function(t.name, |b| {
        b.to_async(rt).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let id = next_id("hs");
                let bundle = harness::bundle::Bundle::create(
                    &m.bundle_parent(),
                    &id,
                    harness::bundle::process(&["true"]),
                    harness::bundle::BundleOptions {
                        rootfs: t.rootfs,
                        ..Default::default()
                    },
                )
                .expect("bundle");
                let t0 = Instant::now();
                let shim = m
                    .launch(&t.path, &bundle, Default::default())
                    .await
                    .expect("launch");
                total += t0.elapsed();
                let report = shim.close().await;
                assert!(report.leaks.is_empty(), "leaks: {:?}", report.leaks);
            }
            total
        })
    });
}

fn lifecycle(g: &mut Group<'_>, rt: &Runtime, t: &Target, m: &MockContainerd) {
    g.bench_function(t.name, |b| {
        b.to_async(rt).iter_custom(|iters| async move {
            let t0 = Instant::now();
            for _ in 0..iters {
                let live = launch_created(m, t, &next_id("lc"), &["true"])
                    .await
                    .expect("launch+create");
                live.start().await.expect("start");
                live.finish(false)
                    .await
                    .expect("wait, delete, shutdown, close");
            }
            t0.elapsed()
        })
    });
}

/// A running task that sleeps; the caller ends it with `finish(true)`.
fn sleeper(rt: &Runtime, t: &Target, m: &MockContainerd) -> Live {
    rt.block_on(async {
        let live = launch_created(m, t, &next_id("sl"), &["sleep", "1000"])
            .await
            .expect("launch+create");
        live.start().await.expect("start");
        live
    })
}

fn rpc_state(g: &mut Group<'_>, rt: &Runtime, t: &Target, m: &MockContainerd) {
    let live = sleeper(rt, t, m);
    let id = live.bundle.id().to_string();
    g.bench_function(t.name, |b| {
        b.to_async(rt).iter(|| {
            let client = live.client.clone();
            let id = id.clone();
            async move {
                client
                    .state(
                        StateRequest {
                            id,
                            ..Default::default()
                        },
                        RPC,
                    )
                    .await
                    .expect("state")
            }
        })
    });
    rt.block_on(live.finish(true)).expect("finish");
}

/// Exec `args` as `exec_id` in the live task and start it.
async fn exec_started(live: &Live, m: &MockContainerd, exec_id: &str, args: &[&str]) {
    let id = live.bundle.id().to_string();
    let stdio = null_stdio(m, exec_id).expect("stdio");
    let (stdin, stdout, stderr) = stdio.paths();
    live.client
        .exec(
            ExecProcessRequest {
                id: id.clone(),
                exec_id: exec_id.into(),
                stdin,
                stdout,
                stderr,
                spec: Some(exec_spec(args)).into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .expect("exec");
    live.client
        .start(
            StartRequest {
                id,
                exec_id: exec_id.into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .expect("start exec");
}

async fn wait_delete_exec(live: &Live, exec_id: &str) -> u32 {
    let id = live.bundle.id().to_string();
    let w = live
        .client
        .wait(
            WaitRequest {
                id: id.clone(),
                exec_id: exec_id.into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .expect("wait exec");
    live.client
        .delete(
            DeleteRequest {
                id,
                exec_id: exec_id.into(),
                ..Default::default()
            },
            RPC,
        )
        .await
        .expect("delete exec");
    w.exit_status
}

fn exec(g: &mut Group<'_>, rt: &Runtime, t: &Target, m: &MockContainerd) {
    let live = sleeper(rt, t, m);
    g.bench_function(t.name, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let live = &live;
            async move {
                let t0 = Instant::now();
                for _ in 0..iters {
                    let e = next_id("e");
                    exec_started(live, m, &e, &["true"]).await;
                    assert_eq!(wait_delete_exec(live, &e).await, 0);
                }
                t0.elapsed()
            }
        })
    });
    rt.block_on(live.finish(true)).expect("finish");
}

fn event_delay(g: &mut Group<'_>, rt: &Runtime, t: &Target, m: &MockContainerd) {
    let live = sleeper(rt, t, m);
    let events = m.events();
    g.bench_function(t.name, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let live = &live;
            let events = events.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // The log of earlier iterations is not needed: waiting on a log that grows
                    // by four events per iteration cost the mock more each time (each wake
                    // copies the log), and that was measured as event delay.
                    events.clear();
                    let e = next_id("k");
                    exec_started(live, m, &e, &["sleep", "1000"]).await;
                    let sent = SystemTime::now();
                    live.client
                        .kill(
                            KillRequest {
                                id: live.bundle.id().into(),
                                exec_id: e.clone(),
                                signal: 9,
                                ..Default::default()
                            },
                            RPC,
                        )
                        .await
                        .expect("kill");
                    let arrived = events
                        .wait_until(
                            |evs| {
                                evs.iter().any(|ev| {
                                    ev.topic == "/tasks/exit"
                                        && ev.fields.get("id").and_then(|v| v.as_str())
                                            == Some(e.as_str())
                                })
                            },
                            RPC,
                        )
                        .await;
                    assert!(arrived, "no /tasks/exit for {e} within {RPC:?}");
                    let ev = events
                        .snapshot()
                        .into_iter()
                        .find(|ev| {
                            ev.topic == "/tasks/exit"
                                && ev.fields.get("id").and_then(|v| v.as_str()) == Some(e.as_str())
                        })
                        .expect("exit event");
                    total += ev.received.duration_since(sent).unwrap_or_default();
                    assert_eq!(wait_delete_exec(live, &e).await, 137);
                }
                total
            }
        })
    });
    rt.block_on(live.finish(true)).expect("finish");
}

fn baseline(g: &mut Group<'_>, rt: &Runtime) {
    let base = rt.block_on(Baseline::start()).expect("bare ttrpc server");
    g.bench_function("bare-ttrpc", |b| {
        b.to_async(rt).iter(|| {
            let client = base.client.clone();
            async move {
                client
                    .state(
                        StateRequest {
                            id: "x".into(),
                            ..Default::default()
                        },
                        RPC,
                    )
                    .await
                    .expect("state")
            }
        })
    });
    rt.block_on(base.stop());
}

/// A group of one measure across shims (ids `<measure>/<shim>`, as before groups).
type Group<'a> = BenchmarkGroup<'a, WallTime>;

/// The shim that does nothing (`src/bin/containerd-shim-stub-v2.rs`): its handshake and
/// lifecycle are what the mock containerd and TTRPC cost, the floor under every other figure.
fn stub() -> Target {
    let t = Target {
        name: "stub",
        path: env!("CARGO_BIN_EXE_containerd-shim-stub-v2").into(),
        rootfs: RootfsKind::None,
    };
    eprintln!("measuring stub: {}", t.path.display());
    t
}

fn benches(c: &mut Criterion) {
    let rt = runtime();
    let shims: Vec<(Target, MockContainerd)> = std::iter::once(stub())
        .chain(targets())
        .map(|t| (t, rt.block_on(mock()).expect("mock containerd")))
        .collect();
    // The stub answers the lifecycle's calls and nothing else.
    let real = || shims.iter().filter(|(t, _)| t.name != "stub");
    let mut g = c.benchmark_group("handshake");
    for (t, m) in &shims {
        handshake(&mut g, &rt, t, m);
    }
    g.finish();
    let mut g = c.benchmark_group("lifecycle");
    for (t, m) in &shims {
        lifecycle(&mut g, &rt, t, m);
    }
    g.finish();
    let mut g = c.benchmark_group("rpc/state");
    baseline(&mut g, &rt);
    for (t, m) in real() {
        rpc_state(&mut g, &rt, t, m);
    }
    g.finish();
    let mut g = c.benchmark_group("exec");
    for (t, m) in real() {
        exec(&mut g, &rt, t, m);
    }
    g.finish();
    let mut g = c.benchmark_group("event-delay");
    for (t, m) in real() {
        event_delay(&mut g, &rt, t, m);
    }
    g.finish();
    for (_, m) in shims {
        rt.block_on(m.shutdown());
    }
}

criterion_group! {
    name = shim;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(shim);
