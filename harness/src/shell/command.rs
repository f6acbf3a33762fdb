//! The shell's command language: one line, split like a POSIX shell (`shlex`), mapped onto the
//! scenario step vocabulary (`kill SIGTERM` is the step `{kill: {signal: SIGTERM}}`), plus the
//! shell's own words (`help`, `stdout`, `save`, `quit`). Steps are checked by the scenario
//! format's own strict types, so the shell accepts exactly what a scenario file accepts.

use serde_json::{Map, Value};

use crate::scenario::Step;

/// What follows a command's fixed positional arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// Nothing more.
    None,
    /// A process's argv (the rest of the line).
    Argv,
    /// Event topics.
    Topics,
}

/// One command of the shell.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The command word (the step's key for steps).
    pub name: &'static str,
    /// Step keys the positional arguments fill, in order.
    positional: &'static [&'static str],
    /// How many positional arguments are required.
    required: usize,
    tail: Tail,
    /// Usage line.
    pub usage: &'static str,
    /// One-line description.
    pub about: &'static str,
}

const fn spec(
    name: &'static str,
    positional: &'static [&'static str],
    required: usize,
    tail: Tail,
    usage: &'static str,
    about: &'static str,
) -> Spec {
    Spec {
        name,
        positional,
        required,
        tail,
        usage,
        about,
    }
}

/// The step commands, in the order `help` lists them.
#[rustfmt::skip]
pub const STEPS: &[Spec] = &[
    spec("create", &[], 0, Tail::Argv, "create [OPT=V..] [ARG..]", "Task.Create; ARGs are the init process (default: the previous create's)"),
    spec("start", &["exec-id"], 0, Tail::None, "start [EXEC-ID]", "Task.Start of the init, or of an exec"),
    spec("state", &["exec-id"], 0, Tail::None, "state [EXEC-ID]", "Task.State"),
    spec("kill", &["signal", "exec-id"], 1, Tail::None, "kill SIGNAL [EXEC-ID] [all=true]", "Task.Kill with a signal name (SIGTERM, TERM) or number"),
    spec("wait", &["exec-id"], 0, Tail::None, "wait [EXEC-ID] [timeout=30s]", "Task.Wait: blocks until the process exits (bounded)"),
    spec("delete", &["exec-id"], 0, Tail::None, "delete [EXEC-ID]", "Task.Delete"),
    spec("exec", &["exec-id"], 1, Tail::Argv, "exec EXEC-ID ARG..", "Task.Exec: adds a process (run it with `start EXEC-ID`)"),
    spec("pids", &[], 0, Tail::None, "pids", "Task.Pids"),
    spec("pause", &[], 0, Tail::None, "pause", "Task.Pause"),
    spec("resume", &[], 0, Tail::None, "resume", "Task.Resume"),
    spec("stats", &[], 0, Tail::None, "stats", "Task.Stats"),
    spec("close-io", &["exec-id"], 0, Tail::None, "close-io [EXEC-ID]", "Task.CloseIO (stdin)"),
    spec("resize-pty", &["exec-id"], 0, Tail::None, "resize-pty [EXEC-ID] [width=N height=N]", "Task.ResizePty"),
    spec("update", &[], 0, Tail::None, "update resources='{...}'", "Task.Update with OCI LinuxResources"),
    spec("checkpoint", &["path"], 0, Tail::None, "checkpoint [PATH]", "Task.Checkpoint"),
    spec("connect", &[], 0, Tail::None, "connect", "Task.Connect"),
    spec("shutdown", &[], 0, Tail::None, "shutdown [now=true]", "Task.Shutdown (the shim may exit)"),
    spec("events", &[], 0, Tail::Topics, "events [TOPIC..]", "show the events so far; with TOPICs, check they arrived in that order"),
    spec("output", &[], 0, Tail::None, "output [exec-id=ID] stdout='{contains: hi}'", "wait until captured output matches"),
    spec("sleep", &["duration"], 1, Tail::None, "sleep DURATION", "pause the session (200ms, 2s)"),
    spec("wait-result", &["handle"], 1, Tail::None, "wait-result HANDLE", "the answer of `wait background=HANDLE`"),
    spec("shim-alive", &["alive"], 1, Tail::None, "shim-alive true|false", "the shim server must (not) be running"),
    spec("kill-shim", &["signal"], 0, Tail::None, "kill-shim [SIGNAL]", "signal the shim server itself (default SIGKILL)"),
];

