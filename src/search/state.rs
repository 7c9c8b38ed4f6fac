//! What a search carries from one candidate to the next: `Search` (per fold its check samples
//! and the accepted point's model, the counts of evaluations) and `Shared` (what every fold's
//! check reads: the scales accepted, the bases in use); candidates as models (`Shared::harden`
//! on bounds `scaled` from their bases).

use super::folds::{FoldCheck, SearchData};
use super::holdout::Holdout;
use super::resilience::{fault_holdout, fault_patterns};
use super::{Bases, Objective, SearchOptions};
use crate::faults::weights::Values;
use crate::replay::CleanValues;
use anyhow::{Context, Result};
use fitact_passes::activations::ActivationSite;
use fitact_passes::bound_activations::{Bound, BoundRequest, Emission, Mode};
use fitact_passes::bound_stored::{bound_stored, is_integer, stored_bound};
use fitact_passes::onnx::ModelProto;
use fitact_passes::quantized_activations::find_quantized;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

/// A point of the search: every site's scale (as bits) and whether it is on its percentile.
pub(super) type Point = (Vec<u32>, Vec<bool>);

/// How an activation is stored: the element type its bounds are emitted in, and the value
/// its scale shrinks them toward (the integer that stands for 0 in a quantized one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Stored {
    pub(super) elem_type: i32,
    pub(super) zero: f32,
}

/// Per site of `original`, how it is stored, given its element type (`types`).
fn stored_types(original: &ModelProto, sites: &[ActivationSite], types: &[i32]) -> Vec<Stored> {
    let quantized = find_quantized(original);
    sites
        .iter()
        .zip(types)
        .map(|(site, elem_type)| Stored {
            elem_type: *elem_type,
            zero: quantized
                .iter()
                .find(|q| is_integer(*elem_type) && q.site.output == site.output)
                .map_or(0.0, |q| q.zero_point as f32),
        })
        .collect()
}

/// What every fold's check reads and none changes while it runs.
pub(super) struct Shared<'a> {
    pub(super) original: &'a ModelProto,
    pub(super) sites: &'a [ActivationSite],
    /// Per site, how its activation is stored (its bounds are emitted in that type).
    pub(super) stored: Vec<Stored>,
    pub(super) mode: Mode,
    /// Per site, whether its scale applies to its percentile bound instead of its maxima:
    /// for the candidate (`on_percentile`) and at the accepted point.
    pub(super) on_percentile: Vec<bool>,
    pub(super) accepted_on_percentile: Vec<bool>,
    /// The scales accepted so far.
    pub(super) accepted: Vec<f32>,
    /// Per site: the tensors downstream of its bound, and the tensors its suffix reads (the
    /// same in every fold's model: only bound values differ).
    pub(super) downstream: Vec<HashSet<String>>,
    pub(super) boundaries: Vec<Vec<String>>,
    /// Per site: the tensor its bound compares, when its suffix reads it (`unchanged_samples`).
    pub(super) compared: Vec<Option<String>>,
    /// Whether a candidate reuses the accepted point's flags of the samples it cannot change
    /// (off only to test that this changes no decision).
    pub(super) reuse_unchanged: bool,
    /// Check samples judged by a run, and by the accepted point's flag without one.
    pub(super) samples_run: AtomicUsize,
    pub(super) samples_reused: AtomicUsize,
    pub(super) options: &'a SearchOptions,
}

pub(super) struct Search<'a> {
    pub(super) shared: Shared<'a>,
    pub(super) folds: Vec<FoldCheck<'a>>,
    /// The bounds fitted on every sample: the ones written, and the ones the check under
    /// faults scales.
    pub(super) full: Bases<'a>,
    /// The check metric of the accepted point.
    pub(super) accepted_metric: f64,
    /// Objective `resilience`: per pattern, the faulty values of the original's weights, and
    /// the samples they run on.
    pub(super) patterns: Vec<HashMap<String, Values>>,
    pub(super) fault_holdout: Option<Holdout>,
    pub(super) evaluations: usize,
    pub(super) started: Instant,
}

