//! The bound search (`--search`): one scale per activation on its calibrated bounds (bounds =
//! scale x calibrated maxima, at the chosen granularity), found without gradients (FitAct
//! trains its bounds by gradient descent), so that faults are cut off earlier while the clean
//! metric stays within a budget.
//!
//! Owns, one file per part:
//! - `bisection` (phase 1): layer by layer, last activation first, each site's smallest scale
//!   within its share of the budget; before it, where asked, a percentile base;
//! - `descent` (phase 2): coordinate descent on the whole model with the full budget;
//! - `resilience` (objective `resilience`): the point of the path best under a fault sweep;
//! - `confidence`: how many check samples a point may lose, so that the one-sided 95% upper
//!   bound of its drop stays within the budget;
//! - `folds`: the k-fold check of a candidate; `holdout`: which check samples count, and the
//!   tally that stops a check once the threshold is out of reach; `reuse`: reruns of only the
//!   part after the changed site, on cached clean values, and the samples a candidate cannot
//!   change; `state`: the accepted point and candidate models; `path`: judging a candidate
//!   and the path of accepted points; `search_log`: what the harden report shows.
//!
//! None of the savings changes a decision: a search gives the same bounds, byte for byte, as
//! one that runs every candidate in full. Why each choice is as it is, with the measurements:
//! docs/results/search_design.md.
//!
//! May use `faults` (fault patterns for `--objective resilience`), `replay` (suffix reruns on
//! cached clean values), `data`, `engine` and `passes`; nothing above (`harden` calls it).

mod bisection;
mod confidence;
mod descent;
mod folds;
mod holdout;
mod path;
mod resilience;
mod reuse;
mod search_log;
mod state;

pub use bisection::{BISECTION_STEPS, OUTLIERS};
pub use confidence::{CONFIDENCE, Vouch, drop_upper_bound};
pub use folds::{CHECK_SAMPLES, FOLDS, KFold, MIN_SAMPLES, SearchData, k_fold};
pub use holdout::MARGIN_KEPT;
pub use resilience::{FAULT_POINTS, FAULT_SAMPLES, FaultPoint, FaultSweep};
pub use search_log::{LayerSearch, SearchLog, Step};

use crate::engine::Engine;
use crate::replay::judge::SdcRule;
use anyhow::Result;
use fitact_passes::activations::ActivationSite;
use fitact_passes::bound_activations::{Bound, Mode};
use fitact_passes::onnx::ModelProto;
use holdout::full_metric;
use path::{PathPoint, Run};
use resilience::choose_under_faults;
use search_log::{layer_logs, mean, verdict};
use serde::Serialize;
use state::Search;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

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
/// (`Run::coordinate_descent`), with objective `resilience` choose the point of the path best
/// under faults, and log what was done. A point is accepted only while the check samples vouch
/// for its drop (`Vouch`): the losses are counted against the original, including those of the
/// calibrated point's fold bounds, which cut more than the bounds fitted on all will.
pub fn search(
    original: &ModelProto,
    sites: &[ActivationSite],
    types: &[i32],
    data: &SearchData,
    mode: Mode,
    options: &SearchOptions,
) -> Result<(Vec<Bound>, SearchLog)> {
    search_reusing(original, sites, types, data, mode, options, true)
}

/// The check's count at the start: the original's and the calibrated point's metrics, and
/// what the check samples vouch for under the budget.
pub(super) struct Start {
    reference: f64,
    calibrated: f64,
    checked: usize,
    reference_kept: usize,
    vouch: Vouch,
    /// The lowest metric a point may have: the original's count less the losses vouched for
    /// (None when the samples vouch for no loss under the budget).
    threshold: Option<f64>,
}

impl Start {
    fn measure(search: &mut Search, budget: f64) -> Result<Start> {
        let checked = search.check_count();
        let reference = search.reference_metric();
        let reference_kept = (reference * checked as f64).round() as usize;
        let vouch = Vouch::new(budget, checked);
        let calibrated =
            full_metric(search.check(&vec![1.0f32; search.shared.accepted.len()], None, f64::NEG_INFINITY)?);
        let threshold = vouch.may_lose.map(|l| share(reference_kept.saturating_sub(l), checked));
        Ok(Start {
            reference,
            calibrated,
            checked,
            reference_kept,
            vouch,
            threshold,
        })
    }

    /// The check samples a point of metric `metric` loses against the original.
    pub(super) fn lost(&self, metric: f64) -> usize {
        self.reference_kept
            .saturating_sub((metric * self.checked as f64).round() as usize)
    }
}

/// `kept` of `n` as a metric, computed as `Tally` does, so that a threshold is met exactly.
fn share(kept: usize, n: usize) -> f64 {
    kept as f64 / n.max(1) as f64
}

