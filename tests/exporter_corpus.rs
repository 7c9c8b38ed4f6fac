//! End-to-end on the exporter corpus (fixtures/exporter_corpus/corpus.json, made by
//! fixtures/make_exporter_corpus.py): tiny models written the ways real toolchains write them
//! (torch's two exporters, Paddle's `-1` batch, `DynamicDimension`/`unk__` dims, a fixed batch
//! with a free width, weights in Constant nodes or an external file, an LSTM inside an `If`,
//! whole-feed and compressed data). Every entry is inspected, hardened with each method (and
//! in tract with fitact), checked in onnxruntime (`tests/python/corpus_check.py`: full check,
//! the original's outputs, the calibrated extremes recomputed) and evaluated. Adding an
//! entry to corpus.json adds it here; every failing entry is reported, each with the step and
//! the error line, before the test fails. `FITACT_CORPUS_ENTRY=name` runs one entry.

mod common;

use common::{cli, fixture, python_result};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

const METHODS: [&str; 3] = ["fitact", "ranger", "clipact"];

/// An entry's failed steps: (step, error line).
type Failures = Vec<(String, String)>;

/// One entry of corpus.json (its fields are described there, under "fields").
struct Entry {
    name: String,
    model: PathBuf,
    data: PathBuf,
    labels: Option<PathBuf>,
    harden_args: Vec<String>,
    evaluate_args: Vec<String>,
    refused_without: Option<String>,
    unbounded_allowed: usize,
}

fn corpus() -> Vec<Entry> {
    let dir = fixture("exporter_corpus");
    let json: Json = serde_json::from_slice(&std::fs::read(dir.join("corpus.json")).unwrap()).unwrap();
    let strings = |v: &Json| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| Entry {
            name: e["name"].as_str().unwrap().to_owned(),
            model: dir.join(e["model"].as_str().unwrap()),
            data: dir.join(e["data"].as_str().unwrap()),
            labels: e["labels"].as_str().map(|l| dir.join(l)),
            harden_args: strings(&e["harden_args"]),
            evaluate_args: strings(&e["evaluate_args"]),
            refused_without: e["refused_without_harden_args"].as_str().map(str::to_owned),
            unbounded_allowed: e["unbounded_relus_allowed"].as_u64().unwrap() as usize,
        })
        .collect()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs the CLI: its stdout, or the first line of its stderr when it fails.
