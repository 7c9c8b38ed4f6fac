//! Time to harden with `--search` on the ResNet-style fixture, as a multiple of one plain
//! tract inference pass over the same samples (target: under 30x).
//!
//! Samples: 1,000 images (the 512 of fixtures/calib.npy and the first 488 of
//! fixtures/test.npy; the search holds out a quarter of them). Both timings in this run, in
//! one thread: plain = load, optimize and run every sample once at batch 64; search = the
//! whole `harden` with `--search` (calibration, bisection, refinement, writing the model).
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
    let (plain, _) = time(|| {
        let runner = Runner::new(&model, &loaded.sample_shapes(), Outputs::Model).unwrap();
        for start in (0..loaded.count).step_by(64) {
            runner.run(loaded.slice(start, (start + 64).min(loaded.count))).unwrap();
        }
    });
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
        batch_size: 64,
        report: None,
        progress: false,
        in_place: false,
        search: Some(SearchSettings {
            budget: 0.005,
            objective: fitact_onnx::search::Objective::Tight,
            labels: None,
            max_evals: None,
            time_limit: None,
        }),
    };
    let (searched, report) = time(|| harden(&options).unwrap());
    let log = report.search.expect("search ran");
    println!("resnet, {} samples: plain inference pass {}", loaded.count, ms(plain));
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
