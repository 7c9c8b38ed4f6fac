//! The two engines end to end: how the engine is chosen (and what is said when onnxruntime
//! cannot be found or loaded), that tract and onnxruntime give the same predictions on every
//! fixture, that a graph whose head reshapes by a shape computed at run time hardens, searches
//! and evaluates in both, that a `com.microsoft` op runs in onnxruntime, and that onnxruntime
//! campaigns do not depend on the thread count.

mod common;

use common::{cli, fixture, harden_cli, python};
use fitact_onnx::data::dataset::load_samples;
use fitact_onnx::engine::{Engine, EngineChoice, EngineKind};
use fitact_onnx::model_io::read_model;
use fitact_onnx::replay::{Batches, predict};
use std::path::Path;
use std::process::Command;

fn onnxruntime() -> Engine {
    let engine = Engine::select(EngineChoice::Onnxruntime, None)
        .expect("onnxruntime is found (pip install onnxruntime: see .ci/run)");
    assert_eq!(engine.kind(), EngineKind::Onnxruntime);
    engine
}

fn stderr(run: &std::process::Output) -> String {
    String::from_utf8_lossy(&run.stderr).into_owned()
}

/// `fitact-onnx ARGS` with no way to find onnxruntime: no python3 on PATH, no ORT_DYLIB_PATH,
/// no LD_LIBRARY_PATH (and no system library on the machines this runs on).
fn without_onnxruntime(args: &[&str]) -> std::process::Output {
    let empty = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_fitact-onnx"))
        .args(args)
        .env("PATH", empty.path())
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap()
}

#[test]
fn auto_falls_back_to_tract_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("h.onnx");
    let report = dir.path().join("h.json");
    let (model, calib) = (fixture("alexnet.onnx"), fixture("calib.npy"));
    let args = [
        "-v",
        "harden",
        model.to_str().unwrap(),
        out.to_str().unwrap(),
        "--calib",
        calib.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ];
    let run = without_onnxruntime(&args);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("engine: tract (no onnxruntime library: looked at"),
        "{}",
        stderr(&run)
    );
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["engine"]["name"], "tract");
    let hardened = read_model(&out).unwrap().model;
    let engine = hardened.metadata_props.iter().find(|e| e.key() == "fitact.engine");
    assert!(engine.is_some_and(|e| e.value().starts_with("tract ")), "{engine:?}");

    // With onnxruntime found, auto takes it and says where from.
    let run = cli(&args);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("engine: onnxruntime 1."), "{}", stderr(&run));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["engine"]["name"], "onnxruntime");
}

#[test]
fn a_library_that_cannot_be_used_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("h.onnx");
    let (model, calib) = (fixture("alexnet.onnx"), fixture("calib.npy"));
    let base = [
        "harden",
        model.to_str().unwrap(),
        out.to_str().unwrap(),
        "--calib",
        calib.to_str().unwrap(),
    ];
    let not_a_library = dir.path().join("libonnxruntime.so");
    std::fs::write(&not_a_library, b"not a shared library").unwrap();
    let cases: [(Vec<&str>, &str); 3] = [
        (
            vec!["--ort-lib", "/nonexistent/libonnxruntime.so"],
            "--ort-lib /nonexistent/libonnxruntime.so: no such file",
        ),
        (vec!["--ort-lib", not_a_library.to_str().unwrap()], "cannot load it"),
        // auto does not fall back when the user named a library.
        (
            vec!["--engine", "auto", "--ort-lib", "/nonexistent/lib.so"],
            "no such file",
        ),
    ];
    for (extra, expected) in cases {
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        let run = cli(&args);
        assert_eq!(run.status.code(), Some(2), "{extra:?}: {}", stderr(&run));
        assert!(stderr(&run).contains(expected), "{extra:?}: {}", stderr(&run));
        assert_eq!(stderr(&run).trim().lines().count(), 1, "{extra:?}: {}", stderr(&run));
        assert!(!out.exists());
    }
    let mut args = base.to_vec();
    args.extend(["--engine", "onnxruntime"]);
    let run = without_onnxruntime(&args);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("no onnxruntime library found"),
        "{}",
        stderr(&run)
    );
    assert!(stderr(&run).contains("pip install onnxruntime"), "{}", stderr(&run));
    assert_eq!(stderr(&run).trim().lines().count(), 1, "{}", stderr(&run));
}

