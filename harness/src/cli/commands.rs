//! What each `harness` subcommand does once its arguments are parsed: load the scenarios, run
//! them against the mock or a real containerd, report; the stress, matrix, compare and shell
//! front-ends. Binary-only.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::args::*;
use anyhow::{anyhow, bail, Context, Result};
use harness::dialect::Dialect;
use harness::engine::{self, RunConfig};
use harness::report::{self, RunReport};
use harness::scenario::{self, Filter, Loaded, Profile};

/// Scratch space: a run makes thousands of FIFOs, symlinks and dirs (bundles, busybox rootfs,
/// stdio, mock state). On a disk-backed `/tmp` that costs more than the scenarios themselves, so
/// without an explicit `$TMPDIR` a writable `/dev/shm` (tmpfs) is used. Set before any thread
/// starts.
pub(crate) fn prefer_tmpfs() -> Result<()> {
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
pub(crate) fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
}

/// The scenarios to run: `--scenarios` (which replace the bundled suite), else a directory in
/// `$HARNESS_SCENARIOS`, else the suite embedded in this binary at build time.
pub(crate) fn load_selection(sel: &Selection) -> Result<Vec<Loaded>> {
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
pub(crate) fn list(a: &ListArgs) -> Result<()> {
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
pub(crate) fn parse_shim_env(values: &[String]) -> Result<Vec<(String, String)>> {
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
pub(crate) fn matrix(a: &MatrixArgs) -> Result<u8> {
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
pub(crate) fn resolve_shim(arg: Option<&Path>) -> Result<PathBuf> {
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

pub(crate) fn which(name: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

pub(crate) fn prepare(a: &RunArgs) -> Result<(RunConfig, Vec<Loaded>)> {
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
pub(crate) fn preflight(
    a: &RunArgs,
    prepared: (RunConfig, Vec<Loaded>),
) -> Result<(RunConfig, Vec<Loaded>)> {
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
pub(crate) fn run(a: &RunArgs, cfg: RunConfig, scenarios: Vec<Loaded>) -> Result<u8> {
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
pub(crate) fn differential(a: &RunArgs, cfg: RunConfig, scenarios: Vec<Loaded>) -> Result<u8> {
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
pub(crate) fn differential(_: &RunArgs, _: RunConfig, _: Vec<Loaded>) -> Result<u8> {
    bail!("--containerd: this harness was built without the `containerd` feature; run `cargo build -p harness --features containerd` (needs protoc)")
}

/// `harness record --to-scenario DIR OUT.yaml`.
pub(crate) fn record(a: &RecordArgs) -> Result<()> {
    let (text, steps) = harness::record::convert::to_scenario(&a.recording)?;
    std::fs::write(&a.out, text).with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "harness: wrote {} ({steps} steps) from {}",
        a.out.display(),
        a.recording.display()
    );
    Ok(())
}

/// `harness cri`: exit 0 when every step passed, 1 when one failed, 2 when it could not run.
#[cfg(feature = "containerd")]
pub(crate) fn cri(a: &CriArgs) -> Result<u8> {
    use harness::cri::{self, CriConfig};
    let socket = cri::endpoint_socket(&a.endpoint).map_err(|e| anyhow!(e))?;
    let import_with = if a.import_images {
        Some(cri::image::find_ctr(a.ctr.as_deref())?)
    } else {
        None
    };
    let cfg = CriConfig {
        socket,
        handler: a.handler.clone(),
        import_with,
        image: a.image.clone(),
        timeout: a.timeout,
        grace: a.grace,
    };
    let report = cri::run_blocking(&cfg, &a.endpoint)?;
    let text = match a.format {
        CriFormat::Human => report.human(),
        CriFormat::Json => report.to_json(),
        CriFormat::Junit => report.junit(),
    };
    match &a.report {
        Some(p) => {
            std::fs::write(p, &text).with_context(|| format!("--report `{}`", p.display()))?;
            eprint!("{}", report.summary_line());
        }
        None => emit(&text),
    }
    Ok(report.exit_code())
}

#[cfg(not(feature = "containerd"))]
pub(crate) fn cri(_: &CriArgs) -> Result<u8> {
    bail!("cri: this harness was built without the `containerd` feature; run `cargo build -p harness --features containerd` (needs protoc)")
}

/// `containerd --address A publish --topic T --namespace N` with the event on stdin; the core's
/// parser reads the raw arguments (Go-style flags) itself.
pub(crate) fn publish() -> Result<()> {
    harness::publish::run_blocking(std::env::args().skip(1)).map_err(|e| anyhow!("{e}"))
}

/// `harness stress`: exit 0 when every lifecycle completed and nothing leaked, 1 otherwise,
/// 2 when the run could not happen.
pub(crate) fn stress(a: &StressArgs) -> Result<u8> {
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
pub(crate) fn compare(a: &CompareArgs) -> Result<()> {
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
pub(crate) fn shell(a: &ShellArgs) -> Result<u8> {
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
