//! Discovery: every activation the tool can bound, in the main graph and in every subgraph.
//! Today that is `Relu`; the site records enough to find the node again and to name what a
//! pass adds after it.

use crate::graph::{GraphPath, for_each_graph};
use crate::onnx::{ModelProto, NodeProto};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActivationKind {
    Relu,
}

impl ActivationKind {
    pub fn op_type(self) -> &'static str {
        match self {
            ActivationKind::Relu => "Relu",
        }
    }
}

/// One activation node: where it is, and the tensors it reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActivationSite {
    pub kind: ActivationKind,
    pub graph: GraphPath,
    /// Index of the node in its graph's node list.
    pub node: usize,
    /// The node's name; may be empty in the model.
    pub node_name: String,
    pub input: String,
    pub output: String,
}

impl ActivationSite {
    /// The stem for names added after this node: its name, or its output tensor's name.
    pub fn stem(&self) -> &str {
        if self.node_name.is_empty() {
            &self.output
        } else {
            &self.node_name
        }
    }

    /// A label for messages and reports: `Relu 'name' (main/If_1.then_branch)`.
    pub fn describe(&self) -> String {
        if self.graph.is_main() {
            format!("{} '{}'", self.kind.op_type(), self.stem())
        } else {
            format!("{} '{}' in {}", self.kind.op_type(), self.stem(), self.graph)
        }
    }
}

fn is_default_domain(node: &NodeProto) -> bool {
    node.domain().is_empty() || node.domain() == "ai.onnx"
}

/// Every well-formed `Relu` (one input, one output, default domain), parents before children,
/// in node order within a graph.
pub fn find_relus(model: &ModelProto) -> Vec<ActivationSite> {
    let mut sites = Vec::new();
    for_each_graph(model, |path, graph| {
        for (index, node) in graph.node.iter().enumerate() {
            let well_formed = node.input.len() == 1 && node.output.len() == 1 && !node.input[0].is_empty();
            if node.op_type() == "Relu" && is_default_domain(node) && well_formed {
                sites.push(ActivationSite {
                    kind: ActivationKind::Relu,
                    graph: path.clone(),
                    node: index,
                    node_name: node.name().to_owned(),
                    input: node.input[0].clone(),
                    output: node.output[0].clone(),
                });
            }
        }
    });
    sites
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{AttributeProto, GraphProto, attribute_proto::AttributeType};

    fn relu(name: &str, input: &str, output: &str) -> NodeProto {
        NodeProto {
            name: Some(name.into()),
            op_type: Some("Relu".into()),
            input: vec![input.into()],
            output: vec![output.into()],
            ..Default::default()
        }
    }

    #[test]
    fn finds_relus_in_main_graph_and_if_branches() {
        let branch = |n: &str| GraphProto {
            node: vec![relu(n, "x", &format!("{n}_out"))],
            ..Default::default()
        };
        let if_node = NodeProto {
            name: Some("cond".into()),
            op_type: Some("If".into()),
            input: vec!["c".into()],
            attribute: vec![
                AttributeProto {
                    name: Some("then_branch".into()),
                    r#type: Some(AttributeType::Graph as i32),
                    g: Some(branch("t")),
                    ..Default::default()
                },
                AttributeProto {
                    name: Some("else_branch".into()),
                    r#type: Some(AttributeType::Graph as i32),
                    g: Some(branch("e")),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let model = ModelProto {
            graph: Some(GraphProto {
                node: vec![relu("r0", "x", "y"), if_node],
                ..Default::default()
            }),
            ..Default::default()
        };
        let sites = find_relus(&model);
        let names: Vec<String> = sites.iter().map(|s| s.describe()).collect();
        assert_eq!(
            names,
            vec![
                "Relu 'r0'",
                "Relu 't' in main/cond.then_branch",
                "Relu 'e' in main/cond.else_branch"
            ]
        );
        assert_eq!(sites[2].graph.0[0].attribute, 1);
    }

    #[test]
    fn skips_other_domains_and_malformed_nodes() {
        let mut custom = relu("c", "x", "y");
        custom.domain = Some("com.example".into());
        let mut two_inputs = relu("t", "x", "z");
        two_inputs.input.push("w".into());
        let model = ModelProto {
            graph: Some(GraphProto {
                node: vec![custom, two_inputs],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(find_relus(&model).is_empty());
    }
}
