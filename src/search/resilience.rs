//! Objective `resilience`: after the search, of the points it accepted (from the calibrated
//! bounds to the tightest), `FAULT_POINTS` evenly spaced ones run under a fixed sweep of weight
//! faults (the same flips in the same weights for every point: common random numbers, as
//! `evaluate` draws them; the bound tensors are left fault-free), and a tighter point is taken
//! only for a gain over the calibrated one with 95% confidence, paired by pattern. Why the
//! path and not single steps: docs/results/search_design.md.

use super::folds::SearchData;
use super::holdout::{Holdout, full_metric};
use super::path::PathPoint;
use super::search_log::{format_name, mean};
use super::state::Search;
use super::{Objective, SearchOptions};
use crate::faults::flips::{WeightFormat, sample_flips_in};
use crate::faults::statistics::lower_bound_95;
use crate::faults::weights::{Values, Weights, dtype_name, flippable_bits, load};
use crate::replay::prediction_runner;
use anyhow::{Context, Result};
use fitact_passes::onnx::ModelProto;
use fitact_passes::tensor::FLOAT;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// The fixed fault patterns of the `resilience` objective.
#[derive(Debug, Clone, Serialize)]
pub struct FaultSweep {
    pub bers: Vec<f64>,
    /// Patterns per BER.
    pub patterns: usize,
    pub seed: u64,
    pub format: WeightFormat,
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

/// The check samples a resilience search runs under each fault pattern (a prefix of the check set).
pub const FAULT_SAMPLES: usize = 128;

impl SearchData<'_> {
    /// The samples a resilience search runs under each fault pattern: the first
    /// `FAULT_SAMPLES` checked.
    fn fault_rows(&self) -> Vec<usize> {
        let mut rows: Vec<usize> = self.k_fold.checks.iter().flatten().copied().collect();
        rows.sort_unstable();
        rows.truncate(FAULT_SAMPLES);
        rows
    }
}

/// The check samples a resilience search runs under each fault pattern (None for `tight`).
pub(super) fn fault_holdout(
    original: &ModelProto,
    data: &SearchData,
    options: &SearchOptions,
) -> Result<Option<Holdout>> {
    Ok(match &options.objective {
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
    })
}

impl Search<'_> {
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
}

/// The words `sweep` flips in `original`, most bits first: float32 tensors in the sweep's
/// format, every other in its own type (`int8`, `float16`...).
pub(super) fn flipped_words(original: &ModelProto, sweep: &FaultSweep) -> Vec<String> {
    let weights = Weights::of(original);
    let float_bits: Vec<u32> = (0..sweep.format.bits()).collect();
    let mut bits: Vec<(String, usize)> = Vec::new();
    for tensor in &weights.tensors {
        let stored = tensor.store(sweep.format);
        let word = if tensor.dtype == FLOAT {
            format_name(sweep)
        } else {
            dtype_name(tensor.dtype)
        };
        let count = stored.words.len() * flippable_bits(&stored, &float_bits).len();
        match bits.iter_mut().find(|(w, _)| *w == word) {
            Some((_, total)) => *total += count,
            None => bits.push((word, count)),
        }
    }
    bits.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    bits.into_iter().map(|(word, _)| word).collect()
}

/// The original's weights under each fault pattern of the sweep: per pattern, every weight
/// tensor's values as the format stores and loads them (integer tensors as their own words),
/// with that pattern's flips.
pub(super) fn fault_patterns(original: &ModelProto, sweep: &FaultSweep) -> Vec<HashMap<String, Values>> {
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

/// Points of the path (`Run::path`) a resilience search checks under its fault sweep.
pub const FAULT_POINTS: usize = 3;

/// Objective `resilience`: of the points the search accepted, from the calibrated bounds to the
/// tightest, `FAULT_POINTS` evenly spaced ones are checked under the fault sweep, the two ends
/// first. The chosen one is, of the points that gain over the calibrated one with confidence
/// (the one-sided 95% lower bound of the gain, paired by fault pattern, above 0), the best
/// under faults; the calibrated point if none does. A gain within chance stays with the
/// calibrated bounds, which lose less clean accuracy (where the faults reward no tightening:
/// docs/results/search_design.md). Every point met the budget. Returns the points checked,
/// and why checking stopped early (an evaluation or time limit) if it did; the calibrated
/// point is always checked.
pub(super) fn choose_under_faults(
    search: &mut Search,
    path: &[PathPoint],
) -> Result<(Vec<FaultPoint>, Option<&'static str>)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn sweep(format: WeightFormat) -> FaultSweep {
        FaultSweep {
            bers: vec![1e-4],
            patterns: 1,
            seed: 0,
            format,
        }
    }

    #[test]
    fn the_words_flipped_are_the_model_s_own_most_bits_first() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let read = |name: &str| crate::model_io::read_model(&fixtures.join(name)).unwrap().model;
        let quantized = read("precision/resnet_qdq.onnx");
        assert_eq!(
            flipped_words(&quantized, &sweep(WeightFormat::Float32)),
            ["int8", "float32", "int32", "uint8"]
        );
        assert_eq!(
            flipped_words(&read("precision/resnet_fp16.onnx"), &sweep(WeightFormat::Float32))[0],
            "float16"
        );
        assert_eq!(
            flipped_words(&read("resnet.onnx"), &sweep(WeightFormat::Q15_16)),
            ["q15.16"]
        );
    }
}
