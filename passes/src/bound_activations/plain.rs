//! `Emission::Plain`, the default form of a bounded Relu: the Relu replaced by a comparison
//! (zero) or a clamp (saturate) on its input.
//!
//! **Before** `Y = Relu(X)`; **after**, `mode = zero` (y = x for 0 < x <= B, else 0; NaN and
//! +Inf give 0)
//! ```text
//! opset >= 12:  K = LessOrEqual(X, B)        T = Where(K, X, 0)   Y = Max(T, 0)
//! opset 9-11:   K = Less(X, next_up(B))      T = Where(K, X, 0)   Y = Max(T, 0)
//! ```
//! A NaN or +Inf fails the comparison and becomes 0 in `Where`; a negative value passes it and
//! `Max` sends it to 0. `LessOrEqual` appears only in opset 12, so older models compare strictly
//! against the next float above B, which is the same predicate on floats.
//!
//! **After**, `mode = saturate` (Ranger: y = min(max(x, 0), B))
//! ```text
//! scalar B, opset >= 11:  Y = Clip(X, 0, B)
//! otherwise:              T = Max(X, 0)   Y = Min(T, B)
//! ```
//! ONNX `Clip` takes only scalar bounds (onnxruntime rejects tensors), and before opset 11 it
//! takes them as attributes, where fault injection could not reach them; hence `Min`/`Max`.

use super::bound_tensors::{Step, add_initializers, bound_tensor};
use super::site_nodes::{Emit, node};
use super::{Applied, Bound, Mode};
use crate::onnx::NodeProto;
use crate::tensor::float_tensor;

/// Which comparison keeps a value in `zero` mode: the only opset-dependent choice of the pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum KeepTest {
    LessOrEqual,
    LessThanNextUp,
}

pub(super) fn keep_test(opset: i64) -> KeepTest {
    if opset >= 12 {
        KeepTest::LessOrEqual
    } else {
        KeepTest::LessThanNextUp
    }
}

pub(super) fn saturate_with_clip(opset: i64, bound: &Bound) -> bool {
    opset >= 11 && bound.is_scalar()
}

/// A Relu in `Emission::Plain` (this file's header).
pub(super) fn plain(emit: Emit) -> Applied {
    let Emit {
        graph,
        request,
        mode,
        opset,
        declare_inputs,
        mut names,
    } = emit;
    let site = &request.site;
    let (x, y, elem_type) = (site.input.as_str(), site.output.as_str(), request.elem_type);

    let bound = &request.bound;
    let bound_name = names.fresh("bound");
    let zero_name = names.fresh("zero");
    let exclusive = mode == Mode::Zero && keep_test(opset) == KeepTest::LessThanNextUp;
    let step = if exclusive { Step::Up } else { Step::None };
    let nodes: Vec<NodeProto> = match mode {
        Mode::Zero => {
            let keep = names.fresh("keep");
            let kept = names.fresh("kept");
            let compare = match keep_test(opset) {
                KeepTest::LessOrEqual => node("LessOrEqual", names.fresh("le"), &[x, &bound_name], &keep),
                KeepTest::LessThanNextUp => node("Less", names.fresh("lt"), &[x, &bound_name], &keep),
            };
            vec![
                compare,
                node("Where", names.fresh("where"), &[&keep, x, &zero_name], &kept),
                node("Max", names.fresh("max"), &[&kept, &zero_name], y),
            ]
        }
        Mode::Saturate if saturate_with_clip(opset, bound) => {
            vec![node("Clip", names.fresh("clip"), &[x, &zero_name, &bound_name], y)]
        }
        Mode::Saturate => {
            let positive = names.fresh("positive");
            vec![
                node("Max", names.fresh("max"), &[x, &zero_name], &positive),
                node("Min", names.fresh("min"), &[&positive, &bound_name], y),
            ]
        }
    };
    // Validated >= 0; abs() turns -0.0 into +0.0, so that the step goes up from zero.
    let values: Vec<f32> = bound.values.iter().map(|v| v.abs()).collect();
    let added_initializers = vec![
        bound_tensor(&bound_name, &bound.dims, &values, elem_type, step),
        float_tensor(&zero_name, &[], &[0.0], elem_type),
    ];
    add_initializers(graph, added_initializers, declare_inputs, elem_type);
    let node_names = nodes.iter().map(|n| n.name().to_owned()).collect();
    graph.node.splice(site.node..=site.node, nodes);
    Applied {
        site: site.clone(),
        bound_initializer: bound_name,
        low_initializer: None,
        nodes: node_names,
    }
}

#[cfg(test)]
mod tests {
    use crate::bound_activations::tests::{ops, run};
    use crate::bound_activations::{Bound, Mode};

    #[test]
    fn emission_follows_mode_bound_shape_and_opset() {
        let channel = Bound {
            dims: vec![2, 1, 1],
            values: vec![1.0, 2.0],
            low: None,
        };
        let cases = [
            (
                13,
                Mode::Zero,
                Bound::scalar(1.0),
                ["LessOrEqual", "Where", "Max"].as_slice(),
            ),
            (11, Mode::Zero, channel.clone(), &["Less", "Where", "Max"]),
            (13, Mode::Saturate, Bound::scalar(1.0), &["Clip"]),
            (10, Mode::Saturate, Bound::scalar(1.0), &["Max", "Min"]),
            (18, Mode::Saturate, channel.clone(), &["Max", "Min"]),
        ];
        for (opset, mode, bound, per_relu) in cases {
            let (m, report) = run(opset, 7, mode, bound);
            assert!(report.skipped.is_empty());
            let want: Vec<&str> = per_relu.iter().chain(per_relu.iter()).copied().collect();
            assert_eq!(ops(&m), want, "opset {opset} {mode:?}");
        }
    }
}
