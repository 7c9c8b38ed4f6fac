//! onnxruntime, through the `ort` crate, loaded at run time from its shared library (nothing
//! is downloaded or linked at build time). Where the library is looked for, in order:
//! `--ort-lib PATH`, `ORT_DYLIB_PATH`, the `onnxruntime` package of the Python the binary is
//! installed in (a venv's `bin/`), else of the `python3` on PATH (its wheel ships
//! `onnxruntime/capi/libonnxruntime.so.1.*`), then the system's library folders.
//!
//! Every session runs with one intra-op and one inter-op thread: the tool parallelises across
//! trials, one session per worker, so results do not depend on the thread count.

use super::value::{ElemType, Element, PerElement, Repr, Value};
use super::{EngineError, EngineKind};
use fitact_passes::onnx::ModelProto;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::TensorElementType;
use ort::value::{DynValue, TensorRef};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

const ENGINE: EngineKind = EngineKind::Onnxruntime;

/// The oldest onnxruntime whose C API has what the tool uses (the `api-17` feature of `ort`).
const OLDEST_MINOR: u32 = 17;

/// The loaded library, once per process.
pub(super) struct Runtime {
    environment: ort::environment::Environment,
    pub path: PathBuf,
    pub version: String,
}

static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

/// Where a library path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Flag,
    EnvVar,
    Python,
    System,
}

impl Source {
    pub(super) fn describe(self) -> &'static str {
        match self {
            Source::Flag => "--ort-lib",
            Source::EnvVar => "ORT_DYLIB_PATH",
            Source::Python => "the onnxruntime package of python3",
            Source::System => "the system's library folders",
        }
    }

    /// A path the user named: if it does not load, that is an error, not a reason to look on.
    pub(super) fn explicit(self) -> bool {
        matches!(self, Source::Flag | Source::EnvVar)
    }
}

/// The first library found, in the documented order, or where it was looked for.
pub(super) fn locate(flag: Option<&Path>) -> Result<(PathBuf, Source), Vec<String>> {
    if let Some(path) = flag {
        return Ok((path.to_owned(), Source::Flag));
    }
    let mut looked = vec!["--ort-lib (not given)".to_owned()];
    match std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        Some(path) => return Ok((PathBuf::from(path), Source::EnvVar)),
        None => looked.push("ORT_DYLIB_PATH (not set)".to_owned()),
    }
    match python_package_dir() {
        Some(dir) => {
            let capi = dir.join("capi");
            if let Some(path) = newest_library_in(&capi) {
                return Ok((path, Source::Python));
            }
            looked.push(format!("{} (no library in it)", capi.display()));
        }
        None => looked.push("python3's packages (no onnxruntime)".to_owned()),
    }
    let folders = system_folders();
    for folder in &folders {
        if let Some(path) = newest_library_in(folder) {
            return Ok((path, Source::System));
        }
    }
    let shown: Vec<String> = folders.iter().map(|f| f.display().to_string()).collect();
    looked.push(format!("{} (no libonnxruntime)", shown.join(", ")));
    Err(looked)
}

/// The `onnxruntime` package of the Python interpreter the tool runs inside (the Python
/// module sets it before each command), looked at instead of the `python3` on PATH's.
static HOST_PYTHON_PACKAGE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Inside a Python process: look for the library in this `onnxruntime` package folder instead
/// of asking the `python3` on PATH (`None`: ask it again).
pub(super) fn set_host_python_package(dir: Option<PathBuf>) {
    *HOST_PYTHON_PACKAGE.lock().unwrap_or_else(|e| e.into_inner()) = dir;
}

/// The folder of the `onnxruntime` package the `python3` on PATH would import, found without
/// importing it (which takes a second); inside Python, the host interpreter's; for a binary
/// that pip installed (a venv's `bin/`, activated or not), the package installed beside it.
fn python_package_dir() -> Option<PathBuf> {
    if let Some(dir) = HOST_PYTHON_PACKAGE.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        return Some(dir);
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|exe| package_beside(&exe)) {
        return Some(dir);
    }
    let script = "import importlib.util as u\ns = u.find_spec('onnxruntime')\nprint(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')";
    let output = std::process::Command::new("python3")
        .args(["-c", script])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8(output.stdout).ok()?;
    let dir = dir.trim();
    (output.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
}

