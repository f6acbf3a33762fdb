//! `harness shell`: an interactive session on one launched shim. Each line is a command in the
//! scenario step vocabulary ([`command`]), run by the scenario engine's own step execution
//! ([`crate::engine::Session`]); answers and newly arrived events are printed as they come, a
//! failed command is reported and the session goes on, `save FILE` writes the session as a
//! scenario file ([`save`]) and the end of the session closes the shim as a scenario's end does.
//!
//! Everything the session prints goes to stdout (it is the session's transcript); only an error
//! that ends the session early goes to stderr.

mod command;
mod input;
pub mod save;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::bundle::RootfsKind;
use crate::dialect::Dialect;
use crate::engine::{RunConfig, Session, StepOutcome};
use crate::events::RecordedEvent;
use crate::report::{Status, StepResult};
use crate::scenario::{Process, Step};

pub use command::{parse, Command, Spec, StepCommand, BUILTINS, STEPS};
pub use save::Recorder;

/// How a shell session is set up.
#[derive(Debug, Clone)]
pub struct ShellOptions {
    /// The shim binary.
    pub shim: PathBuf,
    /// Which containerd to imitate.
    pub dialect: Dialect,
    /// The bundle's root filesystem.
    pub rootfs: RootfsKind,
    /// Extra environment for the shim.
    pub shim_env: Vec<(String, String)>,
    /// Default bound of one RPC or check.
    pub step_timeout: Duration,
}

impl Default for ShellOptions {
    fn default() -> Self {
        ShellOptions {
            shim: PathBuf::new(),
            dialect: Dialect::default(),
            rootfs: RootfsKind::Busybox,
            shim_env: Vec::new(),
            step_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a session could not run.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// The runtime, mock containerd or shim could not be started.
    #[error("starting the session: {0}")]
    Start(String),
    /// Reading commands failed.
    #[error("{0}")]
    Input(String),
    /// Writing the transcript failed.
    #[error("writing the session's output: {0}")]
    Output(#[from] std::io::Error),
}

/// How a session ended.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Commands that failed (bad input, error answers, failed checks).
    pub failed: usize,
    /// What the close found left behind (processes, sockets, mounts).
    pub leaks: Vec<String>,
}

/// Events whose RPCs usually make the shim publish something: after them the shell waits a
/// moment so the events show next to the command that caused them.
const EVENTFUL: &[&str] = &[
    "create",
    "start",
    "kill",
    "delete",
    "exec",
    "pause",
    "resume",
    "checkpoint",
    "kill-shim",
    "shutdown",
];
/// How long to wait for a first event after an eventful command.
const SETTLE: Duration = Duration::from_millis(150);

/// Runs a session reading commands from stdin (a terminal gets line editing and history) until
/// `quit` or end of input, writing the transcript to stdout.
pub fn run(opts: &ShellOptions) -> Result<Summary, ShellError> {
    use std::io::IsTerminal;
    let mut input = input::Input::new(std::io::stdin().is_terminal()).map_err(ShellError::Input)?;
    let mut out = std::io::stdout();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ShellError::Start(format!("tokio runtime: {e}")))?;
    let cfg = RunConfig {
        shim: opts.shim.clone(),
        dialect: opts.dialect,
        jobs: 1,
        shim_env: opts.shim_env.clone(),
        step_timeout: opts.step_timeout,
        rootfs: opts.rootfs,
        namespace: "shell".into(),
        ..RunConfig::default()
    };
    let placeholder = process(save::PLACEHOLDER.iter().map(|s| s.to_string()).collect());
    let session = rt
        .block_on(Session::open(&cfg, placeholder))
        .map_err(ShellError::Start)?;
    let signals = rt
        .block_on(async { Signals::new(input.is_terminal()) })
        .map_err(|e| ShellError::Start(format!("catching signals: {e}")))?;
    let mut shell = Shell {
        session,
        rec: Recorder::default(),
        opts,
        failed: 0,
        signals,
    };
    let ended = shell.repl(&rt, &mut input, &mut out);
    let Shell {
        session, failed, ..
    } = shell;
    let closed = rt.block_on(session.close());
    let mut summary = Summary {
        failed,
        leaks: closed.leaks.clone(),
    };
    if let Some(why) = closed.reason.as_deref() {
        summary.leaks.push(why.to_string());
    }
    if summary.leaks.is_empty() {
        writeln!(out, "shim closed; nothing left behind")?;
    } else {
        writeln!(
            out,
            "shim closed; left behind: {}",
            summary.leaks.join("; ")
        )?;
    }
    ended?;
    Ok(summary)
}

struct Shell<'s, 'a> {
    session: Session<'a>,
    rec: Recorder,
    opts: &'s ShellOptions,
    failed: usize,
    signals: Signals,
}

/// The signals a session catches so that it always closes its shim. SIGINT on a terminal ends
/// the running step only (at the prompt rustyline reads Ctrl-C as a key); SIGHUP, and from a
/// pipe SIGINT and SIGTERM, end the session. SIGTERM is not caught on a terminal: a blocked
/// terminal read could not be woken to close the session.
struct Signals {
    terminal: bool,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    term: Option<tokio::signal::unix::Signal>,
}

/// What a caught signal asks for.
enum Caught {
    /// End the running step (Ctrl-C on a terminal).
    Interrupt,
    /// End the session (the signal's name).
    Stop(&'static str),
}

impl Signals {
    /// Registers the handlers (inside the runtime), before any step runs.
    fn new(terminal: bool) -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            terminal,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            term: if terminal {
                None
            } else {
                Some(signal(SignalKind::terminate())?)
            },
        })
    }

    async fn next(&mut self) -> Caught {
        let term = async {
            match &mut self.term {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = self.int.recv() => if self.terminal { Caught::Interrupt } else { Caught::Stop("SIGINT") },
            _ = self.hup.recv() => Caught::Stop("SIGHUP"),
            _ = term => Caught::Stop("SIGTERM"),
        }
    }
}

