//! # bound_activations — bound each activation's output with bound tensors
//!
//! A `Relu` is replaced by a bounded Relu; any other activation (`activations`: operators and
//! decomposed forms) keeps its nodes and gets the bound after its output.
//!
//! **Before**
//! ```text
//! Y = Relu(X)
//! ```
//! **After**, `mode = zero` (FitAct, FT-ClipAct: y = x for 0 < x <= B, else 0; NaN and +Inf give 0)
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
//!
//! **After**, `Emission::ReluFirst` (the same functions; the Relu stays, so a runtime fuses it
//! into the convolution before it, and the bound follows it)
//! ```text
//! zero:                          R = Relu(X)   K = LessOrEqual(R, B)   Y = Where(K, R, 0)
//!                                (opset 9-11: Less(R, next_up(B)))
//! saturate, scalar B, opset >= 11:  Y = Clip(X, 0, B)
//! saturate, otherwise:           R = Relu(X)   Y = Min(R, B)
//! ```
//! A NaN becomes NaN in `Relu`, fails the comparison and becomes 0, as +Inf does.
//!
//! **After**, `Emission::NegatedThreshold` (zero mode, scalar B, opset >= 10; only for a Relu
//! whose input is -x / b, as `fold_channel_bounds` with `negate` leaves it: Y is then -y / b)
//! ```text
//! N = Clip(X, max = 0)           (= -relu(x / b); runtimes fuse it into the convolution)
//! Y = ThresholdedRelu(N, alpha = -next_up(B))    (N where N > -next_up(B), i.e. -N <= B; else 0)
//! ```
//! One element-wise pass after the fused convolution. NaN and -Inf (from +Inf) fail `N > alpha`
//! and become 0. B is an attribute here: no stored bound tensor (the per-channel bounds are in
//! the rescaled weights).
//!
//! B is an initializer of shape `[]` (layer), `[C, 1, ..]` (channel) or the activation's shape
//! without batch (neuron), so it broadcasts against `[N, C, ..]`. `Y` keeps its name, so
//! consumers and graph outputs are untouched.
//!
//! **After**, `Emission::ScaledThreshold` (zero mode, opset >= 10, float32, no bound below;
//! for a Relu, or an activation whose bounds above are all > 0; the same function with one
//! comparison that runtimes run fast, where a bound cannot be folded into weights: a Relu read
//! by a residual `Add`, a tensor bound)
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
//! activation bounded above only makes it from finite values); a bound of 0 stores S = -Inf (0 x -Inf = NaN, and x > 0 gives -Inf: both become
//! 0; 0 / -Inf = -0). One stored tensor, S, on the values' path: a fault that scales it scales
//! the bound, as a fault in B would, and leaves kept values as they are; the last
//! `ThresholdedRelu` is there for the faults that make it NaN (a mantissa flip of -Inf, an
//! exponent flip of a value in [1, 2) or of 2^127 and above), after which `Q` would be NaN
//! (0 / NaN): Y is then 0, the value dropped, as `Where(LessOrEqual(R, NaN), R, 0)` drops it.
//! Without it, one flip of one value of S sent NaN through the rest of the network
//! (measured: an AlexNet fixture trial at 9% instead of 94% at float32 BER 1e-5). A value
//! with no such scale (none within `SCALE_SEARCH` ulps of -1/B; none was found for any float32
//! the tests tried) leaves the request to the caller. onnxruntime runs these four in about
//! two thirds of the time of `LessOrEqual` + `Where` (ResNet-50:
//! `docs/results/deployment_2026-12-03.md`).
//!
//! **Before** (any other activation `A`: an operator, or the last node of a decomposed form)
//! ```text
//! Y = A(X)
//! ```
//! **After**, with H the bound above and, when given, L the bound below (`low`):
//! ```text
//! R = A(X)                                           (the node now writes R instead of Y)
//! zero:      K = LessOrEqual(R, H)  [K2 = GreaterOrEqual(R, L)  K = And(K, K2)]   Y = Where(K, R, 0)
//!            (before opset 12: Less(R, next_up(H)), Greater(R, next_down(L)))
//! saturate:  C = Clip(R, L, H) (scalars, opset >= 11) or Max(Min(R, H), L)       Y = Where(IsNaN(R), 0, C)
//! ```
//! Values outside [L, H] (or above H) become 0, or the nearest bound; NaN always becomes 0 (it
//! fails every comparison; `IsNaN` catches it for saturate). Without L, the activation cannot
//! go negative (`ActivationSite::nonnegative`), so one comparison is all it costs.
//!
//! **When it applies**: the node at the site is still a default-domain node of the site's
//! operator type writing the site's output (for a Relu, reading its input too) and
//! the model's default opset is at least 9; the activation is float32 or float64; the bounds
//! are finite, have as many values as their dims say, a Relu's are non-negative and have no
//! `low`, and `low <= high` everywhere. A node that fails a condition is left as it is and reported as skipped; a node
//! is rewritten whole or not at all.
//!
//! **Names**: every added node, tensor and initializer is named `<relu>/fitact/<role>` after
//! the activation (its node name, or its output's), made unique against every name in the
//! model; an unnamed activation node is named `<output>/fitact/node`. Models with IR version < 4 also list each added initializer as a graph input.

