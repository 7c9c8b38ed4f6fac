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
//! Candidates are checked by k-fold (`k_fold`, `FOLDS` folds of every `FOLDS`-th sample): for
//! each fold, the bounds fitted on the other folds are checked on it, so every check sample is
//! cut by bounds that never saw it, as new data will be, and no sample is spent on checking
//! alone (at most `CHECK_SAMPLES` are checked). The metric is the original model's top-1
//! predictions kept (agreement) or, with labels, the samples the original gets right that
//! stay right (top-1 accuracy without a candidate's gains: `Holdout::kept`). The budget is spent from the
//! calibrated bounds' own k-fold metric (scale 1) when it is below the original's: fitted on
//! fewer samples, the fold bounds cut more than the bounds fitted on every sample, which are
//! the ones written (scaled as searched), so a drop measured from the original would spend
//! the budget on what the written bounds do not cut. The check set is small and every
//! candidate is checked on it, so the best candidates are the ones it favours by chance; to
//! keep the budget on new data, a sample counts only if it keeps most of its margin, and the
//! search holds the drop within `SAFETY` x the budget. A check runs its folds in parallel
//! (rayon); the decisions, and so the bounds, do not depend on how many threads run them.
//!
//! Objectives: `tight` accepts every candidate within the budget (the smallest bounds).
//! `resilience` runs the same search, then chooses along its path (every point it accepted,
//! from the calibrated bounds to the tightest) the point with the best accuracy (or agreement)
//! under weight faults, checking `FAULT_POINTS` evenly spaced points on a fixed set of fault
//! patterns (the same flips in the same weights for every point: common random numbers, as
//! `evaluate` draws them) at each BER of a sweep, in the original weights (the bound tensors
//! are left fault-free here). A tighter point is taken only for a gain over the calibrated
//! one with 95% confidence, paired by pattern (`choose_under_faults`): where the faults
//! reward no tightening (float32 at low BERs: any zero-above bound removes the damage it can
//! reach) the bounds stay calibrated and lose no clean accuracy; where they do (fixed point,
//! whose flips make values larger but finite) a tighter point wins. Single steps, checked under faults one
//! by one (FT-ClipAct's threshold search), were measured first: each tightening alone gains
//! less than chance, so it stopped at the calibrated bounds on q15.16 where the path's end
//! gains 1-2 points. Every accepted point meets the budget, so a search stopped by its
//! evaluation or time limit returns the best point found so far.
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
use crate::faults::statistics::lower_bound_95;
use crate::faults::weights::{Values, Weights, flippable_bits, load};
use crate::replay::judge::{Judge, SdcRule, check_labelled};
use crate::replay::{Batches, CleanValues, Feeds, Predictions, predict, prediction_runner, push_predictions};
use anyhow::{Context, Result};
use fitact_passes::activations::{ActivationKind, ActivationSite};
use fitact_passes::bound_activations::{Bound, BoundRequest, Mode, bound_activations};
use fitact_passes::extract_suffix::{downstream_tensors, extract_suffix};
use fitact_passes::onnx::ModelProto;
use fitact_passes::tensor::FLOAT;
use ndarray::{ArrayD, IxDyn, Zip};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// most it could still have been (one sample short of the threshold: `Tally::check`).
    pub at_most: Option<f64>,
    pub accepted: bool,
}

/// Objective `resilience`: one point of the search's path checked under the fault sweep.
#[derive(Debug, Clone, Serialize)]
pub struct FaultPoint {
    /// Which point the search accepted, in order (0: the calibrated bounds).
    pub accepted: usize,
    /// Mean over activations of the scale, and the check metric, at that point.
    pub mean_scale: f64,
    pub metric: f64,
    /// The metric under faults (mean over the sweep's patterns); the one-sided 95% lower
    /// bound of its gain over the calibrated point, paired by pattern (None for that point);
    /// whether it was chosen.
    pub fault_metric: f64,
    pub gain_lower_bound: Option<f64>,
    pub chosen: bool,
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
    /// Per batch: the row of its first sample; per sample: its batch.
    offsets: Vec<usize>,
    batch_of: Vec<usize>,
    /// The share of its margin a sample must keep to count (`MARGIN_KEPT`, or 0: its class).
    margin_kept: f32,
}

/// What a check counted: whether it ran to the end, per batch the samples the original keeps
/// and the candidate lost, and per sample whether the candidate keeps it (None: not reached).
struct Tallied {
    complete: bool,
    lost: Vec<usize>,
    kept: Vec<Option<bool>>,
    /// Samples judged by a run, and by the accepted point's flag.
    run: usize,
    reused: usize,
}

impl Tallied {
    fn new(holdout: &Holdout) -> Tallied {
        Tallied {
            complete: true,
            lost: vec![0; holdout.batches.batches.len()],
            kept: vec![None; holdout.len()],
            run: 0,
            reused: 0,
        }
    }

    fn stopped(mut self) -> Tallied {
        self.complete = false;
        self
    }

    /// Every sample's flag, when the check ran to the end.
    fn flags(&self) -> Option<Vec<bool>> {
        if self.complete {
            self.kept.iter().copied().collect()
        } else {
            None
        }
    }
}

/// The check samples a resilience search runs under each fault pattern (a prefix of the check set).
pub const FAULT_SAMPLES: usize = 128;

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

/// A check's count over `total` samples, which may run in parallel over the folds: how many
/// samples were missed (not kept) so far, and how many may be before the metric falls below
/// what is allowed. A fold's check stops as soon as the count says so; every miss it counts
/// is real, so a check that stops decides as the full one would, however the folds interleave.
struct Tally {
    total: usize,
    /// Whether any count reaches the threshold, and if so how many misses it allows.
    reachable: bool,
    may_miss: usize,
    missed: AtomicUsize,
}

impl Tally {
    /// A count that reaches `allowed` when the samples kept are at least the smallest number
    /// whose share is `allowed` (so that the decision is a count's, whatever the order).
    fn new(total: usize, allowed: f64) -> Tally {
        let needed = (0..=total).find(|k| *k as f64 / total.max(1) as f64 >= allowed);
        Tally {
            total,
            reachable: needed.is_some(),
            may_miss: needed.map_or(0, |k| total - k),
            missed: AtomicUsize::new(0),
        }
    }

    /// Counts `n` more misses; whether the metric can still reach the threshold.
    fn miss(&self, n: usize) -> bool {
        let missed = self.missed.fetch_add(n, Ordering::Relaxed) + n;
        self.reachable && missed <= self.may_miss
    }

