//! Sample sets for calibration and evaluation: a `.npy` file (one model input), a `.npz`
//! archive (one array per input name), a folder of images (`images`) or arrays registered in
//! memory under a path (`memory`), checked against what the model expects, with their labels.

use crate::data::cap::{Budget, DataCap};
use crate::data::memory;
use crate::data::npy::{self, Npz};
pub use crate::data::raw::{Integer, READABLE_DTYPES, Raw};
use crate::engine::{
    ElemType, Engine, EngineError, Outputs, Session, Value, declared_dims, declared_elem_type, model_input_names,
};
use fitact_passes::onnx::ModelProto;
use ndarray::ArrayD;
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DatasetError {
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// How an input's array gives samples (see `load_samples`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The array is `(N, *rest)` with `rest` the input's shape after its batch axis: samples
    /// are rows of the batch axis, and a run takes several at once.
    Batched,
    /// The array is `(N, *input_shape)` for an input with no batch axis in front (a
    /// recurrent state, a scalar): each sample is one whole feed, and the model runs one
    /// sample at a time.
    Whole,
}

/// Samples for every model input, all with the same count along axis 0, each of the type its
/// input takes.
#[derive(Debug, Clone)]
pub struct Samples {
    /// (input name, array of shape [count, ...]) in the model's input order.
    pub inputs: Vec<(String, Value)>,
    /// Per input, how its rows are fed.
    pub layouts: Vec<Layout>,
    pub count: usize,
}

impl Samples {
    /// Float32 samples batched along axis 0 (as image folders and tests make them).
    pub fn batched(inputs: Vec<(String, ArrayD<f32>)>) -> Samples {
        let count = inputs
            .first()
            .map_or(0, |(_, a)| a.shape().first().copied().unwrap_or(0));
        Samples {
            layouts: vec![Layout::Batched; inputs.len()],
            inputs: inputs.into_iter().map(|(n, a)| (n, Value::from(a))).collect(),
            count,
        }
    }

    /// The feeds of samples `start..end`, one per input: rows of a batched input, the whole
    /// feed of sample `start` for the others (which `run_size` keeps to one sample per run).
    pub fn slice(&self, start: usize, end: usize) -> Vec<Value> {
        self.inputs
            .iter()
            .zip(&self.layouts)
            .map(|((_, a), layout)| a.rows(start, end, *layout == Layout::Whole))
            .collect()
    }

    /// The samples at `rows`, in that order.
    pub fn select(&self, rows: &[usize]) -> Samples {
        Samples {
            inputs: self
                .inputs
                .iter()
                .map(|(name, a)| (name.clone(), a.select_rows(rows)))
                .collect(),
            layouts: self.layouts.clone(),
            count: rows.len(),
        }
    }

    /// The shape of one sample of each input (without the leading count axis).
    pub fn sample_shapes(&self) -> Vec<Vec<usize>> {
        self.inputs.iter().map(|(_, a)| a.shape()[1..].to_vec()).collect()
    }

    /// Whether some input takes whole feeds, so that the model runs one sample at a time.
    pub fn one_at_a_time(&self) -> bool {
        self.layouts.contains(&Layout::Whole)
    }

    /// How many samples one run takes: `preferred`, or 1 when some input takes whole feeds.
    pub fn run_size(&self, preferred: usize) -> usize {
        if self.one_at_a_time() { 1 } else { preferred.max(1) }
    }

    /// A session of `model` for these samples, run `preferred` at a time (`run_size`).
    pub fn session(
        &self,
        engine: &Engine,
        model: &ModelProto,
        preferred: usize,
        outputs: Outputs,
    ) -> Result<Session, EngineError> {
        let first: Vec<(String, Value)> = self
            .inputs
            .iter()
            .map(|(n, _)| n.clone())
            .zip(self.slice(0, 1))
            .collect();
        session_for(engine, model, &first, self.one_at_a_time(), preferred, outputs)
    }
}

/// A session of `model` for runs fed like `first` (one value per input, by name): for batched
/// feeds, loaded for their shapes after the batch axis, with the batch free unless the model
/// fixes it (then `preferred` samples per run where it is free); for whole feeds (`whole`),
/// for exactly these values' types and shapes.
pub fn session_for(
    engine: &Engine,
    model: &ModelProto,
    first: &[(String, Value)],
    whole: bool,
    preferred: usize,
    outputs: Outputs,
) -> Result<Session, EngineError> {
    if whole {
        return engine.load_for_values(model, first, outputs);
    }
    let shapes: Vec<Vec<usize>> = first.iter().map(|(_, v)| v.shape()[1..].to_vec()).collect();
    engine.load(model, &shapes, preferred, outputs)
}

