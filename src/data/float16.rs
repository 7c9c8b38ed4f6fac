//! float16 arrays in `.npy`/`.npz` files (numpy's `'<f2'`), which `ndarray-npy` does not read:
//! an element type that reads them widened to f32, exactly (every float16 is a float32).

use ndarray_npy::{ReadDataError, ReadableElement};
use py_literal::Value as PyValue;
use std::io::Read;

/// One float16 value, widened to f32.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Float16(pub f32);

impl ReadableElement for Float16 {
    fn read_to_end_exact_vec<R: Read>(
        mut reader: R,
        type_desc: &PyValue,
        len: usize,
    ) -> Result<Vec<Self>, ReadDataError> {
        let decode: fn([u8; 2]) -> u16 = match type_desc {
            PyValue::String(s) if s == "<f2" => u16::from_le_bytes,
            PyValue::String(s) if s == ">f2" => u16::from_be_bytes,
            other => return Err(ReadDataError::WrongDescriptor(other.clone())),
        };
        // Read what is there rather than allocate what the header claims.
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes)?;
        let want = len.checked_mul(2).ok_or(ReadDataError::MissingData)?;
        if bytes.len() < want {
            return Err(ReadDataError::MissingData);
        }
        if bytes.len() > want {
            return Err(ReadDataError::ExtraBytes(bytes.len() - want));
        }
        Ok(bytes
            .chunks_exact(2)
            .map(|c| Float16(half::f16::from_bits(decode([c[0], c[1]])).to_f32()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_and_big_endian_halves_and_refuses_other_types() {
        let values = [1.0f32, -0.5, 65504.0, f32::INFINITY];
        let halves: Vec<u16> = values.iter().map(|v| half::f16::from_f32(*v).to_bits()).collect();
        let le: Vec<u8> = halves.iter().flat_map(|h| h.to_le_bytes()).collect();
        let be: Vec<u8> = halves.iter().flat_map(|h| h.to_be_bytes()).collect();
        let read =
            |bytes: &[u8], desc: &str, len| Float16::read_to_end_exact_vec(bytes, &PyValue::String(desc.into()), len);
        let got: Vec<f32> = read(&le, "<f2", 4).unwrap().iter().map(|h| h.0).collect();
        assert_eq!(got, values);
        let got: Vec<f32> = read(&be, ">f2", 4).unwrap().iter().map(|h| h.0).collect();
        assert_eq!(got, values);
        assert!(matches!(read(&le, "<f4", 2), Err(ReadDataError::WrongDescriptor(_))));
        assert!(matches!(read(&le, "<f2", 5), Err(ReadDataError::MissingData)));
        assert!(matches!(read(&le, "<f2", 3), Err(ReadDataError::ExtraBytes(2))));
    }
}
