//! Running ONNX models. Owns one small interface over the execution engines: an `Engine` loads
//! a model for given inputs with chosen outputs into a `Session`, which runs batches by input
//! name and returns `Value`s readable as ndarray. Two engines sit behind it: onnxruntime
//! (`onnxruntime.rs`, the runtime users deploy to, loaded at run time from its shared library)
//! and tract (`tract.rs`, embedded, always there). Also owns what every engine needs to know
//! of a model's inputs: their names, declared shapes and batch dimension.
//!
//! May use `passes` (the ONNX types) and `model_io` (encoding). Nothing outside this folder
//! names a tract or ort type.

mod onnxruntime;
pub mod tract;
mod value;

pub use value::{ElemType, Element, PerElement, Value};

use fitact_passes::onnx::{ModelProto, ValueInfoProto};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use thiserror::Error;

/// Which engine runs the models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Tract,
    Onnxruntime,
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineKind::Tract => "tract",
            EngineKind::Onnxruntime => "onnxruntime",
        })
    }
}

/// Which engine computed a report's numbers (its `engine` field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineInfo {
    pub name: String,
    pub version: String,
}

/// What the user asks for (`--engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EngineChoice {
    /// onnxruntime when its library is found, tract otherwise.
    #[default]
    Auto,
    Onnxruntime,
    Tract,
}

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("{engine} cannot load the model: {message}")]
    Load { engine: EngineKind, message: String },
    #[error("{engine} does not see tensor '{name}' in the model")]
    UnknownTensor { engine: EngineKind, name: String },
    #[error("the model expects {expected} inputs, the data has {found}")]
    InputCount { expected: usize, found: usize },
    #[error("{engine} does not support operator {op} (node '{node}'), which this run needs")]
    Unsupported {
        engine: EngineKind,
        op: String,
        node: String,
    },
    #[error("{engine} cannot run the model: {message}")]
    Run { engine: EngineKind, message: String },
    #[error("input '{input}': the samples have shape {found:?} each, the model expects {expected}")]
    InputShape {
        input: String,
        expected: String,
        found: Vec<usize>,
    },
    /// The onnxruntime library: not found, or not usable.
    #[error("{0}")]
    Library(String),
}

/// How many samples one run takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchDim {
    /// The model's batch dimension is symbolic or absent: any batch size.
    Free,
    /// The model pins its batch dimension (torch's default exporter writes 1): exactly this many.
    Fixed(usize),
}

/// Which tensors a run returns.
pub enum Outputs<'a> {
    /// The model's own graph outputs.
    Model,
    /// Named tensors (by ONNX tensor name), in this order.
    Tensors(&'a [String]),
}

/// An engine, chosen once per command; cheap to clone and shared by worker threads.
#[derive(Clone)]
pub struct Engine {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Tract,
    Onnxruntime(Arc<onnxruntime::Runtime>),
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Engine({} {})", self.kind(), self.version())
    }
}

/// Inside a Python process (the `fitact_onnx` module): where the host interpreter's
/// `onnxruntime` package is, looked at in place of the `python3` on PATH's (`None`: that one).
pub fn set_host_python_onnxruntime(package_dir: Option<std::path::PathBuf>) {
    onnxruntime::set_host_python_package(package_dir);
}

impl Engine {
    /// The embedded engine.
    pub fn tract() -> Engine {
        Engine {
            backend: Backend::Tract,
        }
    }

    /// The engine `choice` names. `Auto` takes onnxruntime when its library is found (see
    /// `onnxruntime.rs` for where it looks) and tract otherwise; a library the user named
    /// (`ort_lib`, `ORT_DYLIB_PATH`) that does not load is an error either way. Logs which and why.
    pub fn select(choice: EngineChoice, ort_lib: Option<&Path>) -> Result<Engine, EngineError> {
        if choice == EngineChoice::Tract {
            log::info!("engine: tract (asked for)");
            return Ok(Engine::tract());
        }
        let (path, source) = match onnxruntime::locate(ort_lib) {
            Ok(found) => found,
            Err(looked) if choice == EngineChoice::Auto => {
                log::info!(
                    "engine: tract (no onnxruntime library: looked at {})",
                    looked.join(", ")
                );
                return Ok(Engine::tract());
            }
            Err(looked) => {
                return Err(EngineError::Library(format!(
                    "--engine onnxruntime: no onnxruntime library found (looked at {}); install it with `pip install onnxruntime`, or point ORT_DYLIB_PATH or --ort-lib at libonnxruntime.so",
                    looked.join(", ")
                )));
            }
        };
        match guard(EngineKind::Onnxruntime, || onnxruntime::runtime(&path, source)) {
            Ok(runtime) => {
                log::info!(
                    "engine: onnxruntime {} from {} (found through {})",
                    runtime.version,
                    runtime.path.display(),
                    source.describe()
                );
                Ok(Engine {
                    backend: Backend::Onnxruntime(runtime),
                })
            }
            Err(e) if choice == EngineChoice::Auto && !source.explicit() => {
                log::info!("engine: tract ({e})");
                Ok(Engine::tract())
            }
            Err(e) => Err(e),
        }
    }

