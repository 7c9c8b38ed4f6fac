//! ONNX files in and out: protobuf decode and encode with the lossless schema of
//! `fitact_passes::onnx`, external data read into memory and written back beside the output,
//! and atomic writes (a temporary file in the target directory, then a rename).
//!
//! The foundation with `engine`: uses only `passes`.

use fitact_passes::graph::for_each_stored_tensor_mut;
use fitact_passes::onnx::{ModelProto, StringStringEntryProto, TensorProto, tensor_proto::DataLocation};
use prost::Message;
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelIoError {
    // The underlying errors are part of the message, not a `source`: the CLI prints the
    // whole chain, which would say them twice.
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path} is not a valid ONNX model: {error}")]
    Decode { path: PathBuf, error: prost::DecodeError },
    #[error("external data of tensor '{tensor}': {reason}")]
    External { tensor: String, reason: String },
    #[error("cannot write {path}: {error}")]
    Write { path: PathBuf, error: std::io::Error },
    #[error("refusing to overwrite the input {path}")]
    WouldOverwriteInput { path: PathBuf },
}

/// A model read from disk, with every tensor's data in memory.
pub struct OnnxFile {
    pub model: ModelProto,
    /// Names of the tensors that were stored as external data, to be stored so again.
    pub external_tensors: BTreeSet<String>,
    /// The files read: the model and its external data files, never to be overwritten.
    pub files_read: Vec<PathBuf>,
}

/// Offsets in a written data file are aligned to this, so runtimes may map tensors directly.
const EXTERNAL_ALIGNMENT: u64 = 64;

pub fn decode(bytes: &[u8]) -> Result<ModelProto, prost::DecodeError> {
    ModelProto::decode(bytes)
}

pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

pub fn read_model(path: &Path) -> Result<OnnxFile, ModelIoError> {
    let read_err = |error| ModelIoError::Read {
        path: path.to_owned(),
        error,
    };
    let bytes = std::fs::read(path).map_err(read_err)?;
    let mut model = decode(&bytes).map_err(|error| ModelIoError::Decode {
        path: path.to_owned(),
        error,
    })?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = dir.canonicalize().map_err(read_err)?;
    let mut files_read = vec![canonical_or_same(path)];
    let external_tensors = load_external_data(&mut model, &dir, &mut files_read)?;
    Ok(OnnxFile {
        model,
        external_tensors,
        files_read,
    })
}

fn canonical_or_same(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_owned())
}

fn entry<'a>(tensor: &'a TensorProto, key: &str) -> Option<&'a str> {
    tensor.external_data.iter().find(|e| e.key() == key).map(|e| e.value())
}

/// Moves every external tensor's bytes into `raw_data`. A location must be a relative path
/// that stays inside the model's directory, and the range must lie inside the file.
fn load_external_data(
    model: &mut ModelProto,
    dir: &Path,
    files_read: &mut Vec<PathBuf>,
) -> Result<BTreeSet<String>, ModelIoError> {
    let mut names = BTreeSet::new();
    let mut files: HashMap<PathBuf, File> = HashMap::new();
    let mut failure = None;
    for_each_stored_tensor_mut(model, &mut |tensor| {
        if failure.is_some() || tensor.data_location() != DataLocation::External {
            return;
        }
        match read_external(tensor, dir, &mut files) {
            Ok(data) => {
                tensor.raw_data = Some(data);
                tensor.external_data.clear();
                tensor.data_location = None;
                names.insert(tensor.name().to_owned());
            }
            Err(reason) => {
                failure = Some(ModelIoError::External {
                    tensor: tensor.name().to_owned(),
                    reason,
                })
            }
        }
    });
    if let Some(err) = failure {
        return Err(err);
    }
    files_read.extend(files.into_keys());
    Ok(names)
}

fn read_external(tensor: &TensorProto, dir: &Path, files: &mut HashMap<PathBuf, File>) -> Result<Vec<u8>, String> {
    let location = entry(tensor, "location").ok_or("no 'location' entry")?;
    let relative = Path::new(location);
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!("location '{location}' leaves the model's directory"));
    }
    let path = dir
        .join(relative)
        .canonicalize()
        .map_err(|e| format!("cannot open '{location}': {e}"))?;
    if !path.starts_with(dir) {
        return Err(format!("location '{location}' resolves outside the model's directory"));
    }
    let parse = |key: &str| -> Result<Option<u64>, String> {
        entry(tensor, key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("{key} '{v}' is not a non-negative integer"))
            })
            .transpose()
    };
    let offset = parse("offset")?.unwrap_or(0);
    let file = match files.entry(path.clone()) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(File::open(&path).map_err(|err| format!("cannot open '{location}': {err}"))?)
        }
    };
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let length = parse("length")?.unwrap_or(size.saturating_sub(offset));
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(format!(
            "range {offset}+{length} lies beyond the end of '{location}' ({size} bytes)"
        ));
    }
    let mut data = vec![0u8; length as usize];
    file.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
    file.read_exact(&mut data).map_err(|e| e.to_string())?;
    Ok(data)
}