#[test]
fn both_engines_give_the_same_predictions_on_every_fixture() {
    let engines = [Engine::tract(), onnxruntime()];
    for name in [
        "alexnet",
        "vgg",
        "resnet",
        "mobilenetv3",
        "silu_gelu",
        "alexnet_runtime_reshape",
    ] {
        let model = read_model(&fixture(&format!("{name}.onnx"))).unwrap().model;
        let samples = load_samples(&fixture("test.npy"), &model).unwrap();
        let samples = samples.select(&(0..200).collect::<Vec<_>>());
        let batches = Batches::new(&samples, 8);
        let [tract, ort] = engines
            .each_ref()
            .map(|e| predict(e, &model, &batches, &[], false).unwrap().0);
        let mut differ = 0;
        for i in 0..samples.count {
            // Rounding may only swap the top two classes of a near tie.
            if tract.classes[i] != ort.classes[i] {
                assert!(tract.margins[i] < 1e-3 && ort.margins[i] < 1e-3, "{name}: sample {i}");
                differ += 1;
            }
        }
        assert!(differ <= 1, "{name}: {differ} predictions differ");
    }
}

#[test]
fn a_head_reshaped_by_a_run_time_shape_hardens_searches_and_evaluates_in_both_engines() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("alexnet_runtime_reshape.onnx");
    let (calib, test, labels) = (fixture("calib.npy"), fixture("test.npy"), fixture("test_labels.npy"));
    let mut campaigns = Vec::new();
    let mut bounds = Vec::new();
    for engine in ["tract", "onnxruntime"] {
        let out = dir.path().join(format!("{engine}.onnx"));
        let report = dir.path().join(format!("{engine}.json"));
        let run = harden_cli(
            &model,
            &out,
            &calib,
            &["--engine", engine, "--report", report.to_str().unwrap()],
        );
        assert!(run.status.success(), "{engine}: {}", stderr(&run));
        python("crosscheck.py", &[&model, &out, &calib, Path::new("--report"), &report]);
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        bounds.push(json["activations"].clone());

        let searched = dir.path().join(format!("{engine}.searched.onnx"));
        let run = harden_cli(
            &model,
            &searched,
            &calib,
            &["--engine", engine, "--search", "--max-evals", "12"],
        );
        assert!(run.status.success(), "{engine} --search: {}", stderr(&run));

        let campaign = dir.path().join(format!("{engine}.campaign.json"));
        let run = cli(&[
            "evaluate",
            model.to_str().unwrap(),
            out.to_str().unwrap(),
            "--data",
            test.to_str().unwrap(),
            "--labels",
            labels.to_str().unwrap(),
            "--ber",
            "1e-5",
            "--trials",
            "6",
            "--engine",
            engine,
            "--report",
            campaign.to_str().unwrap(),
            "-q",
        ]);
        assert!(run.status.success(), "{engine} evaluate: {}", stderr(&run));
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&campaign).unwrap()).unwrap();
        assert_eq!(json["engine"]["name"], engine);
        campaigns.push(json);
    }
    // The hardened models are equal up to the bound margin: calibrated maxima agree closely.
    for (a, b) in bounds[0].as_array().unwrap().iter().zip(bounds[1].as_array().unwrap()) {
        let (x, y) = (
            a["calibrated_max"].as_f64().unwrap(),
            b["calibrated_max"].as_f64().unwrap(),
        );
        assert!((x - y).abs() <= 1e-4 * x.abs().max(1.0), "{}: {x} vs {y}", a["node"]);
    }
    // The same flips in both engines: the statistics agree within their confidence intervals.
    let results = |c: &serde_json::Value| c["results"].as_array().unwrap().clone();
    for (a, b) in results(&campaigns[0]).iter().zip(results(&campaigns[1])) {
        let (ma, mb) = (
            a["accuracy"]["mean"].as_f64().unwrap(),
            b["accuracy"]["mean"].as_f64().unwrap(),
        );
        let ci = a["accuracy"]["ci95"].as_f64().unwrap() + b["accuracy"]["ci95"].as_f64().unwrap();
        assert!((ma - mb).abs() <= ci + 1e-3, "{ma} vs {mb} (ci {ci})");
    }
}

