//! # fold_channel_bounds — per-channel Relu bounds made scalar by rescaling the weights around them
//!
//! relu(x / b) = relu(x) / b for b > 0, and a bound b on relu(x) is the bound 1 on relu(x / b).
//! So the producer's output channel c is divided by b_c, the Relu is bounded by the scalar 1
//! (which runtimes fuse: onnxruntime runs `Conv` + scalar `Clip` as one kernel), and every
//! consumer multiplies its input channel c by b_c. This pass does only the rescaling; the
//! caller then bounds the Relu by `Bound::scalar(1.0)` (`bound_activations`).
//!
//! **Before** (channel bounds b, a Conv producer and a Conv consumer, as an example)
//! ```text
//! X = Conv(A, W, Bias)   Y = Relu(X)           Y bounded by b[c]     Z = Conv(Y, V, ..)
//! ```
//! **After**
//! ```text
//! X' = Conv(A, W', Bias')  Y' = Relu(X')       Y' bounded by 1       Z = Conv(Y', V', ..)
//! W'[c, ..] = s_c W[c, ..]   Bias'[c] = s_c Bias[c]   V'[.., c, ..] = t_c V[.., c, ..]
//! ```
//! with s_c = 1 / b_c and t_c = b_c. Then Y' = Y / b channel by channel, and Z is unchanged up to
//! float rounding (each weight is rounded once more; a value within that rounding of its bound
//! may land on the other side of it). With `negate` (zero mode), s_c = -1 / b_c and t_c = -b_c:
//! the Relu's input is then -x / b, and the caller bounds it with the negated form of
//! `bound_activations` (`Emission::NegatedThreshold`), whose output is -y / b.
//!
//! A channel whose bound is 0 (never positive on the calibration data) keeps s_c = 1 (-1 when
//! negated) and gets t_c = 0: its bounded value (0 <= y' <= 1, never NaN or Inf once bounded)
//! reaches no consumer, as the bound 0 would have made it 0.
//!
//! **When it applies** (all of it, or the site is left as it is and reported with the reason):
//! - the site is a `Relu` of the main graph, its bound is per channel (dims `[C, 1, ..]`, finite,
//!   >= 0), its element type float32;
//! - its input X is read by the Relu alone (no subgraph reads it) and is no graph output, and is written by a `Conv`
//!   (weights `[C, ..]`, optional bias `[C]`), a `Gemm` (output columns: B `[K, C]`, or `[C, K]`
//!   with `transB`; optional bias C `[C]` or `[1, C]`) or a `BatchNormalization` (scale and
//!   bias `[C]`; one output), whose rescaled tensors are float32 initializers used by no other
//!   node and no subgraph;
//! - every consumer of Y (none inside a subgraph), followed through `MaxPool`, `GlobalMaxPool` (one output; only without
//!   `negate`: max does not commute with a negative scale), `AveragePool` and
//!   `GlobalAveragePool` (each commutes with a per-channel scale), is a `Conv` reading it as its
//!   data input (grouped convolutions included) or, through a `Flatten` with `axis = 1`, a
//!   `Gemm` reading it as A without `transA`, whose weights are float32 initializers used by no
//!   other node; no tensor on the way is a graph output;
//! - every rescaled value is finite.
//!
//! Where it does not apply, e.g. a Relu after a residual `Add` (the other branch cannot be
//! rescaled), a graph output or a consumer that is not linear in its input, the caller keeps
//! the per-channel bound tensor.

use crate::activations::{ActivationKind, ActivationSite};
use crate::bound_activations::BoundRequest;
use crate::graph::for_each_graph;
use crate::names::NameAllocator;
use crate::onnx::{GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto};
use crate::tensor::FLOAT;
use std::collections::{HashMap, HashSet};

/// One folded site: the index of its request, whether it was negated, and the initializers
/// rescaled (the producer's first).
#[derive(Debug, Clone, PartialEq)]
pub struct Folded {
    pub index: usize,
    pub negated: bool,
    pub rescaled: Vec<String>,
}

