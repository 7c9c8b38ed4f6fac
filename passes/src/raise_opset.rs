//! # raise_opset — import the default domain at opset 14 where 14 reads every node as before
//!
//! **Before**: a model importing `ai.onnx` at opset 12 or 13.
//!
//! **After**: the same model importing it at 14; no node, attribute, tensor or other import
//! changes. Why: `Mul`/`Sub`/`Add` take uint8 from 14, so `bound_quantized` can emit its zero
//! bound in the cheap mask form there instead of `Where`.
//!
//! **When it applies** (all of it, or the model is left as it is with every reason): opset 12
//! or 13, IR version 7 or later (opset 14's), no local functions or training info (they carry
//! imports and graphs of their own), and no default-domain node, in the main graph or any
//! subgraph, that a later version reads differently. The operators whose definition changed
//! from 12 to 14 (`onnx.defs`, onnx 1.23) and what that means here:
//! - 13 adds types (bfloat16) to most of its 79 new versions, 14 to Add, Sub, Mul, Div, Relu,
//!   Identity and CumSum: the same values on the types a valid older model uses.
//! - 14 adds `allowzero` to Reshape and `layout` to GRU, LSTM and RNN, defaulting to the old
//!   behaviour; 13 adds `axis` to QuantizeLinear/DequantizeLinear, whose opset-10 scales are
//!   scalars (per-axis scales were not valid before 13): the same.
//! - 14: BatchNormalization's optional outputs 2-5 (training statistics in version 9) become
//!   the running mean and variance of `training_mode = 1`: refused with more than one output.
//! - 14 defines HardSwish and Trilu: a default-domain node of either name meant no standard
//!   operator before: refused.
//! - From 12 only (13's changes): Softmax, LogSoftmax and Hardmax went from a 2-D view at
//!   `axis` (default 1) to one axis (default -1), the same only with `axis = -1` given;
//!   ReduceSum's `axes`, Split's `split` and Squeeze's / Unsqueeze's `axes` moved from
//!   attributes to inputs; Resize dropped `tf_half_pixel_for_nn`: each refused where it applies.

use crate::error::PassError;
use crate::graph::{GraphPath, default_opset, for_each_graph};
use crate::onnx::{ModelProto, NodeProto};

/// The opset this pass raises to.
pub const RAISED: i64 = 14;

/// What raising the opset did (or would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Raise {
    /// The default domain goes from `from` to 14.
    Raised { from: i64 },
    /// Already at 14 or later: nothing to do.
    Unneeded { opset: i64 },
    /// Left as it is: why, one line per reason.
    Refused { opset: i64, reasons: Vec<String> },
}

/// Raises `model`'s default-domain opset to 14 when 14 reads it as before; else leaves it.
pub fn raise_opset(model: &mut ModelProto) -> Result<Raise, PassError> {
    let plan = plan_raise(model)?;
    if let Raise::Raised { .. } = plan {
        for import in &mut model.opset_import {
            if is_default(import.domain()) {
                import.version = Some(RAISED);
            }
        }
    }
    Ok(plan)
}

/// What `raise_opset` would do to `model`, without changing it.
pub fn plan_raise(model: &ModelProto) -> Result<Raise, PassError> {
    let opset = default_opset(model)?;
    if opset >= RAISED {
        return Ok(Raise::Unneeded { opset });
    }
    let reasons = blockers(model, opset);
    Ok(if reasons.is_empty() {
        Raise::Raised { from: opset }
    } else {
        Raise::Refused { opset, reasons }
    })
}

fn is_default(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

/// Every reason the model cannot move to 14 unchanged in meaning.
fn blockers(model: &ModelProto, opset: i64) -> Vec<String> {
    if opset < 12 {
        return vec![format!(
            "opset {opset} is older than 12 (13 changed Squeeze, Unsqueeze, ReduceSum, Split, Softmax; only 12 and 13 are checked)"
        )];
    }
    let mut reasons = Vec::new();
    if model.ir_version() < 7 {
        reasons.push(format!("IR version {} is older than 7, opset 14's", model.ir_version()));
    }
    if !model.functions.is_empty() {
        reasons.push(format!(
            "{} local function(s) import opsets of their own",
            model.functions.len()
        ));
    }
    if !model.training_info.is_empty() {
        reasons.push("the model carries training info (graphs not checked)".to_owned());
    }
    for_each_graph(model, |path, graph| {
        for node in graph.node.iter().filter(|n| is_default(n.domain())) {
            if let Some(why) = read_differently(node, opset) {
                reasons.push(describe(node, path, why));
            }
        }
    });
    reasons
}

fn describe(node: &NodeProto, path: &GraphPath, why: &str) -> String {
    let place = if path.is_main() {
        String::new()
    } else {
        format!(" in {path}")
    };
    format!("{} '{}'{place}: {why}", node.op_type(), node.name())
}

/// Why opset 14 would read `node` (of a model at `opset`) differently, if it would.
fn read_differently(node: &NodeProto, opset: i64) -> Option<&'static str> {
    let has = |name: &str| node.attribute.iter().any(|a| a.name() == name);
    let from_12 = opset == 12;
    match node.op_type() {
        "BatchNormalization" if node.output.iter().filter(|o| !o.is_empty()).count() > 1 => {
            Some("training outputs, which 14 defines for training_mode = 1 only")
        }
        "HardSwish" | "Trilu" => Some("no standard operator before 14, one from 14"),
        "Softmax" | "LogSoftmax" | "Hardmax" if from_12 && int_attribute(node, "axis") != Some(-1) => {
            Some("13 reads axis as one axis (default -1), 11 as a 2-D view (default 1)")
        }
        "ReduceSum" | "Squeeze" | "Unsqueeze" if from_12 && has("axes") => Some("13 takes axes as an input"),
        "Split" if from_12 && has("split") => Some("13 takes split as an input"),
        "Resize"
            if from_12 && string_attribute(node, "coordinate_transformation_mode") == Some("tf_half_pixel_for_nn") =>
        {
            Some("13 has no tf_half_pixel_for_nn")
        }
        _ => None,
    }
}

