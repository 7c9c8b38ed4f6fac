//! The bound search: bounds fitted after training, tighter than the calibrated maxima, so that
//! faults are cut off earlier, while clean accuracy stays within a budget. FitAct trains its
//! bounds by gradient descent; this searches one scale factor per activation (bounds =
//! scale x calibrated maxima, at the chosen granularity) without gradients:
//!
//! 1. layer by layer, last activation first (as the ProAct follow-up does): where a few
//!    outlying values set the maxima (`OUTLIERS`) and the caller asks for it, a per-neuron
//!    percentile takes their place if it loses nothing on the check; then the smallest scale
//!    of that base that keeps the held-out metric within a share of the budget that grows
//!    with the number of activations tuned, by bisection. Percentiles are off by default:
//!    measured on the fixtures (99th percentile, test split, budget 0.5 points), they let
//!    ResNet lose 0.70 and the MobileNetV3-style fixture 0.60 even when each had to lose
//!    nothing on the check (0.75 for the latter when it could spend its share of the budget),
//!    where the maxima alone kept both within it;
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
//! FT-ClipAct's threshold search, per channel or neuron and across layers. Every accepted
//! point meets the budget, so a search stopped by its evaluation or time limit returns the
//! best point found so far.
//!
//! What keeps an evaluation cheap (none of it changes a decision: a search gives the same
//! bounds, byte for byte, as one that runs every candidate in full):
//! - a candidate differs from the accepted point at one activation, so only the part of the
//!   model from that activation on reruns (`extract_suffix`), on the accepted point's clean
//!   values of what feeds it, kept between candidates and tagged with the scales upstream of
//!   them, so that a value is computed again only when one of those changes;
//! - the check samples run hardest first (smallest margin, then the batches candidates lost
//!   most samples in), and a check stops as soon as the threshold is out of reach; so does
//!   the check under faults, against the best fault metric so far.

use crate::data::dataset::Samples;
use crate::engine::{Engine, Outputs, Value};
use crate::faults::flips::{WeightFormat, sample_flips_in};
use crate::faults::weights::{Values, Weights, flippable_bits, load};
use crate::replay::judge::{Judge, SdcRule, check_labelled};
use crate::replay::{Batches, CleanValues, Feeds, Predictions, predict, prediction_runner, push_predictions};
use anyhow::{Context, Result};
use fitact_passes::activations::ActivationSite;
use fitact_passes::bound_activations::{Bound, BoundRequest, Mode, bound_activations};
use fitact_passes::extract_suffix::{downstream_tensors, extract_suffix};
use fitact_passes::onnx::ModelProto;
use fitact_passes::tensor::FLOAT;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// The share of the budget the held-out drop may use (see the module header): measured on the
/// fixtures, the full budget on 128 held-out images let the test accuracy drop 2 to 6 times
/// the budget (docs/results.md).
pub const SAFETY: f64 = 0.5;

/// A site's percentile bound (`Bases::percentiles`) is tried where it is below this share of
/// its maximum bound (means over the bound's values): there, a few outlying values set the
/// maximum.
pub const OUTLIERS: f32 = 0.95;

/// What a site's scale applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Base {
    /// The calibrated per-neuron maxima (reduced to the granularity).
    Maximum,
    /// The per-neuron percentiles instead (`--percentile`).
    Percentile,
}

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
    pub engine: Engine,
    /// Allowed drop of the held-out metric (0.005 = half a point).
    pub budget: f64,
    pub objective: Objective,
    pub max_evals: Option<usize>,
    pub time_limit: Option<Duration>,
    pub batch_size: usize,
    /// How the first output is judged (`replay::judge`): a check sample is kept when the
    /// candidate's output is the original's by this rule.
    pub sdc: SdcRule,
    pub sdc_tolerance: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// The base the candidate scaled, and its scale.
    pub base: Base,
    pub scale: f32,
    /// The metric on every check sample; None when the check stopped early (`at_most`).
    pub metric: Option<f64>,
    /// When the check stopped as soon as the metric could no longer reach the threshold: the
    /// most it could still have been.
    pub at_most: Option<f64>,
    /// The metric under faults (objective `resilience`, candidates within the budget), or,
    /// when that check stopped as soon as it could not reach the best so far, the most it
    /// could still have been.
    pub fault_metric: Option<f64>,
    pub fault_at_most: Option<f64>,
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

/// What the search evaluates against: the check samples, hardest first (see `Holdout::new`).
struct Holdout {
    batches: Batches,
    /// Per sample, in batch order: the original's predictions (top-1 classes and margins, and
    /// with a judge by tolerance its outputs), and the class that counts as right (the label,
    /// or the original's class).
    original: Predictions,
    truth: Vec<usize>,
    /// How outputs are judged, and the difference per element a judge by tolerance allows.
    judge: Judge,
    allowance: f32,
    /// Per batch: the row of its first sample.
    offsets: Vec<usize>,
}

