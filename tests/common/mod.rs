//! Shared by the integration tests: tiny ONNX models built in code, and running Python checks.
#![allow(dead_code)]

use fitact_onnx::data::dataset::load_samples;
use fitact_onnx::engine::{Engine, Outputs};
use fitact_onnx::model_io::read_model;
use fitact_passes::activations::{ActivationKind, find_kinds, find_relus, parse_kinds};
use fitact_passes::onnx::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto, TypeProto, ValueInfoProto,
    tensor_shape_proto::{Dimension, dimension::Value},
    type_proto,
};
use ndarray::ArrayD;
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

/// Runs `fitact-onnx harden MODEL OUT --calib CALIB -q EXTRA..`.
pub fn harden_cli(model: &Path, out: &Path, calib: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "harden",
        model.to_str().unwrap(),
        out.to_str().unwrap(),
        "--calib",
        calib.to_str().unwrap(),
        "-q",
    ];
    args.extend(extra);
    cli(&args)
}

/// `harden_cli`, which must succeed.
pub fn harden_ok(model: &Path, out: &Path, calib: &Path, extra: &[&str]) {
    let run = harden_cli(model, out, calib, extra);
    assert!(
        run.status.success(),
        "harden {extra:?}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
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

pub fn fixture(name: &str) -> PathBuf {
    repo().join("fixtures").join(name)
}

pub fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fitact-onnx"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `model` on every calibration sample in tract; one output array per batch.
pub fn tract_outputs(model: &ModelProto, calib: &Path, batch: usize) -> Vec<ArrayD<f32>> {
    let samples = load_samples(calib, model).unwrap();
    let runner = Engine::tract()
        .load(model, &samples.sample_shapes(), 8, Outputs::Model)
        .unwrap();
    let batch = runner.batch_size(batch);
    (0..samples.count)
        .step_by(batch)
        .map(|start| {
            let (out, valid) = runner
                .run(samples.slice(start, (start + batch).min(samples.count)))
                .unwrap();
            let view = out[0].view::<f32>().unwrap();
            view.slice_axis(ndarray::Axis(0), (0..valid).into()).to_owned()
        })
        .collect()
}

fn expected_bound_shape(sample_shape: &[usize], granularity: &str) -> Vec<i64> {
    match granularity {
        "layer" => vec![],
        "channel" => std::iter::once(sample_shape[0] as i64)
            .chain(std::iter::repeat_n(1, sample_shape.len() - 1))
            .collect(),
        _ => sample_shape.iter().map(|d| *d as i64).collect(),
    }
}

/// Hardens `model` with `flags` in each engine, then checks each result (`check_hardened`),
/// and that the two engines' models are equal up to the bound margin (the calibrated extremes
/// agree to 1e-4, relative; the margin is 1e-3).
pub fn harden_and_check(
    model: &Path,
    calib: &Path,
    flags: &[&str],
    expected_granularity: &str,
    expected_mode: &str,
    batch: usize,
) {
    let reports: Vec<serde_json::Value> = ["onnxruntime", "tract"]
        .into_iter()
        .map(|engine| {
            let mut with_engine = flags.to_vec();
            with_engine.extend(["--engine", engine]);
            check_hardened(model, calib, &with_engine, expected_granularity, expected_mode, batch)
        })
        .collect();
    let activations = |r: &serde_json::Value| r["activations"].as_array().unwrap().clone();
    for (a, b) in activations(&reports[0]).iter().zip(activations(&reports[1])) {
        for key in ["calibrated_max", "calibrated_min"] {
            if let (Some(x), Some(y)) = (a[key].as_f64(), b[key].as_f64()) {
                assert!(
                    (x - y).abs() <= 1e-4 * x.abs().max(1.0),
                    "{flags:?} {}: {key} {x} (onnxruntime) vs {y} (tract)",
                    a["node"]
                );
            }
        }
    }
}

/// Hardens `model` with `flags`, then checks that the result passes the full onnx check, has
/// no Relu left, bounds every activation of the kinds asked (`--activations`), carries bound
/// tensors of the expected shapes and values (recomputed in onnxruntime), and gives the
/// original's outputs on `calib` in onnxruntime and in tract, both run in batches of `batch`.
/// Returns the harden report.
pub fn check_hardened(
    model: &Path,
    calib: &Path,
    flags: &[&str],
    expected_granularity: &str,
    expected_mode: &str,
    batch: usize,
) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hardened.onnx");
    let report = dir.path().join("report.json");
    let batch_flag = batch.to_string();
    let mut args = vec!["--report", report.to_str().unwrap(), "--batch-size", &batch_flag];
    args.extend(flags);
    harden_ok(model, &out, calib, &args);

    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["granularity"], expected_granularity);
    assert_eq!(json["mode"], expected_mode);
    let original = read_model(model).unwrap().model;
    let hardened = read_model(&out).unwrap().model;
    let kinds = flags
        .iter()
        .position(|f| *f == "--activations")
        .map_or(ActivationKind::ALL.to_vec(), |i| parse_kinds(flags[i + 1]).unwrap());
    let expected = find_kinds(&original, &kinds).len();
    assert_eq!(json["activations"].as_array().unwrap().len(), expected);
    let unbounded = unbounded_relus(&hardened);
    assert!(unbounded.is_empty(), "Relus left without a bound: {unbounded:?}");
    for a in json["activations"].as_array().unwrap() {
        let sample: Vec<usize> = serde_json::from_value(a["sample_shape"].clone()).unwrap();
        let shape: Vec<i64> = serde_json::from_value(a["bound_shape"].clone()).unwrap();
        assert_eq!(
            shape,
            expected_bound_shape(&sample, expected_granularity),
            "{}",
            a["node"]
        );
    }
    let method = hardened
        .metadata_props
        .iter()
        .find(|e| e.key() == "fitact.mode")
        .map(|e| e.value());
    assert_eq!(method, Some(expected_mode));

    // onnxruntime: full check, same outputs, bounds recomputed independently.
    let batch_arg = PathBuf::from(&batch_flag);
    python(
        "crosscheck.py",
        &[
            model,
            &out,
            calib,
            Path::new("--report"),
            &report,
            Path::new("--batch"),
            &batch_arg,
        ],
    );
    // tract: same outputs as the original.
    for (want, got) in tract_outputs(&original, calib, batch)
        .iter()
        .zip(tract_outputs(&hardened, calib, batch))
    {
        let diff = want
            .iter()
            .zip(got.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff <= 1e-5, "{flags:?}: tract outputs differ by {diff}");
    }
    json
}

