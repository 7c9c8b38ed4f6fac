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

#[allow(dead_code)]
mod data {
    #[path = "../../../src/data/cap.rs"]
    pub mod cap;
    #[path = "../../../src/data/float16.rs"]
    pub mod float16;
    #[path = "../../../src/data/npy.rs"]
    pub mod npy;
    #[path = "../../../src/data/raw.rs"]
    pub mod raw;
}

fuzz_target!(|bytes: &[u8]| {
    let _ = data::npy::read_bytes(bytes, data::cap::DataCap::bytes(16 << 20));
});