/// A site left unfolded, with the first condition that failed.
#[derive(Debug, Clone, PartialEq)]
pub struct NotFolded {
    pub index: usize,
    pub site: ActivationSite,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FoldReport {
    pub folded: Vec<Folded>,
    pub not_folded: Vec<NotFolded>,
}

/// One initializer to rescale along one of its axes: `factors[c]` multiplies the slice
/// `[outer, c * repeat .. (c + 1) * repeat, inner]` for each channel c.
#[derive(Debug, Clone)]
struct Rescale {
    /// The node reading the tensor, and at which input.
    node: usize,
    slot: usize,
    /// The initializer holding its values (through `Identity` nodes).
    initializer: String,
    /// The node alone reads it: rescaled in place; otherwise the node gets a rescaled copy.
    in_place: bool,
    /// Which kind of slice a channel is.
    layout: Layout,
}

#[derive(Debug, Clone, Copy)]
enum Layout {
    /// Index `c` along `axis` of a tensor of dims `dims` (a producer's output channel, a
    /// bias, a Gemm row or column).
    Axis { axis: usize },
    /// A Conv's input channel c: in group g = c / per_group, index c % per_group along
    /// axis 1, for the output channels of group g only.
    ConvInput { group: usize },
    /// A Gemm reading a flattened `[N, C * spatial]`: channel c is `spatial` consecutive
    /// rows (or columns, with `transB`) of B.
    GemmFlattened { spatial: usize, trans_b: bool },
}

/// Folds every request it can; the others are reported with the reason and left untouched.
/// The caller bounds each folded site by the scalar 1 instead of its request's bound.
pub fn fold_channel_bounds(model: &mut ModelProto, requests: &[BoundRequest], negate: bool) -> FoldReport {
    let shared = subgraph_reads(model);
    let mut names = NameAllocator::for_model(model);
    let declare_inputs = model.ir_version() < 4;
    let mut report = FoldReport::default();
    let Some(graph) = model.graph.as_mut() else {
        return report;
    };
    for (index, request) in requests.iter().enumerate() {
        let site = &request.site;
        match plan(graph, request, &shared, negate) {
            Ok((negated, rewritten)) => {
                let rescaled = rewritten
                    .into_iter()
                    .map(|(rescale, data)| write(graph, &rescale, &data, &mut names, declare_inputs))
                    .collect();
                report.folded.push(Folded {
                    index,
                    negated,
                    rescaled,
                });
            }
            Err(reason) => report.not_folded.push(NotFolded {
                index,
                site: site.clone(),
                reason,
            }),
        }
    }
    report
}

/// The producer's and the consumers' factors: s_c (1 / b_c, or 1 where b_c = 0) and t_c (b_c),
/// both negated with `negate`.
fn factors(bounds: &[f32], negate: bool) -> (Vec<f64>, Vec<f64>) {
    let sign = if negate { -1.0 } else { 1.0 };
    let s = bounds
        .iter()
        .map(|b| if *b > 0.0 { sign / f64::from(*b) } else { sign })
        .collect();
    let t = bounds.iter().map(|b| sign * f64::from(*b)).collect();
    (s, t)
}

/// Names read inside subgraphs (an initializer read there cannot be rescaled for the main
/// graph alone).
fn subgraph_reads(model: &ModelProto) -> HashSet<String> {
    let mut reads = HashSet::new();
    for_each_graph(model, |path, graph| {
        if !path.is_main() {
            for node in &graph.node {
                reads.extend(node.input.iter().cloned());
            }
        }
    });
    reads
}

/// Whether the fold is negated, and each rescaled initializer's new values.
type Plan = (bool, Vec<(Rescale, Vec<f32>)>);

/// Every condition of the header, checked before anything is touched.
fn plan(graph: &GraphProto, request: &BoundRequest, shared: &HashSet<String>, negate: bool) -> Result<Plan, String> {
    let site = &request.site;
    let bound = &request.bound;
    if site.kind != ActivationKind::Relu || !site.graph.is_main() {
        return Err("only a Relu of the main graph is folded".into());
    }
    if request.elem_type != FLOAT {
        return Err("only float32 activations are folded".into());
    }
    let channels = bound.values.len();
    let per_channel = bound.dims.first() == Some(&(channels as i64)) && bound.dims[1..].iter().all(|d| *d == 1);
    if bound.is_scalar() || !per_channel || bound.low.is_some() {
        return Err(format!("bound dims {:?} are not per channel", bound.dims));
    }
    if bound.values.iter().any(|b| !b.is_finite() || *b < 0.0) {
        return Err("a bound is not finite and >= 0".into());
    }
    let node = graph.node.get(site.node).ok_or("the site's node is gone")?;
    if node.op_type() != "Relu" || node.input.first() != Some(&site.input) || node.output.first() != Some(&site.output)
    {
        return Err("the site's node is no longer its Relu".into());
    }
    let uses = Uses::of(graph, shared);
    if uses.readers(&site.input).len() != 1 || uses.is_output(&site.input) || shared.contains(&site.input) {
        return Err(format!("{} is read by more than the Relu", site.input));
    }
    let producer = producer_rescales(graph, &uses, &site.input, channels)?;
    let (consumers, through_max) = consumer_rescales(graph, &uses, &site.output, channels)?;
    let negated = negate && !through_max;
    let (s, t) = factors(&bound.values, negated);
    let jobs = producer
        .iter()
        .map(|r| (r, &s))
        .chain(consumers.iter().map(|r| (r, &t)));
    let mut rewritten = Vec::new();
    for (rescale, f) in jobs {
        let data = rescaled(uses.initializers[rescale.initializer.as_str()], rescale.layout, f);
        if data.iter().any(|v| !v.is_finite()) {
            return Err(format!("{} would hold a value that is not finite", rescale.initializer));
        }
        rewritten.push((rescale.clone(), data));
    }
    Ok((negated, rewritten))
}

/// Who reads what in the main graph.
struct Uses<'a> {
    graph: &'a GraphProto,
    readers: HashMap<&'a str, Vec<(usize, usize)>>,
    writers: HashMap<&'a str, usize>,
    outputs: HashSet<&'a str>,
    initializers: HashMap<&'a str, &'a TensorProto>,
    shared: &'a HashSet<String>,
}

