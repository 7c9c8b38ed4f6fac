//! The whole graph path on arbitrary bytes, for fuzzing and for replaying its corpus in the
//! test suite: decode, validate, find every activation (operators and decomposed forms), bound
//! each with a unit scalar bound (two-sided, [-1, 1], where the activation can be negative;
//! zero mode, then saturate mode on a copy), encode, and decode again. Bad input must come back as
//! an error, never as a panic, and what the pass writes must decode.

use crate::activations::find_activations;
use crate::bound_activations::{Bound, BoundRequest, Mode, bound_activations};
use crate::onnx::ModelProto;
use crate::tensor::FLOAT;
use crate::validate::validate;
use prost::Message;

/// Runs the path; `Ok(n)` is the number of activations bounded in each mode.
pub fn harden_bytes(bytes: &[u8]) -> Result<usize, String> {
    let model = ModelProto::decode(bytes).map_err(|e| e.to_string())?;
    validate(&model).map_err(|e| e.to_string())?;
    let requests: Vec<BoundRequest> = find_activations(&model)
        .into_iter()
        .map(|site| {
            let mut bound = Bound::scalar(1.0);
            if !site.nonnegative {
                bound.low = Some(vec![-1.0]);
            }
            BoundRequest {
                site,
                bound,
                elem_type: FLOAT,
            }
        })
        .collect();
    let mut applied = 0;
    for mode in [Mode::Zero, Mode::Saturate] {
        let mut rewritten = model.clone();
        let report = bound_activations(&mut rewritten, &requests, mode).map_err(|e| e.to_string())?;
        let encoded = rewritten.encode_to_vec();
        let again = ModelProto::decode(encoded.as_slice()).expect("what the pass writes decodes");
        assert_eq!(again, rewritten, "encode/decode round trip");
        validate(&again).expect("the pass keeps a valid model valid");
        applied = report.applied.len();
    }
    Ok(applied)
}
