//! Hardening: read a model, calibrate its activations on sample data, turn the calibrated
//! extremes into bounds, bound the activations (the `bound_activations` pass), write the model.
//!
//! Owns: `calibrate` (extremes of every activation in one pass), `bounds` (extremes to bound
//! tensors at a granularity), `bounds_file` (bounds read from and written to JSON), `method` (the presets of the literature), `pipeline` (the
//! orchestration, from files in to the hardened model out), `report` (the harden report) and
//! `inspect` (what hardening sees in a model before it changes anything), `budgeted` (the
//! bounds offered to `budget` as forms per activation, and the model written with its choice).
//! May use `budget`, `search` (and what the search's settings name of `faults`), `data`, `engine`,
//! `model_io` and `passes`; nothing above (not `check`, `report` or the CLI).

pub mod bounds;
pub mod bounds_file;
pub mod budgeted;
pub mod calibrate;
pub mod inspect;
pub mod method;
pub mod pipeline;
pub mod report;

pub use pipeline::{HardenError, HardenOptions, SearchSettings, Unreached, harden};
