//! Discovery: every activation the tool can bound, in the main graph and in every subgraph,
//! as single operators or decomposed forms (`patterns`). A site records enough to find the
//! node that writes the activation's output again and to name what a pass adds after it.

use crate::graph::{GraphPath, for_each_graph};
use crate::onnx::ModelProto;
use crate::onnx::tensor_proto::DataType;
pub use crate::patterns::Kind as ActivationKind;
use crate::patterns::find_in_graph;

impl ActivationKind {
    /// Every kind `--activations all` means, in the order it lists them.
    pub const ALL: [ActivationKind; 11] = [
        ActivationKind::Relu,
        ActivationKind::LeakyRelu,
        ActivationKind::PRelu,
        ActivationKind::Clip,
        ActivationKind::HardSigmoid,
        ActivationKind::HardSwish,
        ActivationKind::Sigmoid,
        ActivationKind::Tanh,
        ActivationKind::Silu,
        ActivationKind::Gelu,
        ActivationKind::Norm,
    ];

    /// Kinds bounded only when named (`--activations all,logits,linear`): not activations,
    /// and adding them would change what `all` writes.
    pub const OPT_IN: [ActivationKind; 2] = [ActivationKind::Logits, ActivationKind::Linear];

    /// The name people read: the ONNX operator, or the usual name of a decomposed form.
    pub fn op_type(self) -> &'static str {
        match self {
            ActivationKind::Relu => "Relu",
            ActivationKind::LeakyRelu => "LeakyRelu",
            ActivationKind::PRelu => "PRelu",
            ActivationKind::Clip => "Clip",
            ActivationKind::HardSigmoid => "HardSigmoid",
            ActivationKind::HardSwish => "HardSwish",
            ActivationKind::Sigmoid => "Sigmoid",
            ActivationKind::Tanh => "Tanh",
            ActivationKind::Silu => "SiLU",
            ActivationKind::Gelu => "GELU",
            ActivationKind::Norm => "Norm",
            ActivationKind::Logits => "Logits",
            ActivationKind::Linear => "Linear",
        }
    }

    /// The smallest value the activation itself can produce (apart from NaN), when the function
    /// has a global minimum: no fault before it can push its output lower. A bound below at
    /// or under it is redundant. (A `Clip`'s depends on its `min`: see `nonnegative`.)
    pub fn floor(self) -> Option<f32> {
        match self {
            ActivationKind::Relu | ActivationKind::HardSigmoid | ActivationKind::Sigmoid => Some(0.0),
            // x * relu6(x + 3) / 6 at x = -1.5.
            ActivationKind::HardSwish => Some(-0.375),
            // x * sigmoid(x) at x = -1.27846.
            ActivationKind::Silu => Some(-0.278_464_54),
            // Exact GELU at x = -0.75179 gives -0.169971; the tanh form's minimum is -0.170041.
            ActivationKind::Gelu => Some(-0.170_041),
            ActivationKind::Tanh => Some(-1.0),
            ActivationKind::LeakyRelu
            | ActivationKind::PRelu
            | ActivationKind::Clip
            | ActivationKind::Norm
            | ActivationKind::Logits
            | ActivationKind::Linear => None,
        }
    }

    /// Every kind `--activations` can name: `ALL`, then `OPT_IN`.
    pub fn every() -> impl Iterator<Item = ActivationKind> {
        ActivationKind::ALL.into_iter().chain(ActivationKind::OPT_IN)
    }

    /// An activation function, not one of the opt-in kinds (logits, conv outputs).
    pub fn is_activation(self) -> bool {
        !ActivationKind::OPT_IN.contains(&self)
    }

    /// The least margin of a two-sided bound (`bound_from_range`: times the larger end's
    /// magnitude). Logits: a quarter, because a test sample's top score a little above every
    /// calibrated one is the prediction itself, and cutting it costs clean accuracy, while a
    /// flipped classifier weight moves a score by orders of magnitude
    /// (docs/results/precision_logits_2026-12-06.md).
    pub fn least_margin(self) -> f32 {
        match self {
            ActivationKind::Logits => 0.25,
            _ => 0.0,
        }
    }

    /// The name on the command line (`--activations`): the lowercase `op_type`.
    pub fn cli_name(self) -> String {
        self.op_type().to_ascii_lowercase()
    }
}

