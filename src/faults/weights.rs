//! The stored weights of a model as fault injection sees memory: every float32 tensor the
//! model holds (initializers of every graph, `Constant` node values; bound tensors that
//! hardening added included) and every integer tensor that holds weights (int8/uint8/int16/
//! uint16/int32/uint32 initializers and constants: quantized weights, zero points, integer
//! biases), decoded once, in a fixed order, and written back into a copy of the model for one
//! trial. Integer tensors read as shapes, axes or indices (`Reshape`'s shape, `Gather`'s
//! indices, ...) are structure, not weights, and int64/bool tensors are left out: a flip
//! there is a malformed graph, not a corrupted value.
//!
//! A float32 tensor is stored as the weight format says (`--format`); an integer tensor, and
//! a float16 or bfloat16 one (a half-precision model's weights), as its own words, every bit
//! of which may flip (a half-precision word's bits are its sign, exponent and fraction).

use crate::faults::flips::{StoredTensor, WeightFormat};
use fitact_passes::graph::attribute_graphs_mut;
use fitact_passes::onnx::{GraphProto, ModelProto, TensorProto, tensor_proto::DataType};
use fitact_passes::tensor::{FLOAT, float_values};
use std::collections::HashSet;

/// A weight tensor's values: floats, or integers as the model stores them.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    Float(Vec<f32>),
    Integer(Vec<i64>),
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::Float(v) => v.len(),
            Values::Integer(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as a float (integers converted), for reports.
    pub fn get(&self, i: usize) -> f32 {
        match self {
            Values::Float(v) => v[i],
            Values::Integer(v) => v[i] as f32,
        }
    }
}

#[derive(Debug, Clone)]
pub struct WeightTensor {
    /// The initializer's name, or the output of the `Constant` node that holds it.
    pub name: String,
    /// Its ONNX element type.
    pub dtype: i32,
    pub values: Values,
}

#[derive(Debug, Clone)]
pub struct Weights {
    pub tensors: Vec<WeightTensor>,
}

/// The integer element types whose tensors may hold weights, and their widths in bits.
fn integer_width(dtype: i32) -> Option<u32> {
    match DataType::try_from(dtype).ok()? {
        DataType::Int8 | DataType::Uint8 => Some(8),
        DataType::Int16 | DataType::Uint16 | DataType::Float16 | DataType::Bfloat16 => Some(16),
        DataType::Int32 | DataType::Uint32 => Some(32),
        _ => None,
    }
}

fn signed(dtype: i32) -> bool {
    matches!(
        DataType::try_from(dtype),
        Ok(DataType::Int8 | DataType::Int16 | DataType::Int32)
    )
}

/// The name of an element type as reports write it (`float32`, `int8`, ...).
pub fn dtype_name(dtype: i32) -> String {
    match DataType::try_from(dtype) {
        Ok(DataType::Float) => "float32".into(),
        Ok(other) => other.as_str_name().to_lowercase(),
        Err(_) => format!("type {dtype}"),
    }
}

/// Inputs that are structure (shapes, axes, indices, counts), by operator: an integer tensor
/// read there is not a weight.
fn structural_inputs(op: &str) -> &'static [usize] {
    match op {
        "Reshape" | "Expand" | "Tile" | "Squeeze" | "Unsqueeze" | "Gather" | "GatherElements" | "GatherND"
        | "ScatterElements" | "ScatterND" | "Scatter" | "TopK" | "Split" | "CumSum" | "Trilu" | "Upsample"
        | "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1" | "ReduceL2"
        | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceSumSquare" | "OneHot" => &[1, 2],
        "Slice" => &[1, 2, 3, 4],
        "Pad" => &[1, 3],
        "Resize" => &[1, 2, 3],
        "ConstantOfShape" | "Range" | "If" => &[0, 1, 2],
        "Loop" => &[0, 1],
        "NonMaxSuppression" => &[2],
        _ => &[],
    }
}