fn int_attribute(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name() == name).and_then(|a| a.i)
}

fn string_attribute<'n>(node: &'n NodeProto, name: &str) -> Option<&'n str> {
    node.attribute
        .iter()
        .find(|a| a.name() == name)
        .and_then(|a| a.s.as_deref())
        .and_then(|s| std::str::from_utf8(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{AttributeProto, GraphProto, OperatorSetIdProto, attribute_proto::AttributeType};

    fn node(op: &str, name: &str, outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            name: Some(name.into()),
            input: vec!["x".into()],
            output: outputs.iter().map(|s| (*s).into()).collect(),
            ..Default::default()
        }
    }

    fn int(name: &str, value: i64) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            i: Some(value),
            r#type: Some(AttributeType::Int as i32),
            ..Default::default()
        }
    }

    fn model(opset: i64, nodes: Vec<NodeProto>) -> ModelProto {
        ModelProto {
            ir_version: Some(7),
            opset_import: vec![
                OperatorSetIdProto {
                    domain: Some(String::new()),
                    version: Some(opset),
                },
                OperatorSetIdProto {
                    domain: Some("com.microsoft".into()),
                    version: Some(1),
                },
            ],
            graph: Some(GraphProto {
                node: nodes,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A QDQ convolution with the ops whose version 14 changed, used as 13 and 14 read alike.
    fn qdq_13() -> ModelProto {
        let mut reshape = node("Reshape", "reshape", &["r"]);
        reshape.input.push("shape".into());
        model(
            13,
            vec![
                node("DequantizeLinear", "dq", &["d"]),
                node("Conv", "conv", &["c"]),
                node("BatchNormalization", "bn", &["b"]),
                node("QuantizeLinear", "q", &["q"]),
                node("Add", "add", &["a"]),
                reshape,
                node("Relu", "relu", &["y"]),
            ],
        )
    }

    #[test]
    fn a_model_14_reads_alike_is_raised_and_nothing_else_changes() {
        let mut m = qdq_13();
        let before = m.clone();
        assert_eq!(raise_opset(&mut m), Ok(Raise::Raised { from: 13 }));
        assert_eq!(m.opset_import[0].version, Some(14));
        // Only the default domain's version moved.
        m.opset_import[0].version = Some(13);
        assert_eq!(m, before);
        // Opset 12 with Softmax over the last axis given explicitly, and an opset 14 model.
        let mut softmax = node("Softmax", "softmax", &["s"]);
        softmax.attribute.push(int("axis", -1));
        let mut old = model(12, vec![softmax, node("Squeeze", "squeeze", &["z"])]);
        assert_eq!(raise_opset(&mut old), Ok(Raise::Raised { from: 12 }));
        let mut new = model(17, Vec::new());
        assert_eq!(raise_opset(&mut new), Ok(Raise::Unneeded { opset: 17 }));
        assert_eq!(new.opset_import[0].version, Some(17));
    }

    /// The reasons `m` is refused, after checking it was left as it was.
    fn refused(mut m: ModelProto) -> Vec<String> {
        let before = m.clone();
        let raise = raise_opset(&mut m).unwrap();
        assert_eq!(m, before, "a refused model is left as it is");
        match raise {
            Raise::Refused { reasons, .. } => reasons,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn nodes_14_reads_differently_are_refused_with_their_reasons() {
        // BatchNormalization with training outputs, inside an If branch.
        let branch = GraphProto {
            node: vec![node("BatchNormalization", "bn_train", &["y", "mean", "var"])],
            ..Default::default()
        };
        let mut branching = node("If", "if", &["o"]);
        branching.attribute.push(AttributeProto {
            name: Some("then_branch".into()),
            g: Some(branch),
            r#type: Some(AttributeType::Graph as i32),
            ..Default::default()
        });
        let mut m = qdq_13();
        m.graph.as_mut().unwrap().node.push(branching);
        let reasons = refused(m);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].starts_with("BatchNormalization 'bn_train' in main/if.then_branch: training outputs"));
        // HardSwish in the default domain at 13, and 13's changes read from 12.
        assert!(refused(model(13, vec![node("HardSwish", "hs", &["h"])]))[0].contains("no standard operator"));
        let mut squeeze = node("Squeeze", "squeeze", &["z"]);
        squeeze.attribute.push(int("axes", 0));
        let reasons = refused(model(12, vec![node("Softmax", "softmax", &["s"]), squeeze]));
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        // The same nodes at 13 are already read as 13 reads them.
        let mut squeeze = node("Squeeze", "squeeze", &["z"]);
        squeeze.input.push("axes".into());
        let mut at_13 = model(13, vec![node("Softmax", "softmax", &["s"]), squeeze]);
        assert_eq!(raise_opset(&mut at_13), Ok(Raise::Raised { from: 13 }));
        // Too old a model or IR.
        assert!(refused(model(11, Vec::new()))[0].contains("older than 12"));
        let mut ir6 = qdq_13();
        ir6.ir_version = Some(6);
        assert!(refused(ir6)[0].contains("IR version 6"));
    }
}