/// Writes `model` to `path` atomically. Tensors named in `external` are stored in a data file
/// `<file name>.data` beside it (also written atomically, before the model that points to it).
/// Nothing in `protected` (the files a model was read from) is ever replaced.
pub fn write_model(
    path: &Path,
    model: &ModelProto,
    external: &BTreeSet<String>,
    protected: &[PathBuf],
) -> Result<(), ModelIoError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let data_name = format!("{file_name}.data");
    let data_path = path.with_file_name(&data_name);
    let targets: &[&Path] = if external.is_empty() {
        &[path]
    } else {
        &[path, &data_path]
    };
    for target in targets {
        let resolved = canonical_or_same(target);
        if protected.contains(&resolved) {
            return Err(ModelIoError::WouldOverwriteInput {
                path: target.to_path_buf(),
            });
        }
    }
    if external.is_empty() {
        return write_atomically(path, &encode(model));
    }
    let mut model = model.clone();
    let mut data = Vec::new();
    for_each_stored_tensor_mut(&mut model, &mut |tensor| {
        if !external.contains(tensor.name()) || tensor.raw_data.is_none() {
            return;
        }
        let padding = (EXTERNAL_ALIGNMENT - data.len() as u64 % EXTERNAL_ALIGNMENT) % EXTERNAL_ALIGNMENT;
        data.resize(data.len() + padding as usize, 0);
        let bytes = tensor.raw_data.take().unwrap_or_default();
        let kv = |k: &str, v: String| StringStringEntryProto {
            key: Some(k.to_owned()),
            value: Some(v),
        };
        tensor.external_data = vec![
            kv("location", data_name.clone()),
            kv("offset", data.len().to_string()),
            kv("length", bytes.len().to_string()),
        ];
        tensor.data_location = Some(DataLocation::External as i32);
        data.extend_from_slice(&bytes);
    });
    write_atomically(&data_path, &data)?;
    write_atomically(path, &encode(&model)).inspect_err(|_| {
        let _ = std::fs::remove_file(&data_path);
    })
}

/// Writes to a temporary file in the target's directory, syncs it, then renames it over the
/// target: readers see the old file or the new one, never a part.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ModelIoError> {
    let write_err = |error| ModelIoError::Write {
        path: path.to_owned(),
        error,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    builder.prefix(".fitact-").suffix(".tmp");
    // tempfile creates 0600 files; an output should get the usual 0666 less the umask.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir).map_err(write_err)?;
    tmp.write_all(bytes).map_err(write_err)?;
    tmp.as_file().sync_all().map_err(write_err)?;
    tmp.persist(path).map_err(|e| write_err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fitact_passes::onnx::GraphProto;

    fn model_with(tensor: TensorProto) -> ModelProto {
        ModelProto {
            graph: Some(GraphProto {
                initializer: vec![tensor],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A 3-float tensor `w` stored at `location` (offset 0, length 12).
    fn weights_external(location: &str) -> TensorProto {
        let kv = |k: &str, v: &str| StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v.into()),
        };
        TensorProto {
            name: Some("w".into()),
            dims: vec![3],
            data_type: Some(1),
            data_location: Some(DataLocation::External as i32),
            external_data: vec![kv("location", location), kv("offset", "0"), kv("length", "12")],
            ..Default::default()
        }
    }

    #[test]
    fn external_data_round_trips_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let weights = TensorProto {
            name: Some("w".into()),
            dims: vec![3],
            data_type: Some(1),
            raw_data: Some([1.0f32, 2.0, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..Default::default()
        };
        let path = dir.path().join("m.onnx");
        let external = BTreeSet::from(["w".to_owned()]);
        write_model(&path, &model_with(weights.clone()), &external, &[]).unwrap();
        assert_eq!(std::fs::metadata(dir.path().join("m.onnx.data")).unwrap().len(), 12);

        let back = read_model(&path).unwrap();
        assert_eq!(back.external_tensors, external);
        assert_eq!(back.model, model_with(weights.clone()));
        // Writing over the file we read from is refused, and so is its data file.
        let err = write_model(&path, &back.model, &external, &back.files_read).unwrap_err();
        assert!(matches!(err, ModelIoError::WouldOverwriteInput { .. }), "{err}");

        let mut escaping = weights;
        escaping.raw_data = None;
        escaping.data_location = Some(DataLocation::External as i32);
        escaping.external_data = vec![StringStringEntryProto {
            key: Some("location".into()),
            value: Some("../m.onnx.data".into()),
        }];
        let evil = dir.path().join("evil.onnx");
        std::fs::write(&evil, encode(&model_with(escaping))).unwrap();
        let err = read_model(&evil).err().unwrap().to_string();
        assert!(err.contains("leaves the model's directory"), "{err}");

        // A symlink inside the directory that points out of it is refused too.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.data"), [0u8; 12]).unwrap();
        let inner = dir.path().join("inner");
        std::fs::create_dir(&inner).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(outside.path().join("secret.data"), inner.join("w.data")).unwrap();
        let linked = model_with(weights_external("w.data"));
        let path = inner.join("linked.onnx");
        std::fs::write(&path, encode(&linked)).unwrap();
        let err = read_model(&path).err().unwrap().to_string();
        assert!(err.contains("resolves outside the model's directory"), "{err}");

        // A range past the end of the file is refused.
        std::fs::write(inner.join("short.data"), [0u8; 4]).unwrap();
        let path = inner.join("short.onnx");
        std::fs::write(&path, encode(&model_with(weights_external("short.data")))).unwrap();
        let err = read_model(&path).err().unwrap().to_string();
        assert!(err.contains("lies beyond the end of 'short.data' (4 bytes)"), "{err}");
    }
}
