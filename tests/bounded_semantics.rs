//! The rewritten graph computes the bounded activation exactly: for every granularity, mode and
//! opset branch, tract's output on the hardened model equals a reference implementation, on
//! inputs that cross the bounds and include NaN and infinities. The same cases are checked in
//! onnxruntime by `python/semantics.py`.

mod common;

use common::{python, relu_model};
use fitact_onnx::engine::{Engine, Outputs};
use fitact_onnx::model_io::encode;
use fitact_passes::activations::find_relus;
use fitact_passes::bound_activations::{Bound, BoundRequest, Mode, bound_activations};
use fitact_passes::tensor::FLOAT;
use ndarray::{ArrayD, IxDyn};
use ndarray_npy::write_npy;
use proptest::prelude::*;

/// The bounded activation, elementwise, with `b` the bound broadcast to x's position.
fn reference(x: f32, b: f32, mode: Mode) -> f32 {
    match mode {
        Mode::Zero => {
            if x > 0.0 && x <= b {
                x
            } else {
                0.0
            }
        }
        Mode::Saturate => x.max(0.0).min(b),
    }
}

#[derive(Debug, Clone, Copy)]
enum Granularity {
    Layer,
    Channel,
    Neuron,
}

fn bound_dims(sample: &[usize], g: Granularity) -> Vec<i64> {
    match g {
        Granularity::Layer => vec![],
        Granularity::Channel => std::iter::once(sample[0] as i64)
            .chain(std::iter::repeat_n(1, sample.len() - 1))
            .collect(),
        Granularity::Neuron => sample.iter().map(|d| *d as i64).collect(),
    }
}

/// The bound value that applies at flat sample position `i`.
fn bound_at(bound: &Bound, sample: &[usize], i: usize) -> f32 {
    match bound.values.len() {
        1 => bound.values[0],
        n if n == sample.iter().product::<usize>() => bound.values[i],
        _ => bound.values[i / sample[1..].iter().product::<usize>()],
    }
}

struct Case {
    model: fitact_passes::onnx::ModelProto,
    x: ArrayD<f32>,
    expected: ArrayD<f32>,
}

fn build_case(
    sample: Vec<usize>,
    batch: usize,
    opset: i64,
    mode: Mode,
    g: Granularity,
    seeds: &[f32],
    specials: &[f32],
) -> Case {
    let mut model = relu_model(&sample, opset);
    let dims = bound_dims(&sample, g);
    let count: i64 = dims.iter().product();
    let values: Vec<f32> = (0..count as usize)
        .map(|i| (seeds[i % seeds.len()].abs() * 3.0).min(10.0))
        .collect();
    let bound = Bound {
        dims,
        values,
        low: None,
    };
    let site = find_relus(&model).remove(0);
    let report = bound_activations(
        &mut model,
        &[BoundRequest {
            site,
            bound: bound.clone(),
            elem_type: FLOAT,
        }],
        mode,
    )
    .unwrap();
    assert_eq!(report.applied.len(), 1);

    let per_sample: usize = sample.iter().product();
    let mut shape = vec![batch];
    shape.extend(&sample);
    let total = batch * per_sample;
    let xs: Vec<f32> = (0..total)
        .map(|flat| {
            let b = bound_at(&bound, &sample, flat % per_sample);
            // Alternate exact bound values, values just above, far above, negative, and specials.
            match flat % 6 {
                0 => b,
                1 => f32::from_bits(b.to_bits() + 1),
                2 => seeds[flat % seeds.len()] * 8.0,
                3 => -seeds[flat % seeds.len()].abs(),
                4 => specials[flat % specials.len()],
                _ => b * 0.5,
            }
        })
        .collect();
    let want: Vec<f32> = xs
        .iter()
        .enumerate()
        .map(|(flat, x)| reference(*x, bound_at(&bound, &sample, flat % per_sample), mode))
        .collect();
    let x = ArrayD::from_shape_vec(IxDyn(&shape), xs).unwrap();
    let expected = ArrayD::from_shape_vec(IxDyn(&shape), want).unwrap();
    Case { model, x, expected }
}

fn same(a: &ArrayD<f32>, b: &ArrayD<f32>) -> bool {
    a.shape() == b.shape()
        && a.iter()
            .zip(b.iter())
            .all(|(x, y)| x.to_bits() == y.to_bits() || (*x == 0.0 && *y == 0.0))
}

fn run_tract(case: &Case) -> ArrayD<f32> {
    let sample: Vec<usize> = case.x.shape()[1..].to_vec();
    let runner = Engine::tract().load(&case.model, &[sample], 8, Outputs::Model).unwrap();
    let (out, _) = runner.run(vec![case.x.clone().into()]).unwrap();
    out[0].view::<f32>().unwrap().to_owned()
}

fn strategy() -> impl Strategy<Value = (Vec<usize>, usize, i64, Mode, Granularity, Vec<f32>, bool)> {
    (
        prop_oneof![
            (1usize..5).prop_map(|c| vec![c]),
            (1usize..4, 1usize..4, 1usize..4).prop_map(|(c, h, w)| vec![c, h, w]),
        ],
        1usize..4,
        prop::sample::select(vec![9i64, 11, 12, 13, 18]),
        prop_oneof![Just(Mode::Zero), Just(Mode::Saturate)],
        prop_oneof![
            Just(Granularity::Layer),
            Just(Granularity::Channel),
            Just(Granularity::Neuron)
        ],
        prop::collection::vec(-5.0f32..5.0, 1..16),
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn hardened_relu_matches_the_reference_in_tract((sample, batch, opset, mode, g, seeds, zero_bound) in strategy()) {
        let seeds: Vec<f32> = if zero_bound { vec![0.0] } else { seeds };
        // Saturate is min(max(x, 0), B): NaN is not in its contract (Ranger's), infinities are.
        let specials: &[f32] = match mode {
            Mode::Zero => &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0],
            Mode::Saturate => &[f32::INFINITY, f32::NEG_INFINITY],
        };
        let case = build_case(sample, batch, opset, mode, g, &seeds, specials);
        let got = run_tract(&case);
        prop_assert!(same(&got, &case.expected), "x = {:?}\n got {:?}\n want {:?}", case.x, got, case.expected);
    }
}

/// Every opset branch and granularity, NaN and infinities included, in onnxruntime.
#[test]
fn hardened_relu_matches_the_reference_in_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let seeds = [0.7f32, -1.3, 2.2, 0.1, -3.0];
    let mut n = 0;
    for opset in [9i64, 11, 12, 13, 18] {
        for (mode, specials) in [
            (Mode::Zero, &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY][..]),
            (Mode::Saturate, &[f32::INFINITY, f32::NEG_INFINITY][..]),
        ] {
            for g in [Granularity::Layer, Granularity::Channel, Granularity::Neuron] {
                for sample in [vec![3usize], vec![2, 2, 3]] {
                    let case = build_case(sample, 2, opset, mode, g, &seeds, specials);
                    assert!(
                        same(&run_tract(&case), &case.expected),
                        "tract: opset {opset} {mode:?} {g:?}"
                    );
                    let stem = dir.path().join(format!("case{n}"));
                    std::fs::write(stem.with_extension("onnx"), encode(&case.model)).unwrap();
                    write_npy(stem.with_extension("x.npy"), &case.x).unwrap();
                    write_npy(stem.with_extension("want.npy"), &case.expected).unwrap();
                    n += 1;
                }
            }
        }
    }
    let out = python("semantics.py", &[dir.path()]);
    assert!(out.contains(&format!("{n} cases agree")), "{out}");
}
