//! `save FILE`: the session so far as a scenario file. Every step that ran is written as typed,
//! with what was observed turned into expectations when the line gave none (`pid: nonzero`,
//! Wait's and Delete's `exit-status`, State's `status`, an error answer's code as
//! `expect-error`); steps that failed otherwise are kept as comments. The text is checked with
//! the strict scenario loader before it is written, so `harness run` replays it.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::command::StepCommand;
use crate::engine::StepOutcome;
use crate::events::RecordedEvent;
use crate::report::Status;

/// The init process written when the session never created one.
pub const PLACEHOLDER: [&str; 2] = ["sleep", "3600"];

enum Entry {
    /// A step and the line that produced it.
    Step { line: String, value: Value },
    /// A line that is not replayed, with why.
    Comment { line: String, why: String },
}

/// What the session did, in order.
#[derive(Default)]
pub struct Recorder {
    process: Option<Vec<String>>,
    /// The whole init process (`args`, `env`, `cwd`...), when more than its argv is known.
    init: Option<Value>,
    description: Option<String>,
    requires: Vec<String>,
    conflict: Option<String>,
    entries: Vec<Entry>,
}

impl Recorder {
    /// The main container's init process so far (the first `create`'s).
    pub fn process(&self) -> Option<&[String]> {
        self.process.as_deref()
    }

    /// Records a main-container `create` with `argv`: the scenario has one init process, so a
    /// later create with another one makes the session unsaveable (said at `save`).
    pub fn main_process(&mut self, line: &str, argv: &[String]) {
        match &self.process {
            None => self.process = Some(argv.to_vec()),
            Some(p) if p.as_slice() == argv => {}
            Some(p) => {
                if self.conflict.is_none() {
                    self.conflict = Some(format!(
                        "`{line}` created the init with another process than the first create ({}); a scenario has one init process",
                        p.join(" ")
                    ));
                }
            }
        }
    }

    /// Sets the whole init process (an OCI `process` as the scenario format takes it), the
    /// scenario's description and its `requires` (for a scenario written from elsewhere than a
    /// shell session, e.g. a recording).
    pub fn set_scenario(&mut self, init: Value, description: String, requires: Vec<String>) {
        self.process = init
            .get("args")
            .and_then(|a| serde_json::from_value(a.clone()).ok());
        self.init = Some(init);
        self.description = Some(description);
        self.requires = requires;
    }

    /// Appends a step (`{"kill": {...}}`), shown with `line` as its comment.
    pub fn push_step(&mut self, line: &str, value: Value) {
        self.entries.push(Entry::Step {
            line: line.to_string(),
            value,
        });
    }

    /// Appends a line that is not replayed, with why.
    pub fn push_comment(&mut self, line: &str, why: &str) {
        self.entries.push(Entry::Comment {
            line: line.to_string(),
            why: why.to_string(),
        });
    }

    /// Records a step that ran, with its outcome.
    pub fn step(&mut self, line: &str, cmd: &StepCommand, outcome: &StepOutcome) {
        let line = line.trim().to_string();
        let name = cmd.name();
        let last = outcome.steps.last();
        let mut value = cmd.value.clone();
        match &outcome.failure {
            None => {
                if !cmd.judged {
                    if let (Some(last), Some(args)) = (last, args_mut(&mut value, name)) {
                        if let Some(expect) = observed(name, args, &last.response) {
                            args.insert("expect".into(), expect);
                        }
                    }
                }
                self.entries.push(Entry::Step { line, value });
            }
            Some(why) => {
                let code = last
                    .filter(|s| s.status == Status::Failed)
                    .and_then(|s| s.error.as_ref())
                    .and_then(|e| e.get("code"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                match (code, cmd.judged, args_mut(&mut value, name)) {
                    (Some(code), false, Some(args)) => {
                        args.insert("expect-error".into(), Value::String(code));
                        self.entries.push(Entry::Step { line, value });
                    }
                    _ => self.entries.push(Entry::Comment {
                        line,
                        why: format!("failed in the session: {why}"),
                    }),
                }
            }
        }
    }

    /// Records `events`: the main container's topics seen so far become an `events` check.
    pub fn events(&mut self, line: &str, events: &[RecordedEvent]) {
        let topics: Vec<Value> = events
            .iter()
            .filter(|e| e.fields.get("container-id").and_then(Value::as_str) == Some("main"))
            .map(|e| Value::String(e.topic.clone()))
            .collect();
        let line = line.trim().to_string();
        if topics.is_empty() {
            self.entries.push(Entry::Comment {
                line,
                why: "no events had arrived".into(),
            });
        } else {
            let value = json!({"events": {"expect": topics}});
            self.entries.push(Entry::Step { line, value });
        }
    }

    /// Records `stdout [EXEC-ID]`: non-empty output becomes an `output` check (`contains`).
    pub fn output(&mut self, line: &str, exec_id: &str, out: &[u8], err: &[u8]) {
        let line = line.trim().to_string();
        let mut args = Map::new();
        if !exec_id.is_empty() {
            args.insert("exec-id".into(), Value::String(exec_id.into()));
        }
        for (key, bytes) in [("stdout", out), ("stderr", err)] {
            if !bytes.is_empty() {
                let text = String::from_utf8_lossy(bytes).into_owned();
                args.insert(key.into(), json!({ "contains": text }));
            }
        }
        if args.contains_key("stdout") || args.contains_key("stderr") {
            self.entries.push(Entry::Step {
                line,
                value: json!({ "output": args }),
            });
        } else {
            self.entries.push(Entry::Comment {
                line,
                why: "no output had been captured".into(),
            });
        }
    }

    /// How many steps would be saved.
    pub fn steps(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e, Entry::Step { .. }))
            .count()
    }