fn run(args: &[&str]) -> Result<String, String> {
    let out = cli(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let line = stderr.trim().lines().next().unwrap_or("(no message)");
        return Err(format!("exit {:?}: {line}", out.status.code()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn report(path: &Path) -> Result<Json, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("no report {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("report {}: {e}", path.display()))
}

fn inspect(e: &Entry) -> Result<(), String> {
    let stdout = run(&["inspect", path(&e.model)])?;
    if !stdout.contains("Relu") {
        return Err(format!("inspect names no Relu: {stdout}"));
    }
    Ok(())
}

/// Without the entry's harden flags, harden must refuse in one line saying `want`.
fn refused_without_flags(e: &Entry, want: &str, dir: &Path) -> Result<(), String> {
    let out = dir.join("refused.onnx");
    let run = cli(&[
        "harden",
        path(&e.model),
        path(&out),
        "--calib",
        path(&e.data),
        "--engine",
        "onnxruntime",
        "-q",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr).trim().to_owned();
    if run.status.code() != Some(2) || stderr.lines().count() != 1 || !stderr.contains(want) || out.exists() {
        return Err(format!(
            "without {:?}: expected exit 2 and one line with '{want}', got exit {:?}: {stderr}",
            e.harden_args,
            run.status.code()
        ));
    }
    Ok(())
}

/// Hardens with `method` in `engine`; the hardened model and the harden report's path.
fn harden(e: &Entry, method: &str, engine: &str, dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let out = dir.join(format!("{method}.{engine}.onnx"));
    let json = dir.join(format!("{method}.{engine}.json"));
    let mut args = vec![
        "harden",
        path(&e.model),
        path(&out),
        "--calib",
        path(&e.data),
        "--method",
        method,
        "--engine",
        engine,
        "--report",
        path(&json),
        "-q",
    ];
    args.extend(e.harden_args.iter().map(String::as_str));
    run(&args).map_err(|err| format!("harden: {err}"))?;
    Ok((out, json))
}

/// Checks every hardened model in onnxruntime in one Python run (`corpus_check.py`); the
/// failures by hardened model file name.
fn check_in_onnxruntime(e: &Entry, hardened: &[(PathBuf, PathBuf)]) -> Failures {
    if hardened.is_empty() {
        return Vec::new();
    }
    let allowed = PathBuf::from(e.unbounded_allowed.to_string());
    let mut args: Vec<&Path> = vec![&e.model, &e.data, Path::new("--unbounded-allowed"), &allowed];
    for (model, report) in hardened {
        args.extend([Path::new("--hardened"), model.as_path(), report.as_path()]);
    }
    let Err(stderr) = python_result("corpus_check.py", &args) else {
        return Vec::new();
    };
    let failures: Failures = stderr
        .lines()
        .filter_map(|line| line.strip_prefix("corpus_check failed: "))
        .filter_map(|line| line.split_once(": "))
        .map(|(file, why)| (file.to_owned(), format!("corpus_check: {why}")))
        .collect();
    if failures.is_empty() {
        // Not one of its own failures (a crash): report it whole.
        return vec![("corpus_check.py".to_owned(), stderr)];
    }
    failures
}

/// The calibrated maxima of a harden report, by activation node.
fn maxima(report: &Json) -> Vec<(String, Option<f64>)> {
    report["activations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["node"].as_str().unwrap_or("?").to_owned(),
                a["calibrated_max"].as_f64(),
            )
        })
        .collect()
}

/// Two reports calibrated the same activations to the same maxima (relative `rtol`).
fn same_maxima(a: &Json, b: &Json, rtol: f64, what: &str) -> Result<(), String> {
    let (a, b) = (maxima(a), maxima(b));
    if a.len() != b.len() {
        return Err(format!("{what}: {} activations vs {}", a.len(), b.len()));
    }
    for ((node, x), (_, y)) in a.iter().zip(&b) {
        let close = match (x, y) {
            (Some(x), Some(y)) => (x - y).abs() <= rtol * x.abs().max(1.0),
            (x, y) => x == y,
        };
        if !close {
            return Err(format!("{what}: {node} calibrated max {x:?} vs {y:?}"));
        }
    }
    Ok(())
}

/// A tiny campaign (one BER, 2 trials) on the original and, when there is one, the hardened model.
fn evaluate(e: &Entry, hardened: Option<&Path>, dir: &Path) -> Result<(), String> {
    let json = dir.join("evaluate.json");
    let mut args = vec!["evaluate", path(&e.model)];
    args.extend(hardened.map(path));
    args.extend([
        "--data",
        path(&e.data),
        "--ber",
        "1e-3",
        "--trials",
        "2",
        "--seed",
        "1",
        "--engine",
        "onnxruntime",
        "--report",
        path(&json),
        "-q",
    ]);
    if let Some(labels) = &e.labels {
        args.extend(["--labels", path(labels)]);
    }
    args.extend(e.evaluate_args.iter().map(String::as_str));
    run(&args).map_err(|err| format!("evaluate: {err}"))?;
    let json = report(&json)?;
    let results = json["results"].as_array().cloned().unwrap_or_default();
    let models = 1 + usize::from(hardened.is_some());
    if results.len() != models {
        return Err(format!("evaluate: {} results for {models} models", results.len()));
    }
    for r in &results {
        if r["mean_flips"].as_f64().is_none_or(|f| f <= 0.0) {
            return Err(format!("evaluate: no bit flipped: {r}"));
        }
        if e.labels.is_some() && r["accuracy"].is_null() {
            return Err(format!("evaluate: labels given, no accuracy: {r}"));
        }
    }
    Ok(())
}

/// Every step on one entry; the failures, each as (step, error line).
fn check_entry(e: &Entry) -> Failures {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut note = |step: &str, result: Result<(), String>| {
        if let Err(err) = result {
            failures.push((step.to_owned(), err));
        }
    };
    note("inspect", inspect(e));
    if let Some(want) = &e.refused_without {
        note("refused without flags", refused_without_flags(e, want, dir.path()));
    }
    let runs = METHODS.iter().map(|m| (*m, "onnxruntime")).chain([("fitact", "tract")]);
    let mut hardened = Vec::new();
    for (method, engine) in runs {
        match harden(e, method, engine, dir.path()) {
            Ok(files) => hardened.push((format!("{method} ({engine})"), files)),
            Err(err) => note(&format!("{method} ({engine})"), Err(err)),
        }
    }
    let files: Vec<(PathBuf, PathBuf)> = hardened.iter().map(|(_, f)| f.clone()).collect();
    let failed_checks = check_in_onnxruntime(e, &files);
    for (file, why) in &failed_checks {
        let step = hardened
            .iter()
            .find(|(_, (model, _))| model.file_name().is_some_and(|n| n.to_string_lossy() == *file))
            .map_or(file.clone(), |(step, _)| step.clone());
        note(&step, Err(why.clone()));
    }
    // Calibration does not depend on the method (the same maxima three times), and the
    // engines agree; reports that fail their checks are compared too.
    let reports: Vec<(String, Json)> = hardened
        .iter()
        .filter_map(|(step, (_, json))| report(json).ok().map(|r| (step.clone(), r)))
        .collect();
    for pair in reports.windows(2) {
        let tract = pair[1].0.contains("tract");
        let rtol = if tract { 1e-4 } else { 1e-6 };
        let what = format!("{} vs {}", pair[0].0, pair[1].0);
        note("calibration agrees", same_maxima(&pair[0].1, &pair[1].1, rtol, &what));
    }
    let fitact = hardened
        .iter()
        .find(|(step, _)| step == "fitact (onnxruntime)")
        .map(|(_, (model, _))| model.as_path());
    note("evaluate", evaluate(e, fitact, dir.path()));
    failures
}

/// One entry's failures, the steps that failed the same way on one line.
fn describe(name: &str, failures: &[(String, String)]) -> Vec<String> {
    let mut grouped: Vec<(Vec<&str>, &str)> = Vec::new();
    for (step, err) in failures {
        match grouped.iter_mut().find(|(_, e)| *e == err.as_str()) {
            Some((steps, _)) => steps.push(step),
            None => grouped.push((vec![step], err)),
        }
    }
    grouped
        .into_iter()
        .map(|(steps, err)| format!("  {name}: {}: {err}", steps.join(", ")))
        .collect()
}

#[test]
fn every_exporter_corpus_entry_inspects_hardens_checks_and_evaluates() {
    let mut entries = corpus();
    assert!(entries.len() >= 16, "corpus.json lists {} entries", entries.len());
    if let Ok(only) = std::env::var("FITACT_CORPUS_ENTRY") {
        entries.retain(|e| e.name == only);
        assert!(
            !entries.is_empty(),
            "FITACT_CORPUS_ENTRY={only}: no such entry in corpus.json"
        );
    }
    let next = AtomicUsize::new(0);
    let failed: Mutex<Vec<(usize, Failures)>> = Mutex::new(Vec::new());
    // Two workers: the entries are independent, and each step is a process of its own.
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    let Some(e) = entries.get(index) else { break };
                    let failures = check_entry(e);
                    if !failures.is_empty() {
                        failed.lock().unwrap().push((index, failures));
                    }
                }
            });
        }
    });
    let mut failed = failed.into_inner().unwrap();
    failed.sort_by_key(|(index, _)| *index);
    let mut lines = Vec::new();
    for (index, failures) in &failed {
        lines.extend(describe(&entries[*index].name, failures));
    }
    assert!(
        failed.is_empty(),
        "{} of {} exporter corpus entries failed:\n{}",
        failed.len(),
        entries.len(),
        lines.join("\n")
    );
}

#[test]
fn every_file_corpus_json_names_exists() {
    // A corpus.json edited by hand (a renamed file) fails here, not as a tool failure.
    for e in corpus() {
        for file in [Some(&e.model), Some(&e.data), e.labels.as_ref()].into_iter().flatten() {
            assert!(file.exists(), "{}: {} is missing", e.name, file.display());
        }
    }
}
