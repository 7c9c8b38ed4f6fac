//! Calibration cost versus plain inference, through tract, on the fixture CNNs.
//!
//! For each fixture (fixtures/{alexnet,vgg,resnet}.onnx) and the 512 samples of
//! fixtures/calib.npy, at batch 64 (`FITACT_BENCH_BATCH`), it times:
//!
//! * plain:     `Runner::new(.., Outputs::Model)` (load + optimize) and running every batch;
//! * calibrate: `fitact_onnx::calibrate::calibrate` of every Relu output (it builds its own
//!   runner, so load + optimize are inside);
//! * split:     what calibrate does, in parts: `Runner::new(.., Outputs::Tensors(relus))`,
//!   running every batch with the Relu outputs exposed (no max fold), and the max fold alone
//!   (the loop of src/calibrate.rs, reproduced here, and the same fold written to vectorize)
//!   on the outputs of one pass.
//!
//! With `FITACT_BENCH_DIAG=1` it also times two candidate fixes: the maxima reduced inside
//! the graph (a `ReduceMax` over the batch axis per Relu, as onnxruntime's calibrator does, so
//! tract returns [C,H,W] per batch instead of [N,C,H,W]), and plain inference with the batch
//! fixed in the model (concrete shapes for tract). `FITACT_BENCH_PLAN=1` prints both optimized
//! tract plans; `FITACT_BENCH_ONLY=plain|exposed|calibrate` loops one side only (for perf);
//! `FITACT_BENCH_SWEEP=1,8,64` times plain inference and calibrate at each batch size instead.
//!
//! One warm-up of each, then `FITACT_BENCH_REPS` (default 7) alternating repetitions; medians.
//! The headline is the throughput of calibrate relative to plain inference, both including
//! model load + optimize (target >= 0.9x), and the same without them.
//!
//! Run: `cargo bench --bench calibration` (about 1 to 2 minutes for the three fixtures).

mod common;

use common::{env_usize, median, ms, time};
use fitact_onnx::calibrate::{CalibrateOptions, calibrate};
use fitact_onnx::dataset::{Samples, load_samples};
use fitact_onnx::model_io::{encode, read_model};
use fitact_onnx::runtime::{Outputs, Runner, model_input_names};
use fitact_passes::activations::find_relus;
use fitact_passes::onnx::ModelProto;
use ndarray::{ArrayD, Axis, Zip};
use tract_onnx::prelude::*;

/// Runs every sample through `runner`, batch by batch, keeping nothing.
fn run_all(runner: &Runner, samples: &Samples, batch: usize) -> usize {
    let mut rows = 0;
    for start in (0..samples.count).step_by(batch) {
        let end = (start + batch).min(samples.count);
        let (outputs, valid) = runner.run(samples.slice(start, end)).expect("tract run");
        rows += valid;
        drop(outputs);
    }
    rows
}

/// Runs every batch with the Relu outputs exposed and keeps the outputs (for the fold timing).
fn collect_all(runner: &Runner, samples: &Samples, batch: usize) -> Vec<(TVec<TValue>, usize)> {
    (0..samples.count)
        .step_by(batch)
        .map(|start| {
            let end = (start + batch).min(samples.count);
            runner.run(samples.slice(start, end)).expect("tract run")
        })
        .collect()
}

/// The per-neuron max fold src/calibrate.rs had before it was vectorized (a Zip per sample
/// row, with the NaN/Inf count inside the closure), kept as a reference point.
fn fold_with_zip(outputs: &[(TVec<TValue>, usize)], maxima: &mut [ArrayD<f32>]) -> usize {
    let mut nonfinite = 0;
    for (values, valid) in outputs {
        for (acc, value) in maxima.iter_mut().zip(values) {
            let view = value.to_plain_array_view::<f32>().unwrap();
            for row in view.axis_iter(Axis(0)).take(*valid) {
                Zip::from(&mut *acc).and(&row).for_each(|m, &v| {
                    if v > *m {
                        *m = v;
                    }
                    if !v.is_finite() {
                        nonfinite += 1;
                    }
                });
            }
        }
    }
    nonfinite
}

