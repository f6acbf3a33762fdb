//! `harness`: the command-line front door of the mock containerd and conformance runner
//! (`run`, `list`, `schema`, `stress`, and `publish` for shims that use containerd's
//! `-publish-binary`).
//! Exit status: 0 nothing failed, 1 a scenario failed, 2 the run could not happen.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use harness::bundle::RootfsKind;
use harness::dialect::Dialect;
use harness::engine::{self, RunConfig};
use harness::report::{self, RunReport};
use harness::scenario::{self, Filter, Loaded, Profile};

/// A mock containerd and conformance runner for containerd runtime-v2 shims.
#[derive(Parser, Debug)]
#[command(
    name = "harness",
    version,
    about,
    long_about = None,
    after_help = "Examples:\n  harness run                                    # the bundled suite against the bundled reaper shim\n  harness run --shim ./containerd-shim-x-v2 --format json --report report.json\n  harness shell --shim ./containerd-shim-x-v2   # poke a shim one step at a time"
)]
struct Cli {
    /// containerd's gRPC address; containerd passes it before `publish` (`--address A publish`).
    #[arg(long, global = true, hide = true)]
    address: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
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
}

#[derive(clap::Args, Debug)]
struct CompareArgs {
    #[command(flatten)]
    sel: Selection,
    #[command(flatten)]
    opts: harness::compare::CompareOptions,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum MatrixFormat {
    Human,
    Json,
}

#[derive(clap::Args, Debug)]
struct MatrixArgs {
    /// The shim binary; default: the bundled reaper next to this executable, then PATH.
    #[arg(long, value_name = "PATH")]
    shim: Option<PathBuf>,
    /// Extra environment for the shim, K=V; repeatable.
    #[arg(long = "shim-env", value_name = "K=V")]
    shim_env: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    format: MatrixFormat,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum StressFormat {
    Human,
    Json,
    /// github-action-benchmark's `customSmallerIsBetter` array: `{name, unit, value, extra}`
    /// per latency percentile (p50, p90, p99, max of each operation, in µs).
    BenchmarkJson,
}

#[derive(clap::Args, Debug)]
struct StressArgs {
    /// The shim binary; default: the bundled reaper next to this executable, then PATH.
    #[arg(long, value_name = "PATH")]
    shim: Option<PathBuf>,
    /// Number of task lifecycles (create, start, wait, delete).
    #[arg(short = 'n', long = "tasks", value_name = "N", default_value_t = 1000)]
    tasks: usize,
    /// Lifecycles in flight at once.
    #[arg(short = 'p', long = "parallel", value_name = "P", default_value_t = 8)]
    parallel: usize,
    /// One shim (launch, shutdown, delete action) per task instead of one shim for all tasks
    /// (grouped as a pod's containers are).
    #[arg(long)]
    shim_per_task: bool,
    /// Which containerd to imitate: 1.6, 1.7, 2.0 or 2.3.
    #[arg(long, value_name = "VERSION", default_value = "2.0")]
    containerd_version: Dialect,
    /// Root filesystem of the bundles: `none` for shims that run on the host, `busybox` for
    /// shims that isolate (runc).
    #[arg(long, value_enum, default_value = "none")]
    rootfs: RootfsKind,
    /// The init process of every task.
    #[arg(long, value_name = "ARG", num_args = 1.., default_value = "true")]
    process: Vec<String>,
    /// Output format. `benchmark-json` prints github-action-benchmark's `customSmallerIsBetter`
    /// array (one entry per latency percentile); the throughput, where bigger is better, goes
    /// to `--benchmark-bigger FILE`.
    #[arg(long, value_enum, default_value = "human")]
    format: StressFormat,
    /// Also write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Also write github-action-benchmark's `customBiggerIsBetter` array (the throughput in
    /// tasks/s) to FILE.
    #[arg(long, value_name = "FILE")]
    benchmark_bigger: Option<PathBuf>,
    /// Soak: run lifecycles until DURATION has passed (`10m`, `30s`) instead of -n, sampling
    /// the shim's RSS, fds, threads, zombies and sockets; exit 1 when they grow beyond noise.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
          conflicts_with_all = ["tasks", "shim_per_task"])]
    soak: Option<std::time::Duration>,
    /// Time between soak samples (default: about 120 samples, 250 ms to 5 s apart).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
          requires = "soak")]
    sample_interval: Option<std::time::Duration>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Human,
    Json,
    Junit,
    Tap,
}

