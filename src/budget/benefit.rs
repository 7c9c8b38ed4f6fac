//! What bounds buy: paired fault campaigns over candidate models.
//!
//! Every candidate runs under the same fault patterns: pattern (BER, trial) flips, in every
//! stored tensor, the bits `faults::flips` draws from (seed, trial, BER, tensor name), as
//! `evaluate` does; so the weights all candidates share get the same flips (a folded weight
//! the same positions of its rescaled values), and a bound tensor the same flips in every
//! candidate that has it. A candidate's resilience under a pattern is its top-1 accuracy on the
//! samples (with labels) or its agreement with the original's fault-free top-1 prediction.
//! Differences between candidates are then paired: the pattern's luck cancels.
//!
//! With `--benefit targeted` the patterns are single damaging flips placed per activation
//! (`targeted`), the same for every candidate, and a candidate's resilience is estimated from
//! them (`Campaign::summary`); the rest of the stage does not change. A candidate then runs
//! only the events its changed activations can see (`Targeted::affected`) and takes the
//! others' runs from full hardening's.

use crate::budget::targeted::{Event, Targeted};
use crate::budget::{Build, Form, Site};
use crate::data::dataset::Samples;
use crate::engine::Engine;
use crate::faults::campaign_report::MeanCi;
use crate::faults::flips::{WeightFormat, sample_flips_in};
use crate::faults::statistics::{accuracy, mean_ci};
use crate::faults::weights::{Values, Weights, flippable_bits, load};
use crate::replay::{Batches, faulty_or_refused, predict};
use anyhow::{Context, Result};
use fitact_passes::onnx::ModelProto;
use rayon::prelude::*;

/// How the campaigns estimate a candidate's resilience (`--benefit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Benefit {
    /// The mean metric under sampled fault patterns (`--fault-patterns` per BER).
    Sampled,
    /// Single damaging flips per activation (`--benefit-flips` each), weighted by the fault
    /// model (`targeted`).
    Targeted,
}

/// The fault model of the campaigns (`--fault-format`, `--fault-ber`, `--fault-patterns`,
/// `--seed`) and how they are run (`--benefit`, `--benefit-flips`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FaultSettings {
    pub format: WeightFormat,
    pub bers: Vec<f64>,
    /// Patterns (trials) per BER.
    pub patterns: usize,
    pub seed: u64,
    pub benefit: Benefit,
    /// With `Benefit::Targeted`: single-flip runs per stratum of weights.
    pub flips: usize,
}

impl FaultSettings {
    pub fn new(format: WeightFormat, bers: Vec<f64>, patterns: usize, seed: u64) -> FaultSettings {
        FaultSettings {
            format,
            bers,
            patterns,
            seed,
            benefit: Benefit::Sampled,
            flips: 0,
        }
    }

    /// The same faults, estimated by `benefit` (`flips` per stratum when targeted).
    pub fn estimated_by(self, benefit: Benefit, flips: usize) -> FaultSettings {
        FaultSettings { benefit, flips, ..self }
    }
}

/// The samples, what a correct prediction is, and the fault patterns.
pub struct Campaign {
    engine: Engine,
    batches: Batches,
    /// Per sample: the class that counts as right (a label, or the original's prediction).
    reference: Vec<usize>,
    pub labelled: bool,
    faults: FaultSettings,
    /// The events of `Benefit::Targeted`.
    targeted: Option<Targeted>,
}

