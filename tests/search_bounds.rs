//! The bound search: it tightens bounds below the calibrated maxima while the held-out metric
//! stays within the budget, gives the same bounds on every run, and respects its limits.

mod common;

use common::{cli, fixture, harden_ok, python};
use std::path::{Path, PathBuf};

fn harden(model: &Path, calib: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let report = out.with_extension("json");
    let mut args = vec!["--report", report.to_str().unwrap()];
    args.extend(extra);
    harden_ok(model, out, calib, &args);
    serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap()
}

fn first_rows(src: &Path, dst: &Path, n: usize) {
    let x: ndarray::ArrayD<f32> = ndarray_npy::read_npy(src).unwrap();
    ndarray_npy::write_npy(dst, &x.slice_axis(ndarray::Axis(0), (0..n).into()).to_owned()).unwrap();
}

#[test]
fn search_tightens_bounds_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let calib = dir.path().join("calib.npy");
    first_rows(&fixture("calib.npy"), &calib, 256);
    let labels: ndarray::ArrayD<i64> = ndarray_npy::read_npy(fixture("calib_labels.npy")).unwrap();
    let label_path = dir.path().join("labels.npy");
    ndarray_npy::write_npy(
        &label_path,
        &labels.slice_axis(ndarray::Axis(0), (0..256).into()).to_owned(),
    )
    .unwrap();
    let out = dir.path().join("searched.onnx");
    let budget = [
        "--search",
        "--objective",
        "tight",
        "--budget",
        "5%",
        "--labels",
        label_path.to_str().unwrap(),
        "--max-evals",
        "60",
        "--percentile",
        "0.99",
    ];
    let json = harden(&fixture("alexnet.onnx"), &calib, &out, &budget);
    let search = &json["search"];
    assert_eq!(search["metric"], "accuracy");
    assert_eq!(search["holdout_samples"], 256, "every sample, up to 512");
    assert_eq!(search["folds"], 4);
    let threshold = search["threshold"].as_f64().unwrap();
    assert!(search["final_metric"].as_f64().unwrap() >= threshold, "{search}");
    // The lowest metric accepted is the original's count less the most samples whose loss
    // keeps the drop's 95% upper bound within the budget.
    let may_lose = search["may_lose"].as_u64().unwrap() as usize;
    assert_eq!(Some(may_lose), fitact_onnx::search::Vouch::new(0.05, 256).may_lose);
    let reference = search["reference"].as_f64().unwrap();
    assert!(
        (threshold - (reference - may_lose as f64 / 256.0)).abs() < 1e-9,
        "{search}"
    );
    assert!(search["lost"].as_u64().unwrap() as usize <= may_lose, "{search}");
    assert!(search["drop_upper_bound"].as_f64().unwrap() <= 0.05, "{search}");
    assert!(search["verdict"].as_str().unwrap().starts_with("tightened"), "{search}");
    let ratio = search["mean_bound_ratio"].as_f64().unwrap();
    assert!(ratio < 0.95, "the search tightened the bounds: {ratio}");
    for layer in search["layers"].as_array().unwrap() {
        let (before, after) = (
            layer["bound_mean_before"].as_f64().unwrap(),
            layer["bound_mean_after"].as_f64().unwrap(),
        );
        assert!(after <= before + 1e-6, "{layer}");
        // A scale applies to the maxima, or to the per-neuron percentiles where the search
        // put those in their place (below the maxima).
        let scaled = layer["scale"].as_f64().unwrap() * before;
        match layer["base"].as_str().unwrap() {
            "maximum" => assert!((after - scaled).abs() <= 1e-4 * before, "{layer}"),
            "percentile" => assert!(after < scaled - 1e-4 * before, "{layer}"),
            other => panic!("unknown base {other}"),
        }
        for step in layer["steps"].as_array().unwrap() {
            if step["accepted"].as_bool().unwrap() {
                assert!(
                    step["metric"].as_f64().unwrap() >= threshold,
                    "accepted below the budget: {step}"
                );
            }
        }
    }
    let bases: Vec<&str> = search["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["base"].as_str().unwrap())
        .collect();
    assert!(
        bases.contains(&"percentile"),
        "a percentile replaced an outlying maximum: {bases:?}"
    );
    // The searched model is still a valid hardened model, in onnxruntime too (its outputs
    // differ from the original's by design, so only the check and the op set are compared).
    let check = python(
        "crosscheck.py",
        &[
            &fixture("alexnet.onnx"),
            &out,
            &calib,
            Path::new("--rtol"),
            Path::new("1e9"),
            Path::new("--atol"),
            Path::new("1e9"),
        ],
    );
    assert!(check.contains("\"checker\": \"ok\""), "{check}");
}