/// `search`, where candidates reuse the accepted point's flags of the samples they cannot
/// change only if `reuse_unchanged` (which changes no decision: tested).
fn search_reusing(
    original: &ModelProto,
    sites: &[ActivationSite],
    types: &[i32],
    data: &SearchData,
    mode: Mode,
    options: &SearchOptions,
    reuse_unchanged: bool,
) -> Result<(Vec<Bound>, SearchLog)> {
    let started = Instant::now();
    let mut search = Search::new(original, sites, types, data, mode, options)?;
    search.shared.reuse_unchanged = reuse_unchanged;
    let start = Start::measure(&mut search, options.budget)?;
    search.accepted_metric = start.calibrated;
    let (path, steps, mut stopped) = spend(&mut search, &start)?;
    let mut scales = path[0].scales.clone();
    let mut fault_points = Vec::new();
    // With no tighter point accepted there is nothing to choose: no fault sweep is run.
    if matches!(options.objective, Objective::Resilience(_)) && path.len() > 1 {
        let (points, limited) = choose_under_faults(&mut search, &path)?;
        stopped = limited.unwrap_or(stopped);
        let chosen = points.iter().find(|p| p.chosen).map_or(0, |p| p.accepted);
        search.shared.on_percentile = path[chosen].on_percentile.clone();
        scales = path[chosen].scales.clone();
        fault_points = points;
    } else if let Some(last) = path.last() {
        search.shared.on_percentile = last.on_percentile.clone();
        scales = last.scales.clone();
    }
    let final_metric = full_metric(search.check(&scales, None, f64::NEG_INFINITY)?);
    let bounds: Vec<Bound> = scales
        .iter()
        .enumerate()
        .map(|(l, s)| search.shared.scaled(l, search.shared.base(&search.full, l), *s))
        .collect();
    let layers = layer_logs(sites, &data.full, &bounds, &scales, steps, &search.shared.on_percentile);
    let ratios = layers
        .iter()
        .map(|l| f64::from(l.bound_mean_after) / f64::from(l.bound_mean_before).max(f64::MIN_POSITIVE));
    let mut log = SearchLog::new(data.labels.is_some(), options, &start, final_metric);
    log.path_points = path.len();
    log.fault_samples = search.fault_holdout.as_ref().map(|h| h.len());
    log.set_fault_points(fault_points);
    log.evaluations = search.evaluations;
    log.samples_run = search.shared.samples_run.load(Ordering::Relaxed);
    log.samples_reused = search.shared.samples_reused.load(Ordering::Relaxed);
    log.seconds = started.elapsed().as_secs_f64();
    log.stopped = stopped;
    log.mean_bound_ratio = mean(ratios);
    log.layers = layers;
    if let Objective::Resilience(sweep) = &options.objective {
        log.fault_words = resilience::flipped_words(original, sweep);
    }
    log.verdict = verdict(&log, &start);
    Ok((bounds, log))
}

/// What the phases leave: the path of accepted points, every step per site, why they stopped.
type Spent = (Vec<PathPoint>, Vec<Vec<Step>>, &'static str);

/// The search's phases from the calibrated point, while the check samples vouch for a loss
/// at all and the calibrated point is within it: the path of accepted points (the calibrated
/// one first), every step per site, and why it stopped.
fn spend(search: &mut Search, start: &Start) -> Result<Spent> {
    let n = search.shared.accepted.len();
    let scales = vec![1.0f32; n];
    let mut run = Run {
        path: vec![PathPoint {
            scales: scales.clone(),
            on_percentile: search.shared.on_percentile.clone(),
            metric: start.calibrated,
        }],
        search,
        scales,
        steps: vec![Vec::new(); n],
        stopped: "converged",
    };
    if let Some(threshold) = start.threshold.filter(|t| start.calibrated >= *t) {
        run.layer_by_layer(start.calibrated, start.calibrated - threshold, threshold)?;
        if run.stopped == "converged" {
            run.coordinate_descent(threshold)?;
        }
    }
    Ok((run.path, run.steps, run.stopped))
}

#[cfg(test)]
mod tests {
    //! What the tests of the search's files share: the ResNet-style fixture cut into folds.
    use super::*;
    use crate::data::dataset::Samples;
    use crate::harden::bounds::{Granularity, bound_from_maxima};
    use crate::harden::calibrate::{CalibrateOptions, calibrate};
    use crate::search::holdout::Check;
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
    pub(super) struct Fixture {
        pub(super) model: ModelProto,
        pub(super) sites: Vec<ActivationSite>,
        /// Every site's element type: float32.
        pub(super) types: Vec<i32>,
        pub(super) samples: Samples,
        pub(super) k_fold: KFold,
        pub(super) fold_bounds: Vec<Vec<Bound>>,
        pub(super) full: Vec<Bound>,
    }

    pub(super) fn resnet(count: usize) -> Fixture {
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
            types: vec![fitact_passes::tensor::FLOAT; sites.len()],
            sites,
            samples,
            k_fold,
            fold_bounds,
            full,
        }
    }

    impl Fixture {
        /// A search of this fixture's sites (zero mode) on `data`.
        pub(super) fn search<'a>(&'a self, data: &SearchData<'a>, options: &'a SearchOptions) -> Search<'a> {
            Search::new(&self.model, &self.sites, &self.types, data, Mode::Zero, options).unwrap()
        }

        /// What a search checks on, with `percentiles` (per fold, then on all) if given.
        pub(super) fn data<'a>(&'a self, percentiles: Option<&'a (Vec<Vec<Bound>>, Vec<Bound>)>) -> SearchData<'a> {
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

    pub(super) fn options() -> SearchOptions {
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

    pub(super) fn metric(check: Check) -> f64 {
        match check {
            Check::Metric(m) => m,
            Check::Below(m) => panic!("a check with no threshold stopped early (at most {m})"),
        }
    }
}