/// The fold of src/calibrate.rs (`fold_max`), over the collected outputs: on the contiguous
/// slices tract returns, a select instead of a branch for the max (a NaN never replaces the
/// max), and the NaN/Inf count as an integer sum of an exponent-bits test.
fn fold_as_in_library(outputs: &[(TVec<TValue>, usize)], maxima: &mut [ArrayD<f32>]) -> usize {
    let mut nonfinite = 0;
    for (values, valid) in outputs {
        for (acc, value) in maxima.iter_mut().zip(values) {
            let view = value.to_plain_array_view::<f32>().unwrap();
            let data = view.as_slice().expect("tract outputs are contiguous");
            let per = acc.len();
            let acc = acc.as_slice_mut().unwrap();
            for row in data.chunks_exact(per).take(*valid) {
                let mut bad = 0u32;
                for (m, &v) in acc.iter_mut().zip(row) {
                    *m = if v > *m { v } else { *m };
                    bad += u32::from(v.to_bits() & 0x7f80_0000 == 0x7f80_0000);
                }
                nonfinite += bad as usize;
            }
        }
    }
    nonfinite
}

/// The optimized tract model as `Runner::new` builds it (same calls), with the model outputs
/// or the given tensors as outputs, to compare what tract fuses in each case.
fn optimized(model: &ModelProto, exposed: Option<&[String]>) -> TypedModel {
    let bytes = encode(model);
    let mut inference = tract_onnx::onnx()
        .with_ignore_output_shapes(true)
        .with_ignore_value_info(true)
        .model_for_read(&mut &bytes[..])
        .unwrap();
    let n = inference.sym("N");
    inference
        .set_input_fact(0, f32::fact([n.to_dim(), 1.to_dim(), 28.to_dim(), 28.to_dim()]).into())
        .unwrap();
    if let Some(names) = exposed {
        let outlets: Vec<OutletId> = names.iter().map(|n| inference.find_outlet_label(n).unwrap()).collect();
        inference.select_output_outlets(&outlets).unwrap();
    }
    inference.into_optimized().unwrap()
}

/// "op name" per node of an optimized model, in evaluation order (sources and consts skipped).
fn plan_ops(model: &TypedModel) -> Vec<String> {
    model
        .eval_order()
        .unwrap()
        .into_iter()
        .map(|i| model.node(i))
        .filter(|n| !matches!(n.op.name().as_ref(), "Source" | "Const"))
        .map(|n| format!("{} ({})", n.op.name(), n.name))
        .collect()
}

/// A copy of `model` where each tensor of `relus` also feeds `ReduceMax(axes=[0],
/// keepdims=0)` (and, with `with_sum`, a `ReduceSum` that a NaN or Inf would make non-finite),
/// the way onnxruntime's calibrator augments graphs: tract then returns one per-neuron max
/// per batch instead of the whole activation. Returns the model and the outputs to expose.
/// (Opset 13 fixtures: `axes` is an attribute of both ops until opset 18 / 13.)
fn with_batch_reductions(model: &ModelProto, relus: &[String], with_sum: bool) -> (ModelProto, Vec<String>) {
    use fitact_passes::onnx::{AttributeProto, NodeProto, attribute_proto::AttributeType};
    let mut model = model.clone();
    let graph = model.graph.as_mut().unwrap();
    let mut outputs = Vec::new();
    for t in relus {
        let mut ops = vec![("ReduceMax", format!("{t}/bench/max"))];
        if with_sum {
            ops.push(("ReduceSum", format!("{t}/bench/sum")));
        }
        for (op, out) in ops {
            let mut attribute = vec![AttributeProto {
                name: Some("keepdims".into()),
                r#type: Some(AttributeType::Int as i32),
                i: Some(0),
                ..Default::default()
            }];
            let mut inputs = vec![t.clone()];
            if op == "ReduceMax" {
                attribute.push(AttributeProto {
                    name: Some("axes".into()),
                    r#type: Some(AttributeType::Ints as i32),
                    ints: vec![0],
                    ..Default::default()
                });
            } else {
                // ReduceSum takes axes as an input from opset 13.
                let axes = format!("{t}/bench/axes");
                graph.initializer.push(fitact_passes::onnx::TensorProto {
                    name: Some(axes.clone()),
                    dims: vec![1],
                    data_type: Some(7), // INT64
                    int64_data: vec![0],
                    ..Default::default()
                });
                inputs.push(axes);
            }
            graph.node.push(NodeProto {
                name: Some(out.clone()),
                op_type: Some(op.into()),
                input: inputs,
                output: vec![out.clone()],
                attribute,
                ..Default::default()
            });
            outputs.push(out);
        }
    }
    (model, outputs)
}

