//! Where the shell's lines come from: a terminal (rustyline: line editing, history, completion
//! of command words) or anything else (plain lines, so a session can be scripted through a pipe).

use std::io::BufRead;

use rustyline::completion::Completer;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

/// What reading a line gave.
pub enum Read {
    /// A line (without its newline).
    Line(String),
    /// Ctrl-C at the prompt: the line is dropped, the session goes on.
    Interrupted,
    /// End of input.
    Eof,
    /// A signal (named) ended the wait for a line: end the session.
    Stopped(&'static str),
}

/// A source of command lines.
pub enum Input {
    /// A terminal: rustyline with history and completion.
    Terminal(Box<Editor<Words, DefaultHistory>>),
    /// A pipe or file, read line by line on a thread of its own (so a signal can end the wait).
    Plain(tokio::sync::mpsc::UnboundedReceiver<Result<String, String>>),
}

impl Input {
    /// A terminal editor when `terminal`, else plain lines from stdin.
    pub fn new(terminal: bool) -> Result<Input, String> {
        if terminal {
            let mut ed = Editor::<Words, DefaultHistory>::new()
                .map_err(|e| format!("setting up line editing: {e}"))?;
            ed.set_helper(Some(Words));
            Ok(Input::Terminal(Box::new(ed)))
        } else {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            std::thread::spawn(move || {
                let mut stdin = std::io::stdin().lock();
                loop {
                    let mut line = String::new();
                    let r = match stdin.read_line(&mut line) {
                        Ok(0) => break,
                        Ok(_) => {
                            while line.ends_with(['\n', '\r']) {
                                line.pop();
                            }
                            Ok(line)
                        }
                        Err(e) => Err(format!("reading stdin: {e}")),
                    };
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        break;
                    }
                }
            });
            Ok(Input::Plain(rx))
        }
    }

    /// Whether lines come from a terminal.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Input::Terminal(_))
    }

    /// The line channel of a plain input (to wait for a line and a signal at once).
    pub fn lines(
        &mut self,
    ) -> Option<&mut tokio::sync::mpsc::UnboundedReceiver<Result<String, String>>> {
        match self {
            Input::Plain(rx) => Some(rx),
            Input::Terminal(_) => None,
        }
    }

    /// Reads one line; on a terminal it shows `prompt` and keeps the line in the history.
    pub fn read(&mut self, prompt: &str) -> Result<Read, String> {
        match self {
            Input::Terminal(ed) => match ed.readline(prompt) {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = ed.add_history_entry(line.as_str());
                    }
                    Ok(Read::Line(line))
                }
                Err(rustyline::error::ReadlineError::Interrupted) => Ok(Read::Interrupted),
                Err(rustyline::error::ReadlineError::Eof) => Ok(Read::Eof),
                Err(e) => Err(format!("reading the terminal: {e}")),
            },
            Input::Plain(rx) => Ok(match rx.blocking_recv() {
                Some(Ok(line)) => Read::Line(line),
                Some(Err(e)) => return Err(e),
                None => Read::Eof,
            }),
        }
    }
}

/// Completes the first word of a line with the shell's command words.
pub struct Words;

impl Completer for Words {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let before = &line[..pos];
        if before.trim_start().contains(' ') {
            return Ok((pos, Vec::new()));
        }
        let start = before.len() - before.trim_start().len();
        let word = before.trim_start();
        let words = super::command::STEPS
            .iter()
            .map(|s| s.name)
            .chain(["stdout", "save", "help", "quit"])
            .filter(|w| w.starts_with(word))
            .map(str::to_string)
            .collect();
        Ok((start, words))
    }
}

impl Hinter for Words {
    type Hint = String;
}
impl Highlighter for Words {}
impl Validator for Words {}
impl Helper for Words {}
