//! Activations beyond Relu: every decomposed form is found once and bounded at its output,
//! near misses are what they are, every kind hardens into a model that passes the full onnx
//! check and gives the original's outputs in onnxruntime and tract, and two-sided bounds send
//! values outside [low, high] (and NaN) where the mode says, in both runtimes.

mod common;

use common::{check_hardened, fixture, harden_and_check, python, relu_model};
use fitact_onnx::engine::{Engine, Outputs};
use fitact_onnx::model_io::encode;
use fitact_passes::activations::{ActivationKind, find_activations, find_kinds};
use fitact_passes::bound_activations::{Bound, BoundRequest, Mode, bound_activations};
use fitact_passes::onnx::{AttributeProto, attribute_proto::AttributeType};
use fitact_passes::tensor::FLOAT;
use ndarray::ArrayD;
use std::path::Path;

fn with_zoo(check: impl Fn(&Path, &serde_json::Value)) {
    let dir = tempfile::tempdir().unwrap();
    let expected: serde_json::Value = serde_json::from_str(&python("activation_graphs.py", &[dir.path()])).unwrap();
    check(dir.path(), &expected);
}

fn load(path: &Path) -> fitact_passes::onnx::ModelProto {
    fitact_onnx::model_io::read_model(path).unwrap().model
}

#[test]
fn every_form_is_found_once_and_near_misses_are_what_they_are() {
    with_zoo(|dir, expected| {
        for name in ["zoo", "zoo_opset11"] {
            let model = load(&dir.join(format!("{name}.onnx")));
            let sites = find_activations(&model);
            let found: Vec<(String, String)> = sites
                .iter()
                .map(|s| (s.kind.op_type().to_owned(), s.form.to_owned()))
                .collect();
            let want: Vec<(String, String)> = serde_json::from_value(expected[name].clone()).unwrap();
            assert_eq!(found, want, "{name}");
            // No node belongs to two activations.
            let mut nodes: Vec<usize> = sites.iter().flat_map(|s| s.nodes.clone()).collect();
            let total = nodes.len();
            nodes.sort_unstable();
            nodes.dedup();
            assert_eq!(nodes.len(), total, "{name}: a node is in two matches");
            // The Clip inside a hard-swish is not a Clip of its own; the near miss is.
            let graph = model.graph.as_ref().unwrap();
            let clips: Vec<&str> = find_kinds(&model, &[ActivationKind::Clip])
                .iter()
                .map(|s| graph.node[s.node].name())
                .collect();
            assert_eq!(clips, ["relu6", "nm_clip"], "{name}");
            let sigmoids: Vec<&str> = find_kinds(&model, &[ActivationKind::Sigmoid])
                .iter()
                .map(|s| graph.node[s.node].name())
                .collect();
            assert_eq!(sigmoids, ["sig", "nm_sig"], "{name}");
            // Each form is bounded at its output: the node writing it is the form's last.
            let hard_swish = &find_kinds(&model, &[ActivationKind::HardSwish])[0];
            assert_eq!(
                (graph.node[hard_swish.node].name(), hard_swish.input.as_str()),
                ("hs1_div", "conv1")
            );
        }
    });
}

#[test]
fn every_kind_hardens_and_keeps_the_outputs_in_both_runtimes() {
    with_zoo(|dir, _| {
        let calib = dir.join("x.npy");
        harden_and_check(
            &dir.join("zoo.onnx"),
            &calib,
            &["--activations", "all"],
            "channel",
            "zero",
            32,
        );
        harden_and_check(
            &dir.join("zoo.onnx"),
            &calib,
            &["--activations", "all", "--method", "ranger"],
            "layer",
            "saturate",
            32,
        );
        // Strict comparisons against stepped bounds (opset 11), per neuron.
        harden_and_check(
            &dir.join("zoo_opset11.onnx"),
            &calib,
            &["--activations", "all", "--granularity", "neuron"],
            "neuron",
            "zero",
            32,
        );
        // A list: only those kinds are bounded.
        harden_and_check(
            &dir.join("zoo.onnx"),
            &calib,
            &["--activations", "relu,hardswish,gelu,norm"],
            "channel",
            "zero",
            32,
        );
    });
}

