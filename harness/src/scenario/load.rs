//! Finding and loading scenario files: strict parsing with `file:line:col` errors, scenario
//! names from paths, `--filter`/`--skip` globs and the `--profile` file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Capability, Scenario, Step};

/// Why a scenario file (or profile) could not be loaded. Display is one line:
/// `path:line:col: message`.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The YAML did not parse or did not fit the schema.
    #[error("{path}:{line}:{col}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What was wrong and what was expected.
        message: String,
    },
    /// The file or directory could not be read.
    #[error("{path}: {message}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
}

/// Where a scenario was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The bundled suite compiled into the harness (`path` is `embedded:scenarios/<file>`).
    Embedded,
    /// A file on disk (`--scenarios`, or `$HARNESS_SCENARIOS`).
    File,
}

/// A scenario with its name (`lifecycle/sigterm`) and file.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Path relative to the scenarios dir, without `.yaml`.
    pub name: String,
    /// The file (for an embedded scenario `embedded:scenarios/<group>/<name>.yaml`, which is
    /// also what its load errors name).
    pub path: PathBuf,
    /// Where it came from.
    pub source: Source,
    /// The file's text.
    pub text: String,
    /// The parsed scenario.
    pub scenario: Scenario,
}

impl Loaded {
    /// The group: the first path component of the name (`lifecycle`), or `.` for top-level files.
    pub fn group(&self) -> &str {
        match self.name.split_once('/') {
            Some((g, _)) => g,
            None => ".",
        }
    }
}

