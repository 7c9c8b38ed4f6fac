//! # bound_stored — bound activations in the types their values are stored in
//!
//! **Before**: requests for activations of one model, each with its bound as calibrated (float
//! values) and the element type the activation is stored in: float32 or float64, float16, or
//! uint8/int8 in a statically quantized model (then the bound counts in the activation's
//! integers).
//!
//! **After**: each bound as that type stores it (`stored_bound`: a float16 one rounded outward,
//! so that no calibrated value is cut; an integer one, the largest integer kept), the float
//! activations bounded by `bound_activations` in the emission asked for each, the integer ones by
//! `bound_quantized` in their integers, so a quantized model stays integer end to end. The
//! report lists the requests in the order given.
//!
//! **When it applies**: as each pass it calls. An integer request is found again among the
//! model's integer activations (`find_quantized`) after the float ones are bounded (which may
//! move nodes); one no longer found is skipped with its reason.

use crate::bound_activations::{Bound, BoundRequest, Emission, Mode, PassReport, Skipped, bound_activations_with};
use crate::bound_quantized::{QuantizedRequest, bound_quantized};
use crate::error::PassError;
use crate::onnx::ModelProto;
use crate::quantized_activations::{INT8, UINT8, find_quantized};
use crate::tensor::{FLOAT16, f16_outward};

/// Whether activations of `elem_type` are bounded in their integers.
pub fn is_integer(elem_type: i32) -> bool {
    matches!(elem_type, UINT8 | INT8)
}

/// `bound` as an activation of `elem_type` stores it: for float16, each end rounded outward
/// to a float16; for an 8-bit integer one, the largest integer it keeps (and below, the smallest), in the type's range.
pub fn stored_bound(mut bound: Bound, elem_type: i32) -> Bound {
    let integers = match elem_type {
        UINT8 => Some((0.0, 255.0)),
        INT8 => Some((-128.0, 127.0)),
        _ => None,
    };
    if let Some((low, high)) = integers {
        bound.values.iter_mut().for_each(|v| *v = v.floor().clamp(low, high));
        if let Some(below) = bound.low.as_mut() {
            below.iter_mut().for_each(|v| *v = v.ceil().clamp(low, high));
        }
    }
    if elem_type == FLOAT16 {
        bound.values.iter_mut().for_each(|v| *v = f16_outward(*v, true));
        if let Some(low) = bound.low.as_mut() {
            low.iter_mut().for_each(|v| *v = f16_outward(*v, false));
        }
    }
    bound
}

/// Bounds every request, each in its own type (its bound already `stored_bound`; `emissions[i]`
/// is the form of float request `i`, ignored for integer ones). Model-level problems are errors;
/// a request that does not match is skipped with its reason, as the passes do.
pub fn bound_stored(
    model: &mut ModelProto,
    requests: &[BoundRequest],
    mode: Mode,
    emissions: &[Emission],
) -> Result<PassReport, PassError> {
    let (integer, float): (Vec<usize>, Vec<usize>) =
        (0..requests.len()).partition(|i| is_integer(requests[*i].elem_type));
    let float_requests: Vec<BoundRequest> = float.iter().map(|i| requests[*i].clone()).collect();
    let float_emissions: Vec<Emission> = float.iter().map(|i| emissions[*i]).collect();
    let floats = bound_activations_with(model, &float_requests, mode, &float_emissions)?;
    let mut report = PassReport {
        applied: Vec::with_capacity(requests.len()),
        skipped: floats.skipped,
    };
    let integers = bound_integers(model, &integer.iter().map(|i| &requests[*i]).collect::<Vec<_>>(), mode)?;
    report.skipped.extend(integers.skipped);
    // Back in request order (each pass reports its applied requests in the order given).
    let (mut floats, mut integers) = (floats.applied.into_iter(), integers.applied.into_iter());
    for request in requests {
        if report.skipped.iter().any(|s| s.site == request.site) {
            continue;
        }
        let done = if is_integer(request.elem_type) {
            integers.next()
        } else {
            floats.next()
        };
        report.applied.extend(done);
    }
    Ok(report)
}

/// The integer requests, found again in `model` as it is now, bounded in their integers.
fn bound_integers(model: &mut ModelProto, requests: &[&BoundRequest], mode: Mode) -> Result<PassReport, PassError> {
    if requests.is_empty() {
        return Ok(PassReport::default());
    }
    let found = find_quantized(model);
    let mut quantized = Vec::with_capacity(requests.len());
    let mut skipped = Vec::new();
    for request in requests {
        match found.iter().find(|q| q.site.output == request.site.output) {
            Some(site) => quantized.push(QuantizedRequest {
                site: site.clone(),
                bound: request.bound.clone(),
            }),
            None => skipped.push(Skipped {
                site: request.site.clone(),
                reason: PassError::SiteNotFound(format!(
                    "{} (no longer an integer activation)",
                    request.site.describe()
                )),
            }),
        }
    }
    let mut report = bound_quantized(model, &quantized, mode)?;
    report.skipped.extend(skipped);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::FLOAT;

    fn bound(values: Vec<f32>, low: Option<Vec<f32>>) -> Bound {
        Bound {
            dims: vec![values.len() as i64],
            values,
            low,
        }
    }

    #[test]
    fn integer_bounds_are_the_largest_integer_kept_in_range() {
        let stored = stored_bound(bound(vec![3.7, 300.0, -5.0], None), UINT8);
        assert_eq!(stored.values, vec![3.0, 255.0, 0.0]);
        let stored = stored_bound(bound(vec![-3.2, 130.0], None), INT8);
        assert_eq!(stored.values, vec![-4.0, 127.0]);
        // The smallest integer kept below.
        let stored = stored_bound(bound(vec![200.4], Some(vec![3.2])), UINT8);
        assert_eq!((stored.values, stored.low), (vec![200.0], Some(vec![4.0])));
    }

    #[test]
    fn float16_bounds_round_outward_and_float32_ones_are_kept() {
        let stored = stored_bound(bound(vec![0.1], Some(vec![-0.1])), FLOAT16);
        assert!(stored.values[0] >= 0.1 && half::f16::from_f32(stored.values[0]).to_f32() == stored.values[0]);
        assert!(stored.low.as_ref().unwrap()[0] <= -0.1);
        let kept = bound(vec![0.1], Some(vec![-0.1]));
        assert_eq!(stored_bound(kept.clone(), FLOAT), kept);
    }
}
