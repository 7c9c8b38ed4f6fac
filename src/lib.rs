//! fitact-onnx: post-training, gradient-free hardening of ONNX models against bit flips.
//!
//! The execution side lives here, in folders by stage; pure graph rewrites live in the
//! `fitact-passes` crate (`passes/`). Dependencies point one way (docs/architecture.md):
//! the command line (`cli`, which the binary `main.rs` and the Python module call) uses the
//! stages, a stage uses the stages below it, and everything may use `engine`, `model_io` and
//! `passes`, which use nothing above them.
//!
//! | module | owns |
//! |---|---|
//! | `cli` | the command line: arguments, one file per command, exit codes |
//! | `report` | a campaign as CSV, a table, an SVG plot and an HTML page |
//! | `check` | the CI gate: clean accuracy or agreement within a budget, a resilience floor |
//! | `harden` | calibration, bounds, method presets, the harden pipeline and its report; `inspect` |
//! | `budget` | hardening within a latency budget: costs timed in the runtime, benefits from paired fault campaigns, the choice |
//! | `search` | the bound search and its check on held-out samples |
//! | `faults` | the weight fault model and formats, weight patching, campaigns (`evaluate`) |
//! | `replay` | batches, clean predictions, the cache of clean values and suffix reruns |
//! | `data` | sample sets: `.npy`/`.npz`, folders of images, labels |
//! | `engine` | running models in onnxruntime or tract behind one interface |
//! | `model_io` | ONNX files in and out, external data, atomic writes |

/// The tool's name and version, as every report and hardened model records them.
pub const TOOL: &str = "fitact-onnx";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub mod budget;
pub mod check;
pub mod cli;
pub mod data;
pub mod engine;
pub mod faults;
pub mod harden;
pub mod model_io;
pub mod replay;
pub mod report;
pub mod search;

pub use fitact_passes as passes;
