//! Building and reading the float tensors the passes write (bounds, zeros), in float32,
//! float64 or float16 (a float16 model's bounds are float16 tensors).

use crate::onnx::{TensorProto, tensor_proto::DataType};

pub const FLOAT: i32 = DataType::Float as i32;
pub const DOUBLE: i32 = DataType::Double as i32;
pub const FLOAT16: i32 = DataType::Float16 as i32;

/// Whether the passes write bound tensors of this element type.
pub fn is_bound_type(elem_type: i32) -> bool {
    matches!(elem_type, FLOAT | DOUBLE | FLOAT16)
}

/// The float16 value nearest `v` on its `up` side (at or above it, or at or below), as f32:
/// a bound rounded so that no value it was calibrated to keep is cut.
pub fn f16_outward(v: f32, up: bool) -> f32 {
    let near = half::f16::from_f32(v);
    let stepped = match f32::from(near).partial_cmp(&v) {
        Some(std::cmp::Ordering::Less) if up => next_f16(near, true),
        Some(std::cmp::Ordering::Greater) if !up => next_f16(near, false),
        _ => near,
    };
    f32::from(stepped)
}

/// The next float16 above (`up`) or below a finite value.
pub fn next_f16(v: half::f16, up: bool) -> half::f16 {
    if f32::from(v) == 0.0 {
        let tiny = half::f16::from_bits(1);
        return if up { tiny } else { -tiny };
    }
    let bits = v.to_bits();
    half::f16::from_bits(if (f32::from(v) > 0.0) == up { bits + 1 } else { bits - 1 })
}

/// A float tensor in `raw_data` (little-endian, as the spec requires), stored as `elem_type`
/// (FLOAT, DOUBLE or FLOAT16, rounded to nearest; the caller checks the type and rounds bounds
/// outward first, `f16_outward`).
pub fn float_tensor(name: &str, dims: &[i64], values: &[f32], elem_type: i32) -> TensorProto {
    let raw_data = match elem_type {
        DOUBLE => values.iter().flat_map(|v| f64::from(*v).to_le_bytes()).collect(),
        FLOAT16 => values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    TensorProto {
        name: Some(name.to_owned()),
        dims: dims.to_vec(),
        data_type: Some(elem_type),
        raw_data: Some(raw_data),
        ..Default::default()
    }
}

/// The values of a FLOAT or DOUBLE tensor held inline (raw_data or the typed field), as f64.
/// `None` for other types or external data.
pub fn float_values(tensor: &TensorProto) -> Option<Vec<f64>> {
    let raw = tensor.raw_data.as_deref();
    match tensor.data_type() {
        FLOAT => Some(match raw {
            Some(raw) => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            None => tensor.float_data.iter().map(|v| *v as f64).collect(),
        }),
        DOUBLE => Some(match raw {
            Some(raw) => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            None => tensor.double_data.clone(),
        }),
        // Without raw_data, float16 values sit in int32_data, one per element, as their bits.
        FLOAT16 => Some(match raw {
            Some(raw) => raw
                .chunks_exact(2)
                .map(|c| f64::from(half::f16::from_le_bytes([c[0], c[1]])))
                .collect(),
            None => tensor
                .int32_data
                .iter()
                .map(|b| f64::from(half::f16::from_bits(*b as u16)))
                .collect(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_tensor_round_trips_through_raw_data() {
        let t = float_tensor("b", &[2, 1, 1], &[1.5, 0.25], FLOAT);
        assert_eq!(t.raw_data.as_ref().unwrap().len(), 8);
        assert_eq!(float_values(&t).unwrap(), vec![1.5, 0.25]);
        let d = float_tensor("b", &[], &[3.0], DOUBLE);
        assert_eq!(d.raw_data.as_ref().unwrap().len(), 8);
        assert_eq!(float_values(&d).unwrap(), vec![3.0]);
        let h = float_tensor("b", &[2], &[1.5, 65504.0], FLOAT16);
        assert_eq!(h.raw_data.as_ref().unwrap().len(), 4);
        assert_eq!(float_values(&h).unwrap(), vec![1.5, 65504.0]);
    }

    #[test]
    fn float16_bounds_round_outward_and_keep_exact_values() {
        for v in [0.0f32, 1.0, 0.1, 3.3333, 1e-6, 700.3, -0.1, -2.7] {
            let (up, down) = (f16_outward(v, true), f16_outward(v, false));
            assert!(up >= v && down <= v, "{v}: {down} {up}");
            assert_eq!(f32::from(half::f16::from_f32(up)), up);
            assert_eq!(f32::from(half::f16::from_f32(down)), down);
            // The nearest on each side: no float16 lies strictly between.
            assert!(f32::from(next_f16(half::f16::from_f32(up), false)) < v || up == v);
            assert!(f32::from(next_f16(half::f16::from_f32(down), true)) > v || down == v);
        }
        assert_eq!(f16_outward(1.5, true), 1.5);
    }
}
