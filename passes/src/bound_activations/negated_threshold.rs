//! `Emission::NegatedThreshold` (the threshold of `--emission fold-threshold`): zero mode, scalar
//! B, opset >= 10; only for a Relu whose input is -x / b, as `fold_channel_bounds` with
//! `negate` leaves it: Y is then -y / b.
//! ```text
//! N = Clip(X, max = 0)           (= -relu(x / b); runtimes fuse it into the convolution)
//! Y = ThresholdedRelu(N, alpha = -next_up(B))    (N where N > -next_up(B), i.e. -N <= B; else 0)
//! ```
//! One element-wise pass after the fused convolution. NaN and -Inf (from +Inf) fail `N > alpha`
//! and become 0. B is an attribute here: no stored bound tensor (the per-channel bounds are in
//! the rescaled weights).

use super::Applied;
use super::bound_tensors::{add_initializers, next_f32};
use super::site_nodes::{Emit, float_attribute, rewire, thresholded_relu};
use crate::tensor::float_tensor;

/// A Relu in `Emission::NegatedThreshold`: the Relu becomes `Clip(X, max = 0)` writing N, and
/// `ThresholdedRelu` writes Y. Its bound is an attribute, so `bound_initializer` is empty.
pub(super) fn negated_threshold(emit: Emit) -> Applied {
    let Emit {
        graph,
        request,
        opset,
        declare_inputs,
        mut names,
        ..
    } = emit;
    let site = &request.site;
    let negative = names.fresh("negative");
    let alpha = -next_f32(request.bound.values[0].abs(), true);
    let threshold = thresholded_relu(names.fresh("threshold"), &negative, &site.output, alpha);
    graph.node[site.node].op_type = Some("Clip".to_owned());
    if opset >= 11 {
        let zero_name = names.fresh("zero");
        graph.node[site.node].input = vec![site.input.clone(), String::new(), zero_name.clone()];
        let zero = float_tensor(&zero_name, &[], &[0.0], request.elem_type);
        add_initializers(graph, vec![zero], declare_inputs, request.elem_type);
    } else {
        graph.node[site.node].attribute.push(float_attribute("max", 0.0));
    }
    let nodes = rewire(graph, site, &negative, vec![threshold], || names.fresh("node"));
    Applied {
        site: site.clone(),
        bound_initializer: String::new(),
        low_initializer: None,
        nodes,
    }
}
