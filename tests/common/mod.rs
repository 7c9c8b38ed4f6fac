//! Shared by the integration tests: tiny ONNX models built in code, and running Python checks.
#![allow(dead_code)]

use fitact_passes::onnx::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
    tensor_shape_proto::{Dimension, dimension::Value},
    type_proto,
};
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(v) => Value::DimValue(*v),
                None => Value::DimParam("N".into()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `y = Relu(x)` with x of shape `[N] + sample_shape`, at the given opset.
pub fn relu_model(sample_shape: &[usize], opset: i64) -> ModelProto {
    let dims: Vec<Option<i64>> = std::iter::once(None)
        .chain(sample_shape.iter().map(|d| Some(*d as i64)))
        .collect();
    ModelProto {
        ir_version: Some(if opset >= 13 { 7 } else { 5 }),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(GraphProto {
            name: Some("relu".into()),
            node: vec![NodeProto {
                name: Some("relu".into()),
                op_type: Some("Relu".into()),
                input: vec!["x".into()],
                output: vec!["y".into()],
                ..Default::default()
            }],
            input: vec![value_info("x", &dims)],
            output: vec![value_info("y", &dims)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `tests/python/<script>` with `args`; panics with its stderr if it fails. The
/// cross-runtime checks need Python with `onnx` and `onnxruntime` (`.ci/run` installs them).
pub fn python(script: &str, args: &[&Path]) -> String {
    let out = Command::new("python3")
        .arg(repo().join("tests/python").join(script))
        .args(args)
        .output()
        .expect("python3 runs (install Python with onnx and onnxruntime: see .ci/run)");
    assert!(
        out.status.success(),
        "{script} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
