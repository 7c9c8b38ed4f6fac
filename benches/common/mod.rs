//! Helpers shared by the `harness = false` benches: fixture paths, knobs from the
//! environment, timing and medians. Each bench does `mod common;`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Instant;

/// `fixtures/` of the crate.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The fixture models to bench: `FITACT_BENCH_MODELS=alexnet,resnet` or all three.
/// Missing files are reported and skipped, so a bench still runs while fixtures are trained.
pub fn models() -> Vec<(String, PathBuf)> {
    let names = std::env::var("FITACT_BENCH_MODELS").unwrap_or_else(|_| "alexnet,vgg,resnet".to_owned());
    names
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .filter_map(|name| {
            let path = fixtures_dir().join(format!("{name}.onnx"));
            if path.exists() {
                Some((name.to_owned(), path))
            } else {
                println!("# skipping {name}: {} does not exist", path.display());
                None
            }
        })
        .collect()
}

/// A positive integer from the environment, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

/// Seconds taken by `f`, and its result.
pub fn time<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let start = Instant::now();
    let out = f();
    (start.elapsed().as_secs_f64(), out)
}

pub fn median(values: &[f64]) -> f64 {
    assert!(!values.is_empty());
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Milliseconds with a sensible number of digits.
pub fn ms(seconds: f64) -> String {
    format!("{:.1} ms", seconds * 1e3)
}

/// The engines to bench: tract always, onnxruntime when its library is found (as `--engine
/// auto` finds it); `FITACT_BENCH_ENGINES=tract` or `onnxruntime` keeps one.
pub fn engines() -> Vec<fitact_onnx::engine::Engine> {
    use fitact_onnx::engine::{Engine, EngineChoice, EngineKind};
    let wanted = std::env::var("FITACT_BENCH_ENGINES").unwrap_or_else(|_| "onnxruntime,tract".to_owned());
    let mut engines = Vec::new();
    for name in wanted.split(',').map(str::trim) {
        match name {
            "onnxruntime" => match Engine::select(EngineChoice::Auto, None) {
                Ok(engine) if engine.kind() == EngineKind::Onnxruntime => engines.push(engine),
                _ => println!("# skipping onnxruntime: no library found (pip install onnxruntime)"),
            },
            "tract" => engines.push(Engine::tract()),
            "" => {}
            other => println!("# skipping unknown engine {other}"),
        }
    }
    engines
}
