//! Decode a model, find its activations (operators and decomposed forms), apply the bounding
//! pass, encode: on any bytes, an error or a result, never a panic. Run:
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run harden_pass` (cargo-fuzz needs nightly features; the
//! corpus in `fuzz/corpus/harden_pass` is replayed by the tests).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fitact_passes::smoke::harden_bytes(data);
});
