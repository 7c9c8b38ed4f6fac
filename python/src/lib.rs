//! `fitact_onnx._native`, the compiled half of the Python package: the command line itself
//! (`src/main.rs` and `src/cli/`, compiled once more into this module, so every option, default,
//! check and message is the CLI's) and `inspect`'s listing as JSON. The Python half
//! (`python/fitact_onnx/`) turns Python values into files and flags and back.
//!
//! The GIL is released while a command runs; progress bars follow the CLI's rule (stderr is a
//! terminal and not `-q`).

#[path = "../../src/main.rs"]
#[allow(dead_code)] // its `main`: the binary's entry point, not used here
mod command_line;

use clap::Parser;
use command_line::Cli;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

create_exception!(
    _native,
    FitactError,
    PyException,
    "A command failed; the message is the line the CLI prints after `error: `."
);

/// Runs a command as the CLI would, for the Python API: `argv` without the program name.
/// Returns the exit code (0 done, 1 a check that failed); raises `ValueError` for arguments
/// the CLI rejects and `FitactError` for an error while running (exit code 2, or 1 for a
/// model with nothing to harden), with the CLI's one-line message.
#[pyfunction]
#[pyo3(signature = (argv, onnxruntime_package=None))]
fn run(py: Python<'_>, argv: Vec<OsString>, onnxruntime_package: Option<PathBuf>) -> PyResult<u8> {
    let cli = Cli::try_parse_from(program(argv)).map_err(|e| PyValueError::new_err(clap_message(&e)))?;
    command_line::set_log_level(cli.quiet, cli.verbose);
    fitact_onnx::engine::set_host_python_onnxruntime(onnxruntime_package);
    match py.detach(|| command_line::run(cli)) {
        Ok(code) => Ok(exit_number(code)),
        Err(err) => Err(FitactError::new_err(format!("{err:#}"))),
    }
}

/// The `fitact-onnx` console script: the CLI's `main` on `argv` (without the program name),
/// printing what it prints; returns the exit code.
#[pyfunction]
#[pyo3(signature = (argv, onnxruntime_package=None))]
fn main(py: Python<'_>, argv: Vec<OsString>, onnxruntime_package: Option<PathBuf>) -> u8 {
    let cli = match Cli::try_parse_from(program(argv)) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(2);
        }
    };
    command_line::set_log_level(cli.quiet, cli.verbose);
    fitact_onnx::engine::set_host_python_onnxruntime(onnxruntime_package);
    match py.detach(|| command_line::run(cli)) {
        Ok(code) => exit_number(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            command_line::error_code(&err)
        }
    }
}

/// `inspect --json`'s listing of `model`, as a string (the CLI prints it).
#[pyfunction]
#[pyo3(signature = (model, activations="all"))]
fn inspect_json(py: Python<'_>, model: PathBuf, activations: &str) -> PyResult<String> {
    let kinds = command_line::cli::values::parse_kind_list(activations)
        .map_err(|e| PyValueError::new_err(format!("invalid value '{activations}' for activations: {e}")))?;
    py.detach(|| {
        let inspection = fitact_onnx::harden::inspect::inspect(&model, &kinds.0)?;
        Ok(serde_json::to_string(&inspection)?)
    })
    .map_err(|err: anyhow::Error| FitactError::new_err(format!("{err:#}")))
}

fn program(argv: Vec<OsString>) -> impl Iterator<Item = OsString> {
    std::iter::once(OsString::from(fitact_onnx::TOOL)).chain(argv)
}

/// A clap error in one line, without its `error: `, usage and help hint: its first paragraph
/// and tips, each paragraph's lines joined.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let paragraphs: Vec<String> = text
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty() && !p.starts_with("Usage:") && !p.starts_with("For more information"))
        .collect();
    let line = paragraphs.join("; ");
    line.strip_prefix("error: ").unwrap_or(&line).to_owned()
}

/// The commands return 0 or 1 (a check that failed).
fn exit_number(code: ExitCode) -> u8 {
    if code == ExitCode::SUCCESS { 0 } else { 1 }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("FitactError", m.py().get_type::<FitactError>())?;
    m.add("__version__", fitact_onnx::VERSION)?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add_function(wrap_pyfunction!(inspect_json, m)?)?;
    Ok(())
}
