//! Recognising activations in one graph: single operators (`Relu`, `HardSwish`, `Clip`, ...)
//! and the decomposed forms exporters write for the ones ONNX lacked for years:
//!
//! | kind | forms recognised (operands of `Add`/`Mul` in either order) |
//! |---|---|
//! | hard-swish | `HardSwish(x)`; `x * Clip(x + 3, 0, 6) / 6` (`/ 6` as `Div` or `Mul` by 1/6, before or after the product); `x * HardSigmoid(x)` with alpha 1/6, beta 0.5 |
//! | SiLU | `x * Sigmoid(x)` |
//! | GELU | `Gelu(x)`; `x * 0.5 * (1 + Erf(x / sqrt 2))` (or `Erf(x * (1 / sqrt 2))`); `x * 0.5 * (1 + Tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))`, with x^3 as `Pow(x, 3)` or `x * (x * x)`, and the product with x and 0.5 grouped in any way |
//! | norm | the output of `BatchNormalization`, `InstanceNormalization`, `LayerNormalization` or `GroupNormalization` read by an `Add` (a linear bottleneck entering a residual sum) |
//! | linear | the output of a `Conv` read only by `Add`, `Conv`, `Gemm` or `MatMul` nodes: a linear bottleneck whose normalisation the exporter folded into the convolution, entering a residual sum or the next layer with no activation between (opt-in: `--activations all,linear`) |
//! | logits | the output of the `Gemm`, `MatMul` or `Conv` that writes a graph output, alone or through `Cast`, `Identity`, `Flatten`, `Reshape`, `Squeeze`, `Softmax`, `LogSoftmax`, `QuantizeLinear`, `DequantizeLinear` (the classifier's scores, before any softmax) |
//!
//! A decomposed form is one activation, bounded at its output only: its inner nodes (the
//! `Clip` of a hard-swish, the `Sigmoid` of a SiLU, the `Tanh` of a GELU) are never reported
//! on their own. A form matches only if every inner tensor has that single use (no other node
//! and no graph output reads it), so bounding the output covers every path. Anything else is
//! what it is: a `Clip` outside a hard-swish is a `Clip`, `z * Sigmoid(x)` with z ≠ x is a
//! `Sigmoid` and a plain `Mul`.

use crate::onnx::{GraphProto, NodeProto, attribute_proto::AttributeType};
use crate::tensor::float_values;
use std::collections::HashMap;

/// What kind of activation a match is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Relu,
    LeakyRelu,
    PRelu,
    Clip,
    HardSigmoid,
    HardSwish,
    Sigmoid,
    Tanh,
    Silu,
    Gelu,
    Norm,
    Logits,
    Linear,
}

/// One recognised activation in a graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub kind: Kind,
    /// How it is written: the operator's name, or the decomposed form.
    pub form: &'static str,
    /// Every node of the match, the one writing `output` last.
    pub nodes: Vec<usize>,
    pub input: String,
    pub output: String,
    /// The activation cannot produce a negative value (apart from NaN), so a bound above is
    /// all it needs.
    pub nonnegative: bool,
}

fn is_default_domain(node: &NodeProto) -> bool {
    node.domain().is_empty() || node.domain() == "ai.onnx"
}

/// Who writes and who reads each tensor of one graph, and its constant scalars.
struct Index<'g> {
    graph: &'g GraphProto,
    producer: HashMap<&'g str, usize>,
    consumers: HashMap<String, Vec<usize>>,
    graph_outputs: Vec<&'g str>,
}

