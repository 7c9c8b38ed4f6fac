//! # bound_quantized — bound an integer activation in its own integers
//!
//! **Before**: an integer activation `q` (uint8 or int8) found by `quantized_activations`:
//! the output of a `QuantizeLinear` or of a QOperator node `P`.
//!
//! **After**: `P` writes `q_raw`, and
//! - zero mode: `q = Where(LessOrEqual(q_raw, Bq), q_raw, Z)`, where `Bq` is the bound in the
//!   activation's integers and `Z` its zero point (the integer that stands for 0): a value
//!   above the bound reads as 0, as FitAct's zero-above does in float;
//! - saturate mode: `q = Min(q_raw, Bq)`.
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
use crate::onnx::{GraphProto, ModelProto, TensorProto};
use crate::quantized_activations::{QuantizedSite, type_maximum, type_minimum};

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
            Ok(()) => applied[i] = Some(emit(graph, request, mode, &mut names)),
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

fn emit(graph: &mut GraphProto, request: &QuantizedRequest, mode: Mode, names: &mut NameAllocator) -> Applied {
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
    let nodes = match mode {
        Mode::Zero => {
            let keep = names.fresh(&format!("{stem}/keep"));
            let zero_name = names.fresh(&format!("{stem}/zero"));
            initializers.push(integer_tensor(&zero_name, &[], &[*zero_point], *elem_type));
            vec![
                node(
                    "LessOrEqual",
                    names.fresh(&format!("{stem}/le")),
                    &[&raw, &bound_name],
                    &keep,
                ),
                node(
                    "Where",
                    names.fresh(&format!("{stem}/where")),
                    &[&keep, &raw, &zero_name],
                    &site.output,
                ),
            ]
        }
        Mode::Saturate => vec![node(
            "Min",
            names.fresh(&format!("{stem}/min")),
            &[&raw, &bound_name],
            &site.output,
        )],
    };
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
        bound_initializer: bound_name,
        low_initializer: None,
        nodes: node_names,
    }
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
