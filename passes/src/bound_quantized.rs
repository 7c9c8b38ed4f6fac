//! # bound_quantized — bound an integer activation in its own integers
//!
//! **Before**: an integer activation `q` (uint8 or int8) found by `quantized_activations`:
//! the output of a `QuantizeLinear` or of a QOperator node `P`.
//!
//! **After**: `P` writes `q_raw`, and
//! - zero mode: `q = Where(LessOrEqual(q_raw, Bq), q_raw, Z)`, where `Bq` is the bound in the
//!   activation's integers and `Z` its zero point (the integer that stands for 0): a value
//!   above the bound reads as 0, as FitAct's zero-above does in float. On uint8 from opset 14
//!   (`Mul`/`Sub`/`Add` take uint8 there) the same values come from a mask, cheaper in
//!   onnxruntime (1.29x the int8 model instead of 1.50x on resnet_qdq,
//!   docs/results/precision_resilience_2026-12-05.md): `m = Cast(LessOrEqual(q_raw, Bq), UINT8)`,
//!   `q = Mul(q_raw, m)` when `Z` is 0, else `q = Add(Mul(Sub(q_raw, Z), m), Z)` (uint8 wraps
//!   modulo 256, so this is `q_raw` where `m` is 1 and `Z` where it is 0);
//! - saturate mode: `q = Min(q_raw, Bq)`;
//! - with a bound below `Lq` too (a conv's output, `Linear`): `q = Where(Or(Less(q_raw, Lq),
//!   Greater(q_raw, Bq)), Z, q_raw)`, or `Max(Min(q_raw, Bq), Lq)` to saturate.
//!
//! Every reader of `q` (the next `DequantizeLinear`, a QOperator node) is unchanged, so
//! runtimes keep their integer kernels (onnxruntime fuses `DequantizeLinear -> Conv ->
//! QuantizeLinear` into `QLinearConv` whatever writes the `DequantizeLinear`'s input). `Bq`
//! has the shape of a float bound (`[C, 1, 1]` per channel, `[]` per layer) and the
//! activation's type; the caller gives it as integers (the largest calibrated integer).
//!
//! **When it applies**: opset 12 or later (`LessOrEqual`; `Min` on 8-bit integers); the node
//! at the site still writes the site's tensor. Otherwise the request is skipped with its
//! reason.

use crate::activations::ActivationSite;
use crate::bound_activations::{Applied, Bound, Mode, PassReport, Skipped, node};
use crate::error::PassError;
use crate::graph::default_opset;
use crate::names::NameAllocator;
use crate::onnx::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, attribute_proto};
use crate::quantized_activations::{QuantizedSite, UINT8, type_maximum, type_minimum};

/// What to bound: an integer site and its bound, in its integers.
#[derive(Debug, Clone)]
pub struct QuantizedRequest {
    pub site: QuantizedSite,
    pub bound: Bound,
}

/// Bounds every request in the integer domain; a request that does not match is skipped.
pub fn bound_quantized(
    model: &mut ModelProto,
    requests: &[QuantizedRequest],
    mode: Mode,
) -> Result<PassReport, PassError> {
    let opset = default_opset(model)?;
    if opset < 12 {
        return Err(PassError::OpsetTooOld(opset));
    }
    let mut names = NameAllocator::for_model(model);
    let graph = model.graph.as_mut().ok_or(PassError::NoGraph)?;
    // Later nodes first: inserting after a node moves only the ones after it.
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(requests[*i].site.site.node));
    let mut applied = vec![None; requests.len()];
    let mut report = PassReport::default();
    for i in order {
        let request = &requests[i];
        match check(graph, &request.site.site) {
            Ok(()) => applied[i] = Some(emit(graph, request, mode, opset, &mut names)),
            Err(reason) => report.skipped.push(Skipped {
                site: request.site.site.clone(),
                reason,
            }),
        }
    }
    report.applied = applied.into_iter().flatten().collect();
    Ok(report)
}

