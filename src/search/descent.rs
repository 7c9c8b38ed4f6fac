//! Phase 2, after the bisection: coordinate descent on the whole model, with the full budget;
//! every scale in turn shrinks by 10% while the whole model stays within it, until a round
//! changes nothing.

use super::path::Run;
use anyhow::Result;

impl Run<'_, '_> {
    /// Phase 2: coordinate descent on the whole model, with the full budget, until a round
    /// changes nothing.
    pub(super) fn coordinate_descent(&mut self, threshold: f64) -> Result<()> {
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