/// The check samples a resilience search runs under each fault pattern (a prefix of the check set).
pub const FAULT_SAMPLES: usize = 128;

/// The first `n` samples.
fn prefix(samples: &Samples, n: usize) -> Samples {
    samples.select(&(0..n).collect::<Vec<_>>())
}

/// What checking a candidate found.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// The metric on every check sample.
    Metric(f64),
    /// The check stopped once the metric could no longer reach the threshold: at most this.
    Below(f64),
}

impl Check {
    fn reaches(&self, allowed: f64) -> bool {
        matches!(self, Check::Metric(m) if *m >= allowed)
    }
}

impl Holdout {
    /// Runs the original on `samples` for its predictions and margins, and orders the samples
    /// hardest first: those the original counts as kept by ascending margin (the first a
    /// tighter bound flips), then the rest. A check that stops as soon as the threshold is out
    /// of reach (`tally`) then stops early; the order changes no metric.
    fn new(
        engine: &Engine,
        original: &ModelProto,
        samples: &Samples,
        labels: Option<&[usize]>,
        options: &SearchOptions,
    ) -> Result<Self> {
        let batch = crate::engine::batch_size_for(original, options.batch_size.min(samples.count));
        let (mut reference, _) = predict(engine, original, &Batches::new(samples, batch), &[], true)
            .context("running the original model")?;
        let judge = Judge::resolve(options.sdc, options.sdc_tolerance, &reference.shape);
        let output = original
            .graph
            .as_ref()
            .and_then(|g| g.output.first())
            .map_or("", |o| o.name());
        check_labelled(judge, labels.is_some(), output, &reference.shape)?;
        if !judge.needs_values() {
            reference.drop_values();
        }
        let allowance = judge.allowance(&reference);
        if let Some(labels) = labels {
            crate::replay::check_labels(labels, reference.width).context("checking the labels")?;
        }
        let truth = labels.unwrap_or(&reference.classes);
        let mut order: Vec<usize> = (0..samples.count).collect();
        order.sort_by(|a, b| {
            let key = |i: usize| (reference.classes[i] != truth[i], reference.margins[i]);
            key(*a)
                .partial_cmp(&key(*b))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(b))
        });
        let batches = Batches::new(&samples.select(&order), batch);
        let offsets = batches
            .batches
            .iter()
            .scan(0, |row, (_, valid)| {
                let first = *row;
                *row += valid;
                Some(first)
            })
            .collect();
        Ok(Holdout {
            batches,
            truth: order.iter().map(|i| truth[*i]).collect(),
            offsets,
            judge,
            original: reference.select(&order),
            allowance,
        })
    }

    /// Whether sample `i`, row `j` of `predictions`, counts. By top-1: right, and when the
    /// original gets it right, with at least `MARGIN_KEPT` of its margin. By tolerance: the
    /// original's output, within the tolerance.
    fn kept(&self, i: usize, predictions: &Predictions, j: usize) -> bool {
        match self.judge {
            Judge::Top1 => {
                let (class, margin) = (predictions.classes[j], predictions.margins[j]);
                class == self.truth[i]
                    && (self.original.classes[i] != self.truth[i] || margin >= MARGIN_KEPT * self.original.margins[i])
            }
            Judge::Tolerance { .. } => self.judge.same_row(&self.original, i, predictions, j, self.allowance),
        }
    }

    /// The original's own metric (1 for agreement; its accuracy with labels): a sample it
    /// gets right keeps its whole margin.
    fn reference_metric(&self) -> f64 {
        let right = self
            .original
            .classes
            .iter()
            .zip(&self.truth)
            .filter(|(r, t)| r == t)
            .count();
        right as f64 / self.truth.len().max(1) as f64
    }

    /// Checks a candidate whose first output on batch `b` is `logits(b)`, batch by batch in
    /// `order`, and stops as soon as the metric cannot reach `allowed` any more. Also returns,
    /// per batch, how many samples the original keeps and the candidate lost.
    fn tally(
        &self,
        order: &[usize],
        allowed: f64,
        mut logits: impl FnMut(usize) -> Result<Value>,
    ) -> Result<(Check, Vec<usize>)> {
        let total = self.truth.len().max(1);
        let (mut kept, mut seen) = (0, 0);
        let mut lost = vec![0; self.batches.batches.len()];
        for &b in order {
            let valid = self.batches.batches[b].1;
            let mut predictions = if self.judge.needs_values() {
                Predictions::keeping_values()
            } else {
                Predictions::default()
            };
            push_predictions(&mut predictions, &logits(b)?, valid, self.batches.one_at_a_time)?;
            for j in 0..valid {
                let i = self.offsets[b] + j;
                if self.kept(i, &predictions, j) {
                    kept += 1;
                } else if self.original.classes[i] == self.truth[i] {
                    lost[b] += 1;
                }
            }
            seen += valid;
            let at_most = (kept + (total - seen)) as f64 / total as f64;
            if at_most < allowed {
                return Ok((Check::Below(at_most), lost));
            }
        }
        Ok((Check::Metric(kept as f64 / total as f64), lost))
    }
}

