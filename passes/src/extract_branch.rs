//! # extract_branch — a subgraph as a model of its own, so it can be run and observed
//!
//! **Before**: a model whose node (an `If`) holds, at `path`, a subgraph G that reads tensors
//! of its enclosing graphs (its free variables).
//!
//! **After**: a *new* model (the input model is untouched) whose main graph is G, with the
//! model's IR version, opset imports and functions, where
//! - each free variable that is an initializer of an enclosing graph is copied in as an
//!   initializer, and one a `Constant` node of an enclosing graph writes is copied in as that
//!   node (weights and the parameters of a `Slice`, as the TorchScript exporter writes them,
//!   stay constants, so a runtime can fold them: tract cannot type a `Slice` whose steps are
//!   inputs), and
//! - every other free variable is declared as a graph input, without a type: the caller
//!   feeds the values the enclosing graph computed, and states their types at run time.
//!
//! **When it applies**: any subgraph path. Used by calibration to observe activations inside
//! `If` branches (the enclosing graph exposes the condition and the free variables, and the
//! branch that the condition selects runs on them) and `Loop` bodies (the body's own inputs,
//! the iteration number, condition and loop-carried values, stay its first inputs; the caller
//! feeds them per iteration).

use crate::error::PassError;
use crate::graph::{GraphPath, free_variables, graph_at};
use crate::onnx::{ModelProto, NodeProto, TensorProto, ValueInfoProto};

pub struct ExtractedBranch {
    pub model: ModelProto,
    /// The free variables that became graph inputs, in input order.
    pub free_inputs: Vec<String>,
}

pub fn extract_branch(model: &ModelProto, path: &GraphPath) -> Result<ExtractedBranch, PassError> {
    let mut graph = graph_at(model, path)?.clone();
    let free = free_variables(&graph);
    // Initializers of the enclosing graphs, innermost scope first (it shadows the outer ones).
    let mut scopes = Vec::new();
    for depth in (0..path.0.len()).rev() {
        scopes.push(graph_at(model, &GraphPath(path.0[..depth].to_vec()))?);
    }
    let outer_initializer = |name: &str| -> Option<TensorProto> {
        scopes
            .iter()
            .find_map(|g| g.initializer.iter().find(|t| t.name() == name).cloned())
    };
    let outer_constant = |name: &str| -> Option<NodeProto> {
        scopes.iter().find_map(|g| {
            g.node
                .iter()
                .find(|n| n.op_type() == "Constant" && n.output.first().is_some_and(|o| o == name))
                .cloned()
        })
    };
    let mut free_inputs = Vec::new();
    let mut constants = Vec::new();
    for name in free {
        if let Some(tensor) = outer_initializer(&name) {
            graph.initializer.push(tensor);
            continue;
        }
        match outer_constant(&name) {
            Some(node) => constants.push(node),
            None => {
                graph.input.push(ValueInfoProto {
                    name: Some(name.clone()),
                    ..Default::default()
                });
                free_inputs.push(name);
            }
        }
    }
    graph.node.splice(0..0, constants);
    let extracted = ModelProto {
        ir_version: model.ir_version,
        opset_import: model.opset_import.clone(),
        functions: model.functions.clone(),
        graph: Some(graph),
        ..Default::default()
    };
    Ok(ExtractedBranch {
        model: extracted,
        free_inputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{AttributeProto, GraphProto, NodeProto, attribute_proto::AttributeType};

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| (*s).into()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    #[test]
    fn free_variables_become_inputs_or_copied_initializers() {
        let branch = GraphProto {
            node: vec![
                node("Mul", &["x", "w"], "t"),
                node("Add", &["t", "k"], "u"),
                node("Relu", &["u"], "r"),
            ],
            output: vec![ValueInfoProto {
                name: Some("r".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let if_node = NodeProto {
            attribute: vec![AttributeProto {
                name: Some("then_branch".into()),
                r#type: Some(AttributeType::Graph as i32),
                g: Some(branch),
                ..Default::default()
            }],
            ..node("If", &["c"], "out")
        };
        let model = ModelProto {
            graph: Some(GraphProto {
                node: vec![node("Identity", &["in"], "x"), node("Constant", &[], "k"), if_node],
                initializer: vec![TensorProto {
                    name: Some("w".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            free_variables(&model.graph.as_ref().unwrap().node[2].attribute[0].g.clone().unwrap()),
            ["x", "w", "k"]
        );
        let path = crate::activations::find_relus(&model)[0].graph.clone();
        let extracted = extract_branch(&model, &path).unwrap();
        assert_eq!(extracted.free_inputs, ["x"]);
        let graph = extracted.model.graph.unwrap();
        assert_eq!(graph.initializer[0].name(), "w");
        assert_eq!(graph.input[0].name(), "x");
        // The Constant node that writes k comes along, before its use.
        assert_eq!(
            (graph.node[0].op_type(), graph.node[0].output[0].as_str()),
            ("Constant", "k")
        );
        assert_eq!(graph.input.len(), 1);
    }
}
