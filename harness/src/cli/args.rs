//! The `harness` command line: its subcommands and their arguments (clap derive). Binary-only.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use harness::bundle::RootfsKind;
use harness::dialect::Dialect;

/// A mock containerd and conformance runner for containerd runtime-v2 shims.
#[derive(Parser, Debug)]
#[command(
    name = "harness",
    version,
    about,
    long_about = None,
    after_help = "Examples:\n  harness run                                    # the bundled suite against the bundled reaper shim\n  harness run --shim ./containerd-shim-x-v2 --format json --report report.json\n  harness shell --shim ./containerd-shim-x-v2   # poke a shim one step at a time"
)]
pub(crate) struct Cli {
    /// containerd's gRPC address; containerd passes it before `publish` (`--address A publish`).
    #[arg(long, global = true, hide = true)]
    pub(crate) address: Option<String>,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
    /// Run conformance scenarios against a shim.
    #[command(
        after_help = "Examples:\n  harness run --shim ./target/debug/containerd-shim-x-v2\n  harness run --shim containerd-shim-runc-v2 --containerd-version 1.7 --filter 'lifecycle/*'\n  harness run --scenarios my-scenarios --format junit --report junit.xml"
    )]
    Run(RunArgs),
    /// List scenarios with their level and requirements.
    #[command(after_help = "Example:\n  harness list --filter 'errors/*'")]
    List(ListArgs),
    /// Print the JSON Schema of scenario files.
    #[command(
        after_help = "Example:\n  harness schema > scenario.schema.json   # for editors' YAML validation"
    )]
    Schema,
    /// Deliver an event (an `Any` on stdin) like `containerd publish` (used as `-publish-binary`).
    #[command(
        after_help = "Example (what containerd runs as the shim's -publish-binary):\n  harness --address /run/containerd/containerd.sock publish --topic /tasks/exit --namespace default < event.pb"
    )]
    Publish(PublishArgs),
    /// An interactive session on one launched shim: type steps of the scenario vocabulary
    /// (`create sh -c 'sleep 30'`, `start`, `state`, `kill SIGTERM`, `wait`, `exec e1 echo hi`,
    /// `events`, `stdout`, `delete`, `shutdown`), see each answer and the events it caused, and
    /// `save FILE` the session as a scenario that `harness run` replays. Reads a pipe too.
    ///
    /// Exit status: 0 when every command succeeded, 1 when one failed, 2 when the session could
    /// not start.
    #[command(
        after_help = "Example:\n  harness shell --shim ./target/debug/containerd-shim-reaper-v2\n  harness> create sh -c 'sleep 30'\n  harness> start\n  harness> kill SIGTERM\n  harness> wait\n  harness> save sigterm.yaml\n\nScripted:\n  printf 'create echo hi\\nstart\\nwait\\nstdout\\ndelete\\n' | harness shell"
    )]
    Shell(ShellArgs),
    /// Which containerd versions a shim works with: for each dialect (1.6, 1.7, 2.0, 2.3) whether it
    /// starts (and why not, in the daemon's own words) and passes a minimal lifecycle.
    ///
    /// Exit status: 0 when it works with every version, 1 when not, 2 when the matrix could
    /// not run.
    #[command(
        after_help = "Example:\n  harness matrix --shim /usr/bin/containerd-shim-runc-v2 --format json"
    )]
    Matrix(MatrixArgs),
    /// Print a completion script for a shell (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Examples:\n  harness completions bash > ~/.local/share/bash-completion/completions/harness\n  harness completions zsh > \"${fpath[1]}/_harness\"\n  harness completions fish > ~/.config/fish/completions/harness.fish"
    )]
    Completions(CompletionsArgs),
    /// Run many task lifecycles against a shim: throughput, latency percentiles per operation,
    /// and the shim's RSS and file descriptors at idle, peak and end.
    ///
    /// Example: `harness stress --shim ./containerd-shim-x-v2 -n 10000 -p 8 --format json`
    #[command(
        after_help = "Example:\n  harness stress --shim ./containerd-shim-x-v2 -n 10000 -p 8 --format json"
    )]
    Stress(StressArgs),
    /// Run the suite and the stress mode against several shims; write compare.json and a
    /// self-contained index.html (conformance matrix, latency table, plots) into --out.
    ///
    /// Example: `harness compare --shim A --shim B --out cmp --quick`
    #[command(
        after_help = "Example:\n  harness compare --shim ./containerd-shim-a-v2 --shim containerd-shim-runc-v2 --out cmp --quick"
    )]
    Compare(CompareArgs),
    /// Smoke-test a runtime handler through the kubelet's CRI API against a real containerd:
    /// a host-network pod, a container that prints and exits (status, exit code, its CRI log
    /// file), a long-running one with an ExecSync, StopContainer inside and past a grace period,
    /// the pod's stop and removal, and nothing left behind. Needs the `containerd` feature.
    ///
    /// Exit status: 0 when every step passed, 1 when one failed (it is named, with containerd's
    /// error), 2 when the test could not run (no answer at the endpoint, images not imported).
    #[command(
        after_help = "Examples:\n  harness cri --endpoint unix:///run/containerd/containerd.sock --handler reaper\n  harness cri --handler runc --import-images --format junit --report cri.xml\n\nWithout a registry, --import-images loads the harness's busybox and pause images into\ncontainerd's k8s.io namespace; point the CRI sandbox image at localhost/reaper-harness/pause:smoke\n(docs/guides/kubernetes.md shows the config)."
    )]
    Cri(CriArgs),
    /// Turn a recording of `containerd-shim-record-v2` (the proxy shim that stands in front of a
    /// real shim under a real containerd) into a scenario: the init process from the bundle,
    /// one step per Task request in the order the answers came, expectations from what the real
    /// shim answered, the events it sent. The scenario is checked with the strict loader.
    #[command(
        after_help = "Example:\n  harness record --to-scenario /var/lib/shim-record/default/echo echo.yaml\n  harness run --scenarios echo.yaml --shim ./containerd-shim-x-v2"
    )]
    Record(RecordArgs),
}

