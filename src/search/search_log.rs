//! What a search reports (`SearchLog`, the harden report's `search` field: docs/reports.md):
//! every step tried per activation, the points checked under faults, and the totals.

use super::resilience::FaultPoint;
use super::{Base, Bases};
use fitact_passes::activations::ActivationSite;
use fitact_passes::bound_activations::Bound;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// The base the candidate scaled, and its scale.
    pub base: Base,
    pub scale: f32,
    /// The metric on every check sample; None when the check stopped early (`at_most`).
    pub metric: Option<f64>,
    /// When the check stopped as soon as the metric could no longer reach the threshold: the
    /// most it could still have been (one sample short of the threshold: `Tally::check`).
    pub at_most: Option<f64>,
    pub accepted: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerSearch {
    pub node: String,
    /// The final base and its scale (maximum and 1 = the calibrated bound, unchanged).
    pub base: Base,
    pub scale: f32,
    pub bound_mean_before: f32,
    pub bound_mean_after: f32,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchLog {
    /// `agreement` (top-1 agreement with the original model) or `accuracy` (with labels).
    pub metric: &'static str,
    /// The samples each candidate is checked on, over every fold (`k_fold`), and the folds.
    pub holdout_samples: usize,
    pub folds: usize,
    /// The original model's metric on the held-out split (1 for agreement).
    pub reference: f64,
    /// The allowed drop (`--budget`), and the lowest metric accepted: SAFETY x budget under
    /// the reference or the calibrated bounds' metric, whichever is lower.
    pub budget: f64,
    pub threshold: f64,
    /// `tight` or `resilience`.
    pub objective: &'static str,
    /// Objective `resilience`: the metric under faults (mean over the sweep's patterns) of the
    /// calibrated bounds and of the chosen ones, and every point checked under faults.
    pub calibrated_fault_metric: Option<f64>,
    pub final_fault_metric: Option<f64>,
    pub fault_points: Vec<FaultPoint>,
    /// The metric of the calibrated (unsearched) bounds, and of the searched ones.
    pub calibrated_metric: f64,
    pub final_metric: f64,
    pub evaluations: usize,
    /// Check samples judged by a run of the model (or of the part after the site that
    /// changed), and by the accepted point's result: samples whose every value at that site
    /// is inside both bounds, so that the candidate cannot change their output.
    pub samples_run: usize,
    pub samples_reused: usize,
    pub seconds: f64,
    /// `converged`, `evaluation limit` or `time limit`.
    pub stopped: &'static str,
    /// Mean over activations of (searched bound / calibrated bound).
    pub mean_bound_ratio: f64,
    pub layers: Vec<LayerSearch>,
}

/// Per site: the base and scale found, the mean bound before and after, every step tried.
pub(super) fn layer_logs(
    sites: &[ActivationSite],
    bases: &Bases,
    bounds: &[Bound],
    scales: &[f32],
    steps: Vec<Vec<Step>>,
    on_percentile: &[bool],
) -> Vec<LayerSearch> {
    let mean = |b: &Bound| b.values.iter().sum::<f32>() / b.values.len().max(1) as f32;
    sites
        .iter()
        .zip(bases.maxima)
        .zip(bounds)
        .zip(scales.iter().zip(steps).zip(on_percentile))
        .map(|(((site, before), after), ((scale, steps), percentile))| LayerSearch {
            node: site.stem().to_owned(),
            base: if *percentile { Base::Percentile } else { Base::Maximum },
            scale: *scale,
            bound_mean_before: mean(before),
            bound_mean_after: mean(after),
            steps,
        })
        .collect()
}

/// The mean of `values` (0 for none).
pub(super) fn mean(values: impl ExactSizeIterator<Item = f64>) -> f64 {
    let n = values.len().max(1) as f64;
    values.sum::<f64>() / n
}