    /// What the check found: the metric when every sample was checked, else the most it
    /// could still have been, as the count knows it whatever the folds' interleaving (one
    /// sample short of the threshold; every sample when no count reaches it).
    fn check(&self, complete: bool) -> Check {
        let share = |kept: usize| kept as f64 / self.total.max(1) as f64;
        if complete {
            Check::Metric(share(self.total - self.missed.load(Ordering::Relaxed).min(self.total)))
        } else if self.reachable {
            Check::Below(share((self.total - self.may_miss).saturating_sub(1)))
        } else {
            Check::Below(share(self.total))
        }
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
        let offsets: Vec<usize> = batches
            .batches
            .iter()
            .scan(0, |row, (_, valid)| {
                let first = *row;
                *row += valid;
                Some(first)
            })
            .collect();
        let batch_of = batches
            .batches
            .iter()
            .enumerate()
            .flat_map(|(b, (_, valid))| std::iter::repeat_n(b, *valid))
            .collect();
        Ok(Holdout {
            batches,
            truth: order.iter().map(|i| truth[*i]).collect(),
            offsets,
            batch_of,
            margin_kept: MARGIN_KEPT,
            judge,
            original: reference.select(&order),
            allowance,
        })
    }

    /// Whether sample `i`, row `j` of `predictions`, counts. By top-1: one the original gets
    /// right, still right with at least `MARGIN_KEPT` of its margin. A sample the original gets
    /// wrong never counts, even when a candidate gets it right: with labels, such gains on the
    /// check set offset losses (the search picks the candidates whose lucky gains pay for
    /// their losses), and the losses carry to new data while the gains do not (measured:
    /// -0.45 to -0.80 points against the calibrated bounds on the test split, ResNet and
    /// AlexNet fixtures, 128 and 512 samples). By tolerance: the original's output, within the
    /// tolerance.
    fn kept(&self, i: usize, predictions: &Predictions, j: usize) -> bool {
        match self.judge {
            Judge::Top1 => {
                let (class, margin) = (predictions.classes[j], predictions.margins[j]);
                let original_right = self.original.classes[i] == self.truth[i];
                original_right && class == self.truth[i] && margin >= self.margin_kept * self.original.margins[i]
            }
            Judge::Tolerance { .. } => self.judge.same_row(&self.original, i, predictions, j, self.allowance),
        }
    }

    /// How many samples the original itself keeps: all of them for agreement; those it gets
    /// right with labels (each keeps its whole margin).
    fn reference_kept(&self) -> usize {
        self.original
            .classes
            .iter()
            .zip(&self.truth)
            .filter(|(r, t)| r == t)
            .count()
    }

    fn len(&self) -> usize {
        self.truth.len()
    }

    /// The samples of batch `b`.
    fn batch_rows(&self, b: usize) -> std::ops::Range<usize> {
        self.offsets[b]..self.offsets[b] + self.batches.batches[b].1
    }

    /// Records whether the candidate keeps sample `i`; 1 if it misses it.
    fn record(&self, i: usize, kept: bool, out: &mut Tallied) -> usize {
        out.kept[i] = Some(kept);
        if kept {
            return 0;
        }
        if self.original.classes[i] == self.truth[i] {
            out.lost[self.batch_of[i]] += 1;
        }
        1
    }

    /// Judges samples `rows` by the first rows of `logits`; how many the candidate misses.
    fn judge_rows(&self, rows: &[usize], logits: &Value, out: &mut Tallied) -> Result<usize> {
        let mut predictions = if self.judge.needs_values() {
            Predictions::keeping_values()
        } else {
            Predictions::default()
        };
        push_predictions(&mut predictions, logits, rows.len(), self.batches.one_at_a_time)?;
        out.run += rows.len();
        Ok(rows
            .iter()
            .enumerate()
            .map(|(j, &i)| self.record(i, self.kept(i, &predictions, j), out))
            .sum())
    }

    /// Checks a candidate whose first output on batch `b` is `logits(b)`, batch by batch in
    /// `order`, counting its misses in `tally`, and stops as soon as the tally is out of
    /// reach.
    fn tally(&self, order: &[usize], tally: &Tally, mut logits: impl FnMut(usize) -> Result<Value>) -> Result<Tallied> {
        let mut out = Tallied::new(self);
        for &b in order {
            let rows: Vec<usize> = self.batch_rows(b).collect();
            let missed = self.judge_rows(&rows, &logits(b)?, &mut out)?;
            if !tally.miss(missed) {
                return Ok(out.stopped());
            }
        }
        Ok(out)
    }

    /// As `tally`, where a sample the candidate cannot change (`unchanged`) keeps the accepted
    /// point's flag (`accepted`) without a run; the others run `chunk` at a time, in the order
    /// their batches come (`run(rows)`: the first output on those samples, padded or not).
    fn tally_changed(
        &self,
        order: &[usize],
        tally: &Tally,
        (unchanged, accepted): (&[bool], &[bool]),
        chunk: usize,
        mut run: impl FnMut(&[usize]) -> Result<Value>,
    ) -> Result<Tallied> {
        let mut out = Tallied::new(self);
        let mut pending = Vec::new();
        for (k, &b) in order.iter().enumerate() {
            let mut missed = 0;
            for i in self.batch_rows(b) {
                if unchanged[i] {
                    out.reused += 1;
                    missed += self.record(i, accepted[i], &mut out);
                } else {
                    pending.push(i);
                }
            }
            if !tally.miss(missed) {
                return Ok(out.stopped());
            }
            let last = k + 1 == order.len();
            while pending.len() >= chunk || (last && !pending.is_empty()) {
                let rows: Vec<usize> = pending.drain(..chunk.min(pending.len())).collect();
                let missed = self.judge_rows(&rows, &run(&rows)?, &mut out)?;
                if !tally.miss(missed) {
                    return Ok(out.stopped());
                }
            }
        }
        Ok(out)
    }

    /// Checks a candidate on every batch, in `order` (see `tally`), with a count of its own.
    fn check(
        &self,
        order: &[usize],
        allowed: f64,
        logits: impl FnMut(usize) -> Result<Value>,
    ) -> Result<(Check, Vec<usize>)> {
        let tally = Tally::new(self.len(), allowed);
        let out = self.tally(order, &tally, logits)?;
        Ok((tally.check(out.complete), out.lost))
    }
}

