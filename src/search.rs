//! The bound search: bounds fitted after training, tighter than the calibrated maxima, so that
//! faults are cut off earlier, while clean accuracy stays within a budget. FitAct trains its
//! bounds by gradient descent; this searches one scale factor per activation (bounds =
//! scale x calibrated maxima, at the chosen granularity) without gradients:
//!
//! 1. layer by layer, last activation first (as the ProAct follow-up does), the smallest scale
//!    that keeps the held-out metric within a share of the budget that grows with the number
//!    of activations tuned, by bisection;
//! 2. then a global refinement by coordinate descent: every scale in turn shrinks by 10% while
//!    the whole model stays within the full budget, until a round changes nothing.
//!
//! Bounds are fitted on three quarters of the calibration data; candidates are checked on all
//! of it, up to 512 samples (`split`), against the original model's top-1 predictions
//! (agreement) or, with labels, its top-1 accuracy. The check set is small and every candidate
//! is checked on it, so the best candidates are the ones it favours by chance; to keep the
//! budget on new data, a sample counts only if it keeps most of its margin, and the search
//! holds the drop within `SAFETY` x the budget.
//!
//! Objectives: `tight` accepts every candidate within the budget (the smallest bounds);
//! `resilience` accepts one only if, in addition, its accuracy (or agreement) under weight
//! faults does not fall: a fixed set of fault patterns (the same flips in the same weights
//! for every candidate: common random numbers, as `evaluate` draws them) at each BER of a
//! sweep, in the original weights (the bound tensors are left fault-free here). This is
//! FT-ClipAct's threshold search, per channel or neuron and across layers. While layers
//! before the one being tuned are untouched, a candidate reruns only from that activation on
//! (`extract_suffix`), on cached clean values. Every accepted point meets the budget, so a
//! search stopped by its evaluation or time limit returns the best point found so far.

use crate::dataset::Samples;
use crate::faults::{WeightFormat, sample_flips};
use crate::replay::{Batches, CleanValues, Predictions, predict, run_suffix};
use crate::weights::Weights;
use anyhow::{Context, Result};
use fitact_passes::activations::ActivationSite;
use fitact_passes::bound_activations::{Bound, BoundRequest, Mode, bound_activations};
use fitact_passes::extract_suffix::extract_suffix;
use fitact_passes::onnx::ModelProto;
use fitact_passes::tensor::FLOAT;
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The share of the budget the held-out drop may use (see the module header): measured on the
/// fixtures, the full budget on 128 held-out images let the test accuracy drop 2 to 6 times
/// the budget (docs/results.md).
pub const SAFETY: f64 = 0.5;

/// What the search optimises within the budget.
#[derive(Debug, Clone)]
pub enum Objective {
    /// The smallest bounds.
    Tight,
    /// The best accuracy (or agreement) under weight faults.
    Resilience(FaultSweep),
}

/// The fixed fault patterns of the `resilience` objective.
#[derive(Debug, Clone)]
pub struct FaultSweep {
    pub bers: Vec<f64>,
    /// Patterns per BER.
    pub patterns: usize,
    pub seed: u64,
    pub format: WeightFormat,
}