    pub fn kind(&self) -> EngineKind {
        match self.backend {
            Backend::Tract => EngineKind::Tract,
            Backend::Onnxruntime(_) => EngineKind::Onnxruntime,
        }
    }

    /// The engine's version (the onnxruntime library's own, or the tract crates').
    pub fn version(&self) -> String {
        match &self.backend {
            Backend::Tract => tract::version().to_owned(),
            Backend::Onnxruntime(runtime) => runtime.version.clone(),
        }
    }

    pub fn info(&self) -> EngineInfo {
        EngineInfo {
            name: self.kind().to_string(),
            version: self.version(),
        }
    }

    /// `tract 0.23.9`, `onnxruntime 1.32.0`.
    pub fn describe(&self) -> String {
        format!("{} {}", self.kind(), self.version())
    }

    /// Loads `model` for samples (of the types it declares) of the given per-input shapes (without the batch
    /// axis), to be run `preferred` samples at a time unless the model fixes its batch.
    pub fn load(
        &self,
        model: &ModelProto,
        sample_shapes: &[Vec<usize>],
        preferred: usize,
        outputs: Outputs,
    ) -> Result<Session, EngineError> {
        let input_names = model_input_names(model);
        if input_names.len() != sample_shapes.len() {
            return Err(EngineError::InputCount {
                expected: input_names.len(),
                found: sample_shapes.len(),
            });
        }
        for (name, shape) in input_names.iter().zip(sample_shapes) {
            check_sample_shape(model, name, shape)?;
        }
        let batch = input_names
            .first()
            .map_or(BatchDim::Free, |first| declared_batch(model, first));
        let kind = self.kind();
        let (backend, batch) = guard(kind, || match &self.backend {
            Backend::Tract => {
                let (plan, names, batch) = tract::load_for_samples(model, sample_shapes, batch, preferred, &outputs)?;
                Ok((SessionBackend::Tract { plan, inputs: names }, batch))
            }
            Backend::Onnxruntime(runtime) => {
                let session = onnxruntime::load(runtime, &with_outputs(model, &outputs))?;
                Ok((SessionBackend::Onnxruntime(session), batch))
            }
        })?;
        Ok(Session {
            backend,
            kind,
            batch,
            input_names,
        })
    }

    /// Loads `model` for exactly these input values (any type and shape), given by input name.
    /// Used for extracted subgraphs and suffixes, whose inputs are tensors of a larger graph.
    pub fn load_for_values(
        &self,
        model: &ModelProto,
        values: &[(String, Value)],
        outputs: Outputs,
    ) -> Result<Session, EngineError> {
        let kind = self.kind();
        let typed = with_input_types(model, values, kind)?;
        let backend = guard(kind, || match &self.backend {
            Backend::Tract => {
                let (plan, names) = tract::load_for_values(&typed, values, &outputs)?;
                Ok(SessionBackend::Tract { plan, inputs: names })
            }
            Backend::Onnxruntime(runtime) => Ok(SessionBackend::Onnxruntime(onnxruntime::load(
                runtime,
                &with_outputs(&typed, &outputs),
            )?)),
        })?;
        Ok(Session {
            backend,
            kind,
            batch: BatchDim::Free,
            input_names: model_input_names(&typed),
        })
    }
}

/// A model loaded in an engine, ready to run on batches of samples. Shared by reference
/// between threads (runs of one session are serialised).
pub struct Session {
    backend: SessionBackend,
    kind: EngineKind,
    pub batch: BatchDim,
    /// The model's input names (graph inputs that are not initializers), in the model's order.
    pub input_names: Vec<String>,
}