#[test]
fn logits_are_bounded_when_named_with_a_quarter_of_room() {
    // The ResNet fixture's classifier Gemm writes the output: `all,logits` bounds it on both
    // sides, and the outputs stay the original's in both runtimes.
    let dir = tempfile::tempdir().unwrap();
    let x: ndarray::ArrayD<f32> = ndarray_npy::read_npy(fixture("calib.npy")).unwrap();
    let calib = dir.path().join("calib.npy");
    ndarray_npy::write_npy(&calib, &x.slice_axis(ndarray::Axis(0), (0..64).into()).to_owned()).unwrap();
    let json = check_hardened(
        &fixture("resnet.onnx"),
        &calib,
        &["--activations", "all,logits"],
        "channel",
        "zero",
        32,
    );
    let sites = json["activations"].as_array().unwrap();
    let logits: Vec<_> = sites.iter().filter(|a| a["kind"] == "Logits").collect();
    assert_eq!(logits.len(), 1, "{sites:?}");
    let (high, low) = (&logits[0]["bound"], &logits[0]["low"]);
    assert!(
        low["max"].as_f64().unwrap() < 0.0 && high["min"].as_f64().unwrap() > 0.0,
        "{}",
        logits[0]
    );
    assert!(
        high["max"].as_f64().unwrap() >= 1.25 * logits[0]["calibrated_max"].as_f64().unwrap() - 1e-4,
        "{}",
        logits[0]
    );
}

/// Reference: a LeakyRelu (alpha 0.5) bounded to [low, high].
fn reference(x: f32, low: f32, high: f32, mode: Mode) -> f32 {
    let y = if x < 0.0 { 0.5 * x } else { x };
    match mode {
        _ if y.is_nan() => 0.0,
        Mode::Zero if y < low || y > high => 0.0,
        Mode::Zero => y,
        Mode::Saturate => y.clamp(low, high),
    }
}

#[test]
fn two_sided_bounds_cut_outside_the_range_and_nan_in_both_runtimes() {
    let dir = tempfile::tempdir().unwrap();
    let mut case = 0;
    for opset in [9, 11, 13, 17] {
        for mode in [Mode::Zero, Mode::Saturate] {
            for channel in [false, true] {
                let mut model = relu_model(&[2, 3], opset);
                let node = &mut model.graph.as_mut().unwrap().node[0];
                node.op_type = Some("LeakyRelu".into());
                node.attribute.push(AttributeProto {
                    name: Some("alpha".into()),
                    r#type: Some(AttributeType::Float as i32),
                    f: Some(0.5),
                    ..Default::default()
                });
                let (dims, low, high) = if channel {
                    (vec![2, 1], vec![-1.0, -0.25], vec![2.0, 0.75])
                } else {
                    (vec![], vec![-1.0], vec![2.0])
                };
                let bound = Bound {
                    dims,
                    values: high.clone(),
                    low: Some(low.clone()),
                };
                let site = find_activations(&model).remove(0);
                assert_eq!((site.kind, site.nonnegative), (ActivationKind::LeakyRelu, false));
                let report = bound_activations(
                    &mut model,
                    &[BoundRequest {
                        site,
                        bound,
                        elem_type: FLOAT,
                    }],
                    mode,
                )
                .unwrap();
                assert_eq!(report.applied.len(), 1);
                // Per channel: in range, exactly at each end, one float beyond each end, far
                // beyond, and the specials.
                let row = |c: usize| {
                    let (l, h) = (low[c.min(low.len() - 1)], high[c.min(high.len() - 1)]);
                    vec![
                        h * 0.5,
                        h,
                        f32::from_bits(h.to_bits() + 1),
                        2.0 * l,
                        2.0 * l - 1e-6,
                        1e30,
                    ]
                };
                let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -1e30, 0.0, -0.0];
                let mut xs = row(0);
                xs.extend(row(1));
                xs.extend(specials);
                xs.extend(specials.iter().rev());
                let x = ArrayD::from_shape_vec(vec![4, 2, 3], xs.clone()).unwrap();
                let want: Vec<f32> = xs
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let c = (i / 3) % 2;
                        reference(*v, low[c.min(low.len() - 1)], high[c.min(high.len() - 1)], mode)
                    })
                    .collect();
                let want = ArrayD::from_shape_vec(vec![4, 2, 3], want).unwrap();
                let runner = Engine::tract().load(&model, &[vec![2, 3]], 8, Outputs::Model).unwrap();
                let (out, _) = runner.run(vec![x.clone().into()]).unwrap();
                let got = out[0].view::<f32>().unwrap().to_owned();
                let same = got
                    .iter()
                    .zip(want.iter())
                    .all(|(a, b)| a.to_bits() == b.to_bits() || (*a == 0.0 && *b == 0.0));
                assert!(same, "tract, opset {opset} {mode:?}: got {got:?}, want {want:?}");
                std::fs::write(dir.path().join(format!("case{case}.onnx")), encode(&model)).unwrap();
                ndarray_npy::write_npy(dir.path().join(format!("case{case}.x.npy")), &x).unwrap();
                ndarray_npy::write_npy(dir.path().join(format!("case{case}.want.npy")), &want).unwrap();
                case += 1;
            }
        }
    }
    python("semantics.py", &[dir.path()]);
}