/// The largest integer magnitude float32 holds exactly (2^24); float64's is 2^53.
const F32_EXACT: i64 = 1 << 24;
const F64_EXACT: i64 = 1 << 53;

/// `raw` as the input's element type, where the conversion loses nothing (float64 to float32
/// excepted: numpy's default float type is accepted for float32 inputs, as before).
fn convert(raw: Raw, to: ElemType) -> Result<Value, String> {
    let from = raw.type_name();
    let refuse = |why: &str| Err(format!("holds {from} values, the input takes {}: {why}", to.name()));
    let ints_within = |a: &ArrayD<i64>, low: i64, high: i64| a.iter().find(|v| **v < low || **v > high).copied();
    match (raw, to) {
        (Raw::F16(a) | Raw::F32(a), ElemType::F32) => Ok(Value::from(a)),
        // As float64 to float32: a float16 model's input takes float32 data, rounded as a
        // float16 runtime would round it.
        (Raw::F16(a) | Raw::F32(a), ElemType::F16) => Ok(Value::from(a.mapv(half::f16::from_f32))),
        (Raw::F64(a), ElemType::F16) => Ok(Value::from(a.mapv(half::f16::from_f64))),
        (Raw::F16(a), ElemType::F64) => Ok(Value::from(a.mapv(f64::from))),
        (Raw::F64(a), ElemType::F32) => Ok(Value::from(a.mapv(|v| v as f32))),
        (Raw::F32(a), ElemType::F64) => Ok(Value::from(a.mapv(f64::from))),
        (Raw::F64(a), ElemType::F64) => Ok(Value::from(a)),
        (Raw::Int(a, _), ElemType::F32) => match ints_within(&a, -F32_EXACT, F32_EXACT) {
            None => Ok(Value::from(a.mapv(|v| v as f32))),
            Some(v) => refuse(&format!("{v} has no exact float32")),
        },
        (Raw::Int(a, _), ElemType::F64) => match ints_within(&a, -F64_EXACT, F64_EXACT) {
            None => Ok(Value::from(a.mapv(|v| v as f64))),
            Some(v) => refuse(&format!("{v} has no exact float64")),
        },
        (Raw::Int(a, _), ElemType::I64) => Ok(Value::from(a)),
        (Raw::Int(a, _), ElemType::I32) => match ints_within(&a, i32::MIN.into(), i32::MAX.into()) {
            None => Ok(Value::from(a.mapv(|v| v as i32))),
            Some(v) => refuse(&format!("{v} does not fit")),
        },
        (Raw::Int(a, _), ElemType::I8) => match ints_within(&a, i8::MIN.into(), i8::MAX.into()) {
            None => Ok(Value::from(a.mapv(|v| v as i8))),
            Some(v) => refuse(&format!("{v} does not fit")),
        },
        (Raw::Int(a, _), ElemType::U8) => match ints_within(&a, 0, u8::MAX.into()) {
            None => Ok(Value::from(a.mapv(|v| v as u8))),
            Some(v) => refuse(&format!("{v} does not fit")),
        },
        (Raw::Bool(a), ElemType::Bool) => Ok(Value::from(a)),
        (
            Raw::F16(_) | Raw::F32(_) | Raw::F64(_),
            ElemType::I8 | ElemType::U8 | ElemType::I32 | ElemType::I64 | ElemType::Bool,
        ) => refuse("give integer values"),
        (_, ElemType::Other) => refuse("the tool cannot feed this type"),
        _ => refuse("convert the array first"),
    }
}