/// One fold of the check (`k_fold`): the bounds fitted on the other folds' samples, and the
/// model they give at the accepted point, checked on this fold's samples, which they never saw.
struct FoldCheck<'a> {
    bases: Bases<'a>,
    holdout: Holdout,
    /// The model of the accepted scales on this fold's bounds. A candidate differs from them at
    /// one site; every tensor not downstream of it has this model's clean values.
    accepted_model: ModelProto,
    /// Clean values of `accepted_model`, each tagged with the accepted scales of the sites
    /// upstream of it (`Shared::downstream`), so that a value stays valid until one of those
    /// changes.
    clean: CleanValues,
    /// Per check batch: samples lost by candidates so far. The check runs the batches that
    /// lost most first, so a candidate that fails fails early.
    lost: Vec<usize>,
    /// Per check sample: whether the accepted point keeps it, once a complete check of that
    /// point has said so (a candidate reuses the flag of every sample it cannot change).
    accepted_kept: Option<Vec<bool>>,
    /// The last complete check's point (`Point`) and its flags, for `Search::accept`.
    last: Option<(Point, Vec<bool>)>,
}

/// A point of the search: every site's scale (as bits) and whether it is on its percentile.
type Point = (Vec<u32>, Vec<bool>);

/// What every fold's check reads and none changes while it runs.
struct Shared<'a> {
    original: &'a ModelProto,
    sites: &'a [ActivationSite],
    mode: Mode,
    /// Per site, whether its scale applies to its percentile bound instead of its maxima:
    /// for the candidate (`on_percentile`) and at the accepted point.
    on_percentile: Vec<bool>,
    accepted_on_percentile: Vec<bool>,
    /// The scales accepted so far.
    accepted: Vec<f32>,
    /// Per site: the tensors downstream of its bound, and the tensors its suffix reads (the
    /// same in every fold's model: only bound values differ).
    downstream: Vec<HashSet<String>>,
    boundaries: Vec<Vec<String>>,
    /// Per site: the tensor its bound compares, when its suffix reads it (`unchanged_samples`).
    compared: Vec<Option<String>>,
    /// Whether a candidate reuses the accepted point's flags of the samples it cannot change
    /// (off only to test that this changes no decision).
    reuse_unchanged: bool,
    /// Check samples judged by a run, and by the accepted point's flag without one.
    samples_run: AtomicUsize,
    samples_reused: AtomicUsize,
    options: &'a SearchOptions,
}

struct Search<'a> {
    shared: Shared<'a>,
    folds: Vec<FoldCheck<'a>>,
    /// The bounds fitted on every sample: the ones written, and the ones the check under
    /// faults scales.
    full: Bases<'a>,
    /// The check metric of the accepted point.
    accepted_metric: f64,
    /// Objective `resilience`: per pattern, the faulty values of the original's weights, and
    /// the samples they run on.
    patterns: Vec<HashMap<String, Values>>,
    fault_holdout: Option<Holdout>,
    evaluations: usize,
    started: Instant,
}

/// Bisection steps per site in the layer-by-layer phase: the scale is found to 1/2^steps.
pub const BISECTION_STEPS: usize = 7;

/// At most this many samples check each candidate against the budget.
pub const CHECK_SAMPLES: usize = 512;

/// The folds of the check: bounds fitted on all folds but one are checked on that one.
pub const FOLDS: usize = 4;

/// The fewest calibration samples a search runs on: 16 per fold, so that a bound fitted on
/// the other folds has seen 48. Below, one sample is more than a 0.5% budget could hold twice.
pub const MIN_SAMPLES: usize = 64;

/// Calibration samples cut into `FOLDS` folds for a search.
#[derive(Debug, Clone, PartialEq)]
pub struct KFold {
    /// Per fold, its rows: every `FOLDS`-th sample, so each fold spreads over the file.
    pub folds: Vec<Vec<usize>>,
    /// Per fold, the rows of it each candidate is checked on: all of them, unless there are
    /// more than `CHECK_SAMPLES` samples in all (then `CHECK_SAMPLES` spread evenly over the
    /// file, each in its own fold).
    pub checks: Vec<Vec<usize>>,
}

/// The k-fold cut of `count` samples, deterministically.
pub fn k_fold(count: usize) -> KFold {
    let checked: Vec<usize> = if count <= CHECK_SAMPLES {
        (0..count).collect()
    } else {
        (0..CHECK_SAMPLES).map(|k| k * count / CHECK_SAMPLES).collect()
    };
    let of_fold = |rows: &[usize], f: usize| rows.iter().copied().filter(|r| r % FOLDS == f).collect();
    let all: Vec<usize> = (0..count).collect();
    KFold {
        folds: (0..FOLDS).map(|f| of_fold(&all, f)).collect(),
        checks: (0..FOLDS).map(|f| of_fold(&checked, f)).collect(),
    }
}

/// What the search checks candidates on: the calibration samples (with their labels, if
/// given), their folds, per fold the bounds fitted on the others, and the bounds fitted on all.
pub struct SearchData<'a> {
    pub samples: &'a Samples,
    pub labels: Option<&'a [usize]>,
    pub k_fold: &'a KFold,
    pub fold_bases: Vec<Bases<'a>>,
    pub full: Bases<'a>,
}

impl SearchData<'_> {
    /// The samples of `rows`, and their labels.
    fn rows(&self, rows: &[usize]) -> (Samples, Option<Vec<usize>>) {
        let labels = self.labels.map(|l| rows.iter().map(|r| l[*r]).collect());
        (self.samples.select(rows), labels)
    }

    /// The samples a resilience search runs under each fault pattern: the first
    /// `FAULT_SAMPLES` checked.
    fn fault_rows(&self) -> Vec<usize> {
        let mut rows: Vec<usize> = self.k_fold.checks.iter().flatten().copied().collect();
        rows.sort_unstable();
        rows.truncate(FAULT_SAMPLES);
        rows
    }
}

