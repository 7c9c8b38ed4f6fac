//! # extract_suffix — the part of a graph that depends on some nodes, as a model of its own
//!
//! **Before**: a model and a set of "dirty" nodes of its main graph (nodes whose weights were
//! changed, or that read a tensor that was changed).
//!
//! **After**: a *new* model (the input is untouched) holding only the dirty nodes and every
//! node downstream of them, in their original order, plus the `Constant` nodes they read.
//! Every tensor those nodes read that no kept node computes and that is not an initializer
//! (a graph input, or a tensor of the clean upstream part) becomes a graph input, untyped:
//! the caller feeds the values a clean run computed. Initializers are kept as they are. The
//! graph outputs are the original outputs that a kept node computes; the others do not
//! change and are not listed.
//!
//! **When it applies**: dirty nodes of the main graph. Running the suffix on the clean
//! boundary values gives the same outputs as running the whole model, because every node
//! whose inputs can differ is in the suffix. Fault injection uses it to rerun only what a
//! fault can reach, and the bound search to rerun only what a changed bound can reach
//! (`downstream_tensors` names the tensors that can change, so that cached clean values of
//! the others stay valid). `suffix_boundary` gives the boundary alone, without building the
//! model: `evaluate` uses it to keep, from one clean run, what any trial's suffix will read.

use crate::error::PassError;
use crate::graph::{attribute_graphs, free_variables};
use crate::onnx::{GraphProto, ModelProto, NodeProto, ValueInfoProto};
use std::collections::HashSet;

pub struct Suffix {
    pub model: ModelProto,
    /// The tensors the suffix reads from the clean part (its graph inputs), in input order.
    pub boundary: Vec<String>,
    /// For each original graph output: whether the suffix computes it (then it is a suffix output).
    pub recomputed_outputs: Vec<bool>,
}

/// Every tensor a node reads, including what its subgraphs read from the enclosing scope.
fn reads(node: &NodeProto) -> Vec<String> {
    let mut names: Vec<String> = node.input.iter().filter(|n| !n.is_empty()).cloned().collect();
    for attr in &node.attribute {
        for sub in attribute_graphs(attr) {
            names.extend(free_variables(sub));
        }
    }
    names
}

/// The nodes of `graph` that are dirty or read, directly or through other nodes, what a dirty
/// node computes (`keep`), and the tensors they compute.
fn sweep<'g>(graph: &'g GraphProto, dirty: &[usize]) -> (Vec<bool>, HashSet<&'g str>) {
    let mut keep = vec![false; graph.node.len()];
    let mut changed: HashSet<&str> = HashSet::new();
    let dirty: HashSet<usize> = dirty.iter().copied().collect();
    // Nodes are in topological order (the ONNX spec requires it): one forward sweep.
    for (i, node) in graph.node.iter().enumerate() {
        if dirty.contains(&i) || reads(node).iter().any(|n| changed.contains(n.as_str())) {
            keep[i] = true;
            changed.extend(node.output.iter().map(String::as_str));
        }
    }
    (keep, changed)
}

/// The tensors of the main graph whose values can differ when the `dirty` nodes change: what
/// those nodes and every node downstream of them compute (the suffix's own tensors).
pub fn downstream_tensors(model: &ModelProto, dirty: &[usize]) -> Result<HashSet<String>, PassError> {
    let graph = model.graph.as_ref().ok_or(PassError::NoGraph)?;
    Ok(sweep(graph, dirty).1.into_iter().map(str::to_owned).collect())
}

/// The tensors the suffix of `dirty` reads from the clean part (`Suffix::boundary`), without
/// building the suffix.
pub fn suffix_boundary(model: &ModelProto, dirty: &[usize]) -> Result<Vec<String>, PassError> {
    let graph = model.graph.as_ref().ok_or(PassError::NoGraph)?;
    let (keep, changed) = sweep(graph, dirty);
    Ok(reads_from_clean(graph, &keep, &changed).0)
}

/// The `Constant` nodes outside the suffix (`keep`), by index.
fn outside_constants(graph: &GraphProto, keep: &[bool]) -> Vec<usize> {
    (0..graph.node.len())
        .filter(|i| graph.node[*i].op_type() == "Constant" && !keep[*i])
        .collect()
}

