//! `harness`: the command-line front door of the mock containerd and conformance runner
//! (`run`, `list`, `schema`, `stress`, and `publish` for shims that use containerd's
//! `-publish-binary`).
//! Exit status: 0 nothing failed, 1 a scenario failed, 2 the run could not happen.

use std::process::ExitCode;

use clap::Parser;

mod cli;
use cli::args::{Cli, Cmd};
use cli::commands::*;

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
            let text =
                serde_json::to_string_pretty(&harness::scenario::json_schema()).unwrap_or_default();
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
        Cmd::Record(a) => match record(&a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => usage_error(e),
        },
        Cmd::Cri(a) => match cri(&a) {
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
