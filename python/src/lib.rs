//! `fitact_onnx._native`, the compiled half of the Python package: the command line itself
//! (`fitact_onnx::cli`, which the binary runs too, so every option, default, check and message
//! is the CLI's), `inspect`'s listing as JSON, and `InMemory`: numpy arrays
//! handed to a command in memory, under a path that stands for the file they replace
//! (`fitact_onnx::data::memory`). The Python half (`python/fitact_onnx/`) turns Python values
//! into flags, files (models) and `InMemory` arrays, and reports back into Python values.
//!
//! The GIL is released while a command runs; progress bars follow the CLI's rule (stderr is a
//! terminal and not `-q`).

use clap::Parser;
use fitact_onnx::cli::{self, Cli};
use fitact_onnx::data::dataset::{READABLE_DTYPES, Raw};
use fitact_onnx::data::memory::{self, Arrays};
use numpy::{Element, PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

create_exception!(
    _native,
    FitactError,
    PyException,
    "A command failed; the message is the line the CLI prints after `error: `."
);

create_exception!(
    _native,
    DataArgumentError,
    FitactError,
    "A data argument the command rejects: its arrays' dtype, shape or layout do not fit the model \
     (the package raises it as `fitact_onnx.DataError`, a ValueError too)."
);

/// The Python exception for a command's error: `DataArgumentError` when the data given does
/// not fit the model (a dataset's or an input's shape, dtype or layout), `FitactError` else.
fn command_error(err: anyhow::Error) -> PyErr {
    use fitact_onnx::data::dataset::DatasetError;
    use fitact_onnx::engine::EngineError;
    let message = format!("{err:#}");
    let data = err.chain().any(|cause| {
        cause.downcast_ref::<DatasetError>().is_some()
            || matches!(
                cause.downcast_ref::<EngineError>(),
                Some(EngineError::InputShape { .. })
            )
    });
    if data {
        DataArgumentError::new_err(message)
    } else {
        FitactError::new_err(message)
    }
}

/// Runs a command as the CLI would, for the Python API: `argv` without the program name.
/// Returns the exit code (0 done, 1 a check that failed); raises `ValueError` for arguments
/// the CLI rejects, `DataArgumentError` for data that does not fit the model and
/// `FitactError` for another error while running (exit code 2, or 1 for a model with nothing
/// to harden), with the CLI's one-line message.
#[pyfunction]
#[pyo3(signature = (argv, onnxruntime_package=None))]
fn run(py: Python<'_>, argv: Vec<OsString>, onnxruntime_package: Option<PathBuf>) -> PyResult<u8> {
    let parsed = Cli::try_parse_from(program(argv)).map_err(|e| PyValueError::new_err(clap_message(&e)))?;
    cli::set_log_level(parsed.quiet, parsed.verbose);
    fitact_onnx::engine::set_host_python_onnxruntime(onnxruntime_package);
    match py.detach(|| cli::run(parsed)) {
        Ok(code) => Ok(exit_number(code)),
        Err(err) => Err(command_error(err)),
    }
}

/// The `fitact-onnx` console script: the CLI's `main` on `argv` (without the program name),
/// printing what it prints; returns the exit code.
#[pyfunction]
#[pyo3(signature = (argv, onnxruntime_package=None))]
fn main(py: Python<'_>, argv: Vec<OsString>, onnxruntime_package: Option<PathBuf>) -> u8 {
    let parsed = match Cli::try_parse_from(program(argv)) {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(2);
        }
    };
    cli::set_log_level(parsed.quiet, parsed.verbose);
    fitact_onnx::engine::set_host_python_onnxruntime(onnxruntime_package);
    match py.detach(|| cli::run(parsed)) {
        Ok(code) => exit_number(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            cli::error_code(&err)
        }
    }
}