impl<'a> Search<'a> {
    /// Runs the original on every fold's check samples (and the fault samples of a resilience
    /// search), and prepares the calibrated point as the accepted one.
    pub(super) fn new(
        original: &'a ModelProto,
        sites: &'a [ActivationSite],
        types: &[i32],
        data: &SearchData<'a>,
        mode: Mode,
        options: &'a SearchOptions,
    ) -> Result<Self> {
        let started = Instant::now();
        let fault_holdout = fault_holdout(original, data, options)?;
        let shared = Shared {
            original,
            sites,
            stored: stored_types(original, sites, types),
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
        search.shared.map_suffixes(calibrated_model, &emitted)?;
        Ok(search)
    }
}

/// The bound shrunk by `scale` toward `zero` (0, or the zero point of an integer activation):
/// both ends of a two-sided one.
pub(super) fn scaled(bound: &Bound, scale: f32, zero: f32) -> Bound {
    let toward = |v: &f32| {
        if zero == 0.0 {
            v * scale
        } else {
            zero + (v - zero) * scale
        }
    };
    Bound {
        dims: bound.dims.clone(),
        values: bound.values.iter().map(toward).collect(),
        low: bound.low.as_ref().map(|low| low.iter().map(toward).collect()),
    }
}

impl Shared<'_> {
    /// The bound site `l`'s scale applies to, of `bases`.
    pub(super) fn base<'b>(&self, bases: &Bases<'b>, l: usize) -> &'b Bound {
        self.base_on(bases, l, self.on_percentile[l])
    }

    /// Site `l`'s percentile bound of `bases` if `percentile` (and there are any), else its maxima.
    pub(super) fn base_on<'b>(&self, bases: &Bases<'b>, l: usize, percentile: bool) -> &'b Bound {
        match bases.percentiles {
            Some(percentiles) if percentile => &percentiles[l],
            _ => &bases.maxima[l],
        }
    }

    /// Site `l`'s bound `base` at `scale` (toward the value that stands for 0).
    pub(super) fn scaled(&self, l: usize, base: &Bound, scale: f32) -> Bound {
        scaled(base, scale, self.stored[l].zero)
    }

    /// The point `scales` (on the current bases).
    pub(super) fn point(&self, scales: &[f32]) -> Point {
        (scales.iter().map(|s| s.to_bits()).collect(), self.on_percentile.clone())
    }

    /// The accepted point.
    pub(super) fn accepted_point(&self) -> Point {
        (
            self.accepted.iter().map(|s| s.to_bits()).collect(),
            self.accepted_on_percentile.clone(),
        )
    }

    /// The original with `scales` on `bases` (the candidate's), each bound stored in its
    /// activation's type and emitted in the plain form, and per site the names of the nodes
    /// its bound emitted.
    pub(super) fn harden(&self, bases: &Bases, scales: &[f32]) -> Result<(ModelProto, Vec<Vec<String>>)> {
        let mut model = self.original.clone();
        let requests: Vec<BoundRequest> = self
            .sites
            .iter()
            .zip(scales)
            .enumerate()
            .map(|(l, (site, s))| BoundRequest {
                site: site.clone(),
                bound: stored_bound(self.scaled(l, self.base(bases, l), *s), self.stored[l].elem_type),
                elem_type: self.stored[l].elem_type,
            })
            .collect();
        let report = bound_stored(&mut model, &requests, self.mode, &vec![Emission::Plain; requests.len()])?;
        anyhow::ensure!(report.skipped.is_empty(), "the search could not bound every activation");
        Ok((model, report.applied.into_iter().map(|a| a.nodes).collect()))
    }
}

impl Search<'_> {
    pub(super) fn out_of_budget(&self) -> Option<&'static str> {
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
    pub(super) fn check_count(&self) -> usize {
        self.folds.iter().map(|f| f.holdout.len()).sum()
    }

    /// The share of the check samples the original itself keeps (1 for agreement; its
    /// accuracy with labels).
    pub(super) fn reference_metric(&self) -> f64 {
        let kept: usize = self.folds.iter().map(|f| f.holdout.reference_kept()).sum();
        kept as f64 / self.check_count().max(1) as f64
    }

    /// Makes `scales` (on the current bases) the accepted point; its flags are the last
    /// check's, when that check was of this point and complete.
    pub(super) fn accept(&mut self, scales: &[f32]) -> Result<()> {
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
}

/// The main-graph positions of the nodes named `names`.
pub(super) fn node_indices(model: &ModelProto, names: &[String]) -> Result<Vec<usize>> {
    let graph = model.graph.as_ref().context("model has a graph")?;
    Ok(names
        .iter()
        .filter_map(|name| graph.node.iter().position(|n| n.name() == name))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_bounds_shrink_toward_their_zero_point_and_float_ones_toward_zero() {
        let bound = Bound {
            dims: vec![2],
            values: vec![200.0, 100.0],
            low: Some(vec![-4.0, 0.0]),
        };
        let integer = scaled(&bound, 0.5, 128.0);
        assert_eq!(integer.values, vec![164.0, 114.0]);
        assert_eq!(integer.low, Some(vec![62.0, 64.0]));
        let float = scaled(&bound, 0.5, 0.0);
        assert_eq!(float.values, vec![100.0, 50.0]);
        assert_eq!(float.low, Some(vec![-2.0, 0.0]));
    }
}
