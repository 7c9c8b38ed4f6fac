//! The bound search (`--search`): one scale per activation on its calibrated bounds, found
//! without gradients under a clean-accuracy budget.
//!
//! Owns: `tighten` (the search itself: bisection layer by layer, coordinate descent, the check
//! of a candidate on held-out samples, the fault sweep of the resilience objective).
//! May use `faults` (fault patterns for `--objective resilience`), `replay` (suffix reruns on
//! cached clean values), `data`, `engine` and `passes`; nothing above (`harden` calls it).

pub mod tighten;

pub use tighten::{
    Base, Bases, CHECK_SAMPLES, FAULT_SAMPLES, FOLDS, FaultSweep, KFold, LayerSearch, MARGIN_KEPT, MIN_SAMPLES,
    OUTLIERS, Objective, SAFETY, SearchData, SearchLog, SearchOptions, Step, k_fold, scaled, search,
};