/// The `onnxruntime` package of the Python prefix `exe` is installed in, as pip lays one out:
/// `<prefix>/bin/fitact-onnx` and `<prefix>/lib/python3.*/site-packages/onnxruntime/capi`
/// (the highest Python version, if several).
fn package_beside(exe: &Path) -> Option<PathBuf> {
    let lib = exe.parent()?.parent()?.join("lib");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(lib)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let minor = entry
                .file_name()
                .to_str()?
                .strip_prefix("python3.")?
                .parse::<u32>()
                .ok()?;
            let package = entry.path().join("site-packages").join("onnxruntime");
            package.join("capi").is_dir().then_some((minor, package))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, package)| package)
}

/// The folders a system library would be in: `LD_LIBRARY_PATH`, then the usual ones.
fn system_folders() -> Vec<PathBuf> {
    let mut folders: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    let triple = format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH);
    for folder in ["/usr/local/lib", triple.as_str(), "/usr/lib64", "/usr/lib"] {
        folders.push(PathBuf::from(folder));
    }
    folders.retain(|f| f.is_dir());
    folders.dedup();
    folders
}

/// The onnxruntime library in `folder` with the highest version in its name
/// (`libonnxruntime.so.1.32.0`, `libonnxruntime.so`, `libonnxruntime.1.32.0.dylib`).
fn newest_library_in(folder: &Path) -> Option<PathBuf> {
    let prefix = format!("{}onnxruntime", std::env::consts::DLL_PREFIX);
    let suffix = std::env::consts::DLL_SUFFIX;
    let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(folder)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let rest = name.strip_prefix(&prefix)?;
            // Not libonnxruntime_providers_shared.so and the like.
            if !(rest.starts_with('.') || rest.is_empty()) || !name.contains(suffix) {
                return None;
            }
            let version = rest
                .split('.')
                .filter_map(|part| part.parse::<u32>().ok())
                .collect::<Vec<_>>();
            Some((version, entry.path()))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, path)| path)
}

/// The library's own version string (`OrtGetApiBase()->GetVersionString()`).
fn version_of(path: &Path) -> Result<String, String> {
    let library = unsafe { libloading::Library::new(path) }.map_err(|e| format!("cannot load it: {e}"))?;
    let get_base: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
        unsafe { library.get(b"OrtGetApiBase") }
            .map_err(|_| "it is not an onnxruntime library (no OrtGetApiBase)".to_owned())?;
    let base = unsafe { get_base() };
    if base.is_null() {
        return Err("its OrtGetApiBase returned nothing".into());
    }
    let version = unsafe { std::ffi::CStr::from_ptr(((*base).GetVersionString)()) };
    Ok(version.to_string_lossy().into_owned())
}

/// Loads the library at `path` (once per process: a second call returns the first library),
/// checking that its version has the C API the tool uses.
pub(super) fn runtime(path: &Path, source: Source) -> Result<Arc<Runtime>, EngineError> {
    let _loading = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(runtime) = RUNTIME.get() {
        if runtime.path != path {
            log::debug!(
                "onnxruntime is already loaded from {}; {} is not loaded again",
                runtime.path.display(),
                path.display()
            );
        }
        return Ok(runtime.clone());
    }
    let bad = |reason: String| EngineError::Library(format!("{} {}: {reason}", source.describe(), path.display()));
    if !path.exists() {
        return Err(bad("no such file".into()));
    }
    let version = version_of(path).map_err(bad)?;
    let minor = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    if !version.starts_with("1.") || minor < OLDEST_MINOR {
        return Err(bad(format!(
            "onnxruntime {version} is too old; the tool needs 1.{OLDEST_MINOR} or later (pip install -U onnxruntime)"
        )));
    }
    let environment = ort::init_from(path)
        .map_err(|e| bad(e.to_string()))?
        .with_name("fitact-onnx")
        .with_telemetry(false)
        .build()
        .map_err(|e| bad(format!("cannot start it: {e}")))?;
    let runtime = Arc::new(Runtime {
        environment,
        path: path.to_owned(),
        version,
    });
    let _ = RUNTIME.set(runtime.clone());
    Ok(runtime)
}

