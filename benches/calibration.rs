//! Calibration cost versus one plain inference pass, in each engine, on the fixtures.
//!
//! For each fixture (fixtures/{alexnet,vgg,resnet,mobilenetv3}.onnx, `FITACT_BENCH_MODELS`),
//! the 512 samples of fixtures/calib.npy and each engine (onnxruntime when its library is
//! found, and tract; `FITACT_BENCH_ENGINES`), at batch 8 (`FITACT_BENCH_BATCH`, harden's
//! default), it times:
//!
//! * plain: load the model in the engine and run every sample once (`Outputs::Model`);
//! * calibrate: `fitact_onnx::harden::calibrate::calibrate` of every activation `--activations all`
//!   bounds (it loads its own session, with the activations as extra outputs, and folds the
//!   per-neuron maxima and minima as batches come out).
//!
//! One warm-up of each, then `FITACT_BENCH_REPS` (default 7) alternating repetitions; medians.
//! Prints calibrate / plain (target: at most 1.3x in onnxruntime) and, per fixture, tract's
//! plain time over onnxruntime's.
//!
//! Run: `cargo bench --bench calibration` (about a minute).

mod common;

use common::{engines, env_usize, median, ms, time};
use fitact_onnx::data::dataset::{Samples, load_samples};
use fitact_onnx::engine::{Engine, Outputs};
use fitact_onnx::harden::calibrate::{CalibrateOptions, calibrate};
use fitact_onnx::model_io::read_model;
use fitact_passes::activations::{ActivationKind, find_kinds};
use fitact_passes::onnx::ModelProto;

/// Loads `model` and runs every sample once.
fn plain_pass(engine: &Engine, model: &ModelProto, samples: &Samples, batch: usize) {
    let session = engine
        .load(model, &samples.sample_shapes(), batch, Outputs::Model)
        .expect("load");
    let batch = session.batch_size(batch);
    for start in (0..samples.count).step_by(batch) {
        let end = (start + batch).min(samples.count);
        session.run(samples.slice(start, end)).expect("run");
    }
}

fn main() {
    let reps = env_usize("FITACT_BENCH_REPS", 7);
    let batch = env_usize("FITACT_BENCH_BATCH", 8);
    if std::env::var("FITACT_BENCH_MODELS").is_err() {
        // SAFETY: single-threaded at this point; `common::models` reads it.
        unsafe { std::env::set_var("FITACT_BENCH_MODELS", "alexnet,vgg,resnet,mobilenetv3") };
    }
    let engines = engines();
    println!("# calibration vs one plain pass: calib.npy, batch {batch}, {reps} reps, medians, 1 thread");
    for (name, path) in common::models() {
        let model = read_model(&path).unwrap().model;
        let samples = load_samples(&common::fixtures_dir().join("calib.npy"), &model).unwrap();
        let sites = find_kinds(&model, &ActivationKind::ALL);
        let mut plain_of = Vec::new();
        for engine in &engines {
            let options = CalibrateOptions {
                engine: engine.clone(),
                batch_size: batch,
                progress: false,
                top: 0,
            };
            plain_pass(engine, &model, &samples, batch);
            calibrate(&model, &samples, &sites, &options).unwrap();
            let (mut plain, mut calibrated) = (Vec::new(), Vec::new());
            for _ in 0..reps {
                plain.push(time(|| plain_pass(engine, &model, &samples, batch)).0);
                calibrated.push(time(|| calibrate(&model, &samples, &sites, &options).unwrap()).0);
            }
            let (p, c) = (median(&plain), median(&calibrated));
            println!(
                "{name:<12} {:<12} {} activations: plain {:>10}, calibrate {:>10}: calibrate / plain {:.2}x",
                engine.kind().to_string(),
                sites.len(),
                ms(p),
                ms(c),
                c / p
            );
            println!("RESULT calibration {name} engine={} ratio={:.3}", engine.kind(), c / p);
            plain_of.push((engine.kind(), p));
        }
        if let [(a, pa), (b, pb)] = plain_of[..] {
            println!("{name:<12} plain pass {b} / {a}: {:.2}x", pb / pa);
        }
    }
}
