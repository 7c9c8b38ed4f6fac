//! End to end on the shipped fixtures (Fashion-MNIST CNNs): every method hardens every
//! fixture into a model that passes the full onnx check, has no Relu left, carries bound
//! tensors of the expected shapes and values (recomputed in onnxruntime), and gives the
//! original's outputs on the calibration samples in onnxruntime and in tract.

mod common;

use common::{fixture, harden_and_check, harden_cli, harden_ok, python};
use fitact_onnx::model_io::{encode, read_model};
use std::path::Path;

fn harden_with_every_method(name: &str) {
    let model = fixture(&format!("{name}.onnx"));
    let calib = fixture("calib.npy");
    harden_and_check(&model, &calib, &[], "channel", "zero", 128);
    harden_and_check(
        &model,
        &calib,
        &["--method", "fitact", "--granularity", "neuron"],
        "neuron",
        "zero",
        128,
    );
    harden_and_check(&model, &calib, &["--method", "ranger"], "layer", "saturate", 128);
    harden_and_check(&model, &calib, &["--method", "clipact"], "layer", "zero", 128);
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
        harden_and_check(&converted, &calib, &[], "channel", "zero", 128);
        harden_and_check(&converted, &calib, &["--method", "ranger"], "layer", "saturate", 128);
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
        assert!(encode(&file.model) == bytes, "{name}: re-encoded bytes differ");
        let copy = dir.path().join(format!("{name}.onnx"));
        fitact_onnx::model_io::write_model(&copy, &file.model, &file.external_tensors, &file.files_read).unwrap();
        assert!(std::fs::read(&copy).unwrap() == bytes, "{name}: written file differs");
    }
}

#[test]
fn a_model_without_relu_exits_1_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("identity.onnx");
    let mut m = common::relu_model(&[3], 13);
    m.graph.as_mut().unwrap().node[0].op_type = Some("Identity".into());
    std::fs::write(&model, encode(&m)).unwrap();
    let out = dir.path().join("out.onnx");
    let run = harden_cli(&model, &out, Path::new("unused.npy"), &[]);
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("has no activation to bound"));
    assert!(!out.exists());

    // A Sigmoid is bounded by default, but is no Relu.
    let sigmoid = dir.path().join("sigmoid.onnx");
    m.graph.as_mut().unwrap().node[0].op_type = Some("Sigmoid".into());
    std::fs::write(&sigmoid, encode(&m)).unwrap();
    let calib = dir.path().join("x.npy");
    ndarray_npy::write_npy(&calib, &ndarray::Array2::<f32>::ones((4, 3))).unwrap();
    let run = harden_cli(&sigmoid, &out, &calib, &["--activations", "relu"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("has no Relu to bound"));
    assert!(!out.exists());
    harden_ok(&sigmoid, &out, &calib, &[]);
    std::fs::remove_file(&out).unwrap();

    let run = harden_cli(&model, &out, Path::new("unused.npy"), &["--allow-unchanged"]);
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&model).unwrap(),
        "written unchanged"
    );
}

