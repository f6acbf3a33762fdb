//! The smoke test's images without a registry: one OCI image-layout archive holding a busybox
//! workload image and a pod sandbox ("pause") image over the same single layer (the host's static
//! busybox and its applet links, as the harness's bundles use), and its import into containerd's
//! `k8s.io` namespace with that containerd's own `ctr`.
//!
//! The archive is what `ctr images import` reads as an OCI layout (`core/images/archive/importer.go`
//! at v2.1.9, `images/archive/importer.go` at v1.7.24): `oci-layout`, `index.json` whose manifests
//! carry the image name in `io.containerd.image.name`, and `blobs/sha256/`. The layer is an
//! uncompressed tar, so its digest is its diff id.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The workload image's name (containers run `/bin/sh` or `/bin/sleep` from it).
pub const WORKLOAD_IMAGE: &str = "localhost/reaper-harness/busybox:smoke";
/// The pod sandbox image's name: its entrypoint sleeps until the sandbox is killed, as `pause`
/// does. containerd's CRI uses it when its sandbox image names it: 1.x in the CRI plugin's
/// `sandbox_image` (`pkg/cri/config/config.go` at v1.7.24), 2.x in the images plugin's
/// `pinned_images.sandbox` (`internal/cri/config/config.go` at v2.1.9).
pub const SANDBOX_IMAGE: &str = "localhost/reaper-harness/pause:smoke";
/// containerd's namespace for everything of the CRI plugin.
pub const CRI_NAMESPACE: &str = "k8s.io";

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// The image platform's architecture, in OCI's (Go's) words.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// A blob: its bytes and their descriptor fields.
struct Blob {
    bytes: Vec<u8>,
    digest: String,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Blob {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        Blob { bytes, digest }
    }

    fn json(v: &Value) -> Blob {
        Blob::new(serde_json::to_vec(v).expect("a JSON value serialises"))
    }

    fn descriptor(&self, media_type: &str) -> Value {
        json!({"mediaType": media_type, "digest": self.digest, "size": self.bytes.len()})
    }
}

/// The single layer: the busybox root filesystem, tarred with fixed owners and times.
fn layer() -> Result<Blob> {
    let dir = tempfile::Builder::new()
        .prefix("harness-cri-layer-")
        .tempdir()
        .context("creating the layer's temp dir")?;
    crate::bundle::build_busybox_rootfs(dir.path())?;
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    b.follow_symlinks(false);
    b.append_dir_all(".", dir.path())
        .context("tarring the busybox rootfs")?;
    Ok(Blob::new(
        b.into_inner().context("finishing the layer tar")?,
    ))
}

/// One image over `layer`: its config (entrypoint and command) and manifest blobs.
fn image(layer: &Blob, entrypoint: &[&str], cmd: &[&str]) -> (Blob, Blob) {
    let config = Blob::json(&json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Entrypoint": entrypoint, "Cmd": cmd, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
    }));
    let manifest = Blob::json(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config.descriptor(CONFIG),
        "layers": [layer.descriptor(LAYER)],
    }));
    (config, manifest)
}

/// Writes the archive of both images to `out`.
pub fn write_archive(out: &Path) -> Result<()> {
    let layer = layer()?;
    let (wconf, wman) = image(&layer, &[], &["/bin/sh"]);
    // 2^31-1 seconds: longer than any pod; SIGKILL ends it (`stopSandboxContainer` sends SIGKILL,
    // `internal/cri/server/podsandbox/sandbox_stop.go` at v2.1.9).
    let (pconf, pman) = image(&layer, &["/bin/sleep"], &["2147483647"]);
    let entry = |m: &Blob, name: &str| {
        let mut d = m.descriptor(MANIFEST);
        let tag = name.rsplit(':').next().unwrap_or("latest");
        d["annotations"] = json!({
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": tag,
        });
        d
    };
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&wman, WORKLOAD_IMAGE), entry(&pman, SANDBOX_IMAGE)],
    });
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut tb = tar::Builder::new(file);
    let mut add = |path: &str, bytes: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        tb.append_data(&mut h, path, bytes)
            .with_context(|| format!("writing {path} into {}", out.display()))
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &serde_json::to_vec(&index)?)?;
    for blob in [&layer, &wconf, &wman, &pconf, &pman] {
        let hexd = blob.digest.trim_start_matches("sha256:");
        add(&format!("blobs/sha256/{hexd}"), &blob.bytes)?;
    }
    tb.into_inner()
        .and_then(|f| f.sync_all())
        .with_context(|| format!("finishing {}", out.display()))
}

/// `ctr` for containerd at `socket`: the one given, else the first on `PATH`.
pub fn find_ctr(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("ctr"))
                .find(|p| p.is_file())
        })
        .context("--import-images needs containerd's `ctr`: none on PATH (give it with --ctr PATH)")
}

/// Builds the archive in a temp dir and imports it with `ctr --address SOCKET -n k8s.io images
/// import` (which also unpacks it for the default snapshotter), bounded by `timeout`.
pub fn import(ctr: &Path, socket: &Path, timeout: Duration) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("harness-cri-images-")
        .tempdir()
        .context("creating a temp dir for the image archive")?;
    let archive = dir.path().join("images.tar");
    write_archive(&archive)?;
    let mut cmd = Command::new(ctr);
    cmd.arg("--address")
        .arg(socket)
        .args(["--namespace", CRI_NAMESPACE, "images", "import"])
        .arg(&archive)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // To a file, not a pipe: nothing reads a pipe while we wait.
        .stderr(std::fs::File::create(dir.path().join("import.err"))?);
    let shown = format!("{} {}", ctr.display(), "images import");
    let mut child = cmd.spawn().with_context(|| format!("running {shown}"))?;
    let end = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= end {
            // Our own child, by its pid.
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{shown}: no result within {}",
                humantime::format_duration(timeout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait()?;
    if !status.success() {
        let err = std::fs::read_to_string(dir.path().join("import.err")).unwrap_or_default();
        bail!("{shown} failed ({status}): {}", err.trim());
    }
    Ok(())
}
