//! Structural checks of a model before anything runs it, so that a broken file is named for
//! what is wrong with it (which tensor, which node) instead of failing deep inside a runtime:
//! IR version, opset import, tensors produced twice, inputs that nothing produces (or only a
//! later node: a cycle or an unsorted graph), and stored tensors whose data does not match
//! their declared shape (including absurd shapes).

use crate::error::PassError;
use crate::graph::{attribute_graphs, default_opset};
use crate::onnx::{GraphProto, ModelProto, TensorProto, tensor_proto::DataType};
use std::collections::HashSet;

/// The IR versions this tool reads: 3 (ONNX 1.0) to 14 (ONNX 1.23).
pub const IR_VERSIONS: std::ops::RangeInclusive<i64> = 3..=14;

/// Stored tensors above this many elements are refused (2^34: 64 GiB of float32).
const MAX_ELEMENTS: u128 = 1 << 34;

fn invalid(reason: String) -> PassError {
    PassError::Invalid(reason)
}

pub fn validate(model: &ModelProto) -> Result<(), PassError> {
    if !IR_VERSIONS.contains(&model.ir_version()) {
        return Err(invalid(format!(
            "IR version {} is not one this tool knows ({}-{})",
            model.ir_version(),
            IR_VERSIONS.start(),
            IR_VERSIONS.end()
        )));
    }
    default_opset(model)?;
    let graph = model.graph.as_ref().ok_or(PassError::NoGraph)?;
    check_graph(graph, &HashSet::new(), "main")
}

fn element_size(data_type: i32) -> Option<u128> {
    Some(match DataType::try_from(data_type).ok()? {
        DataType::Float | DataType::Int32 | DataType::Uint32 => 4,
        DataType::Double | DataType::Int64 | DataType::Uint64 | DataType::Complex64 => 8,
        DataType::Float16 | DataType::Bfloat16 | DataType::Int16 | DataType::Uint16 => 2,
        DataType::Int8 | DataType::Uint8 | DataType::Bool => 1,
        DataType::Complex128 => 16,
        _ => return None,
    })
}

fn check_tensor(tensor: &TensorProto, owner: &str) -> Result<(), PassError> {
    let name = if tensor.name().is_empty() { owner } else { tensor.name() };
    let mut elements: u128 = 1;
    for d in &tensor.dims {
        if *d < 0 {
            return Err(invalid(format!("tensor '{name}' has a negative dimension {d}")));
        }
        elements = elements.saturating_mul(*d as u128);
    }
    if elements > MAX_ELEMENTS {
        return Err(invalid(format!(
            "tensor '{name}' declares {elements} elements (dims {:?})",
            tensor.dims
        )));
    }
    let Some(size) = element_size(tensor.data_type()) else {
        return Ok(());
    };
    let typed = tensor.float_data.len()
        + tensor.int32_data.len()
        + tensor.int64_data.len()
        + tensor.double_data.len()
        + tensor.uint64_data.len();
    let consistent = match &tensor.raw_data {
        Some(raw) => raw.len() as u128 == elements * size,
        // Complex types store two numbers per element; float16 and small ints pack in int32_data.
        None if typed == 0 => elements == 0,
        None => typed as u128 == elements || typed as u128 == 2 * elements,
    };
    if !consistent {
        let held = tensor
            .raw_data
            .as_ref()
            .map_or(format!("{typed} values"), |r| format!("{} bytes", r.len()));
        return Err(invalid(format!(
            "tensor '{name}' declares shape {:?} ({elements} elements) but holds {held}",
            tensor.dims
        )));
    }
    Ok(())
}

