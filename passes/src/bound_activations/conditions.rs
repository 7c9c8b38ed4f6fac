//! The conditions of the pass (`mod.rs`, "When it applies"), checked before anything is
//! touched: a request that fails one is skipped with its reason, its node left as it is.

use super::scaled_threshold::scaled_threshold_applies;
use super::{BoundRequest, Emission, Mode};
use crate::activations::ActivationKind;
use crate::error::PassError;
use crate::graph::graph_at_mut;
use crate::onnx::ModelProto;

/// Checks every condition of the pass (`mod.rs`, "When it applies") before anything is touched.
pub(super) fn match_site(model: &mut ModelProto, request: &BoundRequest) -> Result<(), PassError> {
    let site = &request.site;
    let describe = || site.describe();
    let graph = graph_at_mut(model, &site.graph)?;
    let node = graph
        .node
        .get(site.node)
        .ok_or_else(|| PassError::SiteNotFound(describe()))?;
    let is_relu = site.kind == ActivationKind::Relu;
    let matches = node.op_type() == site.op_type
        && (node.domain().is_empty() || node.domain() == "ai.onnx")
        && !node.output.is_empty()
        && node.output[0] == site.output
        && (!is_relu || (node.input.len() == 1 && node.output.len() == 1 && node.input[0] == site.input));
    if !matches {
        return Err(PassError::SiteNotFound(describe()));
    }
    if !crate::tensor::is_bound_type(request.elem_type) {
        return Err(PassError::UnsupportedElemType {
            site: describe(),
            elem_type: request.elem_type,
        });
    }
    let bound = &request.bound;
    let expected: i64 = bound.dims.iter().product();
    if bound.dims.iter().any(|d| *d < 1) || expected != bound.values.len() as i64 {
        return Err(PassError::InvalidBound {
            site: describe(),
            reason: format!("dims {:?} do not hold {} values", bound.dims, bound.values.len()),
        });
    }
    if let Some(bad) = bound.values.iter().find(|v| !v.is_finite() || (is_relu && **v < 0.0)) {
        let wanted = if is_relu { "finite and >= 0" } else { "finite" };
        return Err(PassError::InvalidBound {
            site: describe(),
            reason: format!("value {bad} is not {wanted}"),
        });
    }
    if let Some(low) = &bound.low {
        let reason = if is_relu {
            Some("a Relu is bounded above only".to_owned())
        } else if low.len() != bound.values.len() {
            Some(format!("{} low values for {} high ones", low.len(), bound.values.len()))
        } else {
            low.iter()
                .zip(&bound.values)
                .find(|(l, h)| !(l.is_finite() && l <= h))
                .map(|(l, h)| format!("low {l} is not finite and <= high {h}"))
        };
        if let Some(reason) = reason {
            return Err(PassError::InvalidBound {
                site: describe(),
                reason,
            });
        }
    }
    Ok(())
}

/// The conditions of an emission beyond those of every form.
pub(super) fn match_emission(
    request: &BoundRequest,
    mode: Mode,
    opset: i64,
    emission: Emission,
) -> Result<(), PassError> {
    let negated = emission == Emission::NegatedThreshold && request.site.kind == ActivationKind::Relu;
    if negated && !(mode == Mode::Zero && opset >= 10 && request.bound.is_scalar()) {
        return Err(PassError::Invalid(format!(
            "{}: the negated form needs zero mode, a scalar bound and opset >= 10",
            request.site.describe()
        )));
    }
    if emission == Emission::ScaledThreshold && !scaled_threshold_applies(request, mode, opset) {
        return Err(PassError::Invalid(format!(
            "{}: the scaled threshold form needs zero mode, opset >= 10, float32, no bound below, \
             bounds above > 0 (>= 0 for a Relu) and an exact scale for each",
            request.site.describe()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::activations::find_relus;
    use crate::bound_activations::tests::model;
    use crate::bound_activations::{Bound, BoundRequest, Mode, bound_activations};
    use crate::error::PassError;
    use crate::tensor::FLOAT;

    #[test]
    fn a_request_that_does_not_fit_is_skipped_whole() {
        let mut m = model(13, 7);
        let sites = find_relus(&m);
        let before = m.clone();
        let requests = vec![
            BoundRequest {
                site: sites[0].clone(),
                bound: Bound {
                    dims: vec![3],
                    values: vec![1.0],
                    low: None,
                },
                elem_type: FLOAT,
            },
            BoundRequest {
                site: sites[1].clone(),
                bound: Bound::scalar(f32::NAN),
                elem_type: FLOAT,
            },
        ];
        let report = bound_activations(&mut m, &requests, Mode::Zero).unwrap();
        assert!(report.applied.is_empty());
        assert_eq!(report.skipped.len(), 2);
        assert!(matches!(report.skipped[0].reason, PassError::InvalidBound { .. }));
        assert_eq!(m, before, "nothing half-applied");

        let uint8 = BoundRequest {
            site: sites[0].clone(),
            bound: Bound::scalar(1.0),
            elem_type: 2,
        };
        let report = bound_activations(&mut m, &[uint8], Mode::Zero).unwrap();
        assert!(matches!(
            report.skipped[0].reason,
            PassError::UnsupportedElemType { elem_type: 2, .. }
        ));

        let mut old = model(8, 3);
        assert_eq!(
            bound_activations(&mut old, &[], Mode::Zero),
            Err(PassError::OpsetTooOld(8))
        );
    }
}
