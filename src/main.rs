//! `sockstorm` binary: parse the command line, run, map the outcome to an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = sockstorm::cli::parse();
    match sockstorm::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e.exit_code();
            eprintln!("sockstorm: error: {}", e.message());
            ExitCode::from(code)
        }
    }
}
