//! What a search reports (`SearchLog`, the harden report's `search` field: docs/reports.md):
//! every step tried per activation, the points checked under faults, and the totals.

use super::confidence::drop_upper_bound;
use super::folds::FOLDS;
use super::resilience::{FaultPoint, FaultSweep};
use super::{Base, Bases, Objective, SearchOptions, Start};
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
    /// `tight` or `resilience`, and for `resilience` the fault sweep (weight format, BERs,
    /// patterns per BER, seed) and the check samples run under each pattern.
    pub objective: &'static str,
    pub fault_sweep: Option<FaultSweep>,
    pub fault_samples: Option<usize>,
    /// What the search did, in one line: whether it kept the calibrated bounds, and why.
    pub verdict: String,
    /// `agreement` (top-1 agreement with the original model) or `accuracy` (with labels).
    pub metric: &'static str,
    /// The samples each candidate is checked on, over every fold (`k_fold`), and the folds.
    pub holdout_samples: usize,
    pub folds: usize,
    /// The original model's metric on the held-out split (1 for agreement).
    pub reference: f64,
    /// The allowed drop (`--budget`); the most check samples a point may lose so that the
    /// one-sided 95% upper bound of its drop stays within it (None: not even none, the
    /// samples are too few); the smallest budget these samples can vouch for (losing none);
    /// the lowest metric accepted (the reference less `may_lose` samples; None with it).
    pub budget: f64,
    pub may_lose: Option<usize>,
    pub smallest_budget: f64,
    pub threshold: Option<f64>,
    /// The check samples the bounds written lose against the original (at their fold
    /// bounds), and the drop they vouch for: the one-sided 95% upper bound of that drop.
    pub lost: usize,
    pub drop_upper_bound: f64,
    /// Objective `resilience`: the metric under faults (mean over the sweep's patterns) of the
    /// calibrated bounds and of the chosen ones, and every point checked under faults.
    pub calibrated_fault_metric: Option<f64>,
    pub final_fault_metric: Option<f64>,
    pub fault_points: Vec<FaultPoint>,
    /// The metric of the calibrated (unsearched) bounds, and of the searched ones.
    pub calibrated_metric: f64,
    pub final_metric: f64,
    /// The points the search accepted (the calibrated one included).
    pub path_points: usize,
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
    /// Objective `resilience`: the words the fault sweep flips in the model, most bits first
    /// (float32 weights as `--fault-format` stores them; any other tensor in its own type).
    pub fault_words: Vec<String>,
}

impl SearchLog {
    /// The log's counts at the start and end; the rest is filled in as the search ends.
    pub(super) fn new(labels: bool, options: &SearchOptions, start: &Start, final_metric: f64) -> SearchLog {
        let lost = start.lost(final_metric);
        let fault_sweep = match &options.objective {
            Objective::Tight => None,
            Objective::Resilience(sweep) => Some(sweep.clone()),
        };
        SearchLog {
            objective: if fault_sweep.is_some() { "resilience" } else { "tight" },
            fault_sweep,
            fault_samples: None,
            verdict: String::new(),
            metric: if labels { "accuracy" } else { "agreement" },
            holdout_samples: start.checked,
            folds: FOLDS,
            reference: start.reference,
            budget: options.budget,
            may_lose: start.vouch.may_lose,
            smallest_budget: start.vouch.smallest_budget,
            threshold: start.threshold,
            lost,
            drop_upper_bound: drop_upper_bound(lost, start.checked),
            calibrated_fault_metric: None,
            final_fault_metric: None,
            fault_points: Vec::new(),
            calibrated_metric: start.calibrated,
            final_metric,
            path_points: 1,
            evaluations: 0,
            samples_run: 0,
            samples_reused: 0,
            seconds: 0.0,
            stopped: "converged",
            mean_bound_ratio: 1.0,
            layers: Vec::new(),
            fault_words: Vec::new(),
        }
    }

    /// The fault model in a few words: the words flipped (`float32`; `int8, float32 and int32`
    /// for a quantized model).
    pub fn fault_model(&self) -> String {
        match self.fault_words.as_slice() {
            [] => self.fault_sweep.as_ref().map(format_name).unwrap_or_default(),
            [one] => one.clone(),
            [first @ .., last] => format!("{} and {last}", first.join(", ")),
        }
    }

    /// The points checked under faults, and from them the calibrated and chosen ones' metrics.
    pub(super) fn set_fault_points(&mut self, points: Vec<FaultPoint>) {
        let of = |pick: &dyn Fn(&FaultPoint) -> bool| points.iter().find(|p| pick(p)).map(|p| p.fault_metric);
        self.calibrated_fault_metric = of(&|p| p.accepted == 0);
        self.final_fault_metric = of(&|p| p.chosen);
        self.fault_points = points;
    }
}

/// What the search did, in one line: the bounds it wrote and why, first of the reasons it
/// kept the calibrated ones (the samples vouch for no loss, the calibrated bounds use it all,
/// no tighter point within the budget, none gains under faults beyond chance, a limit).
pub(super) fn verdict(log: &SearchLog, start: &Start) -> String {
    let pct = |x: f64| format!("{:.2}%", 100.0 * x);
    let kept = "kept the calibrated bounds";
    let Some(may_lose) = log.may_lose else {
        return format!(
            "{kept}: {} check samples vouch for no drop below {} (95%), more than the {} budget (a budget of {} or more lets the search tighten)",
            log.holdout_samples,
            pct(log.smallest_budget),
            pct(log.budget),
            pct(log.smallest_budget)
        );
    };
    let calibrated_lost = start.lost(log.calibrated_metric);
    if calibrated_lost > may_lose {
        return format!(
            "{kept}: they lose {calibrated_lost} of {} check samples already, and the {} budget vouches for {may_lose}",
            log.holdout_samples,
            pct(log.budget)
        );
    }
    if log.path_points <= 1 {
        return format!(
            "{kept}: no tighter point within the {} budget ({})",
            pct(log.budget),
            log.stopped
        );
    }
    let tightened = format!("bounds at {:.1}% of the calibrated ones", 100.0 * log.mean_bound_ratio);
    match &log.fault_sweep {
        None => format!("tightened ({tightened}, objective tight)"),
        Some(sweep) if log.mean_bound_ratio >= 1.0 => {
            if log.fault_points.len() <= 1 {
                format!(
                    "{kept}: stopped ({}) before a tighter point ran under faults",
                    log.stopped
                )
            } else {
                format!(
                    "{kept}: tightening gains nothing beyond chance (95%) under {} faults, so it would spend clean accuracy for nothing",
                    log.fault_model()
                )
            }
        }
        Some(_) => format!(
            "tightened ({tightened}): {} under {} faults {} against {} with the calibrated bounds",
            log.metric,
            log.fault_model(),
            pct(log.final_fault_metric.unwrap_or(f64::NAN)),
            pct(log.calibrated_fault_metric.unwrap_or(f64::NAN))
        ),
    }
}

/// The weight format of a sweep as `--fault-format` names it.
pub(super) fn format_name(sweep: &FaultSweep) -> String {
    serde_json::to_value(sweep.format)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
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