/// The input is never overwritten, unless `--in-place` says so; then it is replaced whole.
#[test]
fn the_input_is_replaced_only_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    std::fs::copy(fixture("resnet.onnx"), &model).unwrap();
    let before = std::fs::read(&model).unwrap();
    let run = harden_cli(&model, &model, &fixture("calib.npy"), &[]);
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("refusing to overwrite the input"), "{stderr}");
    assert_eq!(std::fs::read(&model).unwrap(), before);

    let other = dir.path().join("other.onnx");
    let run = harden_cli(&model, &other, &fixture("calib.npy"), &["--in-place"]);
    assert_eq!(run.status.code(), Some(2), "--in-place with another OUTPUT is refused");
    assert!(!other.exists());

    let run = common::cli(&[
        "harden",
        model.to_str().unwrap(),
        "--in-place",
        "--calib",
        fixture("calib.npy").to_str().unwrap(),
        "-q",
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let replaced = read_model(&model).unwrap().model;
    assert!(common::unbounded_relus(&replaced).is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["m.onnx"], "no temporary file left");
}

/// torch's default exporter: opset 18, batch fixed to 1 (also in a Reshape), weights in an
/// external data file, which the hardened model keeps beside it.
#[test]
fn torch_default_export_with_external_data_hardens() {
    let model = fixture("resnet_torch_default/resnet.onnx");
    let calib = fixture("calib.npy");
    harden_and_check(&model, &calib, &[], "channel", "zero", 1);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hardened.onnx");
    harden_ok(&model, &out, &calib, &[]);
    let written = read_model(&out).unwrap();
    let source = read_model(&model).unwrap();
    assert_eq!(
        written.external_tensors, source.external_tensors,
        "the same tensors stay external"
    );
    assert!(!source.external_tensors.is_empty());
    assert!(dir.path().join("hardened.onnx.data").exists());
    // No tensor data inline for the external ones: the .onnx stays small.
    assert!(std::fs::metadata(&out).unwrap().len() < 200_000);
}

/// A `.npz` with one array per input name calibrates exactly as the `.npy` does.
#[test]
fn npz_calibration_equals_npy() {
    let dir = tempfile::tempdir().unwrap();
    let x: ndarray::ArrayD<f32> = ndarray_npy::read_npy(fixture("calib.npy")).unwrap();
    let npz = dir.path().join("calib.npz");
    let mut writer = ndarray_npy::NpzWriter::new(std::fs::File::create(&npz).unwrap());
    writer.add_array("input", &x).unwrap();
    writer.finish().unwrap();
    let model = fixture("resnet.onnx");
    let outputs: Vec<Vec<u8>> = [fixture("calib.npy"), npz]
        .iter()
        .enumerate()
        .map(|(i, calib)| {
            let out = dir.path().join(format!("h{i}.onnx"));
            harden_ok(&model, &out, calib, &[]);
            std::fs::read(out).unwrap()
        })
        .collect();
    assert!(outputs[0] == outputs[1], "same hardened model from .npy and .npz");
}

/// Samples of the wrong shape are named as such, before tract's analysis says anything.
#[test]
fn samples_of_the_wrong_shape_are_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let calib = dir.path().join("small.npy");
    ndarray_npy::write_npy(&calib, &ndarray::Array4::<f32>::zeros((4, 1, 8, 8))).unwrap();
    let out = dir.path().join("out.onnx");
    let run = harden_cli(&fixture("alexnet.onnx"), &out, &calib, &[]);
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("array 'input' has samples of shape [1, 8, 8], but the input is declared [?, 1, 28, 28]"),
        "{stderr}"
    );
    assert!(!out.exists());
}

/// Broken graphs are named for what is wrong, with exit code 2 and no output.
#[test]
fn malformed_models_are_named_for_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let mut dangling = common::relu_model(&[3], 13);
    dangling.graph.as_mut().unwrap().node[0].input[0] = "nothere".into();
    let mut future = common::relu_model(&[3], 13);
    future.ir_version = Some(99);
    let truncated = std::fs::read(fixture("alexnet.onnx")).unwrap()[..1000].to_vec();
    let cases = [
        (
            encode(&dangling),
            "input 'nothere' of node 'relu' is produced by no node",
        ),
        (encode(&future), "IR version 99 is not one this tool knows"),
        (truncated, "is not a valid ONNX model"),
        (vec![0xff; 64], "is not a valid ONNX model"),
    ];
    for (i, (bytes, expected)) in cases.iter().enumerate() {
        let model = dir.path().join(format!("bad{i}.onnx"));
        std::fs::write(&model, bytes).unwrap();
        let out = dir.path().join(format!("out{i}.onnx"));
        let run = harden_cli(&model, &out, &fixture("calib.npy"), &[]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{expected}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!out.exists());
    }
}