#[derive(clap::Args, Debug)]
struct Selection {
    /// Scenario directories (or files), repeatable; they replace the bundled suite (to run
    /// both, also pass the checkout's `scenarios/`). Default: the suite embedded in this binary.
    #[arg(long = "scenarios", value_name = "DIR")]
    scenarios: Vec<PathBuf>,
    /// Only scenarios whose name matches (glob, or a plain substring); repeatable.
    #[arg(long, value_name = "GLOB")]
    filter: Vec<String>,
    /// Leave out scenarios whose name matches (glob or substring); repeatable.
    #[arg(long, value_name = "GLOB")]
    skip: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The shim binary; default: the bundled reaper next to this executable, then PATH.
    #[arg(long, value_name = "PATH")]
    shim: Option<PathBuf>,
    #[command(flatten)]
    sel: Selection,
    /// Which containerd to imitate: 1.6, 1.7, 2.0 or 2.3.
    #[arg(long, value_name = "VERSION", default_value = "2.0")]
    containerd_version: Dialect,
    /// Scenarios run in parallel (default: the number of cores).
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    /// Write the report (in --format) to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// A profile: known capabilities and expected failures (`xfail`) of the shim.
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// After a failed step, run the scenario's remaining steps too (default: stop it there).
    #[arg(long)]
    keep_going: bool,
    /// Default bound of one step (an RPC, an event or output wait) that sets no `timeout`
    /// itself; lower it to fail a hanging shim faster.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
          default_value = "10s")]
    step_timeout: std::time::Duration,
    /// Root filesystem of the bundles: `busybox` (works for isolated and host shims) or `none`
    /// (an empty rootfs; enough for shims that run the process on the host).
    #[arg(long, value_enum, default_value = "busybox")]
    rootfs: RootfsKind,
    /// Extra environment for the shim, K=V; repeatable (e.g. a fault switch of a test shim).
    #[arg(long = "shim-env", value_name = "K=V")]
    shim_env: Vec<String>,
    /// With --containerd-version 2.3: the runtime's `socket_dir` sent in `BootstrapParams`
    /// (absolute, at most 42 characters, as containerd checks it). Default: the daemon's own,
    /// /run/containerd/s for root.
    #[arg(long, value_name = "DIR")]
    socket_dir: Option<String>,
    /// Skip the preflight. By default the shim is launched once before the suite (same
    /// containerd version, environment and rootfs) and closed again; when its `start` fails
    /// (non-zero exit, output that is not an address, no answer within the start timeout of
    /// 10s) that is reported once and the run ends with exit status 2. With this switch every
    /// scenario runs and fails at its own launch instead.
    #[arg(long)]
    no_preflight: bool,
    /// Differential mode: also run each scenario through the real containerd whose gRPC socket
    /// this is, and report every difference from the mock (needs `--features containerd`).
    #[arg(long, value_name = "SOCKET")]
    containerd: Option<PathBuf>,
    /// Differential mode: base name of the per-scenario containerd namespaces.
    #[arg(
        long,
        value_name = "NS",
        default_value = "harness-diff",
        requires = "containerd"
    )]
    namespace: String,
    /// Differential mode: the runtime containerd gets (default: the shim's absolute path).
    #[arg(long, value_name = "NAME", requires = "containerd")]
    runtime: Option<String>,
}