impl<'g> Index<'g> {
    fn new(graph: &'g GraphProto) -> Self {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, node) in graph.node.iter().enumerate() {
            for output in &node.output {
                producer.insert(output.as_str(), i);
            }
            let mut read: Vec<String> = node.input.iter().filter(|s| !s.is_empty()).cloned().collect();
            // Subgraphs reading this graph's tensors count as uses by the node holding them.
            for attr in &node.attribute {
                for sub in crate::graph::attribute_graphs(attr) {
                    read.extend(crate::graph::free_variables(sub));
                }
            }
            for name in read {
                consumers.entry(name).or_default().push(i);
            }
        }
        Index {
            graph,
            producer,
            consumers,
            graph_outputs: graph.output.iter().map(|o| o.name()).collect(),
        }
    }

    fn node(&self, i: usize) -> &'g NodeProto {
        &self.graph.node[i]
    }

    /// The node writing `tensor`, if it is a default-domain `op` with one output.
    fn produced_by(&self, tensor: &str, op: &str) -> Option<usize> {
        let i = *self.producer.get(tensor)?;
        let node = self.node(i);
        (node.op_type() == op && is_default_domain(node) && node.output.len() == 1).then_some(i)
    }

    /// The single reader of `tensor`, if exactly one node reads it and it is no graph output.
    fn sole_consumer(&self, tensor: &str) -> Option<usize> {
        if self.graph_outputs.contains(&tensor) {
            return None;
        }
        match self.consumers.get(tensor).map(Vec::as_slice) {
            Some([one]) => Some(*one),
            _ => None,
        }
    }

    /// `sole_consumer`, if it is a default-domain binary `op` with one output.
    fn sole_binary(&self, tensor: &str, op: &str) -> Option<usize> {
        let i = self.sole_consumer(tensor)?;
        let node = self.node(i);
        (node.op_type() == op && is_default_domain(node) && node.input.len() == 2 && node.output.len() == 1)
            .then_some(i)
    }

    /// The value of a constant scalar tensor (an initializer or a `Constant` node).
    fn scalar(&self, tensor: &str) -> Option<f64> {
        if let Some(init) = self.graph.initializer.iter().find(|t| t.name() == tensor) {
            return single(float_values(init)?);
        }
        let node = self.node(self.produced_by(tensor, "Constant")?);
        let attr = node.attribute.first()?;
        match attr.name() {
            "value" => single(float_values(attr.t.as_ref()?)?),
            "value_float" => Some(f64::from(attr.f?)),
            _ => None,
        }
    }

    fn is_scalar(&self, tensor: &str, value: f64) -> bool {
        self.scalar(tensor)
            .is_some_and(|v| (v - value).abs() <= 1e-4 * value.abs().max(1.0))
    }

    /// The two inputs of a node that has exactly two.
    fn operands(&self, node: usize) -> Option<[&'g str; 2]> {
        match self.node(node).input.as_slice() {
            [a, b] => Some([a.as_str(), b.as_str()]),
            _ => None,
        }
    }

    /// For a binary node, the operand that is not `known`.
    fn other_operand(&self, node: usize, known: &str) -> Option<&'g str> {
        let [a, b] = self.operands(node)?;
        match (a == known, b == known) {
            (true, false) => Some(b),
            (false, true) => Some(a),
            _ => None,
        }
    }

    /// For a binary node one of whose operands is the constant `value`, the other operand.
    fn beside_scalar(&self, node: usize, value: f64) -> Option<&'g str> {
        let [a, b] = self.operands(node)?;
        if self.is_scalar(b, value) {
            Some(a)
        } else if self.is_scalar(a, value) {
            Some(b)
        } else {
            None
        }
    }
}

fn single(values: Vec<f64>) -> Option<f64> {
    match values.as_slice() {
        [v] => Some(*v),
        _ => None,
    }
}

