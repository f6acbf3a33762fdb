//! The guides in `docs/guides/`, and the README (treated as one more guide), work as written:
//! every fenced ```` ```sh ```` block of a guide is run (bash `-euo pipefail`, stderr merged into stdout, bounded, in its own process group) and
//! must end with the exit status its info string names (`exit=N`, default 0); a ```` ```text ````
//! block right after it is its expected output (each line, in order, somewhere in the output;
//! `[..]` matches anything). A block whose info string carries `file=PATH` must equal that file
//! of the repository. A ```` ```sh no-run ```` block (its first line a `#` comment giving the
//! reason) is not run: every command line in it must be claimed by a static check below, or the
//! test fails. After a guide no process that mentions its work dir may remain. Every relative
//! link of the README and of `docs/` points to a file of the repository (and a `#fragment` to
//! one of its headings).
//!
//! The only changes made to a command before it runs ([`rewrite`]): `cargo install` gets
//! `--debug` (with `CARGO_INSTALL_ROOT` in the work dir and the workspace's `CARGO_TARGET_DIR`,
//! so it reuses the test build), and `--release` builds become debug builds.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use regex::Regex;
use serde_yaml_ng::Value;

/// Bound for one block (a cold `cargo install` waits for the shared target dir's lock).
const BLOCK_TIMEOUT: Duration = Duration::from_secs(420);

/// The repository's root (the checkout the guides talk about).
fn checkout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The built binaries (`target/<profile>`); the guides that do not install anything get them on
/// PATH.
fn built_bin_dir() -> PathBuf {
    for b in ["harness", testkit::REAPER, testkit::FAULTY] {
        testkit::built(b);
    }
    testkit::profile_dir()
}

/// Fails naming the set-up command when a tool a guide uses is not installed.
fn require_tools(tools: &[&str]) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for t in tools {
        assert!(
            std::env::split_paths(&path).any(|d| d.join(t).is_file()),
            "`{t}` is not on PATH, and the guides use it: run ci/setup.sh (apt-get install {t})"
        );
    }
}

/// One fenced block of a guide.
#[derive(Debug, Clone)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    /// The first word of the info string (`sh`, `text`, `yaml`, ...).
    lang: String,
    /// The other words of the info string (`no-run`, `exit=1`, `in=checkout`, `file=PATH`).
    attrs: Vec<String>,
    body: String,
    /// The ```text block that directly follows a ```sh block: its expected output.
    output: Option<String>,
}

impl Block {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find_map(|a| a.strip_prefix(key)?.strip_prefix('='))
    }
    fn has(&self, flag: &str) -> bool {
        self.attrs.iter().any(|a| a == flag)
    }
    fn runs(&self) -> bool {
        self.lang == "sh" && !self.has("no-run")
    }
}

/// Splits a markdown text into its fenced blocks; a ```text block separated from the preceding
/// ```sh block by blank lines only becomes that block's expected output.
fn parse(md: &str) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    let mut open: Option<Block> = None;
    let mut prose_since_last = true;
    for (i, line) in md.lines().enumerate() {
        if let Some(b) = open.as_mut() {
            if line.trim_start().starts_with("```") {
                let b = open.take().expect("open block");
                let follows_sh = !prose_since_last
                    && b.lang == "text"
                    && blocks.last().is_some_and(|p| p.lang == "sh");
                if follows_sh {
                    blocks.last_mut().expect("previous").output = Some(b.body);
                } else {
                    blocks.push(b);
                }
                prose_since_last = false;
            } else {
                b.body.push_str(line);
                b.body.push('\n');
            }
        } else if let Some(info) = line.trim_start().strip_prefix("```") {
            let mut words = info.split_whitespace().map(str::to_string);
            open = Some(Block {
                line: i + 1,
                lang: words.next().unwrap_or_default(),
                attrs: words.collect(),
                body: String::new(),
                output: None,
            });
        } else if !line.trim().is_empty() {
            prose_since_last = true;
        }
    }
    assert!(open.is_none(), "an unclosed code fence");
    blocks
}

/// The changes made to a command before it runs (see the module doc).
fn rewrite(body: &str) -> String {
    body.lines()
        .map(|l| {
            let mut l = l
                .replace("cargo build --release", "cargo build")
                .replace("target/release/", "target/debug/");
            if l.trim_start().starts_with("cargo install ") {
                match l.find(" #") {
                    Some(c) => l.insert_str(c, " --debug"),
                    None => l.push_str(" --debug"),
                }
            }
            l + "\n"
        })
        .collect()
}

