//! The check samples, and how a candidate is counted on them: which samples count as kept
//! (`Holdout::kept`: by top-1, those the original gets right that keep `MARGIN_KEPT` of their
//! margin; by tolerance, the original's output), the order they run in (hardest first), and
//! the count that stops a check once the threshold is out of reach (`Tally`), deciding as the
//! full check would whatever order the folds run in.

use super::SearchOptions;
use crate::data::dataset::Samples;
use crate::engine::{Engine, Value};
use crate::replay::judge::{Judge, check_labelled};
use crate::replay::{Batches, Predictions, predict, push_predictions};
use anyhow::{Context, Result};
use fitact_passes::onnx::ModelProto;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A held-out sample the original model gets right counts as kept only if the candidate also
/// keeps at least this share of its top-1 margin: a sample about to flip is counted as
/// flipped, which makes a few hundred held-out samples speak for the many unseen ones near
/// the decision boundary (see `confidence`).
pub const MARGIN_KEPT: f32 = 0.5;

/// What the search evaluates against: the check samples, hardest first (see `Holdout::new`).
pub(super) struct Holdout {
    pub(super) batches: Batches,
    /// Per sample, in batch order: the original's predictions (top-1 classes and margins, and
    /// with a judge by tolerance its outputs), and the class that counts as right (the label,
    /// or the original's class).
    pub(super) original: Predictions,
    pub(super) truth: Vec<usize>,
    /// How outputs are judged, and the difference per element a judge by tolerance allows.
    pub(super) judge: Judge,
    pub(super) allowance: f32,
    /// Per batch: the row of its first sample; per sample: its batch.
    pub(super) offsets: Vec<usize>,
    pub(super) batch_of: Vec<usize>,
    /// The share of its margin a sample must keep to count (`MARGIN_KEPT`, or 0: its class).
    pub(super) margin_kept: f32,
}

/// What a check counted: whether it ran to the end, per batch the samples the original keeps
/// and the candidate lost, and per sample whether the candidate keeps it (None: not reached).
pub(super) struct Tallied {
    pub(super) complete: bool,
    pub(super) lost: Vec<usize>,
    pub(super) kept: Vec<Option<bool>>,
    /// Samples judged by a run, and by the accepted point's flag.
    pub(super) run: usize,
    pub(super) reused: usize,
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
    pub(super) fn flags(&self) -> Option<Vec<bool>> {
        if self.complete {
            self.kept.iter().copied().collect()
        } else {
            None
        }
    }
}

/// What checking a candidate found.
#[derive(Debug, Clone, Copy)]
pub(super) enum Check {
    /// The metric on every check sample.
    Metric(f64),
    /// The check stopped once the metric could no longer reach the threshold: at most this.
    Below(f64),
}

impl Check {
    pub(super) fn reaches(&self, allowed: f64) -> bool {
        matches!(self, Check::Metric(m) if *m >= allowed)
    }
}

/// A check's count over `total` samples, which may run in parallel over the folds: how many
/// samples were missed (not kept) so far, and how many may be before the metric falls below
/// what is allowed. A fold's check stops as soon as the count says so; every miss it counts
/// is real, so a check that stops decides as the full one would, however the folds interleave.
pub(super) struct Tally {
    total: usize,
    /// Whether any count reaches the threshold, and if so how many misses it allows.
    reachable: bool,
    may_miss: usize,
    missed: AtomicUsize,
}

impl Tally {
    /// A count that reaches `allowed` when the samples kept are at least the smallest number
    /// whose share is `allowed` (so that the decision is a count's, whatever the order).
    pub(super) fn new(total: usize, allowed: f64) -> Tally {
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
    pub(super) fn check(&self, complete: bool) -> Check {
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
    pub(super) fn new(
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
    /// their losses), and the losses carry to new data while the gains do not
    /// (docs/results/search_design.md). By tolerance: the original's output, within the
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
    pub(super) fn reference_kept(&self) -> usize {
        self.original
            .classes
            .iter()
            .zip(&self.truth)
            .filter(|(r, t)| r == t)
            .count()
    }

    pub(super) fn len(&self) -> usize {
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
    pub(super) fn tally(
        &self,
        order: &[usize],
        tally: &Tally,
        mut logits: impl FnMut(usize) -> Result<Value>,
    ) -> Result<Tallied> {
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
    pub(super) fn tally_changed(
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
    pub(super) fn check(
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

/// The metric of a check that ran to the end.
pub(super) fn full_metric(check: Check) -> f64 {
    match check {
        Check::Metric(m) | Check::Below(m) => m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::tests::{options, resnet};

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
