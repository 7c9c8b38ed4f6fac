//! The tensors that go into and come out of an engine: typed, cheap to clone (shared storage),
//! readable as ndarray views whatever engine made them. A value an engine returns keeps that
//! engine's own storage (no copy when it is fed back to the same engine); a value made from an
//! array is shared storage that either engine reads.

use ndarray::{ArcArray, ArrayD, ArrayViewD, Axis, IxDyn, Slice};
use std::sync::Arc;
use tract_onnx::prelude::{Datum, IntoTValue, TValue, Tensor};

/// The element types an engine exchanges with the tool, with their ONNX `TensorProto` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElemType {
    F32,
    /// IEEE half precision (`half::f16`, which tract uses too).
    F16,
    U8,
    I8,
    I32,
    I64,
    Bool,
    F64,
    /// A type the tool does not exchange (tract or onnxruntime may still use it inside).
    Other,
}

/// Something done for one element type chosen at run time (`ElemType::dispatch`): the one
/// place where a run-time type becomes a type parameter.
pub trait PerElement {
    type Output;
    fn run<T: Element>(self) -> Self::Output;
}

impl ElemType {
    /// `f` for this element type (None for `Other`).
    pub fn dispatch<F: PerElement>(self, f: F) -> Option<F::Output> {
        match self {
            ElemType::F32 => Some(f.run::<f32>()),
            ElemType::F16 => Some(f.run::<half::f16>()),
            ElemType::U8 => Some(f.run::<u8>()),
            ElemType::I8 => Some(f.run::<i8>()),
            ElemType::I32 => Some(f.run::<i32>()),
            ElemType::I64 => Some(f.run::<i64>()),
            ElemType::Bool => Some(f.run::<bool>()),
            ElemType::F64 => Some(f.run::<f64>()),
            ElemType::Other => None,
        }
    }

    /// The `TensorProto.DataType` code.
    pub fn onnx(self) -> i32 {
        match self {
            ElemType::F32 => 1,
            ElemType::F16 => 10,
            ElemType::U8 => 2,
            ElemType::I8 => 3,
            ElemType::I32 => 6,
            ElemType::I64 => 7,
            ElemType::Bool => 9,
            ElemType::F64 => 11,
            ElemType::Other => 0,
        }
    }

    /// The type of a `TensorProto.DataType` code (`Other` for one the tool does not exchange).
    pub fn from_onnx(code: i32) -> ElemType {
        [
            ElemType::F32,
            ElemType::F16,
            ElemType::U8,
            ElemType::I8,
            ElemType::I32,
            ElemType::I64,
            ElemType::Bool,
            ElemType::F64,
        ]
        .into_iter()
        .find(|t| t.onnx() == code)
        .unwrap_or(ElemType::Other)
    }

    pub fn name(self) -> &'static str {
        match self {
            ElemType::F32 => "float32",
            ElemType::F16 => "float16",
            ElemType::U8 => "uint8",
            ElemType::I8 => "int8",
            ElemType::I32 => "int32",
            ElemType::I64 => "int64",
            ElemType::Bool => "bool",
            ElemType::F64 => "float64",
            ElemType::Other => "a type other than float16/32/64, int8/32/64, uint8 and bool",
        }
    }
}

/// A tensor value (see the module header).
#[derive(Clone)]
pub struct Value(pub(super) Repr);

#[derive(Clone)]
pub(super) enum Repr {
    Array(Array),
    Tract(TValue),
    /// An onnxruntime output, read in place.
    Ort {
        value: Arc<ort::value::DynValue>,
        shape: Vec<usize>,
        elem: ElemType,
    },
}

/// Shared ndarray storage, one variant per element type (public only because `Element`
/// names it; the module is private, so nothing outside `engine` sees it).
#[derive(Clone)]
pub enum Array {
    F32(ArcArray<f32, IxDyn>),
    F16(ArcArray<half::f16, IxDyn>),
    U8(ArcArray<u8, IxDyn>),
    I8(ArcArray<i8, IxDyn>),
    I32(ArcArray<i32, IxDyn>),
    I64(ArcArray<i64, IxDyn>),
    Bool(ArcArray<bool, IxDyn>),
    F64(ArcArray<f64, IxDyn>),
}

/// An element type both engines read and write.
pub trait Element: Datum + ort::value::PrimitiveTensorElementType + Copy + std::fmt::Debug + 'static {
    const TYPE: ElemType;
    #[doc(hidden)]
    fn wrap(array: ArcArray<Self, IxDyn>) -> Array;
    #[doc(hidden)]
    fn peek(array: &Array) -> Option<&ArcArray<Self, IxDyn>>;
}