use crate::activations::{ActivationKind, ActivationSite};
use crate::error::PassError;
use crate::graph::{default_opset, graph_at_mut};
use crate::names::NameAllocator;
use crate::onnx::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    attribute_proto, tensor_shape_proto, type_proto,
};
use crate::tensor::{DOUBLE, FLOAT, float_tensor};

/// Which nodes a bounded Relu gets (the header's forms); other activations are emitted alike.
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

/// One request's emission: the graph holding its site, what to bound, and what every form
/// needs of the model (the mode, the opset, whether added initializers are also listed as graph
/// inputs, the names already taken).
struct Emit<'a> {
    graph: &'a mut GraphProto,
    request: &'a BoundRequest,
    mode: Mode,
    opset: i64,
    declare_inputs: bool,
    names: SiteNames<'a>,
}

/// Fresh names for what one site's bound adds: `<activation>/fitact/<role>`, made unique
/// against every name in the model.
struct SiteNames<'a> {
    names: &'a mut NameAllocator,
    stem: String,
}

impl SiteNames<'_> {
    fn fresh(&mut self, role: &str) -> String {
        self.names.fresh(&format!("{}/{role}", self.stem))
    }
}

/// Which comparison keeps a value in `zero` mode: the only opset-dependent choice of the pass.
#[derive(Debug, Clone, Copy, PartialEq)]
enum KeepTest {
    LessOrEqual,
    LessThanNextUp,
}

fn keep_test(opset: i64) -> KeepTest {
    if opset >= 12 {
        KeepTest::LessOrEqual
    } else {
        KeepTest::LessThanNextUp
    }
}

fn saturate_with_clip(opset: i64, bound: &Bound) -> bool {
    opset >= 11 && bound.is_scalar()
}

/// The next float32 above (`up`) or below a finite value.
fn next_f32(v: f32, up: bool) -> f32 {
    if v == 0.0 {
        let tiny = f32::from_bits(1);
        return if up { tiny } else { -tiny };
    }
    let bits = v.to_bits();
    f32::from_bits(if (v > 0.0) == up { bits + 1 } else { bits - 1 })
}

/// The next float64 above (`up`) or below a finite value.
fn next_f64(v: f64, up: bool) -> f64 {
    if v == 0.0 {
        let tiny = f64::from_bits(1);
        return if up { tiny } else { -tiny };
    }
    let bits = v.to_bits();
    f64::from_bits(if (v > 0.0) == up { bits + 1 } else { bits - 1 })
}

/// Which way a stored bound is stepped: so that a strict comparison against it is the
/// inclusive comparison against the bound.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    None,
    /// The next float above: `x < stored` iff `x <= B`.
    Up,
    /// The next float below: `x > stored` iff `x >= B`.
    Down,
}