/// The shell's own commands: `(usage, description)`.
pub const BUILTINS: &[(&str, &str)] = &[
    (
        "stdout [EXEC-ID]",
        "show the output captured so far of the init or an exec",
    ),
    (
        "save FILE",
        "write the session so far as a scenario file (`harness run --scenarios FILE`)",
    ),
    ("help [COMMAND]", "this list, or one command's usage"),
    (
        "quit",
        "end the session (also `exit` or end of input); the shim is shut down",
    ),
];

/// A parsed line.
#[derive(Debug, Clone)]
pub enum Command {
    /// An empty line or a comment.
    Nothing,
    /// `help`, optionally about one command.
    Help(Option<String>),
    /// `quit` / `exit`.
    Quit,
    /// `save FILE`.
    Save(String),
    /// `events` without topics: show what arrived.
    ShowEvents,
    /// `stdout [EXEC-ID]`.
    ShowOutput(String),
    /// A scenario step.
    Step(Box<StepCommand>),
}

/// A step command: the step as a scenario file would hold it, and its parsed form.
#[derive(Debug, Clone)]
pub struct StepCommand {
    /// `{name: {args}}`, as written into a saved scenario.
    pub value: Value,
    /// The parsed step.
    pub step: Step,
    /// `create`'s argv (the process), kept apart: the main container's goes into the
    /// scenario's `process`.
    pub argv: Vec<String>,
    /// Whether the line gave `expect` or `expect-error` itself.
    pub judged: bool,
}

impl StepCommand {
    /// The step's key (`create`, `kill`, ...).
    pub fn name(&self) -> &'static str {
        self.step.name()
    }

    /// The step's arguments (the map under its key).
    pub fn args(&self) -> Option<&Map<String, Value>> {
        self.value.as_object()?.values().next()?.as_object()
    }
}

/// The spec of a step command.
pub fn find(name: &str) -> Option<&'static Spec> {
    STEPS.iter().find(|s| s.name == name)
}

/// Parses one line. Errors are one line naming the command and what is wrong.
pub fn parse(line: &str) -> Result<Command, String> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(Command::Nothing);
    }
    if trimmed.starts_with('{') || trimmed.starts_with("- ") {
        return raw_step(trimmed).map(|s| Command::Step(Box::new(s)));
    }
    let words = shlex::split(trimmed)
        .ok_or_else(|| "unbalanced quotes or a trailing backslash in the line".to_string())?;
    let Some((word, rest)) = words.split_first() else {
        return Ok(Command::Nothing);
    };
    match word.as_str() {
        "help" | "?" => {
            if rest.len() > 1 {
                return Err("help: expected at most one COMMAND".into());
            }
            Ok(Command::Help(rest.first().cloned()))
        }
        "quit" | "exit" => Ok(Command::Quit),
        "save" => match rest {
            [file] => Ok(Command::Save(file.clone())),
            [] => Err("save: missing FILE; usage: save FILE".into()),
            _ => Err("save: expected one FILE; usage: save FILE".into()),
        },
        "stdout" => match rest {
            [] => Ok(Command::ShowOutput(String::new())),
            [id] if id.contains('=') => Err(format!(
                "stdout: `{id}` is not an exec id; `stdout` prints what arrived so far and takes no \
                 options; usage: stdout [EXEC-ID]"
            )),
            [id] => Ok(Command::ShowOutput(id.clone())),
            _ => Err("stdout: expected at most one EXEC-ID; usage: stdout [EXEC-ID]".into()),
        },
        "events" if rest.is_empty() => Ok(Command::ShowEvents),
        name => match find(name) {
            Some(spec) => step_command(spec, rest).map(|s| Command::Step(Box::new(s))),
            None => Err(unknown(name)),
        },
    }
}

