//! # bound_activations — bound each activation's output with bound tensors
//!
//! **Before**: `Y = A(X)`, an activation found by `activations` (a `Relu`, another operator, or
//! the last node of a decomposed form).
//!
//! **After**: `Y` is the activation's output bounded by B (and, for a two-sided bound, from
//! below by L), under the same name, so consumers and graph outputs are untouched.
//! `mode = zero` (FitAct, FT-ClipAct): y = x for 0 < x <= B (L <= x <= B), else 0, NaN and
//! +Inf included; `mode = saturate` (Ranger): y = min(max(x, 0), B) (clamped to [L, B]), NaN
//! to 0. A Relu is replaced by a bounded Relu in the form its `Emission` asks for; any other
//! activation keeps its nodes and gets the bound after its output. One file per form, each
//! with its nodes and why: `plain.rs` (`Emission::Plain`, the default), `relu_first.rs`,
//! `negated_threshold.rs` (the threshold after `fold_channel_bounds` with `negate`),
//! `scaled_threshold.rs` (any activation), `bound_after.rs` (activations other than Relu).
//! B is stored as an initializer (`bound_tensors.rs`) of shape `[]` (layer), `[C, 1, ..]`
//! (channel) or the activation's shape without batch (neuron), broadcasting against
//! `[N, C, ..]`; `negated_threshold` stores it as an attribute, `scaled_threshold` as -1/B.
//!
//! **When it applies** (`conditions.rs`): the node at the site is still a default-domain node
//! of the site's operator type writing the site's output (for a Relu, reading its input too)
//! and the model's default opset is at least 9; the activation is float32, float64 or
//! float16; the bounds are finite, have as many values as their dims say, a Relu's are
//! non-negative and have no `low`, and `low <= high` everywhere; and the emission's own
//! conditions hold. A node that fails a condition is left as it is and reported as skipped; a
//! node is rewritten whole or not at all.
//!
//! **Names** (`site_nodes.rs`): every added node, tensor and initializer is named
//! `<relu>/fitact/<role>` after the activation (its node name, or its output's), made unique
//! against every name in the model; an unnamed activation node is named
//! `<output>/fitact/node`. Models with IR version < 4 also list each added initializer as a
//! graph input.

mod bound_after;
mod bound_tensors;
mod conditions;
mod negated_threshold;
mod plain;
mod relu_first;
mod scaled_threshold;
mod site_nodes;
pub(crate) use site_nodes::node;

pub use scaled_threshold::{exact_scale, scaled_threshold_applies};

use crate::activations::{ActivationKind, ActivationSite};
use crate::error::PassError;
use crate::graph::{default_opset, graph_at_mut};
use crate::names::NameAllocator;
use crate::onnx::ModelProto;
use bound_after::bound_after;
use conditions::{match_emission, match_site};
use negated_threshold::negated_threshold;
use plain::plain;
use relu_first::relu_first;
use scaled_threshold::scaled_threshold;
use site_nodes::{Emit, SiteNames};

/// Which nodes a bounded Relu gets (one file per form: `plain.rs`, `relu_first.rs`, ...); other
/// activations are emitted alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Emission {
    /// `LessOrEqual`/`Where`/`Max` (zero), `Clip` or `Max`/`Min` (saturate).
    #[default]
    Plain,
    /// The Relu kept, the bound after it.
    ReluFirst,
    /// `Clip(max 0)` and `ThresholdedRelu` on a negated, folded input (`fold_channel_bounds`).
    NegatedThreshold,
    /// `Mul` by S = -1/B, `ThresholdedRelu`, `Div` by S, `ThresholdedRelu` (NaN to 0) after the
    /// activation (zero mode, tensor or scalar bounds): for any activation, not only Relus.
    ScaledThreshold,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// x for 0 < x <= B, 0 otherwise (NaN and +Inf included).
    Zero,
    /// min(max(x, 0), B).
    Saturate,
}

/// A bound tensor: `values` (the bound above) in row-major order for `dims` (empty dims: a
/// scalar), and for two-sided bounds the bound below, `low`, of the same shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    pub dims: Vec<i64>,
    pub values: Vec<f32>,
    pub low: Option<Vec<f32>>,
}

impl Bound {
    pub fn scalar(value: f32) -> Self {
        Bound {
            dims: Vec::new(),
            values: vec![value],
            low: None,
        }
    }
    pub fn is_scalar(&self) -> bool {
        self.dims.is_empty()
    }
}

/// What to bound: the site found by discovery, its bound, and the activation's element type.
#[derive(Debug, Clone)]
pub struct BoundRequest {
    pub site: ActivationSite,
    pub bound: Bound,
    pub elem_type: i32,
}

/// One rewritten activation: the initializers holding its bounds, and the nodes whose outputs
/// changed (those that replaced a Relu; for another activation, its node, which now writes R,
/// and the nodes added after it).
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub site: ActivationSite,
    pub bound_initializer: String,
    pub low_initializer: Option<String>,
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub site: ActivationSite,
    pub reason: PassError,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PassReport {
    pub applied: Vec<Applied>,
    pub skipped: Vec<Skipped>,
}