macro_rules! element {
    ($t:ty, $variant:ident) => {
        impl Element for $t {
            const TYPE: ElemType = ElemType::$variant;
            fn wrap(array: ArcArray<Self, IxDyn>) -> Array {
                Array::$variant(array)
            }
            fn peek(array: &Array) -> Option<&ArcArray<Self, IxDyn>> {
                match array {
                    Array::$variant(a) => Some(a),
                    _ => None,
                }
            }
        }
    };
}
element!(f32, F32);
element!(half::f16, F16);
element!(u8, U8);
element!(i8, I8);
element!(i32, I32);
element!(i64, I64);
element!(bool, Bool);
element!(f64, F64);

impl Array {
    fn elem_type(&self) -> ElemType {
        match self {
            Array::F32(_) => ElemType::F32,
            Array::F16(_) => ElemType::F16,
            Array::U8(_) => ElemType::U8,
            Array::I8(_) => ElemType::I8,
            Array::I32(_) => ElemType::I32,
            Array::I64(_) => ElemType::I64,
            Array::Bool(_) => ElemType::Bool,
            Array::F64(_) => ElemType::F64,
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            Array::F32(a) => a.shape(),
            Array::F16(a) => a.shape(),
            Array::U8(a) => a.shape(),
            Array::I8(a) => a.shape(),
            Array::I32(a) => a.shape(),
            Array::I64(a) => a.shape(),
            Array::Bool(a) => a.shape(),
            Array::F64(a) => a.shape(),
        }
    }
}

impl<T: Element> From<ArrayD<T>> for Value {
    fn from(array: ArrayD<T>) -> Value {
        Value(Repr::Array(T::wrap(array.into_shared())))
    }
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Value({} {:?})", self.elem_type().name(), self.shape())
    }
}

impl Value {
    /// A rank-0 tensor.
    pub fn scalar<T: Element>(value: T) -> Value {
        Value::from(ArrayD::from_elem(IxDyn(&[]), value))
    }

    pub fn elem_type(&self) -> ElemType {
        match &self.0 {
            Repr::Array(a) => a.elem_type(),
            Repr::Tract(t) => tract_elem_type(t),
            Repr::Ort { elem, .. } => *elem,
        }
    }

    pub fn shape(&self) -> &[usize] {
        match &self.0 {
            Repr::Array(a) => a.shape(),
            Repr::Tract(t) => t.shape(),
            Repr::Ort { shape, .. } => shape,
        }
    }

    /// The size of the elements in memory.
    pub fn bytes(&self) -> usize {
        let width = match self.elem_type() {
            ElemType::U8 | ElemType::I8 | ElemType::Bool => 1,
            ElemType::F16 => 2,
            ElemType::F32 | ElemType::I32 => 4,
            ElemType::I64 | ElemType::F64 | ElemType::Other => 8,
        };
        width * self.shape().iter().product::<usize>()
    }

