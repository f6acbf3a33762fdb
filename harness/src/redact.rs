//! One `Redactor` for stable snapshots and reports: pids, timestamps, temp paths and socket
//! hashes become named placeholders. Rules apply in order and the list is append-only: new
//! rules go at the end so existing snapshots stay valid.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

/// One rewrite.
#[derive(Debug, Clone)]
struct Rule {
    re: Regex,
    placeholder: String,
}

/// An ordered list of rewrites (built-in rules first, then the caller's, in insertion order).
#[derive(Debug, Clone)]
pub struct Redactor {
    rules: Vec<Rule>,
    pids: BTreeMap<u64, String>,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new()
    }
}

/// Built-in rules, in order. Append only.
const BUILTIN: &[(&str, &str)] = &[
    // containerd socket hashes: sha256 hex under /run/containerd/s.
    (
        r"/run/containerd/s/[0-9a-f]{64}",
        "/run/containerd/s/[HASH]",
    ),
    // RFC 3339 timestamps (event times, exited-at).
    (
        r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})",
        "[TIMESTAMP]",
    ),
    // The mock's state dirs.
    (r"/tmp/harness-[A-Za-z0-9_]+", "[STATE]"),
    // tempfile's default dirs.
    (r"/tmp/\.tmp[A-Za-z0-9_]+", "[TMP]"),
];

impl Redactor {
    /// A redactor with the built-in rules.
    pub fn new() -> Self {
        Redactor {
            rules: BUILTIN
                .iter()
                .map(|(re, p)| Rule {
                    re: Regex::new(re).expect("built-in redaction regex"),
                    placeholder: (*p).to_string(),
                })
                .collect(),
            pids: BTreeMap::new(),
        }
    }

    /// Appends a rule replacing the exact text `literal` with `placeholder`.
    pub fn add_literal(&mut self, literal: &str, placeholder: &str) -> &mut Self {
        if !literal.is_empty() {
            self.rules.push(Rule {
                re: Regex::new(&regex::escape(literal)).expect("escaped literal"),
                placeholder: placeholder.to_string(),
            });
        }
        self
    }

    /// Appends a rule for a path (e.g. a bundle dir → `[BUNDLE]`).
    pub fn add_path(&mut self, path: &std::path::Path, placeholder: &str) -> &mut Self {
        self.add_literal(&path.display().to_string(), placeholder)
    }

    /// Appends a rule for a pid: as a whole number in text, and as the value of any JSON field
    /// whose name ends in `pid`, it becomes `[PID:<name>]`.
    pub fn add_pid(&mut self, pid: u64, name: &str) -> &mut Self {
        let placeholder = format!("[PID:{name}]");
        self.rules.push(Rule {
            re: Regex::new(&format!(r"\b{pid}\b")).expect("pid regex"),
            placeholder: placeholder.clone(),
        });
        self.pids.insert(pid, placeholder);
        self
    }

    /// Appends an arbitrary regex rule.
    pub fn add_regex(&mut self, re: &str, placeholder: &str) -> Result<&mut Self, regex::Error> {
        self.rules.push(Rule {
            re: Regex::new(re)?,
            placeholder: placeholder.to_string(),
        });
        Ok(self)
    }

    /// Applies every rule in order.
    pub fn redact(&self, text: &str) -> String {
        let mut s = text.to_string();
        for r in &self.rules {
            if r.re.is_match(&s) {
                s = r.re.replace_all(&s, r.placeholder.as_str()).into_owned();
            }
        }
        s
    }

    /// Redacts every string (and every registered pid in `*pid` fields) inside a JSON value.
    pub fn redact_json(&self, v: &mut Value) {
        match v {
            Value::String(s) => *s = self.redact(s),
            Value::Array(a) => a.iter_mut().for_each(|x| self.redact_json(x)),
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if k.ends_with("pid") {
                        if let Some(p) = x.as_u64().and_then(|n| self.pids.get(&n)) {
                            *x = Value::String(p.clone());
                            continue;
                        }
                    }
                    self.redact_json(x);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_cover_hashes_times_and_temp_dirs() {
        let r = Redactor::new();
        let h = "a".repeat(64);
        assert_eq!(
            r.redact(&format!(
                "unix:///run/containerd/s/{h} at 2026-11-22T10:20:12.123456Z"
            )),
            "unix:///run/containerd/s/[HASH] at [TIMESTAMP]"
        );
        assert_eq!(r.redact("/tmp/harness-Ab12/c.sock"), "[STATE]/c.sock");
    }

    #[test]
    fn pids_and_paths_become_named_placeholders_in_order() {
        let mut r = Redactor::new();
        r.add_path(std::path::Path::new("/x/bundle"), "[BUNDLE]")
            .add_pid(4242, "init");
        assert_eq!(
            r.redact("pid 4242 in /x/bundle/log, 42421"),
            "pid [PID:init] in [BUNDLE]/log, 42421"
        );
        let mut v =
            serde_json::json!({"pid": 4242, "exit-status": 4242, "io": {"stdout": "/x/bundle/o"}});
        r.redact_json(&mut v);
        assert_eq!(v["pid"], "[PID:init]");
        assert_eq!(v["exit-status"], 4242);
        assert_eq!(v["io"]["stdout"], "[BUNDLE]/o");
    }
}