/// Whether the session goes on after a command.
enum Flow {
    Go,
    Stop,
}

impl Shell<'_, '_> {
    fn repl(
        &mut self,
        rt: &tokio::runtime::Runtime,
        input: &mut input::Input,
        out: &mut impl Write,
    ) -> Result<(), ShellError> {
        let pid = self
            .session
            .shim_pid()
            .map(|p| format!("pid {p}"))
            .unwrap_or_else(|| "pid unknown".into());
        writeln!(
            out,
            "harness shell: {} ({pid}) at {}; namespace {}, containerd {} dialect",
            self.opts.shim.display(),
            self.session.address(),
            self.session.namespace(),
            self.opts.dialect
        )?;
        writeln!(
            out,
            "type `help` for the commands, `quit` (or end of input) to end the session"
        )?;
        out.flush()?;
        let terminal = input.is_terminal();
        loop {
            let read = match input.lines() {
                Some(rx) => {
                    let signals = &mut self.signals;
                    rt.block_on(async {
                        tokio::select! {
                            l = rx.recv() => match l {
                                Some(Ok(line)) => Ok(input::Read::Line(line)),
                                Some(Err(e)) => Err(e),
                                None => Ok(input::Read::Eof),
                            },
                            c = signals.next() => Ok(match c {
                                Caught::Stop(name) => input::Read::Stopped(name),
                                Caught::Interrupt => input::Read::Interrupted,
                            }),
                        }
                    })
                }
                None => input.read("harness> "),
            };
            let line = match read.map_err(ShellError::Input)? {
                input::Read::Line(l) => l,
                input::Read::Interrupted => {
                    writeln!(out, "(interrupted; `quit` ends the session)")?;
                    continue;
                }
                input::Read::Eof => break,
                input::Read::Stopped(name) => {
                    self.failed += 1;
                    writeln!(out, "({name}: ending the session)")?;
                    break;
                }
            };
            if !terminal && !line.trim().is_empty() {
                writeln!(out, "> {line}")?;
            }
            match parse(&line) {
                Err(msg) => {
                    self.failed += 1;
                    writeln!(out, "error: {msg}")?;
                }
                Ok(Command::Nothing) => {}
                Ok(Command::Quit) => break,
                Ok(Command::Help(topic)) => help(out, topic.as_deref())?,
                Ok(Command::Save(file)) => self.save(out, &line, &file)?,
                Ok(Command::ShowEvents) => {
                    rt.block_on(self.session.new_events(Duration::ZERO));
                    let all = self.session.events();
                    writeln!(out, "events ({}):", all.len())?;
                    for (i, e) in all.iter().enumerate() {
                        writeln!(out, "  {:>2} {}", i + 1, event_line(e))?;
                    }
                    self.rec.events(&line, &all);
                }
                Ok(Command::ShowOutput(exec_id)) => self.show_output(out, &line, &exec_id)?,
                Ok(Command::Step(cmd)) => {
                    let eventful = EVENTFUL.contains(&cmd.name());
                    if let Flow::Stop = self.step(rt, out, &line, *cmd)? {
                        break;
                    }
                    let settle = if eventful { SETTLE } else { Duration::ZERO };
                    for e in rt.block_on(self.session.new_events(settle)) {
                        writeln!(out, "  event {}", event_line(&e))?;
                    }
                }
            }
            out.flush()?;
        }
        Ok(())
    }

