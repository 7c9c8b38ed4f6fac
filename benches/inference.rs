//! Inference overhead of hardened models in tract, on the fixture CNNs.
//!
//! For each fixture (fixtures/{alexnet,vgg,resnet}.onnx) it writes four hardened variants to a
//! temporary directory with the library (`fitact_onnx::harden::harden`, calibrated on
//! fixtures/calib.npy): fitact/channel, fitact/neuron, clipact/layer, ranger/layer. It checks
//! that each variant gives the original's logits on the calibration samples (clean data must
//! not be changed), then times tract inference (a tract `Session` with `Outputs::Model`, load and
//! optimize outside the timing):
//!
//! * batch 64 (`FITACT_BENCH_BATCH`) over the 512 calibration samples;
//! * batch 1 over the first 128 (`FITACT_BENCH_SINGLES`) of them.
//!
//! One warm-up, then `FITACT_BENCH_REPS` (default 7) repetitions, the variants alternating
//! inside each repetition; medians. Prints each variant's time over the original's.
//!
//! `FITACT_BENCH_EXTRA_DIR=DIR` adds every `DIR/{model}.*.onnx` as a further variant (e.g. the
//! alternative emissions written by benches/emission_variants.py).
//!
//! Run: `cargo bench --bench inference` (about 1 to 3 minutes for the three fixtures).

mod common;

use common::{env_usize, median, ms, time};
use fitact_onnx::data::dataset::{Samples, load_samples};
use fitact_onnx::engine::{Engine, Outputs, Session};
use fitact_onnx::harden::bounds::Granularity;
use fitact_onnx::harden::method::Method;
use fitact_onnx::harden::{HardenOptions, harden};
use fitact_onnx::model_io::read_model;
use std::path::{Path, PathBuf};

/// (label, method, granularity override)
const VARIANTS: [(&str, Method, Option<Granularity>); 4] = [
    ("fitact/channel", Method::Fitact, Some(Granularity::Channel)),
    ("fitact/neuron", Method::Fitact, Some(Granularity::Neuron)),
    ("clipact/layer", Method::Clipact, Some(Granularity::Layer)),
    ("ranger/layer", Method::Ranger, Some(Granularity::Layer)),
];

fn harden_variant(input: &Path, output: PathBuf, calib: &Path, method: Method, g: Option<Granularity>) -> PathBuf {
    harden(&HardenOptions {
        engine: Engine::tract(),
        input: input.to_owned(),
        output: output.clone(),
        calib: calib.to_owned(),
        images: Default::default(),
        data_cap: Default::default(),
        activations: Some(vec![fitact_passes::activations::ActivationKind::Relu]),
        method,
        granularity: g,
        mode: None,
        emission: fitact_onnx::harden::method::EmissionName::FoldThreshold,
        margin: 0.001,
        batch_size: 64,
        report: None,
        progress: false,
        search: None,
        in_place: false,
        bounds_in: None,
        bounds_out: None,
        unreached: Default::default(),
        budget: None,
    })
    .unwrap_or_else(|e| panic!("hardening {} as {method}: {e:#}", input.display()));
    output
}

/// Runs samples [0, count) in batches of `batch`; returns the first output of every batch
/// concatenated (the logits) when `keep`.
fn run_all(runner: &Session, samples: &Samples, count: usize, batch: usize, keep: bool) -> Vec<f32> {
    let mut logits = Vec::new();
    for start in (0..count).step_by(batch) {
        let end = (start + batch).min(count);
        let (outputs, _) = runner.run(samples.slice(start, end)).expect("tract run");
        if keep {
            let view = outputs[0].view::<f32>().expect("float logits");
            logits.extend(view.iter().copied());
        }
    }
    logits
}

fn main() {
    let batch = env_usize("FITACT_BENCH_BATCH", 64);
    let reps = env_usize("FITACT_BENCH_REPS", 7);
    let dir = tempfile::tempdir().expect("temp dir");
    let calib = common::fixtures_dir().join("calib.npy");
    println!("# tract inference, hardened / original: {reps} reps, medians");
    let mut rows = Vec::new();
    for (name, path) in common::models() {
        let model = read_model(&path).expect("read model").model;
        let samples = load_samples(&calib, &model).expect("calib.npy");
        let singles = env_usize("FITACT_BENCH_SINGLES", 128).min(samples.count);
        let shapes = samples.sample_shapes();

        let mut runners = vec![(
            "original".to_owned(),
            Engine::tract()
                .load(&model, &shapes, batch, Outputs::Model)
                .expect("runner"),
        )];
        for (label, method, g) in VARIANTS {
            let out = dir.path().join(format!("{name}.{}.onnx", label.replace('/', "-")));
            let hardened = read_model(&harden_variant(&path, out, &calib, method, g))
                .expect("read hardened")
                .model;
            runners.push((
                label.to_owned(),
                Engine::tract()
                    .load(&hardened, &shapes, batch, Outputs::Model)
                    .expect("hardened runner"),
            ));
        }

        if let Some(extra) = std::env::var_os("FITACT_BENCH_EXTRA_DIR") {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&extra)
                .expect("FITACT_BENCH_EXTRA_DIR")
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    let f = p.file_name().unwrap().to_string_lossy();
                    f.starts_with(&format!("{name}.")) && f.ends_with(".onnx")
                })
                .collect();
            files.sort();
            for file in files {
                let stem = file.file_stem().unwrap().to_string_lossy();
                let label = stem[name.len() + 1..].to_owned();
                let extra_model = read_model(&file).expect("read extra model").model;
                runners.push((
                    label,
                    Engine::tract()
                        .load(&extra_model, &shapes, batch, Outputs::Model)
                        .expect("extra runner"),
                ));
            }
        }

        // Warm-up, and clean data must be unchanged by the bounds.
        let reference = run_all(&runners[0].1, &samples, samples.count, batch, true);
        for (label, runner) in &runners[1..] {
            let logits = run_all(runner, &samples, samples.count, batch, true);
            let diff = reference
                .iter()
                .zip(&logits)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            println!("## {name} {label}: max |logit - original| on calib = {diff:e}");
        }

        for (batch_label, count, b) in [("batch 64", samples.count, batch), ("batch 1", singles, 1)] {
            let mut times = vec![Vec::new(); runners.len()];
            for rep in 0..reps {
                // Rotate the starting variant so no variant always runs first.
                for k in 0..runners.len() {
                    let i = (k + rep) % runners.len();
                    times[i].push(time(|| run_all(&runners[i].1, &samples, count, b, false)).0);
                }
            }
            let base = median(&times[0]);
            println!(
                "{name} {batch_label} ({count} samples, batch size {b}): original {} ({:.3} ms/sample)",
                ms(base),
                base * 1e3 / count as f64
            );
            for (i, (label, _)) in runners.iter().enumerate().skip(1) {
                let t = median(&times[i]);
                println!("  {label:<15} {:>10}  x{:.3}", ms(t), t / base);
                rows.push((name.clone(), batch_label, label.clone(), t / base));
            }
        }
    }
    println!();
    for (name, batch_label, label, ratio) in &rows {
        println!(
            "RESULT inference {name} {} {label} ratio={ratio:.3}",
            batch_label.replace(' ', "")
        );
    }
}