#[test]
fn inspect_lists_every_activation_and_what_would_be_bounded() {
    with_zoo(|dir, expected| {
        let run = common::cli(&[
            "inspect",
            dir.join("zoo.onnx").to_str().unwrap(),
            "--activations",
            "hardswish,gelu",
            "--json",
        ]);
        assert!(run.status.success());
        let json: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        // The opt-in sites (the classifier's logits) are listed too, unbounded unless named.
        let (opt_in, listed): (Vec<&serde_json::Value>, Vec<&serde_json::Value>) = json["activations"]
            .as_array()
            .unwrap()
            .iter()
            .partition(|a| ["Logits", "Linear"].contains(&a["kind"].as_str().unwrap()));
        assert!(opt_in.iter().all(|a| a["bounded"] == false), "{opt_in:?}");
        assert_eq!(listed.len(), expected["zoo"].as_array().unwrap().len());
        let bounded: Vec<&str> = listed
            .iter()
            .filter(|a| a["bounded"] == true)
            .map(|a| a["kind"].as_str().unwrap())
            .collect();
        assert_eq!(bounded, [["HardSwish"; 4].as_slice(), &["GELU"; 3]].concat());
        assert_eq!(listed[4]["form"], "x * Sigmoid(x)");
    });
}

/// The trained fixtures with other activations: every activation bounded, outputs unchanged in
/// onnxruntime and tract on the calibration samples, bounds recomputed by onnxruntime.
#[test]
fn the_mobilenet_and_silu_gelu_fixtures_harden_with_every_activation() {
    let calib = common::fixture("calib.npy");
    for name in ["mobilenetv3", "silu_gelu"] {
        harden_and_check(
            &common::fixture(&format!("{name}.onnx")),
            &calib,
            &["--activations", "all"],
            "channel",
            "zero",
            64,
        );
    }
    let sites = find_activations(&load(&common::fixture("silu_gelu.onnx")));
    let forms: Vec<&str> = sites.iter().map(|s| s.form).collect();
    assert_eq!(forms.iter().filter(|f| **f == "x * Sigmoid(x)").count(), 3);
    assert_eq!(forms.iter().filter(|f| f.contains("Erf")).count(), 2);
    assert_eq!(forms.iter().filter(|f| f.contains("Tanh")).count(), 2);
}
