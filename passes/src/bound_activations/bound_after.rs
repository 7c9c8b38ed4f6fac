//! Any activation but Relu: its node keeps its inputs and now writes R, and the bound follows.
//!
//! **Before** `Y = A(X)` (an operator, or the last node of a decomposed form); **after**, with H
//! the bound above and, when given, L the bound below (`low`):
//! ```text
//! R = A(X)                                           (the node now writes R instead of Y)
//! zero:      K = LessOrEqual(R, H)  [K2 = GreaterOrEqual(R, L)  K = And(K, K2)]   Y = Where(K, R, 0)
//!            (before opset 12: Less(R, next_up(H)), Greater(R, next_down(L)))
//! saturate:  C = Clip(R, L, H) (scalars, opset >= 11) or Max(Min(R, H), L)       Y = Where(IsNaN(R), 0, C)
//! ```
//! Values outside [L, H] (or above H) become 0, or the nearest bound; NaN always becomes 0 (it
//! fails every comparison; `IsNaN` catches it for saturate). Without L, the activation cannot
//! go negative (`ActivationSite::nonnegative`), so one comparison is all it costs.

use super::bound_tensors::{Step, add_initializers, bound_tensor};
use super::plain::{KeepTest, keep_test};
use super::site_nodes::{Emit, node, rewire};
use super::{Applied, Mode};
use crate::tensor::float_tensor;

/// Any activation but Relu: its node now writes a fresh tensor R, and the bounding nodes
/// read R and write the activation's output under its old name.
pub(super) fn bound_after(emit: Emit) -> Applied {
    let Emit {
        graph,
        request,
        mode,
        opset,
        declare_inputs,
        mut names,
    } = emit;
    let site = &request.site;
    let (y, elem_type, bound) = (site.output.as_str(), request.elem_type, &request.bound);
    let raw = names.fresh("raw");
    let r = raw.as_str();
    let high_name = names.fresh("bound");
    let low_name = bound.low.as_ref().map(|_| names.fresh("low"));
    let zero_name = names.fresh("zero");
    let strict = keep_test(opset) == KeepTest::LessThanNextUp;

    let mut nodes = Vec::new();
    let (high_step, low_step) = match mode {
        Mode::Zero => {
            let below = names.fresh("below");
            nodes.push(if strict {
                node("Less", names.fresh("lt"), &[r, &high_name], &below)
            } else {
                node("LessOrEqual", names.fresh("le"), &[r, &high_name], &below)
            });
            let keep = match &low_name {
                None => below,
                Some(low) => {
                    let above = names.fresh("above");
                    let keep = names.fresh("keep");
                    nodes.push(if strict {
                        node("Greater", names.fresh("gt"), &[r, low], &above)
                    } else {
                        node("GreaterOrEqual", names.fresh("ge"), &[r, low], &above)
                    });
                    nodes.push(node("And", names.fresh("and"), &[&below, &above], &keep));
                    keep
                }
            };
            nodes.push(node("Where", names.fresh("where"), &[&keep, r, &zero_name], y));
            if strict {
                (Step::Up, Step::Down)
            } else {
                (Step::None, Step::None)
            }
        }
        Mode::Saturate => {
            let clamped = names.fresh("clamped");
            if opset >= 11 && bound.is_scalar() {
                let low = low_name.as_deref().unwrap_or("");
                nodes.push(node("Clip", names.fresh("clip"), &[r, low, &high_name], &clamped));
            } else {
                match &low_name {
                    None => nodes.push(node("Min", names.fresh("min"), &[r, &high_name], &clamped)),
                    Some(low) => {
                        let capped = names.fresh("capped");
                        nodes.push(node("Min", names.fresh("min"), &[r, &high_name], &capped));
                        nodes.push(node("Max", names.fresh("max"), &[&capped, low], &clamped));
                    }
                }
            }
            let nan = names.fresh("nan");
            nodes.push(node("IsNaN", names.fresh("isnan"), &[r], &nan));
            nodes.push(node("Where", names.fresh("where"), &[&nan, &zero_name, &clamped], y));
            (Step::None, Step::None)
        }
    };
    let mut initializers = vec![bound_tensor(
        &high_name,
        &bound.dims,
        &bound.values,
        elem_type,
        high_step,
    )];
    if let (Some(name), Some(low)) = (&low_name, &bound.low) {
        initializers.push(bound_tensor(name, &bound.dims, low, elem_type, low_step));
    }
    initializers.push(float_tensor(&zero_name, &[], &[0.0], elem_type));
    add_initializers(graph, initializers, declare_inputs, elem_type);

    let node_names = rewire(graph, site, &raw, nodes, || names.fresh("node"));
    Applied {
        site: site.clone(),
        bound_initializer: high_name,
        low_initializer: low_name,
        nodes: node_names,
    }
}
