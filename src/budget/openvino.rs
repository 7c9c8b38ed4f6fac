//! Timing in OpenVINO (`--runtime openvino`). OpenVINO has no Rust binding this tool can
//! use, so the models and the sample are written to a temporary folder and timed by
//! `openvino_timing.py` (embedded) under `python3`, with the `openvino` package of that
//! Python: the same protocol as the engines' timing (`cost`), in OpenVINO's CPU plugin.

use crate::budget::cost::{MAX_ROUNDS, ROUNDS, SETTLED};
use crate::data::dataset::Samples;
use crate::model_io::encode;
use anyhow::{Context, Result, bail};
use fitact_passes::onnx::ModelProto;
use std::process::Command;

const SCRIPT: &str = include_str!("openvino_timing.py");

#[derive(serde::Deserialize)]
struct Output {
    times: Vec<Vec<f64>>,
}

/// Per round, per model: seconds per run in OpenVINO.
pub fn times(models: &[ModelProto], sample: &Samples, min_round_seconds: f64) -> Result<Vec<Vec<f64>>> {
    let dir = tempfile::tempdir().context("making a folder for the models to time")?;
    let mut inputs = Vec::new();
    for (k, (name, value)) in sample.inputs.iter().enumerate() {
        let values = value.f32s().map_err(|_| {
            anyhow::anyhow!(
                "--runtime openvino times float32 inputs only; input '{name}' is {}",
                value.elem_type().name()
            )
        })?;
        let file = dir.path().join(format!("input{k}.bin"));
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&file, bytes).context("writing the sample to time")?;
        inputs.push(serde_json::json!({"name": name, "shape": value.shape(), "file": file}));
    }
    let inputs_path = dir.path().join("inputs.json");
    std::fs::write(&inputs_path, serde_json::to_vec(&inputs)?).context("writing the sample to time")?;
    let mut paths = Vec::new();
    for (m, model) in models.iter().enumerate() {
        let path = dir.path().join(format!("model{m}.onnx"));
        std::fs::write(&path, encode(model)).context("writing a model to time")?;
        paths.push(path);
    }
    let output = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(format!("{},{},{}", ROUNDS, MAX_ROUNDS, SETTLED))
        .arg(min_round_seconds.to_string())
        .arg(&inputs_path)
        .args(&paths)
        .output()
        .context("--runtime openvino runs python3 with the openvino package: python3 did not start")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let line = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message");
        bail!("timing in OpenVINO failed: {line}");
    }
    let parsed: Output =
        serde_json::from_slice(&output.stdout).context("reading the OpenVINO timing script's output")?;
    Ok(parsed.times)
}

/// The `openvino` package's version, or the one-line reason it cannot be used.
pub fn version() -> Result<String> {
    let output = Command::new("python3")
        .args(["-c", "import openvino; print(openvino.__version__)"])
        .output()
        .context("--runtime openvino runs python3 with the openvino package: python3 did not start")?;
    if !output.status.success() {
        bail!("--runtime openvino needs the openvino Python package for python3 (pip install openvino)");
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
