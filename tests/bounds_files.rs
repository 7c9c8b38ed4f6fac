//! Bounds as files: `harden --save-bounds` writes the bounds it emitted, and `harden --bounds`
//! emits a file's bounds in place of the calibrated ones (the same model, byte for byte, as
//! the run that saved them); a file that does not fit the model is refused in one line.

mod common;

use common::{fixture, harden_cli, harden_ok};
use std::path::Path;

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn saved_bounds_give_back_the_model_they_were_saved_from() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let calib = fixture("calib.npy");
    for (name, flags) in [
        ("channel", vec!["--method", "fitact"]),
        ("neuron", vec!["--granularity", "neuron", "--mode", "saturate"]),
        ("layer", vec!["--method", "ranger"]),
    ] {
        let saved = path(&format!("{name}.json"));
        let mut first = flags.clone();
        first.extend(["--save-bounds", saved.to_str().unwrap()]);
        harden_ok(
            &fixture("alexnet.onnx"),
            &path(&format!("{name}.a.onnx")),
            &calib,
            &first,
        );
        let file = read_json(&saved);
        assert_eq!(file["format"], "fitact-onnx-bounds");
        assert_eq!(file["bounds"].as_array().unwrap().len(), 7, "one per Relu");
        // Read back with no granularity flag: the file's dims give it.
        let mut second: Vec<&str> = flags
            .iter()
            .copied()
            .filter(|f| *f != "neuron" && *f != "--granularity")
            .collect();
        second.extend(["--bounds", saved.to_str().unwrap()]);
        harden_ok(
            &fixture("alexnet.onnx"),
            &path(&format!("{name}.b.onnx")),
            &calib,
            &second,
        );
        assert!(
            std::fs::read(path(&format!("{name}.a.onnx"))).unwrap()
                == std::fs::read(path(&format!("{name}.b.onnx"))).unwrap(),
            "{name}: the saved bounds give the same model"
        );
    }
}

#[test]
fn a_bounds_file_that_does_not_fit_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("bounds.json");
    let out = dir.path().join("out.onnx");
    harden_ok(
        &fixture("alexnet.onnx"),
        &out,
        &fixture("calib.npy"),
        &["--save-bounds", saved.to_str().unwrap()],
    );
    let mut file = read_json(&saved);
    let first = file["bounds"][0]["node"].as_str().unwrap().to_owned();
    let refused = |file: &serde_json::Value, wanted: &str| {
        let path = dir.path().join("bad.json");
        std::fs::write(&path, file.to_string()).unwrap();
        let target = dir.path().join("refused.onnx");
        let run = harden_cli(
            &fixture("alexnet.onnx"),
            &target,
            &fixture("calib.npy"),
            &["--bounds", path.to_str().unwrap()],
        );
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(wanted), "{wanted}: {stderr}");
        assert!(!target.exists());
    };
    file["bounds"][0]["high"].as_array_mut().unwrap().pop();
    refused(&file, &format!("the bound for '{first}' has"));
    file["bounds"].as_array_mut().unwrap().remove(0);
    refused(&file, &format!("no bound for activation '{first}'"));
    refused(
        &serde_json::json!({"format": "x", "version": 1, "bounds": []}),
        "not a bounds file",
    );
    std::fs::write(dir.path().join("bad.json"), "{").unwrap();
    let run = common::cli(&[
        "harden",
        fixture("alexnet.onnx").to_str().unwrap(),
        dir.path().join("r.onnx").to_str().unwrap(),
        "--calib",
        fixture("calib.npy").to_str().unwrap(),
        "--bounds",
        dir.path().join("bad.json").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&run.stderr).contains("reading the bounds in"));
    let run = common::cli(&[
        "harden", "a.onnx", "b.onnx", "--calib", "c.npy", "--bounds", "x.json", "--search",
    ]);
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("cannot be used with"));
}
