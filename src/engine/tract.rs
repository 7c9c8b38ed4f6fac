//! tract, the embedded engine: always there, pure Rust. It wants a type and shape on every
//! input before it optimizes, refuses shapes computed at run time when the batch is symbolic
//! (so such a model is loaded again with the batch made concrete), and has no `Loop`.

use super::value::{ElemType, Repr, Value};
use super::{BatchDim, EngineError, EngineKind, Outputs};
use fitact_passes::onnx::ModelProto;
use std::sync::Arc;
use tract_onnx::prelude::*;

const ENGINE: EngineKind = EngineKind::Tract;

/// An optimized tract plan.
pub(super) struct Plan {
    plan: Arc<TypedRunnableModel>,
}

fn load_error(e: anyhow::Error) -> EngineError {
    EngineError::Load {
        engine: ENGINE,
        message: format!("{e:#}"),
    }
}

/// The version of the tract crates built in (Cargo.toml pins them with `=`: change both).
pub(super) fn version() -> &'static str {
    "0.23.9"
}

/// Where tract can find the ONNX tensor `name`: a node output carries it as a label; a graph
/// input or an initializer is a node of that name.
fn find_tensor(model: &InferenceModel, name: &str) -> Option<OutletId> {
    model
        .find_outlet_label(name)
        .or_else(|| model.node_by_name(name).ok().map(|n| OutletId::new(n.id, 0)))
}