    /// The elements as a view, when they are of type `T`.
    pub fn view<T: Element>(&self) -> Option<ArrayViewD<'_, T>> {
        match &self.0 {
            Repr::Array(a) => T::peek(a).map(|a| a.view()),
            Repr::Tract(t) => t.to_plain_array_view::<T>().ok(),
            Repr::Ort { value, elem, .. } => (*elem == T::TYPE)
                .then(|| value.try_extract_array::<T>().ok())
                .flatten(),
        }
    }

    /// The elements as a float32 view, or an error naming the type found.
    pub fn f32s(&self) -> Result<ArrayViewD<'_, f32>, String> {
        self.view::<f32>()
            .ok_or_else(|| format!("{} where float32 was expected", self.elem_type().name()))
    }

    /// The elements of a float16 or 8-bit integer value widened (exactly) to float32, or an
    /// error naming the type found. Calibration reads float16 activations and the integer
    /// ones of quantized models this way; float32 values are read in place (`view`).
    pub fn widened_f32(&self) -> Result<ArrayD<f32>, String> {
        if let Some(v) = self.view::<half::f16>() {
            return Ok(v.mapv(f32::from));
        }
        if let Some(v) = self.view::<u8>() {
            return Ok(v.mapv(f32::from));
        }
        if let Some(v) = self.view::<i8>() {
            return Ok(v.mapv(f32::from));
        }
        Err(self.elem_type().name().to_owned())
    }

    /// An owned copy of the elements, when they are of type `T`.
    pub fn to_array<T: Element>(&self) -> Option<ArrayD<T>> {
        self.view::<T>().map(|v| v.to_owned())
    }

    /// The value of a one-element boolean tensor.
    pub fn scalar_bool(&self) -> Option<bool> {
        self.view::<bool>()
            .filter(|v| v.len() == 1)
            .map(|v| v.iter().copied().next().expect("one element"))
    }

    /// The value of a one-element int64 (or int32) tensor.
    pub fn scalar_i64(&self) -> Option<i64> {
        if let Some(v) = self.view::<i64>().filter(|v| v.len() == 1) {
            return v.iter().copied().next();
        }
        self.view::<i32>()
            .filter(|v| v.len() == 1)
            .and_then(|v| v.iter().copied().next())
            .map(i64::from)
    }

    /// Rows `start..end` of axis 0 (`whole`: row `start` alone, without axis 0), as a new array.
    pub fn rows(&self, start: usize, end: usize, whole: bool) -> Value {
        struct Rows<'v>(&'v Value, usize, usize, bool);
        impl PerElement for Rows<'_> {
            type Output = Value;
            fn run<T: Element>(self) -> Value {
                let view = self.0.view::<T>().expect("the type was checked");
                if self.3 {
                    Value::from(view.index_axis(Axis(0), self.1).to_owned())
                } else {
                    Value::from(view.slice_axis(Axis(0), Slice::from(self.1..self.2)).to_owned())
                }
            }
        }
        self.elem_type()
            .dispatch(Rows(self, start, end, whole))
            .expect("values the tool holds have a known type")
    }

    /// The rows of axis 0 at `rows`, in that order, as a new array.
    pub fn select_rows(&self, rows: &[usize]) -> Value {
        struct Select<'v>(&'v Value, &'v [usize]);
        impl PerElement for Select<'_> {
            type Output = Value;
            fn run<T: Element>(self) -> Value {
                Value::from(
                    self.0
                        .view::<T>()
                        .expect("the type was checked")
                        .select(Axis(0), self.1),
                )
            }
        }
        self.elem_type()
            .dispatch(Select(self, rows))
            .expect("values the tool holds have a known type")
    }

    /// `parts` stacked along axis 0, as a new array; None when they differ in type or in a
    /// later axis (or there are none).
    pub fn concat_rows(parts: &[Value]) -> Option<Value> {
        struct Concat<'v>(&'v [Value]);
        impl PerElement for Concat<'_> {
            type Output = Option<Value>;
            fn run<T: Element>(self) -> Option<Value> {
                let views = self.0.iter().map(|v| v.view::<T>()).collect::<Option<Vec<_>>>()?;
                ndarray::concatenate(Axis(0), &views).ok().map(Value::from)
            }
        }
        let first = parts.first()?;
        first.elem_type().dispatch(Concat(parts)).flatten()
    }

    /// This value with copies of its last row appended up to `n` rows (max/min reductions and
    /// per-row predictions of the real rows are unchanged).
    pub fn pad_rows(&self, n: usize) -> Value {
        let rows = self.shape().first().copied().unwrap_or(0);
        if rows == 0 || rows >= n {
            return self.clone();
        }
        let mut order: Vec<usize> = (0..rows).collect();
        order.resize(n, rows - 1);
        self.select_rows(&order)
    }

    /// The value as tract takes it: its own storage, or a copy of the array.
    pub(super) fn to_tract(&self) -> TValue {
        match &self.0 {
            Repr::Tract(t) => t.clone(),
            Repr::Ort { elem, .. } => {
                struct Copy<'v>(&'v Value);
                impl PerElement for Copy<'_> {
                    type Output = TValue;
                    fn run<T: Element>(self) -> TValue {
                        let view = self.0.view::<T>().expect("the type was checked");
                        Tensor::from(view.to_owned()).into_tvalue()
                    }
                }
                // onnxruntime outputs of other types are refused when they are made.
                elem.dispatch(Copy(self))
                    .expect("an onnxruntime output of a known type")
            }
            Repr::Array(a) => match a {
                Array::F32(a) => array_to_tensor(a),
                Array::F16(a) => array_to_tensor(a),
                Array::U8(a) => array_to_tensor(a),
                Array::I8(a) => array_to_tensor(a),
                Array::I32(a) => array_to_tensor(a),
                Array::I64(a) => array_to_tensor(a),
                Array::Bool(a) => array_to_tensor(a),
                Array::F64(a) => array_to_tensor(a),
            },
        }
    }
}

fn array_to_tensor<T: Element>(array: &ArcArray<T, IxDyn>) -> TValue {
    match array.as_slice() {
        Some(slice) => Tensor::from_shape(array.shape(), slice)
            .expect("the shape holds the elements")
            .into_tvalue(),
        None => Tensor::from(array.to_owned()).into_tvalue(),
    }
}

fn tract_elem_type(t: &TValue) -> ElemType {
    use tract_onnx::prelude::DatumType;
    match t.datum_type() {
        DatumType::F32 => ElemType::F32,
        DatumType::F16 => ElemType::F16,
        DatumType::U8 => ElemType::U8,
        DatumType::I8 => ElemType::I8,
        DatumType::I32 => ElemType::I32,
        DatumType::I64 => ElemType::I64,
        DatumType::Bool => ElemType::Bool,
        DatumType::F64 => ElemType::F64,
        _ => ElemType::Other,
    }
}