impl Campaign {
    /// A campaign on `samples` (run `batch_size` at a time); without labels the reference is
    /// the original's fault-free prediction. `sites` place the targeted events.
    pub fn new(
        engine: &Engine,
        original: &ModelProto,
        sites: &[Site],
        samples: &Samples,
        labels: Option<&[usize]>,
        faults: FaultSettings,
        batch_size: usize,
    ) -> Result<Campaign> {
        anyhow::ensure!(faults.patterns > 0, "--fault-patterns must be at least 1");
        anyhow::ensure!(!faults.bers.is_empty(), "--fault-ber needs a BER");
        if let Some(bad) = faults.bers.iter().find(|b| !(0.0..=1.0).contains(*b)) {
            anyhow::bail!("--fault-ber {bad} is not a probability in [0, 1]");
        }
        let batch = crate::engine::batch_size_for(original, batch_size.min(samples.count).max(1));
        let batches = Batches::new(samples, batch);
        let reference = match labels {
            Some(labels) => labels.to_vec(),
            None => {
                predict(engine, original, &batches, &[], false)
                    .context("running the original on the calibration samples")?
                    .0
                    .classes
            }
        };
        anyhow::ensure!(
            faults.benefit != Benefit::Targeted || faults.flips > 0,
            "--benefit-flips must be at least 1"
        );
        let targeted = (faults.benefit == Benefit::Targeted).then(|| {
            let mean_ber = faults.bers.iter().sum::<f64>() / faults.bers.len() as f64;
            Targeted::new(original, sites, faults.format, mean_ber, faults.flips, faults.seed)
        });
        Ok(Campaign {
            engine: engine.clone(),
            batches,
            reference,
            labelled: labels.is_some(),
            faults,
            targeted,
        })
    }

    pub fn faults(&self) -> &FaultSettings {
        &self.faults
    }

    /// The metric's name in reports.
    pub fn metric(&self) -> &'static str {
        if self.labelled { "accuracy" } else { "agreement" }
    }

    /// How many patterns each candidate runs.
    pub fn patterns(&self) -> usize {
        match &self.targeted {
            Some(t) => t.runs(),
            None => self.faults.bers.len() * self.faults.patterns,
        }
    }

    /// A candidate's resilience from its runs: their mean, or the targeted estimate.
    pub fn summary(&self, runs: &[f64]) -> MeanCi {
        match &self.targeted {
            Some(t) => t.estimate(runs),
            None => mean_ci(runs),
        }
    }

    /// What candidate `a` gains over `b` (paired: the same patterns).
    pub fn gain(&self, a: &[f64], b: &[f64]) -> f64 {
        match &self.targeted {
            Some(t) => t.estimate(a).mean - t.estimate(b).mean,
            None => mean_difference(a, b),
        }
    }

    pub fn samples(&self) -> usize {
        self.reference.len()
    }

    /// The metric of `model` without faults.
    pub fn clean(&self, model: &ModelProto) -> Result<f64> {
        let predictions = predict(&self.engine, model, &self.batches, &[], false)?.0;
        Ok(accuracy(&predictions.classes, &self.reference))
    }

    /// Per candidate state (built by `build`), its metric under every pattern, in pattern
    /// order. With targeted events and a `reference` (a state and its metrics), a candidate
    /// runs only what `Targeted::affected` names for the sites where it differs from the
    /// reference, and takes the reference's other runs. Candidates are built a few at a time
    /// (as many as worker threads) and their (candidate, pattern) runs spread over the
    /// workers; results come back in order, the same whatever the thread count.
    pub fn run(
        &self,
        candidates: &[Vec<Form>],
        build: &Build,
        reference: Option<(&[Form], &[f64])>,
    ) -> Result<Vec<Vec<f64>>> {
        let chunk = rayon::current_num_threads().max(1);
        let mut results = Vec::with_capacity(candidates.len());
        for block in candidates.chunks(chunk) {
            let stored = block
                .par_iter()
                .map(|forms| Ok(Stored::of(build(forms)?, self.faults.format)))
                .collect::<Result<Vec<_>>>()?;
            let needed: Vec<Vec<usize>> = block.iter().map(|forms| self.needed(forms, reference)).collect();
            let jobs: Vec<(usize, usize)> = needed
                .iter()
                .enumerate()
                .flat_map(|(c, runs)| runs.iter().map(move |&p| (c, p)))
                .collect();
            let mut metrics = jobs
                .par_iter()
                .map(|&(c, p)| self.faulty_metric(&stored[c], p))
                .collect::<Result<Vec<f64>>>()?
                .into_iter();
            for runs in &needed {
                let mut values = match reference {
                    Some((_, known)) if runs.len() < self.patterns() => known.to_vec(),
                    _ => vec![f64::NAN; self.patterns()],
                };
                for &p in runs {
                    values[p] = metrics.next().expect("one metric per job");
                }
                results.push(values);
            }
        }
        Ok(results)
    }

    /// The patterns a candidate runs itself (`run`).
    fn needed(&self, forms: &[Form], reference: Option<(&[Form], &[f64])>) -> Vec<usize> {
        match (&self.targeted, reference) {
            (Some(targeted), Some((known, _))) => {
                let changed: Vec<usize> = (0..forms.len()).filter(|&i| forms[i] != known[i]).collect();
                targeted.affected(&changed)
            }
            _ => (0..self.patterns()).collect(),
        }
    }

    /// The metric of one stored candidate under pattern `p`.
    fn faulty_metric(&self, stored: &Stored, p: usize) -> Result<f64> {
        if let Some(targeted) = &self.targeted {
            // Run 0 is fault-free, with the weights as the format stores them.
            let event = p.checked_sub(1).map(|e| &targeted.events[e]);
            let model = stored.with_event(event, self.faults.format);
            return self.metric_of(&model, event.is_some());
        }
        let ber = self.faults.bers[p / self.faults.patterns];
        let trial = (p % self.faults.patterns) as u64;
        let faulty = stored.with_flips(ber, self.faults.seed, trial, self.faults.format);
        self.metric_of(&faulty, true)
    }

    /// The metric of `model`; a `faulty` one the runtime refuses to run has lost every sample
    /// (a fault-free one it refuses is an error).
    fn metric_of(&self, model: &ModelProto, faulty: bool) -> Result<f64> {
        let run = predict(&self.engine, model, &self.batches, &[], false).map(|p| p.0);
        let predictions = match faulty {
            true => faulty_or_refused(run, self.reference.len(), 0)?.0,
            false => run?,
        };
        Ok(accuracy(&predictions.classes, &self.reference))
    }
}