fn float_attribute(node: &NodeProto, name: &str) -> Option<f32> {
    node.attribute
        .iter()
        .find(|a| a.name() == name && a.r#type() == AttributeType::Float)
        .and_then(|a| a.f)
}

/// `x * 0.5 * t`, grouped in any way, starting from `t`: returns the nodes used and the output.
/// Forms: `(x * t) * 0.5`, `(0.5 * t) * x`, `(x * 0.5) * t`.
fn half_x_times(index: &Index, t: &str, x: &str) -> Option<(Vec<usize>, String)> {
    let first = index.sole_binary(t, "Mul")?;
    let other = index.other_operand(first, t)?;
    let out1 = index.node(first).output[0].as_str();
    if other == x || index.is_scalar(other, 0.5) {
        let second = index.sole_binary(out1, "Mul")?;
        let last = index.other_operand(second, out1)?;
        let wanted = if other == x {
            index.is_scalar(last, 0.5)
        } else {
            last == x
        };
        return wanted.then(|| (vec![first, second], index.node(second).output[0].clone()));
    }
    // (x * 0.5) computed first, and used only here.
    let half = index.produced_by(other, "Mul")?;
    let is_half_x = index.sole_consumer(other) == Some(first) && index.beside_scalar(half, 0.5) == Some(x);
    is_half_x.then(|| (vec![half, first], out1.to_owned()))
}

/// `1 + t`, as the sole use of `t`: the Add node and its output.
fn one_plus(index: &Index, t: &str) -> Option<(usize, String)> {
    let add = index.sole_binary(t, "Add")?;
    index
        .is_scalar(index.other_operand(add, t)?, 1.0)
        .then(|| (add, index.node(add).output[0].clone()))
}

fn gelu_erf(index: &Index, erf: usize) -> Option<Match> {
    let scaled = index.node(erf).input.first()?;
    let (pre, x) = if let Some(div) = index.produced_by(scaled, "Div") {
        let [x, divisor] = index.operands(div)?;
        (
            div,
            index
                .is_scalar(divisor, std::f64::consts::SQRT_2)
                .then_some(x.to_owned())?,
        )
    } else {
        let mul = index.produced_by(scaled, "Mul")?;
        (
            mul,
            index.beside_scalar(mul, std::f64::consts::FRAC_1_SQRT_2)?.to_owned(),
        )
    };
    if index.sole_consumer(scaled) != Some(erf) {
        return None;
    }
    let (add, sum) = one_plus(index, &index.node(erf).output[0])?;
    let (tail, output) = half_x_times(index, &sum, &x)?;
    let mut nodes = vec![pre, erf, add];
    nodes.extend(tail);
    Some(Match {
        kind: Kind::Gelu,
        form: "x * 0.5 * (1 + Erf(x / sqrt 2))",
        nodes,
        input: x,
        output,
        nonnegative: false,
    })
}

/// `x^3` as `Pow(x, 3)`, or as `x * (x * x)` (torch), in either order: the nodes computing it.
fn cube_of(index: &Index, x: &str, cube: &str) -> Option<Vec<usize>> {
    if let Some(pow) = index.produced_by(cube, "Pow") {
        let [base, exponent] = index.operands(pow)?;
        return (base == x && index.is_scalar(exponent, 3.0)).then(|| vec![pow]);
    }
    let outer = index.produced_by(cube, "Mul")?;
    let square = index.other_operand(outer, x)?;
    let inner = index.produced_by(square, "Mul")?;
    (index.operands(inner)? == [x, x] && index.sole_consumer(square) == Some(outer)).then(|| vec![inner, outer])
}

fn gelu_tanh(index: &Index, tanh: usize) -> Option<Match> {
    // Tanh(c * (x + 0.044715 * x^3)), c = sqrt(2 / pi).
    let arg = index.node(tanh).input.first()?;
    let scale = index.produced_by(arg, "Mul")?;
    let inner = index.beside_scalar(scale, (2.0 / std::f64::consts::PI).sqrt())?;
    let sum = index.produced_by(inner, "Add")?;
    let cube_term_of = |x: &str, other: &str| -> Option<Vec<usize>> {
        let mul = index.produced_by(other, "Mul")?;
        let cube = index.beside_scalar(mul, 0.044715)?;
        let cube_nodes = cube_of(index, x, cube)?;
        (index.sole_consumer(cube) == Some(mul) && index.sole_consumer(other) == Some(sum)).then(|| {
            let mut nodes = cube_nodes;
            nodes.push(mul);
            nodes
        })
    };
    let [a, b] = index.operands(sum)?;
    let (x, cube_nodes) = match (cube_term_of(a, b), cube_term_of(b, a)) {
        (Some(nodes), _) => (a.to_owned(), nodes),
        (None, Some(nodes)) => (b.to_owned(), nodes),
        _ => return None,
    };
    if index.sole_consumer(inner) != Some(scale) || index.sole_consumer(arg) != Some(tanh) {
        return None;
    }
    let (add, one_plus_t) = one_plus(index, &index.node(tanh).output[0])?;
    let (tail, output) = half_x_times(index, &one_plus_t, &x)?;
    let mut nodes = cube_nodes;
    nodes.extend([sum, scale, tanh, add]);
    nodes.extend(tail);
    Some(Match {
        kind: Kind::Gelu,
        form: "x * 0.5 * (1 + Tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))",
        nodes,
        input: x,
        output,
        nonnegative: false,
    })
}

/// `x * Sigmoid(x)`, from the Sigmoid.
fn silu(index: &Index, sigmoid: usize) -> Option<Match> {
    let x = index.node(sigmoid).input.first()?;
    let s = &index.node(sigmoid).output[0];
    let mul = index.sole_binary(s, "Mul")?;
    (index.other_operand(mul, s)? == x).then(|| Match {
        kind: Kind::Silu,
        form: "x * Sigmoid(x)",
        nodes: vec![sigmoid, mul],
        input: x.clone(),
        output: index.node(mul).output[0].clone(),
        nonnegative: false,
    })
}

/// `x * HardSigmoid(x)` with alpha 1/6 and beta 0.5 (torch's hard-swish before opset 14).
fn hard_swish_of_hard_sigmoid(index: &Index, hs: usize) -> Option<Match> {
    let node = index.node(hs);
    let alpha = float_attribute(node, "alpha").unwrap_or(0.2);
    let beta = float_attribute(node, "beta").unwrap_or(0.5);
    if (alpha - 1.0 / 6.0).abs() > 1e-4 || (beta - 0.5).abs() > 1e-4 {
        return None;
    }
    let x = node.input.first()?;
    let mul = index.sole_binary(&node.output[0], "Mul")?;
    (index.other_operand(mul, &node.output[0])? == x).then(|| Match {
        kind: Kind::HardSwish,
        form: "x * HardSigmoid(x)",
        nodes: vec![hs, mul],
        input: x.clone(),
        output: index.node(mul).output[0].clone(),
        nonnegative: false,
    })
}

/// The constant bounds of a Clip: attributes before opset 11, inputs after.
fn clip_bounds(index: &Index, clip: usize) -> (Option<f64>, Option<f64>) {
    let node = index.node(clip);
    let input = |i: usize| {
        node.input
            .get(i)
            .filter(|s| !s.is_empty())
            .and_then(|t| index.scalar(t))
    };
    let attr = |name: &str| float_attribute(node, name).map(f64::from);
    (input(1).or_else(|| attr("min")), input(2).or_else(|| attr("max")))
}

/// `x * Clip(x + 3, 0, 6) / 6`, from the Clip.
fn hard_swish_of_clip(index: &Index, clip: usize) -> Option<Match> {
    if clip_bounds(index, clip) != (Some(0.0), Some(6.0)) {
        return None;
    }
    let shifted = index.node(clip).input.first()?;
    let add = index.produced_by(shifted, "Add")?;
    let x = index.beside_scalar(add, 3.0)?;
    if index.sole_consumer(shifted) != Some(clip) {
        return None;
    }
    // Divides by 6 (Div by 6 or Mul by 1/6) the tensor `t`, as its sole use.
    let sixth = |t: &str| -> Option<usize> {
        if let Some(div) = index.sole_binary(t, "Div") {
            let [dividend, divisor] = index.operands(div)?;
            return (dividend == t && index.is_scalar(divisor, 6.0)).then_some(div);
        }
        let mul = index.sole_binary(t, "Mul")?;
        index.is_scalar(index.other_operand(mul, t)?, 1.0 / 6.0).then_some(mul)
    };
    let clipped = &index.node(clip).output[0];
    let tail = if let Some(scale) = sixth(clipped) {
        // x * (Clip(..) / 6)
        let scaled = &index.node(scale).output[0];
        let mul = index.sole_binary(scaled, "Mul")?;
        (index.other_operand(mul, scaled)? == x).then_some(vec![scale, mul])?
    } else {
        // (x * Clip(..)) / 6
        let mul = index.sole_binary(clipped, "Mul")?;
        if index.other_operand(mul, clipped)? != x {
            return None;
        }
        vec![mul, sixth(&index.node(mul).output[0])?]
    };
    let output = index.node(*tail.last()?).output[0].clone();
    let mut nodes = vec![add, clip];
    nodes.extend(tail);
    Some(Match {
        kind: Kind::HardSwish,
        form: "x * Clip(x + 3, 0, 6) / 6",
        nodes,
        input: x.to_owned(),
        output,
        nonnegative: false,
    })
}

/// A single-operator activation at `i`, or a normalisation read by an `Add`.
fn single_op(index: &Index, i: usize) -> Option<Match> {
    let node = index.node(i);
    let op = node.op_type();
    let (kind, form, nonnegative) = match op {
        "Relu" => (Kind::Relu, "Relu", true),
        "LeakyRelu" => (Kind::LeakyRelu, "LeakyRelu", false),
        "PRelu" => (Kind::PRelu, "PRelu", false),
        "Clip" => (
            Kind::Clip,
            "Clip",
            clip_bounds(index, i).0.is_some_and(|min| min >= 0.0),
        ),
        "HardSigmoid" => (Kind::HardSigmoid, "HardSigmoid", true),
        "HardSwish" => (Kind::HardSwish, "HardSwish", false),
        "Sigmoid" => (Kind::Sigmoid, "Sigmoid", true),
        "Tanh" => (Kind::Tanh, "Tanh", false),
        "Gelu" => (Kind::Gelu, "Gelu", false),
        "BatchNormalization" | "InstanceNormalization" | "LayerNormalization" | "GroupNormalization" => {
            let y = node.output.first()?;
            let feeds_add = index
                .consumers
                .get(y)
                .is_some_and(|c| c.iter().any(|j| index.node(*j).op_type() == "Add"));
            if !feeds_add {
                return None;
            }
            (Kind::Norm, op_static(op), false)
        }
        "Conv" if linear_bottleneck(index, i) => (Kind::Linear, "Conv, no activation", false),
        _ => return None,
    };
    let unary = match kind {
        Kind::PRelu => node.input.len() == 2,
        Kind::Clip | Kind::Norm | Kind::Linear => !node.input.is_empty(),
        _ => node.input.len() == 1,
    };
    let well_formed = unary
        && is_default_domain(node)
        && !node.input[0].is_empty()
        && (node.output.len() == 1 || kind == Kind::Norm)
        && !node.output[0].is_empty();
    well_formed.then(|| Match {
        kind,
        form,
        nodes: vec![i],
        input: node.input[0].clone(),
        output: node.output[0].clone(),
        nonnegative,
    })
}

/// Readers of a linear bottleneck's output: a residual sum or the next layer. A flipped weight
/// there makes a whole channel huge, and nothing bounds it before it spreads (on a trained
/// MobileNetV3-Large at float32 BER 1e-5, five such flips per trial left 6% accuracy with every
/// activation bounded: docs/results/budget_2026-12-06.md).
const BOTTLENECK_READERS: [&str; 4] = ["Add", "Conv", "Gemm", "MatMul"];

/// The `Conv` at `i` writes a tensor that no graph output names and that only
/// `BOTTLENECK_READERS` read (so not a `QuantizeLinear`, a normalisation or an activation).
fn linear_bottleneck(index: &Index, i: usize) -> bool {
    let Some(y) = index.node(i).output.first() else {
        return false;
    };
    let readers = index.consumers.get(y.as_str()).map(Vec::as_slice).unwrap_or_default();
    !readers.is_empty()
        && !index.graph_outputs.contains(&y.as_str())
        && readers.iter().all(|j| {
            let reader = index.node(*j);
            is_default_domain(reader) && BOTTLENECK_READERS.contains(&reader.op_type())
        })
}

/// Operators between the classifier and a graph output that keep its scores' order.
const TO_OUTPUT: [&str; 9] = [
    "Cast",
    "Identity",
    "Flatten",
    "Reshape",
    "Squeeze",
    "Softmax",
    "LogSoftmax",
    "QuantizeLinear",
    "DequantizeLinear",
];

/// The `Gemm`, `MatMul` or `Conv` nodes that write a graph output, alone or through
/// `TO_OUTPUT` operators each read by that path only (so a bound at the node's output is on
/// every path to the output), in graph output order.
fn logits(index: &Index) -> Vec<usize> {
    let mut found = Vec::new();
    for output in &index.graph_outputs {
        let mut tensor: &str = output;
        while let Some(&i) = index.producer.get(tensor) {
            let node = index.node(i);
            if !is_default_domain(node) || node.output.len() != 1 {
                break;
            }
            if matches!(node.op_type(), "Gemm" | "MatMul" | "Conv") {
                if !found.contains(&i) && node.input.first().is_some_and(|x| !x.is_empty()) {
                    found.push(i);
                }
                break;
            }
            let Some(input) = node.input.first().filter(|_| TO_OUTPUT.contains(&node.op_type())) else {
                break;
            };
            let read_once = index.consumers.get(input.as_str()).is_some_and(|c| c.len() == 1);
            if !read_once || index.graph_outputs.contains(&input.as_str()) {
                break;
            }
            tensor = input;
        }
    }
    found
}

fn logits_match(node: &NodeProto, i: usize) -> Match {
    Match {
        kind: Kind::Logits,
        form: "logits",
        nodes: vec![i],
        input: node.input[0].clone(),
        output: node.output[0].clone(),
        nonnegative: false,
    }
}

fn op_static(op: &str) -> &'static str {
    match op {
        "BatchNormalization" => "BatchNormalization -> Add",
        "InstanceNormalization" => "InstanceNormalization -> Add",
        "LayerNormalization" => "LayerNormalization -> Add",
        _ => "GroupNormalization -> Add",
    }
}