/// `inspect --json`'s listing of `model`, as a string (the CLI prints it).
#[pyfunction]
#[pyo3(signature = (model, activations=None))]
fn inspect_json(py: Python<'_>, model: PathBuf, activations: Option<&str>) -> PyResult<String> {
    let kinds = activations
        .map(|a| {
            cli::values::parse_kind_list(a)
                .map_err(|e| PyValueError::new_err(format!("invalid value '{a}' for activations: {e}")))
        })
        .transpose()?;
    py.detach(|| {
        let inspection = fitact_onnx::harden::inspect::inspect(&model, kinds.as_ref().map(|k| k.0.as_slice()))?;
        Ok(serde_json::to_string(&inspection)?)
    })
    .map_err(|err: anyhow::Error| FitactError::new_err(format!("{err:#}")))
}

/// Arrays handed to the commands in memory: a numpy array (as a `.npy` file gives one) or a
/// dict of arrays per input name (as a `.npz`), copied out of numpy and registered under
/// `path`, which a command reads as the file it stands for, until `close()`.
#[pyclass(frozen)]
struct InMemory {
    registration: Mutex<Option<memory::InMemory>>,
    #[pyo3(get)]
    path: PathBuf,
}

#[pymethods]
impl InMemory {
    /// `name` (the argument, e.g. "calib") names the arrays in a `ValueError` for a dtype
    /// the tool does not read.
    #[new]
    fn new(arrays: &Bound<'_, PyAny>, name: &str) -> PyResult<InMemory> {
        let arrays = match arrays.cast::<PyDict>() {
            Ok(dict) => Arrays::Named(
                dict.iter()
                    .map(|(key, value)| {
                        let key: String = key.extract()?;
                        let array =
                            raw(&value).map_err(|r| PyValueError::new_err(format!("{name}: array '{key}': {r}")))?;
                        Ok((key, array))
                    })
                    .collect::<PyResult<_>>()?,
            ),
            Err(_) => Arrays::One(raw(arrays).map_err(|r| PyValueError::new_err(format!("{name}: {r}")))?),
        };
        let registration = memory::InMemory::register(arrays);
        Ok(InMemory {
            path: registration.path().to_owned(),
            registration: Mutex::new(Some(registration)),
        })
    }

    /// Ends the registration (dropping the arrays); a command given `path` then finds no file.
    fn close(&self) {
        self.registration.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// A numpy array as the library reads it, copied (any strides), its dtype kept.
fn raw(value: &Bound<'_, PyAny>) -> Result<Raw, String> {
    fn owned<T: Element + Clone>(array: &Bound<'_, PyUntypedArray>) -> Option<ndarray::ArrayD<T>> {
        let view: PyReadonlyArrayDyn<'_, T> = array.extract().ok()?;
        Some(view.as_array().to_owned())
    }
    let array = value
        .cast::<PyUntypedArray>()
        .map_err(|_| format!("expected a numpy array, got {}", type_name(value)))?;
    owned::<f32>(array)
        .map(Raw::from)
        .or_else(|| owned::<f64>(array).map(Raw::from))
        .or_else(|| owned::<i64>(array).map(Raw::from))
        .or_else(|| owned::<i32>(array).map(Raw::from))
        .or_else(|| owned::<i16>(array).map(Raw::from))
        .or_else(|| owned::<i8>(array).map(Raw::from))
        .or_else(|| owned::<u8>(array).map(Raw::from))
        .or_else(|| owned::<u16>(array).map(Raw::from))
        .or_else(|| owned::<u32>(array).map(Raw::from))
        .or_else(|| owned::<bool>(array).map(Raw::from))
        .or_else(|| owned::<half::f16>(array).map(Raw::from))
        .ok_or_else(|| {
            format!(
                "its dtype ({}) is none the tool reads ({READABLE_DTYPES})",
                array.dtype()
            )
        })
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map_or_else(|_| "?".to_owned(), |n| n.to_string())
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
    m.add("DataArgumentError", m.py().get_type::<DataArgumentError>())?;
    m.add("__version__", fitact_onnx::VERSION)?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add_function(wrap_pyfunction!(inspect_json, m)?)?;
    m.add_class::<InMemory>()?;
    Ok(())
}
