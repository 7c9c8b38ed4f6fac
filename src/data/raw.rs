//! An array as read from a `.npy`/`.npz` file or handed over in memory, before it is
//! converted to its input's type: the element types the tool reads, widened to a few.
//! Uses nothing of the crate but `cap` (what an array takes), so that the readers
//! (`npy`) build on their own for the fuzz target.

use crate::data::cap::held;
use ndarray::ArrayD;

/// An array as read from a file or handed over in memory (`Raw::from` an ndarray of any
/// element type the tool reads), before it is converted to the input's type.
#[derive(Debug, Clone)]
pub enum Raw {
    /// float16, widened (exactly) to f32.
    F16(ArrayD<f32>),
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
    /// Any integer type, widened (its name kept for messages).
    Int(ArrayD<i64>, &'static str),
    Bool(ArrayD<bool>),
}

/// The element types the tool reads, as a message names them.
pub const READABLE_DTYPES: &str = "float16/32/64, int8/16/32/64, uint8/16/32, bool";

impl From<ArrayD<f32>> for Raw {
    fn from(a: ArrayD<f32>) -> Raw {
        Raw::F32(a)
    }
}

impl From<ArrayD<f64>> for Raw {
    fn from(a: ArrayD<f64>) -> Raw {
        Raw::F64(a)
    }
}

impl From<ArrayD<bool>> for Raw {
    fn from(a: ArrayD<bool>) -> Raw {
        Raw::Bool(a)
    }
}

impl From<ArrayD<half::f16>> for Raw {
    fn from(a: ArrayD<half::f16>) -> Raw {
        Raw::F16(a.mapv(f32::from))
    }
}

/// The integer types an array may hold, widened to i64 with their numpy name kept.
pub trait Integer: Copy + Into<i64> {
    const NAME: &'static str;
}

/// Each integer type with its numpy name.
macro_rules! integer_names {
    ($($t:ty => $name:literal),* $(,)?) => {
        $(impl Integer for $t {
            const NAME: &'static str = $name;
        })*
    };
}

integer_names!(i8 => "int8", i16 => "int16", i32 => "int32", i64 => "int64", u8 => "uint8", u16 => "uint16", u32 => "uint32");

impl<T: Integer> From<ArrayD<T>> for Raw {
    fn from(a: ArrayD<T>) -> Raw {
        Raw::Int(a.mapv(Into::into), T::NAME)
    }
}

impl Raw {
    pub fn shape(&self) -> &[usize] {
        match self {
            Raw::F16(a) | Raw::F32(a) => a.shape(),
            Raw::F64(a) => a.shape(),
            Raw::Int(a, _) => a.shape(),
            Raw::Bool(a) => a.shape(),
        }
    }

    /// The bytes the array takes, as the data cap counts them (`data::cap`).
    pub(crate) fn held_bytes(&self) -> Option<u64> {
        let (values, per_value) = match self {
            Raw::F16(a) | Raw::F32(a) => (a.len(), 4),
            Raw::F64(a) => (a.len(), 8),
            Raw::Int(a, _) => (a.len(), 8),
            Raw::Bool(a) => (a.len(), 1),
        };
        held(values, per_value)
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Raw::F16(_) => "float16",
            Raw::F32(_) => "float32",
            Raw::F64(_) => "float64",
            Raw::Int(_, name) => name,
            Raw::Bool(_) => "bool",
        }
    }
}