/// Names read at a structural input anywhere in `graph` (subgraphs included).
fn structural_names(graph: &GraphProto, out: &mut HashSet<String>) {
    for node in &graph.node {
        for &i in structural_inputs(node.op_type()) {
            if let Some(name) = node.input.get(i) {
                out.insert(name.clone());
            }
        }
        for attr in &node.attribute {
            for sub in fitact_passes::graph::attribute_graphs(attr) {
                structural_names(sub, out);
            }
        }
    }
}

/// Whether `tensor` (named `name`) is a weight: float32, or an integer type that holds
/// values and is not read as structure.
fn is_weight(name: &str, tensor: &TensorProto, structural: &HashSet<String>) -> bool {
    tensor.data_type() == FLOAT || (integer_width(tensor.data_type()).is_some() && !structural.contains(name))
}

/// Visits every weight with its name, in a fixed order: graph by graph (parents first),
/// initializers then Constant nodes.
fn visit(graph: &mut GraphProto, structural: &HashSet<String>, f: &mut dyn FnMut(&str, &mut TensorProto)) {
    for tensor in &mut graph.initializer {
        let name = tensor.name().to_owned();
        if is_weight(&name, tensor, structural) {
            f(&name, tensor);
        }
    }
    for node in &mut graph.node {
        if node.op_type() == "Constant" {
            let name = node.output.first().cloned().unwrap_or_default();
            for attr in node.attribute.iter_mut().filter(|a| a.name() == "value") {
                if let Some(tensor) = attr.t.as_mut().filter(|t| is_weight(&name, t, structural)) {
                    f(&name, tensor);
                }
            }
        }
        for attr in &mut node.attribute {
            for sub in attribute_graphs_mut(attr) {
                visit(sub, structural, f);
            }
        }
    }
}

/// Visits the weights of `model` (see `visit`).
fn visit_model(model: &mut ModelProto, f: &mut dyn FnMut(&str, &mut TensorProto)) {
    let Some(graph) = model.graph.as_mut() else {
        return;
    };
    let mut structural = HashSet::new();
    structural_names(graph, &mut structural);
    visit(graph, &structural, f);
}

/// The integers an integer tensor holds inline (raw_data, int32_data or uint64_data).
fn integer_values(tensor: &TensorProto) -> Vec<i64> {
    let dtype = tensor.data_type();
    let width = integer_width(dtype).unwrap_or(32) as usize / 8;
    match tensor.raw_data.as_deref() {
        Some(raw) => raw
            .chunks_exact(width)
            .map(|c| {
                let mut word = [0u8; 4];
                word[..width].copy_from_slice(c);
                extend(u32::from_le_bytes(word), dtype)
            })
            .collect(),
        None if dtype == DataType::Uint32 as i32 => tensor.uint64_data.iter().map(|v| *v as i64).collect(),
        None => tensor.int32_data.iter().map(|v| i64::from(*v)).collect(),
    }
}

/// A stored word of an integer type as its value (sign-extended for signed types).
fn extend(word: u32, dtype: i32) -> i64 {
    let width = integer_width(dtype).unwrap_or(32);
    let word = if width == 32 { word } else { word & ((1 << width) - 1) };
    if signed(dtype) {
        let shift = 32 - width;
        i64::from(((word << shift) as i32) >> shift)
    } else {
        i64::from(word)
    }
}

impl WeightTensor {
    /// The tensor as memory stores it: a float one in `format`, an integer one as its words.
    pub fn store(&self, format: WeightFormat) -> StoredTensor {
        match &self.values {
            Values::Float(values) => format.store(values),
            Values::Integer(values) => StoredTensor {
                words: values.iter().map(|v| *v as u32).collect(),
                scale: 1.0,
                integer: Some(self.dtype),
            },
        }
    }
}

