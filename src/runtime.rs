//! Running ONNX models through tract: loading from our protobuf types, choosing the outputs
//! to observe, and feeding batches whatever the model says about its batch dimension.

use fitact_passes::onnx::ModelProto;
use ndarray::{ArrayD, Axis};
use std::sync::Arc;
use thiserror::Error;
use tract_onnx::prelude::*;

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("tract cannot load the model: {0}")]
    Load(String),
    #[error("tract does not see tensor '{0}' in the model")]
    UnknownTensor(String),
    #[error("the model expects {expected} inputs, the data has {found}")]
    InputCount { expected: usize, found: usize },
    #[error("tract does not support operator {op} (node '{node}'), which this run needs")]
    Unsupported { op: String, node: String },
    #[error("tract cannot run the model: {0}")]
    Run(String),
    #[error("input '{input}': the samples have shape {found:?} each, the model expects {expected}")]
    InputShape {
        input: String,
        expected: String,
        found: Vec<usize>,
    },
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

/// A model ready to run on batches of samples.
pub struct Runner {
    plan: Arc<TypedRunnableModel>,
    pub batch: BatchDim,
    /// The model's input names in tract's order (graph inputs that are not initializers).
    pub input_names: Vec<String>,
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
    let dims = tensor.shape.as_ref()?.dim.iter().map(|d| match d.value {
        Some(Value::DimValue(v)) => Some(v),
        _ => None,
    });
    Some(dims.collect())
}