fn strip_location(msg: &str) -> String {
    // serde_yaml_ng appends " at line N column M"; the location is printed in front instead.
    let re = regex::Regex::new(r" at line \d+ column \d+").expect("static regex");
    let one_line = re.replace(msg, "").replace('\n', " ");
    one_line.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn yaml_error(path: &Path, e: &serde_yaml_ng::Error) -> LoadError {
    let (line, col) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    LoadError::Parse {
        path: path.to_path_buf(),
        line,
        col,
        message: strip_location(&e.to_string()),
    }
}

/// Parses scenario text; `path` is only used in errors.
pub fn load_str(path: &Path, text: &str) -> Result<Scenario, LoadError> {
    let sc: Scenario = serde_yaml_ng::from_str(text).map_err(|e| yaml_error(path, &e))?;
    // A scenario whose `start` must be refused needs no steps: they would never run.
    let start_only = sc
        .bootstrap
        .as_ref()
        .is_some_and(|b| b.start != super::StartOutcome::Works);
    if sc.steps.is_empty() && !start_only {
        return Err(LoadError::Parse {
            path: path.to_path_buf(),
            line: 1,
            col: 1,
            message: "steps: expected at least one step".into(),
        });
    }
    check_steps(path, text, &sc.steps)?;
    Ok(sc)
}

fn check_steps(path: &Path, text: &str, steps: &[Step]) -> Result<(), LoadError> {
    for s in steps {
        if let Step::Repeat(r) = s {
            if r.times == 0 || r.steps.is_empty() {
                let (line, col) = find(text, "repeat");
                return Err(LoadError::Parse {
                    path: path.to_path_buf(),
                    line,
                    col,
                    message: "repeat: expected `times` >= 1 and at least one step".into(),
                });
            }
            check_steps(path, text, &r.steps)?;
        }
        if let Step::RestartContainerd(r) = s {
            // While containerd is down there is no connection to send an RPC on.
            const OFFLINE: [&str; 5] = [
                "kill-process",
                "sleep",
                "output",
                "shim-alive",
                "stall-stdout",
            ];
            if let Some(bad) = r.during.iter().find(|d| !OFFLINE.contains(&d.name())) {
                let (line, col) = find(text, "during");
                return Err(LoadError::Parse {
                    path: path.to_path_buf(),
                    line,
                    col,
                    message: format!(
                        "restart-containerd: `{}` cannot run `during` the outage (allowed: {})",
                        bad.name(),
                        OFFLINE.join(", ")
                    ),
                });
            }
        }
    }
    Ok(())
}

/// 1-based line and column of the first occurrence of `needle` (1:1 when absent).
fn find(text: &str, needle: &str) -> (usize, usize) {
    for (i, l) in text.lines().enumerate() {
        if let Some(c) = l.find(needle) {
            return (i + 1, c + 1);
        }
    }
    (1, 1)
}

/// Reads and parses one scenario file.
pub fn load_file(path: &Path) -> Result<Scenario, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    load_str(path, &text)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let io = |e: std::io::Error| LoadError::Io {
        path: dir.to_path_buf(),
        message: e.to_string(),
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
    Ok(())
}

/// Finds every `*.yaml` under the directories (a file argument is taken as is), names each by its
/// path relative to its directory without the extension, and parses them all (the first error
/// wins). Duplicate names across directories are an error.
pub fn discover(dirs: &[PathBuf]) -> Result<Vec<Loaded>, LoadError> {
    let mut out = Vec::new();
    let mut seen = BTreeMap::new();
    for dir in dirs {
        let mut files = Vec::new();
        let root = if dir.is_file() {
            files.push(dir.clone());
            dir.parent().unwrap_or(Path::new(".")).to_path_buf()
        } else if dir.is_dir() {
            walk(dir, &mut files)?;
            dir.clone()
        } else {
            return Err(LoadError::Io {
                path: dir.clone(),
                message: "no such scenarios directory".into(),
            });
        };
        for f in files {
            let rel = f.strip_prefix(&root).unwrap_or(&f).with_extension("");
            let name = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            if let Some(prev) = seen.insert(name.clone(), f.clone()) {
                return Err(LoadError::Io {
                    path: f,
                    message: format!("scenario name `{name}` is also used by {}", prev.display()),
                });
            }
            let text = std::fs::read_to_string(&f).map_err(|e| LoadError::Io {
                path: f.clone(),
                message: e.to_string(),
            })?;
            let scenario = load_str(&f, &text)?;
            out.push(Loaded {
                name,
                path: f,
                source: Source::File,
                text,
                scenario,
            });
        }
    }
    Ok(out)
}

/// Loads scenarios given as `(path relative to the suite's root, text)`, such as the embedded
/// suite ([`super::embedded`]): each is named by its path without the extension and its errors
/// name `embedded:scenarios/<path>:line:col`. Duplicate names are an error.
pub fn load_embedded(files: &[(&str, &str)]) -> Result<Vec<Loaded>, LoadError> {
    let mut out: Vec<Loaded> = Vec::with_capacity(files.len());
    for (rel, text) in files {
        let path = PathBuf::from(format!("embedded:scenarios/{rel}"));
        let name = rel
            .strip_suffix(".yaml")
            .or_else(|| rel.strip_suffix(".yml"))
            .unwrap_or(rel)
            .to_string();
        if out.iter().any(|l| l.name == name) {
            return Err(LoadError::Io {
                path,
                message: format!("scenario name `{name}` is used twice"),
            });
        }
        let scenario = load_str(&path, text)?;
        out.push(Loaded {
            name,
            path,
            source: Source::Embedded,
            text: text.to_string(),
            scenario,
        });
    }
    Ok(out)
}

/// `--filter` / `--skip` selection by name. A pattern with `*`, `?` or `[` is a glob over the
/// whole name; a plain word matches names containing it.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    include: Vec<String>,
    exclude: Vec<String>,
}

fn pattern_matches(p: &str, name: &str) -> bool {
    if p.contains(['*', '?', '[']) {
        glob::Pattern::new(p).is_ok_and(|g| g.matches(name))
    } else {
        name.contains(p)
    }
}

impl Filter {
    /// Builds a filter; a bad glob is an error naming it.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Filter, String> {
        for p in include.iter().chain(exclude) {
            if p.contains(['*', '?', '[']) {
                glob::Pattern::new(p).map_err(|e| format!("bad glob `{p}`: {e}"))?;
            }
        }
        Ok(Filter {
            include: include.to_vec(),
            exclude: exclude.to_vec(),
        })
    }

    /// Whether a scenario name is selected.
    pub fn matches(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| pattern_matches(p, name)))
            && !self.exclude.iter().any(|p| pattern_matches(p, name))
    }
}