fn check(graph: &GraphProto, site: &ActivationSite) -> Result<(), PassError> {
    let writes = graph
        .node
        .get(site.node)
        .is_some_and(|n| n.output.first() == Some(&site.output));
    if writes {
        Ok(())
    } else {
        Err(PassError::SiteNotFound(site.describe()))
    }
}

fn emit(
    graph: &mut GraphProto,
    request: &QuantizedRequest,
    mode: Mode,
    opset: i64,
    names: &mut NameAllocator,
) -> Applied {
    let QuantizedSite {
        site,
        elem_type,
        zero_point,
    } = &request.site;
    let stem = format!("{}/fitact", site.stem());
    let raw = names.fresh(&format!("{stem}/raw"));
    let bound_name = names.fresh(&format!("{stem}/bound"));
    let values: Vec<i64> = request
        .bound
        .values
        .iter()
        .map(|v| (v.floor() as i64).clamp(type_minimum(*elem_type), type_maximum(*elem_type)))
        .collect();
    let mut initializers = vec![integer_tensor(&bound_name, &request.bound.dims, &values, *elem_type)];
    if let Some(low) = &request.bound.low {
        let low_name = names.fresh(&format!("{stem}/low"));
        let lows: Vec<i64> = low
            .iter()
            .map(|v| (v.ceil() as i64).clamp(type_minimum(*elem_type), type_maximum(*elem_type)))
            .collect();
        initializers.push(integer_tensor(&low_name, &request.bound.dims, &lows, *elem_type));
        let zero_name = names.fresh(&format!("{stem}/zero"));
        initializers.push(integer_tensor(&zero_name, &[], &[*zero_point], *elem_type));
        let operands = [raw.as_str(), low_name.as_str(), bound_name.as_str(), zero_name.as_str()];
        let nodes = two_sided_nodes(&stem, operands, mode, &site.output, names);
        return splice(
            graph,
            site,
            raw,
            (bound_name, Some(low_name)),
            initializers,
            nodes,
            names,
        );
    }
    let nodes = match mode {
        Mode::Zero => {
            let masked = opset >= 14 && *elem_type == UINT8;
            let zero_name = names.fresh(&format!("{stem}/zero"));
            if !masked || *zero_point != 0 {
                initializers.push(integer_tensor(&zero_name, &[], &[*zero_point], *elem_type));
            }
            let operands = [raw.as_str(), bound_name.as_str(), zero_name.as_str()];
            if masked {
                mask_nodes(&stem, operands, *zero_point == 0, &site.output, names)
            } else {
                where_nodes(&stem, operands, &site.output, names)
            }
        }
        Mode::Saturate => vec![node(
            "Min",
            names.fresh(&format!("{stem}/min")),
            &[&raw, &bound_name],
            &site.output,
        )],
    };
    splice(graph, site, raw, (bound_name, None), initializers, nodes, names)
}

/// Makes the site's node write `raw`, then adds `initializers` and `nodes` (which write the
/// site's tensor) right after it.
fn splice(
    graph: &mut GraphProto,
    site: &ActivationSite,
    raw: String,
    (bound_initializer, low_initializer): (String, Option<String>),
    initializers: Vec<TensorProto>,
    nodes: Vec<NodeProto>,
    names: &mut NameAllocator,
) -> Applied {
    let stem = format!("{}/fitact", site.stem());
    graph.initializer.extend(initializers);
    let producer = &mut graph.node[site.node];
    if producer.name().is_empty() {
        producer.name = Some(names.fresh(&format!("{stem}/node")));
    }
    producer.output[0] = raw;
    let mut node_names = vec![producer.name().to_owned()];
    node_names.extend(nodes.iter().map(|n| n.name().to_owned()));
    graph.node.splice(site.node + 1..site.node + 1, nodes);
    Applied {
        site: site.clone(),
        bound_initializer,
        low_initializer,
        nodes: node_names,
    }
}

