//! # quantized_activations — the activations of a statically quantized model, as integers
//!
//! **Before**: a model quantized statically (onnxruntime's `quantize_static`, a QAT export),
//! in either form:
//! - QDQ: `Conv -> QuantizeLinear -> DequantizeLinear -> ...`; the quantizer removed the
//!   `Relu` after a Conv, Gemm, MatMul or Add and let the activation range start at the zero
//!   point instead (uint8 with zero point 0, or int8 with -128); an activation it has no
//!   integer kernel for (`HardSwish`, `Sigmoid`...) stays float between a `DequantizeLinear`
//!   and a `QuantizeLinear`;
//! - QOperator: `QLinearConv`, `QLinearMatMul`, `QGemm`, `QLinearAdd` write integers, and
//!   a `Relu` after them is absorbed the same way (their output zero point is the type's
//!   minimum); `QLinearSigmoid`, `QLinearLeakyRelu` are activations of their own.
//!
//! **After** (nothing is changed; this finds): one site per integer tensor that holds an
//! activation: the output of the `QuantizeLinear` after an absorbed `Relu` or after a float
//! activation, or of the QOperator node. The site's output is that integer tensor, so the
//! model stays integer end to end when it is bounded there (`bound_quantized`). A float
//! activation whose only reader is such a `QuantizeLinear` is bounded at the integer tensor
//! instead, never twice.
//!
//! **When it applies**: the main graph; a zero point given as a one-element initializer of
//! type uint8 or int8; a `QuantizeLinear` whose input a node writes (not a graph input).

use crate::activations::{ActivationKind, ActivationSite, find_activations};
use crate::graph::GraphPath;
use crate::onnx::{GraphProto, ModelProto, NodeProto, TensorProto};

pub const UINT8: i32 = 2;
pub const INT8: i32 = 3;

/// One activation held as integers, with what its emission needs.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedSite {
    pub site: ActivationSite,
    /// UINT8 or INT8.
    pub elem_type: i32,
    /// The integer that stands for 0.
    pub zero_point: i64,
}

/// Operators whose float output the quantizer may have folded a `Relu` into.
const ABSORBS_RELU: [&str; 4] = ["Conv", "Gemm", "MatMul", "Add"];

/// QOperator nodes whose output may carry an absorbed `Relu`: the index of their output
/// zero point.
fn qlinear_zero_point_index(op_type: &str) -> Option<usize> {
    match op_type {
        "QLinearConv" | "QLinearMatMul" | "QLinearAdd" | "QLinearMul" => Some(7),
        "QGemm" => Some(8),
        _ => None,
    }
}

/// QOperator activations: the index of their output zero point.
fn qlinear_activation(op_type: &str) -> Option<(ActivationKind, usize)> {
    match op_type {
        "QLinearSigmoid" => Some((ActivationKind::Sigmoid, 4)),
        "QLinearLeakyRelu" => Some((ActivationKind::LeakyRelu, 4)),
        _ => None,
    }
}

/// Whether the model holds quantized operators (then its activations are found here).
pub fn is_quantized(model: &ModelProto) -> bool {
    model.graph.as_ref().is_some_and(|g| {
        g.node.iter().any(|n| {
            n.op_type() == "QuantizeLinear"
                || qlinear_zero_point_index(n.op_type()).is_some()
                || qlinear_activation(n.op_type()).is_some()
        })
    })
}

/// Every integer activation of the main graph, in node order.
pub fn find_quantized(model: &ModelProto) -> Vec<QuantizedSite> {
    let Some(graph) = model.graph.as_ref() else {
        return Vec::new();
    };
    let float_sites = find_activations(model);
    let mut found = Vec::new();
    for (index, node) in graph.node.iter().enumerate() {
        let site = match node.op_type() {
            "QuantizeLinear" => after_quantize(graph, index, &float_sites),
            op => match (qlinear_zero_point_index(op), qlinear_activation(op)) {
                (Some(zp), _) => zero_point(graph, node, zp)
                    .filter(|(t, z)| *z == type_minimum(*t))
                    .map(|(t, z)| (ActivationKind::Relu, "absorbed Relu, in integers", t, z)),
                (None, Some((kind, zp))) => zero_point(graph, node, zp).map(|(t, z)| (kind, "in integers", t, z)),
                (None, None) => None,
            },
        };
        if let Some((kind, form, elem_type, zero_point)) = site {
            found.push(QuantizedSite {
                site: integer_site(node, index, kind, form),
                elem_type,
                zero_point,
            });
        }
    }
    found
}