#[derive(clap::Args, Debug)]
struct ShellArgs {
    /// The shim binary; default: the bundled reaper next to this executable, then PATH.
    #[arg(long, value_name = "PATH")]
    shim: Option<PathBuf>,
    /// Which containerd to imitate: 1.6, 1.7, 2.0 or 2.3.
    #[arg(long, value_name = "VERSION", default_value = "2.0")]
    containerd_version: Dialect,
    /// Root filesystem of the bundle: `busybox` (works for isolated and host shims) or `none`.
    #[arg(long, value_enum, default_value = "busybox")]
    rootfs: RootfsKind,
    /// Extra environment for the shim, K=V; repeatable.
    #[arg(long = "shim-env", value_name = "K=V")]
    shim_env: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
struct ListArgs {
    #[command(flatten)]
    sel: Selection,
}

#[derive(clap::Args, Debug)]
struct PublishArgs {
    /// The event topic, e.g. /tasks/exit.
    #[arg(long)]
    topic: String,
    /// The namespace.
    #[arg(long)]
    namespace: String,
}

/// An error that makes the run impossible: exit status 2 with one line.
fn usage_error(e: anyhow::Error) -> ExitCode {
    let msg = format!("{e:#}").replace('\n', " ");
    eprintln!("harness: error: {msg}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // A value its type refuses (`--containerd-version 9.9`): one line, as every other
        // usage error of ours.
        Err(e) if e.kind() == clap::error::ErrorKind::ValueValidation => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            eprintln!("harness: {first}");
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    match cli.cmd {
        Cmd::Shell(a) => match prefer_tmpfs().and_then(|()| shell(&a)) {
            Ok(code) => ExitCode::from(code),
            Err(e) => usage_error(e),
        },
        Cmd::Completions(a) => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(a.shell, &mut cmd, "harness", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Cmd::Schema => {
            let text = serde_json::to_string_pretty(&scenario::json_schema()).unwrap_or_default();
            emit(&text);
            ExitCode::SUCCESS
        }
        Cmd::List(a) => match list(&a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => usage_error(e),
        },
        Cmd::Publish(_) => match publish() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("harness publish: {e:#}");
                ExitCode::from(1)
            }
        },
        Cmd::Compare(a) => match prefer_tmpfs().and_then(|()| compare(&a)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => usage_error(e),
        },
        Cmd::Matrix(a) => match prefer_tmpfs().and_then(|()| matrix(&a)) {
            Ok(code) => ExitCode::from(code),
            Err(e) => usage_error(e),
        },
        Cmd::Stress(a) => match prefer_tmpfs().and_then(|()| stress(&a)) {
            Ok(code) => ExitCode::from(code),
            Err(e) => usage_error(e),
        },
        Cmd::Run(a) => match prefer_tmpfs()
            .and_then(|()| prepare(&a))
            .and_then(|p| preflight(&a, p))
        {
            Err(e) => usage_error(e),
            Ok((cfg, scenarios)) if a.containerd.is_some() => {
                match differential(&a, cfg, scenarios) {
                    Ok(code) => ExitCode::from(code),
                    Err(e) => usage_error(e),
                }
            }
            Ok((cfg, scenarios)) => match run(&a, cfg, scenarios) {
                Ok(code) => ExitCode::from(code),
                Err(e) => usage_error(e),
            },
        },
    }
}

/// Scratch space: a run makes thousands of FIFOs, symlinks and dirs (bundles, busybox rootfs,
/// stdio, mock state). On a disk-backed `/tmp` that costs more than the scenarios themselves, so
/// without an explicit `$TMPDIR` a writable `/dev/shm` (tmpfs) is used. Set before any thread
/// starts.
fn prefer_tmpfs() -> Result<()> {
    if std::env::var_os("TMPDIR").is_none() {
        let shm = Path::new("/dev/shm");
        let writable = nix::unistd::access(shm, nix::unistd::AccessFlags::W_OK).is_ok();
        if shm.is_dir() && writable {
            std::env::set_var("TMPDIR", shm);
        }
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
}

/// The scenarios to run: `--scenarios` (which replace the bundled suite), else a directory in
/// `$HARNESS_SCENARIOS`, else the suite embedded in this binary at build time.
fn load_selection(sel: &Selection) -> Result<Vec<Loaded>> {
    let all = if !sel.scenarios.is_empty() {
        scenario::discover(&sel.scenarios)?
    } else if let Some(dir) = std::env::var_os("HARNESS_SCENARIOS") {
        scenario::discover(&[PathBuf::from(dir)])?
    } else {
        let suite = scenario::embedded::suite()?;
        if suite.is_empty() {
            bail!("this harness was built without its bundled suite (no scenarios/ next to the harness crate); pass --scenarios DIR");
        }
        suite
    };
    let filter = Filter::new(&sel.filter, &sel.skip).map_err(|e| anyhow!(e))?;
    Ok(all
        .into_iter()
        .filter(|l| filter.matches(&l.name))
        .collect())
}

#[allow(clippy::print_stdout)]
fn list(a: &ListArgs) -> Result<()> {
    let all = load_selection(&a.sel)?;
    let requires = |l: &Loaded| {
        let req: Vec<_> = l.scenario.requires.iter().map(|c| c.as_str()).collect();
        if req.is_empty() {
            "-".to_string()
        } else {
            req.join(",")
        }
    };
    let w = all.iter().map(|l| l.name.len()).max().unwrap_or(4).max(4);
    let rw = all
        .iter()
        .map(|l| requires(l).len())
        .max()
        .unwrap_or(8)
        .max(8);
    let mut text = format!(
        "{:<w$}  {:<6}  {:<rw$}  source\n",
        "name", "level", "requires"
    );
    for l in &all {
        let source = match l.source {
            scenario::Source::Embedded => "embedded".to_string(),
            scenario::Source::File => l.path.display().to_string(),
        };
        text.push_str(&format!(
            "{:<w$}  {:<6}  {:<rw$}  {source}\n",
            l.name,
            l.scenario.level.as_str(),
            requires(l),
        ));
    }
    emit(&text);
    Ok(())
}

/// `--shim-env K=V` values as pairs; an entry without `=` or with an empty K is an error.
fn parse_shim_env(values: &[String]) -> Result<Vec<(String, String)>> {
    values
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("--shim-env `{kv}`: expected K=V"))
        })
        .collect()
}

