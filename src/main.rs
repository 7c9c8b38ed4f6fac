//! The `fitact-onnx` binary: parse the arguments, run the command (`fitact_onnx::cli`), print
//! one line for an error and exit with its code (0 done, 1 nothing to do or a check failed,
//! 2 error). The panic hook is set here, not in the library: it is the process's choice (the
//! Python module, which runs the same commands, leaves its host's hook alone).

use clap::Parser;
use fitact_onnx::cli::{Cli, error_code, run, set_log_level};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    set_log_level(cli.quiet, cli.verbose);
    // An engine's panic is caught and reported as an error where it runs (`engine::guard`);
    // a panic anywhere else is a bug, reported in one line too, with a backtrace on request.
    let backtrace = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if backtrace {
            default_hook(info);
        }
    }));
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "error: {err:#}");
            ExitCode::from(error_code(&err))
        }
    }
}