/// Two-sided, in the integers: zero mode `Where(Or(Less(raw, low), Greater(raw, bound)),
/// zero, raw)` (`Less` and `Greater` run on uint8 in onnxruntime, `GreaterOrEqual` not
/// everywhere), saturate `Max(Min(raw, bound), low)`.
fn two_sided_nodes(
    stem: &str,
    [raw, low, bound, zero]: [&str; 4],
    mode: Mode,
    output: &str,
    names: &mut NameAllocator,
) -> Vec<NodeProto> {
    match mode {
        Mode::Zero => {
            let (below, above, out) = (
                names.fresh(&format!("{stem}/below")),
                names.fresh(&format!("{stem}/above")),
                names.fresh(&format!("{stem}/out")),
            );
            vec![
                node("Less", names.fresh(&format!("{stem}/lt")), &[raw, low], &below),
                node("Greater", names.fresh(&format!("{stem}/gt")), &[raw, bound], &above),
                node("Or", names.fresh(&format!("{stem}/or")), &[&below, &above], &out),
                node(
                    "Where",
                    names.fresh(&format!("{stem}/where")),
                    &[&out, zero, raw],
                    output,
                ),
            ]
        }
        Mode::Saturate => {
            let clipped = names.fresh(&format!("{stem}/clipped"));
            vec![
                node("Min", names.fresh(&format!("{stem}/min")), &[raw, bound], &clipped),
                node("Max", names.fresh(&format!("{stem}/max")), &[&clipped, low], output),
            ]
        }
    }
}

/// `Where(LessOrEqual(raw, bound), raw, zero)` writing `output`.
fn where_nodes(stem: &str, [raw, bound, zero]: [&str; 3], output: &str, names: &mut NameAllocator) -> Vec<NodeProto> {
    let keep = names.fresh(&format!("{stem}/keep"));
    vec![
        node("LessOrEqual", names.fresh(&format!("{stem}/le")), &[raw, bound], &keep),
        node(
            "Where",
            names.fresh(&format!("{stem}/where")),
            &[&keep, raw, zero],
            output,
        ),
    ]
}

/// The same values on uint8 by a 0/1 mask: `Mul(raw, mask)` for a zero point 0, else
/// `Add(Mul(Sub(raw, zero), mask), zero)` in uint8's arithmetic modulo 256.
fn mask_nodes(
    stem: &str,
    [raw, bound, zero]: [&str; 3],
    zero_is_0: bool,
    output: &str,
    names: &mut NameAllocator,
) -> Vec<NodeProto> {
    let keep = names.fresh(&format!("{stem}/keep"));
    let mask = names.fresh(&format!("{stem}/mask"));
    let mut cast = node("Cast", names.fresh(&format!("{stem}/cast")), &[&keep], &mask);
    cast.attribute.push(AttributeProto {
        name: Some("to".into()),
        i: Some(i64::from(UINT8)),
        r#type: Some(attribute_proto::AttributeType::Int as i32),
        ..Default::default()
    });
    let mut nodes = vec![
        node("LessOrEqual", names.fresh(&format!("{stem}/le")), &[raw, bound], &keep),
        cast,
    ];
    if zero_is_0 {
        nodes.push(node("Mul", names.fresh(&format!("{stem}/mul")), &[raw, &mask], output));
    } else {
        let centred = names.fresh(&format!("{stem}/centred"));
        let kept = names.fresh(&format!("{stem}/kept"));
        nodes.push(node("Sub", names.fresh(&format!("{stem}/sub")), &[raw, zero], &centred));
        nodes.push(node(
            "Mul",
            names.fresh(&format!("{stem}/mul")),
            &[&centred, &mask],
            &kept,
        ));
        nodes.push(node("Add", names.fresh(&format!("{stem}/add")), &[&kept, zero], output));
    }
    nodes
}