/// `harness matrix`: each dialect's verdict on the shim; exit 0 when it works with every one.
fn matrix(a: &MatrixArgs) -> Result<u8> {
    let shim = resolve_shim(a.shim.as_deref())?;
    let suite = scenario::embedded::suite()?;
    let find = |name: &str| {
        suite
            .iter()
            .find(|l| l.name == name)
            .cloned()
            .ok_or_else(|| anyhow!("the embedded suite lacks {name}"))
    };
    let lifecycle = find(harness::matrix::LIFECYCLE)?;
    let repeated = find(harness::matrix::REPEATED_START)?;
    let cfg = RunConfig {
        shim: shim.clone(),
        shim_env: parse_shim_env(&a.shim_env)?,
        ..RunConfig::default()
    };
    let rt = tokio::runtime::Runtime::new()?;
    let rows = rt.block_on(harness::matrix::matrix(&cfg, &lifecycle, &repeated));
    let text = match a.format {
        MatrixFormat::Human => harness::matrix::human(&shim.display().to_string(), &rows),
        MatrixFormat::Json => serde_json::to_string_pretty(&serde_json::json!({
            "shim": shim.display().to_string(),
            "rows": rows,
        }))?,
    };
    emit(&text);
    let all = rows
        .iter()
        .all(|r| r.verdict == harness::matrix::Verdict::Works);
    Ok(if all { 0 } else { 1 })
}

/// The shim to test: `--shim`, else the reaper next to this executable, else on PATH.
fn resolve_shim(arg: Option<&Path>) -> Result<PathBuf> {
    const REAPER: &str = "containerd-shim-reaper-v2";
    let path = match arg {
        Some(p) if p.components().count() == 1 && !p.exists() => {
            which(p.as_os_str()).ok_or_else(|| {
                anyhow!(
                    "shim `{}`: not found (not a file, not on PATH)",
                    p.display()
                )
            })?
        }
        Some(p) => p.to_path_buf(),
        None => {
            let beside = std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(|d| d.join(REAPER)))
                .filter(|p| p.is_file());
            match beside.or_else(|| which(REAPER.as_ref())) {
                Some(p) => p,
                None => bail!(
                    "shim `{REAPER}`: not found next to the harness nor on PATH; pass --shim PATH or run `cargo build -p containerd-shim-reaper`"
                ),
            }
        }
    };
    let meta = std::fs::metadata(&path)
        .with_context(|| format!("shim `{}`: not found", path.display()))?;
    if !meta.is_file() {
        bail!("shim `{}`: not a regular file", path.display());
    }
    if meta.permissions().mode() & 0o111 == 0 {
        bail!("shim `{}`: not executable (chmod +x it)", path.display());
    }
    Ok(std::fs::canonicalize(&path).unwrap_or(path))
}