/// The layout of an array of shape `shape` (samples first) for an input declared with `dims`
/// (None: undeclared, taken as batched; a free dim is `None`), or why it fits neither. Axis 0
/// of the input is the batch whenever the samples fit the declared shape after it and it can
/// be the batch: free, fixed to 1 (fed one at a time), or fixed with nothing free after it (a
/// model exported with a fixed batch). A fixed size above 1 with a free axis after it (a
/// sequence-first `[T, N, features]`) has its batch elsewhere. Otherwise an array one rank
/// higher than the input gives whole feeds (a recurrent state, a scalar as `(N,)`).
fn layout_for(shape: &[usize], dims: Option<&[Option<i64>]>) -> Result<Layout, String> {
    let rest = &shape[1..];
    let Some(dims) = dims else { return Ok(Layout::Batched) };
    let fits = |declared: &[Option<i64>]| {
        declared.len() == rest.len() && declared.iter().zip(rest).all(|(d, s)| d.is_none_or(|d| d == *s as i64))
    };
    let batch_first = dims.first().is_some_and(|first| match first {
        None | Some(1) => true,
        Some(_) => dims[1..].iter().all(Option::is_some),
    });
    if batch_first && fits(&dims[1..]) {
        return Ok(Layout::Batched);
    }
    if fits(dims) {
        return Ok(Layout::Whole);
    }
    let show = |d: &[Option<i64>]| {
        let inner: Vec<String> = d.iter().map(|d| d.map_or("?".to_owned(), |d| d.to_string())).collect();
        format!("[{}]", inner.join(", "))
    };
    // An array layout: (N, dims...), or (N,) for a scalar.
    let layout = |d: &[Option<i64>]| match show(d).trim_matches(['[', ']']) {
        "" => "(N,)".to_owned(),
        inner => format!("(N, {inner})"),
    };
    let batched = if batch_first {
        format!("{} for samples along its first axis, or ", layout(&dims[1..]))
    } else {
        String::new()
    };
    let why = if batch_first || dims.is_empty() {
        ""
    } else {
        " (its first axis is fixed and a later one is free: the batch is not in front)"
    };
    Err(format!(
        "has samples of shape {rest:?}, but the input is declared {}: give {batched}{} for N whole feeds{why}",
        show(dims),
        layout(dims)
    ))
}

/// Loads samples for the inputs of `model`. A `.npy` file feeds a single-input model; a
/// `.npz` must hold an array named after every input; arrays registered in memory under
/// `path` (`memory::InMemory`) are read as the file they stand for would be. Each array keeps
/// its dtype and is converted to its input's type where that loses nothing. An array `(N, *rest)` whose `rest`
/// is the input's shape after its batch axis gives N samples batched along axis 0; one
/// `(N, *input_shape)` for an input with no batch axis in front (a state, a scalar `()` as
/// `(N,)`) gives N whole feeds, and the model then runs one sample at a time.
pub fn load_samples(path: &Path, model: &ModelProto) -> Result<Samples, DatasetError> {
    load_samples_within(path, model, DataCap::DEFAULT)
}

/// `load_samples` with the arrays' memory capped at `cap` (`data::cap`): a header or an
/// archive member that claims more than its bytes hold, or arrays that would take more than
/// `cap` once read, are refused before anything is allocated.
pub fn load_samples_within(path: &Path, model: &ModelProto, cap: DataCap) -> Result<Samples, DatasetError> {
    let invalid = |reason: String| DatasetError::Invalid {
        path: path.display().to_string(),
        reason,
    };
    let input_names = model_input_names(model);
    let raw = read_arrays(path, &input_names, &mut Budget::new(cap)).map_err(invalid)?;
    let mut count = None;
    let (mut inputs, mut layouts) = (Vec::new(), Vec::new());
    for (name, array) in raw {
        if array.shape().is_empty() {
            return Err(invalid(format!("array '{name}' is a scalar; expected [samples, ...]")));
        }
        let n = array.shape()[0];
        if n == 0 {
            return Err(invalid(format!("array '{name}' holds no samples")));
        }
        if *count.get_or_insert(n) != n {
            return Err(invalid(format!(
                "array '{name}' has {n} samples, another input has {}",
                count.unwrap()
            )));
        }
        check_finite(&name, &array).map_err(invalid)?;
        let dims = declared_dims(model, &name);
        let layout = layout_for(array.shape(), dims.as_deref()).map_err(|r| invalid(format!("array '{name}' {r}")))?;
        let elem = declared_elem_type(model, &name).unwrap_or(ElemType::F32);
        let value = convert(array, elem).map_err(|r| invalid(format!("array '{name}' {r}")))?;
        inputs.push((name, value));
        layouts.push(layout);
    }
    Ok(Samples {
        inputs,
        layouts,
        count: count.unwrap_or(0),
    })
}

