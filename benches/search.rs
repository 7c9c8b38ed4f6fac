//! Time to harden with `--search` on the ResNet-style fixture, as a multiple of one plain
//! tract inference pass over the same samples (target: under 30x).
//!
//! Samples: 1,000 images (the 512 of fixtures/calib.npy and the first 488 of
//! fixtures/test.npy; the search fits on three quarters of them and checks on 512). Both
//! timings in this run, in one thread: plain = load, optimize and run every sample once, at
//! whichever of batch 8, 16 and 64 is fastest (the baseline is the best plain pass, not a
//! slow one); search = the whole `harden` with `--search` at harden's default batch (8):
//! calibration, bisection, refinement, writing the model.
//!
//! Run: `cargo bench --bench search` (about a minute).

mod common;

use common::{fixtures_dir, ms, time};
use fitact_onnx::dataset::load_samples;
use fitact_onnx::harden::{HardenOptions, SearchSettings, harden};
use fitact_onnx::method::Method;
use fitact_onnx::model_io::read_model;
use fitact_onnx::runtime::{Outputs, Runner, model_input_names};
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
    let loaded = load_samples(&data, &model_input_names(&model)).unwrap();
    let plain_at = |batch: usize| {
        time(|| {
            let runner = Runner::new(&model, &loaded.sample_shapes(), Outputs::Model).unwrap();
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
        input: model_path,
        output: dir.path().join("searched.onnx"),
        calib: data,
        images: Default::default(),
        activations: vec![fitact_passes::activations::ActivationKind::Relu],
        method: Method::Fitact,
        granularity: None,
        mode: None,
        margin: 0.001,
        batch_size: 8,
        report: None,
        progress: false,
        in_place: false,
        search: Some(SearchSettings {
            budget: 0.005,
            objective: fitact_onnx::search::Objective::Tight,
            labels: None,
            max_evals: None,
            time_limit: None,
            percentile: None,
        }),
    };
    let (searched, report) = time(|| harden(&options).unwrap());
    let log = report.search.expect("search ran");
    println!(
        "resnet, {} samples: plain inference pass {} (batch {plain_batch}, the fastest of 8, 16, 64)",
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
        "search time / plain inference pass: {:.1}x (target < 30x)",
        searched / plain
    );
}
