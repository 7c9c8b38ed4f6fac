//! Replays the data readers' fuzz corpus (`fuzz/corpus/data_readers`: the seeds of
//! `fuzz/make_data_readers_corpus.py` and anything a fuzz run kept) and crash artifacts through
//! the fuzz target's function, under its 16 MiB cap: no input may panic, every `seed-ok-*`
//! reads, and every `seed-bad-*` (lying headers, truncation, a zip bomb, corrupt members)
//! gives an error.

use fitact_onnx::data::cap::DataCap;
use fitact_onnx::data::npy::read_bytes;
use std::path::PathBuf;

fn inputs(folder: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(folder)
        .join("data_readers");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn named(path: &std::path::Path, prefix: &str) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(prefix))
}

#[test]
fn the_data_readers_corpus_replays_without_panics_and_broken_files_are_errors() {
    let cap = DataCap::bytes(16 << 20);
    let corpus = inputs("corpus");
    let (ok, bad) = (
        corpus.iter().filter(|p| named(p, "seed-ok-")).count(),
        corpus.iter().filter(|p| named(p, "seed-bad-")).count(),
    );
    assert!(ok >= 8 && bad >= 19, "the seeds are there ({ok} valid, {bad} broken)");
    for path in corpus.iter().chain(&inputs("artifacts")) {
        let bytes = std::fs::read(path).unwrap();
        let outcome = std::panic::catch_unwind(|| read_bytes(&bytes, cap));
        let Ok(outcome) = outcome else {
            panic!("{} panics", path.display())
        };
        if named(path, "seed-ok-") {
            assert!(outcome.is_ok(), "{}: {outcome:?}", path.display());
        }
        if named(path, "seed-bad-") {
            assert!(outcome.is_err(), "{} reads: {outcome:?}", path.display());
        }
    }
    let read = |name: &str| {
        read_bytes(
            &std::fs::read(corpus.iter().find(|p| named(p, name)).unwrap()).unwrap(),
            cap,
        )
    };
    assert_eq!(
        read("seed-ok-savez-compressed.npz"),
        Ok(vec![vec![2, 3], vec![4], vec![3], vec![2]])
    );
    assert_eq!(read("seed-ok-bool-fortran.npy"), Ok(vec![vec![3, 3]]));
    assert_eq!(
        read("seed-bad-zip-bomb-64mib.npz"),
        Err("array 'x' would take 64.0 MiB, over the 16.0 MiB data cap (--max-data-memory)".to_owned())
    );
    assert_eq!(
        read("seed-bad-2pow40-values.npy"),
        Err("the header claims shape [1099511627776] of <f4 (4398046511104 bytes, 4.0 TiB), the file has 100 bytes after its header".to_owned())
    );
}
