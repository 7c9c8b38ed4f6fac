//! Read any bytes as a `.npy` file or, when they start as a zip does, as an `.npz` archive
//! (every member, stored or deflated) under a 16 MiB data cap: an error or the arrays' shapes,
//! never a panic, an abort or an allocation past the cap. Run:
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run data_readers` (the seeds in `fuzz/corpus/data_readers`
//! are replayed by `tests/data_readers_corpus.rs`).
//!
//! The readers' own files are compiled in, not the `fitact-onnx` crate: they use nothing of it
//! but each other (`data::raw` says so), and the crate would bring tract under the sanitizers.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Top-level, as `..` cannot pass through an inline module's (missing) folder; `data`
// gives them the paths they use each other by.
#[allow(dead_code)]
#[path = "../../src/data/cap.rs"]
mod cap;
#[allow(dead_code)]
#[path = "../../src/data/float16.rs"]
mod float16;
#[allow(dead_code)]
#[path = "../../src/data/npy.rs"]
mod npy;
#[allow(dead_code)]
#[path = "../../src/data/raw.rs"]
mod raw;

mod data {
    pub(crate) use super::{cap, float16, npy, raw};
}

fuzz_target!(|bytes: &[u8]| {
    let _ = data::npy::read_bytes(bytes, data::cap::DataCap::bytes(16 << 20));
});