/// Parses `model` in tract (ignoring declared output shapes and value_info: inputs are set by
/// the caller) and lists its inputs in tract's order.
fn parse(model: &ModelProto) -> Result<(InferenceModel, Vec<String>), EngineError> {
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
fn finish(mut inference: InferenceModel, outputs: &Outputs) -> Result<Plan, EngineError> {
    if let Outputs::Tensors(names) = outputs {
        let outlets = names
            .iter()
            .map(|name| {
                find_tensor(&inference, name).ok_or_else(|| EngineError::UnknownTensor {
                    engine: ENGINE,
                    name: name.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        inference.select_output_outlets(&outlets).map_err(load_error)?;
    }
    refuse_unsupported(&inference)?;
    let plan = inference
        .into_optimized()
        .map_err(load_error)?
        .into_runnable()
        .map_err(load_error)?;
    Ok(Plan { plan })
}

/// Names the first operator tract has no implementation for among the nodes the selected outputs
/// depend on (tract's own error only says it cannot type the op).
fn refuse_unsupported(inference: &InferenceModel) -> Result<(), EngineError> {
    for id in inference.eval_order().map_err(load_error)? {
        let node = inference.node(id);
        let name = node.op.name();
        if let Some(op) = name.strip_prefix("Unimplemented(").and_then(|n| n.strip_suffix(')')) {
            return Err(EngineError::Unsupported {
                engine: ENGINE,
                op: op.to_owned(),
                node: node.name.clone(),
            });
        }
    }
    Ok(())
}

/// Loads `model` for samples of the given per-input shapes (without the batch axis), of the
/// types the model declares (float32 where it declares none).
/// A free batch is symbolic, so one plan runs any batch size; when tract cannot load the model
/// that way (a shape computed at run time from the batch, which tract refuses as "shape input
/// is variable"), it is loaded again with the batch fixed to `preferred`, and the session then
/// takes exactly that many samples per run.
pub(super) fn load_for_samples(
    model: &ModelProto,
    sample_shapes: &[Vec<usize>],
    batch: BatchDim,
    preferred: usize,
    outputs: &Outputs,
) -> Result<(Plan, Vec<String>, BatchDim), EngineError> {
    let attempt = |batch: BatchDim| -> Result<(Plan, Vec<String>), EngineError> {
        let (mut inference, input_names) = parse(model)?;
        let batch_dim = match batch {
            BatchDim::Fixed(n) => n.to_dim(),
            BatchDim::Free => inference.sym("N").to_dim(),
        };
        for (i, shape) in sample_shapes.iter().enumerate().take(input_names.len()) {
            let dims: Vec<TDim> = std::iter::once(batch_dim.clone())
                .chain(shape.iter().map(|d| d.to_dim()))
                .collect();
            let elem = super::declared_elem_type(model, &input_names[i]).unwrap_or(ElemType::F32);
            inference
                .set_input_fact(i, datum_of(elem).fact(&dims).into())
                .map_err(load_error)?;
        }
        Ok((finish(inference, outputs)?, input_names))
    };
    match attempt(batch) {
        Ok((plan, names)) => Ok((plan, names, batch)),
        Err(EngineError::Load { message, .. }) if batch == BatchDim::Free => {
            let fixed = BatchDim::Fixed(preferred.max(1));
            log::debug!("tract cannot load the model with a symbolic batch ({message}); trying batch {preferred}");
            let (plan, names) = attempt(fixed).map_err(|e| match e {
                // The symbolic attempt's error is the one that says what tract lacks.
                EngineError::Load { .. } => EngineError::Load {
                    engine: ENGINE,
                    message: message.clone(),
                },
                other => other,
            })?;
            Ok((plan, names, fixed))
        }
        Err(e) => Err(e),
    }
}

/// Loads `model` for exactly these input values (any type and shape), given by input name.
pub(super) fn load_for_values(
    model: &ModelProto,
    values: &[(String, Value)],
    outputs: &Outputs,
) -> Result<(Plan, Vec<String>), EngineError> {
    let (mut inference, input_names) = parse(model)?;
    for (i, name) in input_names.iter().enumerate() {
        let value = values
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| EngineError::UnknownTensor {
                engine: ENGINE,
                name: name.clone(),
            })?;
        inference
            .set_input_fact(i, fact_of(&value.1).into())
            .map_err(load_error)?;
    }
    Ok((finish(inference, outputs)?, input_names))
}

/// The type and shape of `value` as tract states them (without converting the value).
fn fact_of(value: &Value) -> TypedFact {
    match value.elem_type() {
        ElemType::Other => TypedFact::shape_and_dt_of(&value.to_tract()),
        elem => datum_of(elem).fact(value.shape()),
    }
}

/// tract's name for an element type.
fn datum_of(elem: ElemType) -> DatumType {
    match elem {
        ElemType::F32 => DatumType::F32,
        ElemType::F16 => DatumType::F16,
        ElemType::U8 => DatumType::U8,
        ElemType::I8 => DatumType::I8,
        ElemType::I32 => DatumType::I32,
        ElemType::I64 => DatumType::I64,
        ElemType::Bool => DatumType::Bool,
        ElemType::F64 => DatumType::F64,
        // A declared type the tool does not feed: its samples were refused when loaded.
        ElemType::Other => DatumType::F32,
    }
}

impl Plan {
    /// Runs on values in the plan's input order.
    pub(super) fn run(&self, inputs: &[&Value]) -> Result<Vec<Value>, EngineError> {
        let inputs: TVec<TValue> = inputs.iter().map(|v| v.to_tract()).collect();
        let outputs = self.plan.run(inputs).map_err(|e| EngineError::Run {
            engine: ENGINE,
            message: format!("{e:#}"),
        })?;
        Ok(outputs.into_iter().map(|t| Value(Repr::Tract(t))).collect())
    }
}

/// The shape tract infers for every tensor of the main graph, by ONNX tensor name (`inspect`;
/// onnxruntime has no shape inference to ask).
pub fn tensor_shapes(model: &ModelProto) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let bytes = crate::model_io::encode(model);
    let typed = tract_onnx::onnx().model_for_read(&mut &bytes[..])?.into_typed()?;
    let mut shapes = std::collections::HashMap::new();
    for node in typed.nodes() {
        for (slot, output) in node.outputs.iter().enumerate() {
            if let Some(label) = typed.outlet_label(OutletId::new(node.id, slot)) {
                let dims: Vec<String> = output.fact.shape.iter().map(|d| d.to_string()).collect();
                shapes.insert(label.to_owned(), dims.join(","));
            }
        }
    }
    Ok(shapes)
}
