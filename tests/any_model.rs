//! End-to-end: models that are not single-input float image classifiers
//! (fixtures/any_model, made by fixtures/make_any_model_fixtures.py): integer inputs, inputs
//! with no batch axis in front (a recurrent state, a scalar read by an `If`), in both engines.

mod common;

use common::{cli, fixture, harden_ok, python};
use std::path::Path;

fn any_model(name: &str) -> std::path::PathBuf {
    fixture("any_model").join(name)
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Hardens `model` on `data` with each method in each engine; checks each result in
/// onnxruntime (full check, no Relu left, the original's outputs on every feed) and that the
/// engines calibrate the same extremes.
fn harden_everywhere(model: &str, data: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (model, data) = (any_model(model), any_model(data));
    for method in ["fitact", "ranger", "clipact"] {
        let mut extremes = Vec::new();
        for engine in ["onnxruntime", "tract"] {
            let out = dir.path().join(format!("{method}_{engine}.onnx"));
            let json = dir.path().join(format!("{method}_{engine}.json"));
            let args = [
                "--method",
                method,
                "--engine",
                engine,
                "--report",
                json.to_str().unwrap(),
            ];
            harden_ok(&model, &out, &data, &args);
            python("npz_outputs.py", &[&model, &out, &data]);
            let json = report(&json);
            assert_eq!(json["engine"]["name"], engine);
            let maxima: Vec<f64> = json["activations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["calibrated_max"].as_f64().unwrap())
                .collect();
            assert!(!maxima.is_empty(), "{json}");
            extremes.push(maxima);
        }
        for (a, b) in extremes[0].iter().zip(&extremes[1]) {
            assert!(
                (a - b).abs() <= 1e-4 * a.abs().max(1.0),
                "{method}: {a} (onnxruntime) vs {b} (tract)"
            );
        }
    }
}

#[test]
fn an_int64_token_input_beside_a_float_input_is_fed_as_int64() {
    harden_everywhere("two_inputs.onnx", "two_inputs.npz");
}

#[test]
fn a_recurrent_state_and_a_scalar_input_are_fed_whole_one_sample_at_a_time() {
    // x [10, 1, 12], h0 [1, 1, 16] and mode [] (read by an If) have no batch axis in front.
    harden_everywhere("recurrent.onnx", "recurrent.npz");
}

#[test]
fn a_batch_axis_in_the_middle_takes_the_same_whole_feeds() {
    // x [10, N, 12], h0 [1, N, 16]: one sample per run, with N = 1.
    harden_everywhere("recurrent_batched.onnx", "recurrent.npz");
}

#[test]
fn evaluate_runs_models_with_integer_and_whole_feed_inputs_in_both_engines() {
    let dir = tempfile::tempdir().unwrap();
    for (model, data) in [
        ("two_inputs.onnx", "two_inputs.npz"),
        ("recurrent.onnx", "recurrent.npz"),
    ] {
        let (model, data) = (any_model(model), any_model(data));
        let mut sdcs = Vec::new();
        for engine in ["onnxruntime", "tract"] {
            let json = dir.path().join(format!("{engine}.json"));
            let run = cli(&[
                "evaluate",
                model.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
                "--ber",
                "1e-3",
                "--trials",
                "6",
                "--seed",
                "3",
                "--engine",
                engine,
                "--report",
                json.to_str().unwrap(),
                "-q",
            ]);
            assert!(
                run.status.success(),
                "{engine}: {}",
                String::from_utf8_lossy(&run.stderr)
            );
            let json = report(&json);
            let result = &json["results"][0];
            assert!(result["mean_flips"].as_f64().unwrap() > 0.0, "{json}");
            sdcs.push(result["sdc"]["mean"].as_f64().unwrap());
        }
        // Same flips (same seed) in both engines: the same faulty predictions, up to rounding.
        assert!((sdcs[0] - sdcs[1]).abs() <= 0.05, "{model:?}: {sdcs:?}");
    }
}

#[test]
fn arrays_that_fit_no_layout_and_lossy_conversions_are_named_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let two = any_model("two_inputs.onnx");
    let write = |name: &str, tokens: ndarray::ArrayD<f32>| {
        let path = dir.path().join(name);
        let mut npz = ndarray_npy::NpzWriter::new(std::fs::File::create(&path).unwrap());
        npz.add_array("tokens", &tokens).unwrap();
        npz.add_array("features", &ndarray::Array2::<f32>::zeros((4, 8)))
            .unwrap();
        npz.finish().unwrap();
        path
    };
    let run = |data: &Path| {
        let out = dir.path().join("out.onnx");
        let run = common::harden_cli(&two, &out, data, &[]);
        assert_eq!(run.status.code(), Some(2));
        assert!(!out.exists());
        let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        stderr
    };
    let floats = write("floats.npz", ndarray::ArrayD::zeros(ndarray::IxDyn(&[4, 16])));
    let err = run(&floats);
    assert!(
        err.contains("array 'tokens' holds float32 values, the input takes int64: give integer values"),
        "{err}"
    );
    let wrong = write("wrong.npz", ndarray::ArrayD::zeros(ndarray::IxDyn(&[4, 15])));
    let err = run(&wrong);
    assert!(
        err.contains("array 'tokens' has samples of shape [15], but the input is declared [?, 16]"),
        "{err}"
    );
}
