//! `harden --max-overhead` on the fixtures: every activation accounted for in the report, the
//! budget kept, the same choice whatever `--threads` is, and the written model computing what
//! the plain forms compute where it bounds and what the original computes elsewhere (in
//! onnxruntime, on inputs large enough for the bounds to act). Also `--granularity hybrid`.

mod common;

use common::{cli, fixture, harden_cli, harden_ok};
use fitact_onnx::engine::{Engine, EngineChoice, Outputs};
use fitact_onnx::model_io::read_model;
use fitact_passes::activations::{ActivationSite, find_activations};
use fitact_passes::bound_activations::{Bound, BoundRequest, Mode, bound_activations};
use fitact_passes::onnx::ModelProto;
use fitact_passes::tensor::FLOAT;
use ndarray::{ArrayD, Axis};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

/// The first `n` calibration samples and labels of the fixtures, in `dir`.
fn small_calib(dir: &Path, n: usize) -> (PathBuf, PathBuf) {
    let x: ArrayD<f32> = ndarray_npy::read_npy(fixture("calib.npy")).unwrap();
    let y: ArrayD<i64> = ndarray_npy::read_npy(fixture("calib_labels.npy")).unwrap();
    let (calib, labels) = (dir.join("calib.npy"), dir.join("labels.npy"));
    ndarray_npy::write_npy(&calib, &x.slice_axis(Axis(0), (0..n).into()).to_owned()).unwrap();
    ndarray_npy::write_npy(&labels, &y.slice_axis(Axis(0), (0..n).into()).to_owned()).unwrap();
    (calib, labels)
}

/// Flags of a small, deterministic budget run: counted costs, 3 sampled fault patterns (the
/// default targeted estimate runs a flip per group of weights: many more runs in debug).
fn budget_flags<'a>(labels: &'a Path, budget: &'a str) -> Vec<&'a str> {
    vec![
        "--labels",
        labels.to_str().unwrap(),
        "--max-overhead",
        budget,
        "--cost-model",
        "count",
        "--fault-ber",
        "1e-5",
        "--fault-patterns",
        "3",
        "--benefit",
        "sampled",
    ]
}