    fn step(
        &mut self,
        rt: &tokio::runtime::Runtime,
        out: &mut impl Write,
        line: &str,
        mut cmd: StepCommand,
    ) -> Result<Flow, ShellError> {
        let mut main_argv = None;
        if cmd.name() == "create" {
            match self.prepare_create(&mut cmd) {
                Ok(argv) => main_argv = argv,
                Err(msg) => {
                    self.failed += 1;
                    writeln!(out, "error: {msg}")?;
                    return Ok(Flow::Go);
                }
            }
        }
        let session = &mut self.session;
        let signals = &mut self.signals;
        let outcome = rt.block_on(async {
            tokio::select! {
                o = session.step(&cmd.step) => Ok(o),
                c = signals.next() => Err(c),
            }
        });
        let outcome = match outcome {
            Ok(o) => o,
            Err(Caught::Interrupt) => {
                self.failed += 1;
                writeln!(out, "{}: interrupted", cmd.name())?;
                return Ok(Flow::Go);
            }
            Err(Caught::Stop(name)) => {
                self.failed += 1;
                writeln!(
                    out,
                    "{}: interrupted ({name}: ending the session)",
                    cmd.name()
                )?;
                return Ok(Flow::Stop);
            }
        };
        show_outcome(out, &outcome)?;
        if outcome.failure.is_some() {
            self.failed += 1;
        } else if let Some(argv) = &main_argv {
            self.rec.main_process(line, argv);
        }
        self.rec.step(line, &cmd, &outcome);
        Ok(Flow::Go)
    }

    /// Puts a `create`'s argv where it belongs: the main container's process goes into its
    /// bundle (returned, for the saved scenario's `process`); another container's into the step.
    fn prepare_create(&mut self, cmd: &mut StepCommand) -> Result<Option<Vec<String>>, String> {
        let args = cmd.args().cloned().unwrap_or_default();
        let main = match args.get("container") {
            None => true,
            Some(Value::String(c)) => c == "main",
            Some(_) => false,
        };
        if !main {
            if !cmd.argv.is_empty() {
                let mut value = cmd.value.clone();
                if let Some(m) = value.get_mut("create").and_then(Value::as_object_mut) {
                    m.insert("process".into(), serde_json::json!({ "args": cmd.argv }));
                }
                cmd.step = serde_json::from_value::<Step>(value.clone())
                    .map_err(|e| format!("create: {e}"))?;
                cmd.value = value;
            }
            return Ok(None);
        }
        if cmd.argv.is_empty() {
            return match self.rec.process() {
                Some(p) => Ok(Some(p.to_vec())),
                None => {
                    Err("create: give the init process, e.g. `create sh -c 'sleep 30'`".to_string())
                }
            };
        }
        let terminal = args
            .get("terminal")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        self.session
            .set_process(process(cmd.argv.clone()), terminal)
            .map_err(|e| format!("create: {e}"))?;
        Ok(Some(cmd.argv.clone()))
    }

    fn save(&mut self, out: &mut impl Write, line: &str, file: &str) -> Result<(), ShellError> {
        let path = Path::new(file);
        let shim = self.opts.shim.display();
        let rootfs = match self.opts.rootfs {
            RootfsKind::Busybox => "",
            RootfsKind::None => " --rootfs none",
        };
        let replay = format!(
            "harness run --shim {shim} --containerd-version {}{rootfs} --scenarios {file}",
            self.opts.dialect
        );
        let header = vec![
            format!(
                "Recorded by `harness shell` (harness {}) against {shim}, containerd {} dialect.",
                env!("CARGO_PKG_VERSION"),
                self.opts.dialect
            ),
            format!("Replay: {replay}"),
        ];
        match self.rec.save(path, &header) {
            Ok(n) => writeln!(out, "saved {n} step(s) to {file}; replay: {replay}")?,
            Err(msg) => {
                self.failed += 1;
                writeln!(out, "error: save: {msg}")?;
            }
        }
        let _ = line;
        Ok(())
    }

