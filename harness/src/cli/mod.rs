//! The `harness` binary's own modules (not part of the library): the command line and what each
//! subcommand does.

pub(crate) mod args;
pub(crate) mod commands;
