//! `gateway`: the command-line entry point. Everything else lives in the
//! library (`gateway::cli`), where it can be tested.

use std::process::ExitCode;

use clap::Parser;
use gateway::cli::{Cli, execute};

fn main() -> ExitCode {
    execute(Cli::parse())
}
