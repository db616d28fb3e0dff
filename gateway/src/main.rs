//! `gateway`: command-line entry point.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-V") => {
            println!("gateway {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(cmd) => {
            eprintln!(
                "gateway: `{cmd}` is not available yet: this build has the device protocol only; \
                 the gateway core (run, demo, check-config, keygen) is the next milestone"
            );
            ExitCode::from(2)
        }
        None => {
            eprintln!("usage: gateway <demo|run|check-config|keygen|--version>");
            ExitCode::from(2)
        }
    }
}