fn read_json(path: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Hardens `model` with `flags` to `stem`.onnx: the bytes written and the report's budget
/// (its time left out: the rest must not depend on the run).
fn written_and_budget(model: &Path, calib: &Path, stem: &Path, flags: &[&str]) -> (Vec<u8>, Json) {
    let (out, report) = (stem.with_extension("onnx"), stem.with_extension("json"));
    let mut flags = flags.to_vec();
    flags.extend(["--report", report.to_str().unwrap()]);
    harden_ok(model, &out, calib, &flags);
    let mut budget = read_json(&report)["budget"].clone();
    budget["seconds"] = Json::Null;
    (std::fs::read(&out).unwrap(), budget)
}

#[test]
fn the_report_accounts_for_every_activation_and_the_budget_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (calib, labels) = small_calib(dir.path(), 48);
    let model = fixture("mobilenetv3.onnx");
    let (out, report) = (dir.path().join("m.onnx"), dir.path().join("m.json"));
    let mut flags = budget_flags(&labels, "15%");
    flags.extend(["--report", report.to_str().unwrap()]);
    harden_ok(&model, &out, &calib, &flags);
    let report = read_json(&report);
    let budget = &report["budget"];
    let original = read_model(&model).unwrap().model;
    let sites = find_activations(&original);
    let listed = budget["activations"].as_array().unwrap();
    assert_eq!(listed.len(), sites.len(), "every activation is listed");
    for (entry, site) in listed.iter().zip(&sites) {
        assert_eq!(entry["node"], site.stem());
        let offered: Vec<&str> = entry["forms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["form"].as_str().unwrap())
            .collect();
        assert!(offered.contains(&entry["form"].as_str().unwrap()), "{entry}");
        assert_eq!(offered.first(), Some(&"none"));
        assert_eq!(offered.last(), Some(&"channel/zero"));
    }
    let bounded = listed.iter().filter(|a| a["form"] != "none").count();
    assert_eq!(report["activations"].as_array().unwrap().len(), bounded);
    assert!(
        bounded > 0 && bounded < sites.len(),
        "a partial choice at 15%: {bounded}"
    );
    let predicted = budget["predicted_overhead"].as_f64().unwrap();
    assert!(predicted <= 0.15 + 1e-9, "predicted {predicted}");
    assert!(budget["full_predicted_overhead"].as_f64().unwrap() > 0.15);
    // The upgrades that spent what the path left stay within the budget and each gained.
    let path_end = budget["path"].as_array().unwrap().last().unwrap()["resilience"]
        .as_f64()
        .unwrap();
    let mut before = path_end;
    for step in budget["filled"].as_array().unwrap() {
        assert!(step["predicted_overhead"].as_f64().unwrap() <= 0.15 + 1e-9, "{step}");
        assert!(step["resilience"].as_f64().unwrap() > before, "{step}");
        before = step["resilience"].as_f64().unwrap();
    }
    assert_eq!(budget["cost_model"], "count");
    assert!(budget["measured_overhead"].is_null(), "the count model times nothing");
    let r = &budget["resilience"];
    assert_eq!(r["metric"], "accuracy");
    assert_eq!(r["faults"]["patterns"], 3);
    assert!(r["kept"].as_f64().is_some());
    // The model says what was chosen.
    let written = read_model(&out).unwrap().model;
    let forms = written
        .metadata_props
        .iter()
        .find(|e| e.key() == "fitact.budget_forms")
        .map(|e| e.value().to_owned())
        .unwrap();
    assert_eq!(forms.split(',').count(), sites.len());
}

#[test]
fn the_choice_is_the_same_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let (calib, labels) = small_calib(dir.path(), 32);
    let model = fixture("resnet.onnx");
    let written: Vec<_> = ["1", "2"]
        .iter()
        .map(|threads| {
            let mut flags = budget_flags(&labels, "5%");
            flags.extend(["--threads", threads]);
            written_and_budget(&model, &calib, &dir.path().join(format!("r{threads}")), &flags)
        })
        .collect();
    assert!(written[0].0 == written[1].0, "the same model bytes");
    assert_eq!(written[0].1, written[1].1, "the same report");
}

#[test]
fn targeted_benefits_measure_every_activation_and_follow_the_seed() {
    // One damaging flip per group of weights (the default), on the ResNet fixture: every
    // activation's bound gets a measured benefit, the same seed gives the same choice, and
    // the report says how.
    let dir = tempfile::tempdir().unwrap();
    let (calib, labels) = small_calib(dir.path(), 16);
    let model = fixture("resnet.onnx");
    let mut flags = budget_flags(&labels, "5%");
    // The default estimate (targeted, 1 flip per group): the flags' sampled removed.
    flags.truncate(flags.len() - 2);
    let runs: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| written_and_budget(&model, &calib, &dir.path().join(name), &flags))
        .collect();
    assert!(runs[0].0 == runs[1].0, "the same model bytes for the same seed");
    assert_eq!(runs[0].1, runs[1].1, "the same report for the same seed");
    let budget = &runs[0].1;
    assert_eq!(budget["resilience"]["faults"]["benefit"], "targeted");
    assert_eq!(budget["resilience"]["faults"]["flips"], 1);
    assert!(
        budget["resilience"]["chosen"]["ci95"].is_null(),
        "one flip per group: no interval"
    );
    let sites = find_activations(&read_model(&model).unwrap().model);
    let listed = budget["activations"].as_array().unwrap();
    assert_eq!(listed.len(), sites.len(), "every activation is listed");
    let full_benefit = |a: &Json| a["forms"].as_array().unwrap().last().unwrap()["benefit"].as_f64();
    assert!(
        listed.iter().all(|a| full_benefit(a).is_some()),
        "every activation's bound is measured: {listed:?}"
    );
    // A catastrophic flip behind an unbounded Relu costs accuracy: some bound buys some.
    assert!(listed.iter().any(|a| full_benefit(a).unwrap() > 0.0), "{listed:?}");
    assert!(budget["predicted_overhead"].as_f64().unwrap() <= 0.05 + 1e-9);
}

