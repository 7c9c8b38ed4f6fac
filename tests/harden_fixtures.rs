//! End to end on the shipped fixtures (Fashion-MNIST CNNs): every method hardens every
//! fixture into a model that passes the full onnx check, has no Relu left, carries bound
//! tensors of the expected shapes and values (recomputed in onnxruntime), and gives the
//! original's outputs on the calibration samples in onnxruntime and in tract.

mod common;

use common::{python, repo};
use fitact_onnx::dataset::load_samples;
use fitact_onnx::model_io::{encode, read_model};
use fitact_onnx::runtime::{Outputs, Runner, model_input_names};
use fitact_passes::activations::find_relus;
use fitact_passes::onnx::ModelProto;
use ndarray::ArrayD;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    repo().join("fixtures").join(name)
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fitact-onnx"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `model` on every calibration sample in tract; one output array per batch.
fn tract_outputs(model: &ModelProto, calib: &Path) -> Vec<ArrayD<f32>> {
    let samples = load_samples(calib, &model_input_names(model)).unwrap();
    let runner = Runner::new(model, &samples.sample_shapes(), Outputs::Model).unwrap();
    let batch = runner.batch_size(128);
    (0..samples.count)
        .step_by(batch)
        .map(|start| {
            let (out, valid) = runner
                .run(samples.slice(start, (start + batch).min(samples.count)))
                .unwrap();
            let view = out[0].to_plain_array_view::<f32>().unwrap();
            view.slice_axis(ndarray::Axis(0), (0..valid).into())
                .to_owned()
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

/// Hardens `model` with `flags`, then checks everything the module header promises.
fn harden_and_check(
    model: &Path,
    calib: &Path,
    flags: &[&str],
    expected_granularity: &str,
    expected_mode: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hardened.onnx");
    let report = dir.path().join("report.json");
    let mut args = vec![
        "harden",
        model.to_str().unwrap(),
        out.to_str().unwrap(),
        "--calib",
        calib.to_str().unwrap(),
    ];
    args.extend(["--report", report.to_str().unwrap(), "-q"]);
    args.extend(flags);
    let run = cli(&args);
    assert!(
        run.status.success(),
        "{flags:?}: {}",
        String::from_utf8_lossy(&run.stderr)
    );

    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["granularity"], expected_granularity);
    assert_eq!(json["mode"], expected_mode);
    let original = read_model(model).unwrap().model;
    let hardened = read_model(&out).unwrap().model;
    let relus = find_relus(&original).len();
    assert_eq!(json["activations"].as_array().unwrap().len(), relus);
    assert!(find_relus(&hardened).is_empty(), "a Relu is left");
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
    python(
        "crosscheck.py",
        &[model, &out, calib, Path::new("--report"), &report],
    );
    // tract: same outputs as the original.
    for (want, got) in tract_outputs(&original, calib)
        .iter()
        .zip(tract_outputs(&hardened, calib))
    {
        let diff = want
            .iter()
            .zip(got.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff <= 1e-5, "{flags:?}: tract outputs differ by {diff}");
    }
}

fn harden_with_every_method(name: &str) {
    let model = fixture(&format!("{name}.onnx"));
    let calib = fixture("calib.npy");
    harden_and_check(&model, &calib, &[], "channel", "zero");
    harden_and_check(
        &model,
        &calib,
        &["--method", "fitact", "--granularity", "neuron"],
        "neuron",
        "zero",
    );
    harden_and_check(&model, &calib, &["--method", "ranger"], "layer", "saturate");
    harden_and_check(&model, &calib, &["--method", "clipact"], "layer", "zero");
}

#[test]
fn alexnet_hardens_with_every_method() {
    harden_with_every_method("alexnet");
}

#[test]
fn vgg_hardens_with_every_method() {
    harden_with_every_method("vgg");
}

#[test]
fn resnet_hardens_with_every_method() {
    harden_with_every_method("resnet");
}

/// Opset 9 and 11 take other emission branches (strict Less against the next float, Min/Max
/// instead of Clip); IR 3 needs initializers listed as graph inputs.
#[test]
fn old_opsets_and_ir3_harden() {
    let dir = tempfile::tempdir().unwrap();
    let calib = fixture("calib.npy");
    for (opset, ir3) in [("9", true), ("11", false)] {
        let converted = dir.path().join(format!("alexnet_{opset}.onnx"));
        let mut args = vec![
            fixture("alexnet.onnx"),
            converted.clone(),
            "--opset".into(),
            opset.into(),
        ];
        if ir3 {
            args.push("--ir3".into());
        }
        let args: Vec<&Path> = args.iter().map(|p| p.as_path()).collect();
        python("convert.py", &args);
        harden_and_check(&converted, &calib, &[], "channel", "zero");
        harden_and_check(
            &converted,
            &calib,
            &["--method", "ranger"],
            "layer",
            "saturate",
        );
    }
}

/// Reading and writing a model without a pass gives back the same bytes.
#[test]
fn fixtures_round_trip_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["alexnet", "vgg", "resnet"] {
        let path = fixture(&format!("{name}.onnx"));
        let bytes = std::fs::read(&path).unwrap();
        let file = read_model(&path).unwrap();
        assert!(
            encode(&file.model) == bytes,
            "{name}: re-encoded bytes differ"
        );
        let copy = dir.path().join(format!("{name}.onnx"));
        fitact_onnx::model_io::write_model(
            &copy,
            &file.model,
            &file.external_tensors,
            &file.files_read,
        )
        .unwrap();
        assert!(
            std::fs::read(&copy).unwrap() == bytes,
            "{name}: written file differs"
        );
    }
}

#[test]
fn a_model_without_relu_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("identity.onnx");
    let mut m = common::relu_model(&[3], 13);
    m.graph.as_mut().unwrap().node[0].op_type = Some("Identity".into());
    std::fs::write(&model, encode(&m)).unwrap();
    let out = dir.path().join("out.onnx");
    let run = cli(&[
        "harden",
        model.to_str().unwrap(),
        out.to_str().unwrap(),
        "--calib",
        "unused.npy",
    ]);
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("has no Relu to bound"));
    assert!(!out.exists());
}
