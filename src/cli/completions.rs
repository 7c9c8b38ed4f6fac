//! `fitact-onnx completions SHELL`: the shell completion script of the whole command line.

use super::output::print_stdout;
use anyhow::Result;
use std::process::ExitCode;

/// Prints the completion script for `shell` of `command` (the whole command line, from `main`).
pub fn run(shell: clap_complete::Shell, command: &mut clap::Command) -> Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(shell, command, "fitact-onnx", &mut script);
    print_stdout(&String::from_utf8(script)?)?;
    Ok(ExitCode::SUCCESS)
}
