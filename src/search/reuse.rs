//! Reuse between candidates, which changes no decision (the tests here compare with whole-model
//! runs): a candidate differs from the accepted point at one site, so only the part of the
//! model from that site's bound on reruns (`extract_suffix`), on the accepted point's clean
//! values of what feeds it (tagged with the scales upstream of them, so that a value is
//! computed again only when one of those changes); and a sample whose values at that site lie
//! strictly inside both bounds takes the accepted point's result without a run.

use super::folds::FoldCheck;
use super::holdout::{Tallied, Tally};
use super::state::{Shared, node_indices};
use crate::engine::{Outputs, Value};
use crate::replay::{Batches, Feeds, prediction_runner};
use anyhow::{Context, Result};
use fitact_passes::activations::ActivationKind;
use fitact_passes::bound_stored::is_integer;
use fitact_passes::extract_suffix::{downstream_tensors, extract_suffix};
use fitact_passes::onnx::ModelProto;
use ndarray::{ArrayD, IxDyn, Zip};

impl Shared<'_> {
    /// Per site, from `model` (the calibrated point's, in any fold: only bound values differ)
    /// and the nodes each site's bound `emitted`: the tensors downstream of its bound, those
    /// its suffix reads, and the tensor its bound compares, if its suffix reads it.
    pub(super) fn map_suffixes(&mut self, model: &ModelProto, emitted: &[Vec<String>]) -> Result<()> {
        for ((site, names), stored) in self.sites.iter().zip(emitted).zip(&self.stored) {
            let dirty = node_indices(model, names)?;
            self.downstream.push(downstream_tensors(model, &dirty)?);
            let boundary = extract_suffix(model, &dirty)?.boundary;
            // A bounded float Relu's nodes compare its input; every other bound, the activation's
            // output (an integer one's input is the float its QuantizeLinear reads).
            let float_relu = site.kind == ActivationKind::Relu && !is_integer(stored.elem_type);
            let compared = [&site.output, &site.input]
                .into_iter()
                .take(if float_relu { 2 } else { 1 })
                .find(|t| boundary.contains(t))
                .cloned();
            self.compared.push(compared);
            self.boundaries.push(boundary);
        }
        Ok(())
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
        let now = self.scaled(l, self.base_on(&fold.bases, l, self.on_percentile[l]), candidate[l]);
        let then = self.scaled(
            l,
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
    pub(super) fn check_fold(
        &self,
        fold: &FoldCheck,
        candidate: &[f32],
        only: Option<usize>,
        tally: &Tally,
    ) -> Result<Tallied> {
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

#[cfg(test)]
mod tests {
    use crate::search::search_reusing;
    use crate::search::state::scaled;
    use crate::search::tests::{metric, options, resnet};
    use fitact_passes::bound_activations::{Bound, Mode};

    #[test]
    fn suffix_checks_on_cached_values_match_whole_model_runs_as_points_are_accepted() {
        let fixture = resnet(48);
        let options = options();
        let data = fixture.data(None);
        let mut search = fixture.search(&data, &options);
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
        let lower = |bounds: &[Bound]| bounds.iter().map(|b| scaled(b, 0.7, 0.0)).collect::<Vec<_>>();
        let percentiles = (
            fixture.fold_bounds.iter().map(|b| lower(b)).collect(),
            lower(&fixture.full),
        );
        let options = options();
        let data = fixture.data(Some(&percentiles));
        let mut search = fixture.search(&data, &options);
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

    /// A candidate takes the accepted point's result for every sample whose values at its site
    /// lie inside both bounds; the search then decides as one that runs every sample.
    #[test]
    fn reusing_the_results_of_samples_a_candidate_cannot_change_changes_no_decision() {
        let fixture = resnet(64);
        let mut options = options();
        options.max_evals = Some(40);
        // A budget 64 check samples vouch for (two lost), so that the search runs its phases.
        options.budget = 0.1;
        let data = fixture.data(None);
        let run = |reuse| {
            search_reusing(
                &fixture.model,
                &fixture.sites,
                &fixture.types,
                &data,
                Mode::Zero,
                &options,
                reuse,
            )
            .unwrap()
        };
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
}