impl<'a> Search<'a> {
    /// Runs the original on every fold's check samples (and the fault samples of a resilience
    /// search), and prepares the calibrated point as the accepted one.
    fn new(
        original: &'a ModelProto,
        sites: &'a [ActivationSite],
        data: &SearchData<'a>,
        mode: Mode,
        options: &'a SearchOptions,
    ) -> Result<Self> {
        let started = Instant::now();
        let fault_holdout = match &options.objective {
            Objective::Tight => None,
            Objective::Resilience(_) => {
                let (samples, labels) = data.rows(&data.fault_rows());
                // Under faults a sample counts by its class alone: margins shrink under most
                // fault patterns, and more so where tighter bounds cut, so the margin rule
                // (there for the budget on new data) would count against the tighter points
                // losses that accuracy does not see.
                let mut holdout = Holdout::new(&options.engine, original, &samples, labels.as_deref(), options)?;
                holdout.margin_kept = 0.0;
                Some(holdout)
            }
        };
        let shared = Shared {
            original,
            sites,
            mode,
            on_percentile: vec![false; sites.len()],
            accepted_on_percentile: vec![false; sites.len()],
            accepted: vec![1.0; sites.len()],
            downstream: Vec::new(),
            boundaries: Vec::new(),
            compared: Vec::new(),
            reuse_unchanged: true,
            samples_run: AtomicUsize::new(0),
            samples_reused: AtomicUsize::new(0),
            options,
        };
        let mut folds = Vec::new();
        // Per site, the nodes its bound emitted: the same in every fold's model (only bound
        // values differ).
        let mut emitted = Vec::new();
        for (rows, bases) in data.k_fold.checks.iter().zip(&data.fold_bases) {
            let (samples, labels) = data.rows(rows);
            let holdout = Holdout::new(&options.engine, original, &samples, labels.as_deref(), options)?;
            let (accepted_model, nodes) = shared.harden(bases, &shared.accepted)?;
            emitted = nodes;
            folds.push(FoldCheck {
                bases: *bases,
                lost: vec![0; holdout.batches.batches.len()],
                holdout,
                accepted_model,
                clean: CleanValues::new(&options.engine),
                accepted_kept: None,
                last: None,
            });
        }
        let mut search = Search {
            shared,
            folds,
            full: data.full,
            accepted_metric: 0.0,
            patterns: match &options.objective {
                Objective::Tight => Vec::new(),
                Objective::Resilience(sweep) => fault_patterns(original, sweep),
            },
            fault_holdout,
            evaluations: 0,
            started,
        };
        let calibrated_model = &search.folds.last().context("a search has folds")?.accepted_model;
        for (site, names) in sites.iter().zip(&emitted) {
            let dirty = node_indices(calibrated_model, names)?;
            search
                .shared
                .downstream
                .push(downstream_tensors(calibrated_model, &dirty)?);
            let boundary = extract_suffix(calibrated_model, &dirty)?.boundary;
            // A bounded Relu's nodes compare its input; every other bound, the activation's output.
            let compared = [&site.output, &site.input]
                .into_iter()
                .take(if site.kind == ActivationKind::Relu { 2 } else { 1 })
                .find(|t| boundary.contains(t))
                .cloned();
            search.shared.compared.push(compared);
            search.shared.boundaries.push(boundary);
        }
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

impl Shared<'_> {
    /// The bound site `l`'s scale applies to, of `bases`.
    fn base<'b>(&self, bases: &Bases<'b>, l: usize) -> &'b Bound {
        self.base_on(bases, l, self.on_percentile[l])
    }

    /// Site `l`'s percentile bound of `bases` if `percentile` (and there are any), else its maxima.
    fn base_on<'b>(&self, bases: &Bases<'b>, l: usize, percentile: bool) -> &'b Bound {
        match bases.percentiles {
            Some(percentiles) if percentile => &percentiles[l],
            _ => &bases.maxima[l],
        }
    }

    /// The point `scales` (on the current bases).
    fn point(&self, scales: &[f32]) -> Point {
        (scales.iter().map(|s| s.to_bits()).collect(), self.on_percentile.clone())
    }

    /// The accepted point.
    fn accepted_point(&self) -> Point {
        (
            self.accepted.iter().map(|s| s.to_bits()).collect(),
            self.accepted_on_percentile.clone(),
        )
    }

    /// Per check sample of `fold`, whether `candidate` (which differs from the accepted point
    /// at site `l` only) cannot change its output: every value site `l`'s bound compares
    /// (`compared`, in `feeds`: every check sample's) is a number strictly inside both the
    /// candidate's bound and the accepted one, so that either bound passes it as it is.
    /// None when this cannot be told: no flags of the accepted point yet, a tensor the
    /// suffix does not read, not a float tensor with one row per sample, or bounds whose
    /// shape does not broadcast to the sample's.
    fn unchanged_samples(
        &self,
        fold: &FoldCheck,
        candidate: &[f32],
        l: usize,
        feeds: &[(String, Value)],
    ) -> Option<Vec<bool>> {
        if !self.reuse_unchanged || fold.accepted_kept.is_none() {
            return None;
        }
        let name = self.compared[l].as_ref()?;
        let values = feeds.iter().find(|(n, _)| n == name)?.1.f32s().ok()?;
        if values.shape().first() != Some(&fold.holdout.len()) {
            return None;
        }
        let now = scaled(self.base_on(&fold.bases, l, self.on_percentile[l]), candidate[l]);
        let then = scaled(
            self.base_on(&fold.bases, l, self.accepted_on_percentile[l]),
            self.accepted[l],
        );
        let shape = IxDyn(
            &now.dims
                .iter()
                .map(|d| usize::try_from(*d).ok())
                .collect::<Option<Vec<_>>>()?,
        );
        let pairwise = |a: &[f32], b: &[f32], f: fn(f32, f32) -> f32| {
            ArrayD::from_shape_vec(shape.clone(), a.iter().zip(b).map(|(x, y)| f(*x, *y)).collect()).ok()
        };
        let (below, above) = match (&now.low, &then.low) {
            (None, None) => (pairwise(&now.values, &then.values, f32::min)?, None),
            (Some(a), Some(b)) => (
                pairwise(&now.values, &then.values, f32::min)?,
                Some(pairwise(a, b, f32::max)?),
            ),
            _ => return None,
        };
        let sample_shape = &values.shape()[1..];
        let below = below.broadcast(sample_shape)?;
        let above = match &above {
            Some(a) => Some(a.broadcast(sample_shape)?),
            None => None,
        };
        Some(
            values
                .outer_iter()
                .map(|row| {
                    Zip::from(&row).and(&below).all(|v, b| v < b)
                        && above.as_ref().is_none_or(|a| Zip::from(&row).and(a).all(|v, a| v > a))
                })
                .collect(),
        )
    }

    /// The original with `scales` on `bases` (the candidate's), and per site the names of the
    /// nodes its bound emitted.
    fn harden(&self, bases: &Bases, scales: &[f32]) -> Result<(ModelProto, Vec<Vec<String>>)> {
        let mut model = self.original.clone();
        let requests: Vec<BoundRequest> = self
            .sites
            .iter()
            .zip(scales)
            .enumerate()
            .map(|(l, (site, s))| BoundRequest {
                site: site.clone(),
                bound: scaled(self.base(bases, l), *s),
                elem_type: FLOAT,
            })
            .collect();
        let report = bound_activations(&mut model, &requests, self.mode)?;
        anyhow::ensure!(report.skipped.is_empty(), "the search could not bound every activation");
        Ok((model, report.applied.into_iter().map(|a| a.nodes).collect()))
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

    /// The part of `model` from site `l`'s bound nodes (`dirty`) on, with its inputs per batch
    /// of `fold`, when it computes the model's first output.
    fn suffix_feeds(
        &self,
        fold: &FoldCheck,
        model: &ModelProto,
        dirty: &[String],
        l: usize,
    ) -> Result<Option<(ModelProto, Feeds)>> {
        let suffix = extract_suffix(model, &node_indices(model, dirty)?)?;
        if suffix.recomputed_outputs.first() != Some(&true)
            || suffix.boundary.iter().any(|t| self.downstream[l].contains(t))
        {
            return Ok(None);
        }
        // When a value this suffix reads is stale, every stale value that some site's suffix
        // reads is computed in the same clean run: the accepted point changes one site at a
        // time, so most of them are read before they change again.
        let batches = &fold.holdout.batches;
        if !fold.clean.stale(&self.tagged(&suffix.boundary), batches).is_empty() {
            let every: Vec<String> = self.boundaries.iter().flatten().cloned().collect();
            fold.clean
                .refresh(&fold.accepted_model, &self.tagged(&every), batches)?;
        }
        let feeds = fold.clean.values(&suffix.boundary, batches);
        Ok(Some((suffix.model, feeds)))
    }

    /// Checks `candidate` on `fold`, counting in `tally` (see `Holdout::tally`); `only`: the
    /// one site where it differs from the accepted scales, if so, and then only the part from
    /// that site's bound on is rerun, on the accepted model's clean values of what feeds it.
    fn check_fold(&self, fold: &FoldCheck, candidate: &[f32], only: Option<usize>, tally: &Tally) -> Result<Tallied> {
        let (model, emitted) = self.harden(&fold.bases, candidate)?;
        let mut order: Vec<usize> = (0..fold.lost.len()).collect();
        order.sort_by_key(|b| (std::cmp::Reverse(fold.lost[*b]), *b));
        let suffix = match only {
            Some(l) => self.suffix_feeds(fold, &model, &emitted[l], l)?,
            None => None,
        };
        let batches = &fold.holdout.batches;
        let out = match suffix {
            Some((suffix, feeds)) => {
                let runner = self
                    .options
                    .engine
                    .load_for_values(&suffix, &feeds[0], Outputs::Model)?;
                let l = only.context("a suffix has a site")?;
                let every = (self.reuse_unchanged && fold.accepted_kept.is_some())
                    .then(|| stacked(&feeds, batches))
                    .flatten();
                let unchanged = every
                    .as_ref()
                    .and_then(|every| Some((every, self.unchanged_samples(fold, candidate, l, every)?)));
                match (unchanged, &fold.accepted_kept) {
                    (Some((every, unchanged)), Some(accepted)) => {
                        let chunk = feeds[0]
                            .first()
                            .and_then(|(_, v)| v.shape().first().copied())
                            .unwrap_or(1);
                        fold.holdout
                            .tally_changed(&order, tally, (&unchanged, accepted), chunk, |rows| {
                                let values: Vec<(String, Value)> = every
                                    .iter()
                                    .map(|(n, v)| (n.clone(), v.select_rows(rows).pad_rows(chunk)))
                                    .collect();
                                Ok(runner.run_values(&values)?[0].clone())
                            })?
                    }
                    _ => fold
                        .holdout
                        .tally(&order, tally, |b| Ok(runner.run_values(&feeds[b])?[0].clone()))?,
                }
            }
            None => {
                let runner = prediction_runner(&self.options.engine, &model, batches, &[])?;
                fold.holdout.tally(&order, tally, |b| {
                    Ok(runner.run(batches.batches[b].0.clone())?.0[0].clone())
                })?
            }
        };
        Ok(out)
    }
}