/// Folds the per-batch reductions into per-neuron maxima (every other output is a sum when
/// `with_sum`); returns how many sums were non-finite.
fn fold_reduced(outputs: &TVec<TValue>, maxima: &mut [ArrayD<f32>], with_sum: bool) -> usize {
    let step = if with_sum { 2 } else { 1 };
    let mut nonfinite = 0;
    for (k, acc) in maxima.iter_mut().enumerate() {
        let max = outputs[k * step].to_plain_array_view::<f32>().unwrap();
        Zip::from(&mut *acc).and(&max).for_each(|m, &v| *m = m.max(v));
        if with_sum {
            let sum = outputs[k * step + 1].to_plain_array_view::<f32>().unwrap();
            nonfinite += sum.iter().filter(|v| !v.is_finite()).count();
        }
    }
    nonfinite
}

fn run_reduced(runner: &Runner, samples: &Samples, batch: usize, maxima: &mut [ArrayD<f32>], with_sum: bool) {
    for start in (0..samples.count).step_by(batch) {
        let end = (start + batch).min(samples.count);
        let (outputs, _) = runner.run(samples.slice(start, end)).expect("tract run");
        fold_reduced(&outputs, maxima, with_sum);
    }
}

/// A copy of `model` whose first input declares a fixed batch of `batch`, so `Runner` gives
/// tract concrete shapes (a short last batch is then padded by `Runner::run`).
fn with_fixed_batch(model: &ModelProto, batch: usize) -> ModelProto {
    use fitact_passes::onnx::{tensor_shape_proto::dimension::Value, type_proto};
    let mut model = model.clone();
    let input = &mut model.graph.as_mut().unwrap().input[0];
    if let Some(type_proto::Value::TensorType(t)) = input.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        t.shape.as_mut().unwrap().dim[0].value = Some(Value::DimValue(batch as i64));
    }
    model
}

struct Times {
    plain_build: Vec<f64>,
    plain_run: Vec<f64>,
    calibrate: Vec<f64>,
    tensors_build: Vec<f64>,
    tensors_run: Vec<f64>,
    fold_library: Vec<f64>,
    fold_slices: Vec<f64>,
    reduced: Vec<f64>,
    reduced_sum: Vec<f64>,
    fixed_run: Vec<f64>,
}

