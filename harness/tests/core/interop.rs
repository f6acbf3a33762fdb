//! Interop with the Rust runc shim (`cargo install containerd-runc-shim`): passes the
//! lifecycle under 2.0, is refused under 1.6 and 1.7. Ignored by default; run by ci/interop.sh.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs containerd-shim-runc-v2-rs (about 6 min to build); run ci/interop.sh"]
async fn interop_runc_rs_lifecycle_dialect_2_0() -> Result<()> {
    lifecycle(
        &runc_rs()?,
        Dialect::V2_0,
        RootfsKind::Busybox,
        "rs20",
        Some(TaskApi::V3),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs containerd-shim-runc-v2-rs (about 6 min to build); run ci/interop.sh"]
async fn interop_runc_rs_is_incompatible_with_1_6() -> Result<()> {
    let shim = runc_rs()?;
    let b = bad_setup(Dialect::V1_6, "rs16").await?;
    let err = b
        .mock
        .launch(&shim, &b.bundle, LaunchOptions::default())
        .await
        .err()
        .context("the Rust runc shim launched under containerd 1.6")?;
    let LaunchError::Address { reason, killed } = &err else {
        bail!("unexpected {err:?}")
    };
    ensure!(
        matches!(reason, AddressError::JsonOn16 { .. }),
        "{reason:?}"
    );
    ensure!(
        err.to_string()
            .starts_with("start printed a JSON bootstrap; containerd 1.6 dials it as a path"),
        "{err}"
    );
    // As under the real containerd 1.6 the server was started; the harness finds and ends it.
    ensure!(!killed.is_empty(), "leaked server not found: {err}");
    assert_all_gone(killed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs containerd-shim-runc-v2-rs (about 6 min to build); run ci/interop.sh"]
async fn interop_runc_rs_is_unsupported_under_1_7() -> Result<()> {
    let shim = runc_rs()?;
    let b = bad_setup(Dialect::V1_7, "rs17").await?;
    let err = b
        .mock
        .launch(&shim, &b.bundle, LaunchOptions::default())
        .await
        .err()
        .context("the Rust runc shim launched under containerd 1.7")?;
    let LaunchError::Address { reason, killed } = &err else {
        bail!("unexpected {err:?}")
    };
    ensure!(
        *reason == AddressError::UnsupportedVersion { version: 3 },
        "{reason:?}"
    );
    ensure!(!killed.is_empty(), "leaked server not found: {err}");
    assert_all_gone(killed)
}