pub struct SearchOptions {
    /// Allowed drop of the held-out metric (0.005 = half a point).
    pub budget: f64,
    pub objective: Objective,
    pub max_evals: Option<usize>,
    pub time_limit: Option<Duration>,
    pub batch_size: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub scale: f32,
    pub metric: f64,
    /// The metric under faults (objective `resilience`, candidates within the budget).
    pub fault_metric: Option<f64>,
    pub accepted: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerSearch {
    pub node: String,
    /// The final scale of the calibrated bound (1 = unchanged).
    pub scale: f32,
    pub bound_mean_before: f32,
    pub bound_mean_after: f32,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchLog {
    /// `agreement` (top-1 agreement with the original model) or `accuracy` (with labels).
    pub metric: &'static str,
    /// The samples each candidate is checked on (`split`).
    pub holdout_samples: usize,
    /// The original model's metric on the held-out split (1 for agreement).
    pub reference: f64,
    /// The lowest metric accepted: reference - SAFETY x budget.
    pub threshold: f64,
    /// `tight` or `resilience`.
    pub objective: &'static str,
    /// Objective `resilience`: the metric under faults (mean over the sweep's patterns) of the
    /// calibrated bounds and of the searched ones.
    pub calibrated_fault_metric: Option<f64>,
    pub final_fault_metric: Option<f64>,
    /// The metric of the calibrated (unsearched) bounds, and of the searched ones.
    pub calibrated_metric: f64,
    pub final_metric: f64,
    pub evaluations: usize,
    pub seconds: f64,
    /// `converged`, `evaluation limit` or `time limit`.
    pub stopped: &'static str,
    /// Mean over activations of (searched bound / calibrated bound).
    pub mean_bound_ratio: f64,
    pub layers: Vec<LayerSearch>,
}

/// A held-out sample the original model gets right counts as kept only if the candidate also
/// keeps at least this share of its top-1 margin: a sample about to flip is counted as
/// flipped, which makes a few hundred held-out samples speak for the many unseen ones near
/// the decision boundary (see `SAFETY`).
pub const MARGIN_KEPT: f32 = 0.5;

/// What the search evaluates against.
struct Holdout<'a> {
    batches: Batches,
    reference: Vec<usize>,
    /// The original's top-1 margins.
    margins: Vec<f32>,
    labels: Option<&'a [usize]>,
}

/// The check samples a resilience search runs under each fault pattern (a prefix of the check set).
pub const FAULT_SAMPLES: usize = 128;

/// The first `n` samples.
fn prefix(samples: &Samples, n: usize) -> Samples {
    Samples {
        inputs: samples
            .inputs
            .iter()
            .map(|(name, a)| (name.clone(), a.slice_axis(ndarray::Axis(0), (0..n).into()).to_owned()))
            .collect(),
        count: n,
    }
}

impl<'a> Holdout<'a> {
    /// Runs the original on `samples` for its predictions and margins.
    fn new(original: &ModelProto, samples: &Samples, labels: Option<&'a [usize]>, batch_size: usize) -> Result<Self> {
        let batch = crate::runtime::batch_size_for(original, batch_size.min(samples.count));
        let batches = Batches::new(samples, batch);
        let (reference, _) = predict(original, &batches, &[]).context("running the original model")?;
        if let Some(labels) = labels {
            crate::replay::check_labels(labels, reference.width).context("checking the labels")?;
        }
        Ok(Holdout {
            batches,
            reference: reference.classes,
            margins: reference.margins,
            labels,
        })
    }
}

impl Holdout<'_> {
    /// Accuracy (labels) or agreement with the original, where a sample the original gets
    /// right must also keep `MARGIN_KEPT` of its margin.
    fn metric(&self, predictions: &Predictions) -> f64 {
        let truth = self.labels.unwrap_or(&self.reference);
        let kept = (0..truth.len())
            .filter(|&i| {
                let class = predictions.classes[i];
                class == truth[i]
                    && (self.reference[i] != truth[i] || predictions.margins[i] >= MARGIN_KEPT * self.margins[i])
            })
            .count();
        kept as f64 / truth.len().max(1) as f64
    }
}

struct Search<'a> {
    original: &'a ModelProto,
    sites: &'a [ActivationSite],
    base: &'a [Bound],
    mode: Mode,
    holdout: Holdout<'a>,
    /// Clean values of the model hardened with the calibrated bounds: on tensors upstream of
    /// every tuned activation they are the values any candidate computes.
    clean: CleanValues,
    base_model: ModelProto,
    /// Objective `resilience`: per pattern, the faulty values of the original's weights, and
    /// the samples they run on.
    patterns: Vec<HashMap<String, Vec<f32>>>,
    fault_holdout: Option<Holdout<'a>>,
    evaluations: usize,
    started: Instant,
    options: &'a SearchOptions,
}

/// The bound shrunk toward 0 by `scale`: both ends of a two-sided one.
pub fn scaled(bound: &Bound, scale: f32) -> Bound {
    Bound {
        dims: bound.dims.clone(),
        values: bound.values.iter().map(|v| v * scale).collect(),
        low: bound.low.as_ref().map(|low| low.iter().map(|v| v * scale).collect()),
    }
}

