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
}

/// A source of command lines.
pub enum Input {
    /// A terminal: rustyline with history and completion.
    Terminal(Box<Editor<Words, DefaultHistory>>),
    /// A pipe or file.
    Plain(std::io::StdinLock<'static>),
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
            Ok(Input::Plain(std::io::stdin().lock()))
        }
    }

    /// Whether lines come from a terminal.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Input::Terminal(_))
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
            Input::Plain(r) => {
                let mut line = String::new();
                match r.read_line(&mut line) {
                    Ok(0) => Ok(Read::Eof),
                    Ok(_) => {
                        while line.ends_with(['\n', '\r']) {
                            line.pop();
                        }
                        Ok(Read::Line(line))
                    }
                    Err(e) => Err(format!("reading stdin: {e}")),
                }
            }
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