struct Search<'a> {
    original: &'a ModelProto,
    sites: &'a [ActivationSite],
    /// Per site, the bound its scale applies to (`base`): the maxima's, or the percentiles'
    /// where `on_percentile` (for the candidate; `accepted_on_percentile` for the accepted
    /// point).
    maxima: &'a [Bound],
    percentiles: Option<&'a [Bound]>,
    on_percentile: Vec<bool>,
    accepted_on_percentile: Vec<bool>,
    /// The check metric of the accepted point.
    accepted_metric: f64,
    mode: Mode,
    holdout: Holdout,
    /// The scales accepted so far, and the model they give. A candidate differs from them at
    /// one site; every tensor not downstream of it has the accepted model's clean values.
    accepted: Vec<f32>,
    accepted_model: ModelProto,
    /// Clean values of the accepted model, each tagged with the accepted scales of the sites
    /// upstream of it (`downstream`), so that a value stays valid until one of those changes.
    clean: CleanValues,
    /// Per site: the tensors downstream of its bound, and the tensors its suffix reads.
    downstream: Vec<HashSet<String>>,
    boundaries: Vec<Vec<String>>,
    /// Per check batch: samples lost by candidates so far. The check runs the batches that
    /// lost most first, so a candidate that fails fails early.
    lost: Vec<usize>,
    /// Objective `resilience`: per pattern, the faulty values of the original's weights, and
    /// the samples they run on.
    patterns: Vec<HashMap<String, Values>>,
    fault_holdout: Option<Holdout>,
    evaluations: usize,
    started: Instant,
    options: &'a SearchOptions,
}

