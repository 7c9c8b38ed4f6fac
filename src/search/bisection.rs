//! Phase 1: layer by layer, last activation first (as the ProAct follow-up does), each site's
//! smallest scale that keeps the check metric within a share of the budget that grows with the
//! number of activations tuned, by bisection. Before it, where a few outlying values set the
//! maxima (`OUTLIERS`) and the caller asked for percentiles, the percentile base takes their
//! place if it loses nothing on the check (off by default: docs/results/search_design.md).

use super::path::Run;
use super::state::Search;
use anyhow::Result;
use fitact_passes::bound_activations::Bound;

/// A site's percentile bound (`Bases::percentiles`) is tried where it is below this share of
/// its maximum bound (means over the bound's values): there, a few outlying values set the
/// maximum.
pub const OUTLIERS: f32 = 0.95;

/// Bisection steps per site in the layer-by-layer phase: the scale is found to 1/2^steps.
pub const BISECTION_STEPS: usize = 7;

impl Run<'_, '_> {
    /// Phase 1: layer by layer, last first, each allowed its share of the budget.
    pub(super) fn layer_by_layer(&mut self, reference_metric: f64, budget: f64, threshold: f64) -> Result<()> {
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
}

impl Search<'_> {
    /// Puts site `l` on its percentile base (`on`) or back on its maxima, for the candidates
    /// that follow (the accepted point changes with `accept`).
    pub(super) fn use_percentile(&mut self, l: usize, on: bool) {
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
