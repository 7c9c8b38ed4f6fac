//! Models made the ways users make them, beyond the fixture CNNs: Relus inside (nested) If
//! branches, weights in Constant nodes, a Relu output that is also a graph output, a residual
//! block whose Relu outputs feed several consumers. Each must harden, pass the full onnx
//! check, and give unchanged outputs in onnxruntime and tract on its calibration data.

mod common;

use common::{harden_and_check, python};
use std::path::Path;

fn with_graphs(check: impl Fn(&Path, &Path)) {
    let dir = tempfile::tempdir().unwrap();
    python("graphs.py", &[dir.path()]);
    check(dir.path(), &dir.path().join("x.npy"));
}

#[test]
fn relus_inside_nested_if_branches_are_calibrated_and_bounded() {
    // The If conditions are batch statistics: everything runs in batches of 64.
    with_graphs(|dir, calib| {
        let model = dir.join("if_branches.onnx");
        harden_and_check(&model, calib, &[], "channel", "zero", 64);
        harden_and_check(&model, calib, &["--method", "ranger"], "layer", "saturate", 64);
    });
}

#[test]
fn constant_node_weights_output_relus_and_shared_relus_harden() {
    with_graphs(|dir, calib| {
        for name in ["constant_weights", "relu_is_output", "shared_relu"] {
            let model = dir.join(format!("{name}.onnx"));
            harden_and_check(&model, calib, &[], "channel", "zero", 64);
            harden_and_check(&model, calib, &["--method", "clipact"], "layer", "zero", 64);
        }
    });
}

#[test]
fn a_branch_never_taken_is_a_clear_error() {
    with_graphs(|dir, _| {
        // Only positive-mean samples: the else branch of the If never runs.
        let calib = dir.join("x_pos.npy");
        let x: ndarray::ArrayD<f32> = ndarray_npy::read_npy(dir.join("x.npy")).unwrap();
        ndarray_npy::write_npy(&calib, &x.slice(ndarray::s![0..64, .., .., ..]).to_owned()).unwrap();
        let out = dir.join("out.onnx");
        let run = common::harden_cli(&dir.join("if_branches.onnx"), &out, &calib, &["--batch-size", "64"]);
        assert_eq!(run.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            stderr.contains("'else_relu' in main/branch.else_branch never ran"),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!out.exists());

        // --unreached keep: the rest is bounded; the branch never taken stays as it was,
        // named in the report, on stderr and in the model's metadata.
        let report = dir.join("report.json");
        let model = dir.join("if_branches.onnx");
        let paths = [&model, &out, &calib, &report].map(|p| p.to_str().unwrap().to_owned());
        let [model, out_path, calib, report_path] = paths.each_ref().map(String::as_str);
        let run = common::cli(&[
            "harden",
            model,
            out_path,
            "--calib",
            calib,
            "--batch-size",
            "64",
            "--unreached",
            "keep",
            "--report",
            report_path,
        ]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(0), "{stderr}");
        assert!(
            stderr.contains(
                "warning: 2 activation(s) left unbounded, never reached by the calibration samples \
                 (--unreached keep): Relu 'else_relu' in main/branch.else_branch, Relu 'inner_else_relu'"
            ),
            "{stderr}"
        );
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let unreached: Vec<&str> = report["unreached"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["node"].as_str().unwrap())
            .collect();
        assert_eq!(unreached, ["else_relu", "inner_else_relu"]);
        let bounded: Vec<&str> = report["activations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["node"].as_str().unwrap())
            .collect();
        assert_eq!(bounded, ["then_relu", "inner_then_relu"]);
        let model = fitact_onnx::model_io::read_model(&out).unwrap().model;
        let recorded = model.metadata_props.iter().find(|e| e.key() == "fitact.unreached");
        assert_eq!(recorded.map(|e| e.value()), Some("else_relu,inner_else_relu"));
    });
}

#[test]
fn what_the_tool_cannot_handle_is_named() {
    with_graphs(|dir, calib| {
        for engine in ["tract", "onnxruntime"] {
            for (name, expected) in [
            (
                "unsupported_op",
                format!("{engine} does not support operator FancyNorm (node 'fancy')"),
            ),
            (
                "scan_body",
                "Relu 'scan_relu' in main/scan.body: only If branches and Loop bodies can be calibrated, not the body of a Scan".to_owned(),
            ),
        ] {
            let out = dir.join(format!("{name}_out.onnx"));
            let run = common::harden_cli(&dir.join(format!("{name}.onnx")), &out, calib, &["--engine", engine]);
            let stderr = String::from_utf8_lossy(&run.stderr);
            assert_eq!(run.status.code(), Some(2), "{name}: {stderr}");
            assert!(stderr.contains(&expected), "{name}: {stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "{name}: {stderr}");
            assert!(!out.exists());
        }
        }
    });
}

#[test]
fn a_relu_in_a_loop_body_is_calibrated_over_every_iteration() {
    with_graphs(|dir, calib| {
        let model = dir.join("loop_body.onnx");
        let out = dir.join("loop_hardened.onnx");
        let report = dir.join("loop.json");
        common::harden_ok(&model, &out, calib, &["--report", report.to_str().unwrap()]);
        // onnxruntime runs the Loop (tract has none): full check, same outputs.
        python("crosscheck.py", &[&model, &out, calib]);
        // The body applies Relu to the carried value twice: its maximum is that of Relu(conv0).
        let original = fitact_onnx::model_io::read_model(&model).unwrap().model;
        let samples = fitact_onnx::data::dataset::load_samples(calib, &original).unwrap();
        let names = ["c0".to_owned()];
        let runner = fitact_onnx::engine::Engine::tract()
            .load(
                &original,
                &samples.sample_shapes(),
                8,
                fitact_onnx::engine::Outputs::Tensors(&names),
            )
            .unwrap();
        let (outputs, _) = runner.run(samples.slice(0, samples.count)).unwrap();
        let c0 = outputs[0].view::<f32>().unwrap();
        let channel_max: Vec<f32> = (0..4)
            .map(|c| c0.index_axis(ndarray::Axis(1), c).iter().fold(0.0f32, |m, v| m.max(*v)) * 1.001)
            .collect();
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let bound = &json["activations"][0];
        assert_eq!(bound["graph"], "main/loop.body");
        let want_max = channel_max.iter().copied().fold(0.0f32, f32::max);
        let want_min = channel_max.iter().copied().fold(f32::MAX, f32::min);
        assert!(
            (bound["bound"]["max"].as_f64().unwrap() as f32 - want_max).abs() < 1e-4,
            "{bound}"
        );
        assert!(
            (bound["bound"]["min"].as_f64().unwrap() as f32 - want_min).abs() < 1e-4,
            "{bound}"
        );
    });
}