/// onnxruntime's message on one line (some span several, which an error line must not).
fn one_line(e: impl std::fmt::Display) -> String {
    e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

fn load_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::Load {
        engine: ENGINE,
        message: one_line(e),
    }
}

/// onnxruntime's refusal of an operator it has no kernel for, as `Unsupported` with the node
/// named (its message names the node for a missing kernel, only the op for an unknown one).
fn unsupported_op(message: &str, model: &ModelProto) -> Option<EngineError> {
    let unsupported = |op: &str, node: Option<&str>| {
        let node = node.map(str::to_owned).or_else(|| {
            let graph = model.graph.as_ref()?;
            graph
                .node
                .iter()
                .find(|n| n.op_type() == op)
                .map(|n| n.name().to_owned())
        });
        Some(EngineError::Unsupported {
            engine: ENGINE,
            op: op.to_owned(),
            node: node.unwrap_or_default(),
        })
    };
    if let Some(rest) = message.split("Could not find an implementation for ").nth(1) {
        let op = rest.split('(').next()?;
        let node = rest.split("node with name '").nth(1).and_then(|n| n.split('\'').next());
        return unsupported(op, node);
    }
    // "Fatal error: com.example:FancyNorm(-1) is not a registered function/op"
    let (before, _) = message.split_once(" is not a registered function/op")?;
    let qualified = before.split_whitespace().last()?;
    let name = qualified.rsplit(':').next()?.split('(').next()?;
    unsupported(name, None)
}

fn run_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::Run {
        engine: ENGINE,
        message: one_line(e),
    }
}

/// An onnxruntime session; `Session::run` takes `&mut`, so it sits behind a lock (each worker
/// thread has sessions of its own: the lock is never contended in practice).
pub(super) struct OrtSession {
    session: Mutex<Session>,
    /// The session's outputs, in the order a run returns them.
    outputs: Vec<String>,
}

/// Makes a session of `model`, which already lists the wanted outputs.
pub(super) fn load(runtime: &Runtime, model: &ModelProto) -> Result<OrtSession, EngineError> {
    let bytes = crate::model_io::encode(model);
    let session = builder(runtime)
        .and_then(|mut b| b.commit_from_memory(&bytes))
        .map_err(|e| unsupported_op(&e.to_string(), model).unwrap_or_else(|| load_error(e)))?;
    let outputs = session.outputs().iter().map(|o| o.name().to_owned()).collect();
    Ok(OrtSession {
        session: Mutex::new(session),
        outputs,
    })
}

/// The session options every session uses (the builder's errors are not `Send`: they are
/// turned into plain ones here).
fn builder(runtime: &Runtime) -> ort::Result<ort::session::builder::SessionBuilder> {
    let plain = |e: ort::Error<ort::session::builder::SessionBuilder>| ort::Error::new(e.message());
    Session::builder(&runtime.environment)?
        .with_intra_threads(1)
        .map_err(plain)?
        .with_inter_threads(1)
        .map_err(plain)?
        .with_parallel_execution(false)
        .map_err(plain)?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(plain)?
        .with_log_level(ort::logging::LogLevel::Error)
        .map_err(plain)
}