/// The Relus (in every graph) whose output something other than a bound's nodes reads: a Relu
/// may stay in a hardened model only when every reader of its output is a node of its bound
/// (`--emission relu-first` or `fold`), and never as a graph output.
#[allow(dead_code)]
pub fn unbounded_relus(model: &ModelProto) -> Vec<String> {
    let mut found = Vec::new();
    for site in find_relus(model) {
        let graph = fitact_passes::graph::graph_at(model, &site.graph).unwrap();
        let readers_of = |tensor: &str| -> Vec<&NodeProto> {
            graph
                .node
                .iter()
                .filter(|n| n.input.iter().any(|i| i == tensor))
                .collect()
        };
        // The scaled threshold's Mul is its bound's first node when only ThresholdedRelu reads it.
        let bound_node = |n: &NodeProto| {
            ["LessOrEqual", "Less", "Where", "Min"].contains(&n.op_type())
                || (n.op_type() == "Mul"
                    && readers_of(&n.output[0])
                        .iter()
                        .all(|r| r.op_type() == "ThresholdedRelu"))
        };
        let readers = readers_of(&site.output);
        let bounded = !readers.is_empty() && readers.iter().all(|n| bound_node(n));
        if !bounded || graph.output.iter().any(|o| o.name() == site.output) {
            found.push(site.describe());
        }
    }
    found
}

/// Runs `tests/python/<script>` with `args` like `python`, but returns its failure instead of
/// panicking: its stderr, trimmed (the scripts print one line per failed check), for tests
/// that collect every failure before failing.
pub fn python_result(script: &str, args: &[&Path]) -> Result<String, String> {
    let out = Command::new("python3")
        .arg(repo().join("tests/python").join(script))
        .args(args)
        .output()
        .map_err(|e| format!("python3 does not run ({e}): install Python with onnx and onnxruntime (.ci/run)"))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    Err(if stderr.is_empty() {
        "(no message)".to_owned()
    } else {
        stderr
    })
}
