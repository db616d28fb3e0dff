//! `gateway`: the command-line entry point. Everything else lives in the
//! library (`gateway::cli`), where it can be tested.

use std::process::ExitCode;

use clap::Parser;
use gateway::cli::{Cli, execute};

/// mimalloc (v2), not glibc's malloc: an idle browser WebSocket costs
/// about 1.7 KB less resident memory and an echoed message about 4 % fewer
/// instructions; an idle device session costs the same (BENCHMARKS.md,
/// "The allocator"). Built without transparent huge pages (`no_thp`) and
/// on v2: with huge pages the idle gateway was 20 MB larger, and v3 keeps
/// freed memory for a second before giving it back (11 MB more with
/// 15,000 devices).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    execute(Cli::parse())
}