/// Does `out` contain every line of `expected` in order? `[..]` matches any text; blank lines
/// of `expected` are ignored. Returns the first line not found.
fn missing_line(expected: &str, out: &str) -> Option<String> {
    let mut lines = out.lines();
    for want in expected.lines().filter(|l| !l.trim().is_empty()) {
        let pat = want
            .split("[..]")
            .map(regex::escape)
            .collect::<Vec<_>>()
            .join(".*");
        let re = Regex::new(&format!("^{}$", pat.trim_end())).expect("pattern");
        if !lines.any(|got| re.is_match(got.trim_end())) {
            return Some(want.to_string());
        }
    }
    None
}

/// Where a guide runs and what it finds on PATH.
struct Guide {
    /// The guide's file, relative to the checkout (`docs/guides/ci.md`, `README.md`).
    file: &'static str,
    /// Binaries come only from the guide's own `cargo install` (else the built ones).
    installs: bool,
    /// Give blocks `TMPDIR` inside the work dir (so `mktemp` output is covered by the leak check).
    own_tmpdir: bool,
}

/// A guide being run: its blocks, work dir and environment.
struct Run {
    name: String,
    blocks: Vec<Block>,
    work: tempfile::TempDir,
    /// Where blocks without `in=checkout` run.
    cwd: PathBuf,
    env: BTreeMap<String, String>,
    log: Vec<String>,
}

impl Run {
    fn new(g: &Guide) -> Run {
        require_tools(&["bash", "jq", "sudo", "cargo"]);
        let path = checkout().join(g.file);
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let blocks = parse(&text);
        let stem = Path::new(g.file)
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a file name")
            .to_lowercase();
        let work = tempfile::Builder::new()
            .prefix(&format!("guide-{stem}-"))
            .tempdir_in("/tmp")
            .expect("work dir");
        let root = work.path().join(".install");
        let mut env = BTreeMap::new();
        let sys_path = std::env::var("PATH").unwrap_or_default();
        let path = if g.installs {
            format!("{}:{sys_path}", root.join("bin").display())
        } else {
            format!("{}:{sys_path}", built_bin_dir().display())
        };
        env.insert("PATH".into(), path);
        env.insert("CARGO_INSTALL_ROOT".into(), root.display().to_string());
        env.insert(
            "CARGO_TARGET_DIR".into(),
            testkit::target_dir().display().to_string(),
        );
        if g.own_tmpdir {
            let tmp = work.path().join("tmp");
            fs::create_dir_all(&tmp).expect("tmp");
            env.insert("TMPDIR".into(), tmp.display().to_string());
        }
        let cwd = work.path().to_path_buf();
        Run {
            name: g.file.to_string(),
            blocks,
            work,
            cwd,
            env,
            log: Vec::new(),
        }
    }

    fn at(&self, b: &Block) -> String {
        format!("{}:{}", self.name, b.line)
    }

    /// Runs every executable block in order, checking status and output.
    fn run_all(&mut self) {
        let blocks: Vec<Block> = self.blocks.iter().filter(|b| b.runs()).cloned().collect();
        assert!(!blocks.is_empty(), "{}: no ```sh block to run", self.name);
        for b in blocks {
            self.run_block(&b);
        }
        self.assert_nothing_left();
        for l in &self.log {
            eprintln!("{l}");
        }
    }