/// A uint8 or int8 tensor in `raw_data`.
fn integer_tensor(name: &str, dims: &[i64], values: &[i64], elem_type: i32) -> TensorProto {
    TensorProto {
        name: Some(name.to_owned()),
        dims: dims.to_vec(),
        data_type: Some(elem_type),
        raw_data: Some(values.iter().map(|v| *v as u8).collect()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activations::ActivationKind;
    use crate::onnx::{GraphProto, NodeProto, OperatorSetIdProto};
    use crate::quantized_activations::{UINT8, find_quantized};

    fn model() -> ModelProto {
        let n = |op: &str, name: &str, inputs: &[&str], output: &str| NodeProto {
            op_type: Some(op.into()),
            name: Some(name.into()),
            input: inputs.iter().map(|s| (*s).into()).collect(),
            output: vec![output.into()],
            ..Default::default()
        };
        ModelProto {
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(13),
            }],
            graph: Some(GraphProto {
                node: vec![
                    n("Conv", "conv", &["x", "w"], "c"),
                    n("QuantizeLinear", "q", &["c", "s", "zp"], "cq"),
                    n("DequantizeLinear", "d", &["cq", "s", "zp"], "y"),
                ],
                initializer: vec![TensorProto {
                    name: Some("zp".into()),
                    data_type: Some(UINT8),
                    raw_data: Some(vec![0]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn zero_mode_compares_and_selects_in_the_integers_and_readers_are_unchanged() {
        let mut m = model();
        let site = find_quantized(&m).remove(0);
        let request = QuantizedRequest {
            site,
            bound: Bound {
                dims: vec![2, 1, 1],
                values: vec![200.4, 300.0],
                low: None,
            },
        };
        let report = bound_quantized(&mut m, &[request], Mode::Zero).unwrap();
        assert_eq!(report.applied.len(), 1);
        let graph = m.graph.unwrap();
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type()).collect();
        assert_eq!(
            ops,
            ["Conv", "QuantizeLinear", "LessOrEqual", "Where", "DequantizeLinear"]
        );
        assert_eq!(graph.node[3].output[0], "cq");
        assert_eq!(graph.node[4].input[0], "cq");
        let bound = graph.initializer.iter().find(|t| t.name() == "q/fitact/bound").unwrap();
        // Floored to the integers, clamped to uint8.
        assert_eq!(bound.raw_data.as_deref(), Some(&[200u8, 255][..]));
        assert_eq!(bound.data_type(), UINT8);
    }

    /// The ops in zero mode at `opset`, for a site whose zero point is `zp` (the site is found
    /// with zero point 0, as after a Relu, then given `zp`, as after a HardSwish).
    fn zero_mode_ops(opset: i64, zp: u8) -> (Vec<String>, GraphProto) {
        let mut m = model();
        m.opset_import[0].version = Some(opset);
        let mut site = find_quantized(&m).remove(0);
        site.zero_point = i64::from(zp);
        m.graph.as_mut().unwrap().initializer[0].raw_data = Some(vec![zp]);
        let request = QuantizedRequest {
            site,
            bound: Bound::scalar(200.0),
        };
        bound_quantized(&mut m, &[request], Mode::Zero).unwrap();
        let graph = m.graph.unwrap();
        (graph.node.iter().map(|n| n.op_type().to_owned()).collect(), graph)
    }

    #[test]
    fn from_opset_14_uint8_zero_mode_multiplies_by_a_mask() {
        let (ops, graph) = zero_mode_ops(14, 0);
        let expected = [
            "Conv",
            "QuantizeLinear",
            "LessOrEqual",
            "Cast",
            "Mul",
            "DequantizeLinear",
        ];
        assert_eq!(ops, expected);
        let cast = &graph.node[3];
        assert_eq!(
            (cast.attribute[0].name(), cast.attribute[0].i()),
            ("to", i64::from(UINT8))
        );
        assert_eq!(graph.node[4].input[0], "q/fitact/raw");
        assert_eq!(graph.node[4].output[0], "cq");
        assert_eq!(graph.node[5].input[0], "cq");
        // No zero-point tensor is left unread.
        assert!(graph.initializer.iter().all(|t| !t.name().ends_with("/zero")));
        // A nonzero zero point: Z + (q - Z) * mask, in uint8.
        let (ops, graph) = zero_mode_ops(17, 10);
        let expected = [
            "Conv",
            "QuantizeLinear",
            "LessOrEqual",
            "Cast",
            "Sub",
            "Mul",
            "Add",
            "DequantizeLinear",
        ];
        assert_eq!(ops, expected);
        let zero = graph.initializer.iter().find(|t| t.name() == "q/fitact/zero").unwrap();
        assert_eq!(zero.raw_data.as_deref(), Some(&[10u8][..]));
        assert_eq!(graph.node[4].input[1], "q/fitact/zero");
        assert_eq!(graph.node[6].input[1], "q/fitact/zero");
        // Before opset 14 uint8 has no Mul: Where stays.
        assert_eq!(zero_mode_ops(13, 10).0[2..4], ["LessOrEqual", "Where"]);
    }

    #[test]
    fn a_conv_output_off_the_types_minimum_is_bounded_on_both_sides() {
        for (mode, expected) in [
            (Mode::Zero, &["Less", "Greater", "Or", "Where"][..]),
            (Mode::Saturate, &["Min", "Max"][..]),
        ] {
            let mut m = model();
            // Zero point 128: no Relu was absorbed, the conv's output is `Linear`.
            m.graph.as_mut().unwrap().initializer[0].raw_data = Some(vec![128]);
            let site = find_quantized(&m).remove(0);
            assert_eq!((site.site.kind, site.site.nonnegative), (ActivationKind::Linear, false));
            let request = QuantizedRequest {
                site,
                bound: Bound {
                    dims: vec![2, 1, 1],
                    values: vec![200.4, 300.0],
                    low: Some(vec![3.2, -7.0]),
                },
            };
            let report = bound_quantized(&mut m, &[request], mode).unwrap();
            assert_eq!(report.applied[0].low_initializer.as_deref(), Some("q/fitact/low"));
            let graph = m.graph.unwrap();
            let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type()).collect();
            assert_eq!(ops[2..ops.len() - 1], *expected, "{mode:?}");
            assert_eq!(graph.node[ops.len() - 2].output[0], "cq");
            let tensor = |name: &str| {
                graph
                    .initializer
                    .iter()
                    .find(|t| t.name() == name)
                    .unwrap()
                    .raw_data
                    .clone()
            };
            // The smallest integer kept below, the largest above, in uint8.
            assert_eq!(tensor("q/fitact/low").as_deref(), Some(&[4u8, 0][..]));
            assert_eq!(tensor("q/fitact/bound").as_deref(), Some(&[200u8, 255][..]));
            if mode == Mode::Zero {
                assert_eq!(graph.node[5].input[1], "q/fitact/zero");
                assert_eq!(tensor("q/fitact/zero").as_deref(), Some(&[128u8][..]));
            }
        }
    }

    #[test]
    fn saturate_mode_is_one_min_and_an_old_opset_is_refused() {
        let mut m = model();
        let site = find_quantized(&m).remove(0);
        let request = QuantizedRequest {
            site,
            bound: Bound::scalar(17.0),
        };
        bound_quantized(&mut m, std::slice::from_ref(&request), Mode::Saturate).unwrap();
        let ops: Vec<&str> = m.graph.as_ref().unwrap().node.iter().map(|n| n.op_type()).collect();
        assert_eq!(ops, ["Conv", "QuantizeLinear", "Min", "DequantizeLinear"]);
        let mut old = model();
        old.opset_import[0].version = Some(11);
        assert_eq!(
            bound_quantized(&mut old, &[request], Mode::Zero),
            Err(PassError::OpsetTooOld(11))
        );
    }
}