fn which(name: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn prepare(a: &RunArgs) -> Result<(RunConfig, Vec<Loaded>)> {
    let dialect = a.containerd_version;
    let shim = resolve_shim(a.shim.as_deref())?;
    let profile = match &a.profile {
        Some(p) => Profile::load(p)?,
        None => Profile::default(),
    };
    let shim_env = parse_shim_env(&a.shim_env)?;
    let socket_dir = match &a.socket_dir {
        None => None,
        Some(_) if dialect != Dialect::V2_3 => bail!(
            "--socket-dir: only containerd 2.3 sends a socket dir (use --containerd-version 2.3)"
        ),
        Some(d) => {
            Some(harness::dialect::check_socket_dir(d).map_err(|e| anyhow!("--socket-dir: {e}"))?)
        }
    };
    if a.jobs == Some(0) {
        bail!("--jobs: expected at least 1");
    }
    let jobs = a.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let scenarios = load_selection(&a.sel)?;
    if scenarios.is_empty() {
        bail!("no scenario matches the --filter/--skip selection");
    }
    if let Some(r) = &a.report {
        // Fail before running anything when the report cannot be written.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(r)
            .with_context(|| format!("--report `{}`", r.display()))?;
    }
    let cfg = RunConfig {
        shim,
        dialect,
        jobs,
        profile,
        shim_env,
        keep_going: a.keep_going,
        step_timeout: a.step_timeout,
        socket_dir,
        rootfs: a.rootfs,
        ..RunConfig::default()
    };
    Ok((cfg, scenarios))
}

/// Launches the shim once and closes it before any scenario runs (unless `--no-preflight`): a
/// shim whose `start` fails is one error (exit status 2), not a failure of every scenario.
fn preflight(a: &RunArgs, prepared: (RunConfig, Vec<Loaded>)) -> Result<(RunConfig, Vec<Loaded>)> {
    if a.no_preflight {
        return Ok(prepared);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(engine::preflight(&prepared.0))?;
    Ok(prepared)
}

#[allow(clippy::print_stdout)]
fn run(a: &RunArgs, cfg: RunConfig, scenarios: Vec<Loaded>) -> Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.jobs.clamp(2, 16))
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let human_stdout = a.format == Format::Human && a.report.is_none();
    let tty = if human_stdout {
        std::io::stdout().is_terminal()
    } else {
        std::io::stderr().is_terminal()
    };
    let total = scenarios.len();
    let started = Instant::now();
    let shim = cfg.shim.display().to_string();
    let dialect = cfg.dialect.to_string();
    let mut done = 0usize;
    // On a terminal, one live line (indicatif) under the plain lines; otherwise the plain lines
    // alone, exactly as they always were (CI logs).
    let mut live = tty.then(|| report::LiveLine::new(total, human_stdout));
    let results = rt.block_on(engine::run_scenarios_observed(&cfg, scenarios, |p| {
        let r = match p {
            engine::Progress::Started(name) => {
                if let Some(l) = live.as_mut() {
                    l.started(name);
                }
                return;
            }
            engine::Progress::Finished(r) => r,
        };
        done += 1;
        let line = report::human_progress(done, total, r);
        if let Some(l) = live.as_mut() {
            l.finished(&line, r);
        } else if human_stdout {
            println!("{line}");
            let _ = std::io::stdout().flush();
        } else {
            eprintln!("{line}");
        }
    }));
    if let Some(l) = live {
        l.clear();
    }
    let report = RunReport::new(shim, dialect, results, started.elapsed().as_millis() as u64);
    let text = match a.format {
        Format::Human => report::human_summary(&report),
        Format::Json => report.to_json(),
        Format::Junit => report::junit(&report),
        Format::Tap => report::tap(&report),
    };
    match &a.report {
        Some(path) => {
            std::fs::write(path, &text)
                .with_context(|| format!("--report `{}`", path.display()))?;
            if a.format != Format::Human {
                eprint!("{}", report::human_summary(&report));
            } else {
                print!("{}", report::human_summary(&report));
            }
        }
        None => emit(&text),
    }
    Ok(report.exit_code() as u8)
}