    fn run_block(&mut self, b: &Block) {
        let at = self.at(b);
        let cwd = match b.attr("in") {
            Some("checkout") => checkout(),
            Some(other) => panic!("{at}: unknown in={other} (only in=checkout)"),
            None => self.cwd.clone(),
        };
        let want: i32 = b
            .attr("exit")
            .map(|s| s.parse().unwrap_or_else(|_| panic!("{at}: bad exit={s}")))
            .unwrap_or(0);
        let script = format!("exec 2>&1\n{}", rewrite(&b.body));
        let mut cmd = Command::new("bash");
        cmd.args(["-e", "-u", "-o", "pipefail", "-c", &script])
            .current_dir(&cwd)
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0);
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{at}: spawn bash: {e}"));
        let mut stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = stdout.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        });
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break Some(s);
            }
            if started.elapsed() > BLOCK_TIMEOUT {
                // The whole group: the block's commands and whatever they started.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = reader.join().unwrap_or_default();
        let took = started.elapsed();
        let status = status.unwrap_or_else(|| {
            panic!("{at}: still running after {BLOCK_TIMEOUT:?}, killed; output:\n{out}")
        });
        assert_eq!(
            status.code(),
            Some(want),
            "{at}: exit status {status}, the guide says {want}; script:\n{script}\noutput:\n{out}"
        );
        if let Some(expected) = &b.output {
            if let Some(line) = missing_line(expected, &out) {
                panic!("{at}: the guide shows `{line}` but the output has no such line (in order); output:\n{out}");
            }
        }
        // Time spent behind another cargo's lock on the shared target dir is not ours.
        let waited = if out.contains("Blocking waiting for file lock") {
            " (part of it waiting for cargo's lock)"
        } else {
            ""
        };
        self.log.push(format!(
            "{at}: ran in {:.1}s{waited}, exit {want}",
            took.as_secs_f64()
        ));
    }

    /// No process may remain whose command line or cwd mentions the work dir; any found is
    /// killed (by pid) and the test fails naming it.
    fn assert_nothing_left(&self) {
        let dir = self.work.path().display().to_string();
        let me = std::process::id();
        let mut left = Vec::new();
        for _ in 0..50 {
            left.clear();
            for e in fs::read_dir("/proc").expect("/proc").flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                if pid == me {
                    continue;
                }
                let argv = fs::read(e.path().join("cmdline")).unwrap_or_default();
                let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
                let cwd = fs::read_link(e.path().join("cwd")).unwrap_or_default();
                if argv.contains(&dir) || cwd.starts_with(&dir) {
                    left.push((pid, argv));
                }
            }
            if left.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for (pid, _) in &left {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        panic!(
            "{}: processes left running (killed now): {left:?}",
            self.name
        );
    }

    /// Every block with `file=PATH` equals that file of the repository.
    fn check_included_files(&self) {
        for b in self.blocks.iter().filter(|b| b.attr("file").is_some()) {
            let rel = b.attr("file").expect("file attr");
            let path = checkout().join(rel);
            let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", self.at(b)));
            assert_eq!(
                b.body,
                text,
                "{}: the block differs from {rel}; copy the file into the guide again",
                self.at(b)
            );
        }
    }

    /// The no-run blocks, each with its reason comment first.
    fn no_run_blocks(&self) -> Vec<&Block> {
        let v: Vec<&Block> = self
            .blocks
            .iter()
            .filter(|b| b.lang == "sh" && b.has("no-run"))
            .collect();
        for b in &v {
            let first = b.body.lines().next().unwrap_or("");
            assert!(
                first.starts_with("# ") && first.len() > 10,
                "{}: a no-run block must open with a `# reason` line, got {first:?}",
                self.at(b)
            );
        }
        v
    }

    /// The command lines of a no-run block (no comments, no blanks).
    fn commands(b: &Block) -> Vec<String> {
        b.body
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    }

    /// The text of all executed blocks (for checks that a no-run step is exercised elsewhere).
    fn executed_text(&self) -> String {
        self.blocks
            .iter()
            .filter(|b| b.runs())
            .map(|b| b.body.as_str())
            .collect()
    }

    /// Applies `check` to every command of every no-run block; `check` returns false for a line
    /// it does not know, which fails the test (nothing unexecuted goes unchecked).
    fn check_no_run(&self, mut check: impl FnMut(&str) -> bool) {
        for b in self.no_run_blocks() {
            for c in Self::commands(b) {
                assert!(
                    check(&c),
                    "{}: `{c}` is neither run nor checked: add a static check to harness/tests/guides.rs",
                    self.at(b)
                );
            }
        }
    }
}

fn read_yaml(rel: &str) -> Value {
    let p = checkout().join(rel);
    let t = fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_yaml_ng::from_str(&t).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    let mut cur = v;
    for k in path.split('.') {
        cur = &cur[k];
    }
    cur.as_str()
        .unwrap_or_else(|| panic!("`{path}` is not a string in {v:?}"))
}

