//! Addressing graphs inside a model: the main graph and every subgraph held by a node
//! attribute (If branches, Loop and Scan bodies), to any depth.

use crate::error::PassError;
use crate::onnx::{AttributeProto, GraphProto, ModelProto, TensorProto, attribute_proto::AttributeType};
use std::fmt;

/// One step from a graph into a subgraph: node `node` of the current graph, its attribute
/// `attribute`, and the index among that attribute's graphs (0 for a single-graph attribute).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubgraphStep {
    pub node: usize,
    pub attribute: usize,
    pub graph: usize,
    /// Human-readable form, e.g. `If_3.then_branch`; kept for messages and reports.
    pub label: String,
}

/// Where a graph sits in a model: the empty path is the main graph.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GraphPath(pub Vec<SubgraphStep>);

impl GraphPath {
    pub fn main() -> Self {
        GraphPath(Vec::new())
    }
    pub fn is_main(&self) -> bool {
        self.0.is_empty()
    }
    pub fn child(&self, step: SubgraphStep) -> Self {
        let mut steps = self.0.clone();
        steps.push(step);
        GraphPath(steps)
    }
}

impl fmt::Display for GraphPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("main")?;
        for step in &self.0 {
            write!(f, "/{}", step.label)?;
        }
        Ok(())
    }
}

/// The subgraphs an attribute holds (GRAPH or GRAPHS). Also accepts attributes whose type
/// field is unset but carry a graph, as some old exporters write them.
pub fn attribute_graphs(attr: &AttributeProto) -> Vec<&GraphProto> {
    match attr.r#type() {
        AttributeType::Graph => attr.g.iter().collect(),
        AttributeType::Graphs => attr.graphs.iter().collect(),
        _ => attr.g.iter().chain(attr.graphs.iter()).collect(),
    }
}

pub fn attribute_graphs_mut(attr: &mut AttributeProto) -> Vec<&mut GraphProto> {
    attr.g.iter_mut().chain(attr.graphs.iter_mut()).collect()
}

/// Calls `visit` on every graph of the model, parents before children.
pub fn for_each_graph<'a>(model: &'a ModelProto, mut visit: impl FnMut(&GraphPath, &'a GraphProto)) {
    fn walk<'a>(path: GraphPath, graph: &'a GraphProto, visit: &mut dyn FnMut(&GraphPath, &'a GraphProto)) {
        visit(&path, graph);
        for (n, node) in graph.node.iter().enumerate() {
            for (a, attr) in node.attribute.iter().enumerate() {
                for (g, sub) in attribute_graphs(attr).into_iter().enumerate() {
                    let base = if node.name().is_empty() {
                        node.op_type()
                    } else {
                        node.name()
                    };
                    let label = format!("{base}.{}", attr.name());
                    let label = if attr.graphs.is_empty() {
                        label
                    } else {
                        format!("{label}[{g}]")
                    };
                    walk(
                        path.child(SubgraphStep {
                            node: n,
                            attribute: a,
                            graph: g,
                            label,
                        }),
                        sub,
                        visit,
                    );
                }
            }
        }
    }
    if let Some(graph) = &model.graph {
        walk(GraphPath::main(), graph, &mut visit);
    }
}

/// The graph at `path`, for rewriting.
pub fn graph_at_mut<'a>(model: &'a mut ModelProto, path: &GraphPath) -> Result<&'a mut GraphProto, PassError> {
    let mut graph = model.graph.as_mut().ok_or(PassError::NoGraph)?;
    for step in &path.0 {
        let attr = graph
            .node
            .get_mut(step.node)
            .and_then(|node| node.attribute.get_mut(step.attribute))
            .ok_or_else(|| PassError::SiteNotFound(path.to_string()))?;
        graph = attribute_graphs_mut(attr)
            .into_iter()
            .nth(step.graph)
            .ok_or_else(|| PassError::SiteNotFound(path.to_string()))?;
    }
    Ok(graph)
}

/// The version of the default (`ai.onnx`) operator set the model imports.
pub fn default_opset(model: &ModelProto) -> Result<i64, PassError> {
    model
        .opset_import
        .iter()
        .find(|o| o.domain().is_empty() || o.domain() == "ai.onnx")
        .map(|o| o.version())
        .ok_or(PassError::NoDefaultOpset)
}

/// Every tensor stored in the model, wherever it lives: initializers of every graph and the
/// values of `Constant` nodes (attribute `value`, and tensor-valued attributes in general).
pub fn for_each_stored_tensor_mut(model: &mut ModelProto, visit: &mut dyn FnMut(&mut TensorProto)) {
    fn walk(graph: &mut GraphProto, visit: &mut dyn FnMut(&mut TensorProto)) {
        graph.initializer.iter_mut().for_each(&mut *visit);
        for sparse in &mut graph.sparse_initializer {
            sparse.values.iter_mut().for_each(&mut *visit);
            sparse.indices.iter_mut().for_each(&mut *visit);
        }
        for node in &mut graph.node {
            for attr in &mut node.attribute {
                attr.t.iter_mut().for_each(&mut *visit);
                attr.tensors.iter_mut().for_each(&mut *visit);
                for sub in attribute_graphs_mut(attr) {
                    walk(sub, visit);
                }
            }
        }
    }
    if let Some(graph) = model.graph.as_mut() {
        walk(graph, visit);
    }
    for function in &mut model.functions {
        for node in &mut function.node {
            for attr in &mut node.attribute {
                attr.t.iter_mut().for_each(&mut *visit);
                attr.tensors.iter_mut().for_each(&mut *visit);
            }
        }
    }
}

/// The graph at `path`.
pub fn graph_at<'a>(model: &'a ModelProto, path: &GraphPath) -> Result<&'a GraphProto, PassError> {
    let mut graph = model.graph.as_ref().ok_or(PassError::NoGraph)?;
    for step in &path.0 {
        let attr = graph
            .node
            .get(step.node)
            .and_then(|node| node.attribute.get(step.attribute))
            .ok_or_else(|| PassError::SiteNotFound(path.to_string()))?;
        graph = attribute_graphs(attr)
            .into_iter()
            .nth(step.graph)
            .ok_or_else(|| PassError::SiteNotFound(path.to_string()))?;
    }
    Ok(graph)
}

/// The tensors a graph reads from its enclosing scopes: names used by its nodes (and by its
/// nested subgraphs) that it neither receives as inputs, holds as initializers, nor computes.
/// In order of first use.
pub fn free_variables(graph: &GraphProto) -> Vec<String> {
    let mut defined: std::collections::HashSet<&str> = graph.input.iter().map(|i| i.name()).collect();
    defined.extend(graph.initializer.iter().map(|t| t.name()));
    defined.extend(
        graph
            .sparse_initializer
            .iter()
            .filter_map(|s| s.values.as_ref())
            .map(|t| t.name()),
    );
    defined.extend(graph.node.iter().flat_map(|n| n.output.iter().map(String::as_str)));
    defined.insert("");
    let mut free: Vec<String> = Vec::new();
    let note = |name: &str, free: &mut Vec<String>| {
        if !defined.contains(name) && !free.iter().any(|f| f == name) {
            free.push(name.to_owned());
        }
    };
    for node in &graph.node {
        for input in &node.input {
            note(input, &mut free);
        }
        for attr in &node.attribute {
            for sub in attribute_graphs(attr) {
                for name in free_variables(sub) {
                    note(&name, &mut free);
                }
            }
        }
    }
    for output in &graph.output {
        note(output.name(), &mut free);
    }
    free
}