/// Checks one sample's shape against what the model declares for the input (after the batch
/// axis), so that a mismatch is named here rather than deep inside tract's analysis.
fn check_sample_shape(model: &ModelProto, input: &str, sample: &[usize]) -> Result<(), RuntimeError> {
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
    Err(RuntimeError::InputShape {
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

/// The batch dimension of the first input as the model declares it.
fn declared_batch(model: &ModelProto, input: &str) -> BatchDim {
    use fitact_passes::onnx::{tensor_shape_proto::dimension::Value, type_proto};
    let input = model
        .graph
        .as_ref()
        .and_then(|g| g.input.iter().find(|i| i.name() == input));
    let dim0 = input
        .and_then(|i| i.r#type.as_ref())
        .and_then(|t| match &t.value {
            Some(type_proto::Value::TensorType(tensor)) => tensor.shape.as_ref(),
            _ => None,
        })
        .and_then(|shape| shape.dim.first())
        .and_then(|d| d.value.as_ref());
    match dim0 {
        Some(Value::DimValue(n)) if *n > 0 => BatchDim::Fixed(*n as usize),
        _ => BatchDim::Free,
    }
}

/// Where tract can find the ONNX tensor `name`: a node output carries it as a label; a graph
/// input or an initializer is a node of that name.
fn find_tensor(model: &InferenceModel, name: &str) -> Option<OutletId> {
    model
        .find_outlet_label(name)
        .or_else(|| model.node_by_name(name).ok().map(|n| OutletId::new(n.id, 0)))
}

fn load_error(e: anyhow::Error) -> RuntimeError {
    RuntimeError::Load(format!("{e:#}"))
}

/// Parses `model` in tract (ignoring declared output shapes and value_info: inputs are set by
/// the caller) and lists its inputs in tract's order.
fn parse(model: &ModelProto) -> Result<(InferenceModel, Vec<String>), RuntimeError> {
    let bytes = crate::model_io::encode(model);
    let inference = tract_onnx::onnx()
        .with_ignore_output_shapes(true)
        .with_ignore_value_info(true)
        .model_for_read(&mut &bytes[..])
        .map_err(load_error)?;
    let input_names = inference
        .input_outlets()
        .map_err(load_error)?
        .iter()
        .map(|o| inference.node(o.node).name.clone())
        .collect();
    Ok((inference, input_names))
}

/// Selects the outputs, optimizes, and makes the plan.
fn finish(mut inference: InferenceModel, outputs: Outputs) -> Result<Arc<TypedRunnableModel>, RuntimeError> {
    if let Outputs::Tensors(names) = outputs {
        let outlets = names
            .iter()
            .map(|name| find_tensor(&inference, name).ok_or_else(|| RuntimeError::UnknownTensor(name.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        inference.select_output_outlets(&outlets).map_err(load_error)?;
    }
    refuse_unsupported(&inference)?;
    inference
        .into_optimized()
        .map_err(load_error)?
        .into_runnable()
        .map_err(load_error)
}

/// Names the first operator tract has no implementation for among the nodes the selected outputs
/// depend on (tract's own error only says it cannot type the op).
fn refuse_unsupported(inference: &InferenceModel) -> Result<(), RuntimeError> {
    for id in inference.eval_order().map_err(load_error)? {
        let node = inference.node(id);
        let name = node.op.name();
        if let Some(op) = name.strip_prefix("Unimplemented(").and_then(|n| n.strip_suffix(')')) {
            return Err(RuntimeError::Unsupported {
                op: op.to_owned(),
                node: node.name.clone(),
            });
        }
    }
    Ok(())
}

impl Runner {
    /// Loads `model` for samples of the given per-input shapes (without the batch axis).
    pub fn new(model: &ModelProto, sample_shapes: &[Vec<usize>], outputs: Outputs) -> Result<Runner, RuntimeError> {
        let (mut inference, input_names) = parse(model)?;
        if input_names.len() != sample_shapes.len() {
            return Err(RuntimeError::InputCount {
                expected: input_names.len(),
                found: sample_shapes.len(),
            });
        }
        let batch = declared_batch(model, &input_names[0]);
        let batch_dim = match batch {
            BatchDim::Fixed(n) => n.to_dim(),
            BatchDim::Free => inference.sym("N").to_dim(),
        };
        for (i, shape) in sample_shapes.iter().enumerate() {
            check_sample_shape(model, &input_names[i], shape)?;
            let dims: Vec<TDim> = std::iter::once(batch_dim.clone())
                .chain(shape.iter().map(|d| d.to_dim()))
                .collect();
            inference
                .set_input_fact(i, f32::fact(&dims).into())
                .map_err(load_error)?;
        }
        Ok(Runner {
            plan: finish(inference, outputs)?,
            batch,
            input_names,
        })
    }

    /// Loads `model` for exactly these input values (any type and shape), given by input name.
    /// Used for extracted subgraphs, whose inputs are tensors of the enclosing graph.
    pub fn for_values(
        model: &ModelProto,
        values: &[(String, TValue)],
        outputs: Outputs,
    ) -> Result<Runner, RuntimeError> {
        let (mut inference, input_names) = parse(&with_input_types(model, values)?)?;
        for (i, name) in input_names.iter().enumerate() {
            let value = values
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| RuntimeError::UnknownTensor(name.clone()))?;
            let fact = TypedFact::shape_and_dt_of(&value.1);
            inference.set_input_fact(i, fact.into()).map_err(load_error)?;
        }
        Ok(Runner {
            plan: finish(inference, outputs)?,
            batch: BatchDim::Free,
            input_names,
        })
    }

    /// Runs on input values given by name (see `for_values`).
    pub fn run_values(&self, values: &[(String, TValue)]) -> Result<TVec<TValue>, RuntimeError> {
        let inputs = self
            .input_names
            .iter()
            .map(|name| {
                values
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| RuntimeError::UnknownTensor(name.clone()))
            })
            .collect::<Result<TVec<_>, _>>()?;
        self.plan.run(inputs).map_err(|e| RuntimeError::Run(format!("{e:#}")))
    }

    /// The largest number of samples one call to `run` accepts (`preferred` if any size goes).
    pub fn batch_size(&self, preferred: usize) -> usize {
        match self.batch {
            BatchDim::Free => preferred.max(1),
            BatchDim::Fixed(n) => n,
        }
    }

    /// Runs one batch (one array per input, same leading size). A model with a fixed batch
    /// gets a short batch padded with copies of its last sample; callers that reduce with
    /// max/min are unaffected, others use `valid` rows only.
    pub fn run(&self, inputs: Vec<ArrayD<f32>>) -> Result<(TVec<TValue>, usize), RuntimeError> {
        let valid = inputs.first().map_or(0, |a| a.shape()[0]);
        let inputs: TVec<TValue> = inputs
            .into_iter()
            .map(|a| match self.batch {
                BatchDim::Fixed(n) if a.shape()[0] < n => pad_batch(a, n),
                _ => a,
            })
            .map(|a| Tensor::from(a).into_tvalue())
            .collect();
        let outputs = self.plan.run(inputs).map_err(|e| RuntimeError::Run(format!("{e:#}")))?;
        Ok((outputs, valid))
    }
}

/// A copy of `model` whose graph inputs are typed after the values they will receive (tract
/// needs a type on every input; extracted subgraphs declare theirs without one).
fn with_input_types(model: &ModelProto, values: &[(String, TValue)]) -> Result<ModelProto, RuntimeError> {
    use fitact_passes::onnx::{TensorShapeProto, TypeProto, tensor_shape_proto, type_proto};
    let mut model = model.clone();
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| RuntimeError::Load("model has no graph".into()))?;
    for input in &mut graph.input {
        let Some((_, value)) = values.iter().find(|(n, _)| n == input.name()) else {
            continue;
        };
        let elem_type = match value.datum_type() {
            DatumType::F32 => 1,
            DatumType::U8 => 2,
            DatumType::I8 => 3,
            DatumType::I32 => 6,
            DatumType::I64 => 7,
            DatumType::Bool => 9,
            DatumType::F16 => 10,
            DatumType::F64 => 11,
            other => {
                return Err(RuntimeError::Load(format!(
                    "input '{}' has unsupported type {other:?}",
                    input.name()
                )));
            }
        };
        let dim = value
            .shape()
            .iter()
            .map(|d| tensor_shape_proto::Dimension {
                value: Some(tensor_shape_proto::dimension::Value::DimValue(*d as i64)),
                ..Default::default()
            })
            .collect();
        input.r#type = Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem_type),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        });
    }
    Ok(model)
}

/// `array` with copies of its last row appended up to `n` rows (max/min reductions and
/// per-row predictions of the real rows are unchanged).
pub fn pad_batch(array: ArrayD<f32>, n: usize) -> ArrayD<f32> {
    let last = array
        .index_axis(Axis(0), array.shape()[0] - 1)
        .insert_axis(Axis(0))
        .to_owned();
    let mut padded = array;
    while padded.shape()[0] < n {
        padded.append(Axis(0), last.view()).expect("same sample shape");
    }
    padded
}