fn main() {
    let batch = env_usize("FITACT_BENCH_BATCH", 64);
    let reps = env_usize("FITACT_BENCH_REPS", 7);
    let calib = common::fixtures_dir().join("calib.npy");
    // FITACT_BENCH_DIAG=1 also times fix candidates (in-graph batch reduction, fixed batch).
    let diag = std::env::var_os("FITACT_BENCH_DIAG").is_some();
    println!("# calibration vs plain tract inference: calib.npy, batch {batch}, {reps} reps, medians");
    let mut summary = Vec::new();
    for (name, path) in common::models() {
        let model = read_model(&path).expect("read model").model;
        let samples = load_samples(&calib, &model_input_names(&model)).expect("calib.npy");
        let sites = find_relus(&model);
        let relus: Vec<String> = sites.iter().map(|s| s.output.clone()).collect();
        let shapes = samples.sample_shapes();
        let options = CalibrateOptions {
            batch_size: batch,
            progress: false,
            top: 0,
        };

        // Warm-up (page cache, allocator, CPU frequency) and the shape of the work.
        let plain = Runner::new(&model, &shapes, Outputs::Model).expect("plain runner");
        run_all(&plain, &samples, batch);
        let calibration = calibrate(&model, &samples, &sites, &options).expect("calibrate");
        let exposed = Runner::new(&model, &shapes, Outputs::Tensors(&relus)).expect("runner");
        let outputs = collect_all(&exposed, &samples, batch);
        let elements: usize = calibration.activations.iter().map(|a| a.neuron_max.len()).sum();
        let fresh = || -> Vec<ArrayD<f32>> {
            calibration
                .activations
                .iter()
                .map(|a| ArrayD::from_elem(a.neuron_max.shape(), f32::NEG_INFINITY))
                .collect()
        };
        // The two folds must agree with calibrate (and each other).
        let mut a = fresh();
        let mut b = fresh();
        assert_eq!(fold_with_zip(&outputs, &mut a), fold_as_in_library(&outputs, &mut b));
        for ((x, y), z) in a.iter().zip(&b).zip(&calibration.activations) {
            assert_eq!(x, y);
            assert_eq!(x, &z.neuron_max);
        }
        println!(
            "## {name}: {} Relus, {} activation values per sample ({:.1} M per pass over {} samples)",
            relus.len(),
            elements,
            (elements * samples.count) as f64 / 1e6,
            samples.count
        );

        // Profiling aid: FITACT_BENCH_ONLY=plain|exposed|calibrate loops one side only
        // (e.g. under `perf record` / `perf stat`), FITACT_BENCH_REPS times.
        if let Ok(only) = std::env::var("FITACT_BENCH_ONLY") {
            let outputs = match only.as_str() {
                "plain" => Outputs::Model,
                _ => Outputs::Tensors(&relus),
            };
            let runner = Runner::new(&model, &shapes, outputs).unwrap();
            let mut times = vec![];
            for _ in 0..reps {
                times.push(if only == "calibrate" {
                    time(|| calibrate(&model, &samples, &sites, &options).unwrap()).0
                } else {
                    time(|| run_all(&runner, &samples, batch)).0
                });
            }
            println!("{name} {only}: median {}", ms(median(&times)));
            continue;
        }
        // FITACT_BENCH_SWEEP=1,4,16,64: plain inference and calibrate per batch size, alternating.
        if let Ok(sweep) = std::env::var("FITACT_BENCH_SWEEP") {
            let sizes: Vec<usize> = sweep.split(',').filter_map(|b| b.trim().parse().ok()).collect();
            let runner = Runner::new(&model, &shapes, Outputs::Model).unwrap();
            let mut plain_t = vec![vec![]; sizes.len()];
            let mut cal_t = vec![vec![]; sizes.len()];
            for rep in 0..=reps {
                for (i, &b) in sizes.iter().enumerate() {
                    let o = CalibrateOptions {
                        batch_size: b,
                        progress: false,
                        top: 0,
                    };
                    let p = time(|| run_all(&runner, &samples, b)).0;
                    let c = time(|| calibrate(&model, &samples, &sites, &o).unwrap()).0;
                    if rep > 0 {
                        plain_t[i].push(p);
                        cal_t[i].push(c);
                    }
                }
            }
            for (i, b) in sizes.iter().enumerate() {
                let (p, c) = (median(&plain_t[i]), median(&cal_t[i]));
                println!(
                    "{name} batch {b:>3}: plain {:>10} ({:.3} ms/sample)   calibrate {:>10} ({:.3} ms/sample)   throughput ratio {:.2}x",
                    ms(p),
                    p * 1e3 / samples.count as f64,
                    ms(c),
                    c * 1e3 / samples.count as f64,
                    p / c
                );
            }
            continue;
        }
        let plain_plan = plan_ops(&optimized(&model, None));
        let exposed_plan = plan_ops(&optimized(&model, Some(&relus)));
        println!(
            "optimized tract plan: {} ops plain, {} ops with the Relus exposed",
            plain_plan.len(),
            exposed_plan.len()
        );
        if std::env::var_os("FITACT_BENCH_PLAN").is_some() {
            println!("plain plan:\n  {}", plain_plan.join("\n  "));
            println!("exposed plan:\n  {}", exposed_plan.join("\n  "));
        }

        let mut t = Times {
            plain_build: vec![],
            plain_run: vec![],
            calibrate: vec![],
            tensors_build: vec![],
            tensors_run: vec![],
            fold_library: vec![],
            fold_slices: vec![],
            reduced: vec![],
            reduced_sum: vec![],
            fixed_run: vec![],
        };
        let fixed_model = with_fixed_batch(&model, batch);
        let fixed = Runner::new(&fixed_model, &shapes, Outputs::Model).unwrap();
        run_all(&fixed, &samples, batch);
        // The in-graph alternative: check it gives calibrate's maxima, then time it whole
        // (load + optimize + runs + fold), like calibrate.
        let reduced_models: Vec<(ModelProto, Vec<String>)> = [false, true]
            .iter()
            .map(|with_sum| with_batch_reductions(&model, &relus, *with_sum))
            .collect();
        let reduced_calibrate = |k: usize| -> Vec<ArrayD<f32>> {
            let (m, outs) = &reduced_models[k];
            let runner = Runner::new(m, &shapes, Outputs::Tensors(outs)).unwrap();
            let mut maxima = fresh();
            run_reduced(&runner, &samples, batch, &mut maxima, k == 1);
            maxima
        };
        for k in 0..2 {
            for (x, z) in reduced_calibrate(k).iter().zip(&calibration.activations) {
                assert_eq!(x, &z.neuron_max);
            }
        }
        for _ in 0..reps {
            let (s, plain) = time(|| Runner::new(&model, &shapes, Outputs::Model).unwrap());
            t.plain_build.push(s);
            t.plain_run.push(time(|| run_all(&plain, &samples, batch)).0);
            drop(plain);

            t.calibrate
                .push(time(|| calibrate(&model, &samples, &sites, &options).unwrap()).0);

            let (s, exposed) = time(|| Runner::new(&model, &shapes, Outputs::Tensors(&relus)).unwrap());
            t.tensors_build.push(s);
            t.tensors_run.push(time(|| run_all(&exposed, &samples, batch)).0);
            drop(exposed);

            let mut m = fresh();
            t.fold_library.push(time(|| fold_with_zip(&outputs, &mut m)).0);
            let mut m = fresh();
            t.fold_slices.push(time(|| fold_as_in_library(&outputs, &mut m)).0);
            if diag {
                t.fixed_run.push(time(|| run_all(&fixed, &samples, batch)).0);
                t.reduced.push(time(|| reduced_calibrate(0)).0);
                t.reduced_sum.push(time(|| reduced_calibrate(1)).0);
            }
        }
        let pb = median(&t.plain_build);
        let pr = median(&t.plain_run);
        let cal = median(&t.calibrate);
        let tb = median(&t.tensors_build);
        let tr = median(&t.tensors_run);
        let fl = median(&t.fold_library);
        let fs = median(&t.fold_slices);
        println!(
            "plain      load+optimize {:>10}   run {:>10}   total {:>10}",
            ms(pb),
            ms(pr),
            ms(pb + pr)
        );
        println!("calibrate  total {:>10}", ms(cal));
        println!(
            "  split:   load+optimize {:>10}   run (Relus exposed) {:>10}   max fold {:>10} (src/calibrate.rs; {} with the earlier Zip loop)",
            ms(tb),
            ms(tr),
            ms(fs),
            ms(fl)
        );
        if diag {
            let rd = median(&t.reduced);
            let rs = median(&t.reduced_sum);
            println!(
                "  in-graph ReduceMax over the batch axis instead (fix candidate): total {:>10} ({:.2}x plain), with a ReduceSum for NaN/Inf {:>10} ({:.2}x)",
                ms(rd),
                (pb + pr) / rd,
                ms(rs),
                (pb + pr) / rs
            );
            let fr = median(&t.fixed_run);
            println!(
                "  plain run with the batch fixed to {batch} in the model (concrete shapes in tract): {:>10} ({:.2}x the symbolic-batch run time)",
                ms(fr),
                fr / pr
            );
        }
        let ratio_total = (pb + pr) / cal;
        let ratio_run = pr / (cal - tb);
        println!(
            "throughput calibrate/plain: {ratio_total:.2}x including load+optimize, {ratio_run:.2}x without (target >= 0.9x)"
        );
        println!(
            "  exposing the Relus costs {:+.0}% run time, the fold {:+.0}% of plain run time",
            (tr / pr - 1.0) * 100.0,
            fs / pr * 100.0
        );
        summary.push((name, ratio_total, ratio_run, pb + pr, cal, fl, fs));
    }
    println!();
    println!(
        "| model | plain (load+run) | calibrate | calibrate/plain throughput | without load | max fold (src/calibrate.rs) | earlier Zip fold |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, rt, rr, plain, cal, fl, fs) in &summary {
        println!(
            "| {name} | {} | {} | {rt:.2}x | {rr:.2}x | {} | {} |",
            ms(*plain),
            ms(*cal),
            ms(*fs),
            ms(*fl)
        );
    }
    for (name, rt, rr, ..) in &summary {
        println!("RESULT calibration {name} ratio_total={rt:.3} ratio_run={rr:.3}");
    }
}
