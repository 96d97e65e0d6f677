//! `sockstorm` binary: parse the command line, run, map the outcome to an exit code.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = sockstorm::cli::Cli::parse();
    match sockstorm::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let e = anyhow::Error::from(e);
            eprintln!("sockstorm: error: {e:#}");
            ExitCode::from(sockstorm::cli::EXIT_ERROR)
        }
    }
}
