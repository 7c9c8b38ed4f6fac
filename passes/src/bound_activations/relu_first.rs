//! `Emission::ReluFirst`: the same functions as `plain`, but the Relu stays, so that a runtime
//! fuses it into the convolution before it, and the bound follows it.
//! ```text
//! zero:                             R = Relu(X)   K = LessOrEqual(R, B)   Y = Where(K, R, 0)
//!                                   (opset 9-11: Less(R, next_up(B)))
//! saturate, scalar B, opset >= 11:  Y = Clip(X, 0, B)
//! saturate, otherwise:              R = Relu(X)   Y = Min(R, B)
//! ```
//! A NaN becomes NaN in `Relu`, fails the comparison and becomes 0, as +Inf does.

use super::bound_after::bound_after;
use super::bound_tensors::{Step, add_initializers, bound_tensor};
use super::plain::{plain, saturate_with_clip};
use super::site_nodes::{Emit, node, rewire};
use super::{Applied, Mode};

/// A Relu in `Emission::ReluFirst`: the Relu stays and writes R, the bound follows it.
pub(super) fn relu_first(emit: Emit) -> Applied {
    let Emit {
        graph,
        request,
        mode,
        opset,
        declare_inputs,
        mut names,
    } = emit;
    let saturate_in_one = mode == Mode::Saturate && saturate_with_clip(opset, &request.bound);
    if mode == Mode::Zero || saturate_in_one {
        // Zero: the comparison and `Where` of any activation that cannot go negative; one
        // scalar `Clip` is already a form runtimes fuse.
        let bounded = if saturate_in_one { plain } else { bound_after };
        return bounded(Emit {
            graph,
            request,
            mode,
            opset,
            declare_inputs,
            names,
        });
    }
    let site = &request.site;
    let raw = names.fresh("raw");
    let bound_name = names.fresh("bound");
    let min = node("Min", names.fresh("min"), &[&raw, &bound_name], &site.output);
    let values: Vec<f32> = request.bound.values.iter().map(|v| v.abs()).collect();
    let bound = bound_tensor(&bound_name, &request.bound.dims, &values, request.elem_type, Step::None);
    add_initializers(graph, vec![bound], declare_inputs, request.elem_type);
    let nodes = rewire(graph, site, &raw, vec![min], || names.fresh("node"));
    Applied {
        site: site.clone(),
        bound_initializer: bound_name,
        low_initializer: None,
        nodes,
    }
}
