//! Building and reading the float tensors the passes write (bounds, zeros).

use crate::onnx::{TensorProto, tensor_proto::DataType};

pub const FLOAT: i32 = DataType::Float as i32;
pub const DOUBLE: i32 = DataType::Double as i32;

/// A float tensor in `raw_data` (little-endian, as the spec requires), stored as `elem_type`
/// (FLOAT or DOUBLE; the caller checks).
pub fn float_tensor(name: &str, dims: &[i64], values: &[f32], elem_type: i32) -> TensorProto {
    let raw_data = if elem_type == DOUBLE {
        values.iter().flat_map(|v| f64::from(*v).to_le_bytes()).collect()
    } else {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
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
    }
}