/// The original with each site of `forms` bounded in the plain emission by its saved bound,
/// in zero mode (`channel/zero`) or saturate mode (`channel/saturate`), the others left as they
/// are.
fn plain_reference(original: &ModelProto, forms: &[(String, String)], saved: &Json) -> ModelProto {
    let bound_of = |node: &str| -> Bound {
        let entry = saved["bounds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["node"] == node)
            .unwrap();
        Bound {
            dims: serde_json::from_value(entry["dims"].clone()).unwrap(),
            values: serde_json::from_value(entry["high"].clone()).unwrap(),
            low: None,
        }
    };
    let mut model = original.clone();
    for (wanted, mode) in [("channel/zero", Mode::Zero), ("channel/saturate", Mode::Saturate)] {
        let sites: Vec<ActivationSite> = find_activations(&model);
        let requests: Vec<BoundRequest> = forms
            .iter()
            .filter(|(_, form)| form == wanted)
            .map(|(node, _)| {
                let site = sites.iter().find(|s| s.stem() == node).unwrap().clone();
                BoundRequest {
                    site,
                    bound: bound_of(node),
                    elem_type: FLOAT,
                }
            })
            .collect();
        let report = bound_activations(&mut model, &requests, mode).unwrap();
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    }
    model
}

/// The first output of `model` on `x`, in onnxruntime (tract when it is not installed).
fn outputs(model: &ModelProto, x: &ArrayD<f32>) -> ArrayD<f32> {
    let engine = Engine::select(EngineChoice::Auto, None).unwrap();
    let session = engine
        .load(model, &[x.shape()[1..].to_vec()], x.shape()[0], Outputs::Model)
        .unwrap();
    let (out, _) = session.run(vec![x.clone().into()]).unwrap();
    out[0].view::<f32>().unwrap().to_owned()
}

fn argmax_rows(a: &ArrayD<f32>) -> Vec<usize> {
    a.outer_iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |b, (i, v)| if *v > b.1 { (i, *v) } else { b })
                .0
        })
        .collect()
}

#[test]
fn the_written_model_is_the_plain_form_where_bounded_and_the_original_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let (calib, labels) = small_calib(dir.path(), 64);
    let model = fixture("resnet.onnx");
    let (out, report, saved) = (
        dir.path().join("r.onnx"),
        dir.path().join("r.json"),
        dir.path().join("bounds.json"),
    );
    let mut flags = budget_flags(&labels, "5%");
    flags.extend([
        "--report",
        report.to_str().unwrap(),
        "--save-bounds",
        saved.to_str().unwrap(),
    ]);
    harden_ok(&model, &out, &calib, &flags);
    let forms: Vec<(String, String)> = read_json(&report)["budget"]["activations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["node"].as_str().unwrap().to_owned(),
                a["form"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for form in ["none", "channel/zero", "channel/saturate"] {
        assert!(forms.iter().any(|(_, f)| f == form), "the choice has {form}: {forms:?}");
    }
    let original = read_model(&model).unwrap().model;
    let reference = plain_reference(&original, &forms, &read_json(&saved));
    let written = read_model(&out).unwrap().model;
    // Inputs three times the calibration samples: beyond most bounds.
    let x: ArrayD<f32> = ndarray_npy::read_npy(&calib).unwrap();
    let x = x.mapv(|v| 3.0 * v);
    let (w, p, o) = (outputs(&written, &x), outputs(&reference, &x), outputs(&original, &x));
    let scale = p.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = w.iter().zip(&p).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff <= 1e-3 * scale,
        "written vs plain reference: {diff} (scale {scale})"
    );
    assert_eq!(argmax_rows(&w), argmax_rows(&p));
    let moved = p.iter().zip(&o).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(moved > 1e-2 * scale, "the bounds act on these inputs: {moved}");
    // Bounding every site would differ from the choice: what is left unbounded matters.
    let all: Vec<(String, String)> = forms.iter().map(|(n, _)| (n.clone(), "channel/zero".into())).collect();
    let every = outputs(&plain_reference(&original, &all, &read_json(&saved)), &x);
    let apart = every.iter().zip(&w).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        apart > 1e-2 * scale,
        "the written model is not the fully bounded one: {apart}"
    );
}