/// The activation a `QuantizeLinear` at `index` quantizes: a float activation it alone reads
/// (not logits), a `Relu` absorbed into a range that starts at the type's minimum, or else a
/// `Conv`'s output (`Linear`).
fn after_quantize(
    graph: &GraphProto,
    index: usize,
    float_sites: &[ActivationSite],
) -> Option<(ActivationKind, &'static str, i32, i64)> {
    let node = &graph.node[index];
    let (elem_type, zero) = zero_point(graph, node, 2)?;
    let input = node.input.first()?;
    let producer = graph.node.iter().find(|n| n.output.iter().any(|o| o == input))?;
    // Logits stay in float: their bound is two-sided and leaves room above the calibrated
    // scores, which an integer bound capped at the type's maximum cannot.
    let float = float_sites.iter().find(|s| {
        s.graph.is_main() && &s.output == input && readers(graph, input) == 1 && s.kind != ActivationKind::Logits
    });
    match float {
        Some(site) => Some((site.kind, "in integers", elem_type, zero)),
        None if ABSORBS_RELU.contains(&producer.op_type()) && zero == type_minimum(elem_type) => {
            Some((ActivationKind::Relu, "absorbed Relu, in integers", elem_type, zero))
        }
        // A conv no activation follows (a linear bottleneck, a residual branch): a fault in
        // its int32 bias saturates a whole channel, which only a bound on both sides sees.
        None if producer.op_type() == "Conv" => {
            Some((ActivationKind::Linear, "conv output, in integers", elem_type, zero))
        }
        None => None,
    }
}

/// How many node inputs and graph outputs read `tensor`.
fn readers(graph: &GraphProto, tensor: &str) -> usize {
    let inputs = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter())
        .filter(|i| *i == tensor)
        .count();
    inputs + graph.output.iter().filter(|o| o.name() == tensor).count()
}

/// The type and value of the zero point at input `at` of `node`: a one-element uint8 or int8
/// initializer.
fn zero_point(graph: &GraphProto, node: &NodeProto, at: usize) -> Option<(i32, i64)> {
    let name = node.input.get(at).filter(|n| !n.is_empty())?;
    let tensor = graph.initializer.iter().find(|t| t.name() == name)?;
    let value = single_integer(tensor)?;
    Some((tensor.data_type(), value))
}

/// The value of a one-element uint8 or int8 tensor.
fn single_integer(tensor: &TensorProto) -> Option<i64> {
    let elements: i64 = tensor.dims.iter().product();
    if elements != 1 {
        return None;
    }
    let byte = match tensor.raw_data.as_deref() {
        Some([b]) => *b as i32,
        Some(_) => return None,
        None => *tensor.int32_data.first()?,
    };
    match tensor.data_type() {
        UINT8 => Some(i64::from(byte as u8)),
        INT8 => Some(i64::from(byte as u8 as i8)),
        _ => None,
    }
}

/// The smallest value of UINT8 or INT8.
pub fn type_minimum(elem_type: i32) -> i64 {
    if elem_type == INT8 { -128 } else { 0 }
}

/// The largest value of UINT8 or INT8.
pub fn type_maximum(elem_type: i32) -> i64 {
    if elem_type == INT8 { 127 } else { 255 }
}

fn integer_site(node: &NodeProto, index: usize, kind: ActivationKind, form: &'static str) -> ActivationSite {
    ActivationSite {
        kind,
        form,
        graph: GraphPath(Vec::new()),
        node: index,
        op_type: node.op_type().to_owned(),
        nodes: vec![index],
        node_name: node.name().to_owned(),
        input: node.input[0].clone(),
        output: node.output[0].clone(),
        // The integer type bounds an activation below: one bound above does. A conv's
        // output can be wrong on either side.
        nonnegative: kind != ActivationKind::Linear,
    }
}

/// The activations of the kinds asked, wherever the model holds them: for a quantized model,
/// its integer activations and the float ones no `QuantizeLinear` takes over; for any other,
/// `find_kinds`.
pub fn sites_of(model: &ModelProto, kinds: &[ActivationKind]) -> Vec<ActivationSite> {
    if !is_quantized(model) {
        return crate::activations::find_kinds(model, kinds);
    }
    let (mut float, integer) = quantized_model_sites(model, kinds);
    float.extend(integer.into_iter().map(|q| q.site));
    float.sort_by_key(|s| (s.graph.0.len(), s.node));
    float
}