#[test]
fn onnxruntime_campaigns_do_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let (model, calib) = (fixture("resnet.onnx"), fixture("calib.npy"));
    let hardened = dir.path().join("h.onnx");
    common::harden_ok(&model, &hardened, &calib, &["--engine", "onnxruntime"]);
    let mut reports = Vec::new();
    for threads in ["1", "2"] {
        let report = dir.path().join(format!("t{threads}.json"));
        let run = cli(&[
            "evaluate",
            model.to_str().unwrap(),
            hardened.to_str().unwrap(),
            "--data",
            calib.to_str().unwrap(),
            "--ber",
            "1e-6,1e-5",
            "--trials",
            "6",
            "--seed",
            "3",
            "--threads",
            threads,
            "--engine",
            "onnxruntime",
            "--report",
            report.to_str().unwrap(),
            "-q",
        ]);
        assert!(run.status.success(), "{}", stderr(&run));
        reports.push(std::fs::read(&report).unwrap());
    }
    assert!(
        reports[0] == reports[1],
        "the campaign JSON differs between 1 and 2 threads"
    );
}

#[test]
fn a_com_microsoft_op_runs_in_onnxruntime_and_is_named_in_tract() {
    use fitact_passes::onnx::{NodeProto, OperatorSetIdProto, TensorProto};
    // y = Relu(com.microsoft.FusedConv(x, w)): an onnxruntime contrib op tract does not have.
    let mut model = common::relu_model(&[1, 3, 4], 13);
    model.opset_import.push(OperatorSetIdProto {
        domain: Some("com.microsoft".into()),
        version: Some(1),
    });
    let graph = model.graph.as_mut().unwrap();
    graph.node[0].input = vec!["g".into()];
    graph.initializer.push(TensorProto {
        name: Some("w".into()),
        dims: vec![1, 1, 1, 1],
        data_type: Some(1),
        float_data: vec![-0.75],
        ..Default::default()
    });
    graph.node.insert(
        0,
        NodeProto {
            name: Some("fused".into()),
            op_type: Some("FusedConv".into()),
            domain: Some("com.microsoft".into()),
            input: vec!["x".into(), "w".into()],
            output: vec!["g".into()],
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("contrib.onnx");
    std::fs::write(&path, fitact_onnx::model_io::encode(&model)).unwrap();
    let calib = dir.path().join("x.npy");
    let x = ndarray::Array::from_shape_fn((16, 1, 3, 4), |(n, _, c, w)| {
        (n as f32 - 8.0) * 0.3 + c as f32 - w as f32 * 0.5
    });
    ndarray_npy::write_npy(&calib, &x.into_dyn()).unwrap();

    let out = dir.path().join("hardened.onnx");
    let run = harden_cli(
        &path,
        &out,
        &calib,
        &["--engine", "onnxruntime", "--activations", "relu"],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let run = harden_cli(
        &path,
        &dir.path().join("t.onnx"),
        &calib,
        &["--engine", "tract", "--activations", "relu"],
    );
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("tract does not support operator FusedConv (node 'fused')"),
        "{}",
        stderr(&run)
    );
    assert_eq!(stderr(&run).trim().lines().count(), 1, "{}", stderr(&run));
}