/// Every activation of `graph`, decomposed forms first claiming their nodes, in the order of
/// the node that writes each one's output.
pub fn find_in_graph(graph: &GraphProto) -> Vec<Match> {
    let index = Index::new(graph);
    let mut claimed = vec![false; graph.node.len()];
    let mut matches = Vec::new();
    for (i, node) in graph.node.iter().enumerate() {
        let anchor = node.output.len() == 1 && !node.input.is_empty();
        if !is_default_domain(node) || claimed[i] || !anchor {
            continue;
        }
        let found = match node.op_type() {
            "Erf" => gelu_erf(&index, i),
            "Tanh" => gelu_tanh(&index, i),
            "Sigmoid" => silu(&index, i),
            "HardSigmoid" => hard_swish_of_hard_sigmoid(&index, i),
            "Clip" => hard_swish_of_clip(&index, i),
            _ => None,
        };
        if let Some(m) = found.filter(|m| m.nodes.iter().all(|n| !claimed[*n])) {
            for n in &m.nodes {
                claimed[*n] = true;
            }
            matches.push(m);
        }
    }
    let unclaimed = claimed.iter().enumerate().filter(|(_, c)| !**c).map(|(i, _)| i);
    matches.extend(unclaimed.filter_map(|i| single_op(&index, i)).collect::<Vec<_>>());
    for i in logits(&index) {
        if !claimed[i] && !matches.iter().any(|m| m.nodes.contains(&i)) {
            matches.push(logits_match(index.node(i), i));
        }
    }
    matches.sort_by_key(|m| *m.nodes.last().expect("a match has nodes"));
    matches
}
