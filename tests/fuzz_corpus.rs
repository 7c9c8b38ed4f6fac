//! Replays the fuzz corpus (`fuzz/corpus/harden_pass`, seeds and anything the fuzzer kept)
//! and its crash artifacts through the fuzz target's function: every input must give a result
//! or an error, never a panic. The seeds with Relus must be hardened.

use fitact_passes::smoke::harden_bytes;
use std::path::PathBuf;

fn inputs(folder: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(folder)
        .join("harden_pass");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn the_fuzz_corpus_replays_without_panics() {
    let corpus = inputs("corpus");
    assert!(corpus.len() >= 7, "the seeds are there");
    for path in corpus.iter().chain(&inputs("artifacts")) {
        let bytes = std::fs::read(path).unwrap();
        let outcome = std::panic::catch_unwind(|| harden_bytes(&bytes));
        assert!(outcome.is_ok(), "{} panics", path.display());
    }
    let hardened =
        |name: &str| harden_bytes(&std::fs::read(corpus.iter().find(|p| p.ends_with(name)).unwrap()).unwrap());
    assert_eq!(hardened("seed-if_branches.onnx"), Ok(4));
    assert_eq!(hardened("seed-shared_relu.onnx"), Ok(3));
    // Every activation of every kind, decomposed forms included.
    assert_eq!(hardened("seed-zoo.onnx"), Ok(17));
    assert_eq!(hardened("seed-loop_body.onnx"), Ok(1));
    assert!(
        hardened("seed-cycle.onnx")
            .unwrap_err()
            .contains("produced only by a later node")
    );
}