/// `harness run --containerd SOCKET`: exit 0 when the real containerd and the mock agree on
/// every compared scenario, 1 on a fidelity difference, 2 when the run could not happen.
#[cfg(feature = "containerd")]
fn differential(a: &RunArgs, cfg: RunConfig, scenarios: Vec<Loaded>) -> Result<u8> {
    use harness::differential::{self, DiffConfig};
    let dcfg = DiffConfig {
        socket: a.containerd.clone().unwrap_or_default(),
        namespace: a.namespace.clone(),
        runtime: a
            .runtime
            .clone()
            .unwrap_or_else(|| cfg.shim.display().to_string()),
        run: cfg,
    };
    // Each scenario (with its differences) on stderr as it ends; the report at the end.
    let report = differential::run_blocking(&dcfg, scenarios, |r| {
        eprint!("{}", differential::progress_line(r))
    })?;
    let text = match a.format {
        Format::Json => report.to_json(),
        _ => report.human(),
    };
    match &a.report {
        Some(p) => {
            std::fs::write(p, &text).with_context(|| format!("--report `{}`", p.display()))?;
            eprint!("{}", report.summary_line());
        }
        None if a.format == Format::Json => emit(&text),
        None => emit(&report.summary_line()),
    }
    Ok(report.exit_code())
}

#[cfg(not(feature = "containerd"))]
fn differential(_: &RunArgs, _: RunConfig, _: Vec<Loaded>) -> Result<u8> {
    bail!("--containerd: this harness was built without the `containerd` feature; run `cargo build -p harness --features containerd` (needs protoc)")
}

/// `containerd --address A publish --topic T --namespace N` with the event on stdin; the core's
/// parser reads the raw arguments (Go-style flags) itself.
fn publish() -> Result<()> {
    harness::publish::run_blocking(std::env::args().skip(1)).map_err(|e| anyhow!("{e}"))
}

/// `harness stress`: exit 0 when every lifecycle completed and nothing leaked, 1 otherwise,
/// 2 when the run could not happen.
fn stress(a: &StressArgs) -> Result<u8> {
    use harness::stress::{self, StressOptions};
    let shim = resolve_shim(a.shim.as_deref())?;
    let dialect = a.containerd_version;
    if a.tasks == 0 || a.parallel == 0 {
        bail!("-n and -p must be at least 1");
    }
    let opts = StressOptions {
        shim,
        tasks: a.tasks,
        parallel: a.parallel,
        shim_per_task: a.shim_per_task,
        dialect,
        rootfs: a.rootfs,
        args: a.process.clone(),
        soak: a.soak.map(|duration| stress::SoakOptions {
            duration,
            interval: a.sample_interval,
        }),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let report = rt.block_on(stress::run(opts))?;
    let json = serde_json::to_string_pretty(&report).context("encoding the report")?;
    if let Some(path) = &a.report {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &a.benchmark_bigger {
        let big = serde_json::to_string_pretty(&report.benchmark_bigger())
            .context("encoding the benchmark entries")?;
        std::fs::write(path, big).with_context(|| format!("writing {}", path.display()))?;
    }
    match a.format {
        StressFormat::Json => emit(&json),
        StressFormat::Human => emit(&report.render_human()),
        StressFormat::BenchmarkJson => emit(
            &serde_json::to_string_pretty(&report.benchmark_smaller())
                .context("encoding the benchmark entries")?,
        ),
    }
    Ok(if report.ok() { 0 } else { 1 })
}

/// `harness compare`: exit 0 when both files were written (failed scenarios are results), 2
/// when the comparison could not happen.
fn compare(a: &CompareArgs) -> Result<()> {
    let scenarios = load_selection(&a.sel)?;
    let command = std::env::args().collect();
    let doc = harness::compare::run(&a.opts, scenarios, command, |l| {
        eprintln!("harness compare: {l}")
    })?;
    eprintln!(
        "harness compare: {} shims; wrote {} and {}",
        doc.shims.len(),
        a.opts.out.join("compare.json").display(),
        a.opts.out.join("index.html").display()
    );
    Ok(())
}

/// `harness shell`: 0 when every command succeeded, 1 when one failed, 2 when the session could
/// not start (the session itself is `harness::shell`).
fn shell(a: &ShellArgs) -> Result<u8> {
    use harness::shell::{self, ShellOptions};
    let shim = resolve_shim(a.shim.as_deref())?;
    let dialect = a.containerd_version;
    let shim_env = parse_shim_env(&a.shim_env)?;
    let opts = ShellOptions {
        shim,
        dialect,
        rootfs: a.rootfs,
        shim_env,
        ..ShellOptions::default()
    };
    let summary = shell::run(&opts)?;
    Ok(u8::from(summary.failed > 0 || !summary.leaks.is_empty()))
}
