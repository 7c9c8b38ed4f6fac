//! fitact-onnx: post-training, gradient-free hardening of ONNX models against bit flips.
//!
//! The execution side lives here (data, the engines that run models, calibration, bounds,
//! reports, the CLI commands); pure graph rewrites live in the `fitact-passes` crate (`passes/`).

pub mod bounds;
pub mod calibrate;
pub mod check;
pub mod dataset;
pub mod engine;
pub mod evaluate;
pub mod faults;
pub mod harden;
pub mod html;
pub mod images;
pub mod inspect;
pub mod method;
pub mod model_io;
pub mod plot;
pub mod replay;
pub mod report;
pub mod search;
pub mod weights;

pub use fitact_passes as passes;
