//! The bound tensors a form stores: in the activation's precision, stepped to the next float
//! where a strict comparison stands for an inclusive one (opsets before `LessOrEqual`), and
//! added as initializers (also as graph inputs where the IR version asks for it).

use crate::onnx::{
    GraphProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto, type_proto,
};
use crate::tensor::{DOUBLE, float_tensor};

/// The next float32 above (`up`) or below a finite value.
pub(super) fn next_f32(v: f32, up: bool) -> f32 {
    if v == 0.0 {
        let tiny = f32::from_bits(1);
        return if up { tiny } else { -tiny };
    }
    let bits = v.to_bits();
    f32::from_bits(if (v > 0.0) == up { bits + 1 } else { bits - 1 })
}

/// The next float64 above (`up`) or below a finite value.
pub(super) fn next_f64(v: f64, up: bool) -> f64 {
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
pub(super) enum Step {
    None,
    /// The next float above: `x < stored` iff `x <= B`.
    Up,
    /// The next float below: `x > stored` iff `x >= B`.
    Down,
}

/// A bound tensor as stored, in the stored precision, stepped as asked.
pub(super) fn bound_tensor(name: &str, dims: &[i64], values: &[f32], elem_type: i32, step: Step) -> TensorProto {
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

pub(super) fn add_initializers(
    graph: &mut GraphProto,
    initializers: Vec<TensorProto>,
    as_inputs: bool,
    elem_type: i32,
) {
    if as_inputs {
        for init in &initializers {
            graph.input.push(tensor_input(init.name(), elem_type, &init.dims));
        }
    }
    graph.initializer.extend(initializers);
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

#[cfg(test)]
mod tests {
    use crate::bound_activations::tests::{initializer, run};
    use crate::bound_activations::{Bound, Mode};
    use crate::tensor::float_values;

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
    fn ir3_lists_added_initializers_as_graph_inputs() {
        let (m, _) = run(9, 3, Mode::Saturate, Bound::scalar(2.0));
        let graph = m.graph.as_ref().unwrap();
        let inputs: Vec<&str> = graph.input.iter().map(|i| i.name()).collect();
        let inits: Vec<&str> = graph.initializer.iter().map(|t| t.name()).collect();
        assert_eq!(inputs, inits);
    }
}