/// The names of the binaries a member crate builds (`[[bin]] name = ...`).
fn crate_bins(krate: &str) -> Vec<String> {
    let t = fs::read_to_string(checkout().join(krate).join("Cargo.toml")).expect("Cargo.toml");
    let re = Regex::new(r#"(?m)^\[\[bin\]\]\s*\nname\s*=\s*"([^"]+)""#).expect("re");
    re.captures_iter(&t).map(|c| c[1].to_string()).collect()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn parse_and_match_helpers() {
    let md = "a\n```sh exit=1\nfalse\n```\n\n```text\nx [..] z\n```\nprose\n```text\nalone\n```\n";
    let b = parse(md);
    assert_eq!(b.len(), 2, "{b:?}");
    assert_eq!(b[0].attr("exit"), Some("1"));
    assert_eq!(b[0].output.as_deref(), Some("x [..] z\n"));
    assert!(b[1].output.is_none() && b[1].lang == "text");
    assert_eq!(missing_line("x [..] z\n", "a\nx y y z\n"), None);
    assert_eq!(missing_line("b\na\n", "a\nb\n").as_deref(), Some("a"));
    assert_eq!(
        rewrite("cargo install --path shim # x\ncargo build --release -p y\ntarget/release/z\n"),
        "cargo install --path shim --debug # x\ncargo build -p y\ntarget/debug/z\n"
    );
}

#[test]
fn five_minutes() {
    let mut r = Run::new(&Guide {
        file: "docs/guides/five-minutes.md",
        installs: true,
        own_tmpdir: false,
    });
    r.check_included_files();
    r.check_no_run(|_| false);
    r.run_all();
}

#[test]
fn write_a_scenario() {
    let mut r = Run::new(&Guide {
        file: "docs/guides/write-a-scenario.md",
        installs: false,
        own_tmpdir: false,
    });
    r.check_included_files();
    r.run_all();
    // Adding the scenario to the bundled suite changes the repository, so it is not run; each
    // line must be the same as something that ran, with the reader's scenario in it.
    let work = r.work.path().to_path_buf();
    let executed = r.executed_text();
    let cp = Regex::new(r"^cp (\S+\.yaml) scenarios/([a-z-]+)/$").expect("re");
    let test = Regex::new(
        r"^INSTA_UPDATE=always cargo test -p harness --test scenarios -- --exact ([a-z-]+)/([a-z-]+)$",
    )
    .expect("re");
    let add = Regex::new(r"^git add scenarios/([a-z-]+)/([a-z-]+)\.yaml harness/tests/snapshots/([a-z-]+)__([a-z-]+)\.snap$").expect("re");
    r.check_no_run(|c| {
        if let Some(m) = cp.captures(c) {
            // The reader's file exists after the blocks ran, and the group exists.
            assert!(
                work.join(&m[1]).is_file(),
                "`{c}`: {} was not written",
                &m[1]
            );
            assert!(checkout().join("scenarios").join(&m[2]).is_dir(), "`{c}`");
            return true;
        }
        if let Some(m) = test.captures(c) {
            // The same command, for a bundled scenario, ran above.
            let ran = c
                .trim_start_matches("INSTA_UPDATE=always ")
                .replace(&format!("{}/{}", &m[1], &m[2]), "");
            assert!(executed.contains(&ran), "`{ran}` never ran in the guide");
            return true;
        }
        if let Some(m) = add.captures(c) {
            assert_eq!((&m[1], &m[2]), (&m[3], &m[4]), "`{c}`: snapshot name");
            // The snapshot naming of tests/scenarios.rs: group__name.snap.
            assert!(
                checkout()
                    .join("harness/tests/snapshots/stdio__stdout.snap")
                    .is_file(),
                "the snapshot naming changed"
            );
            return true;
        }
        false
    });
}

/// The CI guide runs the workflow's `run:` steps in a stand-in shim repository: a small crate
/// whose binary `containerd-shim-example-v2` execs the built reaper shim.
#[test]
fn ci() {
    let mut r = Run::new(&Guide {
        file: "docs/guides/ci.md",
        installs: true,
        own_tmpdir: false,
    });
    r.check_included_files();
    let wf_rel = "docs/guides/shim-conformance.yml";
    let wf = read_yaml(wf_rel);
    assert!(
        r.blocks
            .iter()
            .any(|b| b.attr("file") == Some(wf_rel) && b.lang == "yaml"),
        "ci.md must include {wf_rel} as a ```yaml file={wf_rel} block"
    );
    assert!(wf.get("on").is_some(), "{wf_rel}: no `on`");
    let jobs = wf["jobs"].as_mapping().expect("jobs");
    assert_eq!(jobs.len(), 1, "{wf_rel}: one job");
    let job = jobs.values().next().expect("job");
    assert!(job["runs-on"].as_str().is_some(), "runs-on");
    let steps = job["steps"].as_sequence().expect("steps");
    let action = Regex::new(r"^[\w-]+/[\w-]+@v\d+$").expect("re");
    let mut runs = Vec::new();
    let mut uploads = Vec::new();
    for st in steps {
        if let Some(run) = st["run"].as_str() {
            runs.push(run.trim_end().to_string());
        } else {
            let uses = st["uses"].as_str().expect("a step has `run` or `uses`");
            assert!(
                action.is_match(uses),
                "{wf_rel}: `{uses}` should be owner/action@vN"
            );
            if uses.starts_with("actions/upload-artifact@") {
                uploads.push(s(st, "with.path").to_string());
            }
        }
    }
    // The run steps are exactly the guide's executed blocks, in order.
    let executed: Vec<String> = r
        .blocks
        .iter()
        .filter(|b| b.runs())
        .map(|b| b.body.trim_end().to_string())
        .collect();
    assert_eq!(
        runs, executed,
        "the workflow's run: steps and the guide's ```sh blocks differ"
    );
    // The report the suite writes is the one uploaded.
    let report = Regex::new(r"--report (\S+)")
        .expect("re")
        .captures(runs.last().expect("a run step"))
        .map(|c| c[1].to_string())
        .expect("the last step writes --report");
    assert_eq!(uploads, vec![report.clone()], "upload-artifact path");

    // The workflow's env, as the steps see it; expressions only where we stand in for GitHub.
    let mut env = BTreeMap::new();
    for (k, v) in wf["env"].as_mapping().expect("env").iter() {
        let k = k.as_str().expect("env key").to_string();
        let v = v.as_str().expect("env value").to_string();
        let v = match k.as_str() {
            "REAPER_DIR" => {
                assert!(v.contains("${{ github.workspace }}"), "REAPER_DIR: {v}");
                checkout().display().to_string()
            }
            _ => {
                assert!(!v.contains("${{"), "{k}: {v}");
                rewrite(&v).trim_end().to_string()
            }
        };
        env.insert(k, v);
    }
    assert!(env.contains_key("SHIM"), "{wf_rel}: env SHIM");
    r.env.extend(env);

    // The stand-in shim repository.
    let repo = r.work.path().join("shim-repo");
    fs::create_dir_all(repo.join("src")).expect("mkdir");
    fs::write(
        repo.join("Cargo.toml"),
        "[package]\nname = \"example-shim\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
         [[bin]]\nname = \"containerd-shim-example-v2\"\npath = \"src/main.rs\"\n",
    )
    .expect("Cargo.toml");
    // It hands over to the built reaper shim (same argv[0] and arguments), so building it takes a
    // second and needs no dependency.
    let reaper = built_bin_dir().join("containerd-shim-reaper-v2");
    fs::write(
        repo.join("src/main.rs"),
        format!(
            "use std::os::unix::process::CommandExt;\n\n\
             fn main() {{\n    let mut args = std::env::args_os();\n    \
             let arg0 = args.next().unwrap_or_default();\n    \
             let err = std::process::Command::new({reaper:?}).arg0(arg0).args(args).exec();\n    \
             eprintln!(\"exec {{}}: {{err}}\", {reaper:?});\n    std::process::exit(1);\n}}\n",
            reaper = reaper.display().to_string()
        ),
    )
    .expect("main.rs");
    std::os::unix::fs::symlink(testkit::target_dir(), repo.join("target")).expect("target link");
    r.cwd = repo.clone();
    r.check_no_run(|c| {
        // The git install is the path install of the same package from the published repository.
        let repo_url = fs::read_to_string(checkout().join("Cargo.toml"))
            .ok()
            .and_then(|t| {
                Regex::new(r#"(?m)^repository = "([^"]+)""#)
                    .ok()?
                    .captures(&t)
                    .map(|m| m[1].to_string())
            })
            .expect("workspace repository URL");
        if c == format!("cargo install --locked --git {repo_url} harness") {
            assert!(runs[0].contains("cargo install --locked --path \"$REAPER_DIR/harness\""));
            return true;
        }
        false
    });
    r.run_all();
    let xml = fs::read_to_string(repo.join(&report)).expect("the junit report");
    assert!(
        xml.starts_with("<?xml") && xml.contains("<testsuites") && xml.contains(" failures=\"0\""),
        "{report}: {}",
        &xml[..xml.len().min(400)]
    );
}

#[test]
fn kubernetes() {
    let mut r = Run::new(&Guide {
        file: "docs/guides/kubernetes.md",
        installs: true,
        own_tmpdir: true,
    });
    r.check_included_files();
    // The Kubernetes objects: the RuntimeClass names the containerd runtime table of the deploy
    // snippet, and the pod asks for that RuntimeClass with a command that exists on the host.
    let rc = read_yaml("deploy/runtimeclass.yaml");
    assert_eq!(s(&rc, "apiVersion"), "node.k8s.io/v1");
    assert_eq!(s(&rc, "kind"), "RuntimeClass");
    let handler = s(&rc, "handler");
    let snippet =
        fs::read_to_string(checkout().join("deploy/containerd-config.toml")).expect("snippet");
    assert!(
        snippet.contains(&format!(
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{handler}]\n  runtime_type = \"io.containerd.reaper.v2\""
        )),
        "deploy/containerd-config.toml has no runtime table for handler {handler}"
    );
    let pod = read_yaml("deploy/pod.yaml");
    assert_eq!(s(&pod, "apiVersion"), "v1");
    assert_eq!(s(&pod, "kind"), "Pod");
    assert_eq!(s(&pod, "spec.runtimeClassName"), s(&rc, "metadata.name"));
    let pod_name = s(&pod, "metadata.name").to_string();
    let containers = pod["spec"]["containers"].as_sequence().expect("containers");
    assert!(!containers.is_empty());
    for c in containers {
        assert!(!s(c, "name").is_empty() && !s(c, "image").is_empty());
        let argv0 = c["command"][0].as_str().expect("command");
        assert!(
            argv0.starts_with('/') && Path::new(argv0).exists(),
            "{argv0}: the reaper runs commands of the node, by absolute path"
        );
    }
    let executed = r.executed_text();
    let bins = crate_bins("shim");
    let apply = Regex::new(r"^kubectl apply -f (deploy/\S+\.yaml)$").expect("re");
    let pod_cmd =
        Regex::new(r"^kubectl (?:wait|logs|delete pod)\b.*?\b(?:pod/)?([a-z0-9-]+)(?: --\S+)*$")
            .expect("re");
    let install =
        Regex::new(r"^(cargo install --locked --path shim) --root /usr/local$").expect("re");
    let cri_check = Regex::new(r"^harness cri --handler (reaper|runc) --image \S+$").expect("re");
    r.check_no_run(|c| {
        if let Some(m) = apply.captures(c) {
            let v = read_yaml(&m[1]);
            assert!(matches!(s(&v, "kind"), "RuntimeClass" | "Pod"), "{c}");
            return true;
        }
        if c.starts_with("kubectl ") {
            if let Some(m) = pod_cmd.captures(c) {
                assert_eq!(m[1], pod_name, "`{c}` names a pod deploy/pod.yaml does not define");
                return true;
            }
            return false;
        }
        if let Some(m) = install.captures(c) {
            // The install that ran in section 1, into /usr/local; the binary containerd needs is
            // one the package builds.
            return executed.contains(&format!("{}\n", &m[1]))
                && bins.iter().any(|b| b == "containerd-shim-reaper-v2");
        }
        if c == "[ -f /etc/containerd/config.toml ] || containerd config default > /etc/containerd/config.toml" {
            // The trial block starts from containerd's default config too.
            return executed.contains("containerd config default > ");
        }
        if c == "cat deploy/containerd-config.toml >> /etc/containerd/config.toml" {
            // The trial block merges the same file into its private config.
            return executed.contains("cat deploy/containerd-config.toml >>");
        }
        // Restarting the node's containerd and looking at the CRI plugin: the trial block does
        // both with its private daemon.
        if c == "systemctl restart containerd" {
            return executed.contains("containerd --config");
        }
        if c == "ctr plugins ls | grep cri" {
            return executed.contains("ctr plugins ls | grep cri");
        }
        // The node check: the trial block runs `harness cri` against its private containerd.
        if cri_check.is_match(c) {
            return executed.contains("harness cri --endpoint ");
        }
        false
    });
    r.run_all();
}

/// The README as a guide: its install and run blocks run like the five-minutes guide's; the
/// two commands (which build everything, and one of which runs this test) are checked to be the
/// ci/ scripts the README says they are.
#[test]
fn readme() {
    let mut r = Run::new(&Guide {
        file: "README.md",
        installs: true,
        own_tmpdir: false,
    });
    r.check_included_files();
    let script = Regex::new(r"^(ci/[a-z-]+\.sh)\s+# ").expect("re");
    r.check_no_run(|c| {
        let Some(m) = script.captures(c) else {
            return false;
        };
        let rel = &m[1];
        let path = checkout().join(rel);
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("`{c}`: {rel}: {e}"));
        let mode = fs::metadata(&path).expect("metadata").permissions();
        assert!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o111 != 0,
            "{rel} is not executable"
        );
        // Both install what they need first (the README says so).
        assert!(
            text.contains("\nci/setup.sh\n"),
            "{rel} does not run ci/setup.sh"
        );
        match rel {
            "ci/suite.sh" => assert!(text.contains("harness run"), "{rel}: no harness run"),
            "ci/test.sh" => {
                assert!(
                    text.contains("cargo test --workspace"),
                    "{rel}: no cargo test"
                );
                let entry = fs::read_to_string(checkout().join(".ci/run")).expect(".ci/run");
                assert!(
                    entry.contains("exec ci/test.sh"),
                    ".ci/run does not call {rel}"
                );
            }
            _ => return false,
        }
        true
    });
    r.run_all();
}