/// The bit positions a flip may hit in `stored`: `float_bits` for a float tensor, every bit
/// of its words for an integer one.
pub fn flippable_bits(stored: &StoredTensor, float_bits: &[u32]) -> Vec<u32> {
    match stored.integer.and_then(integer_width) {
        Some(width) => (0..width).collect(),
        None => float_bits.to_vec(),
    }
}

/// The values `words` hold, stored as `stored` was (a float tensor in `format`).
pub fn load(stored: &StoredTensor, words: &[u32], format: WeightFormat) -> Values {
    match stored.integer {
        None => Values::Float(words.iter().map(|w| format.load(*w, stored.scale)).collect()),
        Some(dtype) => Values::Integer(words.iter().map(|w| extend(*w, dtype)).collect()),
    }
}

impl Weights {
    pub fn of(model: &ModelProto) -> Weights {
        let mut model = model.clone();
        let mut tensors = Vec::new();
        visit_model(&mut model, &mut |name, tensor| {
            let dtype = tensor.data_type();
            let values = if dtype == FLOAT {
                Values::Float(
                    float_values(tensor)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|v| v as f32)
                        .collect(),
                )
            } else {
                Values::Integer(integer_values(tensor))
            };
            tensors.push(WeightTensor {
                name: name.to_owned(),
                dtype,
                values,
            });
        });
        Weights { tensors }
    }

    pub fn elements(&self) -> usize {
        self.tensors.iter().map(|t| t.values.len()).sum()
    }

    /// A copy of `model` (the model these weights came from) holding `values` instead: one
    /// entry per tensor, in order.
    pub fn write_into(model: &ModelProto, values: &[Values]) -> ModelProto {
        let mut model = model.clone();
        let mut index = 0;
        visit_model(&mut model, &mut |_, tensor| {
            let width = integer_width(tensor.data_type()).unwrap_or(32) as usize / 8;
            tensor.raw_data = Some(match &values[index] {
                Values::Float(data) => {
                    tensor.float_data.clear();
                    data.iter().flat_map(|v| v.to_le_bytes()).collect()
                }
                Values::Integer(data) => {
                    tensor.int32_data.clear();
                    tensor.uint64_data.clear();
                    data.iter()
                        .flat_map(|v| (*v as u32).to_le_bytes()[..width].to_vec())
                        .collect()
                }
            });
            index += 1;
        });
        model
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fitact_passes::onnx::{AttributeProto, NodeProto};
    use fitact_passes::tensor::float_tensor;

    fn int_tensor(name: &str, dtype: DataType, raw: Vec<u8>) -> TensorProto {
        TensorProto {
            name: Some(name.into()),
            data_type: Some(dtype as i32),
            raw_data: Some(raw),
            ..Default::default()
        }
    }

    #[test]
    fn half_precision_weights_flip_as_their_own_16_bit_words() {
        let half = |v: f32| half::f16::from_f32(v).to_le_bytes().to_vec();
        let model = ModelProto {
            graph: Some(GraphProto {
                initializer: vec![int_tensor("w", DataType::Float16, [half(0.5), half(-2.0)].concat())],
                ..Default::default()
            }),
            ..Default::default()
        };
        let weights = Weights::of(&model);
        assert_eq!(
            (weights.tensors[0].dtype, weights.elements()),
            (DataType::Float16 as i32, 2)
        );
        let stored = weights.tensors[0].store(WeightFormat::Float32);
        assert_eq!(flippable_bits(&stored, &[31]), (0..16).collect::<Vec<_>>());
        // The exponent's top bit (14) of 0.5 turns it into 32768.
        let mut words = stored.words.clone();
        words[0] ^= 1 << 14;
        let written = Weights::write_into(&model, &[load(&stored, &words, WeightFormat::Float32)]);
        let raw = written.graph.unwrap().initializer[0].raw_data.clone().unwrap();
        assert_eq!(half::f16::from_le_bytes([raw[0], raw[1]]).to_f32(), 32768.0);
        assert_eq!(half::f16::from_le_bytes([raw[2], raw[3]]).to_f32(), -2.0);
    }

    #[test]
    fn finds_initializers_and_constants_and_writes_them_back() {
        let model = ModelProto {
            graph: Some(GraphProto {
                initializer: vec![float_tensor("w", &[2], &[1.0, 2.0], FLOAT)],
                node: vec![NodeProto {
                    op_type: Some("Constant".into()),
                    output: vec!["c".into()],
                    attribute: vec![AttributeProto {
                        name: Some("value".into()),
                        t: Some(float_tensor("", &[], &[3.0], FLOAT)),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let weights = Weights::of(&model);
        let names: Vec<&str> = weights.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["w", "c"]);
        assert_eq!(weights.elements(), 3);
        let patched = Weights::write_into(&model, &[Values::Float(vec![1.0, -2.0]), Values::Float(vec![30.0])]);
        let again = Weights::of(&patched);
        assert_eq!(again.tensors[0].values, Values::Float(vec![1.0, -2.0]));
        assert_eq!(again.tensors[1].values, Values::Float(vec![30.0]));
    }

    #[test]
    fn integer_weights_are_found_and_shapes_are_not() {
        let node = |op: &str, inputs: &[&str]| NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![format!("{op}_out")],
            ..Default::default()
        };
        let model = ModelProto {
            graph: Some(GraphProto {
                initializer: vec![
                    int_tensor("w_q", DataType::Int8, vec![0x7f, 0x80, 0x01]),
                    int_tensor("zp", DataType::Uint8, vec![128]),
                    int_tensor("bias", DataType::Int32, (-5i32).to_le_bytes().to_vec()),
                    int_tensor(
                        "shape32",
                        DataType::Int32,
                        [2i32, -1].iter().flat_map(|v| v.to_le_bytes()).collect(),
                    ),
                    int_tensor("shape64", DataType::Int64, 4i64.to_le_bytes().to_vec()),
                ],
                node: vec![
                    node("MatMulInteger", &["x", "w_q", "", "zp"]),
                    node("Reshape", &["MatMulInteger_out", "shape32"]),
                    node("Add", &["Reshape_out", "bias"]),
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let weights = Weights::of(&model);
        let found: Vec<(&str, String)> = weights
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), dtype_name(t.dtype)))
            .collect();
        assert_eq!(
            found,
            [("w_q", "int8".into()), ("zp", "uint8".into()), ("bias", "int32".into())]
        );
        assert_eq!(weights.tensors[0].values, Values::Integer(vec![127, -128, 1]));
        assert_eq!(weights.tensors[1].values, Values::Integer(vec![128]));
        assert_eq!(weights.tensors[2].values, Values::Integer(vec![-5]));

        // Bit 7 of int8 127 (0x7f) gives -1; every bit of the word may flip.
        let mut stored = weights.tensors[0].store(WeightFormat::Float32);
        assert_eq!(flippable_bits(&stored, &[30]), (0..8).collect::<Vec<_>>());
        stored.words[0] ^= 0x80;
        let flipped = load(&stored, &stored.words, WeightFormat::Float32);
        assert_eq!(flipped, Values::Integer(vec![-1, -128, 1]));

        let mut values: Vec<Values> = weights.tensors.iter().map(|t| t.values.clone()).collect();
        values[0] = flipped;
        values[2] = Values::Integer(vec![i64::from(i32::MIN)]);
        let again = Weights::of(&Weights::write_into(&model, &values));
        assert_eq!(again.tensors[0].values, Values::Integer(vec![-1, -128, 1]));
        assert_eq!(again.tensors[2].values, Values::Integer(vec![i64::from(i32::MIN)]));
        assert_eq!(
            model.graph.as_ref().unwrap().initializer[3].raw_data,
            Weights::write_into(&model, &values).graph.unwrap().initializer[3].raw_data,
            "structure is never rewritten"
        );
    }
}
