//! The choice: from every activation in its full form, give up the least resilience per unit
//! of latency saved, one step at a time, until the predicted cost fits the budget.
//!
//! A step downgrades one activation to a weaker form it offers (full to cheap or to
//! unbounded, cheap to unbounded). Its price is the resilience lost (the metric under the
//! fault patterns, before minus after) over the cost saved; the cheapest step is taken. Why
//! backwards and not by adding bounds to the original: under weight faults a model survives a
//! pattern only if every fault in it is caught, so resilience is close to a product over the
//! activations; added one at a time to an unprotected model, any single bound buys nearly
//! nothing (the other faults still get through), while removed one at a time from a fully
//! bounded one, each shows what it holds. The loss of a step grows as others are removed (an
//! unbounded activation hands its fault to the next bounded one, and fewer are left), so a
//! loss measured earlier is a lower bound of the loss now: the steps are chosen lazily (the
//! candidate with the lowest price is measured again in the current model, and taken if it
//! still costs no more than every other candidate's earlier price), which measures few
//! candidates per step. Every state on the path is measured: it is the last candidate
//! measured before it was taken.
//!
//! The last step before a target is chosen with the target in view: of the candidates that
//! reach it in one step, the one that loses least, unless the cheapest price over the units
//! still needed promises less.
//!
//! What the last step leaves of the target is spent again (`Path::filled`): a step saves a
//! whole activation's cost, so the path often stops well below the budget (on the ResNet
//! fixture at +5% of 10%). Activations it downgraded are brought back while they fit, those
//! whose downgrade lost most per unit of cost first, each kept only if measured to gain.
//!
//! Costs count in units of `RESOLUTION` (a tenth of a point of latency): measured costs move
//! by more than that between runs, so finer units would only let timing noise reorder steps.
//! Ties go to the earlier activation, then the weaker form: the same costs and measurements
//! always give the same path.

use crate::budget::Form;
use anyhow::Result;

/// Costs are counted in units of this share of the original's latency.
pub const RESOLUTION: f64 = 0.001;
/// At most this many states are measured to spend what the last step left of a target.
pub const FILL_TRIES: usize = 8;

/// One form an activation offers, and its cost (share of the original's latency).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Offer {
    pub form: Form,
    pub cost: f64,
}

/// A cost in whole units of `RESOLUTION` (rounded to the nearest; never below 0).
pub fn units(cost: f64) -> usize {
    if cost.is_finite() && cost > 0.0 {
        (cost / RESOLUTION).round() as usize
    } else {
        0
    }
}

/// The total cost of `forms`, as the path counts it (rounded units, back to a share).
pub fn total_cost(offers: &[Vec<Offer>], forms: &[Form]) -> f64 {
    offers
        .iter()
        .zip(forms)
        .map(|(o, f)| o.iter().find(|x| x.form == *f).map_or(0, |x| units(x.cost)))
        .sum::<usize>() as f64
        * RESOLUTION
}

/// One state of the path: the forms, their total cost, the measured resilience, and the step
/// that led here (none for the start).
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub forms: Vec<Form>,
    pub cost: f64,
    pub resilience: f64,
    /// (activation, its form before, its form now).
    pub step: Option<(usize, Form, Form)>,
}

/// The path's last state with upgrades that fit what it left of a target: every state
/// taken (the path's last first), and how many were measured.
#[derive(Debug, Clone)]
pub struct Fill {
    pub states: Vec<State>,
    pub measured: usize,
}

impl Fill {
    pub fn last(&self) -> &State {
        self.states.last().expect("a fill starts from the path's last state")
    }
}

/// A candidate step, with the resilience after it as last measured.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    site: usize,
    to: Form,
    /// Cost units saved.
    saved: usize,
    /// Resilience lost (measured, or a lower bound of it when stale).
    loss: f64,
    /// The resilience after the step, when measured in the current state.
    after: Option<f64>,
}

impl Candidate {
    fn price(&self) -> f64 {
        self.loss / self.saved as f64
    }
}

