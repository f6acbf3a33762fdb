//! Where one `lifecycle` bench iteration spends its wall time, phase by phase (launch, create,
//! start, wait, delete, shutdown, close), as medians over N runs against one shim (the reaper by
//! default); and what the mock's /proc scans cost on this host.
//!
//! `cargo run --release -p reaper-benches --example lifecycle_phases -- [N] [SHIM]`

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use containerd_shim_protos::api::{DeleteRequest, ShutdownRequest, StartRequest, WaitRequest};
use harness::bundle::{process, Bundle, BundleOptions};
use reaper_benches::{mock, next_id, null_stdio, reaper_path, Target, RPC};

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[allow(clippy::print_stdout)]
fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(30);
    let path = match args.next() {
        Some(p) => p.into(),
        None => reaper_path()?,
    };
    let rootfs = if path.to_string_lossy().contains("runc") {
        harness::bundle::RootfsKind::Busybox
    } else {
        harness::bundle::RootfsKind::None
    };
    let t = Target {
        name: "shim",
        path,
        rootfs,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let names = [
        "launch", "create", "start", "wait", "delete", "shutdown", "close", "total",
    ];
    let mut phases: Vec<Vec<Duration>> = vec![vec![]; names.len()];
    rt.block_on(async {
        let m = mock().await?;
        for _ in 0..n {
            let mut at = |i: usize, since: Instant| {
                phases[i].push(since.elapsed());
                Instant::now()
            };
            let t0 = Instant::now();
            let id = next_id("ph");
            let bundle = Bundle::create(
                &m.bundle_parent(),
                &id,
                process(&["true"]),
                BundleOptions {
                    rootfs: t.rootfs,
                    ..Default::default()
                },
            )?;
            let stdio = null_stdio(&m, &id)?;
            let s = Instant::now();
            let shim = m.launch(&t.path, &bundle, Default::default()).await?;
            let c = shim.client();
            let s = at(0, s);
            c.create(bundle.create_request(stdio.paths(), false, None), RPC)
                .await
                .context("create")?;
            let s = at(1, s);
            let waiter = {
                let c = c.clone();
                let w = WaitRequest {
                    id: id.clone(),
                    ..Default::default()
                };
                tokio::spawn(async move { c.wait(w, RPC).await })
            };
            let req = StartRequest {
                id: id.clone(),
                ..Default::default()
            };
            c.start(req, RPC).await.context("start")?;
            let s = at(2, s);
            waiter.await?.context("wait")?;
            let s = at(3, s);
            let d = DeleteRequest {
                id: id.clone(),
                ..Default::default()
            };
            c.delete(d, RPC).await.context("delete")?;
            let s = at(4, s);
            let req = ShutdownRequest {
                id: id.clone(),
                ..Default::default()
            };
            let _ = c.shutdown(req, RPC).await;
            let s = at(5, s);
            let report = shim.close().await;
            at(6, s);
            at(7, t0);
            anyhow::ensure!(report.leaks.is_empty(), "{:?}", report.leaks);
        }
        m.shutdown().await;
        anyhow::Ok(())
    })?;
    for (name, v) in names.iter().zip(phases.iter_mut()) {
        println!(
            "{name:<24} median {:>9.3} ms",
            median(v).as_secs_f64() * 1e3
        );
    }
    let time = |label: &str, f: &dyn Fn()| {
        let s = Instant::now();
        for _ in 0..20 {
            f();
        }
        println!(
            "{label:<24} {:>9.3} ms each",
            s.elapsed().as_secs_f64() * 1e3 / 20.0
        );
    };
    time(
        "/proc stat scan",
        &|| drop(harness::procfs::all_processes()),
    );
    time("descendants(1)", &|| {
        drop(harness::procfs::descendants(1, None))
    });
    let mark = harness::procfs::PidMark::now();
    time("processes since a mark", &|| {
        drop(harness::procfs::processes_since(mark))
    });
    time("socket owners scan", &|| {
        drop(harness::leaks::socket_owners(
            "unix:///run/nonexistent.sock",
        ))
    });
    time("processes_using(/tmp/x)", &|| {
        drop(harness::leaks::processes_using(std::path::Path::new(
            "/tmp/x-nonexistent",
        )))
    });
    Ok(())
}