impl<'a> Uses<'a> {
    fn of(graph: &'a GraphProto, shared: &'a HashSet<String>) -> Self {
        let mut readers: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
        let mut writers = HashMap::new();
        for (i, node) in graph.node.iter().enumerate() {
            for (slot, input) in node.input.iter().enumerate() {
                readers.entry(input.as_str()).or_default().push((i, slot));
            }
            for output in &node.output {
                writers.insert(output.as_str(), i);
            }
        }
        Uses {
            graph,
            readers,
            writers,
            outputs: graph.output.iter().map(|o| o.name()).collect(),
            initializers: graph.initializer.iter().map(|t| (t.name(), t)).collect(),
            shared,
        }
    }

    fn readers(&self, tensor: &str) -> &[(usize, usize)] {
        self.readers.get(tensor).map_or(&[], Vec::as_slice)
    }

    fn is_output(&self, tensor: &str) -> bool {
        self.outputs.contains(tensor)
    }

    /// The float32 initializer read as `name` (itself or through `Identity` nodes, as torch
    /// writes weights of equal values once), and whether one node alone reads it.
    fn weight(&self, name: &str) -> Result<(&'a TensorProto, bool), String> {
        let mut source = name;
        let tensor = loop {
            if let Some(tensor) = self.initializers.get(source) {
                break *tensor;
            }
            match self.writers.get(source).map(|w| &self.graph.node[*w]) {
                Some(identity) if identity.op_type() == "Identity" && identity.input.len() == 1 => {
                    source = &identity.input[0];
                }
                _ => return Err(format!("{name} is not an initializer")),
            }
        };
        if tensor.data_type() != FLOAT || values(tensor).is_none() {
            return Err(format!("{name} is not a float32 tensor held in the model"));
        }
        let alone =
            source == name && self.readers(name).len() == 1 && !self.shared.contains(name) && !self.is_output(name);
        Ok((tensor, alone))
    }

    /// How to rescale input `slot` of node `node`.
    fn rescale(&self, node: usize, slot: usize, layout: Layout) -> Result<Rescale, String> {
        let (tensor, in_place) = self.weight(&self.graph.node[node].input[slot])?;
        Ok(Rescale {
            node,
            slot,
            initializer: tensor.name().to_owned(),
            in_place,
            layout,
        })
    }
}

fn int_attribute(node: &NodeProto, name: &str, default: i64) -> i64 {
    node.attribute
        .iter()
        .find(|a| a.name() == name)
        .and_then(|a| a.i)
        .unwrap_or(default)
}