impl OrtSession {
    /// Runs on named inputs; returns every output of the session, in its order.
    pub(super) fn run(&self, inputs: &[(&str, &Value)]) -> Result<Vec<Value>, EngineError> {
        let feeds = inputs
            .iter()
            .map(|(name, value)| Ok((Cow::Borrowed(*name), input_of(value)?)))
            .collect::<Result<Vec<(Cow<str>, SessionInputValue)>, EngineError>>()?;
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let mut outputs = session.run(feeds).map_err(run_error)?;
        // A name listed twice is one output; later copies share it. A graph input listed as an
        // output is the value fed: onnxruntime's output may alias the input's buffer, which is
        // the caller's and borrowed only for the run (calibration read freed memory through it).
        let mut taken: Vec<(&str, Value)> = Vec::with_capacity(self.outputs.len());
        for name in &self.outputs {
            let fed = inputs.iter().find(|(n, _)| *n == name.as_str()).map(|(_, v)| *v);
            let value = match (taken.iter().find(|(n, _)| *n == name.as_str()).map(|(_, v)| v), fed) {
                (Some(value), _) | (None, Some(value)) => value.clone(),
                (None, None) => {
                    let value = outputs
                        .remove(name)
                        .ok_or_else(|| run_error(format!("no output '{name}'")))?;
                    value_of(name, value)?
                }
            };
            taken.push((name, value));
        }
        Ok(taken.into_iter().map(|(_, v)| v).collect())
    }
}

/// A tensor view onnxruntime reads in place (no copy).
fn input_of(value: &Value) -> Result<SessionInputValue<'_>, EngineError> {
    struct View<'v>(&'v Value);
    impl<'v> PerElement for View<'v> {
        type Output = Result<SessionInputValue<'v>, EngineError>;
        fn run<T: Element>(self) -> Self::Output {
            let view = self
                .0
                .view::<T>()
                .ok_or_else(|| run_error(format!("a {} input is not readable", T::TYPE.name())))?;
            if !view.is_standard_layout() {
                return Err(run_error("an input is not contiguous"));
            }
            let tensor = TensorRef::from_array_view(view).map_err(run_error)?;
            Ok(SessionInputValue::from(tensor.into_dyn()))
        }
    }
    value
        .elem_type()
        .dispatch(View(value))
        .unwrap_or_else(|| Err(run_error("an input has a type the tool cannot feed")))
}

/// An output, kept in onnxruntime's own memory (each run allocates its outputs afresh).
fn value_of(name: &str, value: DynValue) -> Result<Value, EngineError> {
    let kind = value
        .dtype()
        .tensor_type()
        .ok_or_else(|| run_error(format!("output '{name}' is not a tensor")))?;
    let elem = match kind {
        TensorElementType::Float32 => ElemType::F32,
        TensorElementType::Float16 => ElemType::F16,
        TensorElementType::Uint8 => ElemType::U8,
        TensorElementType::Int8 => ElemType::I8,
        TensorElementType::Int32 => ElemType::I32,
        TensorElementType::Int64 => ElemType::I64,
        TensorElementType::Bool => ElemType::Bool,
        TensorElementType::Float64 => ElemType::F64,
        other => {
            return Err(run_error(format!(
                "output '{name}' is {other:?}, which the tool does not read"
            )));
        }
    };
    let shape = value
        .dtype()
        .tensor_shape()
        .map(|dims| dims.iter().map(|d| (*d).max(0) as usize).collect())
        .unwrap_or_default();
    Ok(Value(Repr::Ort {
        value: std::sync::Arc::new(value),
        shape,
        elem,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_of_the_venv_a_binary_is_installed_in_is_found() {
        let venv = tempfile::tempdir().unwrap();
        let exe = venv.path().join("bin").join("fitact-onnx");
        assert_eq!(package_beside(&exe), None);
        for minor in ["9", "12", "x"] {
            let capi = venv
                .path()
                .join(format!("lib/python3.{minor}/site-packages/onnxruntime/capi"));
            std::fs::create_dir_all(&capi).unwrap();
            std::fs::write(capi.join("libonnxruntime.so.1.20.1"), b"").unwrap();
        }
        // Another package's folder, without capi/, is not taken.
        std::fs::create_dir_all(venv.path().join("lib/python3.13/site-packages/onnxruntime")).unwrap();
        let package = package_beside(&exe).unwrap();
        assert_eq!(package, venv.path().join("lib/python3.12/site-packages/onnxruntime"));
        assert_eq!(
            newest_library_in(&package.join("capi")),
            Some(package.join("capi/libonnxruntime.so.1.20.1"))
        );
    }
}