impl<'a> Search<'a> {
    /// Runs the original on the check samples (and the fault samples of a resilience
    /// search), and prepares the calibrated point as the accepted one.
    fn new(
        original: &'a ModelProto,
        sites: &'a [ActivationSite],
        bases: &Bases<'a>,
        mode: Mode,
        checked: &Samples,
        labels: Option<&[usize]>,
        options: &'a SearchOptions,
    ) -> Result<Self> {
        let started = Instant::now();
        let holdout = Holdout::new(&options.engine, original, checked, labels, options)?;
        // Fault patterns are compared on a prefix of the check samples: a candidate runs once
        // per pattern, and the patterns are the same for every candidate.
        let fault_holdout = match &options.objective {
            Objective::Tight => None,
            Objective::Resilience(_) => {
                let count = FAULT_SAMPLES.min(checked.count);
                Some(Holdout::new(
                    &options.engine,
                    original,
                    &prefix(checked, count),
                    labels.map(|l| &l[..count]),
                    options,
                )?)
            }
        };
        let batch_count = holdout.batches.batches.len();
        let mut search = Search {
            original,
            sites,
            maxima: bases.maxima,
            percentiles: bases.percentiles,
            on_percentile: vec![false; sites.len()],
            accepted_on_percentile: vec![false; sites.len()],
            accepted_metric: 0.0,
            mode,
            holdout,
            accepted: vec![1.0; sites.len()],
            accepted_model: original.clone(),
            clean: CleanValues::new(&options.engine),
            downstream: Vec::new(),
            boundaries: Vec::new(),
            lost: vec![0; batch_count],
            fault_holdout,
            patterns: match &options.objective {
                Objective::Tight => Vec::new(),
                Objective::Resilience(sweep) => fault_patterns(original, sweep),
            },
            evaluations: 0,
            started,
            options,
        };
        let (calibrated_model, emitted) = search.harden(&vec![1.0; sites.len()])?;
        for names in &emitted {
            let dirty = node_indices(&calibrated_model, names)?;
            search.downstream.push(downstream_tensors(&calibrated_model, &dirty)?);
            search
                .boundaries
                .push(extract_suffix(&calibrated_model, &dirty)?.boundary);
        }
        search.accepted_model = calibrated_model;
        Ok(search)
    }
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
            .zip(scales)
            .enumerate()
            .map(|(l, (site, s))| BoundRequest {
                site: site.clone(),
                bound: scaled(self.base(l), *s),
                elem_type: FLOAT,
            })
            .collect();
        let report = bound_activations(&mut model, &requests, self.mode)?;
        anyhow::ensure!(report.skipped.is_empty(), "the search could not bound every activation");
        Ok((model, report.applied.into_iter().map(|a| a.nodes).collect()))
    }

    /// The metric under each fault pattern, averaged (objective `resilience`), or `Below` as
    /// soon as the average can no longer reach `at_least`.
    fn fault_check(&mut self, scales: &[f32], at_least: f64) -> Result<Check> {
        self.evaluations += 1;
        let (model, _) = self.harden(scales)?;
        let weights = Weights::of(&model);
        let holdout = self
            .fault_holdout
            .as_ref()
            .context("a resilience search has fault samples")?;
        let order: Vec<usize> = (0..holdout.batches.batches.len()).collect();
        let patterns = self.patterns.len().max(1) as f64;
        let mut total = 0.0;
        for (p, pattern) in self.patterns.iter().enumerate() {
            let values: Vec<Values> = weights
                .tensors
                .iter()
                .map(|t| pattern.get(&t.name).cloned().unwrap_or_else(|| t.values.clone()))
                .collect();
            let faulty = Weights::write_into(&model, &values);
            let runner = prediction_runner(&self.options.engine, &faulty, &holdout.batches, &[])?;
            // What this pattern must reach for the average to reach `at_least`, when every
            // pattern after it keeps every sample (less a rounding allowance: metrics are
            // multiples of 1 / samples, so only a candidate that cannot tie stops early).
            let later = (self.patterns.len() - p - 1) as f64;
            let allowed = at_least * patterns - total - later - 1e-9;
            let run = |b: usize| Ok(runner.run(holdout.batches.batches[b].0.clone())?.0[0].clone());
            match holdout.tally(&order, allowed, run)?.0 {
                Check::Metric(m) => total += m,
                Check::Below(m) => return Ok(Check::Below((total + m + later) / patterns)),
            }
        }
        Ok(Check::Metric(total / patterns))
    }

    /// Makes `scales` (on the current bases) the accepted point.
    fn accept(&mut self, scales: &[f32]) -> Result<()> {
        self.accepted_model = self.harden(scales)?.0;
        self.accepted = scales.to_vec();
        self.accepted_on_percentile = self.on_percentile.clone();
        Ok(())
    }

    /// Checks `candidate` against `allowed` (see `Holdout::tally`). When it differs from the
    /// accepted scales at `changed` only, only the part from that site's bound on is rerun, on
    /// the accepted model's clean values of what feeds it.
    fn check(&mut self, candidate: &[f32], changed: Option<usize>, allowed: f64) -> Result<Check> {
        self.evaluations += 1;
        let (model, emitted) = self.harden(candidate)?;
        let mut order: Vec<usize> = (0..self.lost.len()).collect();
        order.sort_by_key(|b| (std::cmp::Reverse(self.lost[*b]), *b));
        let only = changed.filter(|l| (0..candidate.len()).all(|i| i == *l || candidate[i] == self.accepted[i]));
        let suffix = match only {
            Some(l) => self.suffix_feeds(&model, &emitted[l], l)?,
            None => None,
        };
        let batches = &self.holdout.batches;
        let (check, lost) = match suffix {
            Some((suffix, feeds)) => {
                let runner = self
                    .options
                    .engine
                    .load_for_values(&suffix, &feeds[0], Outputs::Model)?;
                self.holdout
                    .tally(&order, allowed, |b| Ok(runner.run_values(&feeds[b])?[0].clone()))?
            }
            None => {
                let runner = prediction_runner(&self.options.engine, &model, batches, &[])?;
                self.holdout.tally(&order, allowed, |b| {
                    Ok(runner.run(batches.batches[b].0.clone())?.0[0].clone())
                })?
            }
        };
        self.lost.iter_mut().zip(lost).for_each(|(total, n)| *total += n);
        Ok(check)
    }

    /// Puts site `l` on its percentile base (`on`) or back on its maxima, for the candidates
    /// that follow (the accepted point changes with `accept`).
    fn use_percentile(&mut self, l: usize, on: bool) {
        self.on_percentile[l] = on && self.percentiles.is_some();
    }

    /// The bound site `l`'s scale applies to.
    fn base(&self, l: usize) -> &Bound {
        match self.percentiles {
            Some(percentiles) if self.on_percentile[l] => &percentiles[l],
            _ => &self.maxima[l],
        }
    }

    /// Whether the site's percentile bound is well below its maximum bound (`OUTLIERS`).
    fn outliers_dominate(&self, l: usize) -> bool {
        let sum = |b: &Bound| b.values.iter().map(|v| f64::from(*v)).sum::<f64>();
        self.percentiles
            .is_some_and(|p| sum(&p[l]) < f64::from(OUTLIERS) * sum(&self.maxima[l]))
    }

    /// `names` tagged with the accepted scales (and bases) of the sites upstream of each.
    fn tagged(&self, names: &[String]) -> Vec<(String, Vec<u32>)> {
        names
            .iter()
            .map(|t| {
                let tag = (0..self.sites.len())
                    .filter(|s| self.downstream[*s].contains(t))
                    .flat_map(|s| [self.accepted[s].to_bits(), u32::from(self.accepted_on_percentile[s])])
                    .collect();
                (t.clone(), tag)
            })
            .collect()
    }

    /// The part of `model` from site `l`'s bound nodes (`dirty`) on, with its inputs per batch,
    /// when it computes the model's first output.
    fn suffix_feeds(&self, model: &ModelProto, dirty: &[String], l: usize) -> Result<Option<(ModelProto, Feeds)>> {
        let suffix = extract_suffix(model, &node_indices(model, dirty)?)?;
        if suffix.recomputed_outputs.first() != Some(&true)
            || suffix.boundary.iter().any(|t| self.downstream[l].contains(t))
        {
            return Ok(None);
        }
        // When a value this suffix reads is stale, every stale value that some site's suffix
        // reads is computed in the same clean run: the accepted point changes one site at a
        // time, so most of them are read before they change again.
        let batches = &self.holdout.batches;
        if !self.clean.stale(&self.tagged(&suffix.boundary), batches).is_empty() {
            let every: Vec<String> = self.boundaries.iter().flatten().cloned().collect();
            self.clean
                .refresh(&self.accepted_model, &self.tagged(&every), batches)?;
        }
        let feeds = self.clean.values(&suffix.boundary, batches);
        Ok(Some((suffix.model, feeds)))
    }
}