#[derive(clap::Args, Debug)]
pub(crate) struct RecordArgs {
    /// The recording: a directory the proxy wrote (`<dir>/<namespace>/<id>`).
    #[arg(long = "to-scenario", value_name = "DIR")]
    pub(crate) recording: PathBuf,
    /// The scenario file to write.
    #[arg(value_name = "OUT.yaml")]
    pub(crate) out: PathBuf,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum CriFormat {
    Human,
    Json,
    Junit,
}

#[derive(clap::Args, Debug)]
pub(crate) struct CriArgs {
    /// containerd's CRI endpoint (its gRPC socket).
    #[arg(
        long,
        value_name = "unix:///PATH",
        default_value = "unix:///run/containerd/containerd.sock"
    )]
    pub(crate) endpoint: String,
    /// The runtime handler to test (a RuntimeClass's `handler`).
    #[arg(long, value_name = "NAME")]
    pub(crate) handler: String,
    /// First import the harness's local images (busybox workload, pause sandbox) into the
    /// `k8s.io` namespace with `ctr`.
    #[arg(long)]
    pub(crate) import_images: bool,
    /// The `ctr` used by --import-images; default: the first on PATH.
    #[arg(long, value_name = "PATH")]
    pub(crate) ctr: Option<PathBuf>,
    /// The image the containers run (it must hold /bin/sh and /bin/sleep for an isolating
    /// runtime; a host runtime like the reaper runs the host's).
    #[arg(long, value_name = "REF", default_value = harness::cri::image::WORKLOAD_IMAGE)]
    pub(crate) image: String,
    /// Bound on each RPC and each wait for a state.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: std::time::Duration,
    /// StopContainer's grace period for the process that ignores SIGTERM (whole seconds).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) grace: std::time::Duration,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: CriFormat,
    /// Write the report to this file instead of stdout (the verdict line still goes to stderr).
    #[arg(long, value_name = "FILE")]
    pub(crate) report: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub(crate) struct CompareArgs {
    #[command(flatten)]
    pub(crate) sel: Selection,
    #[command(flatten)]
    pub(crate) opts: harness::compare::CompareOptions,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum MatrixFormat {
    Human,
    Json,
}

#[derive(clap::Args, Debug)]
pub(crate) struct MatrixArgs {
    /// The shim binary; default: the bundled reaper next to this executable, then PATH.
    #[arg(long, value_name = "PATH")]
    pub(crate) shim: Option<PathBuf>,
    /// Extra environment for the shim, K=V; repeatable.
    #[arg(long = "shim-env", value_name = "K=V")]
    pub(crate) shim_env: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: MatrixFormat,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum StressFormat {
    Human,
    Json,
    /// github-action-benchmark's `customSmallerIsBetter` array: `{name, unit, value, extra}`
    /// per latency percentile (p50, p90, p99, max of each operation, in µs).
    BenchmarkJson,
}

#[derive(clap::Args, Debug)]
pub(crate) struct StressArgs {
    /// The shim binary; default: the bundled reaper next to this executable, then PATH.
    #[arg(long, value_name = "PATH")]
    pub(crate) shim: Option<PathBuf>,
    /// Number of task lifecycles (create, start, wait, delete).
    #[arg(short = 'n', long = "tasks", value_name = "N", default_value_t = 1000)]
    pub(crate) tasks: usize,
    /// Lifecycles in flight at once.
    #[arg(short = 'p', long = "parallel", value_name = "P", default_value_t = 8)]
    pub(crate) parallel: usize,
    /// One shim (launch, shutdown, delete action) per task instead of one shim for all tasks
    /// (grouped as a pod's containers are).
    #[arg(long)]
    pub(crate) shim_per_task: bool,
    /// Which containerd to imitate: 1.6, 1.7, 2.0 or 2.3.
    #[arg(long, value_name = "VERSION", default_value = "2.0")]
    pub(crate) containerd_version: Dialect,
    /// Root filesystem of the bundles: `none` for shims that run on the host, `busybox` for
    /// shims that isolate (runc).
    #[arg(long, value_enum, default_value = "none")]
    pub(crate) rootfs: RootfsKind,
    /// The init process of every task.
    #[arg(long, value_name = "ARG", num_args = 1.., default_value = "true")]
    pub(crate) process: Vec<String>,
    /// Output format. `benchmark-json` prints github-action-benchmark's `customSmallerIsBetter`
    /// array (one entry per latency percentile); the throughput, where bigger is better, goes
    /// to `--benchmark-bigger FILE`.
    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: StressFormat,
    /// Also write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) report: Option<PathBuf>,
    /// Also write github-action-benchmark's `customBiggerIsBetter` array (the throughput in
    /// tasks/s) to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) benchmark_bigger: Option<PathBuf>,
    /// Soak: run lifecycles until DURATION has passed (`10m`, `30s`) instead of -n, sampling
    /// the shim's RSS, fds, threads, zombies and sockets; exit 1 when they grow beyond noise.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
          conflicts_with_all = ["tasks", "shim_per_task"])]
    pub(crate) soak: Option<std::time::Duration>,
    /// Time between soak samples (default: about 120 samples, 250 ms to 5 s apart).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
          requires = "soak")]
    pub(crate) sample_interval: Option<std::time::Duration>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Human,
    Json,
    Junit,
    Tap,
}