    fn show_output(
        &mut self,
        out: &mut impl Write,
        line: &str,
        exec_id: &str,
    ) -> Result<(), ShellError> {
        let who = if exec_id.is_empty() {
            "the init".to_string()
        } else {
            format!("exec {exec_id}")
        };
        let Some((stdout, stderr)) = self.session.output(exec_id) else {
            self.failed += 1;
            writeln!(
                out,
                "error: stdout: no captured output for {who} (not created yet, or not through this session)"
            )?;
            return Ok(());
        };
        for (name, bytes) in [("stdout", &stdout), ("stderr", &stderr)] {
            if name == "stderr" && bytes.is_empty() {
                continue;
            }
            let text = String::from_utf8_lossy(bytes);
            writeln!(out, "{name} of {who} ({} bytes):", bytes.len())?;
            for l in text.lines() {
                writeln!(out, "  | {l}")?;
            }
        }
        self.rec.output(line, exec_id, &stdout, &stderr);
        Ok(())
    }
}

/// A scenario process with just its argv.
fn process(args: Vec<String>) -> Process {
    serde_json::from_value(serde_json::json!({ "args": args }))
        .expect("a process with only args is valid")
}

fn show_outcome(out: &mut impl Write, o: &StepOutcome) -> std::io::Result<()> {
    for s in &o.steps {
        show_step(out, s)?;
    }
    if o.steps.iter().all(|s| s.status != Status::Failed) {
        if let Some(f) = &o.failure {
            writeln!(out, "error: {f}")?;
        }
    }
    Ok(())
}

fn show_step(out: &mut impl Write, s: &StepResult) -> std::io::Result<()> {
    let ms = s.duration_ms;
    match s.status {
        Status::Failed => {
            let msg = s.message.clone().unwrap_or_else(|| {
                s.error
                    .as_ref()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "failed".into())
            });
            writeln!(out, "{}: error: {msg} ({ms} ms)", s.step)
        }
        Status::Skipped => writeln!(
            out,
            "{}: skipped: {} ({ms} ms)",
            s.step,
            s.message.as_deref().unwrap_or("")
        ),
        _ => {
            let mut text = fields(&s.response);
            if let Some(e) = &s.error {
                // An error that the line expected (`expect-error=`).
                text = format!("expected error {}", fields(e));
            }
            if text.is_empty() {
                text = "ok".into();
            }
            writeln!(out, "{}: {text} ({ms} ms)", s.step)
        }
    }
}

/// `key=value` pairs of a JSON object, leaving out nulls and empty strings.
fn fields(v: &Value) -> String {
    match v {
        Value::Object(m) => m
            .iter()
            .filter(|(_, v)| !v.is_null() && v.as_str() != Some(""))
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn event_line(e: &RecordedEvent) -> String {
    let mut f = e.fields.clone();
    crate::engine::normalize_times(&mut f);
    format!("{} {}", e.topic, fields(&f))
}

fn help(out: &mut impl Write, topic: Option<&str>) -> std::io::Result<()> {
    if let Some(t) = topic {
        if let Some(s) = command::find(t) {
            writeln!(out, "usage: {}\n  {}", s.usage, s.about)?;
            return writeln!(
                out,
                "  any key of the `{}` step is also accepted as KEY=VALUE (see `harness schema`)",
                s.name
            );
        }
        if let Some((u, a)) = BUILTINS
            .iter()
            .find(|(u, _)| u.split(' ').next() == Some(t))
        {
            return writeln!(out, "usage: {u}\n  {a}");
        }
        return writeln!(out, "error: help: unknown command `{t}`; `help` lists them");
    }
    writeln!(
        out,
        "Steps (the scenario vocabulary; one RPC or check per line):"
    )?;
    for s in STEPS {
        writeln!(out, "  {:<44} {}", s.usage, s.about)?;
    }
    writeln!(out, "Shell commands:")?;
    for (u, a) in BUILTINS {
        writeln!(out, "  {u:<44} {a}")?;
    }
    writeln!(
        out,
        "Any step key can be given as KEY=VALUE (YAML value): `state expect-error=not-found`,\n\
         `wait timeout=30s`, `create container=c2 sleep 9`, `output stdout='{{contains: hi}}'`.\n\
         A line starting with `{{` is one YAML step: `{{events: {{expect: [/tasks/exit], exact: true}}}}`.\n\
         ${{init-pid}}, ${{shim-pid}}, ${{bundle}} and saved variables expand as in scenarios.\n\
         Example session:\n  \
         create sh -c 'sleep 30'\n  start\n  exec e1 echo hi\n  start e1\n  wait e1\n  stdout e1\n  \
         kill SIGTERM\n  wait\n  delete\n  save sigterm.yaml"
    )
}