/// The message for an unknown command, with the closest known one when there is one.
fn unknown(name: &str) -> String {
    let names = STEPS
        .iter()
        .map(|s| s.name)
        .chain(["stdout", "save", "help", "quit", "exit"]);
    let near = names
        .map(|n| (distance(n, name), n))
        .filter(|(d, _)| *d <= 2)
        .min();
    match near {
        Some((_, n)) => {
            format!("unknown command `{name}` (did you mean `{n}`?); type `help` for the list")
        }
        None => format!("unknown command `{name}`; type `help` for the list"),
    }
}

/// Levenshtein distance of two short words.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// `key=value` with a kebab-case key: an argument of the step (the value read as YAML).
fn option(word: &str) -> Option<(&str, &str)> {
    let (k, v) = word.split_once('=')?;
    let mut chars = k.chars();
    let first = chars.next()?;
    (first.is_ascii_lowercase()
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
    .then_some((k, v))
}

fn yaml_value(key: &str, text: &str) -> Result<Value, String> {
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_yaml_ng::from_str::<Value>(text)
        .map_err(|e| format!("`{key}={text}`: not a YAML value: {e}"))
}

fn step_command(spec: &Spec, words: &[String]) -> Result<StepCommand, String> {
    let name = spec.name;
    let usage = || format!("usage: {}", spec.usage);
    let mut args = Map::new();
    let mut positional = Vec::new();
    let mut tail = Vec::new();
    for w in words {
        let in_tail = !tail.is_empty()
            || (spec.tail != Tail::None
                && positional.len() >= spec.positional.len()
                && option(w).is_none());
        if in_tail {
            tail.push(w.clone());
            continue;
        }
        if let Some((k, v)) = option(w) {
            if args.contains_key(k) {
                return Err(format!("{name}: `{k}` given twice"));
            }
            args.insert(k.to_string(), yaml_value(k, v)?);
        } else if positional.len() < spec.positional.len() {
            positional.push(w.clone());
        } else {
            return Err(format!("{name}: unexpected argument `{w}`; {}", usage()));
        }
    }
    if positional.len() < spec.required {
        let missing = spec.positional[positional.len()].to_ascii_uppercase();
        return Err(format!("{name}: missing {missing}; {}", usage()));
    }
    for (key, val) in spec.positional.iter().zip(&positional) {
        if args.contains_key(*key) {
            return Err(format!("{name}: `{key}` given twice"));
        }
        let v = match *key {
            "alive" => yaml_value(key, val)?,
            _ => Value::String(val.clone()),
        };
        args.insert((*key).to_string(), v);
    }
    let mut argv = Vec::new();
    match spec.tail {
        Tail::Argv if name == "exec" => {
            if tail.is_empty() {
                return Err(format!("exec: missing the process (ARG..); {}", usage()));
            }
            if args.contains_key("process") {
                return Err("exec: give the process as ARGs or as `process=`, not both".into());
            }
            args.insert("process".into(), serde_json::json!({ "args": tail }));
        }
        Tail::Argv => argv = tail,
        Tail::Topics => {
            if args.contains_key("expect") {
                return Err("events: give TOPICs or `expect=`, not both".into());
            }
            args.insert("expect".into(), Value::from(tail));
        }
        Tail::None => {}
    }
    let judged =
        args.contains_key("expect") && name != "events" || args.contains_key("expect-error");
    let value = if name == "sleep" {
        let d = args.remove("duration").unwrap_or(Value::Null);
        if !args.is_empty() {
            return Err(format!("sleep: takes only a DURATION; {}", usage()));
        }
        serde_json::json!({ "sleep": d })
    } else {
        let mut m = Map::new();
        m.insert(name.to_string(), Value::Object(args));
        Value::Object(m)
    };
    let step = to_step(&value)?;
    Ok(StepCommand {
        value,
        step,
        argv,
        judged,
    })
}

/// A step written as YAML on one line: `{events: {expect: [/tasks/exit], exact: true}}`.
fn raw_step(text: &str) -> Result<StepCommand, String> {
    let text = text.strip_prefix("- ").unwrap_or(text);
    let value: Value =
        serde_yaml_ng::from_str(text).map_err(|e| format!("not a YAML step: {e}"))?;
    let name = match value.as_object() {
        Some(m) if m.len() == 1 => m.keys().next().cloned().unwrap_or_default(),
        _ => {
            return Err(
                "a YAML step is a map with exactly one key, e.g. `{kill: {signal: 9}}`".into(),
            )
        }
    };
    let step = to_step(&value)?;
    let args = value.get(&name).and_then(Value::as_object);
    let judged = args.is_some_and(|a| {
        a.contains_key("expect-error") || (a.contains_key("expect") && name != "events")
    });
    Ok(StepCommand {
        value,
        step,
        argv: Vec::new(),
        judged,
    })
}

/// Checks a step with the scenario format's own types.
fn to_step(value: &Value) -> Result<Step, String> {
    let name = value
        .as_object()
        .and_then(|m| m.keys().next().cloned())
        .unwrap_or_default();
    serde_json::from_value::<Step>(value.clone()).map_err(|e| {
        let msg = e.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        format!("{name}: {msg}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(line: &str) -> StepCommand {
        match parse(line) {
            Ok(Command::Step(s)) => *s,
            other => panic!("`{line}`: expected a step, got {other:?}"),
        }
    }

    #[test]
    fn positional_arguments_fill_the_step_keys() {
        let k = step("kill SIGTERM e1 all=true");
        assert_eq!(
            k.value,
            serde_json::json!({"kill": {"signal": "SIGTERM", "exec-id": "e1", "all": true}})
        );
        let e = step("exec e1 sh -c 'echo a=b'");
        assert_eq!(
            e.value,
            serde_json::json!({"exec": {"exec-id": "e1", "process": {"args": ["sh", "-c", "echo a=b"]}}})
        );
        let c = step("create stdout=null sh -c 'sleep 30'");
        assert_eq!(c.argv, ["sh", "-c", "sleep 30"]);
        assert_eq!(c.value, serde_json::json!({"create": {"stdout": null}}));
        assert_eq!(
            step("sleep 200ms").value,
            serde_json::json!({"sleep": "200ms"})
        );
        assert!(step("wait expect-error=not-found").judged);
        assert!(!step("events /tasks/create").judged);
    }

    #[test]
    fn bad_input_names_the_command_and_the_problem() {
        let err = |l: &str| parse(l).err().unwrap_or_else(|| panic!("`{l}` parsed"));
        assert!(err("frobnicate").contains("unknown command `frobnicate`"));
        assert!(err("kil 9").contains("did you mean `kill`"));
        assert!(err("kill").contains("kill: missing SIGNAL"));
        let bad = err("kill SIGBOGUS");
        assert!(
            bad.starts_with("kill: ") && bad.contains("SIGBOGUS"),
            "{bad}"
        );
        assert!(err("start a b").contains("unexpected argument `b`"));
        assert!(err("create 'sh").contains("unbalanced"));
        assert!(err("exec e1").contains("missing the process"));
        assert!(err("sleep soon").starts_with("sleep: "));
        assert!(err("state bogus-key=1").starts_with("state: "));
    }

    #[test]
    fn raw_yaml_steps_use_the_scenario_types() {
        let s = step("{events: {expect: [/tasks/create], exact: true}}");
        assert_eq!(s.name(), "events");
        assert!(parse("{kill: {}}").is_err());
        assert!(parse("{a: 1, b: 2}").is_err());
    }

    #[test]
    fn shell_words_and_builtins() {
        assert!(matches!(parse("  # note"), Ok(Command::Nothing)));
        assert!(matches!(parse("events"), Ok(Command::ShowEvents)));
        assert!(matches!(parse("stdout e1"), Ok(Command::ShowOutput(id)) if id == "e1"));
        let e = parse("stdout timeout=2s").unwrap_err();
        assert!(e.contains("`timeout=2s` is not an exec id"), "{e}");
        assert!(matches!(parse("save 'a b.yaml'"), Ok(Command::Save(f)) if f == "a b.yaml"));
        assert!(matches!(parse("exit"), Ok(Command::Quit)));
    }
}