#[derive(clap::Args, Debug)]
pub(crate) struct Selection {
    /// Scenario directories (or files), repeatable; they replace the bundled suite (to run
    /// both, also pass the checkout's `scenarios/`). Default: the suite embedded in this binary.
    #[arg(long = "scenarios", value_name = "DIR")]
    pub(crate) scenarios: Vec<PathBuf>,
    /// Only scenarios whose name matches (glob, or a plain substring); repeatable.
    #[arg(long, value_name = "GLOB")]
    pub(crate) filter: Vec<String>,
    /// Leave out scenarios whose name matches (glob or substring); repeatable.
    #[arg(long, value_name = "GLOB")]
    pub(crate) skip: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub(crate) struct RunArgs {
    /// The shim binary; default: the bundled reaper next to this executable, then PATH.
    #[arg(long, value_name = "PATH")]
    pub(crate) shim: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) sel: Selection,
    /// Which containerd to imitate: 1.6, 1.7, 2.0 or 2.3.
    #[arg(long, value_name = "VERSION", default_value = "2.0")]
    pub(crate) containerd_version: Dialect,
    /// Scenarios run in parallel (default: the number of cores).
    #[arg(long, short = 'j', value_name = "N")]
    pub(crate) jobs: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: Format,
    /// Write the report (in --format) to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub(crate) report: Option<PathBuf>,
    /// A profile: known capabilities and expected failures (`xfail`) of the shim.
    #[arg(long, value_name = "FILE")]
    pub(crate) profile: Option<PathBuf>,
    /// After a failed step, run the scenario's remaining steps too (default: stop it there).
    #[arg(long)]
    pub(crate) keep_going: bool,
    /// Default bound of one step (an RPC, an event or output wait) that sets no `timeout`
    /// itself; lower it to fail a hanging shim faster.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
          default_value = "10s")]
    pub(crate) step_timeout: std::time::Duration,
    /// Root filesystem of the bundles: `busybox` (works for isolated and host shims) or `none`
    /// (an empty rootfs; enough for shims that run the process on the host).
    #[arg(long, value_enum, default_value = "busybox")]
    pub(crate) rootfs: RootfsKind,
    /// Extra environment for the shim, K=V; repeatable (e.g. a fault switch of a test shim).
    #[arg(long = "shim-env", value_name = "K=V")]
    pub(crate) shim_env: Vec<String>,
    /// With --containerd-version 2.3: the runtime's `socket_dir` sent in `BootstrapParams`
    /// (absolute, at most 42 characters, as containerd checks it). Default: the daemon's own,
    /// /run/containerd/s for root.
    #[arg(long, value_name = "DIR")]
    pub(crate) socket_dir: Option<String>,
    /// Skip the preflight. By default the shim is launched once before the suite (same
    /// containerd version, environment and rootfs) and closed again; when its `start` fails
    /// (non-zero exit, output that is not an address, no answer within the start timeout of
    /// 10s) that is reported once and the run ends with exit status 2. With this switch every
    /// scenario runs and fails at its own launch instead.
    #[arg(long)]
    pub(crate) no_preflight: bool,
    /// Differential mode: also run each scenario through the real containerd whose gRPC socket
    /// this is, and report every difference from the mock (needs `--features containerd`).
    #[arg(long, value_name = "SOCKET")]
    pub(crate) containerd: Option<PathBuf>,
    /// Differential mode: base name of the per-scenario containerd namespaces.
    #[arg(
        long,
        value_name = "NS",
        default_value = "harness-diff",
        requires = "containerd"
    )]
    pub(crate) namespace: String,
    /// Differential mode: the runtime containerd gets (default: the shim's absolute path).
    #[arg(long, value_name = "NAME", requires = "containerd")]
    pub(crate) runtime: Option<String>,
}

#[derive(clap::Args, Debug)]
pub(crate) struct ShellArgs {
    /// The shim binary; default: the bundled reaper next to this executable, then PATH.
    #[arg(long, value_name = "PATH")]
    pub(crate) shim: Option<PathBuf>,
    /// Which containerd to imitate: 1.6, 1.7, 2.0 or 2.3.
    #[arg(long, value_name = "VERSION", default_value = "2.0")]
    pub(crate) containerd_version: Dialect,
    /// Root filesystem of the bundle: `busybox` (works for isolated and host shims) or `none`.
    #[arg(long, value_enum, default_value = "busybox")]
    pub(crate) rootfs: RootfsKind,
    /// Extra environment for the shim, K=V; repeatable.
    #[arg(long = "shim-env", value_name = "K=V")]
    pub(crate) shim_env: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    pub(crate) sel: Selection,
}

#[derive(clap::Args, Debug)]
pub(crate) struct PublishArgs {
    /// The event topic, e.g. /tasks/exit.
    #[arg(long)]
    pub(crate) topic: String,
    /// The namespace.
    #[arg(long)]
    pub(crate) namespace: String,
}
