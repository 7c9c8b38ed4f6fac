//! `Emission::ScaledThreshold`: zero mode, opset >= 10, float32, no bound below; for a Relu,
//! or an activation whose bounds above are all > 0. The same function with one comparison that
//! runtimes run fast, where a bound cannot be folded into weights (a Relu read by a residual
//! `Add`, a tensor bound); what it costs against `LessOrEqual` + `Where`:
//! docs/results/bound_activations_design.md.
//! ```text
//! R = Relu(X)  (or the activation, now writing R)
//! N = Mul(R, S)        S = -1/B, moved by a few ulps per value (`exact_scale`) so that
//!                      fl(R * -S) <= 1 holds exactly when R <= B
//! T = ThresholdedRelu(N, alpha = -next_up(1))     (N where N >= -1, else 0)
//! Q = Div(T, S)
//! Y = ThresholdedRelu(Q, alpha = -f32::MAX)       (Q, but NaN and -Inf give 0)
//! ```
//! The comparison is exact against B or, where no float32 scale gives B itself, the float
//! just below it (`exact_scale`): the values kept are those `LessOrEqual` keeps against it; a
//! kept value comes back within 2 ulps (two roundings). NaN and +Inf fail `N > alpha` and
//! become 0 (so does -Inf, which the plain form keeps below an activation's bound above; no
//! activation bounded above only makes it from finite values); a bound of 0 stores S = -Inf
//! (0 x -Inf = NaN, and x > 0 gives -Inf: both become 0; 0 / -Inf = -0). One stored tensor, S, on the values' path: a fault that scales it scales
//! the bound, as a fault in B would, and leaves kept values as they are; the last
//! `ThresholdedRelu` is there for the faults that make it NaN (a mantissa flip of -Inf, an
//! exponent flip of a value in [1, 2) or of 2^127 and above), after which `Q` would be NaN
//! (0 / NaN): Y is then 0, the value dropped, as `Where(LessOrEqual(R, NaN), R, 0)` drops it.
//! Without it, one flip of one value of S sent NaN through the rest of the network
//! (docs/results/bound_activations_design.md). A value with no such scale (none within
//! `SCALE_SEARCH` ulps of -1/B; none was found for any float32 the tests tried) leaves the
//! request to the caller.

use super::bound_tensors::{add_initializers, next_f32};
use super::site_nodes::{Emit, node, rewire, thresholded_relu};
use super::{Applied, BoundRequest, Mode};
use crate::activations::ActivationKind;
use crate::tensor::{FLOAT, float_tensor};

/// How many ulps either side of -1/B `exact_scale` tries.
const SCALE_SEARCH: i64 = 16;

/// The stored scale S (< 0) of `Emission::ScaledThreshold` for a bound `b >= 0`, and the bound
/// it enforces: `-(r * S) <= 1` (float32 products) holds for every float32 `r <= bound` and
/// fails for every `r > bound`, where `bound` is `b` or, when no scale gives `b` itself (the
/// floats near -1/b are spaced more widely than the scales that would give `b`: how often,
/// docs/results/bound_activations_design.md), the float just below `b`. The product is
/// monotone in r, so checking `bound` and the next float above it is checking them all. None if no scale within `SCALE_SEARCH` ulps
/// of -1/b gives either (none was found for any float32 the tests tried).
pub fn exact_scale(b: f32) -> Option<(f32, f32)> {
    if !(b.is_finite() && b >= 0.0) {
        return None;
    }
    if b == 0.0 {
        return Some((f32::NEG_INFINITY, 0.0));
    }
    let start = -(1.0 / b);
    if !start.is_finite() || start == 0.0 {
        return None;
    }
    let keeps = |s: f32, r: f32| -(r * s) <= 1.0;
    let scale_for = |bound: f32| {
        let above = next_f32(bound, true);
        (-SCALE_SEARCH..=SCALE_SEARCH)
            .map(|k| f32::from_bits((i64::from(start.to_bits()) + k) as u32))
            .filter(|s| s.is_finite() && *s < 0.0 && keeps(*s, bound) && !keeps(*s, above))
            .min_by_key(|s| (i64::from(s.to_bits()) - i64::from(start.to_bits())).abs())
    };
    [b, next_f32(b, false)]
        .into_iter()
        .find_map(|bound| scale_for(bound).map(|s| (s, bound)))
}

/// Whether `Emission::ScaledThreshold` can bound `request` exactly in `mode` at `opset`.
pub fn scaled_threshold_applies(request: &BoundRequest, mode: Mode, opset: i64) -> bool {
    let relu = request.site.kind == ActivationKind::Relu;
    mode == Mode::Zero
        && opset >= 10
        && request.elem_type == FLOAT
        && request.bound.low.is_none()
        && request
            .bound
            .values
            .iter()
            .all(|b| (relu || *b > 0.0) && exact_scale(b.abs()).is_some_and(|(_, kept)| relu || kept > 0.0))
}

