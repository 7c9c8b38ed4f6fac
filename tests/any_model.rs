//! End-to-end: models that are not single-input float image classifiers
//! (fixtures/any_model, made by fixtures/make_any_model_fixtures.py): integer inputs, inputs
//! with no batch axis in front (a recurrent state, a scalar read by an `If`), an output that
//! is not class scores (a detector's boxes), integer weights (a dynamically quantized model),
//! in both engines.

mod common;

use common::{cli, fixture, harden_ok, python};
use prost::Message;
use std::path::Path;

fn any_model(name: &str) -> std::path::PathBuf {
    fixture("any_model").join(name)
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Inspects `model`, hardens it on `data` with each method in each engine; checks each result in
/// onnxruntime (full check, no Relu left, the original's outputs on every feed, run in
/// batches of the calibration's size) and that the engines calibrate the same extremes.
fn harden_everywhere(model: &str, data: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (model, data) = (any_model(model), any_model(data));
    let inspect = cli(&["inspect", model.to_str().unwrap()]);
    assert!(inspect.status.success(), "{}", String::from_utf8_lossy(&inspect.stderr));
    assert!(String::from_utf8_lossy(&inspect.stdout).contains("Relu"));
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
            python("npz_outputs.py", &[&model, &out, &data, Path::new("8")]);
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

#[test]
fn a_detector_with_a_box_output_hardens_in_both_engines() {
    harden_everywhere("detector.onnx", "detector.npz");
}

#[test]
fn a_dynamically_quantized_model_hardens_and_is_warned_about_its_batch_dependence() {
    harden_everywhere("quantized.onnx", "quantized.npz");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.onnx");
    let model = any_model("quantized.onnx");
    let data = any_model("quantized.npz");
    let json = dir.path().join("q.json");
    let paths = [&model, &out, &data, &json].map(|p| p.to_str().unwrap());
    let run = cli(&[
        "harden", paths[0], paths[1], "--calib", paths[2], "--report", paths[3], "--engine", "tract",
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains(
            "quantized.onnx: DynamicQuantizeLinear quantizes over the whole batch, so an activation depends on the batch it runs in: the bounds were fitted at batch 8"
        ),
        "{stderr}"
    );
    let warnings = &report(&json)["warnings"];
    assert_eq!(warnings.as_array().unwrap().len(), 1, "{warnings}");
}

/// Runs `evaluate` with `args` (after the models and data); the report, stdout and stderr.
fn evaluate(models: &[&Path], data: &Path, args: &[&str]) -> (std::process::Output, Option<serde_json::Value>) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut all: Vec<&str> = vec!["evaluate"];
    all.extend(models.iter().map(|m| m.to_str().unwrap()));
    all.extend(["--data", data.to_str().unwrap(), "--report", json.to_str().unwrap()]);
    all.extend(args);
    let run = cli(&all);
    let report = json.exists().then(|| report(&json));
    (run, report)
}

/// A failed run: exit 2, one line on stderr, which is returned.
fn one_line_error(run: &std::process::Output) -> String {
    assert_eq!(run.status.code(), Some(2), "{}", String::from_utf8_lossy(&run.stderr));
    let stderr = String::from_utf8_lossy(&run.stderr).trim().to_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panick"), "{stderr}");
    stderr
}

#[test]
fn an_output_that_is_not_class_scores_is_judged_by_tolerance() {
    let (model, data) = (any_model("detector.onnx"), any_model("detector.npz"));
    let dir = tempfile::tempdir().unwrap();
    let hardened = dir.path().join("detector.h.onnx");
    harden_ok(&model, &hardened, &data, &["--engine", "onnxruntime"]);
    let campaign = [
        "--ber",
        "3e-5",
        "--trials",
        "8",
        "--seed",
        "1",
        "--engine",
        "onnxruntime",
    ];
    let (run, json) = evaluate(&[&model, &hardened], &data, &campaign);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let json = json.unwrap();
    assert_eq!(json["config"]["output"], "boxes");
    assert_eq!(json["config"]["sdc"]["rule"], "tolerance");
    assert_eq!(json["config"]["sdc"]["tolerance"], 0.01);
    assert!(
        json["models"][0]["output_range"].as_f64().unwrap() > 0.1,
        "{}",
        json["models"]
    );
    assert!(
        json["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["accuracy"].is_null())
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("SDC: an element of output 'boxes' differs from the fault-free run's by more than 1% of its fault-free range"),
        "{stdout}"
    );
    // The same faults judged with a looser tolerance: no more SDC, and the 1% judge sees some.
    let sdc = |j: &serde_json::Value| j["results"][0]["sdc"]["mean"].as_f64().unwrap();
    let loose = [&campaign[..], &["--sdc-tolerance", "100%"]].concat();
    let (_, loose) = evaluate(&[&model], &data, &loose);
    assert!(sdc(&json) > 0.0, "{}", json["results"]);
    assert!(sdc(&loose.unwrap()) <= sdc(&json));

    // A fault dump marks the corrupted samples: as many as each trial's SDC says.
    let dump = dir.path().join("dump.json");
    let dumped = [&campaign[..], &["--dump-faults", dump.to_str().unwrap()]].concat();
    let (_, json) = evaluate(&[&model], &data, &dumped);
    let trials = json.unwrap()["trials"].clone();
    let dump = report(&dump);
    assert_eq!(dump.as_array().unwrap().len(), 8);
    for (entry, trial) in dump.as_array().unwrap().iter().zip(trials.as_array().unwrap()) {
        let corrupted = entry["corrupted"].as_array().unwrap();
        let share = corrupted.iter().filter(|c| c.as_bool().unwrap()).count() as f64 / corrupted.len() as f64;
        assert_eq!(corrupted.len(), 64);
        assert!(
            (share - trial["sdc"].as_f64().unwrap()).abs() < 1e-12,
            "{entry} vs {trial}"
        );
    }

    // --output chooses the judged output; a rank-2 one is judged by its top-1 class.
    let scores = [&campaign[..], &["--output", "scores"]].concat();
    let (run, json) = evaluate(&[&model], &data, &scores);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(json.unwrap()["config"]["sdc"]["rule"], "top1");

    let labels = any_model("two_inputs_labels.npy");
    let with_labels = [&campaign[..], &["--labels", labels.to_str().unwrap()]].concat();
    let err = one_line_error(&evaluate(&[&model], &data, &with_labels).0);
    assert!(
        err.contains("labels need class scores [N, classes], but output 'boxes' has rank 3 and is judged by tolerance"),
        "{err}"
    );
    let unknown = [&campaign[..], &["--output", "logits"]].concat();
    let err = one_line_error(&evaluate(&[&model], &data, &unknown).0);
    assert!(
        err.contains("--output 'logits': the model has no output of that name (its outputs: boxes, scores)"),
        "{err}"
    );

    // check's agreement follows the same rule.
    let json_path = dir.path().join("check.json");
    let run = cli(&[
        "check",
        hardened.to_str().unwrap(),
        "--reference",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--engine",
        "onnxruntime",
        "--report",
        json_path.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let check = report(&json_path);
    assert_eq!(check["judge"]["rule"], "tolerance");
    assert_eq!(check["value"], 1.0);
    assert!(
        String::from_utf8_lossy(&run.stdout).starts_with("PASS: agreement within 1% of its range on 'boxes' 100.00%"),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
}

#[test]
fn integer_weights_flip_and_flips_are_counted_per_dtype() {
    let (model, data) = (any_model("quantized.onnx"), any_model("quantized.npz"));
    let labels = any_model("quantized_labels.npy");
    let args = [
        "--labels",
        labels.to_str().unwrap(),
        "--ber",
        "1e-3",
        "--trials",
        "6",
        "--engine",
        "onnxruntime",
    ];
    let (run, json) = evaluate(&[&model], &data, &args);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let json = json.unwrap();
    let by_dtype = &json["models"][0]["weights_by_dtype"];
    // conv, fc1 and fc2 weights and their zero points (int8); biases and scales (float32).
    assert_eq!(by_dtype["int8"], 72 + 3 + 1568 * 64 + 64 * 10, "{by_dtype}");
    assert_eq!(by_dtype["float32"], 85, "{by_dtype}");
    assert!(
        by_dtype.get("int64").is_none(),
        "the Reshape shape is structure: {by_dtype}"
    );
    let result = &json["results"][0];
    let int8 = result["mean_flips_by_dtype"]["int8"].as_f64().unwrap();
    // 101,067 int8 words x 8 bits x 1e-3: about 809 flips per trial.
    assert!((600.0..1000.0).contains(&int8), "{result}");
    // Only int8 tensors: they alone corrupt predictions.
    let only_int8 = [&args[..], &["--target", "quantized$"]].concat();
    let (run, json) = evaluate(&[&model], &data, &only_int8);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let result = &json.unwrap()["results"][0];
    assert!(result["mean_flips_by_dtype"].get("float32").is_none(), "{result}");
    assert!(result["sdc"]["mean"].as_f64().unwrap() > 0.0, "{result}");
}

#[test]
fn a_sequence_first_input_laid_out_batch_first_is_refused_in_one_line() {
    // x [10, N, 12] with its samples given as (64, 10, 12): the batch is not in front, so only
    // whole feeds (64, 10, 1, 12) fit.
    let dir = tempfile::tempdir().unwrap();
    let model = any_model("recurrent_batched.onnx");
    let path = dir.path().join("batch_first.npz");
    let mut npz = ndarray_npy::NpzWriter::new(std::fs::File::create(&path).unwrap());
    npz.add_array("x", &ndarray::Array3::<f32>::zeros((64, 10, 12)))
        .unwrap();
    npz.add_array("h0", &ndarray::Array3::<f32>::zeros((64, 1, 16)))
        .unwrap();
    npz.add_array("mode", &ndarray::Array1::<i64>::zeros(64)).unwrap();
    npz.finish().unwrap();
    for engine in ["tract", "onnxruntime"] {
        let out = dir.path().join("out.onnx");
        let err = one_line_error(&common::harden_cli(&model, &out, &path, &["--engine", engine]));
        assert!(
            err.contains("array 'x' has samples of shape [10, 12], but the input is declared [10, ?, 12]: give (N, 10, ?, 12) for N whole feeds (its first axis is fixed and a later one is free: the batch is not in front)"),
            "{err}"
        );
    }
}

#[test]
fn malformed_feeds_of_a_recurrent_model_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = any_model("recurrent.onnx");
    let data: std::collections::HashMap<String, ndarray::ArrayD<f32>> = {
        let mut npz = ndarray_npy::NpzReader::new(std::fs::File::open(any_model("recurrent.npz")).unwrap()).unwrap();
        ["x", "h0"]
            .iter()
            .map(|n| (n.to_string(), npz.by_name(&format!("{n}.npy")).unwrap()))
            .collect()
    };
    let write = |name: &str, mode: Option<ndarray::ArrayD<i64>>, x: ndarray::ArrayD<f32>| {
        let path = dir.path().join(name);
        let mut npz = ndarray_npy::NpzWriter::new(std::fs::File::create(&path).unwrap());
        npz.add_array("x", &x).unwrap();
        npz.add_array("h0", &data["h0"]).unwrap();
        if let Some(mode) = mode {
            npz.add_array("mode", &mode).unwrap();
        }
        npz.finish().unwrap();
        path
    };
    let modes = |shape: &[usize]| Some(ndarray::ArrayD::<i64>::zeros(ndarray::IxDyn(shape)));
    let x = data["x"].clone();
    let short = x.slice_axis(ndarray::Axis(1), ndarray::Slice::from(0..5)).to_owned();
    let cases = [
        (
            write("mode2.npz", modes(&[64, 2]), x.clone()),
            "array 'mode' has samples of shape [2], but the input is declared []: give (N,) for N whole feeds",
        ),
        (
            write("short.npz", modes(&[64]), short),
            "array 'x' has samples of shape [5, 1, 12], but the input is declared [10, 1, 12]: give (N, 1, 12) for samples along its first axis, or (N, 10, 1, 12) for N whole feeds",
        ),
        (
            write("nomode.npz", None, x.clone()),
            "no array named 'mode' (the model's input); found [\"x\", \"h0\"]",
        ),
        (write("fewer.npz", modes(&[63]), x), "'mode' has 63 samples"),
    ];
    for (path, want) in cases {
        for command in ["harden", "evaluate"] {
            let out = dir.path().join("out.onnx");
            let run = if command == "harden" {
                common::harden_cli(&model, &out, &path, &["--engine", "tract"])
            } else {
                evaluate(
                    &[&model],
                    &path,
                    &["--ber", "1e-3", "--trials", "2", "--engine", "tract"],
                )
                .0
            };
            let err = one_line_error(&run);
            assert!(err.contains(want), "{command} {}: {err}", path.display());
            assert!(!out.exists());
        }
    }
}

#[test]
fn a_contrib_operator_passes_through_untouched() {
    let dir = tempfile::tempdir().unwrap();
    python("make_contrib_model.py", &[dir.path()]);
    let (model, data) = (dir.path().join("contrib.onnx"), dir.path().join("contrib.npz"));
    let out = dir.path().join("contrib.h.onnx");
    harden_ok(&model, &out, &data, &["--engine", "onnxruntime"]);
    python("npz_outputs.py", &[&model, &out, &data]);
    let hardened = fitact_passes::onnx::ModelProto::decode(&*std::fs::read(&out).unwrap()).unwrap();
    let contrib: Vec<_> = hardened
        .graph
        .unwrap()
        .node
        .into_iter()
        .filter(|n| n.domain() == "com.microsoft")
        .map(|n| (n.op_type().to_owned(), n.input, n.output))
        .collect();
    assert_eq!(
        contrib,
        [("Gelu".to_owned(), vec!["r".to_owned()], vec!["g".to_owned()])]
    );
    let (run, json) = evaluate(
        &[&model, &out],
        &data,
        &["--ber", "1e-3", "--trials", "4", "--engine", "onnxruntime"],
    );
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(json.unwrap()["results"].as_array().unwrap().len(), 2);
}

#[test]
fn an_lstm_whose_state_carries_the_batch_in_its_middle_axis_runs_one_sample_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    python("make_lstm_model.py", &[dir.path()]);
    let (model, data) = (dir.path().join("lstm.onnx"), dir.path().join("lstm.npz"));
    for engine in ["tract", "onnxruntime"] {
        let out = dir.path().join(format!("lstm.{engine}.onnx"));
        harden_ok(&model, &out, &data, &["--engine", engine]);
        python("npz_outputs.py", &[&model, &out, &data]);
        let (run, json) = evaluate(
            &[&model, &out],
            &data,
            &["--ber", "1e-3", "--trials", "4", "--engine", engine],
        );
        assert!(
            run.status.success(),
            "{engine}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert_eq!(json.unwrap()["config"]["samples"], 24);
    }
}