/// The markdown files whose links are checked: the README, docs/ and its guides, the shim's.
fn markdown_files() -> Vec<PathBuf> {
    let mut v = vec![
        checkout().join("README.md"),
        checkout().join("shim/README.md"),
    ];
    for dir in ["docs", "docs/guides"] {
        let mut md: Vec<PathBuf> = fs::read_dir(checkout().join(dir))
            .expect("docs dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .collect();
        md.sort();
        v.extend(md);
    }
    v
}

/// A heading's anchor as GitHub makes it: lowercase, punctuation dropped, spaces to `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a markdown file's headings (outside code fences).
fn anchors(md: &str) -> Vec<String> {
    let mut fenced = false;
    let mut v = Vec::new();
    for l in md.lines() {
        if l.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && l.starts_with('#') {
            v.push(anchor(l.trim_start_matches('#')));
        }
    }
    v
}

#[test]
fn relative_links_point_to_files_and_headings() {
    assert_eq!(anchor(" Build and test times"), "build-and-test-times");
    assert_eq!(
        anchor("Install, and poke a shim by hand: `harness shell`"),
        "install-and-poke-a-shim-by-hand-harness-shell"
    );
    let link = Regex::new(r"\]\(([^)\s]+)\)").expect("re");
    let mut bad = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let rel = file.strip_prefix(checkout()).unwrap_or(&file).display();
        let mut fenced = false;
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                continue;
            }
            if fenced {
                continue;
            }
            for m in link.captures_iter(line) {
                let target = &m[1];
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, frag) = match target.split_once('#') {
                    Some((p, f)) => (p, Some(f)),
                    None => (target, None),
                };
                let dest = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().expect("dir").join(path)
                };
                if !dest.exists() {
                    bad.push(format!("{rel}:{}: {target}: no such file", i + 1));
                    continue;
                }
                if let Some(f) = frag.filter(|_| dest.extension().is_some_and(|e| e == "md")) {
                    let t = fs::read_to_string(&dest).expect("linked file");
                    if !anchors(&t).iter().any(|a| a == f) {
                        bad.push(format!("{rel}:{}: {target}: no heading #{f}", i + 1));
                    }
                }
            }
        }
    }
    assert!(
        checked > 10,
        "only {checked} links found: is the pattern right?"
    );
    assert!(bad.is_empty(), "broken links:\n{}", bad.join("\n"));
}