enum SessionBackend {
    /// tract's plan takes its inputs positionally, in its own order.
    Tract {
        plan: tract::Plan,
        inputs: Vec<String>,
    },
    Onnxruntime(onnxruntime::OrtSession),
}

impl Session {
    /// The largest number of samples one call to `run` accepts (`preferred` if any size goes).
    pub fn batch_size(&self, preferred: usize) -> usize {
        match self.batch {
            BatchDim::Free => preferred.max(1),
            BatchDim::Fixed(n) => n,
        }
    }

    /// Runs one batch (one value per model input, in the model's order, same leading size).
    /// A model with a fixed batch gets a short batch padded with copies of its last sample;
    /// callers that reduce with max/min are unaffected, others use the `valid` rows only.
    pub fn run(&self, inputs: Vec<Value>) -> Result<(Vec<Value>, usize), EngineError> {
        let valid = inputs.first().and_then(|a| a.shape().first().copied()).unwrap_or(0);
        let values: Vec<(String, Value)> = self
            .input_names
            .iter()
            .cloned()
            .zip(inputs)
            .map(|(name, a)| match self.batch {
                BatchDim::Fixed(n) if a.shape().first().is_some_and(|rows| *rows < n) => (name, a.pad_rows(n)),
                _ => (name, a),
            })
            .collect();
        Ok((self.run_values(&values)?, valid))
    }

    /// Runs on input values given by name; returns the outputs the session was loaded for.
    pub fn run_values(&self, values: &[(String, Value)]) -> Result<Vec<Value>, EngineError> {
        let find = |name: &String| {
            values
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v)
                .ok_or_else(|| EngineError::UnknownTensor {
                    engine: self.kind,
                    name: name.clone(),
                })
        };
        guard(self.kind, || match &self.backend {
            SessionBackend::Tract { plan, inputs } => {
                let ordered = inputs.iter().map(find).collect::<Result<Vec<_>, _>>()?;
                plan.run(&ordered)
            }
            SessionBackend::Onnxruntime(session) => {
                let named = self
                    .input_names
                    .iter()
                    .map(|n| Ok((n.as_str(), find(n)?)))
                    .collect::<Result<Vec<_>, EngineError>>()?;
                session.run(&named)
            }
        })
    }
}

/// Runs `f`, turning a panic inside an engine into an error (tract panics on some malformed
/// graphs: no panic reaches a user).
fn guard<T>(engine: EngineKind, f: impl FnOnce() -> Result<T, EngineError>) -> Result<T, EngineError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "an internal error".to_owned());
        Err(EngineError::Run {
            engine,
            message: format!("it panicked: {message}"),
        })
    })
}

/// A copy of `model` whose graph outputs are `outputs` (onnxruntime returns any tensor listed
/// as a graph output, graph inputs and initializers included; an output needs no type).
fn with_outputs<'m>(model: &'m ModelProto, outputs: &Outputs) -> Cow<'m, ModelProto> {
    let Outputs::Tensors(names) = outputs else {
        return Cow::Borrowed(model);
    };
    let mut model = model.clone();
    if let Some(graph) = model.graph.as_mut() {
        graph.output = names
            .iter()
            .map(|name| ValueInfoProto {
                name: Some(name.clone()),
                ..Default::default()
            })
            .collect();
    }
    Cow::Owned(model)
}

/// The names of the graph inputs that are not initializers, in order.
pub fn model_input_names(model: &ModelProto) -> Vec<String> {
    let graph = model.graph.as_ref();
    let initializers: std::collections::HashSet<&str> = graph
        .iter()
        .flat_map(|g| g.initializer.iter().map(|t| t.name()))
        .collect();
    graph
        .iter()
        .flat_map(|g| g.input.iter())
        .filter(|i| !initializers.contains(i.name()))
        .map(|i| i.name().to_owned())
        .collect()
}

/// The dimensions the model declares for an input (None for a symbolic or missing one).
pub fn declared_dims(model: &ModelProto, input: &str) -> Option<Vec<Option<i64>>> {
    use fitact_passes::onnx::{tensor_shape_proto::dimension::Value, type_proto};
    let input = model.graph.as_ref()?.input.iter().find(|i| i.name() == input)?;
    let Some(type_proto::Value::TensorType(tensor)) = &input.r#type.as_ref()?.value else {
        return None;
    };
    // Exporters write `dim_value: -1` (Paddle) or 0 for a dynamic size: both are free.
    let dims = tensor.shape.as_ref()?.dim.iter().map(|d| match d.value {
        Some(Value::DimValue(v)) if v > 0 => Some(v),
        _ => None,
    });
    Some(dims.collect())
}