impl Search<'_> {
    fn out_of_budget(&self) -> Option<&'static str> {
        let options = self.shared.options;
        if options.max_evals.is_some_and(|m| self.evaluations >= m) {
            return Some("evaluation limit");
        }
        if options.time_limit.is_some_and(|t| self.started.elapsed() >= t) {
            return Some("time limit");
        }
        None
    }

    /// Every check sample, over the folds.
    fn check_count(&self) -> usize {
        self.folds.iter().map(|f| f.holdout.len()).sum()
    }

    /// The share of the check samples the original itself keeps (1 for agreement; its
    /// accuracy with labels).
    fn reference_metric(&self) -> f64 {
        let kept: usize = self.folds.iter().map(|f| f.holdout.reference_kept()).sum();
        kept as f64 / self.check_count().max(1) as f64
    }

    /// The metric under each fault pattern (objective `resilience`) of `scales` on the bounds
    /// fitted on every sample (the ones written) with the current bases, in pattern order
    /// (the patterns run in parallel).
    fn fault_metrics(&mut self, scales: &[f32]) -> Result<Vec<f64>> {
        self.evaluations += 1;
        let (model, _) = self.shared.harden(&self.full, scales)?;
        let weights = Weights::of(&model);
        let holdout = self
            .fault_holdout
            .as_ref()
            .context("a resilience search has fault samples")?;
        let order: Vec<usize> = (0..holdout.batches.batches.len()).collect();
        let engine = &self.shared.options.engine;
        self.patterns
            .par_iter()
            .map(|pattern| {
                let values: Vec<Values> = weights
                    .tensors
                    .iter()
                    .map(|t| pattern.get(&t.name).cloned().unwrap_or_else(|| t.values.clone()))
                    .collect();
                let faulty = Weights::write_into(&model, &values);
                let runner = prediction_runner(engine, &faulty, &holdout.batches, &[])?;
                let run = |b: usize| Ok(runner.run(holdout.batches.batches[b].0.clone())?.0[0].clone());
                Ok(full_metric(holdout.check(&order, f64::NEG_INFINITY, run)?.0))
            })
            .collect()
    }

    /// Makes `scales` (on the current bases) the accepted point; its flags are the last
    /// check's, when that check was of this point and complete.
    fn accept(&mut self, scales: &[f32]) -> Result<()> {
        let shared = &mut self.shared;
        let point = shared.point(scales);
        shared.accepted = scales.to_vec();
        shared.accepted_on_percentile = shared.on_percentile.clone();
        for fold in &mut self.folds {
            fold.accepted_model = shared.harden(&fold.bases, scales)?.0;
            fold.accepted_kept = fold.last.take().filter(|(p, _)| *p == point).map(|(_, flags)| flags);
        }
        Ok(())
    }

    /// Checks `candidate` against `allowed` on every fold, in parallel, the folds that lost
    /// most first; the check stops as soon as the samples missed over all folds put `allowed`
    /// out of reach.
    fn check(&mut self, candidate: &[f32], changed: Option<usize>, allowed: f64) -> Result<Check> {
        self.evaluations += 1;
        let shared = &self.shared;
        let only = changed.filter(|l| (0..candidate.len()).all(|i| i == *l || candidate[i] == shared.accepted[i]));
        let tally = Tally::new(self.check_count(), allowed);
        let results: Vec<Result<Tallied>> = self
            .folds
            .par_iter()
            .map(|fold| shared.check_fold(fold, candidate, only, &tally))
            .collect();
        let point = shared.point(candidate);
        let at_accepted = point == shared.accepted_point();
        let mut complete = true;
        for (fold, result) in self.folds.iter_mut().zip(results) {
            let out = result?;
            shared.samples_run.fetch_add(out.run, Ordering::Relaxed);
            shared.samples_reused.fetch_add(out.reused, Ordering::Relaxed);
            complete &= out.complete;
            fold.lost.iter_mut().zip(&out.lost).for_each(|(total, n)| *total += n);
            fold.last = out.flags().map(|flags| (point.clone(), flags));
            if at_accepted && fold.last.is_some() {
                fold.accepted_kept = fold.last.as_ref().map(|(_, flags)| flags.clone());
            }
        }
        Ok(tally.check(complete))
    }

    /// Puts site `l` on its percentile base (`on`) or back on its maxima, for the candidates
    /// that follow (the accepted point changes with `accept`).
    fn use_percentile(&mut self, l: usize, on: bool) {
        self.shared.on_percentile[l] = on && self.full.percentiles.is_some();
    }

    /// Whether the site's percentile bound is well below its maximum bound (`OUTLIERS`), on
    /// every sample.
    fn outliers_dominate(&self, l: usize) -> bool {
        let sum = |b: &Bound| b.values.iter().map(|v| f64::from(*v)).sum::<f64>();
        self.full
            .percentiles
            .is_some_and(|p| sum(&p[l]) < f64::from(OUTLIERS) * sum(&self.full.maxima[l]))
    }
}