#[test]
fn measured_costs_are_timed_and_the_chosen_model_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (calib, labels) = small_calib(dir.path(), 32);
    let (out, report, plot) = (
        dir.path().join("r.onnx"),
        dir.path().join("r.json"),
        dir.path().join("curve.svg"),
    );
    let mut flags = budget_flags(&labels, "10%");
    flags.retain(|f| *f != "count" && *f != "--cost-model");
    flags.extend([
        "--report",
        report.to_str().unwrap(),
        "--plot-budget",
        plot.to_str().unwrap(),
    ]);
    harden_ok(&fixture("resnet.onnx"), &out, &calib, &flags);
    let budget = read_json(&report)["budget"].clone();
    assert_eq!(budget["cost_model"], "measure");
    assert!(budget["original_ms"].as_f64().unwrap() > 0.0);
    assert!(budget["measured_overhead"].as_f64().is_some());
    assert!(budget["full_measured_overhead"].as_f64().is_some());
    assert!(!budget["groups"].as_array().unwrap().is_empty());
    let checks = budget["checks"].as_array().unwrap();
    assert!(!checks.is_empty() && checks.iter().all(|c| c["measured_overhead"].is_number()));
    for check in checks {
        // Timed three times; the median counts.
        let mut timings: Vec<f64> = serde_json::from_value(check["timings"].clone()).unwrap();
        timings.sort_by(f64::total_cmp);
        assert_eq!(timings.len(), 3, "{check}");
        assert_eq!(check["measured_overhead"].as_f64(), Some(timings[1]), "{check}");
    }
    let curve = budget["curve"].as_array().unwrap();
    assert!(curve.len() >= 2 && curve[0]["budget"] == 0.0);
    let svg = std::fs::read_to_string(plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("model written"));
    // The costs reused: the same forms as the report that timed them lists for its path's
    // start, nothing timed, and the same model bytes on 1 and 2 threads.
    let forms = |b: &Json| -> Vec<Json> {
        b["activations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["forms"].clone())
            .collect()
    };
    let mut written = Vec::new();
    for threads in ["1", "2"] {
        let (again, again_report) = (
            dir.path().join(format!("again{threads}.onnx")),
            dir.path().join("again.json"),
        );
        let mut reuse = budget_flags(&labels, "10%");
        reuse.retain(|f| *f != "count" && *f != "--cost-model");
        reuse.extend([
            "--budget-costs",
            report.to_str().unwrap(),
            "--report",
            again_report.to_str().unwrap(),
            "--threads",
            threads,
        ]);
        harden_ok(&fixture("resnet.onnx"), &again, &calib, &reuse);
        let reused = read_json(&again_report)["budget"].clone();
        assert!(
            reused["runtime"].as_str().unwrap().starts_with("the costs of"),
            "{}",
            reused["runtime"]
        );
        assert!(reused["measured_overhead"].is_null());
        assert_eq!(forms(&reused), forms(&budget), "the costs as the report lists them");
        written.push(std::fs::read(&again).unwrap());
    }
    assert_eq!(written[0], written[1]);
    // A report of another model is refused in one line.
    let run = harden_cli(
        &fixture("vgg.onnx"),
        &dir.path().join("v.onnx"),
        &calib,
        &[
            "--labels",
            labels.to_str().unwrap(),
            "--max-overhead",
            "10%",
            "--budget-costs",
            report.to_str().unwrap(),
        ],
    );
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("reading the costs in") && stderr.lines().count() == 1,
        "{stderr}"
    );
}

