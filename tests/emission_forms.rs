//! Every `--emission` keeps every guarantee: on random small graphs (Conv -> Relu -> a pool or
//! none -> Conv -> GlobalAveragePool -> Flatten -> Gemm, and a Relu read by a residual Add,
//! which folding must leave per channel) with per-channel bounds, some 0, that many values
//! exceed, and inputs that hold NaN and infinities, the model hardened with each emission gives
//! in tract what the plain emission (the reference bounded activation, `bounded_semantics.rs`)
//! gives, within 1e-4 relative (+1e-5 absolute: each folded weight is rounded once more). The
//! same cases pass the full onnx check and agree in onnxruntime (`python/semantics.py --close`). No
//! `Relu` is left without a bound after it, and a lone Relu bounded with `ReluFirst` or
//! `NegatedThreshold` gives the reference exactly (`ScaledThreshold`: the same zeros, the kept
//! values within 2 ulps), NaN and infinities included.

mod common;

use common::{python, relu_model};
use fitact_onnx::engine::{Engine, Outputs};
use fitact_onnx::harden::method::{EmissionName, ModeName};
use fitact_onnx::harden::pipeline::bound_model;
use fitact_onnx::model_io::encode;
use fitact_passes::activations::find_relus;
use fitact_passes::bound_activations::{Bound, BoundRequest, Emission, Mode, bound_activations_with, exact_scale};
use fitact_passes::onnx::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto, TypeProto, ValueInfoProto,
    tensor_shape_proto, type_proto,
};
use fitact_passes::tensor::{FLOAT, float_tensor};
use ndarray::{ArrayD, IxDyn};
use ndarray_npy::write_npy;
use proptest::prelude::*;
use std::path::Path;

const EMISSIONS: [EmissionName; 3] = [EmissionName::ReluFirst, EmissionName::Fold, EmissionName::FoldThreshold];

fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: d.map(tensor_shape_proto::dimension::Value::DimValue),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(FLOAT),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, ints: &[(&str, Vec<i64>)]) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(format!("{op}:{output}")),
        input: inputs.iter().map(|s| (*s).into()).collect(),
        output: vec![output.into()],
        attribute: ints
            .iter()
            .map(|(name, v)| AttributeProto {
                name: Some((*name).into()),
                i: (v.len() == 1 && *name != "kernel_shape").then(|| v[0]),
                ints: if v.len() == 1 && *name != "kernel_shape" {
                    vec![]
                } else {
                    v.clone()
                },
                r#type: Some(if v.len() == 1 && *name != "kernel_shape" { 2 } else { 7 }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// What sits between the first Relu and the second Conv.
#[derive(Debug, Clone, Copy)]
enum Between {
    Nothing,
    MaxPool,
    AveragePool,
    Residual,
}

/// x [N, 2, 4, 4] -> Conv(2 -> c, 3x3, pad 1) -> Relu -> `between` -> Conv(c -> 3, 1x1, `group`
/// 1 or, when c is 3, depthwise) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(3 -> 2).
fn graph(c: usize, between: Between, depthwise: bool, opset: i64, weights: &[f32]) -> ModelProto {
    let mut k = 0;
    let mut take = |name: &str, dims: &[i64]| {
        let n: i64 = dims.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                k += 1;
                weights[k % weights.len()] * if k % 7 == 0 { -1.0 } else { 1.0 }
            })
            .collect();
        float_tensor(name, dims, &v, FLOAT)
    };
    let c = c as i64;
    let group = if depthwise { 3 } else { 1 };
    let initializer = vec![
        take("w1", &[c, 2, 3, 3]),
        take("b1", &[c]),
        take("w2", &[3, c / group, 1, 1]),
        take("b2", &[3]),
        take("g", &[2, 3]),
        take("gb", &[2]),
    ];
    let mut nodes = vec![
        node("Conv", &["x", "w1", "b1"], "h1", &[("pads", vec![1, 1, 1, 1])]),
        node("Relu", &["h1"], "y1", &[]),
    ];
    let into_conv = match between {
        Between::Nothing => "y1",
        Between::MaxPool => {
            nodes.push(node("MaxPool", &["y1"], "p", &[("kernel_shape", vec![2, 2])]));
            "p"
        }
        Between::AveragePool => {
            nodes.push(node("AveragePool", &["y1"], "p", &[("kernel_shape", vec![2, 2])]));
            "p"
        }
        Between::Residual => {
            nodes.push(node("Add", &["y1", "h1"], "p", &[]));
            "p"
        }
    };
    nodes.extend([
        node("Conv", &[into_conv, "w2", "b2"], "h2", &[("group", vec![group])]),
        node("Relu", &["h2"], "y2", &[]),
        node("GlobalAveragePool", &["y2"], "pooled", &[]),
        node("Flatten", &["pooled"], "flat", &[]),
        node("Gemm", &["flat", "g", "gb"], "out", &[("transB", vec![1])]),
    ]);
    ModelProto {
        ir_version: Some(if opset >= 13 { 7 } else { 5 }),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(GraphProto {
            name: Some("folded".into()),
            node: nodes,
            initializer,
            input: vec![value_info("x", &[None, Some(2), Some(4), Some(4)])],
            output: vec![value_info("out", &[None, Some(2)])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn run_tract(model: &ModelProto, x: &ArrayD<f32>) -> ArrayD<f32> {
    let sample: Vec<usize> = x.shape()[1..].to_vec();
    let runner = Engine::tract().load(model, &[sample], 8, Outputs::Model).unwrap();
    let (out, _) = runner.run(vec![x.clone().into()]).unwrap();
    out[0].view::<f32>().unwrap().to_owned()
}

fn close(got: &ArrayD<f32>, want: &ArrayD<f32>) -> bool {
    got.shape() == want.shape()
        && got
            .iter()
            .zip(want.iter())
            .all(|(g, w)| (g - w).abs() <= 1e-5 + 1e-4 * w.abs())
}

/// Hardens `model` with per-channel bounds `bounds[site]` in `mode` with `emission`.
fn harden(model: &ModelProto, bounds: &[Vec<f32>], mode: ModeName, emission: EmissionName) -> ModelProto {
    let mut m = model.clone();
    let sites = find_relus(&m);
    let bounds = bounds
        .iter()
        .map(|b| Bound {
            dims: vec![b.len() as i64, 1, 1],
            values: b.clone(),
            low: None,
        })
        .collect();
    let elems = vec![fitact_onnx::engine::ElemType::F32; sites.len()];
    bound_model(&mut m, &sites, bounds, mode, emission, &elems).unwrap();
    m
}

struct Case {
    plain: ModelProto,
    forms: Vec<(EmissionName, ModelProto)>,
    x: ArrayD<f32>,
}

fn build(
    c: usize,
    between: Between,
    depthwise: bool,
    opset: i64,
    mode: ModeName,
    weights: &[f32],
    bound_seeds: &[f32],
) -> Case {
    let c = if depthwise { 3 } else { c };
    let model = graph(c, between, depthwise, opset, weights);
    // Bounds small against the activations (weights up to 1, inputs up to 3), one channel 0.
    let bound = |n: usize, salt: usize| -> Vec<f32> {
        (0..n)
            .map(|i| {
                if (i + salt) % 5 == 4 {
                    0.0
                } else {
                    bound_seeds[(i + salt) % bound_seeds.len()]
                }
            })
            .collect()
    };
    let bounds = vec![bound(c, 0), bound(3, 1)];
    let n = 2;
    let zero = mode == ModeName::Zero;
    let xs: Vec<f32> = (0..n * 32)
        .map(|i| match i % 11 {
            // In zero mode the second sample holds NaN and infinities (saturate is
            // min(max(x, 0), B): NaN is not in its contract, and an infinity makes NaN in a Conv).
            3 if i >= 32 && zero => f32::NAN,
            5 if i >= 32 && zero => f32::INFINITY,
            7 if i >= 32 && zero => f32::NEG_INFINITY,
            _ => weights[(i * 3) % weights.len()] * 3.0,
        })
        .collect();
    let x = ArrayD::from_shape_vec(IxDyn(&[n, 2, 4, 4]), xs).unwrap();
    let plain = harden(&model, &bounds, mode, EmissionName::Plain);
    let forms = EMISSIONS
        .iter()
        .map(|e| (*e, harden(&model, &bounds, mode, *e)))
        .collect();
    Case { plain, forms, x }
}

fn check_case(case: &Case) -> Result<(), String> {
    let want = run_tract(&case.plain, &case.x);
    for (emission, form) in &case.forms {
        let unbounded = common::unbounded_relus(form);
        if !unbounded.is_empty() {
            return Err(format!("{emission}: Relus left without a bound: {unbounded:?}"));
        }
        let got = run_tract(form, &case.x);
        if !close(&got, &want) {
            return Err(format!("{emission}: got {got:?}\nwant {want:?}"));
        }
    }
    Ok(())
}

fn between() -> impl Strategy<Value = Between> {
    prop_oneof![
        Just(Between::Nothing),
        Just(Between::MaxPool),
        Just(Between::AveragePool),
        Just(Between::Residual)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn every_emission_matches_the_plain_form_in_tract(
        c in 1usize..5,
        between in between(),
        depthwise in any::<bool>(),
        opset in prop::sample::select(vec![9i64, 11, 13, 17]),
        zero in any::<bool>(),
        weights in prop::collection::vec(-1.0f32..1.0, 8..32),
        bound_seeds in prop::collection::vec(0.05f32..1.5, 1..6),
    ) {
        let mode = if zero { ModeName::Zero } else { ModeName::Saturate };
        let case = build(c, between, depthwise, opset, mode, &weights, &bound_seeds);
        let outcome = check_case(&case);
        prop_assert!(outcome.is_ok(), "{between:?} c {c} depthwise {depthwise} opset {opset} {mode}: {}", outcome.unwrap_err());
    }
}

/// Folding applies where the pass header says, and falls back where it does not.
#[test]
fn folding_applies_where_it_can_and_falls_back_elsewhere() {
    let weights = [0.3f32, -0.7, 0.9, 0.2];
    let count = |m: &ModelProto, op: &str| {
        m.graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .filter(|n| n.op_type() == op)
            .count()
    };
    let bounds = [vec![0.5f32, 0.0, 1.0], vec![0.3, 0.4, 0.6]];
    for (between, negated) in [(Between::AveragePool, 2), (Between::MaxPool, 1), (Between::Residual, 1)] {
        let model = graph(3, between, false, 13, &weights);
        let m = harden(&model, &bounds, ModeName::Zero, EmissionName::FoldThreshold);
        // Folded and negated: Clip + ThresholdedRelu; the rest (before a max pool, read by a
        // residual Add): the scaled threshold (two ThresholdedRelus), no LessOrEqual/Where left.
        assert_eq!(count(&m, "ThresholdedRelu"), negated + 2 * (2 - negated), "{between:?}");
        assert_eq!(count(&m, "Clip"), negated, "{between:?}");
        assert_eq!(count(&m, "Div"), 2 - negated, "{between:?}");
        assert_eq!(count(&m, "Where"), 0, "{between:?}");

        let m = harden(&model, &bounds, ModeName::Saturate, EmissionName::Fold);
        // Folded Relus become one scalar Clip; the Relu before a residual Add keeps Relu + Min.
        let folded = if matches!(between, Between::Residual) { 1 } else { 2 };
        assert_eq!(count(&m, "Clip"), folded, "{between:?}");
        assert_eq!(count(&m, "Min"), 2 - folded, "{between:?}");
    }
}

/// Every form, opset, mode and between, in onnxruntime and through the full onnx check.
#[test]
fn every_emission_matches_the_plain_form_in_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let weights = [0.31f32, -0.72, 0.93, 0.24, -0.15, 0.66, 0.48, -0.87];
    let seeds = [0.2f32, 0.9, 0.45];
    let mut n = 0;
    for opset in [9i64, 10, 11, 12, 13, 17] {
        for mode in [ModeName::Zero, ModeName::Saturate] {
            for between in [
                Between::Nothing,
                Between::MaxPool,
                Between::AveragePool,
                Between::Residual,
            ] {
                for depthwise in [false, true] {
                    let case = build(2, between, depthwise, opset, mode, &weights, &seeds);
                    check_case(&case).unwrap_or_else(|e| panic!("tract {opset} {mode} {between:?}: {e}"));
                    let want = run_tract(&case.plain, &case.x);
                    for (_, form) in &case.forms {
                        let stem = dir.path().join(format!("case{n}"));
                        std::fs::write(stem.with_extension("onnx"), encode(form)).unwrap();
                        write_npy(stem.with_extension("x.npy"), &case.x).unwrap();
                        write_npy(stem.with_extension("want.npy"), &want).unwrap();
                        n += 1;
                    }
                }
            }
        }
    }
    let out = python("semantics.py", &[dir.path(), std::path::Path::new("--close")]);
    assert!(out.contains(&format!("{n} cases agree")), "{out}");
}

/// A lone Relu: `ReluFirst` gives the reference bit for bit, `NegatedThreshold` on -x gives
/// -reference(x), and `ScaledThreshold` zeroes what the reference zeroes and keeps the rest
/// within 2 ulps, NaN and infinities included, in tract and onnxruntime.
#[test]
fn lone_relu_forms_are_exact() {
    let (dir, scaled_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0];
    let bound = 1.5f32;
    assert_eq!(
        exact_scale(bound).map(|(_, kept)| kept),
        Some(bound),
        "1.5 is enforced as is"
    );
    let xs: Vec<f32> = vec![-1.0, 0.5, bound, f32::from_bits(bound.to_bits() + 1), 7.0]
        .into_iter()
        .chain(specials)
        .collect();
    let reference = |x: f32, mode: Mode| match mode {
        Mode::Zero if x > 0.0 && x <= bound => x,
        Mode::Zero => 0.0,
        Mode::Saturate => x.max(0.0).min(bound),
    };
    let (mut n, mut n_scaled) = (0, 0);
    for opset in [9i64, 10, 11, 12, 13, 18] {
        for (mode, emission) in [
            (Mode::Zero, Emission::ReluFirst),
            (Mode::Saturate, Emission::ReluFirst),
            (Mode::Zero, Emission::NegatedThreshold),
            (Mode::Zero, Emission::ScaledThreshold),
        ] {
            if matches!(emission, Emission::NegatedThreshold | Emission::ScaledThreshold) && opset < 10 {
                continue;
            }
            let negated = emission == Emission::NegatedThreshold;
            for dims in [vec![], vec![2]] {
                if negated && !dims.is_empty() {
                    continue;
                }
                let values = if dims.is_empty() { vec![bound] } else { vec![bound; 2] };
                let mut model = relu_model(&[2, 5], opset);
                let site = find_relus(&model).remove(0);
                let request = BoundRequest {
                    site,
                    bound: Bound {
                        dims: dims.iter().copied().chain(dims.iter().map(|_| 1)).collect(),
                        values,
                        low: None,
                    },
                    elem_type: FLOAT,
                };
                let report = bound_activations_with(&mut model, &[request], mode, &[emission]).unwrap();
                assert_eq!(report.applied.len(), 1, "{opset} {mode:?} {emission:?}: {report:?}");
                let sign = if negated { -1.0 } else { 1.0 };
                // Saturate is min(max(x, 0), B): NaN is not in its contract.
                let inputs: Vec<f32> = xs
                    .iter()
                    .map(|x| if mode == Mode::Saturate && x.is_nan() { 2.0 } else { *x })
                    .collect();
                let x = ArrayD::from_shape_vec(IxDyn(&[1, 2, 5]), inputs.iter().map(|v| sign * v).collect()).unwrap();
                let want: Vec<f32> = inputs.iter().map(|v| sign * reference(*v, mode)).collect();
                let want = ArrayD::from_shape_vec(IxDyn(&[1, 2, 5]), want).unwrap();
                let got = run_tract(&model, &x);
                // The scaled form keeps exactly the values the reference keeps (B = 1.5 has an
                // exact scale) and gives them back within 2 ulps.
                let ulps = if emission == Emission::ScaledThreshold { 2 } else { 0 };
                let same = got
                    .iter()
                    .zip(want.iter())
                    .all(|(g, w)| (*g == 0.0 && *w == 0.0) || (g.to_bits() as i64 - w.to_bits() as i64).abs() <= ulps);
                assert!(
                    same,
                    "tract {opset} {mode:?} {emission:?}: x {x:?} got {got:?} want {want:?}"
                );
                let (folder, count) = if ulps == 0 {
                    (dir.path(), &mut n)
                } else {
                    (scaled_dir.path(), &mut n_scaled)
                };
                let stem = folder.join(format!("case{count}"));
                std::fs::write(stem.with_extension("onnx"), encode(&model)).unwrap();
                write_npy(stem.with_extension("x.npy"), &x).unwrap();
                write_npy(stem.with_extension("want.npy"), &want).unwrap();
                *count += 1;
            }
        }
    }
    let out = python("semantics.py", &[dir.path()]);
    assert!(out.contains(&format!("{n} cases agree")), "{out}");
    let ulps = [scaled_dir.path(), Path::new("--ulps"), Path::new("2")];
    let out = python("semantics.py", &ulps);
    assert!(out.contains(&format!("{n_scaled} cases agree")), "{out}");
}
