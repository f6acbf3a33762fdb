//! The legacy `-publish-binary` route: `harness --address A publish --topic T --namespace N`
//! with a marshalled event `Any` on stdin (containerd's `publish` command, doc 5.1). The mock
//! listens at its gRPC address path with a small ttrpc Events endpoint, and this function
//! forwards the event there, stamped with the time (as containerd's Publish does).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::EventsClient;
use protobuf::well_known_types::any::Any;
use protobuf::Message;

use crate::events::system_to_timestamp;

/// Environment variable naming the binary passed as `-publish-binary`.
pub const PUBLISH_BINARY_ENV: &str = "HARNESS_PUBLISH_BINARY";

/// Bound on reading stdin and on the forward call.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Bad command line.
    #[error("publish: {0}")]
    Usage(String),
    /// Stdin could not be read or is not an `Any`.
    #[error("publish: reading the event from stdin: {0}")]
    Input(String),
    /// The mock refused or could not be reached.
    #[error("publish: forwarding {topic} to {address}: {message}")]
    Forward {
        /// The topic.
        topic: String,
        /// The address dialed.
        address: String,
        /// What went wrong.
        message: String,
    },
}

/// Parsed `publish` arguments.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishArgs {
    /// `--address` (the gRPC socket path the shim was given).
    pub address: String,
    /// `--topic`.
    pub topic: String,
    /// `--namespace`.
    pub namespace: String,
}

impl PublishArgs {
    /// Parses `[--address A] publish --topic T --namespace N` (Go/urfave style: `--k v`,
    /// `--k=v`, `-k v`); the word `publish` and the program name are skipped when present.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Self, PublishError> {
        let mut out = PublishArgs::default();
        let mut it = args.into_iter().peekable();
        while let Some(a) = it.next() {
            let (key, inline) = match a.split_once('=') {
                Some((k, v)) if k.starts_with('-') => (k.to_string(), Some(v.to_string())),
                _ => (a.clone(), None),
            };
            let slot = match key.trim_start_matches('-') {
                "address" | "a" => &mut out.address,
                "topic" => &mut out.topic,
                "namespace" | "n" => &mut out.namespace,
                _ if !key.starts_with('-') => continue, // program name, `publish`
                _ => {
                    // Unknown global flags (e.g. --log-level debug) are tolerated.
                    if inline.is_none() && it.peek().is_some_and(|n| !n.starts_with('-')) {
                        let n = it.peek().cloned().unwrap_or_default();
                        if n != "publish" {
                            it.next();
                        }
                    }
                    continue;
                }
            };
            *slot = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .ok_or_else(|| PublishError::Usage(format!("{key} needs a value")))?,
            };
        }
        for (name, v) in [
            ("--address", &out.address),
            ("--topic", &out.topic),
            ("--namespace", &out.namespace),
        ] {
            if v.is_empty() {
                return Err(PublishError::Usage(format!("missing {name}")));
            }
        }
        Ok(out)
    }
}

/// Runs `publish`: reads the event `Any` from this process's stdin and forwards it.
pub async fn run<I: IntoIterator<Item = String>>(args: I) -> Result<(), PublishError> {
    let args = PublishArgs::parse(args)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A plain thread: a stdin that never reaches EOF must not hold up the runtime's shutdown.
    std::thread::spawn(move || {
        let mut input = vec![];
        let r = std::io::Read::read_to_end(&mut std::io::stdin(), &mut input).map(|_| input);
        let _ = tx.send(r);
    });
    let input = tokio::time::timeout(PUBLISH_TIMEOUT, rx)
        .await
        .map_err(|_| PublishError::Input(format!("no EOF within {PUBLISH_TIMEOUT:?}")))?
        .map_err(|_| PublishError::Input("stdin reader vanished".into()))?
        .map_err(|e| PublishError::Input(e.to_string()))?;
    run_with_input(&args, &input).await
}