/// The pruning path, resumable: `advance_to` extends it until the cost fits a target.
pub struct Path<'a> {
    offers: &'a [Vec<Offer>],
    pub states: Vec<State>,
    candidates: Vec<Candidate>,
    /// Lower bounds of the loss of a later downgrade (cheap to unbounded) per activation,
    /// used once it is in the cheap form.
    next_losses: Vec<f64>,
    /// How many candidate states were measured.
    pub measured: usize,
}

fn cost_of(offered: &[Offer], form: Form) -> f64 {
    offered.iter().find(|o| o.form == form).map_or(0.0, |o| o.cost)
}

impl<'a> Path<'a> {
    /// The path's start: every activation in its strongest form, whose resilience is
    /// `start`. `after_first(site, to)` is the resilience measured at the start with that one
    /// activation downgraded, for every weaker form it offers.
    pub fn new(offers: &'a [Vec<Offer>], start: f64, after_first: impl Fn(usize, Form) -> f64) -> Path<'a> {
        let forms: Vec<Form> = offers
            .iter()
            .map(|o| o.iter().map(|x| x.form).max().unwrap_or(Form::Unbounded))
            .collect();
        let mut candidates = Vec::new();
        let mut next_losses = vec![0.0; offers.len()];
        for (site, offered) in offers.iter().enumerate() {
            for weaker in offered.iter().filter(|o| o.form < forms[site]) {
                let after = after_first(site, weaker.form);
                candidates.push(Candidate {
                    site,
                    to: weaker.form,
                    saved: units(cost_of(offered, forms[site])).saturating_sub(units(weaker.cost)),
                    loss: start - after,
                    after: Some(after),
                });
            }
            if offered.iter().any(|o| o.form == Form::Cheap) && offered.iter().any(|o| o.form == Form::Unbounded) {
                next_losses[site] = after_first(site, Form::Cheap) - after_first(site, Form::Unbounded);
            }
        }
        candidates.retain(|c| c.saved > 0);
        Path {
            offers,
            states: vec![State {
                cost: total_cost(offers, &forms),
                forms,
                resilience: start,
                step: None,
            }],
            candidates,
            next_losses,
            measured: 0,
        }
    }

    pub fn last(&self) -> &State {
        self.states.last().expect("a path has its start")
    }

    /// The first state of the path whose cost is at most `target` (the last one if none is).
    pub fn within(&self, target: f64) -> &State {
        self.states
            .iter()
            .find(|s| s.cost <= target + 1e-12)
            .unwrap_or_else(|| self.last())
    }

    /// The last state with what it leaves of `target` spent on upgrades (`Fill`); the path
    /// itself stays as it is, so a smaller target later goes on from its last state.
    pub fn filled(&self, target: f64, measure: &mut dyn FnMut(&[Form]) -> Result<f64>) -> Result<Fill> {
        let mut fill = Fill {
            states: vec![self.last().clone()],
            measured: 0,
        };
        let mut tried: Vec<(usize, Form)> = Vec::new();
        while fill.measured < FILL_TRIES {
            let state = fill.last().clone();
            let room = units(target.max(0.0)).saturating_sub(units(state.cost));
            let Some((site, to)) = self.best_upgrade(&state, room, &tried) else {
                break;
            };
            tried.push((site, to));
            let mut forms = state.forms.clone();
            forms[site] = to;
            let after = measure(&forms)?;
            fill.measured += 1;
            if after > state.resilience {
                fill.states.push(State {
                    cost: total_cost(self.offers, &forms),
                    forms,
                    resilience: after,
                    step: Some((site, state.forms[site], to)),
                });
            }
        }
        Ok(fill)
    }

    /// The upgrade of `state` within `room` units not yet `tried` whose downgrades on the
    /// path lost most per unit it costs (ties: earlier activation, weaker form).
    fn best_upgrade(&self, state: &State, room: usize, tried: &[(usize, Form)]) -> Option<(usize, Form)> {
        let mut best: Option<(f64, usize, Form)> = None;
        for (site, offered) in self.offers.iter().enumerate() {
            let now = state.forms[site];
            for o in offered
                .iter()
                .filter(|o| o.form > now && !tried.contains(&(site, o.form)))
            {
                let extra = units(o.cost).saturating_sub(units(cost_of(offered, now)));
                if extra > room {
                    continue;
                }
                let lost: f64 = self
                    .states
                    .windows(2)
                    .filter_map(|w| match w[1].step {
                        Some((s, from, to)) if s == site && from <= o.form && to >= now => {
                            Some((w[0].resilience - w[1].resilience).max(0.0))
                        }
                        _ => None,
                    })
                    .sum();
                let value = lost / extra.max(1) as f64;
                if lost > 0.0 && best.is_none_or(|(b, _, _)| value > b) {
                    best = Some((value, site, o.form));
                }
            }
        }
        best.map(|(_, site, form)| (site, form))
    }

    /// Takes steps until the cost is at most `target` (or no step saves anything);
    /// `measure(forms)` runs the fault patterns on a candidate state.
    pub fn advance_to(&mut self, target: f64, measure: &mut dyn FnMut(&[Form]) -> Result<f64>) -> Result<()> {
        while self.last().cost > target + 1e-12 && !self.candidates.is_empty() {
            let needed = units(self.last().cost) - units(target.max(0.0)).min(units(self.last().cost));
            self.step(needed, measure)?;
        }
        Ok(())
    }

    /// The index of the candidate lowest by `key` among those `eligible` (ties: earlier
    /// activation, weaker form), if any is.
    fn lowest(&self, key: impl Fn(&Candidate) -> f64, eligible: impl Fn(&Candidate) -> bool) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, c) in self.candidates.iter().enumerate().filter(|(_, c)| eligible(c)) {
            let tie = |c: &Candidate| (c.site, c.to);
            if best.is_none_or(|b| {
                let b = &self.candidates[b];
                key(c) < key(b) || (key(c) == key(b) && tie(c) < tie(b))
            }) {
                best = Some(i);
            }
        }
        best
    }

    /// The current forms with `site` in `to`.
    fn with(&self, site: usize, to: Form) -> Vec<Form> {
        let mut forms = self.last().forms.clone();
        forms[site] = to;
        forms
    }

    /// One step: the cheapest candidate by price, once measured in the current state and still
    /// the cheapest. When some candidates save the `needed` units in one step, the one of
    /// them that loses least (measured likewise) is taken instead, if it loses no more than
    /// price-ordered steps would at least: a last step that overshoots the target gives up
    /// more than it must.
    fn step(&mut self, needed: usize, measure: &mut dyn FnMut(&[Form]) -> Result<f64>) -> Result<()> {
        loop {
            let best = self.lowest(Candidate::price, |_| true).expect("a candidate is left");
            let finishing = self.lowest(|c| c.loss, |c| c.saved >= needed);
            let cheapest = &self.candidates[best];
            // What price-ordered steps lose at least on the way: the cheapest's own loss if it
            // gets there alone, else its price on every unit still needed.
            let by_price = if cheapest.saved >= needed {
                cheapest.loss
            } else {
                cheapest.price() * needed as f64
            };
            let pick = match finishing {
                Some(f) if self.candidates[f].loss <= by_price => f,
                _ => best,
            };
            let candidate = self.candidates[pick];
            if let Some(after) = candidate.after {
                self.take(pick, after);
                return Ok(());
            }
            let after = measure(&self.with(candidate.site, candidate.to))?;
            self.measured += 1;
            let now = self.last().resilience;
            let c = &mut self.candidates[pick];
            // Never below the earlier measurement: noise must not make a step look cheaper
            // than it was, or the lazy choice would not be the cheapest.
            c.loss = c.loss.max(now - after);
            c.after = Some(after);
        }
    }

    /// Takes candidate `index` (whose state, measured, has resilience `after`).
    fn take(&mut self, index: usize, after: f64) {
        let c = self.candidates[index];
        let from = self.last().forms[c.site];
        let forms = self.with(c.site, c.to);
        self.states.push(State {
            cost: total_cost(self.offers, &forms),
            forms,
            resilience: after,
            step: Some((c.site, from, c.to)),
        });
        self.candidates.retain(|x| x.site != c.site);
        let offered = &self.offers[c.site];
        if c.to == Form::Cheap && offered.iter().any(|o| o.form == Form::Unbounded) {
            let saved = units(cost_of(offered, Form::Cheap)).saturating_sub(units(cost_of(offered, Form::Unbounded)));
            if saved > 0 {
                self.candidates.push(Candidate {
                    site: c.site,
                    to: Form::Unbounded,
                    saved,
                    loss: self.next_losses[c.site],
                    after: None,
                });
            }
        }
        for other in &mut self.candidates {
            other.after = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offers(costs: &[(f64, f64)]) -> Vec<Vec<Offer>> {
        costs
            .iter()
            .map(|(cheap, full)| {
                vec![
                    Offer {
                        form: Form::Unbounded,
                        cost: 0.0,
                    },
                    Offer {
                        form: Form::Cheap,
                        cost: *cheap,
                    },
                    Offer {
                        form: Form::Full,
                        cost: *full,
                    },
                ]
            })
            .collect()
    }

    /// A synthetic resilience: a product over activations of what each form holds, with an
    /// unbounded activation handing half its fault to the next one (so losses interact).
    fn resilience(hold: &[(f64, f64)], forms: &[Form]) -> f64 {
        let mut r = 1.0;
        for (i, f) in forms.iter().enumerate() {
            let (cheap, full) = hold[i];
            r *= match f {
                Form::Full => full,
                Form::Cheap => cheap,
                Form::Unbounded => {
                    let next = forms.get(i + 1).copied().unwrap_or(Form::Unbounded);
                    if next == Form::Unbounded { 0.7 } else { 0.85 }
                }
            };
        }
        r
    }

    fn path_for(costs: &[(f64, f64)], hold: &[(f64, f64)], target: f64) -> (Vec<State>, usize) {
        let offers = offers(costs);
        let full = vec![Form::Full; costs.len()];
        let start = resilience(hold, &full);
        let mut path = Path::new(&offers, start, |site, to| {
            let mut forms = full.clone();
            forms[site] = to;
            resilience(hold, &forms)
        });
        let mut measure = |forms: &[Form]| Ok(resilience(hold, forms));
        path.advance_to(target, &mut measure).unwrap();
        (path.states.clone(), path.measured)
    }

    /// Per activation: (cheap, full) costs, and (cheap, full) shares of faults held.
    type Instance = (Vec<(f64, f64)>, Vec<(f64, f64)>);

    fn instance(n: usize, seed: u64) -> Instance {
        let mut state = seed;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as f64 / (1u64 << 31) as f64
        };
        let costs = (0..n).map(|_| (0.01 * next(), 0.01 + 0.05 * next())).collect();
        let hold = (0..n).map(|_| (0.9 + 0.08 * next(), 0.98 + 0.02 * next())).collect();
        (costs, hold)
    }

    #[test]
    fn the_path_ends_within_the_budget_with_every_activation_in_an_offered_form() {
        for seed in 0..50 {
            let (costs, hold) = instance(12, seed);
            let (states, _) = path_for(&costs, &hold, 0.05);
            let last = states.last().unwrap();
            assert!(last.cost <= 0.05 + 1e-12, "cost {} over the budget", last.cost);
            assert_eq!(last.forms.len(), 12);
            // Every state is one step from the one before, and costs fall along the path.
            for w in states.windows(2) {
                let changed: Vec<usize> = (0..12).filter(|i| w[0].forms[*i] != w[1].forms[*i]).collect();
                assert_eq!(changed.len(), 1);
                assert!(w[1].forms[changed[0]] < w[0].forms[changed[0]]);
                assert!(w[1].cost < w[0].cost);
                // Each state's resilience is the measured one.
                assert_eq!(w[1].resilience, resilience(&hold, &w[1].forms));
            }
        }
    }

    #[test]
    fn the_same_costs_and_measurements_give_the_same_path() {
        let (costs, hold) = instance(20, 7);
        let (first, measured) = path_for(&costs, &hold, 0.02);
        for _ in 0..3 {
            assert_eq!(path_for(&costs, &hold, 0.02), (first.clone(), measured));
        }
        // Costs that differ by less than half a unit give the same path.
        let nudged: Vec<(f64, f64)> = costs.iter().map(|(c, f)| (c + 0.0001, f - 0.0001)).collect();
        let same_units = costs
            .iter()
            .zip(&nudged)
            .all(|(a, b)| units(a.0) == units(b.0) && units(a.1) == units(b.1));
        if same_units {
            assert_eq!(path_for(&nudged, &hold, 0.02).0, first);
        }
    }

    #[test]
    fn lazy_steps_measure_fewer_states_than_every_candidate_at_every_step() {
        let (costs, hold) = instance(30, 3);
        let (states, measured) = path_for(&costs, &hold, 0.0);
        let steps = states.len() - 1;
        assert!(steps >= 30, "every activation steps down at least once");
        assert!(measured < steps * 30 / 2, "{measured} measurements for {steps} steps");
    }

    #[test]
    fn the_last_step_reaches_the_target_with_the_least_loss() {
        // From 0.09 to a target of 0.08: activation 0 (cheapest per point, but saves 0.05)
        // would overshoot to 0.04; activation 1's cheap form saves the 0.01 needed for a
        // smaller loss, and is taken.
        let offers = offers(&[(0.0, 0.05), (0.03, 0.04)]);
        let losses = |site: usize, to: Form| match (site, to) {
            (0, Form::Cheap) => 0.1,
            (0, _) => 0.2,
            (1, Form::Cheap) => 0.05,
            _ => 0.5,
        };
        let mut path = Path::new(&offers, 1.0, |site, to| 1.0 - losses(site, to));
        let mut measure = |forms: &[Form]| -> Result<f64> {
            Ok(1.0
                - (0..2)
                    .filter(|i| forms[*i] != Form::Full)
                    .map(|i| losses(i, forms[i]))
                    .sum::<f64>())
        };
        path.advance_to(0.08, &mut measure).unwrap();
        assert_eq!(path.last().forms, vec![Form::Full, Form::Cheap]);
        assert!((path.last().cost - 0.08).abs() < 1e-12);
    }

    #[test]
    fn what_the_last_step_leaves_is_spent_on_the_upgrade_that_lost_most() {
        // From 0.09 to 0.04: activation 0 (0.01, cheapest per point) goes to its free cheap
        // form, then activation 1 (0.05) to finish, which leaves 0.01 of the target unspent:
        // activation 0's full form fits it again and gains.
        let offers = offers(&[(0.0, 0.01), (0.0, 0.05), (0.0, 0.03)]);
        let hold = [(0.985, 0.99), (0.9, 0.99), (0.9, 0.99)];
        let full = vec![Form::Full; 3];
        let mut path = Path::new(&offers, resilience(&hold, &full), |site, to| {
            let mut forms = full.clone();
            forms[site] = to;
            resilience(&hold, &forms)
        });
        let mut measure = |forms: &[Form]| Ok(resilience(&hold, forms));
        path.advance_to(0.04, &mut measure).unwrap();
        let fill = path.filled(0.04, &mut measure).unwrap();
        let (last, filled) = (path.last().clone(), fill.last().clone());
        assert!(
            filled.cost <= 0.04 + 1e-12 && filled.cost > last.cost,
            "{filled:?} from {last:?}"
        );
        assert!(filled.resilience > last.resilience);
        assert_eq!(filled.resilience, resilience(&hold, &filled.forms));
        assert!(fill.measured <= FILL_TRIES);
        // Nothing to spend: the fill is the path's last state.
        let none = path.filled(last.cost, &mut measure).unwrap();
        assert_eq!(none.last(), &last);
    }

    #[test]
    fn free_forms_stay_and_a_budget_of_zero_keeps_only_them() {
        // Activation 0's full form is free, activation 1's cheap form is free.
        let costs = [(0.0, 0.0), (0.0, 0.03), (0.01, 0.02)];
        let hold = [(0.95, 0.99), (0.95, 0.99), (0.95, 0.99)];
        let (states, _) = path_for(&costs, &hold, 0.0);
        let last = states.last().unwrap();
        assert_eq!(last.forms, vec![Form::Full, Form::Cheap, Form::Unbounded]);
        assert_eq!(last.cost, 0.0);
    }
}
