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
    #[error("tract cannot run the model: {0}")]
    Run(String),
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

impl Runner {
    /// Loads `model` for samples of the given per-input shapes (without the batch axis).
    pub fn new(
        model: &ModelProto,
        sample_shapes: &[Vec<usize>],
        outputs: Outputs,
    ) -> Result<Runner, RuntimeError> {
        let load = |e: anyhow::Error| RuntimeError::Load(format!("{e:#}"));
        let bytes = crate::model_io::encode(model);
        let mut inference = tract_onnx::onnx()
            .with_ignore_output_shapes(true)
            .with_ignore_value_info(true)
            .model_for_read(&mut &bytes[..])
            .map_err(load)?;
        let input_names: Vec<String> = inference
            .input_outlets()
            .map_err(load)?
            .iter()
            .map(|o| inference.node(o.node).name.clone())
            .collect();
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
            let dims: Vec<TDim> = std::iter::once(batch_dim.clone())
                .chain(shape.iter().map(|d| d.to_dim()))
                .collect();
            inference
                .set_input_fact(i, f32::fact(&dims).into())
                .map_err(load)?;
        }
        if let Outputs::Tensors(names) = outputs {
            let outlets = names
                .iter()
                .map(|name| {
                    inference
                        .find_outlet_label(name)
                        .ok_or_else(|| RuntimeError::UnknownTensor(name.clone()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            inference.select_output_outlets(&outlets).map_err(load)?;
        }
        let plan = inference
            .into_optimized()
            .map_err(load)?
            .into_runnable()
            .map_err(load)?;
        Ok(Runner {
            plan,
            batch,
            input_names,
        })
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
        let outputs = self
            .plan
            .run(inputs)
            .map_err(|e| RuntimeError::Run(format!("{e:#}")))?;
        Ok((outputs, valid))
    }
}

fn pad_batch(array: ArrayD<f32>, n: usize) -> ArrayD<f32> {
    let last = array
        .index_axis(Axis(0), array.shape()[0] - 1)
        .insert_axis(Axis(0))
        .to_owned();
    let mut padded = array;
    while padded.shape()[0] < n {
        padded
            .append(Axis(0), last.view())
            .expect("same sample shape");
    }
    padded
}