impl Search<'_> {
    fn out_of_budget(&self) -> Option<&'static str> {
        if self.options.max_evals.is_some_and(|m| self.evaluations >= m) {
            return Some("evaluation limit");
        }
        if self.options.time_limit.is_some_and(|t| self.started.elapsed() >= t) {
            return Some("time limit");
        }
        None
    }

    fn harden(&self, scales: &[f32]) -> Result<(ModelProto, Vec<Vec<String>>)> {
        let mut model = self.original.clone();
        let requests: Vec<BoundRequest> = self
            .sites
            .iter()
            .zip(self.base)
            .zip(scales)
            .map(|((site, bound), s)| BoundRequest {
                site: site.clone(),
                bound: scaled(bound, *s),
                elem_type: FLOAT,
            })
            .collect();
        let report = bound_activations(&mut model, &requests, self.mode)?;
        anyhow::ensure!(report.skipped.is_empty(), "the search could not bound every activation");
        Ok((model, report.applied.into_iter().map(|a| a.nodes).collect()))
    }

    /// The held-out metric under each fault pattern, averaged (objective `resilience`).
    fn fault_metric(&mut self, scales: &[f32]) -> Result<f64> {
        self.evaluations += 1;
        let (model, _) = self.harden(scales)?;
        let weights = Weights::of(&model);
        let mut total = 0.0;
        for pattern in &self.patterns {
            let values: Vec<Vec<f32>> = weights
                .tensors
                .iter()
                .map(|t| pattern.get(&t.name).cloned().unwrap_or_else(|| t.values.clone()))
                .collect();
            let faulty = Weights::write_into(&model, &values);
            let holdout = self
                .fault_holdout
                .as_ref()
                .context("a resilience search has fault samples")?;
            total += holdout.metric(&predict(&faulty, &holdout.batches, &[])?.0);
        }
        Ok(total / self.patterns.len().max(1) as f64)
    }

    /// The held-out metric of `scales`. When every activation tuned so far lies downstream of
    /// `from` (the one that changed last), only the part from `from` on is rerun.
    fn evaluate(&mut self, scales: &[f32], from: Option<usize>) -> Result<f64> {
        self.evaluations += 1;
        let (model, emitted) = self.harden(scales)?;
        let batches = &self.holdout.batches;
        if let Some(from) = from {
            let graph = model.graph.as_ref().context("model has a graph")?;
            let index_of = |name: &str| graph.node.iter().position(|n| n.name() == name);
            let dirty: Vec<usize> = emitted[from].iter().filter_map(|n| index_of(n)).collect();
            let suffix = extract_suffix(&model, &dirty)?;
            let kept: std::collections::HashSet<&str> = suffix
                .model
                .graph
                .as_ref()
                .map(|g| g.node.iter().map(|n| n.name()).collect())
                .unwrap_or_default();
            let tuned_inside = (0..scales.len())
                .filter(|i| scales[*i] != 1.0)
                .all(|i| emitted[i].iter().all(|n| kept.contains(n.as_str())));
            if tuned_inside && suffix.recomputed_outputs.first() == Some(&true) {
                let feeds = self
                    .clean
                    .boundary_values(&self.base_model, &suffix.boundary, batches)?;
                return Ok(self.holdout.metric(&run_suffix(&suffix.model, &feeds, batches, 0)?));
            }
        }
        Ok(self.holdout.metric(&predict(&model, batches, &[])?.0))
    }
}

/// The original's weights under each fault pattern of the sweep: per pattern, every weight
/// tensor's values as the format stores and loads them, with that pattern's flips.
fn fault_patterns(original: &ModelProto, sweep: &FaultSweep) -> Vec<HashMap<String, Vec<f32>>> {
    let weights = Weights::of(original);
    let stored: Vec<_> = weights.tensors.iter().map(|t| sweep.format.store(&t.values)).collect();
    let sizes: Vec<(&str, usize)> = weights
        .tensors
        .iter()
        .zip(&stored)
        .map(|(t, s)| (t.name.as_str(), s.words.len()))
        .collect();
    let bits: Vec<u32> = (0..sweep.format.bits()).collect();
    let mut patterns = Vec::new();
    for ber in &sweep.bers {
        for trial in 0..sweep.patterns {
            let mut words: Vec<Vec<u32>> = stored.iter().map(|s| s.words.clone()).collect();
            for flip in sample_flips(&sizes, &bits, *ber, sweep.seed, trial as u64) {
                words[flip.tensor][flip.element] ^= 1 << flip.bit;
            }
            patterns.push(
                weights
                    .tensors
                    .iter()
                    .zip(words.iter().zip(&stored))
                    .map(|(t, (w, s))| {
                        (
                            t.name.clone(),
                            w.iter().map(|word| sweep.format.load(*word, s.scale)).collect(),
                        )
                    })
                    .collect(),
            );
        }
    }
    patterns
}