/// Forwards `input` (a marshalled `Any`) as an envelope to the mock at `args.address`.
pub async fn run_with_input(args: &PublishArgs, input: &[u8]) -> Result<(), PublishError> {
    let any = Any::parse_from_bytes(input).map_err(|e| PublishError::Input(e.to_string()))?;
    let env = Envelope {
        timestamp: protobuf::MessageField::some(system_to_timestamp(SystemTime::now())),
        namespace: args.namespace.clone(),
        topic: args.topic.clone(),
        event: protobuf::MessageField::some(any),
        ..Default::default()
    };
    let address = if args.address.contains("://") {
        args.address.clone()
    } else {
        format!("unix://{}", args.address)
    };
    let fail = |m: String| PublishError::Forward {
        topic: args.topic.clone(),
        address: address.clone(),
        message: m,
    };
    let conn = tokio::time::timeout(PUBLISH_TIMEOUT, ttrpc::r#async::Client::connect(&address))
        .await
        .map_err(|_| fail(format!("no connection within {PUBLISH_TIMEOUT:?}")))?
        .map_err(|e| fail(e.to_string()))?;
    let client = EventsClient::new(conn);
    let req = ForwardRequest {
        envelope: protobuf::MessageField::some(env),
        ..Default::default()
    };
    let ctx = ttrpc::context::with_timeout(PUBLISH_TIMEOUT.as_nanos() as i64);
    tokio::time::timeout(
        PUBLISH_TIMEOUT + Duration::from_millis(500),
        client.forward(ctx, &req),
    )
    .await
    .map_err(|_| fail(format!("no answer within {PUBLISH_TIMEOUT:?}")))?
    .map_err(|e| match e {
        ttrpc::Error::RpcStatus(s) => fail(s.message().to_string()),
        other => fail(other.to_string()),
    })?;
    Ok(())
}

/// A blocking wrapper for callers without a tokio runtime (builds a current-thread runtime).
pub fn run_blocking<I: IntoIterator<Item = String>>(args: I) -> Result<(), PublishError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PublishError::Usage(format!("starting a runtime: {e}")))?;
    rt.block_on(run(args))
}

/// The binary to pass as `-publish-binary`: `$HARNESS_PUBLISH_BINARY`, else this executable
/// when it is the `harness` binary, else a `harness` next to (or one level above) it (test
/// executables live in `target/debug/deps`), else this executable.
pub fn publish_binary() -> PathBuf {
    if let Some(p) = std::env::var_os(PUBLISH_BINARY_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("harness"));
    if exe.file_name().is_some_and(|n| n == "harness") {
        return exe;
    }
    if let Some(dir) = exe.parent() {
        for cand in [dir.join("harness"), dir.join("../harness")] {
            if cand.is_file() {
                return std::path::absolute(&cand).unwrap_or(cand);
            }
        }
    }
    exe
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_containerd_publish_command_lines() {
        let want = PublishArgs {
            address: "/tmp/x/c.sock".into(),
            topic: "/tasks/exit".into(),
            namespace: "default".into(),
        };
        let forms = [
            v(&[
                "harness",
                "--address",
                "/tmp/x/c.sock",
                "publish",
                "--topic",
                "/tasks/exit",
                "--namespace",
                "default",
            ]),
            v(&[
                "--address=/tmp/x/c.sock",
                "publish",
                "--topic=/tasks/exit",
                "--namespace=default",
            ]),
            v(&[
                "--log-level",
                "debug",
                "--address",
                "/tmp/x/c.sock",
                "publish",
                "--topic",
                "/tasks/exit",
                "-n",
                "default",
            ]),
        ];
        for f in forms {
            assert_eq!(PublishArgs::parse(f.clone()).unwrap(), want, "{f:?}");
        }
        let e = PublishArgs::parse(v(&["publish", "--topic", "/t"])).unwrap_err();
        assert!(e.to_string().contains("--address"), "{e}");
    }
}