/// What the kept nodes read that they do not compute: the boundary (tensors of the clean
/// part, in the order first read) and the outputs of `Constant` nodes outside the suffix.
fn reads_from_clean<'g>(
    graph: &'g GraphProto,
    keep: &[bool],
    changed: &HashSet<&str>,
) -> (Vec<String>, HashSet<&'g str>) {
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    let constant_outputs: HashSet<&str> = outside_constants(graph, keep)
        .iter()
        .flat_map(|i| graph.node[*i].output.iter().map(String::as_str))
        .collect();
    let mut boundary: Vec<String> = Vec::new();
    let mut used_constants: HashSet<&str> = HashSet::new();
    for node in graph.node.iter().zip(keep).filter(|(_, k)| **k).map(|(n, _)| n) {
        for name in reads(node) {
            if changed.contains(name.as_str()) || initializers.contains(name.as_str()) {
                continue;
            }
            if let Some(c) = constant_outputs.get(name.as_str()) {
                used_constants.insert(c);
            } else if !boundary.contains(&name) {
                boundary.push(name);
            }
        }
    }
    (boundary, used_constants)
}

pub fn extract_suffix(model: &ModelProto, dirty: &[usize]) -> Result<Suffix, PassError> {
    let graph = model.graph.as_ref().ok_or(PassError::NoGraph)?;
    let (keep, changed) = sweep(graph, dirty);
    let constants = outside_constants(graph, &keep);
    let (boundary, used_constants) = reads_from_clean(graph, &keep, &changed);
    let mut suffix_graph = graph.clone();
    suffix_graph.node = graph
        .node
        .iter()
        .enumerate()
        .filter(|(i, n)| {
            keep[*i] || (constants.contains(i) && n.output.iter().any(|o| used_constants.contains(o.as_str())))
        })
        .map(|(_, n)| n.clone())
        .collect();
    suffix_graph.input = boundary
        .iter()
        .map(|n| ValueInfoProto {
            name: Some(n.clone()),
            ..Default::default()
        })
        .collect();
    let recomputed_outputs: Vec<bool> = graph.output.iter().map(|o| changed.contains(o.name())).collect();
    suffix_graph.output = graph
        .output
        .iter()
        .filter(|o| changed.contains(o.name()))
        .cloned()
        .collect();
    suffix_graph.value_info.clear();
    Ok(Suffix {
        model: ModelProto {
            graph: Some(suffix_graph),
            ..model.clone()
        },
        boundary,
        recomputed_outputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{GraphProto, TensorProto};

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| (*s).into()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    #[test]
    fn keeps_what_depends_on_the_dirty_nodes_and_feeds_the_rest() {
        // x -> conv0(w0) -> a -> relu -> r -> conv1(w1, c) -> b -> add(b, r) -> y ; r also an output
        let value = |n: &str| ValueInfoProto {
            name: Some(n.into()),
            ..Default::default()
        };
        let graph = GraphProto {
            node: vec![
                node("Conv", &["x", "w0"], "a"),
                node("Relu", &["a"], "r"),
                node("Constant", &[], "c"),
                node("Conv", &["r", "w1", "c"], "b"),
                node("Add", &["b", "r"], "y"),
            ],
            initializer: vec![
                TensorProto {
                    name: Some("w0".into()),
                    ..Default::default()
                },
                TensorProto {
                    name: Some("w1".into()),
                    ..Default::default()
                },
            ],
            input: vec![value("x")],
            output: vec![value("y"), value("r")],
            ..Default::default()
        };
        let model = ModelProto {
            graph: Some(graph),
            ..Default::default()
        };
        let suffix = extract_suffix(&model, &[3]).unwrap();
        let g = suffix.model.graph.unwrap();
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type()).collect();
        assert_eq!(ops, ["Constant", "Conv", "Add"]);
        assert_eq!(suffix.boundary, ["r"]);
        assert_eq!(suffix.recomputed_outputs, [true, false]);
        assert_eq!(g.output.len(), 1);

        assert_eq!(suffix_boundary(&model, &[3]).unwrap(), suffix.boundary);

        let whole = extract_suffix(&model, &[0]).unwrap();
        assert_eq!(whole.boundary, ["x"]);
        assert_eq!(whole.recomputed_outputs, [true, true]);
    }
}
