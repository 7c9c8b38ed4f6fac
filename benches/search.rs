//! Time to harden with `--search` on the ResNet-style fixture, as a multiple of one plain
//! inference pass over the same samples in the same engine (targets: at most 10x in
//! onnxruntime; tract's figure beside it, for users without onnxruntime).
//!
//! Samples: 1,000 images (the 512 of fixtures/calib.npy and the first 488 of
//! fixtures/test.npy; the search fits on three quarters of them and checks on 512). Both
//! timings in this run, in one thread: plain = load, optimize and run every sample once, at
//! whichever of batch 8, 16 and 64 is fastest (the baseline is the best plain pass, not a
//! slow one); search = the whole `harden` with `--search` at harden's default batch (8):
//! calibration, bisection, refinement, writing the model.
//!
//! Each engine of `common::engines` (onnxruntime when found, tract) in turn.
//!
//! Run: `cargo bench --bench search` (about a minute).

mod common;

use common::{engines, fixtures_dir, ms, time};
use fitact_onnx::data::dataset::load_samples;
use fitact_onnx::engine::{Engine, Outputs};
use fitact_onnx::harden::method::Method;
use fitact_onnx::harden::{HardenOptions, SearchSettings, harden};
use fitact_onnx::model_io::read_model;
use ndarray::{Axis, concatenate};

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let model_path = fixtures_dir().join("resnet.onnx");
    let calib: ndarray::ArrayD<f32> = ndarray_npy::read_npy(fixtures_dir().join("calib.npy")).unwrap();
    let test: ndarray::ArrayD<f32> = ndarray_npy::read_npy(fixtures_dir().join("test.npy")).unwrap();
    let samples = concatenate(Axis(0), &[calib.view(), test.slice_axis(Axis(0), (0..488).into())]).unwrap();
    let data = dir.path().join("samples.npy");
    ndarray_npy::write_npy(&data, &samples).unwrap();

    let model = read_model(&model_path).unwrap().model;
    let loaded = load_samples(&data, &model).unwrap();
    for engine in engines() {
        bench(&engine, &model, &model_path, &data, &loaded, dir.path());
    }
}

fn bench(
    engine: &Engine,
    model: &fitact_passes::onnx::ModelProto,
    model_path: &std::path::Path,
    data: &std::path::Path,
    loaded: &fitact_onnx::data::dataset::Samples,
    dir: &std::path::Path,
) {
    let plain_at = |batch: usize| {
        time(|| {
            let runner = engine
                .load(model, &loaded.sample_shapes(), batch, Outputs::Model)
                .unwrap();
            for start in (0..loaded.count).step_by(batch) {
                runner
                    .run(loaded.slice(start, (start + batch).min(loaded.count)))
                    .unwrap();
            }
        })
        .0
    };
    let (plain, plain_batch) = [8, 16, 64]
        .into_iter()
        .map(|batch| (plain_at(batch), batch))
        .fold((f64::INFINITY, 0), |best, run| if run.0 < best.0 { run } else { best });
    let options = HardenOptions {
        engine: engine.clone(),
        input: model_path.to_owned(),
        output: dir.join("searched.onnx"),
        calib: data.to_owned(),
        images: Default::default(),
        data_cap: Default::default(),
        activations: Some(vec![fitact_passes::activations::ActivationKind::Relu]),
        method: Method::Fitact,
        granularity: None,
        mode: None,
        emission: fitact_onnx::harden::method::EmissionName::FoldThreshold,
        margin: 0.001,
        batch_size: 8,
        report: None,
        progress: false,
        in_place: false,
        bounds_in: None,
        bounds_out: None,
        unreached: Default::default(),
        budget: None,
        search: Some(SearchSettings {
            budget: 0.005,
            objective: fitact_onnx::search::Objective::Tight,
            labels: None,
            max_evals: None,
            time_limit: None,
            percentile: None,
            output: None,
            sdc: fitact_onnx::replay::judge::SdcRule::Auto,
            sdc_tolerance: fitact_onnx::replay::judge::DEFAULT_TOLERANCE,
        }),
    };
    let (searched, report) = time(|| harden(&options).unwrap());
    let log = report.search.expect("search ran");
    println!(
        "{}: resnet, {} samples: plain inference pass {} (batch {plain_batch}, the fastest of 8, 16, 64)",
        engine.describe(),
        loaded.count,
        ms(plain)
    );
    println!(
        "harden --search {} ({} evaluations, bounds at {:.1}% of the maxima, held-out agreement {:.2}%)",
        ms(searched),
        log.evaluations,
        100.0 * log.mean_bound_ratio,
        100.0 * log.final_metric
    );
    println!(
        "{}: search time / plain inference pass: {:.1}x (target: at most 10x in onnxruntime)",
        engine.kind(),
        searched / plain
    );
}