/// The main-graph positions of the nodes named `names`.
fn node_indices(model: &ModelProto, names: &[String]) -> Result<Vec<usize>> {
    let graph = model.graph.as_ref().context("model has a graph")?;
    Ok(names
        .iter()
        .filter_map(|name| graph.node.iter().position(|n| n.name() == name))
        .collect())
}

/// The original's weights under each fault pattern of the sweep: per pattern, every weight
/// tensor's values as the format stores and loads them (integer tensors as their own words),
/// with that pattern's flips.
fn fault_patterns(original: &ModelProto, sweep: &FaultSweep) -> Vec<HashMap<String, Values>> {
    let weights = Weights::of(original);
    let stored: Vec<_> = weights.tensors.iter().map(|t| t.store(sweep.format)).collect();
    let float_bits: Vec<u32> = (0..sweep.format.bits()).collect();
    let bits: Vec<Vec<u32>> = stored.iter().map(|s| flippable_bits(s, &float_bits)).collect();
    let tensors: Vec<(&str, usize, &[u32])> = weights
        .tensors
        .iter()
        .zip(&stored)
        .zip(&bits)
        .map(|((t, s), b)| (t.name.as_str(), s.words.len(), b.as_slice()))
        .collect();
    let mut patterns = Vec::new();
    for ber in &sweep.bers {
        for trial in 0..sweep.patterns {
            let mut words: Vec<Vec<u32>> = stored.iter().map(|s| s.words.clone()).collect();
            for flip in sample_flips_in(&tensors, *ber, sweep.seed, trial as u64) {
                words[flip.tensor][flip.element] ^= 1 << flip.bit;
            }
            patterns.push(
                weights
                    .tensors
                    .iter()
                    .zip(words.iter().zip(&stored))
                    .map(|(t, (w, s))| (t.name.clone(), load(s, w, sweep.format)))
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
    Split {
        fit: samples.select(&fit),
        held: samples.select(&held),
        check: samples.select(&check_rows),
        check_rows,
    }
}

/// The calibrated bounds a search scales, per site: from the per-neuron maxima, and (if asked)
/// from a per-neuron percentile, both on the fit split.
pub struct Bases<'a> {
    pub maxima: &'a [Bound],
    pub percentiles: Option<&'a [Bound]>,
}

/// Searches one scale per site for the bounds `bases` (calibrated on the fit split), checking
/// candidates on `checked` (with `labels` of those samples, if given). The steps: measure the
/// reference and the calibrated point, tune layer by layer (`Run::layer_by_layer`), then
/// descend on the whole model (`Run::coordinate_descent`), and log what was done.
pub fn search(
    original: &ModelProto,
    sites: &[ActivationSite],
    bases: &Bases,
    mode: Mode,
    checked: &Samples,
    labels: Option<&[usize]>,
    options: &SearchOptions,
) -> Result<(Vec<Bound>, SearchLog)> {
    let started = Instant::now();
    let mut search = Search::new(original, sites, bases, mode, checked, labels, options)?;
    let reference_metric = search.holdout.reference_metric();
    let n = sites.len();
    let budget = options.budget * SAFETY;
    let threshold = reference_metric - budget;
    let resilience = matches!(options.objective, Objective::Resilience(_));
    let scales = vec![1.0f32; n];
    let calibrated_metric = full_metric(search.check(&scales, None, f64::NEG_INFINITY)?);
    let calibrated_fault_metric = if resilience {
        Some(full_metric(search.fault_check(&scales, f64::NEG_INFINITY)?))
    } else {
        None
    };
    search.accepted_metric = calibrated_metric;
    let mut run = Run {
        search: &mut search,
        resilience,
        best_fault: calibrated_fault_metric.unwrap_or(0.0),
        scales,
        steps: vec![Vec::new(); n],
        stopped: "converged",
    };
    run.layer_by_layer(reference_metric, budget, threshold)?;
    if run.stopped == "converged" {
        run.coordinate_descent(threshold)?;
    }
    let Run {
        best_fault,
        scales,
        steps,
        stopped,
        ..
    } = run;
    let final_metric = full_metric(search.check(&scales, None, f64::NEG_INFINITY)?);
    let bounds: Vec<Bound> = scales
        .iter()
        .enumerate()
        .map(|(l, s)| scaled(search.base(l), *s))
        .collect();
    let layers = layer_logs(sites, bases, &bounds, &scales, steps, &search.on_percentile);
    let ratios = layers
        .iter()
        .map(|l| f64::from(l.bound_mean_after) / f64::from(l.bound_mean_before).max(f64::MIN_POSITIVE));
    let log = SearchLog {
        metric: if labels.is_some() { "accuracy" } else { "agreement" },
        holdout_samples: search.holdout.truth.len(),
        reference: reference_metric,
        threshold,
        objective: if resilience { "resilience" } else { "tight" },
        calibrated_fault_metric,
        final_fault_metric: calibrated_fault_metric.map(|_| best_fault),
        calibrated_metric,
        final_metric,
        evaluations: search.evaluations,
        seconds: started.elapsed().as_secs_f64(),
        stopped,
        mean_bound_ratio: ratios.sum::<f64>() / n.max(1) as f64,
        layers,
    };
    Ok((bounds, log))
}

/// The metric of a check that ran to the end.
fn full_metric(check: Check) -> f64 {
    match check {
        Check::Metric(m) | Check::Below(m) => m,
    }
}

/// One search from the calibrated point: the scales accepted so far, every step tried per
/// site, the best metric under faults (objective resilience), and why it stopped.
struct Run<'s, 'a> {
    search: &'s mut Search<'a>,
    resilience: bool,
    best_fault: f64,
    scales: Vec<f32>,
    steps: Vec<Vec<Step>>,
    stopped: &'static str,
}

impl Run<'_, '_> {
    /// Whether `candidate` (which differs from the accepted point at site `changed`) is within
    /// the budget, and (objective resilience) no worse under faults; accepts it if so.
    fn judge(&mut self, candidate: &[f32], changed: usize, allowed: f64) -> Result<Step> {
        let search = &mut *self.search;
        let check = search.check(candidate, Some(changed), allowed)?;
        let (metric, at_most) = match check {
            Check::Metric(m) => (Some(m), None),
            Check::Below(m) => (None, Some(m)),
        };
        let mut step = Step {
            base: if search.on_percentile[changed] {
                Base::Percentile
            } else {
                Base::Maximum
            },
            scale: candidate[changed],
            metric,
            at_most,
            fault_metric: None,
            fault_at_most: None,
            accepted: check.reaches(allowed),
        };
        if step.accepted && self.resilience {
            match search.fault_check(candidate, self.best_fault)? {
                Check::Metric(fault) => {
                    step.accepted = fault >= self.best_fault;
                    if step.accepted {
                        self.best_fault = fault;
                    }
                    step.fault_metric = Some(fault);
                }
                Check::Below(at_most) => {
                    step.accepted = false;
                    step.fault_at_most = Some(at_most);
                }
            }
        }
        if step.accepted {
            search.accept(candidate)?;
            search.accepted_metric = metric.unwrap_or(search.accepted_metric);
        }
        Ok(step)
    }

    /// Whether the evaluation or time budget is spent; if so, records why.
    fn out_of_budget(&mut self) -> bool {
        match self.search.out_of_budget() {
            Some(reason) => {
                self.stopped = reason;
                true
            }
            None => false,
        }
    }

    /// Phase 1: layer by layer, last first, each allowed its share of the budget.
    fn layer_by_layer(&mut self, reference_metric: f64, budget: f64, threshold: f64) -> Result<()> {
        let n = self.scales.len();
        for (k, l) in (0..n).rev().enumerate() {
            let allowed = reference_metric - budget * (k + 1) as f64 / n as f64;
            // Where a few outlying values set the maximum, the percentile takes its place if
            // the check allows it; the bisection then scales whichever base holds.
            if self.search.outliers_dominate(l) {
                if self.out_of_budget() {
                    return Ok(());
                }
                // It must lose nothing on the check: the outliers it cuts are then ones no check
                // sample needs, and the budget stays for the scales.
                self.search.use_percentile(l, true);
                let no_loss = self.search.accepted_metric;
                let current = self.scales.clone();
                let step = self.judge(&current, l, no_loss)?;
                if !step.accepted {
                    self.search.use_percentile(l, false);
                }
                self.steps[l].push(step);
            }
            let (mut lo, mut hi) = (0.0f32, 1.0f32);
            for _ in 0..7 {
                if self.out_of_budget() {
                    return Ok(());
                }
                let mid = (lo + hi) / 2.0;
                let mut candidate = self.scales.clone();
                candidate[l] = mid;
                let step = self.judge(&candidate, l, allowed.max(threshold))?;
                if step.accepted {
                    hi = mid;
                    self.scales = candidate;
                } else {
                    lo = mid;
                }
                self.steps[l].push(step);
            }
        }
        Ok(())
    }

    /// Phase 2: coordinate descent on the whole model, with the full budget, until a round
    /// changes nothing.
    fn coordinate_descent(&mut self, threshold: f64) -> Result<()> {
        loop {
            let mut changed = false;
            for l in (0..self.scales.len()).rev() {
                if self.out_of_budget() {
                    return Ok(());
                }
                let mut candidate = self.scales.clone();
                candidate[l] *= 0.9;
                let step = self.judge(&candidate, l, threshold)?;
                if step.accepted {
                    self.scales = candidate;
                    changed = true;
                }
                self.steps[l].push(step);
            }
            if !changed {
                return Ok(());
            }
        }
    }
}

/// Per site: the base and scale found, the mean bound before and after, every step tried.
fn layer_logs(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harden::bounds::{Granularity, bound_from_maxima};
    use crate::harden::calibrate::{CalibrateOptions, calibrate};
    use fitact_passes::activations::find_relus;
    use std::path::PathBuf;

    /// The ResNet-style fixture (residual Adds: sites on parallel paths), its calibrated
    /// per-channel bounds, and the first `count` calibration samples.
    fn resnet(count: usize) -> (ModelProto, Vec<ActivationSite>, Vec<Bound>, Samples) {
        let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let model = crate::model_io::read_model(&fixtures.join("resnet.onnx"))
            .unwrap()
            .model;
        let samples = prefix(
            &crate::data::dataset::load_samples(&fixtures.join("calib.npy"), &model).unwrap(),
            count,
        );
        let sites = find_relus(&model);
        let options = CalibrateOptions {
            engine: Engine::tract(),
            batch_size: 8,
            progress: false,
            top: 0,
        };
        let calibration = calibrate(&model, &samples, &sites, &options).unwrap();
        let bounds = calibration
            .activations
            .iter()
            .map(|a| bound_from_maxima(&a.neuron_max, Granularity::Channel, 0.001))
            .collect();
        (model, sites, bounds, samples)
    }

    fn bases(maxima: &[Bound]) -> Bases<'_> {
        Bases {
            maxima,
            percentiles: None,
        }
    }

    fn options() -> SearchOptions {
        SearchOptions {
            engine: Engine::tract(),
            budget: 0.005,
            objective: Objective::Tight,
            max_evals: None,
            time_limit: None,
            batch_size: 8,
            sdc: SdcRule::Auto,
            sdc_tolerance: crate::replay::judge::DEFAULT_TOLERANCE,
        }
    }

    fn metric(check: Check) -> f64 {
        match check {
            Check::Metric(m) => m,
            Check::Below(m) => panic!("a check with no threshold stopped early (at most {m})"),
        }
    }

    #[test]
    fn suffix_checks_on_cached_values_match_whole_model_runs_as_points_are_accepted() {
        let (model, sites, base, samples) = resnet(48);
        let options = options();
        let mut search = Search::new(&model, &sites, &bases(&base), Mode::Zero, &samples, None, &options).unwrap();
        let n = sites.len();
        let mut scales = vec![1.0f32; n];
        // Accept tight scales at sites on both sides of residual joins, in an order that
        // invalidates cached values upstream and downstream of the next candidate.
        for (step, l) in [n - 1, 0, n / 2, 1, n - 2, n / 2 + 1].into_iter().enumerate() {
            for k in [l, (l + 3) % n, 0] {
                let mut candidate = scales.clone();
                candidate[k] *= 0.6;
                let by_suffix = metric(search.check(&candidate, Some(k), f64::NEG_INFINITY).unwrap());
                let whole = metric(search.check(&candidate, None, f64::NEG_INFINITY).unwrap());
                assert_eq!(by_suffix, whole, "step {step}, site {k}, scales {candidate:?}");
            }
            scales[l] *= 0.6;
            search.accept(&scales).unwrap();
        }
        assert!(
            metric(search.check(&scales, None, f64::NEG_INFINITY).unwrap()) < 1.0,
            "the scales cut something"
        );
    }

    #[test]
    fn suffix_checks_stay_right_as_sites_try_and_take_their_percentile_base() {
        let (model, sites, maxima, samples) = resnet(48);
        let percentiles: Vec<Bound> = maxima.iter().map(|b| scaled(b, 0.7)).collect();
        let bases = Bases {
            maxima: &maxima,
            percentiles: Some(&percentiles),
        };
        let options = options();
        let mut search = Search::new(&model, &sites, &bases, Mode::Zero, &samples, None, &options).unwrap();
        let n = sites.len();
        let scales = vec![1.0f32; n];
        // As the search does: a site tries its percentile base (a check that may refresh the
        // cached values of every site), then takes it or goes back to its maxima.
        for (trial, l) in [n / 2, 0, n - 1, 1, n / 2 + 1].into_iter().enumerate() {
            search.use_percentile(l, true);
            let by_suffix = metric(search.check(&scales, Some(l), f64::NEG_INFINITY).unwrap());
            assert_eq!(
                by_suffix,
                metric(search.check(&scales, None, f64::NEG_INFINITY).unwrap())
            );
            if trial % 2 == 0 {
                search.accept(&scales).unwrap();
            } else {
                search.use_percentile(l, false);
            }
            for k in [0, n / 2 + 2, n - 1] {
                let mut candidate = scales.clone();
                candidate[k] = 0.8;
                let by_suffix = metric(search.check(&candidate, Some(k), f64::NEG_INFINITY).unwrap());
                let whole = metric(search.check(&candidate, None, f64::NEG_INFINITY).unwrap());
                assert_eq!(by_suffix, whole, "trial {trial} at site {l}, candidate at site {k}");
            }
        }
    }

    #[test]
    fn a_check_that_stops_early_decides_as_a_full_check_would() {
        let (model, sites, base, samples) = resnet(48);
        let options = options();
        let mut search = Search::new(&model, &sites, &bases(&base), Mode::Zero, &samples, None, &options).unwrap();
        let n = sites.len();
        let mut stopped_early = 0;
        for (l, scale) in [(n - 1, 0.2), (0, 0.3), (n / 2, 0.5), (2, 0.8), (n - 1, 0.95)] {
            let mut candidate = vec![1.0f32; n];
            candidate[l] = scale;
            let full = metric(search.check(&candidate, None, f64::NEG_INFINITY).unwrap());
            for allowed in [full - 0.05, full, full + 1e-9, full + 0.1] {
                match search.check(&candidate, Some(l), allowed).unwrap() {
                    Check::Metric(m) => {
                        assert_eq!(m, full);
                        assert!(m >= allowed);
                    }
                    Check::Below(at_most) => {
                        assert!(
                            full < allowed,
                            "rejected at {at_most}, but the full metric {full} reaches {allowed}"
                        );
                        assert!(at_most < allowed && at_most >= full);
                        stopped_early += 1;
                    }
                }
            }
        }
        assert!(stopped_early >= 5, "thresholds above the metric stop the check");
    }

    #[test]
    fn the_check_samples_run_hardest_first() {
        let (model, _, _, samples) = resnet(48);
        let holdout = Holdout::new(&Engine::tract(), &model, &samples, None, &options()).unwrap();
        assert!(
            holdout.original.margins.windows(2).all(|w| w[0] <= w[1]),
            "{:?}",
            holdout.original.margins
        );
        assert_eq!(holdout.offsets, vec![0, 8, 16, 24, 32, 40]);
        assert_eq!(holdout.reference_metric(), 1.0);
    }
}