/// The sites a quantized model is bounded at: its integer activations, and the float ones no
/// `QuantizeLinear` takes over (a float island, bounded in float).
pub fn quantized_model_sites(
    model: &ModelProto,
    kinds: &[ActivationKind],
) -> (Vec<ActivationSite>, Vec<QuantizedSite>) {
    let integer: Vec<QuantizedSite> = find_quantized(model)
        .into_iter()
        .filter(|q| kinds.contains(&q.site.kind))
        .collect();
    let graph = model.graph.as_ref();
    let taken_over = |s: &ActivationSite| {
        s.graph.is_main()
            && graph.is_some_and(|g| {
                g.node
                    .iter()
                    .any(|n| n.op_type() == "QuantizeLinear" && n.input.first() == Some(&s.output))
                    && readers(g, &s.output) == 1
            })
            && integer.iter().any(|q| q.site.input == s.output)
    };
    let float = crate::activations::find_kinds(model, kinds)
        .into_iter()
        .filter(|s| !taken_over(s))
        .collect();
    (float, integer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::GraphProto;

    fn node(op: &str, name: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            name: Some(name.into()),
            input: inputs.iter().map(|s| (*s).into()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    fn scalar(name: &str, elem_type: i32, byte: u8) -> TensorProto {
        TensorProto {
            name: Some(name.into()),
            data_type: Some(elem_type),
            raw_data: Some(vec![byte]),
            ..Default::default()
        }
    }

    /// conv -> Q(zp 0) -> DQ -> hardswish -> Q(zp 10) -> DQ -> conv2 -> Q(zp 128) -> DQ.
    fn qdq_model() -> ModelProto {
        ModelProto {
            graph: Some(GraphProto {
                node: vec![
                    node("Conv", "conv", &["x", "w"], "c"),
                    node("QuantizeLinear", "q1", &["c", "s", "zp0"], "cq"),
                    node("DequantizeLinear", "d1", &["cq", "s", "zp0"], "cd"),
                    node("HardSwish", "hs", &["cd"], "h"),
                    node("QuantizeLinear", "q2", &["h", "s", "zp10"], "hq"),
                    node("DequantizeLinear", "d2", &["hq", "s", "zp10"], "hd"),
                    node("Conv", "conv2", &["hd", "w"], "c2"),
                    node("QuantizeLinear", "q3", &["c2", "s", "zp128"], "c2q"),
                    node("DequantizeLinear", "d3", &["c2q", "s", "zp128"], "y"),
                ],
                initializer: vec![
                    scalar("zp0", UINT8, 0),
                    scalar("zp10", UINT8, 10),
                    scalar("zp128", UINT8, 128),
                ],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn absorbed_relus_and_quantized_float_activations_are_integer_sites() {
        let model = qdq_model();
        assert!(is_quantized(&model));
        let found = find_quantized(&model);
        let seen: Vec<(&str, ActivationKind, i64)> = found
            .iter()
            .map(|q| (q.site.output.as_str(), q.site.kind, q.zero_point))
            .collect();
        // conv2's range starts at 128: no Relu was absorbed there, its output is `Linear`
        // (bounded only when asked for).
        assert_eq!(
            seen,
            [
                ("cq", ActivationKind::Relu, 0),
                ("hq", ActivationKind::HardSwish, 10),
                ("c2q", ActivationKind::Linear, 128)
            ]
        );
        let (float, integer) = quantized_model_sites(&model, &ActivationKind::ALL);
        assert!(float.is_empty(), "{float:?}");
        assert_eq!(integer.len(), 2);
        let (_, linear) = quantized_model_sites(&model, &[ActivationKind::Linear]);
        assert_eq!(linear.len(), 1);
        let (_, relus) = quantized_model_sites(&model, &[ActivationKind::Relu]);
        assert_eq!(relus.len(), 1);
    }

    #[test]
    fn qoperator_outputs_with_the_minimum_zero_point_are_absorbed_relus() {
        let conv = |name: &str, zp: &str, out: &str| {
            node("QLinearConv", name, &["x", "xs", "xz", "w", "ws", "wz", "ys", zp], out)
        };
        let model = ModelProto {
            graph: Some(GraphProto {
                node: vec![conv("a", "zp0", "ya"), conv("b", "zp7", "yb")],
                initializer: vec![scalar("zp0", INT8, 0x80), scalar("zp7", UINT8, 7)],
                ..Default::default()
            }),
            ..Default::default()
        };
        let found = find_quantized(&model);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].site.output.as_str(), found[0].elem_type, found[0].zero_point),
            ("ya", INT8, -128)
        );
    }
}