    /// The scenario text; `header` lines become leading comments.
    pub fn render(&self, header: &[String]) -> Result<String, String> {
        if let Some(c) = &self.conflict {
            return Err(c.clone());
        }
        if self.steps() == 0 {
            return Err("nothing to save yet: no step has run".into());
        }
        let mut text = String::new();
        for h in header {
            text.push_str(&format!("# {h}\n"));
        }
        let args: Vec<String> = match &self.process {
            Some(p) => p.clone(),
            None => PLACEHOLDER.iter().map(|s| s.to_string()).collect(),
        };
        let mut top = json!({
            "description": self.description.clone().unwrap_or_else(|| {
                format!("Recorded with harness shell: {} step(s)", self.steps())
            }),
            "process": self.init.clone().unwrap_or_else(|| json!({"args": args})),
        });
        if !self.requires.is_empty() {
            top["requires"] = json!(self.requires);
        }
        text.push_str(&yaml(&top)?);
        text.push_str("steps:\n");
        for e in &self.entries {
            match e {
                Entry::Step { line, value } => {
                    text.push_str(&format!("  # > {}\n", one_line(line)));
                    let item = yaml(&Value::Array(vec![value.clone()]))?;
                    for l in item.lines() {
                        text.push_str("  ");
                        text.push_str(l);
                        text.push('\n');
                    }
                }
                Entry::Comment { line, why } => {
                    text.push_str(&format!("  # > {}\n", one_line(line)));
                    text.push_str(&format!("  #   left out: {}\n", one_line(why)));
                }
            }
        }
        Ok(text)
    }

    /// Renders, checks with the strict loader, and writes `path`. Returns the step count.
    pub fn save(&self, path: &Path, header: &[String]) -> Result<usize, String> {
        let text = self.render(header)?;
        crate::scenario::load_str(path, &text)
            .map_err(|e| format!("the recorded scenario does not load (a harness bug): {e}"))?;
        std::fs::write(path, &text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(self.steps())
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn yaml(v: &Value) -> Result<String, String> {
    serde_yaml_ng::to_string(v).map_err(|e| format!("encoding YAML: {e}"))
}

fn args_mut<'v>(value: &'v mut Value, name: &str) -> Option<&'v mut Map<String, Value>> {
    value.get_mut(name)?.as_object_mut()
}

/// The expectation a passed step's answer gives, for steps whose answer is worth replaying.
pub fn observed(name: &str, args: &Map<String, Value>, response: &Value) -> Option<Value> {
    let field = |k: &str| response.get(k).cloned().filter(|v| !v.is_null());
    match name {
        "create" | "start" => Some(json!({"pid": "nonzero"})),
        "wait" if !args.contains_key("background") => {
            Some(json!({"exit-status": field("exit-status")?}))
        }
        "wait-result" if args.get("pending") != Some(&Value::Bool(true)) => {
            Some(json!({"exit-status": field("exit-status")?}))
        }
        "delete" => Some(json!({"exit-status": field("exit-status")?})),
        "state" => {
            let status = field("status")?;
            if status == "stopped" {
                Some(json!({"status": status, "exit-status": field("exit-status")?}))
            } else {
                Some(json!({ "status": status }))
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::StepResult;
    use crate::shell::command::{parse, Command};

    fn cmd(line: &str) -> StepCommand {
        match parse(line) {
            Ok(Command::Step(s)) => *s,
            other => panic!("{other:?}"),
        }
    }

    fn outcome(response: Value, error: Option<Value>, failure: Option<&str>) -> StepOutcome {
        StepOutcome {
            steps: vec![StepResult {
                step: "x".into(),
                status: if failure.is_some() {
                    Status::Failed
                } else {
                    Status::Passed
                },
                duration_ms: 1,
                response,
                error,
                request: None,
                message: None,
            }],
            failure: failure.map(str::to_string),
        }
    }

    #[test]
    fn observed_answers_become_expectations_and_the_file_loads() {
        let mut r = Recorder::default();
        let argv: Vec<String> = ["sh", "-c", "sleep 30"].map(String::from).to_vec();
        r.main_process("create sh -c 'sleep 30'", &argv);
        r.step(
            "create",
            &cmd("create"),
            &outcome(json!({"pid": 7}), None, None),
        );
        r.step(
            "wait",
            &cmd("wait"),
            &outcome(json!({"exit-status": 143, "exited-at": null}), None, None),
        );
        let err = Some(json!({"code": "not-found", "message": "no such task"}));
        r.step(
            "state e9",
            &cmd("state e9"),
            &outcome(json!({}), err, Some("State: expected success")),
        );
        r.step(
            "events /tasks/oom",
            &cmd("events /tasks/oom"),
            &outcome(json!({}), None, Some("expected events [/tasks/oom]")),
        );
        let text = r.render(&["header".into()]).unwrap();
        let sc = crate::scenario::load_str(Path::new("rec.yaml"), &text).unwrap();
        assert_eq!(sc.process.args, argv);
        assert_eq!(sc.steps.len(), 3, "{text}");
        assert!(text.contains("exit-status: 143"), "{text}");
        assert!(text.contains("expect-error: not-found"), "{text}");
        assert!(
            text.contains("#   left out: failed in the session"),
            "{text}"
        );
    }

    #[test]
    fn a_second_init_process_or_an_empty_session_cannot_be_saved() {
        let mut r = Recorder::default();
        assert!(r.render(&[]).unwrap_err().contains("nothing to save"));
        r.main_process("create a", &["a".to_string()]);
        r.main_process("create b", &["b".to_string()]);
        r.step(
            "create",
            &cmd("create"),
            &outcome(json!({"pid": 7}), None, None),
        );
        assert!(r.render(&[]).unwrap_err().contains("one init process"));
    }
}