/// Per-batch `feeds` stacked into one value per tensor, a row per sample in check order; None
/// when some value does not have one row per sample of its batch.
fn stacked(feeds: &Feeds, batches: &Batches) -> Option<Vec<(String, Value)>> {
    if batches.one_at_a_time {
        return None;
    }
    let first = feeds.first()?;
    let rows_ok = feeds
        .iter()
        .zip(&batches.batches)
        .all(|(f, (_, valid))| f.iter().all(|(_, v)| v.shape().first() == Some(valid)));
    if !rows_ok {
        return None;
    }
    first
        .iter()
        .enumerate()
        .map(|(k, (name, _))| {
            let parts: Vec<Value> = feeds.iter().map(|f| f[k].1.clone()).collect();
            Some((name.clone(), Value::concat_rows(&parts)?))
        })
        .collect()
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

/// The calibrated bounds a search scales, per site: from the per-neuron maxima, and (if asked)
/// from a per-neuron percentile.
#[derive(Clone, Copy)]
pub struct Bases<'a> {
    pub maxima: &'a [Bound],
    pub percentiles: Option<&'a [Bound]>,
}

/// Searches one scale per site, checking candidates fold by fold (`SearchData`), and returns
/// the scaled bounds fitted on every sample. The steps: measure the reference and the
/// calibrated point (the bounds at scale 1, each fold's checked on samples they did not see),
/// tune layer by layer (`Run::layer_by_layer`), then descend on the whole model
/// (`Run::coordinate_descent`), and log what was done. The budget is spent from the
/// calibrated point's metric, when it is below the original's: the fold bounds, fitted on
/// fewer samples, cut more than the bounds fitted on all will.
pub fn search(
    original: &ModelProto,
    sites: &[ActivationSite],
    data: &SearchData,
    mode: Mode,
    options: &SearchOptions,
) -> Result<(Vec<Bound>, SearchLog)> {
    search_reusing(original, sites, data, mode, options, true)
}