/// A bound tensor as stored, in the stored precision, stepped as asked.
fn bound_tensor(name: &str, dims: &[i64], values: &[f32], elem_type: i32, step: Step) -> TensorProto {
    let mut tensor = float_tensor(name, dims, values, elem_type);
    if step != Step::None && elem_type == crate::tensor::FLOAT16 {
        let up = step == Step::Up;
        let stepped = values
            .iter()
            .map(|v| f32::from(crate::tensor::next_f16(half::f16::from_f32(*v), up)));
        tensor.raw_data = Some(stepped.flat_map(|v| half::f16::from_f32(v).to_le_bytes()).collect());
    } else if step != Step::None {
        let up = step == Step::Up;
        tensor.raw_data = Some(if elem_type == DOUBLE {
            values
                .iter()
                .flat_map(|v| next_f64(f64::from(*v), up).to_le_bytes())
                .collect()
        } else {
            values.iter().flat_map(|v| next_f32(*v, up).to_le_bytes()).collect()
        });
    }
    tensor
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
                    (ActivationKind::Relu, Emission::Plain) => rewrite,
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

/// Checks every condition of the header before anything is touched.
fn match_site(model: &mut ModelProto, request: &BoundRequest) -> Result<(), PassError> {
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
fn match_emission(request: &BoundRequest, mode: Mode, opset: i64, emission: Emission) -> Result<(), PassError> {
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

/// How many ulps either side of -1/B `exact_scale` tries.
const SCALE_SEARCH: i64 = 16;

/// The stored scale S (< 0) of `Emission::ScaledThreshold` for a bound `b >= 0`, and the bound
/// it enforces: `-(r * S) <= 1` (float32 products) holds for every float32 `r <= bound` and
/// fails for every `r > bound`, where `bound` is `b` or, when no scale gives `b` itself (the
/// floats near -1/b are spaced more widely than the scales that would give `b`: 2,740 of
/// 20,000 random bounds in [0, 20)), the float just below `b`. The product is monotone in r, so checking `bound` and
/// the next float above it is checking them all. None if no scale within `SCALE_SEARCH` ulps
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

fn node(op_type: &str, name: String, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: Some(op_type.to_owned()),
        name: Some(name),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: vec![output.to_owned()],
        ..Default::default()
    }
}

fn tensor_input(name: &str, elem_type: i32, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(tensor_shape_proto::dimension::Value::DimValue(*d)),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_owned()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem_type),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn rewrite(emit: Emit) -> Applied {
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

fn add_initializers(graph: &mut GraphProto, initializers: Vec<TensorProto>, as_inputs: bool, elem_type: i32) {
    if as_inputs {
        for init in &initializers {
            graph.input.push(tensor_input(init.name(), elem_type, &init.dims));
        }
    }
    graph.initializer.extend(initializers);
}

/// A Relu in `Emission::ReluFirst`: the Relu stays and writes R, the bound follows it.
fn relu_first(emit: Emit) -> Applied {
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
        let bounded = if saturate_in_one { rewrite } else { bound_after };
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

/// `ThresholdedRelu(input)` (x where x > alpha, else 0) writing `output`.
fn thresholded_relu(name: String, input: &str, output: &str, alpha: f32) -> NodeProto {
    let mut threshold = node("ThresholdedRelu", name, &[input], output);
    threshold.attribute.push(float_attribute("alpha", alpha));
    threshold
}

fn float_attribute(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_owned()),
        f: Some(value),
        r#type: Some(attribute_proto::AttributeType::Float as i32),
        ..Default::default()
    }
}

/// A Relu in `Emission::NegatedThreshold`: the Relu becomes `Clip(X, max = 0)` writing N, and
/// `ThresholdedRelu` writes Y. Its bound is an attribute, so `bound_initializer` is empty.
fn negated_threshold(emit: Emit) -> Applied {
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

/// `Emission::ScaledThreshold`: the activation's node (a Relu stays a Relu) now writes R, and
/// `Mul`, `ThresholdedRelu`, `Div`, `ThresholdedRelu` write Y. `bound_initializer` is S, which
/// holds about -1/B.
fn scaled_threshold(emit: Emit) -> Applied {
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

/// Any activation but Relu: its node now writes a fresh tensor R, and the bounding nodes
/// read R and write the activation's output under its old name.
fn bound_after(emit: Emit) -> Applied {
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

/// The activation's node now writes `raw`, and `nodes` (which read it) follow it; returns the
/// names of the activation's node and of `nodes`. The activation's node is named (by
/// `fresh_name`) if it was not, so that the nodes whose outputs changed can be found by name.
fn rewire(
    graph: &mut GraphProto,
    site: &ActivationSite,
    raw: &str,
    nodes: Vec<NodeProto>,
    fresh_name: impl FnOnce() -> String,
) -> Vec<String> {
    let unnamed = graph.node[site.node].name().is_empty();
    let name = unnamed.then(fresh_name);
    let activation = &mut graph.node[site.node];
    if let Some(name) = name {
        activation.name = Some(name);
    }
    activation.output[0] = raw.to_owned();
    let mut node_names = vec![activation.name().to_owned()];
    node_names.extend(nodes.iter().map(|n| n.name().to_owned()));
    graph.node.splice(site.node + 1..site.node + 1, nodes);
    node_names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activations::find_relus;
    use crate::onnx::{GraphProto, OperatorSetIdProto};
    use crate::tensor::float_values;

    fn model(opset: i64, ir: i64) -> ModelProto {
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

    fn run(opset: i64, ir: i64, mode: Mode, bound: Bound) -> (ModelProto, PassReport) {
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

    fn ops(m: &ModelProto) -> Vec<&str> {
        m.graph.as_ref().unwrap().node.iter().map(|n| n.op_type()).collect()
    }

    fn initializer<'a>(m: &'a ModelProto, name: &str) -> &'a TensorProto {
        m.graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .find(|t| t.name() == name)
            .unwrap()
    }

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

    #[test]
    fn strict_comparison_stores_the_next_float_up() {
        let (m, report) = run(
            9,
            7,
            Mode::Zero,
            Bound {
                dims: vec![2],
                values: vec![1.0, 0.0],
                low: None,
            },
        );
        let stored = float_values(initializer(&m, &report.applied[0].bound_initializer)).unwrap();
        assert_eq!(
            stored,
            vec![
                f64::from(f32::from_bits(1.0f32.to_bits() + 1)),
                f64::from(f32::from_bits(1))
            ]
        );
        let (m, report) = run(
            12,
            7,
            Mode::Zero,
            Bound {
                dims: vec![2],
                values: vec![1.0, 0.0],
                low: None,
            },
        );
        assert_eq!(
            float_values(initializer(&m, &report.applied[0].bound_initializer)).unwrap(),
            vec![1.0, 0.0]
        );
    }

    #[test]
    fn names_follow_the_relu_and_never_collide() {
        let (m, report) = run(13, 7, Mode::Zero, Bound::scalar(1.0));
        let first = &report.applied[0];
        assert_eq!(first.bound_initializer, "r/fitact/bound_1");
        assert_eq!(first.nodes, vec!["r/fitact/le", "r/fitact/where", "r/fitact/max"]);
        // The unnamed Relu is named after its output tensor.
        assert_eq!(report.applied[1].bound_initializer, "r/fitact/bound/fitact/bound");
        let graph = m.graph.as_ref().unwrap();
        // Outputs keep their names, so consumers are untouched.
        assert_eq!(graph.node[2].output, vec!["y"]);
        assert_eq!(graph.node[5].output, vec!["r/fitact/bound"]);
        let mut names: Vec<&str> = graph.initializer.iter().map(|t| t.name()).collect();
        names.extend(graph.node.iter().map(|n| n.name()));
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        assert!(graph.input.is_empty(), "IR 7 does not list initializers as inputs");
    }

    #[test]
    fn ir3_lists_added_initializers_as_graph_inputs() {
        let (m, _) = run(9, 3, Mode::Saturate, Bound::scalar(2.0));
        let graph = m.graph.as_ref().unwrap();
        let inputs: Vec<&str> = graph.input.iter().map(|i| i.name()).collect();
        let inits: Vec<&str> = graph.initializer.iter().map(|t| t.name()).collect();
        assert_eq!(inputs, inits);
    }

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
