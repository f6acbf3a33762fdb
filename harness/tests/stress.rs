//! The stress mode against the reaper: every lifecycle completes, the shim ends with the file
//! descriptors it had at idle, and nothing is left behind. (Throughput is reported, never
//! asserted: speed targets live in docs/performance.md with the numbers seen.)

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use harness::stress::{self, StressOptions};

fn reaper_shim() -> Result<PathBuf> {
    // A release build can be measured the same way: STRESS_SHIM=target/release/...
    if let Some(p) = std::env::var_os("STRESS_SHIM") {
        return Ok(PathBuf::from(p));
    }
    Ok(testkit::reaper())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shim_stress_completes_and_returns_to_idle_fds() -> Result<()> {
    let report = stress::run(StressOptions {
        shim: reaper_shim()?,
        tasks: 200,
        parallel: 8,
        ..Default::default()
    })
    .await?;
    eprintln!("{}", report.render_human());
    ensure!(report.failed == 0, "failures: {:?}", report.errors);
    ensure!(report.completed == 200, "completed {}", report.completed);
    let idle = report.resources.idle.context("no idle sample")?;
    let end = report.resources.end.context("no end sample")?;
    ensure!(idle.servers == 1 && end.servers == 1, "{idle:?} {end:?}");
    ensure!(
        end.fds == idle.fds,
        "the shim holds {} fds after 200 lifecycles, {} at idle",
        end.fds,
        idle.fds
    );
    ensure!(report.resources.peak.rss_kib >= idle.rss_kib);
    for op in ["create", "start", "wait", "delete", "lifecycle"] {
        let p = report.latency.get(op).with_context(|| format!("no {op}"))?;
        ensure!(p.count == 200 && p.p50_us <= p.p99_us, "{op}: {p:?}");
    }
    ensure!(report.leaks.is_empty(), "leaks: {:?}", report.leaks);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shim_per_task_stress_shuts_every_shim_down() -> Result<()> {
    let report = stress::run(StressOptions {
        shim: reaper_shim()?,
        tasks: 10,
        parallel: 4,
        shim_per_task: true,
        ..Default::default()
    })
    .await?;
    eprintln!("{}", report.render_human());
    ensure!(report.failed == 0, "failures: {:?}", report.errors);
    ensure!(report.completed == 10);
    ensure!(report.latency.get("launch").map(|p| p.count) == Some(10));
    ensure!(report.leaks.is_empty(), "leaks: {:?}", report.leaks);
    Ok(())
}