/// `search`, where candidates reuse the accepted point's flags of the samples they cannot
/// change only if `reuse_unchanged` (which changes no decision: tested).
fn search_reusing(
    original: &ModelProto,
    sites: &[ActivationSite],
    data: &SearchData,
    mode: Mode,
    options: &SearchOptions,
    reuse_unchanged: bool,
) -> Result<(Vec<Bound>, SearchLog)> {
    let started = Instant::now();
    let mut search = Search::new(original, sites, data, mode, options)?;
    search.shared.reuse_unchanged = reuse_unchanged;
    let reference_metric = search.reference_metric();
    let n = sites.len();
    let budget = options.budget * SAFETY;
    let resilience = matches!(options.objective, Objective::Resilience(_));
    let scales = vec![1.0f32; n];
    let calibrated_metric = full_metric(search.check(&scales, None, f64::NEG_INFINITY)?);
    let start = reference_metric.min(calibrated_metric);
    let threshold = start - budget;
    search.accepted_metric = calibrated_metric;
    let mut run = Run {
        path: vec![PathPoint {
            scales: scales.clone(),
            on_percentile: search.shared.on_percentile.clone(),
            metric: calibrated_metric,
        }],
        search: &mut search,
        scales,
        steps: vec![Vec::new(); n],
        stopped: "converged",
    };
    run.layer_by_layer(start, budget, threshold)?;
    if run.stopped == "converged" {
        run.coordinate_descent(threshold)?;
    }
    let Run {
        mut scales,
        steps,
        mut stopped,
        path,
        ..
    } = run;
    let fault_points = if resilience {
        let (points, limited) = choose_under_faults(&mut search, &path)?;
        stopped = limited.unwrap_or(stopped);
        let chosen = points.iter().find(|p| p.chosen).map_or(0, |p| p.accepted);
        scales = path[chosen].scales.clone();
        search.shared.on_percentile = path[chosen].on_percentile.clone();
        points
    } else {
        Vec::new()
    };
    let fault_of = |pick: &dyn Fn(&FaultPoint) -> bool| fault_points.iter().find(|p| pick(p)).map(|p| p.fault_metric);
    let calibrated_fault_metric = fault_of(&|p| p.accepted == 0);
    let final_fault_metric = fault_of(&|p| p.chosen);
    let final_metric = full_metric(search.check(&scales, None, f64::NEG_INFINITY)?);
    let bounds: Vec<Bound> = scales
        .iter()
        .enumerate()
        .map(|(l, s)| scaled(search.shared.base(&search.full, l), *s))
        .collect();
    let layers = layer_logs(sites, &data.full, &bounds, &scales, steps, &search.shared.on_percentile);
    let ratios = layers
        .iter()
        .map(|l| f64::from(l.bound_mean_after) / f64::from(l.bound_mean_before).max(f64::MIN_POSITIVE));
    let log = SearchLog {
        metric: if data.labels.is_some() { "accuracy" } else { "agreement" },
        holdout_samples: search.check_count(),
        folds: search.folds.len(),
        reference: reference_metric,
        budget: options.budget,
        threshold,
        objective: if resilience { "resilience" } else { "tight" },
        calibrated_fault_metric,
        final_fault_metric,
        fault_points,
        calibrated_metric,
        final_metric,
        evaluations: search.evaluations,
        samples_run: search.shared.samples_run.load(Ordering::Relaxed),
        samples_reused: search.shared.samples_reused.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        stopped,
        mean_bound_ratio: mean(ratios),
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
/// site, every point accepted (the path a resilience search chooses from), and why it stopped.
struct Run<'s, 'a> {
    search: &'s mut Search<'a>,
    scales: Vec<f32>,
    steps: Vec<Vec<Step>>,
    stopped: &'static str,
    /// Every point accepted, in order, from the calibrated one.
    path: Vec<PathPoint>,
}

/// A point the search accepted: its scales, the sites on their percentile base, its metric.
struct PathPoint {
    scales: Vec<f32>,
    on_percentile: Vec<bool>,
    metric: f64,
}

/// Points of the path (`Run::path`) a resilience search checks under its fault sweep.
pub const FAULT_POINTS: usize = 3;

/// Objective `resilience`: of the points the search accepted, from the calibrated bounds to the
/// tightest, `FAULT_POINTS` evenly spaced ones are checked under the fault sweep, the two ends
/// first. The chosen one is, of the points that gain over the calibrated one with confidence
/// (the one-sided 95% lower bound of the gain, paired by fault pattern, above 0), the best
/// under faults; the calibrated point if none does. A gain within chance stays with the
/// calibrated bounds, which lose less clean accuracy (measured: under float32 faults at 1e-5
/// and 3e-5 any zero-above bound removes the damage it can reach, and the tight search's
/// bounds trailed the calibrated ones by their 0.1-0.5 point clean loss). Every point met the budget. Returns the points checked,
/// and why checking stopped early (an evaluation or time limit) if it did; the calibrated
/// point is always checked.
fn choose_under_faults(search: &mut Search, path: &[PathPoint]) -> Result<(Vec<FaultPoint>, Option<&'static str>)> {
    let last = path.len() - 1;
    let mut picks = vec![0, last];
    picks.extend((1..FAULT_POINTS - 1).map(|k| (k * last + (FAULT_POINTS - 1) / 2) / (FAULT_POINTS - 1)));
    let mut seen = HashSet::new();
    picks.retain(|i| seen.insert(*i));
    let mut checked = Vec::new();
    let mut limited = None;
    for (k, &i) in picks.iter().enumerate() {
        if k > 0 {
            limited = search.out_of_budget();
            if limited.is_some() {
                break;
            }
        }
        search.shared.on_percentile = path[i].on_percentile.clone();
        checked.push((i, search.fault_metrics(&path[i].scales)?));
    }
    checked.sort_by_key(|(i, _)| *i);
    let calibrated = &checked[0].1;
    let mut points: Vec<FaultPoint> = Vec::new();
    let mut chosen = 0;
    for (k, (i, metrics)) in checked.iter().enumerate() {
        let gain_lower_bound = (k > 0).then(|| {
            let gains: Vec<f64> = metrics.iter().zip(calibrated).map(|(a, b)| a - b).collect();
            lower_bound_95(&gains)
        });
        let fault_metric = mean(metrics.iter().copied());
        if gain_lower_bound.is_some_and(|g| g > 0.0) && fault_metric > points[chosen].fault_metric {
            chosen = k;
        }
        let point = &path[*i];
        points.push(FaultPoint {
            accepted: *i,
            mean_scale: mean(point.scales.iter().map(|s| f64::from(*s))),
            metric: point.metric,
            fault_metric,
            gain_lower_bound,
            chosen: false,
        });
    }
    points[chosen].chosen = true;
    Ok((points, limited))
}

/// The mean of `values` (0 for none).
fn mean(values: impl ExactSizeIterator<Item = f64>) -> f64 {
    let n = values.len().max(1) as f64;
    values.sum::<f64>() / n
}

impl Run<'_, '_> {
    /// Whether `candidate` (which differs from the accepted point at site `changed`) is within
    /// the budget; accepts it if so.
    fn judge(&mut self, candidate: &[f32], changed: usize, allowed: f64) -> Result<Step> {
        let search = &mut *self.search;
        let check = search.check(candidate, Some(changed), allowed)?;
        let (metric, at_most) = match check {
            Check::Metric(m) => (Some(m), None),
            Check::Below(m) => (None, Some(m)),
        };
        let step = Step {
            base: if search.shared.on_percentile[changed] {
                Base::Percentile
            } else {
                Base::Maximum
            },
            scale: candidate[changed],
            metric,
            at_most,
            accepted: check.reaches(allowed),
        };
        if step.accepted {
            search.accept(candidate)?;
            search.accepted_metric = metric.unwrap_or(search.accepted_metric);
            self.path.push(PathPoint {
                scales: candidate.to_vec(),
                on_percentile: search.shared.on_percentile.clone(),
                metric: search.accepted_metric,
            });
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
            for _ in 0..BISECTION_STEPS {
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

    /// The first `n` samples.
    fn prefix(samples: &Samples, n: usize) -> Samples {
        samples.select(&(0..n).collect::<Vec<_>>())
    }

    /// Per-channel bounds of `model`'s sites, calibrated on `samples`.
    fn channel_bounds(model: &ModelProto, sites: &[ActivationSite], samples: &Samples) -> Vec<Bound> {
        let options = CalibrateOptions {
            engine: Engine::tract(),
            batch_size: 8,
            progress: false,
            top: 0,
        };
        calibrate(model, samples, sites, &options)
            .unwrap()
            .activations
            .iter()
            .map(|a| bound_from_maxima(&a.neuron_max, Granularity::Channel, 0.001))
            .collect()
    }

    /// The ResNet-style fixture (residual Adds: sites on parallel paths) and its first `count`
    /// calibration samples, cut into folds, with per fold the per-channel bounds calibrated on
    /// the other folds, and on all.
    struct Fixture {
        model: ModelProto,
        sites: Vec<ActivationSite>,
        samples: Samples,
        k_fold: KFold,
        fold_bounds: Vec<Vec<Bound>>,
        full: Vec<Bound>,
    }

    fn resnet(count: usize) -> Fixture {
        let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let model = crate::model_io::read_model(&fixtures.join("resnet.onnx"))
            .unwrap()
            .model;
        let samples = prefix(
            &crate::data::dataset::load_samples(&fixtures.join("calib.npy"), &model).unwrap(),
            count,
        );
        let sites = find_relus(&model);
        let k_fold = k_fold(count);
        let fold_bounds = (0..FOLDS)
            .map(|f| {
                let others: Vec<usize> = (0..count).filter(|r| r % FOLDS != f).collect();
                channel_bounds(&model, &sites, &samples.select(&others))
            })
            .collect();
        let full = channel_bounds(&model, &sites, &samples);
        Fixture {
            model,
            sites,
            samples,
            k_fold,
            fold_bounds,
            full,
        }
    }

    impl Fixture {
        /// What a search checks on, with `percentiles` (per fold, then on all) if given.
        fn data<'a>(&'a self, percentiles: Option<&'a (Vec<Vec<Bound>>, Vec<Bound>)>) -> SearchData<'a> {
            SearchData {
                samples: &self.samples,
                labels: None,
                k_fold: &self.k_fold,
                fold_bases: (0..FOLDS)
                    .map(|f| Bases {
                        maxima: &self.fold_bounds[f],
                        percentiles: percentiles.map(|p| p.0[f].as_slice()),
                    })
                    .collect(),
                full: Bases {
                    maxima: &self.full,
                    percentiles: percentiles.map(|p| p.1.as_slice()),
                },
            }
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
        let fixture = resnet(48);
        let options = options();
        let data = fixture.data(None);
        let mut search = Search::new(&fixture.model, &fixture.sites, &data, Mode::Zero, &options).unwrap();
        let n = fixture.sites.len();
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
        let fixture = resnet(48);
        let lower = |bounds: &[Bound]| bounds.iter().map(|b| scaled(b, 0.7)).collect::<Vec<_>>();
        let percentiles = (
            fixture.fold_bounds.iter().map(|b| lower(b)).collect(),
            lower(&fixture.full),
        );
        let options = options();
        let data = fixture.data(Some(&percentiles));
        let mut search = Search::new(&fixture.model, &fixture.sites, &data, Mode::Zero, &options).unwrap();
        let n = fixture.sites.len();
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
        let fixture = resnet(48);
        let options = options();
        let data = fixture.data(None);
        let mut search = Search::new(&fixture.model, &fixture.sites, &data, Mode::Zero, &options).unwrap();
        let n = fixture.sites.len();
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
        let fixture = resnet(48);
        let holdout = Holdout::new(&Engine::tract(), &fixture.model, &fixture.samples, None, &options()).unwrap();
        assert!(
            holdout.original.margins.windows(2).all(|w| w[0] <= w[1]),
            "{:?}",
            holdout.original.margins
        );
        assert_eq!(holdout.offsets, vec![0, 8, 16, 24, 32, 40]);
        assert_eq!(holdout.reference_kept(), 48);
    }

    /// A candidate takes the accepted point's result for every sample whose values at its site
    /// lie inside both bounds; the search then decides as one that runs every sample.
    #[test]
    fn reusing_the_results_of_samples_a_candidate_cannot_change_changes_no_decision() {
        let fixture = resnet(64);
        let mut options = options();
        options.max_evals = Some(40);
        let data = fixture.data(None);
        let run = |reuse| search_reusing(&fixture.model, &fixture.sites, &data, Mode::Zero, &options, reuse).unwrap();
        let ((reused, with), (full, without)) = (run(true), run(false));
        let values = |bounds: &[Bound]| bounds.iter().map(|b| b.values.clone()).collect::<Vec<_>>();
        assert_eq!(values(&reused), values(&full));
        assert_eq!(
            serde_json::to_value(&with.layers).unwrap(),
            serde_json::to_value(&without.layers).unwrap()
        );
        assert_eq!(with.final_metric, without.final_metric);
        assert_eq!(without.samples_reused, 0);
        assert!(with.samples_reused > 0, "{} run, none reused", with.samples_run);
        assert!(
            with.samples_run < without.samples_run,
            "{} run with reuse, {} without",
            with.samples_run,
            without.samples_run
        );
    }

    /// With labels, a sample the original gets wrong counts for no candidate, even one that
    /// gets it right: gains on the check set must not pay for losses.
    #[test]
    fn a_candidate_earns_nothing_from_samples_the_original_gets_wrong() {
        let fixture = resnet(16);
        let batches = Batches::new(&fixture.samples, 8);
        let (original, _) = predict(&Engine::tract(), &fixture.model, &batches, &[], true).unwrap();
        // Labels the original gets wrong on every third sample.
        let labels: Vec<usize> = original
            .classes
            .iter()
            .enumerate()
            .map(|(i, c)| if i % 3 == 0 { (c + 1) % 10 } else { *c })
            .collect();
        let holdout = Holdout::new(
            &Engine::tract(),
            &fixture.model,
            &fixture.samples,
            Some(&labels),
            &options(),
        )
        .unwrap();
        assert_eq!(holdout.reference_kept(), 16 - 6);
        let mut right = holdout.original.clone();
        right.classes = holdout.truth.clone();
        for i in 0..16 {
            let original_right = holdout.original.classes[i] == holdout.truth[i];
            assert_eq!(holdout.kept(i, &right, i), original_right, "sample {i}");
            assert_eq!(holdout.kept(i, &holdout.original, i), original_right, "sample {i}");
        }
    }
}