/// `Emission::ScaledThreshold`: the activation's node (a Relu stays a Relu) now writes R, and
/// `Mul`, `ThresholdedRelu`, `Div`, `ThresholdedRelu` write Y. `bound_initializer` is S, which
/// holds about -1/B.
pub(super) fn scaled_threshold(emit: Emit) -> Applied {
    let Emit {
        graph,
        request,
        declare_inputs,
        mut names,
        ..
    } = emit;
    let site = &request.site;
    let raw = names.fresh("raw");
    let scale_name = names.fresh("scale");
    let (scaled, kept, unscaled) = (names.fresh("scaled"), names.fresh("kept"), names.fresh("unscaled"));
    let bound = &request.bound;
    // Validated by `scaled_threshold_applies`: every value has an exact scale.
    let scales: Vec<f32> = bound
        .values
        .iter()
        .map(|b| exact_scale(b.abs()).map_or(f32::NEG_INFINITY, |(s, _)| s))
        .collect();
    let nodes = vec![
        node("Mul", names.fresh("scale_mul"), &[&raw, &scale_name], &scaled),
        thresholded_relu(names.fresh("threshold"), &scaled, &kept, -next_f32(1.0, true)),
        node("Div", names.fresh("scale_div"), &[&kept, &scale_name], &unscaled),
        thresholded_relu(names.fresh("finite"), &unscaled, &site.output, f32::MIN),
    ];
    let initializers = vec![float_tensor(&scale_name, &bound.dims, &scales, FLOAT)];
    add_initializers(graph, initializers, declare_inputs, FLOAT);
    let nodes = rewire(graph, site, &raw, nodes, || names.fresh("node"));
    Applied {
        site: site.clone(),
        bound_initializer: scale_name,
        low_initializer: None,
        nodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activations::find_relus;
    use crate::bound_activations::tests::{model, ops};
    use crate::bound_activations::{Bound, Emission, bound_activations_with};

    /// The scale enforces its bound exactly, the bound is B or the float below it, and one is
    /// found for every float32 tried: a sweep of consecutive floats at several magnitudes
    /// (every mantissa pattern near their start) and a spread over 2^-40 .. 2^40.
    #[test]
    fn every_bound_tried_gets_an_exact_scale() {
        let keeps = |s: f32, r: f32| -(r * s) <= 1.0;
        let mut below = 0;
        let mut tried = 0;
        let sweeps = [1.0f32, 1.5, 1.9999, 0.01, 3.7e5, 6.1e-7];
        let spread = (0..4000).map(|i| 2f32.powf(-40.0 + 80.0 * i as f32 / 4000.0));
        let values = sweeps
            .iter()
            .flat_map(|start| (0..20_000u32).map(move |k| f32::from_bits(start.to_bits() + k)))
            .chain(spread);
        for b in values {
            tried += 1;
            let (s, bound) = exact_scale(b).unwrap_or_else(|| panic!("no scale for {b:e}"));
            assert!(bound == b || bound == next_f32(b, false), "{b:e}: bound {bound:e}");
            below += usize::from(bound != b);
            assert!(keeps(s, bound), "{b:e}: {s:e} drops the bound");
            assert!(!keeps(s, next_f32(bound, true)), "{b:e}: {s:e} keeps above the bound");
            assert!(!keeps(s, f32::INFINITY) && !keeps(s, f32::NAN));
        }
        assert!(below * 2 < tried, "{below} of {tried} below");
        assert_eq!(exact_scale(0.0), Some((f32::NEG_INFINITY, 0.0)));
        assert_eq!(exact_scale(f32::from_bits(1)), None, "1 / a denormal overflows");
        assert_eq!(exact_scale(-1.0), None);
    }

    #[test]
    fn scaled_threshold_needs_zero_mode_opset_10_and_no_bound_below() {
        let m = model(13, 7);
        let site = find_relus(&m).remove(0);
        let request = |bound: Bound| BoundRequest {
            site: site.clone(),
            bound,
            elem_type: FLOAT,
        };
        assert!(scaled_threshold_applies(&request(Bound::scalar(2.0)), Mode::Zero, 10));
        assert!(scaled_threshold_applies(&request(Bound::scalar(0.0)), Mode::Zero, 13));
        assert!(!scaled_threshold_applies(&request(Bound::scalar(2.0)), Mode::Zero, 9));
        assert!(!scaled_threshold_applies(
            &request(Bound::scalar(2.0)),
            Mode::Saturate,
            13
        ));
        let two_sided = Bound {
            dims: vec![],
            values: vec![2.0],
            low: Some(vec![-1.0]),
        };
        assert!(!scaled_threshold_applies(&request(two_sided), Mode::Zero, 13));
        let mut m = model(13, 7);
        let report = bound_activations_with(
            &mut m,
            &[request(Bound::scalar(2.0))],
            Mode::Zero,
            &[Emission::ScaledThreshold],
        )
        .unwrap();
        assert_eq!(report.applied.len(), 1);
        assert_eq!(
            ops(&m),
            ["Relu", "Mul", "ThresholdedRelu", "Div", "ThresholdedRelu", "Relu"]
        );
    }
}