/// At most this many samples check each candidate against the budget.
pub const CHECK_SAMPLES: usize = 512;

/// The calibration samples cut for a search.
pub struct Split {
    /// The samples bounds are fitted on: all but every fourth.
    pub fit: Samples,
    /// Every fourth sample (at least one, and at least 64 when there are enough): never seen
    /// by the fit, so the calibrated bounds cut them as they would cut new data.
    pub held: Samples,
    /// The samples each candidate is checked on, with their rows: up to `CHECK_SAMPLES` spread
    /// evenly over all the samples, fitted and held-out alike. Fitted samples matter: the
    /// largest of them set the bounds, so they are the first a smaller scale cuts, as it would
    /// cut the largest of new data. Measured on the fixtures (test-split drop, budget 0.5):
    /// the held-out quarter alone let 33 tightened activations (MobileNetV3-style,
    /// `--activations all`) lose 0.95 points; all 512 samples, 0.10; 256 of them (half fitted,
    /// half held out) let AlexNet and ResNet lose 0.60 and 0.75. With all 512, the five
    /// fixtures lost 0.10 (AlexNet), 0.50 (VGG), 0.05 (ResNet), 0.10 and 0.40 (the two
    /// with every activation bounded).
    pub check: Samples,
    pub check_rows: Vec<usize>,
}

/// Splits calibration samples for a search, deterministically and spread over the file.
pub fn split(samples: &Samples) -> Split {
    let n = samples.count;
    let stride = if n >= 256 { 4 } else { (n / 64).clamp(2, 4) };
    let held: Vec<usize> = (0..n).filter(|i| i % stride == stride - 1).collect();
    let fit: Vec<usize> = (0..n).filter(|i| i % stride != stride - 1).collect();
    let check_rows: Vec<usize> = if n <= CHECK_SAMPLES {
        (0..n).collect()
    } else {
        (0..CHECK_SAMPLES).map(|k| k * n / CHECK_SAMPLES).collect()
    };
    let take = |rows: &[usize]| Samples {
        inputs: samples
            .inputs
            .iter()
            .map(|(name, a)| (name.clone(), a.select(ndarray::Axis(0), rows)))
            .collect(),
        count: rows.len(),
    };
    Split {
        fit: take(&fit),
        held: take(&held),
        check: take(&check_rows),
        check_rows,
    }
}