/// Rewrites every requested activation in the plain forms. Model-level problems (no graph,
/// opset < 9) are errors; a request that does not match is skipped with its reason and leaves
/// its node as is.
pub fn bound_activations(
    model: &mut ModelProto,
    requests: &[BoundRequest],
    mode: Mode,
) -> Result<PassReport, PassError> {
    bound_activations_with(model, requests, mode, &vec![Emission::Plain; requests.len()])
}

/// As `bound_activations`, with the emission of each request's Relu (`emissions[i]` for
/// `requests[i]`; other activations ignore it).
pub fn bound_activations_with(
    model: &mut ModelProto,
    requests: &[BoundRequest],
    mode: Mode,
    emissions: &[Emission],
) -> Result<PassReport, PassError> {
    if emissions.len() != requests.len() {
        return Err(PassError::Invalid(format!(
            "{} emissions for {} requests",
            emissions.len(),
            requests.len()
        )));
    }
    let opset = default_opset(model)?;
    if opset < 9 {
        return Err(PassError::OpsetTooOld(opset));
    }
    if model.graph.is_none() {
        return Err(PassError::NoGraph);
    }
    // Only a main graph lists its initializers as inputs; a subgraph's inputs are its signature.
    let declare_initializers_as_inputs = model.ir_version() < 4;
    let mut names = NameAllocator::for_model(model);

    // Deepest graphs first, and within a graph from the last node back: a rewrite shifts the
    // indices of later nodes only, and paths into subgraphs go through parent indices.
    let mut order: Vec<(&BoundRequest, Emission)> = requests.iter().zip(emissions.iter().copied()).collect();
    order.sort_by(|(a, _), (b, _)| {
        (b.site.graph.0.len(), &b.site.graph, b.site.node).cmp(&(a.site.graph.0.len(), &a.site.graph, a.site.node))
    });

    let mut report = PassReport::default();
    for (request, emission) in order {
        let site = &request.site;
        let outcome = match_site(model, request)
            .and_then(|()| match_emission(request, mode, opset, emission))
            .and_then(|()| {
                let graph = graph_at_mut(model, &site.graph)?;
                let rewrite = match (site.kind, emission) {
                    (ActivationKind::Relu, Emission::Plain) => plain,
                    (ActivationKind::Relu, Emission::ReluFirst) => relu_first,
                    (ActivationKind::Relu, Emission::NegatedThreshold) => negated_threshold,
                    (_, Emission::ScaledThreshold) => scaled_threshold,
                    _ => bound_after,
                };
                Ok(rewrite(Emit {
                    graph,
                    request,
                    mode,
                    opset,
                    declare_inputs: declare_initializers_as_inputs && site.graph.is_main(),
                    names: SiteNames {
                        names: &mut names,
                        stem: format!("{}/fitact", site.stem()),
                    },
                }))
            });
        match outcome {
            Ok(applied) => report.applied.push(applied),
            Err(reason) => report.skipped.push(Skipped {
                site: site.clone(),
                reason,
            }),
        }
    }
    // Report in model order, whatever order the rewrites ran in.
    let position = |s: &ActivationSite| (s.graph.clone(), s.node);
    report.applied.sort_by_key(|a| position(&a.site));
    report.skipped.sort_by_key(|s| position(&s.site));
    Ok(report)
}

#[cfg(test)]
mod tests {
    //! What the tests of the forms share: a model of two Relus, bounded in the plain forms.
    use super::*;
    use crate::activations::find_relus;
    use crate::onnx::{GraphProto, NodeProto, OperatorSetIdProto, TensorProto};
    use crate::tensor::FLOAT;

    pub(super) fn model(opset: i64, ir: i64) -> ModelProto {
        let relu = |name: &str, x: &str, y: &str| NodeProto {
            name: Some(name.into()),
            op_type: Some("Relu".into()),
            input: vec![x.into()],
            output: vec![y.into()],
            ..Default::default()
        };
        ModelProto {
            ir_version: Some(ir),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(opset),
            }],
            graph: Some(GraphProto {
                // A tensor already uses the name the pass would pick first.
                node: vec![relu("r", "x", "y"), relu("", "y", "r/fitact/bound")],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub(super) fn run(opset: i64, ir: i64, mode: Mode, bound: Bound) -> (ModelProto, PassReport) {
        let mut m = model(opset, ir);
        let requests: Vec<BoundRequest> = find_relus(&m)
            .into_iter()
            .map(|site| BoundRequest {
                site,
                bound: bound.clone(),
                elem_type: FLOAT,
            })
            .collect();
        let report = bound_activations(&mut m, &requests, mode).unwrap();
        (m, report)
    }

    pub(super) fn ops(m: &ModelProto) -> Vec<&str> {
        m.graph.as_ref().unwrap().node.iter().map(|n| n.op_type()).collect()
    }

    pub(super) fn initializer<'a>(m: &'a ModelProto, name: &str) -> &'a TensorProto {
        m.graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .find(|t| t.name() == name)
            .unwrap()
    }
}