#[test]
fn search_is_deterministic_and_respects_its_limits() {
    let dir = tempfile::tempdir().unwrap();
    python("graphs.py", &[dir.path()]);
    let model = dir.path().join("shared_relu.onnx");
    let calib = dir.path().join("x.npy");
    let out = |name: &str| -> PathBuf { dir.path().join(name) };
    // 256 samples vouch for a few losses under a 5% budget, so the search runs its phases.
    let tight = ["--search", "--objective", "tight", "--budget", "5%"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> { tight.iter().chain(extra).copied().collect() };
    let a = harden(&model, &calib, &out("a.onnx"), &tight);
    let b = harden(&model, &calib, &out("b.onnx"), &tight);
    assert_eq!(
        std::fs::read(out("a.onnx")).unwrap(),
        std::fs::read(out("b.onnx")).unwrap(),
        "same bounds every run"
    );
    assert_eq!(a["search"]["stopped"], "converged");
    assert_eq!(a["search"]["layers"], b["search"]["layers"]);
    for layer in a["search"]["layers"].as_array().unwrap() {
        assert_eq!(layer["base"], "maximum", "percentiles only with --percentile");
    }

    let limited = harden(&model, &calib, &out("c.onnx"), &with(&["--max-evals", "5"]));
    assert_eq!(limited["search"]["stopped"], "evaluation limit");
    assert!(
        limited["search"]["evaluations"].as_u64().unwrap() <= 6,
        "{}",
        limited["search"]
    );

    // A limit no candidate fits in: the calibrated point and the final check, nothing else.
    let timed = harden(&model, &calib, &out("d.onnx"), &with(&["--time-limit", "0.001s"]));
    let search = &timed["search"];
    assert_eq!(search["stopped"], "time limit");
    assert_eq!(search["evaluations"], 2, "{search}");
    assert_eq!(search["mean_bound_ratio"], 1.0, "{search}");
    assert!(
        search["final_metric"].as_f64() >= search["threshold"].as_f64(),
        "{search}"
    );

    // The resilience objective under the same limit accepts no tighter point, so it runs no
    // fault sweep, keeps the calibrated bounds and says why.
    let timed = harden(
        &model,
        &calib,
        &out("e.onnx"),
        &["--search", "--budget", "5%", "--time-limit", "0.001s"],
    );
    let search = &timed["search"];
    assert_eq!(search["objective"], "resilience", "the default");
    assert_eq!(search["stopped"], "time limit");
    assert_eq!(search["fault_points"].as_array().unwrap().len(), 0, "{search}");
    assert_eq!(search["mean_bound_ratio"], 1.0, "{search}");
    let verdict = search["verdict"].as_str().unwrap();
    assert!(
        verdict.starts_with("kept the calibrated bounds: no tighter point") && verdict.contains("time limit"),
        "{verdict}"
    );
}

/// Top-1 accuracy of each model on the fixture's test split (2000 images), in onnxruntime.
fn test_accuracy(models: &[&Path]) -> Vec<f64> {
    let mut args = vec![fixture("test.npy"), fixture("test_labels.npy")];
    args.extend(models.iter().map(|m| m.to_path_buf()));
    let args: Vec<&Path> = args.iter().map(|p| p.as_path()).collect();
    let json: serde_json::Value = serde_json::from_str(&python("accuracy.py", &args)).unwrap();
    models
        .iter()
        .map(|m| json[m.to_str().unwrap()].as_f64().unwrap())
        .collect()
}

/// The first `n` labels of the calibration set, at `rows`, written to `dst`.
fn labels_at(rows: &[usize], dst: &Path) {
    let labels: ndarray::Array1<i64> = ndarray_npy::read_npy(fixture("calib_labels.npy")).unwrap();
    ndarray_npy::write_npy(dst, &labels.select(ndarray::Axis(0), rows)).unwrap();
}

/// On 64 calibration samples the default budget (0.5%) is below anything 64 samples can vouch
/// for: the default search keeps the calibrated bounds and says so. With a budget they can
/// vouch for a loss or two at (10%), the tight search tightens, and the drop on the 2000 test
/// images stays within the drop it vouches for, on two draws of the 64 (the full sweep, 64 to
/// 200 samples x 10 draws on three fixtures, is benches/search_default.py).
#[test]
fn the_budget_holds_on_64_calibration_samples() {
    let dir = tempfile::tempdir().unwrap();
    let all: ndarray::Array4<f32> = ndarray_npy::read_npy(fixture("calib.npy")).unwrap();
    let model = fixture("resnet.onnx");
    for draw in 0..2usize {
        // Every 7th sample from an offset: 64 of the 512, a different set per draw.
        let rows: Vec<usize> = (0..64).map(|k| (draw * 3 + k * 7) % all.shape()[0]).collect();
        let calib = dir.path().join(format!("calib{draw}.npy"));
        ndarray_npy::write_npy(&calib, &all.select(ndarray::Axis(0), &rows)).unwrap();
        let labels = dir.path().join(format!("labels{draw}.npy"));
        labels_at(&rows, &labels);
        let labels = labels.to_str().unwrap();
        if draw == 0 {
            let out = dir.path().join("default.onnx");
            let search = &harden(&model, &calib, &out, &["--search", "--labels", labels])["search"];
            assert_eq!(search["may_lose"], serde_json::Value::Null, "{search}");
            assert_eq!(search["mean_bound_ratio"], 1.0, "{search}");
            let verdict = search["verdict"].as_str().unwrap();
            assert!(verdict.contains("vouch for no drop below 4.57%"), "{verdict}");
        }
        let out = dir.path().join(format!("tight{draw}.onnx"));
        let flags = [
            "--search",
            "--objective",
            "tight",
            "--budget",
            "10%",
            "--labels",
            labels,
        ];
        let search = &harden(&model, &calib, &out, &flags)["search"];
        assert_eq!(
            (search["holdout_samples"].as_u64(), search["may_lose"].as_u64()),
            (Some(64), Some(2))
        );
        let vouched = search["drop_upper_bound"].as_f64().unwrap();
        assert!(vouched <= 0.1, "{search}");
        let ratio = search["mean_bound_ratio"].as_f64().unwrap();
        assert!(ratio < 0.97, "draw {draw}: the search tightened the bounds: {ratio}");
        let [original, searched] = test_accuracy(&[&model, &out])[..] else {
            unreachable!()
        };
        assert!(
            searched >= original - vouched,
            "draw {draw}: test accuracy {searched} against {original}, beyond the {vouched} vouched for (ratio {ratio})"
        );
    }
}

#[test]
fn the_search_gives_the_same_bounds_on_any_number_of_threads() {
    let dir = tempfile::tempdir().unwrap();
    let calib = dir.path().join("calib.npy");
    first_rows(&fixture("calib.npy"), &calib, 128);
    let out = |threads: &str| -> PathBuf { dir.path().join(format!("{threads}.onnx")) };
    let runs: Vec<serde_json::Value> = ["1", "3"]
        .iter()
        .map(|t| {
            let flags = ["--search", "--objective", "tight", "--budget", "5%", "--threads", t];
            harden(&fixture("resnet.onnx"), &calib, &out(t), &flags)
        })
        .collect();
    assert!(
        std::fs::read(out("1")).unwrap() == std::fs::read(out("3")).unwrap(),
        "the folds' threads change no bound"
    );
    let scales = |run: &serde_json::Value| -> Vec<serde_json::Value> {
        run["search"]["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["scale"].clone())
            .collect()
    };
    assert_eq!(scales(&runs[0]), scales(&runs[1]));
    assert!(runs[0]["search"]["mean_bound_ratio"].as_f64().unwrap() < 0.97);
}

#[test]
fn a_search_on_too_few_samples_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let calib = dir.path().join("calib.npy");
    first_rows(&fixture("calib.npy"), &calib, 40);
    let out = dir.path().join("out.onnx");
    let run = common::harden_cli(&fixture("alexnet.onnx"), &out, &calib, &["--search"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--search needs at least 64 calibration samples"),
        "{stderr}"
    );
    assert!(stderr.contains("has 40"), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn search_flags_need_search() {
    let run = cli(&["harden", "a.onnx", "b.onnx", "--calib", "c.npy", "--budget", "1%"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("--search"));
    let run = cli(&[
        "harden",
        "a.onnx",
        "b.onnx",
        "--calib",
        "c.npy",
        "--search",
        "--percentile",
        "1.5",
    ]);
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("between 0.5 and 1"));
}

/// The resilience objective checks points of the tight search's path under its fault sweep
/// and leaves the calibrated bounds only for a point that gains with confidence; the choice is
/// the same on every run of a seed.
#[test]
fn the_resilience_objective_moves_off_the_calibrated_bounds_only_for_a_confident_gain() {
    let dir = tempfile::tempdir().unwrap();
    let calib = dir.path().join("calib.npy");
    first_rows(&fixture("calib.npy"), &calib, 256);
    let out = |name: &str| -> PathBuf { dir.path().join(name) };
    let run = |name: &str, format: &str, ber: &str| {
        let flags = [
            "--search",
            "--budget",
            "5%",
            "--fault-format",
            format,
            "--fault-ber",
            ber,
            "--fault-patterns",
            "12",
            "--seed",
            "5",
        ];
        harden(&fixture("alexnet.onnx"), &calib, &out(name), &flags)
    };
    let a = run("a.onnx", "q15.16", "3e-5");
    let b = run("b.onnx", "q15.16", "3e-5");
    assert!(
        std::fs::read(out("a.onnx")).unwrap() == std::fs::read(out("b.onnx")).unwrap(),
        "a seed gives the same bounds"
    );
    assert_eq!(a["search"]["fault_points"], b["search"]["fault_points"]);
    for report in [&a, &run("c.onnx", "float32", "1e-5")] {
        let search = &report["search"];
        assert_eq!(search["objective"], "resilience");
        let points = search["fault_points"].as_array().unwrap();
        assert_eq!(points[0]["accepted"], 0, "the calibrated point is checked: {search}");
        assert!(points.len() >= 2, "and some tighter point: {search}");
        let chosen: Vec<&serde_json::Value> = points.iter().filter(|p| p["chosen"] == true).collect();
        assert_eq!(chosen.len(), 1, "{search}");
        let fault = |p: &serde_json::Value| p["fault_metric"].as_f64().unwrap();
        if chosen[0]["accepted"] != 0 {
            assert!(chosen[0]["gain_lower_bound"].as_f64().unwrap() > 0.0, "{search}");
        }
        for p in &points[1..] {
            if p["gain_lower_bound"].as_f64().unwrap() > 0.0 {
                assert!(
                    fault(chosen[0]) >= fault(p),
                    "the best of the confident gains: {search}"
                );
            }
            assert!(p["metric"].as_f64() >= search["threshold"].as_f64(), "{p}");
        }
        assert_eq!(search["final_fault_metric"].as_f64(), Some(fault(chosen[0])));
        assert_eq!(search["calibrated_fault_metric"].as_f64(), Some(fault(&points[0])));
        let scale = chosen[0]["mean_scale"].as_f64().unwrap();
        let ratio = search["mean_bound_ratio"].as_f64().unwrap();
        assert!(
            (scale == 1.0) == (ratio == 1.0),
            "the bounds written are the chosen point's: {search}"
        );
    }
}