/// Checks one graph; `outer` holds the names its enclosing graphs define.
fn check_graph(graph: &GraphProto, outer: &HashSet<String>, label: &str) -> Result<(), PassError> {
    let mut defined: HashSet<String> = outer.clone();
    let mut local: HashSet<&str> = HashSet::new();
    for name in graph
        .input
        .iter()
        .map(|i| i.name())
        .chain(graph.initializer.iter().map(|t| t.name()))
    {
        local.insert(name);
        defined.insert(name.to_owned());
    }
    for tensor in &graph.initializer {
        check_tensor(tensor, tensor.name())?;
    }
    let produced_later: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    for (index, node) in graph.node.iter().enumerate() {
        let node_name = if node.name().is_empty() {
            format!("#{index} ({})", node.op_type())
        } else {
            format!("'{}'", node.name())
        };
        for input in node.input.iter().filter(|i| !i.is_empty()) {
            if !defined.contains(input) {
                let why = if produced_later.contains(input.as_str()) {
                    "is produced only by a later node (a cycle, or nodes out of order)"
                } else {
                    "is produced by no node and is no input or initializer"
                };
                return Err(invalid(format!("{label}: input '{input}' of node {node_name} {why}")));
            }
        }
        for attr in &node.attribute {
            if let Some(t) = &attr.t {
                check_tensor(t, node.output.first().map_or("", String::as_str))?;
            }
            for sub in attribute_graphs(attr) {
                check_graph(sub, &defined, &format!("{label}/{node_name}.{}", attr.name()))?;
            }
        }
        for output in node.output.iter().filter(|o| !o.is_empty()) {
            if !local.insert(output) {
                return Err(invalid(format!(
                    "{label}: tensor '{output}' is produced twice (again by node {node_name})"
                )));
            }
            defined.insert(output.clone());
        }
    }
    for output in &graph.output {
        if !defined.contains(output.name()) {
            return Err(invalid(format!(
                "{label}: graph output '{}' is produced by no node",
                output.name()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{NodeProto, OperatorSetIdProto, ValueInfoProto};

    fn model(nodes: Vec<NodeProto>, initializer: Vec<TensorProto>) -> ModelProto {
        let value = |n: &str| ValueInfoProto {
            name: Some(n.into()),
            ..Default::default()
        };
        ModelProto {
            ir_version: Some(8),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(13),
            }],
            graph: Some(GraphProto {
                node: nodes,
                initializer,
                input: vec![value("x")],
                output: vec![value("y")],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn node(name: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            name: Some(name.into()),
            op_type: Some("Relu".into()),
            input: inputs.iter().map(|s| (*s).into()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    fn error(m: &ModelProto) -> String {
        validate(m).unwrap_err().to_string()
    }

    #[test]
    fn names_what_is_wrong() {
        assert!(validate(&model(vec![node("r", &["x"], "y")], vec![])).is_ok());
        let dangling = model(vec![node("r", &["nothere"], "y")], vec![]);
        assert!(
            error(&dangling).contains("input 'nothere' of node 'r' is produced by no node"),
            "{}",
            error(&dangling)
        );
        let cycle = model(
            vec![node("a", &["u"], "t"), node("b", &["t"], "u"), node("c", &["u"], "y")],
            vec![],
        );
        assert!(error(&cycle).contains("input 'u' of node 'a' is produced only by a later node"));
        let twice = model(vec![node("a", &["x"], "y"), node("b", &["x"], "y")], vec![]);
        assert!(error(&twice).contains("tensor 'y' is produced twice (again by node 'b')"));
        let absurd = TensorProto {
            name: Some("w".into()),
            dims: vec![1 << 20, 1 << 20],
            data_type: Some(1),
            raw_data: Some(vec![0; 16]),
            ..Default::default()
        };
        let m = model(vec![node("r", &["x", "w"], "y")], vec![absurd]);
        assert!(
            error(&m).contains("tensor 'w' declares 1099511627776 elements"),
            "{}",
            error(&m)
        );
        let short = TensorProto {
            name: Some("w".into()),
            dims: vec![3],
            data_type: Some(1),
            raw_data: Some(vec![0; 8]),
            ..Default::default()
        };
        let m = model(vec![node("r", &["x", "w"], "y")], vec![short]);
        assert!(error(&m).contains("tensor 'w' declares shape [3] (3 elements) but holds 8 bytes"));
        let mut future = model(vec![node("r", &["x"], "y")], vec![]);
        future.ir_version = Some(99);
        assert!(error(&future).contains("IR version 99 is not one this tool knows"));
    }
}
