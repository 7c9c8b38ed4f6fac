//! The k-fold check: the calibration samples cut into `FOLDS` folds (`k_fold`), and a
//! candidate checked on every fold at once (`Search::check`), each fold's samples under the
//! bounds fitted on the other folds: every check sample is cut by bounds that never saw it, as
//! new data will be, and no sample is spent on checking alone. The folds run in parallel
//! (rayon); the decisions do not depend on how many threads run them.

use super::Bases;
use super::holdout::{Check, Holdout, Tallied, Tally};
use super::state::{Point, Search};
use crate::data::dataset::Samples;
use crate::replay::CleanValues;
use anyhow::Result;
use fitact_passes::onnx::ModelProto;
use rayon::prelude::*;
use std::sync::atomic::Ordering;

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
    pub(super) fn rows(&self, rows: &[usize]) -> (Samples, Option<Vec<usize>>) {
        let labels = self.labels.map(|l| rows.iter().map(|r| l[*r]).collect());
        (self.samples.select(rows), labels)
    }
}

/// One fold of the check (`k_fold`): the bounds fitted on the other folds' samples, and the
/// model they give at the accepted point, checked on this fold's samples, which they never saw.
pub(super) struct FoldCheck<'a> {
    pub(super) bases: Bases<'a>,
    pub(super) holdout: Holdout,
    /// The model of the accepted scales on this fold's bounds. A candidate differs from them at
    /// one site; every tensor not downstream of it has this model's clean values.
    pub(super) accepted_model: ModelProto,
    /// Clean values of `accepted_model`, each tagged with the accepted scales of the sites
    /// upstream of it (`Shared::downstream`), so that a value stays valid until one of those
    /// changes.
    pub(super) clean: CleanValues,
    /// Per check batch: samples lost by candidates so far. The check runs the batches that
    /// lost most first, so a candidate that fails fails early.
    pub(super) lost: Vec<usize>,
    /// Per check sample: whether the accepted point keeps it, once a complete check of that
    /// point has said so (a candidate reuses the flag of every sample it cannot change).
    pub(super) accepted_kept: Option<Vec<bool>>,
    /// The last complete check's point (`Point`) and its flags, for `Search::accept`.
    pub(super) last: Option<(Point, Vec<bool>)>,
}

impl Search<'_> {
    /// Checks `candidate` against `allowed` on every fold, in parallel, the folds that lost
    /// most first; the check stops as soon as the samples missed over all folds put `allowed`
    /// out of reach.
    pub(super) fn check(&mut self, candidate: &[f32], changed: Option<usize>, allowed: f64) -> Result<Check> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::tests::{metric, options, resnet};

    #[test]
    fn a_check_that_stops_early_decides_as_a_full_check_would() {
        let fixture = resnet(48);
        let options = options();
        let data = fixture.data(None);
        let mut search = fixture.search(&data, &options);
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
}