/// The element type the model declares for an input (None when it declares none).
pub fn declared_elem_type(model: &ModelProto, input: &str) -> Option<ElemType> {
    use fitact_passes::onnx::type_proto;
    let input = model.graph.as_ref()?.input.iter().find(|i| i.name() == input)?;
    let Some(type_proto::Value::TensorType(tensor)) = &input.r#type.as_ref()?.value else {
        return None;
    };
    tensor.elem_type.map(ElemType::from_onnx)
}

/// Checks one sample's shape against what the model declares for the input (after the batch
/// axis), so that a mismatch is named here rather than deep inside an engine.
fn check_sample_shape(model: &ModelProto, input: &str, sample: &[usize]) -> Result<(), EngineError> {
    let Some(dims) = declared_dims(model, input) else {
        return Ok(());
    };
    let fits = dims.len() == sample.len() + 1
        && dims[1..]
            .iter()
            .zip(sample)
            .all(|(d, s)| d.is_none_or(|d| d == *s as i64));
    if fits {
        return Ok(());
    }
    let expected = dims
        .iter()
        .map(|d| d.map_or("?".to_owned(), |d| d.to_string()))
        .collect::<Vec<_>>()
        .join(", ");
    Err(EngineError::InputShape {
        input: input.to_owned(),
        expected: format!("[{expected}] (batch first)"),
        found: sample.to_vec(),
    })
}

/// How many samples one run of `model` takes: its fixed batch size, or `preferred`.
pub fn batch_size_for(model: &ModelProto, preferred: usize) -> usize {
    match model_input_names(model)
        .first()
        .map(|input| declared_batch(model, input))
    {
        Some(BatchDim::Fixed(n)) => n,
        _ => preferred.max(1),
    }
}

/// The batch dimension of an input as the model declares it.
fn declared_batch(model: &ModelProto, input: &str) -> BatchDim {
    match declared_dims(model, input).and_then(|dims| dims.first().copied().flatten()) {
        Some(n) if n > 0 => BatchDim::Fixed(n as usize),
        _ => BatchDim::Free,
    }
}

/// A copy of `model` whose graph inputs are typed after the values they will receive (engines
/// need a type on every input; extracted subgraphs declare theirs without one). An input the
/// model types already keeps its declaration: concrete sizes in place of its free ones could
/// change what onnxruntime infers inside its subgraphs (an `If` whose branch runs an `LSTM`
/// failed to load that way). For onnxruntime, an untyped input gets the values' type and rank
/// with free sizes, for the same reason; tract gets the values' sizes.
fn with_input_types(
    model: &ModelProto,
    values: &[(String, Value)],
    engine: EngineKind,
) -> Result<ModelProto, EngineError> {
    use fitact_passes::onnx::{TensorShapeProto, TypeProto, tensor_shape_proto, type_proto};
    let mut model = model.clone();
    let graph = model.graph.as_mut().ok_or_else(|| EngineError::Load {
        engine,
        message: "the model has no graph".into(),
    })?;
    for input in &mut graph.input {
        let Some((_, value)) = values.iter().find(|(n, _)| n == input.name()) else {
            continue;
        };
        if value.elem_type() == ElemType::Other {
            return Err(EngineError::InputShape {
                input: input.name().to_owned(),
                expected: "a tensor of a type the tool can feed".into(),
                found: value.shape().to_vec(),
            });
        }
        let declared = matches!(
            input.r#type.as_ref().and_then(|t| t.value.as_ref()),
            Some(type_proto::Value::TensorType(t)) if t.elem_type.is_some_and(|e| e != 0)
        );
        if declared && engine == EngineKind::Onnxruntime {
            continue;
        }
        let name = input.name().to_owned();
        let dim = value
            .shape()
            .iter()
            .enumerate()
            .map(|(axis, d)| tensor_shape_proto::Dimension {
                value: Some(match engine {
                    EngineKind::Onnxruntime => tensor_shape_proto::dimension::Value::DimParam(format!("{name}.{axis}")),
                    EngineKind::Tract => tensor_shape_proto::dimension::Value::DimValue(*d as i64),
                }),
                ..Default::default()
            })
            .collect();
        input.r#type = Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(value.elem_type().onnx()),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        });
    }
    Ok(model)
}