/// Searches one scale per site for the bounds `base` (calibrated on the fit split), checking
/// candidates on `holdout` (with `labels` of those samples, if given).
#[allow(clippy::too_many_arguments)]
pub fn search(
    original: &ModelProto,
    sites: &[ActivationSite],
    base: &[Bound],
    mode: Mode,
    checked: &Samples,
    labels: Option<&[usize]>,
    options: &SearchOptions,
) -> Result<(Vec<Bound>, SearchLog)> {
    let started = Instant::now();
    let holdout = Holdout::new(original, checked, labels, options.batch_size)?;
    // Fault patterns are compared on a prefix of the check samples: a candidate runs once per
    // pattern, and the patterns are the same for every candidate.
    let fault_holdout = match &options.objective {
        Objective::Tight => None,
        Objective::Resilience(_) => {
            let n = FAULT_SAMPLES.min(holdout.reference.len());
            Some(Holdout::new(
                original,
                &prefix(checked, n),
                labels.map(|l| &l[..n]),
                options.batch_size,
            )?)
        }
    };
    let reference_metric = holdout.metric(&Predictions {
        classes: holdout.reference.clone(),
        margins: holdout.margins.clone(),
        ..Default::default()
    });
    let mut search = Search {
        original,
        sites,
        base,
        mode,
        holdout,
        clean: CleanValues::default(),
        base_model: original.clone(),
        fault_holdout,
        patterns: match &options.objective {
            Objective::Tight => Vec::new(),
            Objective::Resilience(sweep) => fault_patterns(original, sweep),
        },
        evaluations: 0,
        started,
        options,
    };
    search.base_model = search.harden(&vec![1.0; sites.len()])?.0;
    let budget = options.budget * SAFETY;
    let threshold = reference_metric - budget;
    let resilience = matches!(options.objective, Objective::Resilience(_));
    let n = sites.len();
    let mut scales = vec![1.0f32; n];
    let calibrated_metric = search.evaluate(&scales, None)?;
    let calibrated_fault_metric = if resilience {
        Some(search.fault_metric(&scales)?)
    } else {
        None
    };
    let mut best_fault = calibrated_fault_metric.unwrap_or(0.0);
    // Within the budget, and (objective resilience) no worse under faults.
    let mut judge =
        |search: &mut Search, candidate: &[f32], metric: f64, allowed: f64| -> Result<(bool, Option<f64>)> {
            if metric < allowed {
                return Ok((false, None));
            }
            if !resilience {
                return Ok((true, None));
            }
            let fault = search.fault_metric(candidate)?;
            let better = fault >= best_fault;
            if better {
                best_fault = fault;
            }
            Ok((better, Some(fault)))
        };
    let mut steps: Vec<Vec<Step>> = vec![Vec::new(); n];
    let mut stopped = "converged";

    // 1. Layer by layer, last first, each allowed its share of the budget.
    'layers: for (k, l) in (0..n).rev().enumerate() {
        let allowed = reference_metric - budget * (k + 1) as f64 / n as f64;
        let (mut lo, mut hi) = (0.0f32, 1.0f32);
        for _ in 0..7 {
            if let Some(reason) = search.out_of_budget() {
                stopped = reason;
                break 'layers;
            }
            let mid = (lo + hi) / 2.0;
            let mut candidate = scales.clone();
            candidate[l] = mid;
            let metric = search.evaluate(&candidate, Some(l))?;
            let (accepted, fault_metric) = judge(&mut search, &candidate, metric, allowed.max(threshold))?;
            steps[l].push(Step {
                scale: mid,
                metric,
                fault_metric,
                accepted,
            });
            if accepted {
                hi = mid;
                scales = candidate;
            } else {
                lo = mid;
            }
        }
    }
    // 2. Coordinate descent on the whole model, with the full budget.
    if stopped == "converged" {
        'rounds: loop {
            let mut changed = false;
            for l in (0..n).rev() {
                if let Some(reason) = search.out_of_budget() {
                    stopped = reason;
                    break 'rounds;
                }
                let mut candidate = scales.clone();
                candidate[l] *= 0.9;
                let metric = search.evaluate(&candidate, None)?;
                let (accepted, fault_metric) = judge(&mut search, &candidate, metric, threshold)?;
                steps[l].push(Step {
                    scale: candidate[l],
                    metric,
                    fault_metric,
                    accepted,
                });
                if accepted {
                    scales = candidate;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
    }
    let final_metric = search.evaluate(&scales, None)?;
    let final_fault_metric = calibrated_fault_metric.map(|_| best_fault);
    let bounds: Vec<Bound> = base.iter().zip(&scales).map(|(b, s)| scaled(b, *s)).collect();
    let mean = |b: &Bound| b.values.iter().sum::<f32>() / b.values.len().max(1) as f32;
    let layers = sites
        .iter()
        .zip(base)
        .zip(&bounds)
        .zip(scales.iter().zip(steps))
        .map(|(((site, before), after), (scale, steps))| LayerSearch {
            node: site.stem().to_owned(),
            scale: *scale,
            bound_mean_before: mean(before),
            bound_mean_after: mean(after),
            steps,
        })
        .collect();
    let log = SearchLog {
        metric: if labels.is_some() { "accuracy" } else { "agreement" },
        holdout_samples: search.holdout.reference.len(),
        reference: reference_metric,
        threshold,
        objective: if resilience { "resilience" } else { "tight" },
        calibrated_fault_metric,
        final_fault_metric,
        calibrated_metric,
        final_metric,
        evaluations: search.evaluations,
        seconds: started.elapsed().as_secs_f64(),
        stopped,
        mean_bound_ratio: scales.iter().map(|s| f64::from(*s)).sum::<f64>() / n.max(1) as f64,
        layers,
    };
    Ok((bounds, log))
}