/// The array for each of `input_names`, from the arrays registered in memory under `path`, a
/// `.npz` archive or a `.npy` file, each charged to `budget` before it is read.
fn read_arrays(path: &Path, input_names: &[String], budget: &mut Budget) -> Result<Vec<(String, Raw)>, String> {
    if let Some(arrays) = memory::registered(path) {
        return arrays.for_inputs(input_names, budget);
    }
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npz")) {
        let mut npz = Npz::open(path)?;
        let present = npz.names();
        return input_names
            .iter()
            .map(|name| {
                if !present.contains(name) {
                    return Err(format!(
                        "no array named '{name}' (the model's input); found {present:?}"
                    ));
                }
                Ok((name.clone(), npz.read(name, budget)?))
            })
            .collect();
    }
    if input_names.len() != 1 {
        return Err(format!(
            "the model has {} inputs ({input_names:?}); give a .npz with one array per input name",
            input_names.len()
        ));
    }
    let name = &input_names[0];
    let array = npy::read_npy_file(path, &format!("array '{name}'"), budget)?;
    Ok(vec![(name.clone(), array)])
}

/// Refuses a float array holding a NaN or an infinity, naming the sample.
fn check_finite(name: &str, array: &Raw) -> Result<(), String> {
    let (len, index) = match array {
        Raw::F32(a) => (a.len(), a.iter().position(|v| !v.is_finite())),
        Raw::F64(a) => (a.len(), a.iter().position(|v| !v.is_finite())),
        _ => return Ok(()),
    };
    match index {
        Some(index) => {
            let sample = index / (len / array.shape()[0]).max(1);
            Err(format!(
                "array '{name}' holds a NaN or infinite value (sample {sample})"
            ))
        }
        None => Ok(()),
    }
}

/// Samples and, when known, their labels.
pub struct Dataset {
    pub samples: Samples,
    pub labels: Option<Vec<usize>>,
}

/// Loads the samples at `path` for `model`: a folder is read as images (labels from class
/// sub-folders), anything else as `.npy`/`.npz`. A `labels` file, when given, supplies the
/// labels (and overrides those of class folders). The samples, and the labels, may take at
/// most `cap` of memory (`data::cap`).
pub fn load_dataset(
    path: &Path,
    model: &fitact_passes::onnx::ModelProto,
    labels: Option<&Path>,
    images: &crate::data::images::ImageOptions,
    cap: DataCap,
) -> anyhow::Result<Dataset> {
    use anyhow::Context;
    let input_names = crate::engine::model_input_names(model);
    let (samples, folder_labels) = if path.is_dir() {
        anyhow::ensure!(
            input_names.len() == 1,
            "{}: a folder of images feeds a single-input model; this one has inputs {input_names:?}",
            path.display()
        );
        let dims = crate::engine::declared_dims(model, &input_names[0]).unwrap_or_default();
        let set = crate::data::images::load_images(path, &input_names[0], &dims, images, cap)?;
        (set.samples, set.labels)
    } else {
        (load_samples_within(path, model, cap)?, None)
    };
    let labels = match labels {
        Some(file) => Some(load_labels(file, samples.count, cap).context("reading the labels")?),
        None => folder_labels,
    };
    Ok(Dataset { samples, labels })
}

