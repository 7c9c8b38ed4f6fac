//! Sample sets handed over in memory (the Python API's numpy arrays) instead of as files.
//!
//! The commands name their data by path (`--calib`, `--data`, `--labels`), so arrays are
//! registered under a path that names no file (`<in memory #1>`) for as long as their
//! `InMemory` lives, and `dataset` reads the arrays registered under a path before it looks
//! for a file there: the same checks, conversions and messages as the `.npy` or `.npz` they
//! stand for. Nothing is registered unless a caller does it, so the CLI reads files only.

use crate::data::cap::Budget;
use crate::data::dataset::Raw;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What a registration holds: one array, as a `.npy` file does, or arrays by input name, as a
/// `.npz` archive does.
#[derive(Debug, Clone)]
pub enum Arrays {
    One(Raw),
    Named(Vec<(String, Raw)>),
}

static REGISTERED: Mutex<BTreeMap<PathBuf, Arc<Arrays>>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(1);

fn registry() -> std::sync::MutexGuard<'static, BTreeMap<PathBuf, Arc<Arrays>>> {
    REGISTERED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Arrays registered under `path()` until this is dropped.
#[derive(Debug)]
pub struct InMemory {
    path: PathBuf,
}

impl InMemory {
    pub fn register(arrays: Arrays) -> InMemory {
        let path = PathBuf::from(format!("<in memory #{}>", NEXT.fetch_add(1, Ordering::Relaxed)));
        registry().insert(path.clone(), Arc::new(arrays));
        InMemory { path }
    }

    /// The path to give a command in place of a file's.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for InMemory {
    fn drop(&mut self) {
        registry().remove(&self.path);
    }
}

/// The arrays registered under `path`, if any.
pub(crate) fn registered(path: &Path) -> Option<Arc<Arrays>> {
    registry().get(path).cloned()
}

impl Arrays {
    /// One array per input of `input_names`, in that order, each charged to `budget` before
    /// it is copied, or why these arrays do not give them (the messages of a `.npy` or `.npz`
    /// file).
    pub(crate) fn for_inputs(&self, input_names: &[String], budget: &mut Budget) -> Result<Vec<(String, Raw)>, String> {
        let take = |name: &String, array: &Raw, budget: &mut Budget| {
            budget.charge(&format!("array '{name}'"), array.held_bytes())?;
            Ok((name.clone(), array.clone()))
        };
        match self {
            Arrays::One(array) if input_names.len() == 1 => Ok(vec![take(&input_names[0], array, budget)?]),
            Arrays::One(_) => Err(format!(
                "the model has {} inputs ({input_names:?}); give one array per input name",
                input_names.len()
            )),
            Arrays::Named(arrays) => input_names
                .iter()
                .map(|name| match arrays.iter().find(|(n, _)| n == name) {
                    Some((_, array)) => take(name, array, budget),
                    None => {
                        let present: Vec<&str> = arrays.iter().map(|(n, _)| n.as_str()).collect();
                        Err(format!(
                            "no array named '{name}' (the model's input); found {present:?}"
                        ))
                    }
                })
                .collect(),
        }
    }

    /// Labels, as an int64 or int32 `.npy` file gives them, charged to `budget`.
    pub(crate) fn labels(&self, budget: &mut Budget) -> Result<Vec<i64>, String> {
        match self {
            Arrays::One(array @ Raw::Int(a, "int64" | "int32")) => {
                budget.charge("the labels", array.held_bytes())?;
                Ok(a.iter().copied().collect())
            }
            Arrays::One(other) => Err(format!("expected int64 or int32 labels, got {}", other.type_name())),
            Arrays::Named(_) => Err("expected one array of labels, got arrays by name".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::cap::DataCap;
    use crate::data::dataset::{load_labels, load_samples, load_samples_within};
    use fitact_passes::onnx::ModelProto;
    use ndarray::{ArrayD, IxDyn};
    use ndarray_npy::write_npy;

    fn model(inputs: &[&str]) -> ModelProto {
        use fitact_passes::onnx::{GraphProto, ValueInfoProto};
        ModelProto {
            graph: Some(GraphProto {
                input: inputs
                    .iter()
                    .map(|n| ValueInfoProto {
                        name: Some((*n).to_owned()),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn error(path: &Path, model: &ModelProto) -> String {
        load_samples(path, model).unwrap_err().to_string()
    }

    #[test]
    fn arrays_in_memory_read_as_the_file_they_stand_for() {
        let dir = tempfile::tempdir().unwrap();
        let values = ArrayD::from_shape_fn(IxDyn(&[3, 2]), |i| (i[0] * 2 + i[1]) as i32);
        let file = dir.path().join("x.npy");
        write_npy(&file, &values).unwrap();
        let memory = InMemory::register(Arrays::One(Raw::from(values.clone())));
        let one = model(&["x"]);
        let (from_file, from_memory) = (
            load_samples(&file, &one).unwrap(),
            load_samples(memory.path(), &one).unwrap(),
        );
        assert_eq!(from_memory.count, 3);
        assert_eq!(
            from_memory.inputs[0].1.to_array::<f32>().unwrap(),
            from_file.inputs[0].1.to_array::<f32>().unwrap()
        );
        assert_eq!(
            load_labels(memory.path(), 6, DataCap::DEFAULT).unwrap(),
            (0..6).collect::<Vec<_>>()
        );

        // A NaN is refused as in a file, naming the path the arrays stand in for.
        let mut nan = ArrayD::<f32>::zeros(IxDyn(&[2, 2]));
        nan[[1, 0]] = f32::NAN;
        let nan = InMemory::register(Arrays::One(Raw::from(nan)));
        let err = error(nan.path(), &one);
        assert!(
            err.starts_with(&format!("{}: ", nan.path().display())) && err.contains("NaN or infinite value (sample 1)"),
            "{err}"
        );
        assert!(error(memory.path(), &model(&["x", "y"])).contains("give one array per input name"));
        let err = load_labels(nan.path(), 4, DataCap::DEFAULT).unwrap_err().to_string();
        assert!(err.contains("expected int64 or int32 labels, got float32"), "{err}");
    }

    #[test]
    fn named_arrays_feed_inputs_by_name_and_a_registration_ends_when_dropped() {
        let arrays = Arrays::Named(vec![
            ("b".to_owned(), Raw::from(ArrayD::<f64>::zeros(IxDyn(&[2, 1])))),
            ("a".to_owned(), Raw::from(ArrayD::from_elem(IxDyn(&[2, 3]), 7u8))),
        ]);
        let memory = InMemory::register(arrays);
        let samples = load_samples(memory.path(), &model(&["a", "b"])).unwrap();
        let names: Vec<&str> = samples.inputs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!((names, samples.count), (vec!["a", "b"], 2));
        let err = error(memory.path(), &model(&["a", "c"]));
        assert!(
            err.contains(r#"no array named 'c' (the model's input); found ["b", "a"]"#),
            "{err}"
        );

        // The arrays are in memory already, but their copies count against the cap.
        let err = load_samples_within(memory.path(), &model(&["a", "b"]), DataCap::bytes(50))
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("array 'b' would take 16 bytes (64 bytes with the arrays read before it), over the 50 bytes data cap (--max-data-memory)"),
            "{err}"
        );

        let path = memory.path().to_owned();
        drop(memory);
        assert!(registered(&path).is_none());
        assert!(error(&path, &model(&["a", "b"])).starts_with(&format!("{}: ", path.display())));
    }
}