#[test]
fn hybrid_is_layer_bounds_and_neuron_bounds_at_the_last_activation() {
    let dir = tempfile::tempdir().unwrap();
    let (calib, _) = small_calib(dir.path(), 32);
    let (out, report) = (dir.path().join("h.onnx"), dir.path().join("h.json"));
    harden_ok(
        &fixture("resnet.onnx"),
        &out,
        &calib,
        &["--granularity", "hybrid", "--report", report.to_str().unwrap()],
    );
    let report = read_json(&report);
    assert_eq!(report["granularity"], "hybrid");
    let activations = report["activations"].as_array().unwrap();
    let (last, rest) = activations.split_last().unwrap();
    assert!(rest.iter().all(|a| a["bound_shape"].as_array().unwrap().is_empty()));
    assert_eq!(last["bound_shape"], last["sample_shape"]);
    let written = read_model(&out).unwrap().model;
    assert!(
        written
            .metadata_props
            .iter()
            .any(|e| e.key() == "fitact.granularity" && e.value() == "hybrid")
    );
}

#[test]
fn budget_flags_without_what_they_need_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (calib, labels) = small_calib(dir.path(), 8);
    let out = dir.path().join("x.onnx");
    let run = harden_cli(
        &fixture("resnet.onnx"),
        &out,
        &calib,
        &["--labels", labels.to_str().unwrap()],
    );
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("--labels is for --search or --max-overhead"));
    let run = cli(&[
        "harden",
        fixture("resnet.onnx").to_str().unwrap(),
        out.to_str().unwrap(),
        "--calib",
        calib.to_str().unwrap(),
        "--runtime",
        "tract",
    ]);
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("--max-overhead"));
    let run = harden_cli(&fixture("resnet.onnx"), &out, &calib, &["--max-overhead", "150%"]);
    assert_eq!(run.status.code(), Some(2));
}

#[test]
fn an_int8_model_is_bounded_within_the_budget_in_its_integers() {
    // Integer sites are offered the full form or none (a mixed build could not find them
    // again): the choice completes and the bounds it writes are uint8.
    let dir = tempfile::tempdir().unwrap();
    let (calib, labels) = small_calib(dir.path(), 32);
    let model = fixture("precision/resnet_qdq.onnx");
    let (out, report) = (dir.path().join("q.onnx"), dir.path().join("q.json"));
    let mut flags = budget_flags(&labels, "10%");
    flags.extend(["--report", report.to_str().unwrap()]);
    harden_ok(&model, &out, &calib, &flags);
    let budget = read_json(&report)["budget"].clone();
    let listed = budget["activations"].as_array().unwrap();
    assert!(!listed.is_empty());
    for a in listed {
        let offered: Vec<&str> = a["forms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["form"].as_str().unwrap())
            .collect();
        assert_eq!(offered, ["none", "channel/zero"], "{a}");
    }
    assert!(budget["predicted_overhead"].as_f64().unwrap() <= 0.1 + 1e-9);
    let written = read_model(&out).unwrap().model;
    let uint8 = 2;
    let bounds: Vec<_> = written
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .filter(|t| t.name().contains("bound"))
        .collect();
    let bounded = listed.iter().filter(|a| a["form"] != "none").count();
    assert!(bounded > 0 && bounded < listed.len(), "a partial choice: {bounded}");
    assert_eq!(bounds.len(), bounded, "one bound tensor per bounded site");
    assert!(
        bounds.iter().all(|t| t.data_type() == uint8),
        "bounds in the model's integers"
    );
    // As without a budget: opset 13 raised to 14 for the uint8 mask form.
    assert_eq!(read_json(&report)["opset_raised"]["to"], 14);
    assert_eq!(fitact_passes::graph::default_opset(&written).unwrap(), 14);
    let ops: Vec<&str> = written
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .filter(|n| n.name().contains("/fitact/"))
        .map(|n| n.op_type())
        .collect();
    assert_eq!(ops.iter().filter(|op| **op == "Mul").count(), bounded, "{ops:?}");
    assert!(!ops.contains(&"Where"), "{ops:?}");
}