/// A `--profile` file: what a shim is known to support, and its known failures.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Profile {
    /// `{capability: true|false}`; overrides probing.
    #[serde(default)]
    pub capabilities: BTreeMap<Capability, bool>,
    /// Scenario names or globs expected to fail: reported as `xfailed`, not as failures.
    #[serde(default)]
    pub xfail: Vec<String>,
}

impl Profile {
    /// Reads a profile file.
    pub fn load(path: &Path) -> Result<Profile, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        serde_yaml_ng::from_str(&text).map_err(|e| yaml_error(path, &e))
    }

    /// Whether a scenario is expected to fail.
    pub fn is_xfail(&self, name: &str) -> bool {
        self.xfail.iter().any(|p| {
            if p.contains(['*', '?', '[']) {
                glob::Pattern::new(p).is_ok_and(|g| g.matches(name))
            } else {
                p == name
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const GOOD: &str =
        "description: d\nprocess: {args: [true]}\nsteps:\n  - create: {}\n  - start: {}\n";

    #[test]
    fn good_file_loads() {
        let sc = load_str(Path::new("g.yaml"), GOOD).unwrap();
        assert_eq!(sc.steps.len(), 2);
        assert_eq!(sc.level, super::super::Level::Must);
    }

    #[rstest]
    #[case::bad_key(
        "description: d\nprocess: {args: [true]}\nsteps:\n  - create: {}\n  - start: {exec-idd: x}\n",
        5, "unknown field `exec-idd`"
    )]
    #[case::unknown_top_level_key(
        "description: d\nlevl: must\nprocess: {args: [true]}\nsteps:\n  - create: {}\n",
        2,
        "unknown field `levl`"
    )]
    #[case::unknown_step(
        "description: d\nprocess: {args: [true]}\nsteps:\n  - create: {}\n  - frobnicate: {}\n",
        5,
        "unknown variant `frobnicate`"
    )]
    #[case::bad_duration(
        "description: d\nprocess: {args: [true]}\nsteps:\n  - create: {}\n  - wait: {timeout: 5 parsecs}\n",
        5, "invalid duration `5 parsecs`"
    )]
    #[case::duration_without_unit(
        "description: d\nprocess: {args: [true]}\nsteps:\n  - sleep: 200\n",
        4,
        "a unit is required"
    )]
    #[case::bad_yaml(
        "description: d\nprocess: {args: [true]\nsteps:\n  - create: {}\n",
        3,
        "did not find expected"
    )]
    #[case::bad_signal(
        "description: d\nprocess: {args: [true]}\nsteps:\n  - kill: {signal: SIGNOPE}\n",
        4,
        "unknown signal `SIGNOPE`"
    )]
    #[case::missing_signal(
        "description: d\nprocess: {args: [true]}\nsteps:\n  - kill: {}\n",
        4,
        "missing field `signal`"
    )]
    #[case::bad_error_code(
        "description: d\nprocess: {args: [true]}\nsteps:\n  - start: {expect-error: notfound}\n",
        4,
        "unknown variant `notfound`"
    )]
    #[case::bad_expect_field(
        "description: d\nprocess: {args: [true]}\nsteps:\n  - wait: {expect: {exit-code: 0}}\n",
        4,
        "unknown field `exit-code`"
    )]
    #[case::bad_save_field(
        "description: d\nprocess: {args: [true]}\nsteps:\n  - create: {save: {p: pidd}}\n",
        4,
        "unknown response field `pidd`"
    )]
    #[case::bad_level(
        "description: d\nlevel: must-not\nprocess: {args: [true]}\nsteps:\n  - create: {}\n",
        2,
        "unknown variant `must-not`"
    )]
    #[case::bad_capability(
        "description: d\nrequires: [teleport]\nprocess: {args: [true]}\nsteps:\n  - create: {}\n",
        2,
        "unknown variant `teleport`"
    )]
    #[case::bad_topic(
        "description: d\nprocess: {args: [true]}\nsteps:\n  - events: {expect: [tasks/exit]}\n",
        4,
        "invalid topic `tasks/exit`"
    )]
    #[case::bad_regex(
        "description: d\nprocess: {args: [true]}\nsteps:\n  - output: {stdout: {matches: '(('}}\n",
        4,
        "invalid regex"
    )]
    #[case::two_keys_in_a_step(
        "description: d\nprocess: {args: [true]}\nsteps:\n  - {create: {}, start: {}}\n",
        4,
        ""
    )]
    #[case::rpc_during_outage(
        "description: d\nprocess: {args: [true]}\nsteps:\n  - restart-containerd:\n      during: [state: {}]\n",
        5,
        "`state` cannot run `during` the outage"
    )]
    #[case::bad_stall(
        "description: d\nprocess: {args: [true]}\nsteps:\n  - stall-stdout: forever\n",
        4,
        "invalid duration `forever`"
    )]
    #[case::no_steps(
        "description: d\nprocess: {args: [true]}\nsteps: []\n",
        1,
        "at least one step"
    )]
    fn bad_files_name_file_line_col(#[case] text: &str, #[case] line: usize, #[case] msg: &str) {
        let err = load_str(Path::new("scenarios/x/bad.yaml"), text).unwrap_err();
        let shown = err.to_string();
        match &err {
            LoadError::Parse {
                line: l,
                col,
                message,
                ..
            } => {
                assert_eq!(*l, line, "{shown}");
                assert!(*col >= 1, "{shown}");
                assert!(message.contains(msg), "{shown}");
                assert!(
                    shown.starts_with(&format!("scenarios/x/bad.yaml:{line}:{col}: ")),
                    "{shown}"
                );
                assert!(!shown.contains('\n'), "one line: {shown}");
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn embedded_files_load_and_name_their_errors() {
        let got = load_embedded(&[("g/a.yaml", GOOD), ("b.yml", GOOD)]).unwrap();
        let names: Vec<_> = got.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["g/a", "b"]);
        assert_eq!(got[0].source, Source::Embedded);
        assert_eq!(got[0].path, Path::new("embedded:scenarios/g/a.yaml"));
        assert_eq!(got[0].text, GOOD);
        let bad = "description: d\nprocess: {args: [true]}\nsteps:\n  - create: {}\n  - start: {exec-idd: x}\n";
        let err = load_embedded(&[("g/a.yaml", GOOD), ("g/bad.yaml", bad)]).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.starts_with("embedded:scenarios/g/bad.yaml:5:") && shown.contains("exec-idd"),
            "{shown}"
        );
        let dup = load_embedded(&[("g/a.yaml", GOOD), ("g/a.yml", GOOD)]).unwrap_err();
        assert!(dup.to_string().contains("`g/a` is used twice"), "{dup}");
    }

    #[test]
    fn filter_globs_and_words() {
        let f = Filter::new(&["lifecycle/*".into()], &["*sigint".into()]).unwrap();
        assert!(f.matches("lifecycle/sigterm"));
        assert!(!f.matches("lifecycle/sigint"));
        assert!(!f.matches("exec/added"));
        let f = Filter::new(&["exec".into()], &[]).unwrap();
        assert!(f.matches("exec/added") && !f.matches("stdio/split"));
        assert!(Filter::new(&["[".into()], &[]).is_err());
    }

    #[test]
    fn profile_xfail() {
        let p: Profile =
            serde_yaml_ng::from_str("capabilities: {exec: false}\nxfail: [a/b, 'c/*']").unwrap();
        assert!(p.is_xfail("a/b") && p.is_xfail("c/d") && !p.is_xfail("a/bc"));
        assert_eq!(p.capabilities.get(&Capability::Exec), Some(&false));
    }
}