const CHANNELS_FIRST: Layout = Layout::Axis { axis: 0 };

/// The tensors that write output channel c of `x`'s producer.
fn producer_rescales(graph: &GraphProto, uses: &Uses, x: &str, channels: usize) -> Result<Vec<Rescale>, String> {
    let writer = *uses
        .writers
        .get(x)
        .ok_or_else(|| format!("{x} is not written by a node"))?;
    let node = &graph.node[writer];
    let c = channels as i64;
    let dims = |slot: usize| uses.weight(&node.input[slot]).map(|(t, _)| t.dims.clone());
    let has_dims = |slot: usize, want: &[&[i64]]| -> Result<(), String> {
        let d = dims(slot)?;
        if want.contains(&d.as_slice()) {
            Ok(())
        } else {
            Err(format!("{} has dims {d:?}", node.input[slot]))
        }
    };
    let given = |slot: usize| node.input.get(slot).is_some_and(|n| !n.is_empty());
    let mut rescales = Vec::new();
    match node.op_type() {
        "Conv" if node.input.len() >= 2 => {
            let w = dims(1)?;
            if w.first() != Some(&c) {
                return Err(format!("{} has dims {w:?}", node.input[1]));
            }
            rescales.push(uses.rescale(writer, 1, CHANNELS_FIRST)?);
            if given(2) {
                has_dims(2, &[&[c]])?;
                rescales.push(uses.rescale(writer, 2, CHANNELS_FIRST)?);
            }
        }
        "Gemm" if node.input.len() >= 2 => {
            let b = dims(1)?;
            let column = usize::from(int_attribute(node, "transB", 0) == 0);
            if b.len() != 2 || b[column] != c {
                return Err(format!("{} has dims {b:?}", node.input[1]));
            }
            rescales.push(uses.rescale(writer, 1, Layout::Axis { axis: column })?);
            if given(2) {
                has_dims(2, &[&[c], &[1, c]])?;
                let axis = dims(2)?.len() - 1;
                rescales.push(uses.rescale(writer, 2, Layout::Axis { axis })?);
            }
        }
        "BatchNormalization" if node.input.len() == 5 && node.output.len() == 1 => {
            for slot in [1, 2] {
                has_dims(slot, &[&[c]])?;
                rescales.push(uses.rescale(writer, slot, CHANNELS_FIRST)?);
            }
        }
        other => {
            return Err(format!(
                "{x} is written by a {other}, not a Conv, Gemm or BatchNormalization"
            ));
        }
    }
    Ok(rescales)
}

/// The tensors that read channel c of `y`, and whether the way there passes a max.
fn consumer_rescales(
    graph: &GraphProto,
    uses: &Uses,
    y: &str,
    channels: usize,
) -> Result<(Vec<Rescale>, bool), String> {
    let c = channels as i64;
    let mut rescales = Vec::new();
    let mut through_max = false;
    let mut frontier = vec![(y.to_owned(), false)];
    while let Some((tensor, flattened)) = frontier.pop() {
        if uses.is_output(&tensor) {
            return Err(format!("{tensor} is a graph output"));
        }
        if uses.shared.contains(&tensor) {
            return Err(format!("{tensor} is read inside a subgraph"));
        }
        for &(reader, slot) in uses.readers(&tensor) {
            let node = &graph.node[reader];
            let op = node.op_type();
            if slot != 0 {
                return Err(format!("{tensor} is read by a {op} as its input {slot}"));
            }
            let weights = || uses.weight(&node.input[1]).map(|(t, _)| t.dims.clone());
            match (op, flattened) {
                ("Conv", false) if node.input.len() >= 2 => {
                    let w = weights()?;
                    let group = int_attribute(node, "group", 1).max(1);
                    if !(w.len() >= 2 && w[1] * group == c && w[0] % group == 0) {
                        return Err(format!("{} has dims {w:?} for {c} channels", node.input[1]));
                    }
                    let layout = Layout::ConvInput { group: group as usize };
                    rescales.push(uses.rescale(reader, 1, layout)?);
                }
                ("Gemm", true) if node.input.len() >= 2 && int_attribute(node, "transA", 0) == 0 => {
                    let b = weights()?;
                    let trans_b = int_attribute(node, "transB", 0) != 0;
                    let k = b.get(usize::from(trans_b)).copied().unwrap_or(0);
                    if b.len() != 2 || k == 0 || k % c != 0 {
                        return Err(format!("{} has dims {b:?} for {c} channels", node.input[1]));
                    }
                    let spatial = (k / c) as usize;
                    rescales.push(uses.rescale(reader, 1, Layout::GemmFlattened { spatial, trans_b })?);
                }
                ("MaxPool" | "GlobalMaxPool" | "AveragePool" | "GlobalAveragePool", false)
                    if node.output.len() == 1 =>
                {
                    through_max |= op.contains("Max");
                    frontier.push((node.output[0].clone(), false));
                }
                ("Flatten", false) if int_attribute(node, "axis", 1) == 1 => {
                    frontier.push((node.output[0].clone(), true));
                }
                _ => return Err(format!("{tensor} is read by a {op}, which cannot take the scale")),
            }
        }
    }
    Ok((rescales, through_max))
}

