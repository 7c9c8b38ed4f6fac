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
//! Candidates are checked on a held-out split of the calibration data, against the original
//! model's top-1 predictions (agreement) or, with labels, its top-1 accuracy. While layers
//! before the one being tuned are untouched, a candidate reruns only from that activation on
//! (`extract_suffix`), on cached clean values. Every accepted point meets the budget, so a
//! search stopped by its evaluation or time limit returns the best point found so far.

use crate::dataset::Samples;
use crate::replay::{Batches, CleanValues, Predictions, predict, run_suffix};
use anyhow::{Context, Result};
use fitact_passes::activations::ActivationSite;
use fitact_passes::bound_activations::{Bound, BoundRequest, Mode, bound_activations};
use fitact_passes::extract_suffix::extract_suffix;
use fitact_passes::onnx::ModelProto;
use fitact_passes::tensor::FLOAT;
use serde::Serialize;
use std::time::{Duration, Instant};

pub struct SearchOptions {
    /// Allowed drop of the held-out metric (0.005 = half a point).
    pub budget: f64,
    pub max_evals: Option<usize>,
    pub time_limit: Option<Duration>,
    pub batch_size: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub scale: f32,
    pub metric: f64,
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
    pub holdout_samples: usize,
    /// The original model's metric on the held-out split (1 for agreement).
    pub reference: f64,
    /// The lowest metric accepted: reference - budget.
    pub threshold: f64,
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

/// What the search evaluates against.
struct Holdout<'a> {
    batches: Batches,
    reference: Vec<usize>,
    labels: Option<&'a [usize]>,
}

impl Holdout<'_> {
    fn metric(&self, predictions: &Predictions) -> f64 {
        let truth = self.labels.unwrap_or(&self.reference);
        predictions.classes.iter().zip(truth).filter(|(p, t)| p == t).count() as f64 / truth.len().max(1) as f64
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
    evaluations: usize,
    started: Instant,
    options: &'a SearchOptions,
}

/// The bound shrunk toward 0 by `scale`: both ends of a two-sided one.
fn scaled(bound: &Bound, scale: f32) -> Bound {
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

/// Splits calibration samples into the part bounds are fitted on and the held-out part the
/// budget is checked on: every fourth sample is held out (at least one, and at least 64 when
/// there are enough), so the split is deterministic and spread over the file.
pub fn split(samples: &Samples) -> (Samples, Samples, Vec<usize>) {
    let n = samples.count;
    let stride = if n >= 256 { 4 } else { (n / 64).clamp(2, 4) };
    let held: Vec<usize> = (0..n).filter(|i| i % stride == stride - 1).collect();
    let fit: Vec<usize> = (0..n).filter(|i| i % stride != stride - 1).collect();
    let take = |rows: &[usize]| Samples {
        inputs: samples
            .inputs
            .iter()
            .map(|(name, a)| (name.clone(), a.select(ndarray::Axis(0), rows)))
            .collect(),
        count: rows.len(),
    };
    (take(&fit), take(&held), held)
}

/// Searches one scale per site for the bounds `base` (calibrated on the fit split), checking
/// candidates on `holdout` (with `labels` of those samples, if given).
#[allow(clippy::too_many_arguments)]
pub fn search(
    original: &ModelProto,
    sites: &[ActivationSite],
    base: &[Bound],
    mode: Mode,
    holdout: &Samples,
    labels: Option<&[usize]>,
    options: &SearchOptions,
) -> Result<(Vec<Bound>, SearchLog)> {
    let started = Instant::now();
    let batch = crate::runtime::batch_size_for(original, options.batch_size.min(holdout.count));
    let batches = Batches::new(holdout, batch);
    let (reference, _) = predict(original, &batches, &[]).context("running the original model")?;
    if let Some(labels) = labels {
        crate::replay::check_labels(labels, reference.width).context("checking the labels")?;
    }
    let holdout = Holdout {
        batches,
        reference: reference.classes,
        labels,
    };
    let reference_metric = holdout.metric(&Predictions {
        classes: holdout.reference.clone(),
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
        evaluations: 0,
        started,
        options,
    };
    search.base_model = search.harden(&vec![1.0; sites.len()])?.0;
    let threshold = reference_metric - options.budget;
    let n = sites.len();
    let mut scales = vec![1.0f32; n];
    let calibrated_metric = search.evaluate(&scales, None)?;
    let mut steps: Vec<Vec<Step>> = vec![Vec::new(); n];
    let mut stopped = "converged";

    // 1. Layer by layer, last first, each allowed its share of the budget.
    'layers: for (k, l) in (0..n).rev().enumerate() {
        let allowed = reference_metric - options.budget * (k + 1) as f64 / n as f64;
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
            let accepted = metric >= allowed.max(threshold);
            steps[l].push(Step {
                scale: mid,
                metric,
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
                let accepted = metric >= threshold;
                steps[l].push(Step {
                    scale: candidate[l],
                    metric,
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
