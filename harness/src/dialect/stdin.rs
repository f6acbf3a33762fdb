//! What `start` reads on stdin: the runtime options before 2.3, containerd 2.3's protobuf
//! `BootstrapParams` (pkg/shim/util.go `Command` v2.3.4), and what a scenario changes in them.

use std::path::Path;

use super::{default_socket_dir, Dialect, CONTAINERD_2_3_VERSION};

/// What a scenario changes in the `BootstrapParams` of one `start` (dialect 2.3).
#[derive(Debug, Clone, Default)]
pub struct BootstrapOverrides {
    /// `log_level` (default: from `-debug`).
    pub log_level: Option<bootstrap::LogLevel>,
    /// Extensions after the runtime options.
    pub extensions: Vec<protobuf::well_known_types::any::Any>,
    /// `instance_id` instead of `-id`.
    pub instance_id: Option<String>,
    /// `namespace` instead of `-namespace`.
    pub namespace: Option<String>,
    /// Send only the first half of the encoded message.
    pub cut: bool,
}

/// What [`Dialect::start_stdin`] needs to know about one `start`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartParams<'a> {
    /// `-id`.
    pub id: &'a str,
    /// `-namespace`.
    pub namespace: &'a str,
    /// `-debug` (containerd at debug level).
    pub debug: bool,
    /// `TTRPC_ADDRESS`.
    pub ttrpc_address: &'a str,
    /// `-address`.
    pub grpc_address: &'a str,
    /// The daemon's executable (`-publish-binary`).
    pub containerd_binary: &'a str,
    /// The runtime options.
    pub runtime_options: Option<&'a protobuf::well_known_types::any::Any>,
    /// The runtime's configured socket directory (2.3 sends its default when unset).
    pub socket_dir: Option<&'a str>,
    /// A scenario's changes to the `BootstrapParams`.
    pub overrides: Option<&'a BootstrapOverrides>,
}

impl Dialect {
    /// What `start` gets on stdin, or `None` for /dev/null. Before 2.3: the runtime options
    /// `Any` when there are any. 2.3 (pkg/shim/util.go `Command` v2.3.4): a protobuf
    /// `BootstrapParams` always, except for a binary whose name contains `shim-runc-v1` or
    /// `shim-runhcs-v1`, which keeps the old stdin.
    pub fn start_stdin(&self, shim: &Path, p: &StartParams<'_>) -> Option<Vec<u8>> {
        use protobuf::Message;
        let legacy = || {
            p.runtime_options
                .map(|any| any.write_to_bytes().unwrap_or_default())
        };
        if *self != Dialect::V2_3 {
            return legacy();
        }
        let name = shim
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.contains("shim-runc-v1") || name.contains("shim-runhcs-v1") {
            return legacy();
        }
        // log.GetLevel().String() through bootstrap.LogLevelFromString (helpers.go v2.3.4):
        // the mock is at info, or at debug when it passes `-debug`.
        let o = p.overrides.cloned().unwrap_or_default();
        let level = match o.log_level {
            Some(l) => l,
            None if p.debug => bootstrap::LogLevel::Debug,
            None => bootstrap::LogLevel::Info,
        };
        let mut params = bootstrap::BootstrapParams {
            instance_id: o.instance_id.unwrap_or_else(|| p.id.to_string()),
            namespace: o.namespace.unwrap_or_else(|| p.namespace.to_string()),
            log_level: protobuf::EnumOrUnknown::new(level),
            containerd_version: CONTAINERD_2_3_VERSION.to_string(),
            containerd_ttrpc_address: p.ttrpc_address.to_string(),
            containerd_grpc_address: p.grpc_address.to_string(),
            containerd_binary: p.containerd_binary.to_string(),
            // Always sent: the runtime's `socket_dir`, else the daemon's default
            // (core/runtime/v2/shim_manager.go and binary.go `Start`, v2.3.4).
            socket_dir: Some(
                p.socket_dir
                    .map(str::to_string)
                    .unwrap_or_else(default_socket_dir),
            ),
            ..Default::default()
        };
        if let Some(any) = p.runtime_options {
            params.add_extension(any.clone());
        }
        for any in o.extensions {
            params.add_extension(any);
        }
        let mut bytes = params.write_to_bytes().unwrap_or_default();
        if o.cut {
            bytes.truncate(bytes.len() / 2);
        }
        Some(bytes)
    }
}
