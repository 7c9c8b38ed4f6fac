//! The stored float weights of a model as fault injection sees memory: every float32 tensor
//! the model holds (initializers of every graph, `Constant` node values; bound tensors that
//! hardening added included), decoded once, in a fixed order, and written back into a copy of
//! the model for one trial.

use fitact_passes::graph::attribute_graphs_mut;
use fitact_passes::onnx::{GraphProto, ModelProto, TensorProto};
use fitact_passes::tensor::{FLOAT, float_values};

#[derive(Debug, Clone)]
pub struct WeightTensor {
    /// The initializer's name, or the output of the `Constant` node that holds it.
    pub name: String,
    pub values: Vec<f32>,
}

#[derive(Debug, Clone)]
pub struct Weights {
    pub tensors: Vec<WeightTensor>,
}

/// Visits every float32 weight with its name, in a fixed order: graph by graph (parents
/// first), initializers then Constant nodes.
fn visit(graph: &mut GraphProto, f: &mut dyn FnMut(&str, &mut TensorProto)) {
    for tensor in &mut graph.initializer {
        if tensor.data_type() == FLOAT {
            let name = tensor.name().to_owned();
            f(&name, tensor);
        }
    }
    for node in &mut graph.node {
        if node.op_type() == "Constant" {
            let name = node.output.first().cloned().unwrap_or_default();
            for attr in node.attribute.iter_mut().filter(|a| a.name() == "value") {
                if let Some(tensor) = attr.t.as_mut().filter(|t| t.data_type() == FLOAT) {
                    f(&name, tensor);
                }
            }
        }
        for attr in &mut node.attribute {
            for sub in attribute_graphs_mut(attr) {
                visit(sub, f);
            }
        }
    }
}

impl Weights {
    pub fn of(model: &ModelProto) -> Weights {
        let mut model = model.clone();
        let mut tensors = Vec::new();
        if let Some(graph) = model.graph.as_mut() {
            visit(graph, &mut |name, tensor| {
                let values = float_values(tensor)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| v as f32)
                    .collect();
                tensors.push(WeightTensor {
                    name: name.to_owned(),
                    values,
                });
            });
        }
        Weights { tensors }
    }

    pub fn elements(&self) -> usize {
        self.tensors.iter().map(|t| t.values.len()).sum()
    }

    /// A copy of `model` (the model these weights came from) holding `values` instead: one
    /// entry per tensor, in order.
    pub fn write_into(model: &ModelProto, values: &[Vec<f32>]) -> ModelProto {
        let mut model = model.clone();
        let mut index = 0;
        if let Some(graph) = model.graph.as_mut() {
            visit(graph, &mut |_, tensor| {
                let data = &values[index];
                tensor.float_data.clear();
                tensor.raw_data = Some(data.iter().flat_map(|v| v.to_le_bytes()).collect());
                index += 1;
            });
        }
        model
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fitact_passes::onnx::{AttributeProto, NodeProto};
    use fitact_passes::tensor::float_tensor;

    #[test]
    fn finds_initializers_and_constants_and_writes_them_back() {
        let model = ModelProto {
            graph: Some(GraphProto {
                initializer: vec![float_tensor("w", &[2], &[1.0, 2.0], FLOAT)],
                node: vec![NodeProto {
                    op_type: Some("Constant".into()),
                    output: vec!["c".into()],
                    attribute: vec![AttributeProto {
                        name: Some("value".into()),
                        t: Some(float_tensor("", &[], &[3.0], FLOAT)),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let weights = Weights::of(&model);
        let names: Vec<&str> = weights.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["w", "c"]);
        assert_eq!(weights.elements(), 3);
        let patched = Weights::write_into(&model, &[vec![1.0, -2.0], vec![30.0]]);
        let again = Weights::of(&patched);
        assert_eq!(again.tensors[0].values, [1.0, -2.0]);
        assert_eq!(again.tensors[1].values, [30.0]);
    }
}