/// Which kinds to bound: `all`, or a comma-separated list of kinds (`all` among them stands
/// for every kind of `ALL`, e.g. `all,logits`).
pub fn parse_kinds(text: &str) -> Result<Vec<ActivationKind>, String> {
    let named = ActivationKind::every;
    let mut kinds = Vec::new();
    for part in text.split(',').map(str::trim) {
        let found: Vec<ActivationKind> = if part.eq_ignore_ascii_case("all") {
            ActivationKind::ALL.to_vec()
        } else {
            let kind = named()
                .find(|k| k.cli_name() == part.to_ascii_lowercase())
                .ok_or_else(|| {
                    let known: Vec<String> = named().map(|k| k.cli_name()).collect();
                    format!(
                        "unknown activation '{part}': use all, or a list of {}",
                        known.join(", ")
                    )
                })?;
            vec![kind]
        };
        for kind in found {
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
    }
    Ok(kinds)
}

/// One activation: where it is, and the tensors it reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActivationSite {
    pub kind: ActivationKind,
    /// The operator, or the decomposed form, e.g. `x * Sigmoid(x)`.
    pub form: &'static str,
    pub graph: GraphPath,
    /// Index (in its graph's node list) of the node that writes the activation's output.
    pub node: usize,
    /// That node's operator type.
    pub op_type: String,
    /// Every node of a decomposed form (just `node` for an operator).
    pub nodes: Vec<usize>,
    /// That node's name; may be empty in the model.
    pub node_name: String,
    pub input: String,
    pub output: String,
    /// The activation never produces a negative value (apart from NaN): one bound above does.
    pub nonnegative: bool,
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

/// Every activation of every kind `all` means (`ActivationKind::ALL`), parents before
/// children, in node order within a graph.
pub fn find_activations(model: &ModelProto) -> Vec<ActivationSite> {
    find_kinds(model, &ActivationKind::ALL)
}

/// Every site of every kind, the opt-in ones (`ActivationKind::OPT_IN`) included, in the
/// order of `find_activations`.
pub fn find_sites(model: &ModelProto) -> Vec<ActivationSite> {
    let mut sites = Vec::new();
    for_each_graph(model, |path, graph| {
        for m in find_in_graph(graph) {
            let node = *m.nodes.last().expect("a match has nodes");
            sites.push(ActivationSite {
                kind: m.kind,
                form: m.form,
                graph: path.clone(),
                node,
                op_type: graph.node[node].op_type().to_owned(),
                nodes: m.nodes,
                node_name: graph.node[node].name().to_owned(),
                input: m.input,
                output: m.output,
                nonnegative: m.nonnegative,
            });
        }
    });
    sites
}

/// The activations of the given kinds.
pub fn find_kinds(model: &ModelProto, kinds: &[ActivationKind]) -> Vec<ActivationSite> {
    find_sites(model)
        .into_iter()
        .filter(|s| kinds.contains(&s.kind))
        .collect()
}

/// The kinds `--activations` means when it is not given: `all`, and the logits when the
/// classifier computes in float16 or bfloat16 (its weights are stored so). There a flipped
/// weight bit makes a class score in the thousands; the logits' bound was measured free and
/// raised the recovery of the float16 fixtures from 81-93% to 94-96%
/// (docs/results/precision_logits_2026-12-06.md). A float32 or int8 model's default stays
/// `all`: float32 hardening writes the same bytes as before.
pub fn default_kinds(model: &ModelProto) -> Vec<ActivationKind> {
    let mut kinds = ActivationKind::ALL.to_vec();
    let Some(graph) = model.graph.as_ref() else {
        return kinds;
    };
    let half = |name: &str| {
        graph
            .initializer
            .iter()
            .find(|t| t.name() == name)
            .is_some_and(|t| [DataType::Float16 as i32, DataType::Bfloat16 as i32].contains(&t.data_type()))
    };
    let logits_in_half = find_kinds(model, &[ActivationKind::Logits])
        .iter()
        .filter(|s| s.graph.is_main())
        .any(|s| graph.node[s.node].input.get(1).is_some_and(|w| half(w)));
    if logits_in_half {
        kinds.push(ActivationKind::Logits);
    }
    kinds
}

/// Every well-formed `Relu` (one input, one output, default domain).
pub fn find_relus(model: &ModelProto) -> Vec<ActivationSite> {
    find_kinds(model, &[ActivationKind::Relu])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{AttributeProto, GraphProto, NodeProto, attribute_proto::AttributeType};

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

    fn op(op_type: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            name: Some(output.into()),
            op_type: Some(op_type.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    fn with_outputs(node: Vec<NodeProto>, outputs: &[&str]) -> ModelProto {
        let output = outputs
            .iter()
            .map(|name| crate::onnx::ValueInfoProto {
                name: Some(name.to_string()),
                ..Default::default()
            })
            .collect();
        ModelProto {
            graph: Some(GraphProto {
                node,
                output,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn logits_are_the_classifier_output_before_casts_quantization_and_softmax() {
        let logits = |model: &ModelProto| -> Vec<String> {
            find_kinds(model, &[ActivationKind::Logits])
                .iter()
                .map(|s| s.output.clone())
                .collect()
        };
        let head = |tail: Vec<NodeProto>| {
            let mut nodes = vec![op("Relu", &["x"], "h"), op("Gemm", &["h", "w"], "z")];
            nodes.extend(tail);
            nodes
        };
        // A float16 body with a float32 output; a QDQ pair and a softmax.
        let cast = with_outputs(head(vec![op("Cast", &["z"], "y")]), &["y"]);
        assert_eq!(logits(&cast), ["z"]);
        let qdq = head(vec![
            op("QuantizeLinear", &["z", "s"], "q"),
            op("DequantizeLinear", &["q", "s"], "dq"),
            op("Softmax", &["dq"], "y"),
        ]);
        assert_eq!(logits(&with_outputs(qdq, &["y"])), ["z"]);
        // The scores are the output themselves; the Relu is an activation, not logits.
        let plain = with_outputs(head(vec![]), &["z"]);
        assert_eq!(logits(&plain), ["z"]);
        assert_eq!(find_kinds(&plain, &ActivationKind::ALL).len(), 1);
        // Not through an Add, not when the path is read elsewhere too.
        let added = with_outputs(head(vec![op("Add", &["z", "b"], "y")]), &["y"]);
        assert!(logits(&added).is_empty());
        let read_twice = with_outputs(head(vec![op("Cast", &["z"], "y"), op("Neg", &["z"], "n")]), &["y"]);
        assert!(logits(&read_twice).is_empty());
    }

    #[test]
    fn linear_bottlenecks_are_convs_read_only_by_a_sum_or_the_next_layer() {
        let linear = |nodes: Vec<NodeProto>, outputs: &[&str]| -> Vec<String> {
            find_kinds(&with_outputs(nodes, outputs), &[ActivationKind::Linear])
                .iter()
                .map(|s| s.output.clone())
                .collect()
        };
        // A projection entering a residual sum, and one entering the next block's conv.
        let block = vec![
            op("Conv", &["x", "w1"], "p"),
            op("Add", &["p", "x"], "s"),
            op("Conv", &["s", "w2"], "q"),
            op("Conv", &["q", "w3"], "e"),
            op("Relu", &["e"], "r"),
        ];
        assert_eq!(linear(block, &["r"]), ["p", "q"]);
        // Not before an activation, a normalisation or a quantizer, not a graph output, and
        // not the logits.
        for reader in ["Relu", "BatchNormalization", "QuantizeLinear"] {
            let nodes = vec![op("Conv", &["x", "w"], "c"), op(reader, &["c"], "y")];
            assert!(linear(nodes, &["y"]).is_empty(), "{reader}");
        }
        let mixed = vec![
            op("Conv", &["x", "w"], "c"),
            op("Add", &["c", "x"], "s"),
            op("Relu", &["c"], "r"),
        ];
        assert!(linear(mixed, &["s", "r"]).is_empty());
        assert!(linear(vec![op("Conv", &["x", "w"], "c")], &["c"]).is_empty());
        // Not among the default kinds.
        let sum = with_outputs(vec![op("Conv", &["x", "w"], "c"), op("Add", &["c", "x"], "s")], &["s"]);
        assert!(find_kinds(&sum, &ActivationKind::ALL).is_empty());
    }

    #[test]
    fn the_default_adds_logits_only_where_the_classifier_weights_are_float16() {
        let model = |data_type: DataType| {
            let mut m = with_outputs(vec![op("Relu", &["x"], "h"), op("Gemm", &["h", "w"], "z")], &["z"]);
            let graph = m.graph.as_mut().unwrap();
            graph.initializer.push(crate::onnx::TensorProto {
                name: Some("w".into()),
                data_type: Some(data_type as i32),
                ..Default::default()
            });
            m
        };
        assert_eq!(default_kinds(&model(DataType::Float)), ActivationKind::ALL);
        for half in [DataType::Float16, DataType::Bfloat16] {
            assert_eq!(default_kinds(&model(half)).last(), Some(&ActivationKind::Logits));
        }
        // int8: the Gemm reads a DequantizeLinear's output, not a float16 initializer.
        let mut qdq = model(DataType::Int8);
        let graph = qdq.graph.as_mut().unwrap();
        graph.node.insert(0, op("DequantizeLinear", &["w", "s"], "wf"));
        graph.node[2].input[1] = "wf".into();
        assert_eq!(default_kinds(&qdq), ActivationKind::ALL);
    }

    #[test]
    fn all_means_the_activations_and_logits_are_named() {
        assert_eq!(parse_kinds("all").unwrap(), ActivationKind::ALL);
        let with_logits = parse_kinds("all,logits").unwrap();
        assert_eq!(with_logits.len(), ActivationKind::ALL.len() + 1);
        assert_eq!(with_logits.last(), Some(&ActivationKind::Logits));
        assert_eq!(
            parse_kinds("relu, logits, relu").unwrap(),
            [ActivationKind::Relu, ActivationKind::Logits]
        );
        let error = parse_kinds("relu,softmax").unwrap_err();
        assert!(error.contains("'softmax'") && error.contains("logits"), "{error}");
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
