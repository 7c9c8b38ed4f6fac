//! Sample sets for calibration and evaluation: a `.npy` file (one model input), a `.npz`
//! archive (one array per input name) or a folder of images (`images`), checked against what
//! the model expects, with their labels.

use ndarray::{ArrayD, Axis, IxDyn, Slice};
use ndarray_npy::{NpzReader, ReadNpyError, ReadNpzError, read_npy};
use std::fs::File;
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DatasetError {
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// Samples for every model input, all with the same count along axis 0.
#[derive(Debug, Clone)]
pub struct Samples {
    /// (input name, array of shape [count, ...]) in the model's input order.
    pub inputs: Vec<(String, ArrayD<f32>)>,
    pub count: usize,
}

impl Samples {
    /// Samples `range` of every input, as owned arrays.
    pub fn slice(&self, start: usize, end: usize) -> Vec<ArrayD<f32>> {
        self.inputs
            .iter()
            .map(|(_, a)| a.slice_axis(Axis(0), Slice::from(start..end)).to_owned())
            .collect()
    }

    /// The shape of one sample of each input (without the leading count axis).
    pub fn sample_shapes(&self) -> Vec<Vec<usize>> {
        self.inputs.iter().map(|(_, a)| a.shape()[1..].to_vec()).collect()
    }
}

fn describe(err: &ReadNpyError) -> String {
    match err {
        ReadNpyError::WrongDescriptor(descr) => {
            format!("expected float32 or float64 values, found dtype {descr}")
        }
        other => other.to_string(),
    }
}

/// Reads float32 data, accepting float64 too (converted, as numpy's default dtype is float64).
fn read_float_npy(path: &Path) -> Result<ArrayD<f32>, String> {
    match read_npy::<_, ArrayD<f32>>(path) {
        Ok(a) => Ok(a),
        Err(ReadNpyError::WrongDescriptor(_)) => read_npy::<_, ArrayD<f64>>(path)
            .map(|a| a.mapv(|v| v as f32))
            .map_err(|e| describe(&e)),
        Err(e) => Err(describe(&e)),
    }
}

fn read_float_npz(reader: &mut NpzReader<File>, name: &str) -> Result<ArrayD<f32>, String> {
    match reader.by_name::<_, IxDyn>(name) {
        Ok(a) => Ok(a),
        Err(ReadNpzError::Npy(ReadNpyError::WrongDescriptor(_))) => reader
            .by_name::<ndarray::OwnedRepr<f64>, IxDyn>(name)
            .map(|a| a.mapv(|v| v as f32))
            .map_err(|e| e.to_string()),
        Err(ReadNpzError::Npy(e)) => Err(describe(&e)),
        Err(e) => Err(e.to_string()),
    }
}

/// Loads samples for the model inputs named `input_names`. A `.npy` file feeds a
/// single-input model; a `.npz` must hold an array named after every input.
pub fn load_samples(path: &Path, input_names: &[String]) -> Result<Samples, DatasetError> {
    let invalid = |reason: String| DatasetError::Invalid {
        path: path.display().to_string(),
        reason,
    };
    let is_npz = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npz"));
    let inputs: Vec<(String, ArrayD<f32>)> = if is_npz {
        let file = File::open(path).map_err(|e| invalid(e.to_string()))?;
        let mut reader = NpzReader::new(file).map_err(|e| invalid(format!("not a .npz archive: {e}")))?;
        let present = reader.names().map_err(|e| invalid(e.to_string()))?;
        input_names
            .iter()
            .map(|name| {
                if !present.contains(name) {
                    return Err(invalid(format!(
                        "no array named '{name}' (the model's input); found {present:?}"
                    )));
                }
                let array = read_float_npz(&mut reader, name).map_err(|r| invalid(format!("array '{name}': {r}")))?;
                Ok((name.clone(), array))
            })
            .collect::<Result<_, _>>()?
    } else {
        if input_names.len() != 1 {
            return Err(invalid(format!(
                "the model has {} inputs ({input_names:?}); give a .npz with one array per input name",
                input_names.len()
            )));
        }
        vec![(input_names[0].clone(), read_float_npy(path).map_err(invalid)?)]
    };

    let mut count = None;
    for (name, array) in &inputs {
        if array.ndim() == 0 {
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
        if let Some(index) = array.iter().position(|v| !v.is_finite()) {
            let sample = index / (array.len() / n).max(1);
            return Err(invalid(format!(
                "array '{name}' holds a NaN or infinite value (sample {sample})"
            )));
        }
    }
    Ok(Samples {
        inputs,
        count: count.unwrap_or(0),
    })
}

/// Samples and, when known, their labels.
pub struct Dataset {
    pub samples: Samples,
    pub labels: Option<Vec<usize>>,
}

/// Loads the samples at `path` for `model`: a folder is read as images (labels from class
/// sub-folders), anything else as `.npy`/`.npz`. A `labels` file, when given, supplies the
/// labels (and overrides those of class folders).
pub fn load_dataset(
    path: &Path,
    model: &fitact_passes::onnx::ModelProto,
    labels: Option<&Path>,
    images: &crate::data::images::ImageOptions,
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
        let set = crate::data::images::load_images(path, &input_names[0], &dims, images)?;
        (set.samples, set.labels)
    } else {
        (load_samples(path, &input_names)?, None)
    };
    let labels = match labels {
        Some(file) => Some(load_labels(file, samples.count).context("reading the labels")?),
        None => folder_labels,
    };
    Ok(Dataset { samples, labels })
}

/// Class labels: an int64 or int32 `.npy` with one non-negative label per sample.
pub fn load_labels(path: &Path, count: usize) -> anyhow::Result<Vec<usize>> {
    let read = |p: &Path| -> anyhow::Result<Vec<i64>> {
        if let Ok(a) = ndarray_npy::read_npy::<_, ndarray::ArrayD<i64>>(p) {
            return Ok(a.iter().copied().collect());
        }
        let a: ndarray::ArrayD<i32> = ndarray_npy::read_npy(p)
            .map_err(|e| anyhow::anyhow!("{}: expected int64 or int32 labels: {e}", p.display()))?;
        Ok(a.iter().map(|v| i64::from(*v)).collect())
    };
    let labels = read(path)?;
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
    use ndarray::Array;
    use ndarray_npy::write_npy;

    #[test]
    fn loads_npy_and_rejects_what_does_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("x.npy");
        write_npy(&good, &Array::<f64, _>::zeros((4, 1, 2, 2))).unwrap();
        let samples = load_samples(&good, &["input".into()]).unwrap();
        assert_eq!((samples.count, samples.sample_shapes()), (4, vec![vec![1, 2, 2]]));

        let ints = dir.path().join("i.npy");
        write_npy(&ints, &Array::<i32, _>::zeros((4, 3))).unwrap();
        let err = load_samples(&ints, &["input".into()]).unwrap_err().to_string();
        assert!(err.contains("expected float32 or float64"), "{err}");

        let mut nan = Array::<f32, _>::zeros((3, 2));
        nan[[2, 1]] = f32::NAN;
        let nan_path = dir.path().join("n.npy");
        write_npy(&nan_path, &nan).unwrap();
        let err = load_samples(&nan_path, &["input".into()]).unwrap_err().to_string();
        assert!(err.contains("NaN or infinite value (sample 2)"), "{err}");

        let err = load_samples(&good, &["a".into(), "b".into()]).unwrap_err().to_string();
        assert!(err.contains("give a .npz"), "{err}");
    }
}
