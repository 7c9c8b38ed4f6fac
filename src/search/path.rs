//! One search from the calibrated point (`Run`): the scales accepted so far, every step tried
//! per site, and the path of accepted points that a resilience search chooses from. `judge`
//! checks one candidate and accepts it if it reaches what is allowed; the phases (`bisection`,
//! `descent`) call it.

use super::holdout::Check;
use super::state::Search;
use super::{Base, Step};
use anyhow::Result;

/// One search from the calibrated point: the scales accepted so far, every step tried per
/// site, every point accepted (the path a resilience search chooses from), and why it stopped.
pub(super) struct Run<'s, 'a> {
    pub(super) search: &'s mut Search<'a>,
    pub(super) scales: Vec<f32>,
    pub(super) steps: Vec<Vec<Step>>,
    pub(super) stopped: &'static str,
    /// Every point accepted, in order, from the calibrated one.
    pub(super) path: Vec<PathPoint>,
}

/// A point the search accepted: its scales, the sites on their percentile base, its metric.
pub(super) struct PathPoint {
    pub(super) scales: Vec<f32>,
    pub(super) on_percentile: Vec<bool>,
    pub(super) metric: f64,
}

impl Run<'_, '_> {
    /// Whether `candidate` (which differs from the accepted point at site `changed`) is within
    /// the budget; accepts it if so.
    pub(super) fn judge(&mut self, candidate: &[f32], changed: usize, allowed: f64) -> Result<Step> {
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
    pub(super) fn out_of_budget(&mut self) -> bool {
        match self.search.out_of_budget() {
            Some(reason) => {
                self.stopped = reason;
                true
            }
            None => false,
        }
    }
}