/// A candidate as memory stores it: every tensor's words in the fault format.
struct Stored {
    model: ModelProto,
    names: Vec<String>,
    stored: Vec<crate::faults::flips::StoredTensor>,
    bits: Vec<Vec<u32>>,
}

impl Stored {
    fn of(model: ModelProto, format: WeightFormat) -> Stored {
        let weights = Weights::of(&model);
        let stored: Vec<_> = weights.tensors.iter().map(|t| t.store(format)).collect();
        let float_bits: Vec<u32> = (0..format.bits()).collect();
        let bits = stored.iter().map(|s| flippable_bits(s, &float_bits)).collect();
        Stored {
            names: weights.tensors.into_iter().map(|t| t.name).collect(),
            model,
            stored,
            bits,
        }
    }

    /// The model with this pattern's flips in its stored words (and every other value as
    /// the format stores it).
    fn with_flips(&self, ber: f64, seed: u64, trial: u64, format: WeightFormat) -> ModelProto {
        let tensors: Vec<(&str, usize, &[u32])> = self
            .names
            .iter()
            .zip(&self.stored)
            .zip(&self.bits)
            .map(|((n, s), b)| (n.as_str(), s.words.len(), b.as_slice()))
            .collect();
        let mut words: Vec<Vec<u32>> = self.stored.iter().map(|s| s.words.clone()).collect();
        for flip in sample_flips_in(&tensors, ber, seed, trial) {
            words[flip.tensor][flip.element] ^= 1 << flip.bit;
        }
        self.write(&words, format)
    }
}

impl Stored {
    /// The model with one event's bit flipped (none if it has no such tensor), every value
    /// as the format stores it.
    fn with_event(&self, event: Option<&Event>, format: WeightFormat) -> ModelProto {
        let mut words: Vec<Vec<u32>> = self.stored.iter().map(|s| s.words.clone()).collect();
        if let Some(event) = event
            && let Some(t) = self.names.iter().position(|n| *n == event.tensor)
            && let Some(word) = words[t].get_mut(event.element)
        {
            *word ^= 1 << event.bit;
        }
        self.write(&words, format)
    }

    /// The model holding the values of `words`, stored as this candidate's tensors are.
    fn write(&self, words: &[Vec<u32>], format: WeightFormat) -> ModelProto {
        let values: Vec<Values> = words
            .iter()
            .zip(&self.stored)
            .map(|(w, s)| load(s, w, format))
            .collect();
        Weights::write_into(&self.model, &values)
    }
}

/// Mean of the paired differences `a - b`.
pub fn mean_difference(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x - y).sum::<f64>() / a.len().max(1) as f64
}
