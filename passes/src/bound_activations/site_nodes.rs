//! What every form shares to add its nodes at a site: the request being emitted (`Emit`), fresh
//! names after the activation (`SiteNames`), node builders, and `rewire`, which puts the added
//! nodes after the activation's node, so that its output keeps its name.

use super::{BoundRequest, Mode};
use crate::activations::ActivationSite;
use crate::names::NameAllocator;
use crate::onnx::{AttributeProto, GraphProto, NodeProto, attribute_proto};

/// One request's emission: the graph holding its site, what to bound, and what every form
/// needs of the model (the mode, the opset, whether added initializers are also listed as graph
/// inputs, the names already taken).
pub(super) struct Emit<'a> {
    pub(super) graph: &'a mut GraphProto,
    pub(super) request: &'a BoundRequest,
    pub(super) mode: Mode,
    pub(super) opset: i64,
    pub(super) declare_inputs: bool,
    pub(super) names: SiteNames<'a>,
}

/// Fresh names for what one site's bound adds: `<activation>/fitact/<role>`, made unique
/// against every name in the model.
pub(super) struct SiteNames<'a> {
    pub(super) names: &'a mut NameAllocator,
    pub(super) stem: String,
}

impl SiteNames<'_> {
    pub(super) fn fresh(&mut self, role: &str) -> String {
        self.names.fresh(&format!("{}/{role}", self.stem))
    }
}

/// A one-output node of the default domain (the integer pass builds its nodes with it too).
pub(crate) fn node(op_type: &str, name: String, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: Some(op_type.to_owned()),
        name: Some(name),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: vec![output.to_owned()],
        ..Default::default()
    }
}

/// `ThresholdedRelu(input)` (x where x > alpha, else 0) writing `output`.
pub(super) fn thresholded_relu(name: String, input: &str, output: &str, alpha: f32) -> NodeProto {
    let mut threshold = node("ThresholdedRelu", name, &[input], output);
    threshold.attribute.push(float_attribute("alpha", alpha));
    threshold
}

pub(super) fn float_attribute(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_owned()),
        f: Some(value),
        r#type: Some(attribute_proto::AttributeType::Float as i32),
        ..Default::default()
    }
}

/// The activation's node now writes `raw`, and `nodes` (which read it) follow it; returns the
/// names of the activation's node and of `nodes`. The activation's node is named (by
/// `fresh_name`) if it was not, so that the nodes whose outputs changed can be found by name.
pub(super) fn rewire(
    graph: &mut GraphProto,
    site: &ActivationSite,
    raw: &str,
    nodes: Vec<NodeProto>,
    fresh_name: impl FnOnce() -> String,
) -> Vec<String> {
    let unnamed = graph.node[site.node].name().is_empty();
    let name = unnamed.then(fresh_name);
    let activation = &mut graph.node[site.node];
    if let Some(name) = name {
        activation.name = Some(name);
    }
    activation.output[0] = raw.to_owned();
    let mut node_names = vec![activation.name().to_owned()];
    node_names.extend(nodes.iter().map(|n| n.name().to_owned()));
    graph.node.splice(site.node + 1..site.node + 1, nodes);
    node_names
}

#[cfg(test)]
mod tests {
    use crate::bound_activations::Bound;
    use crate::bound_activations::Mode;
    use crate::bound_activations::tests::run;

    #[test]
    fn names_follow_the_relu_and_never_collide() {
        let (m, report) = run(13, 7, Mode::Zero, Bound::scalar(1.0));
        let first = &report.applied[0];
        assert_eq!(first.bound_initializer, "r/fitact/bound_1");
        assert_eq!(first.nodes, vec!["r/fitact/le", "r/fitact/where", "r/fitact/max"]);
        // The unnamed Relu is named after its output tensor.
        assert_eq!(report.applied[1].bound_initializer, "r/fitact/bound/fitact/bound");
        let graph = m.graph.as_ref().unwrap();
        // Outputs keep their names, so consumers are untouched.
        assert_eq!(graph.node[2].output, vec!["y"]);
        assert_eq!(graph.node[5].output, vec!["r/fitact/bound"]);
        let mut names: Vec<&str> = graph.initializer.iter().map(|t| t.name()).collect();
        names.extend(graph.node.iter().map(|n| n.name()));
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        assert!(graph.input.is_empty(), "IR 7 does not list initializers as inputs");
    }
}