fn values(tensor: &TensorProto) -> Option<Vec<f32>> {
    match tensor.raw_data.as_deref() {
        Some(raw) if tensor.float_data.is_empty() => Some(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        None => Some(tensor.float_data.clone()),
        Some(_) => None,
    }
}

/// Writes rescaled values: in place, or as a new initializer named after the source that the
/// node alone reads (with IR < 4 also listed as a graph input). Returns the name written.
fn write(graph: &mut GraphProto, rescale: &Rescale, data: &[f32], names: &mut NameAllocator, declare: bool) -> String {
    let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let source = graph.initializer.iter_mut().find(|t| t.name() == rescale.initializer);
    let source = source.expect("planned on this graph");
    if rescale.in_place {
        source.float_data.clear();
        source.raw_data = Some(raw);
        return rescale.initializer.clone();
    }
    let name = names.fresh(&format!("{}/fitact/folded", rescale.initializer));
    let copy = TensorProto {
        name: Some(name.clone()),
        dims: source.dims.clone(),
        data_type: source.data_type,
        raw_data: Some(raw),
        ..Default::default()
    };
    if declare {
        let declared = graph.input.iter().find(|i| i.name() == rescale.initializer);
        let r#type = declared.and_then(|i| i.r#type.clone());
        graph.input.push(ValueInfoProto {
            name: Some(name.clone()),
            r#type,
            ..Default::default()
        });
    }
    graph.initializer.push(copy);
    graph.node[rescale.node].input[rescale.slot] = name.clone();
    name
}

/// The initializer's values with each channel's slice multiplied by its factor (rounded once,
/// to f32).
fn rescaled(tensor: &TensorProto, layout: Layout, factors: &[f64]) -> Vec<f32> {
    let mut data = values(tensor).expect("checked by exclusive()");
    let dims: Vec<usize> = tensor.dims.iter().map(|d| *d as usize).collect();
    let channel_of = channel_map(&dims, layout, factors.len());
    for (i, v) in data.iter_mut().enumerate() {
        if let Some(c) = channel_of(i) {
            *v = (f64::from(*v) * factors[c]) as f32;
        }
    }
    data
}

/// For a flat index into a tensor of `dims`, the channel whose factor applies to it (None: the
/// value is not rescaled).
fn channel_map(dims: &[usize], layout: Layout, channels: usize) -> Box<dyn Fn(usize) -> Option<usize>> {
    let inner_after = |axis: usize| dims[axis + 1..].iter().product::<usize>();
    match layout {
        Layout::Axis { axis } => {
            let (inner, size) = (inner_after(axis), dims[axis]);
            Box::new(move |i| Some(i / inner % size))
        }
        Layout::ConvInput { group } => {
            let (inner, per_group, outputs_per_group) = (inner_after(1), dims[1], dims[0] / group);
            Box::new(move |i| {
                let (o, j) = (i / (inner * per_group), i / inner % per_group);
                Some(o / outputs_per_group * per_group + j)
            })
        }
        Layout::GemmFlattened { spatial, trans_b } => {
            let columns = dims[1];
            Box::new(move |i| {
                let k = if trans_b { i % columns } else { i / columns };
                let c = k / spatial;
                (c < channels).then_some(c)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activations::find_relus;
    use crate::bound_activations::Bound;
    use crate::onnx::{AttributeProto, OperatorSetIdProto, ValueInfoProto};
    use crate::tensor::float_tensor;

    fn node(op: &str, inputs: &[&str], output: &str, attrs: &[(&str, i64)]) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            name: Some(format!("{op}_{output}")),
            input: inputs.iter().map(|s| (*s).into()).collect(),
            output: vec![output.into()],
            attribute: attrs
                .iter()
                .map(|(n, v)| AttributeProto {
                    name: Some((*n).into()),
                    i: Some(*v),
                    r#type: Some(2),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// x -> Conv(2 -> 3) -> Relu -> `tail` -> out, weights 1, 2, 3, ...
    fn model(tail: Vec<NodeProto>, extra: Vec<TensorProto>) -> ModelProto {
        let count = |dims: &[i64]| dims.iter().product::<i64>() as usize;
        let ramp = |name: &str, dims: &[i64]| {
            let v: Vec<f32> = (1..=count(dims)).map(|i| i as f32).collect();
            float_tensor(name, dims, &v, FLOAT)
        };
        let mut nodes = vec![node("Conv", &["x", "w", "b"], "h", &[]), node("Relu", &["h"], "y", &[])];
        nodes.extend(tail);
        let mut initializer = vec![ramp("w", &[3, 2, 1, 1]), ramp("b", &[3])];
        initializer.extend(extra);
        ModelProto {
            ir_version: Some(8),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(13),
            }],
            graph: Some(GraphProto {
                node: nodes,
                initializer,
                output: vec![ValueInfoProto {
                    name: Some("out".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn request(m: &ModelProto, bounds: &[f32]) -> BoundRequest {
        BoundRequest {
            site: find_relus(m).remove(0),
            bound: Bound {
                dims: vec![bounds.len() as i64, 1, 1],
                values: bounds.to_vec(),
                low: None,
            },
            elem_type: FLOAT,
        }
    }

    fn init(m: &ModelProto, name: &str) -> Vec<f32> {
        values(
            m.graph
                .as_ref()
                .unwrap()
                .initializer
                .iter()
                .find(|t| t.name() == name)
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn conv_to_conv_scales_output_rows_and_input_columns() {
        let v = float_tensor("v", &[2, 3, 1, 1], &[1.0; 6], FLOAT);
        let mut m = model(vec![node("Conv", &["y", "v"], "out", &[])], vec![v]);
        let r = request(&m, &[2.0, 0.5, 0.0]);
        let report = fold_channel_bounds(&mut m, &[r], false);
        assert_eq!(report.not_folded, vec![]);
        assert_eq!(report.folded[0].rescaled, vec!["w", "b", "v"]);
        assert_eq!(init(&m, "w"), vec![0.5, 1.0, 6.0, 8.0, 5.0, 6.0]);
        assert_eq!(init(&m, "b"), vec![0.5, 4.0, 3.0]);
        assert_eq!(init(&m, "v"), vec![2.0, 0.5, 0.0, 2.0, 0.5, 0.0]);
    }

    #[test]
    fn negation_is_refused_through_a_max_and_taken_through_an_average() {
        let v = || float_tensor("v", &[1, 3, 1, 1], &[1.0; 3], FLOAT);
        for (pool, negated) in [("MaxPool", false), ("AveragePool", true)] {
            let tail = vec![node(pool, &["y"], "p", &[]), node("Conv", &["p", "v"], "out", &[])];
            let mut m = model(tail, vec![v()]);
            let r = request(&m, &[1.0, 2.0, 4.0]);
            let report = fold_channel_bounds(&mut m, &[r], true);
            assert_eq!(report.folded[0].negated, negated, "{pool}");
            let sign = if negated { -1.0 } else { 1.0 };
            assert_eq!(init(&m, "v"), vec![sign, 2.0 * sign, 4.0 * sign]);
        }
    }

    #[test]
    fn flattened_gemm_scales_each_channel_block_of_rows() {
        // Flatten of [N, 3, 1, 2] -> [N, 6]; Gemm B [6, 1] (transB 0) and [1, 6] (transB 1).
        for trans_b in [0, 1] {
            let dims: &[i64] = if trans_b == 1 { &[1, 6] } else { &[6, 1] };
            let g = float_tensor("g", dims, &[1.0; 6], FLOAT);
            let tail = vec![
                node("Flatten", &["y"], "f", &[]),
                node("Gemm", &["f", "g"], "out", &[("transB", trans_b)]),
            ];
            let mut m = model(tail, vec![g]);
            let r = request(&m, &[1.0, 2.0, 3.0]);
            assert!(fold_channel_bounds(&mut m, &[r], false).not_folded.is_empty());
            assert_eq!(init(&m, "g"), vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
        }
    }

    #[test]
    fn grouped_conv_scales_the_input_channel_of_its_group() {
        // Depthwise: 3 groups of one input channel, two outputs each.
        let v = float_tensor("v", &[6, 1, 1, 1], &[1.0; 6], FLOAT);
        let mut m = model(vec![node("Conv", &["y", "v"], "out", &[("group", 3)])], vec![v]);
        let r = request(&m, &[1.0, 2.0, 3.0]);
        assert!(fold_channel_bounds(&mut m, &[r], false).not_folded.is_empty());
        assert_eq!(init(&m, "v"), vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
    }

    #[test]
    fn a_shared_weight_gets_a_rescaled_copy() {
        // Both consumers read "o" (directly and through an Identity, as torch writes them).
        let o = float_tensor("o", &[1, 3, 1, 1], &[1.0; 3], FLOAT);
        let tail = vec![
            node("Identity", &["o"], "o2", &[]),
            node("Conv", &["y", "o"], "out", &[]),
            node("Conv", &["y", "o2"], "out2", &[]),
        ];
        let mut m = model(tail, vec![o]);
        let r = request(&m, &[1.0, 2.0, 3.0]);
        let report = fold_channel_bounds(&mut m, &[r], false);
        assert_eq!(
            report.folded[0].rescaled,
            vec!["w", "b", "o/fitact/folded", "o/fitact/folded_1"]
        );
        assert_eq!(init(&m, "o"), vec![1.0; 3], "the shared tensor is untouched");
        assert_eq!(init(&m, "o/fitact/folded_1"), vec![1.0, 2.0, 3.0]);
        let graph = m.graph.as_ref().unwrap();
        assert_eq!(graph.node[3].input[1], "o/fitact/folded");
        assert_eq!(graph.node[4].input[1], "o/fitact/folded_1");
    }

    #[test]
    fn a_relu_read_inside_a_subgraph_is_not_folded() {
        let branch = GraphProto {
            node: vec![node("Identity", &["y"], "z", &[])],
            ..Default::default()
        };
        let mut iff = node("If", &["cond"], "out", &[]);
        iff.attribute.push(AttributeProto {
            name: Some("then_branch".into()),
            g: Some(branch),
            r#type: Some(5),
            ..Default::default()
        });
        let mut m = model(vec![iff], vec![]);
        let before = m.clone();
        let r = request(&m, &[1.0, 2.0, 3.0]);
        let report = fold_channel_bounds(&mut m, &[r], false);
        assert!(report.not_folded[0].reason.contains("subgraph"), "{report:?}");
        assert_eq!(m, before);
    }

    #[test]
    fn what_cannot_take_the_scale_is_left_whole() {
        let other = float_tensor("o", &[1, 3, 1, 1], &[1.0; 3], FLOAT);
        let cases = [
            // A residual Add reads the Relu.
            vec![node("Add", &["y", "x"], "out", &[])],
            // The Relu's output is the graph output.
            vec![node("Identity", &["y"], "unused", &[])],
            // A consumer that is not one of the linear ones the pass knows.
            vec![node("Mul", &["y", "o"], "out", &[])],
        ];
        for (i, tail) in cases.into_iter().enumerate() {
            let mut m = model(tail, vec![other.clone()]);
            if i == 1 {
                m.graph.as_mut().unwrap().output[0].name = Some("y".into());
            }
            let before = m.clone();
            let r = request(&m, &[1.0, 2.0, 3.0]);
            let report = fold_channel_bounds(&mut m, &[r], false);
            assert!(report.folded.is_empty(), "case {i}");
            assert_eq!(m, before, "case {i}: nothing half-applied");
        }
    }
}