/// Class labels: an int64 or int32 `.npy` (or such an array registered in memory under
/// `path`) with one non-negative label per sample, taking at most `cap` of memory.
pub fn load_labels(path: &Path, count: usize, cap: DataCap) -> anyhow::Result<Vec<usize>> {
    let read = |p: &Path| -> Result<Vec<i64>, String> {
        let mut budget = Budget::new(cap);
        let raw = match memory::registered(p) {
            Some(arrays) => return arrays.labels(&mut budget),
            None => npy::read_npy_file(p, "the labels", &mut budget)?,
        };
        match raw {
            Raw::Int(a, "int64" | "int32") => Ok(a.iter().copied().collect()),
            other => Err(format!("expected int64 or int32 labels, got {}", other.type_name())),
        }
    };
    let labels = read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    anyhow::ensure!(
        labels.len() == count,
        "{}: {} labels for {count} samples",
        path.display(),
        labels.len()
    );
    if let Some(bad) = labels.iter().find(|l| **l < 0) {
        anyhow::bail!("{}: label {bad} is negative", path.display());
    }
    Ok(labels.into_iter().map(|l| l as usize).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fitact_passes::onnx::{
        GraphProto, TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto, type_proto,
    };
    use ndarray::Array;
    use ndarray_npy::{NpzWriter, write_npy};
    use std::fs::File;

    /// A model that only declares inputs: (name, ONNX type code, dims; -1 for a symbolic one,
    /// -2 for `dim_value: -1` as Paddle writes a dynamic size).
    fn model_with_inputs(inputs: &[(&str, i32, &[i64])]) -> ModelProto {
        let input = |(name, elem, dims): &(&str, i32, &[i64])| ValueInfoProto {
            name: Some((*name).to_owned()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(*elem),
                    shape: Some(TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|d| tensor_shape_proto::Dimension {
                                value: Some(if *d == -2 {
                                    tensor_shape_proto::dimension::Value::DimValue(-1)
                                } else if *d < 0 {
                                    tensor_shape_proto::dimension::Value::DimParam("N".into())
                                } else {
                                    tensor_shape_proto::dimension::Value::DimValue(*d)
                                }),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        ModelProto {
            graph: Some(GraphProto {
                input: inputs.iter().map(input).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const FLOAT: i32 = 1;
    const INT32: i32 = 6;
    const INT64: i32 = 7;

    fn error_of(path: &Path, model: &ModelProto) -> String {
        load_samples(path, model).unwrap_err().to_string()
    }

    #[test]
    fn loads_npy_and_rejects_what_does_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        let image = model_with_inputs(&[("input", FLOAT, &[-1, 1, 2, 2])]);
        let good = dir.path().join("x.npy");
        write_npy(&good, &Array::<f64, _>::zeros((4, 1, 2, 2))).unwrap();
        let samples = load_samples(&good, &image).unwrap();
        assert_eq!((samples.count, samples.sample_shapes()), (4, vec![vec![1, 2, 2]]));
        assert_eq!(samples.inputs[0].1.elem_type(), ElemType::F32);

        let mut nan = Array::<f32, _>::zeros((3, 2));
        nan[[2, 1]] = f32::NAN;
        let nan_path = dir.path().join("n.npy");
        write_npy(&nan_path, &nan).unwrap();
        let err = error_of(&nan_path, &model_with_inputs(&[("input", FLOAT, &[-1, 2])]));
        assert!(err.contains("NaN or infinite value (sample 2)"), "{err}");

        let two = model_with_inputs(&[("a", FLOAT, &[-1, 1, 2, 2]), ("b", FLOAT, &[-1, 1, 2, 2])]);
        assert!(error_of(&good, &two).contains("give a .npz"));

        let err = error_of(&good, &model_with_inputs(&[("input", FLOAT, &[-1, 3, 2, 2])]));
        assert!(
            err.contains("array 'input' has samples of shape [1, 2, 2], but the input is declared [?, 3, 2, 2]"),
            "{err}"
        );
    }

    #[test]
    fn arrays_keep_their_dtype_and_convert_only_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, f: &dyn Fn(&mut NpzWriter<File>)| {
            let path = dir.path().join(name);
            let mut npz = NpzWriter::new(File::create(&path).unwrap());
            f(&mut npz);
            npz.finish().unwrap();
            path
        };
        let model = model_with_inputs(&[("tokens", INT64, &[-1, 3]), ("features", FLOAT, &[-1, 2])]);
        let ok = write("ok.npz", &|npz| {
            npz.add_array(
                "tokens",
                &Array::from_shape_vec((2, 3), vec![1i32, 2, 3, 4, 5, 6]).unwrap(),
            )
            .unwrap();
            npz.add_array("features", &Array::from_shape_vec((2, 2), vec![1u8, 2, 3, 4]).unwrap())
                .unwrap();
        });
        let samples = load_samples(&ok, &model).unwrap();
        assert_eq!(
            samples.inputs[0].1.to_array::<i64>().unwrap().as_slice().unwrap(),
            &[1, 2, 3, 4, 5, 6]
        );
        assert_eq!(
            samples.inputs[1].1.to_array::<f32>().unwrap().as_slice().unwrap(),
            &[1.0, 2.0, 3.0, 4.0]
        );

        let floats = write("floats.npz", &|npz| {
            npz.add_array("tokens", &Array::<f32, _>::zeros((2, 3))).unwrap();
            npz.add_array("features", &Array::<f32, _>::zeros((2, 2))).unwrap();
        });
        let err = error_of(&floats, &model);
        assert!(
            err.contains("array 'tokens' holds float32 values, the input takes int64: give integer values"),
            "{err}"
        );

        let big = write("big.npz", &|npz| {
            npz.add_array("tokens", &Array::<i64, _>::zeros((2, 3))).unwrap();
            npz.add_array("features", &Array::from_elem((2, 2), 16_777_217i64))
                .unwrap();
        });
        let err = error_of(&big, &model);
        assert!(err.contains("16777217 has no exact float32"), "{err}");

        let narrow = model_with_inputs(&[("tokens", INT32, &[-1, 3]), ("features", FLOAT, &[-1, 2])]);
        let wide = write("wide.npz", &|npz| {
            npz.add_array("tokens", &Array::from_elem((2, 3), 3_000_000_000i64))
                .unwrap();
            npz.add_array("features", &Array::<f32, _>::zeros((2, 2))).unwrap();
        });
        let err = error_of(&wide, &narrow);
        assert!(
            err.contains("holds int64 values, the input takes int32: 3000000000 does not fit"),
            "{err}"
        );

        let flags = write("flags.npz", &|npz| {
            npz.add_array("tokens", &Array::from_elem((2, 3), true)).unwrap();
            npz.add_array("features", &Array::<f32, _>::zeros((2, 2))).unwrap();
        });
        assert!(error_of(&flags, &model).contains("holds bool values, the input takes int64"));
    }

    #[test]
    fn float16_arrays_widen_exactly_to_float_inputs_and_not_to_integers() {
        let dir = tempfile::tempdir().unwrap();
        // An .npy file as numpy writes float16: header dict padded to 64 bytes, then the data.
        let values = [0.5f32, -2.0, 1024.0, 0.099975586];
        let mut header = "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 2), }".to_owned();
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        bytes.extend(
            values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes()),
        );
        let path = dir.path().join("half.npy");
        std::fs::write(&path, bytes).unwrap();
        let samples = load_samples(&path, &model_with_inputs(&[("input", FLOAT, &[-1, 2])])).unwrap();
        let got: Vec<f32> = samples.inputs[0].1.view::<f32>().unwrap().iter().copied().collect();
        assert_eq!(got, values);
        let err = error_of(&path, &model_with_inputs(&[("input", INT64, &[-1, 2])]));
        assert!(
            err.contains("holds float16 values, the input takes int64: give integer values"),
            "{err}"
        );
    }

    #[test]
    fn lying_headers_name_the_file_and_arrays_over_the_cap_name_the_array() {
        use crate::data::npy::tests::{npy, npz};
        let dir = tempfile::tempdir().unwrap();
        let model = model_with_inputs(&[("x", FLOAT, &[-1, 4])]);
        let lie = dir.path().join("bad.npy");
        std::fs::write(&lie, npy("<f4", "(1099511627776,)", &[0; 100])).unwrap();
        assert_eq!(
            error_of(&lie, &model),
            format!(
                "{}: the header claims shape [1099511627776] of <f4 (4398046511104 bytes, 4.0 TiB), the file has 100 bytes after its header",
                lie.display()
            )
        );
        let values: Vec<u8> = (0..8).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let archive = dir.path().join("calib.npz");
        let member = npy("<f4", "(2, 4)", &values);
        std::fs::write(&archive, npz(&[("x.npy", &member)], zip::CompressionMethod::Deflated)).unwrap();
        let samples = load_samples(&archive, &model).unwrap();
        assert_eq!(
            samples.inputs[0].1.to_array::<f32>().unwrap().as_slice().unwrap(),
            &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
        );
        let err = load_samples_within(&archive, &model, DataCap::bytes(16))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "{}: array 'x' would take 32 bytes, over the 16 bytes data cap (--max-data-memory)",
                archive.display()
            )
        );
        let labels = dir.path().join("labels.npy");
        std::fs::write(
            &labels,
            npy("<i8", "(2,)", &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        )
        .unwrap();
        assert_eq!(load_labels(&labels, 2, DataCap::DEFAULT).unwrap(), [1, 0]);
        let err = load_labels(&labels, 2, DataCap::bytes(8)).unwrap_err().to_string();
        assert!(
            err.ends_with("the labels would take 16 bytes, over the 8 bytes data cap (--max-data-memory)"),
            "{err}"
        );
        std::fs::write(&labels, npy("<f4", "(2,)", &[0; 8])).unwrap();
        let err = load_labels(&labels, 2, DataCap::DEFAULT).unwrap_err().to_string();
        assert!(err.ends_with("expected int64 or int32 labels, got float32"), "{err}");
    }

    #[test]
    fn inputs_without_a_batch_axis_in_front_take_whole_feeds_one_sample_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let model = model_with_inputs(&[
            ("x", FLOAT, &[3, -1, 2]),
            ("h", FLOAT, &[1, 1, 4]),
            ("mode", INT64, &[]),
        ]);
        let path = dir.path().join("state.npz");
        let mut npz = NpzWriter::new(File::create(&path).unwrap());
        npz.add_array("x", &Array::<f32, _>::zeros((5, 3, 1, 2))).unwrap();
        npz.add_array(
            "h",
            &Array::from_shape_fn((5, 1, 1, 4), |(n, _, _, k)| (n * 10 + k) as f32),
        )
        .unwrap();
        npz.add_array("mode", &Array::from_vec(vec![0i64, 1, 0, 1, 1])).unwrap();
        npz.finish().unwrap();
        let samples = load_samples(&path, &model).unwrap();
        assert_eq!(samples.layouts, vec![Layout::Whole; 3]);
        assert!(samples.one_at_a_time());
        assert_eq!(samples.run_size(8), 1);
        let feeds = samples.slice(2, 3);
        let shapes: Vec<&[usize]> = feeds.iter().map(|f| f.shape()).collect();
        assert_eq!(shapes, vec![&[3, 1, 2][..], &[1, 1, 4], &[]]);
        assert_eq!(
            feeds[1].to_array::<f32>().unwrap().as_slice().unwrap(),
            &[20.0, 21.0, 22.0, 23.0]
        );
        assert_eq!(feeds[2].scalar_i64(), Some(0));

        // The same arrays for a model that takes the state batch-first are batched.
        let batched = model_with_inputs(&[
            ("x", FLOAT, &[-1, 3, 1, 2]),
            ("h", FLOAT, &[-1, 1, 1, 4]),
            ("mode", INT64, &[-1]),
        ]);
        let samples = load_samples(&path, &batched).unwrap();
        assert_eq!(samples.layouts, vec![Layout::Batched; 3]);
        assert_eq!(samples.run_size(8), 8);

        let err = error_of(
            &path,
            &model_with_inputs(&[
                ("x", FLOAT, &[3, -1, 2]),
                ("h", FLOAT, &[1, 2, 4]),
                ("mode", INT64, &[]),
            ]),
        );
        assert!(
            err.contains("array 'h' has samples of shape [1, 1, 4], but the input is declared [1, 2, 4]: give (N, 2, 4) for samples along its first axis, or (N, 1, 2, 4) for N whole feeds"),
            "{err}"
        );
    }

    #[test]
    fn axis_zero_is_the_batch_whenever_the_samples_fit_what_follows_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        // Paddle: `[-1, 3, ?, ?]` with dim_value -1 for the batch, free height and width.
        write_npy(&path, &Array::<f32, _>::zeros((4, 3, 6, 10))).unwrap();
        let paddle = model_with_inputs(&[("x", FLOAT, &[-2, 3, -1, -1])]);
        let samples = load_samples(&path, &paddle).unwrap();
        assert_eq!(samples.layouts, vec![Layout::Batched]);
        assert_eq!(samples.run_size(8), 8);
        // OCR: batch fixed to 1, width free: batched, fed one at a time by the fixed batch.
        write_npy(&path, &Array::<f32, _>::zeros((4, 1, 6, 10))).unwrap();
        let ocr = model_with_inputs(&[("x", FLOAT, &[1, 1, 6, -1])]);
        assert_eq!(load_samples(&path, &ocr).unwrap().layouts, vec![Layout::Batched]);
        assert_eq!(crate::engine::batch_size_for(&ocr, 8), 1);
        // The same input given as whole feeds, one rank higher, is whole feeds.
        write_npy(&path, &Array::<f32, _>::zeros((4, 1, 1, 6, 10))).unwrap();
        assert_eq!(load_samples(&path, &ocr).unwrap().layouts, vec![Layout::Whole]);
        // A -1 later in the shape is free too.
        write_npy(&path, &Array::<f32, _>::zeros((2, 5, 7))).unwrap();
        let free_tail = model_with_inputs(&[("x", FLOAT, &[-1, 5, -2])]);
        assert_eq!(load_samples(&path, &free_tail).unwrap().layouts, vec![Layout::Batched]);
    }
}
