//! `evaluate`: fault-injection campaigns. Every model is run fault-free once, then, for every
//! BER and trial, with bit flips in its stored weights; the same trial gives every model the
//! same flips in the tensors they share (`flips`). Trials are independent jobs run in
//! parallel; each is a pure function of (seed, trial, BER), so results do not depend on the
//! thread count, and a campaign can be cut into shards that `merge` puts back together
//! (`shards`). The report it returns is `campaign_report`'s, its numbers `statistics`'.

use crate::data::dataset::{Dataset, load_dataset};
use crate::engine::{Engine, Value, batch_size_for};
use crate::faults::campaign_report::{CampaignConfig, CampaignReport, ModelSummary, TrialRecord};
use crate::faults::flips::{Flip, StoredTensor, WeightFormat, sample_flips_in, tensor_rng};
use crate::faults::shards::Shard;
use crate::faults::statistics::{accuracy, aggregate};
use crate::faults::weights::{Values, Weights, dtype_name, flippable_bits, load};
use crate::model_io::read_model;
use crate::replay::judge::{Judge, SdcRule, check_labelled, judged_output, value_range, with_output_first};
use crate::replay::{Batches, CleanValues, Predictions, faulty_or_refused, readers, run_suffix};
use anyhow::{Context, Result, bail, ensure};
use fitact_passes::extract_suffix::{extract_suffix, suffix_boundary};
use fitact_passes::onnx::ModelProto;
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct EvaluateOptions {
    pub engine: Engine,
    pub models: Vec<PathBuf>,
    /// Samples: .npy, .npz or a folder of images.
    pub data: PathBuf,
    pub labels: Option<PathBuf>,
    /// How images become inputs, when `data` is a folder.
    pub images: crate::data::images::ImageOptions,
    /// The memory the data (and labels) may take.
    pub data_cap: crate::data::cap::DataCap,
    pub bers: Vec<f64>,
    pub trials: usize,
    pub seed: u64,
    pub format: WeightFormat,
    /// Bit positions that may flip (all of the format's bits if empty).
    pub bits: Vec<u32>,
    /// Only tensors whose name matches may flip.
    pub target: Option<regex::Regex>,
    pub batch_size: usize,
    pub shard: Option<Shard>,
    pub progress: bool,
    pub dump_faults: Option<PathBuf>,
    pub fault: FaultKind,
    /// With activation faults: the tensor to hit (default: a random Relu input per trial).
    pub layer: Option<String>,
    /// The output the campaign judges (default: the first).
    pub output: Option<String>,
    /// What counts as SDC on it (`judge`), and the tolerance a judge by value allows.
    pub sdc: SdcRule,
    pub sdc_tolerance: f64,
}

/// Where faults strike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// Bit flips in stored weights at a bit error rate (permanent faults in memory).
    Weight,
    /// One flipped bit in one element of one activation tensor per inference (transient
    /// faults in the datapath, the model Ranger used).
    Activation,
}

/// Most memory the clean values kept for a campaign's trials may take, shared evenly by its
/// models (8 int8 models at 2 GiB each took 8-12 GB): beyond, each is computed when a trial
/// first needs it (one clean run each).
pub const CLEAN_VALUES_BUDGET: usize = 2 << 30;

/// A model under test, with what every trial starts from.
struct Subject {
    path: String,
    model: ModelProto,
    /// For each weight tensor (by name): the main-graph nodes that read it, directly, through
    /// a Constant node, or from inside a subgraph. A flip reruns only what they reach.
    readers: std::collections::HashMap<String, Vec<usize>>,
    /// Clean values of tensors that faulty suffixes read, per batch, filled on demand.
    clean_values: CleanValues,
    /// Clean values as the format stores them (fault-free model = these).
    stored: Vec<StoredTensor>,
    /// Indices (into `stored`) of the tensors faults may hit, their names and sizes, the bit
    /// positions that may flip in each, and their element types' names.
    targets: Vec<usize>,
    target_sizes: Vec<(String, usize)>,
    target_bits: Vec<Vec<u32>>,
    target_dtypes: Vec<String>,
    clean: Predictions,
    /// What counts as the same as `clean`, and the difference per element it allows.
    judge: Judge,
    allowance: f32,
}

impl Subject {
    /// `layers`: the tensors activation faults hit (none for weight faults); `output`: the
    /// judged output, which becomes the first. The judge is set by `judge_by`.
    fn new(
        path: &Path,
        options: &EvaluateOptions,
        batches: &Batches,
        layers: &[String],
        output: &str,
        bits: &[u32],
    ) -> Result<Subject> {
        let model = read_model(path)
            .with_context(|| format!("reading {}", path.display()))?
            .model;
        fitact_passes::validate::validate(&model)
            .with_context(|| format!("{} is not a usable model", path.display()))?;
        let model = with_output_first(&model, output).with_context(|| format!("{}", path.display()))?;
        let weights = Weights::of(&model);
        let stored: Vec<StoredTensor> = weights.tensors.iter().map(|t| t.store(options.format)).collect();
        let targets: Vec<usize> = (0..weights.tensors.len())
            .filter(|i| {
                options
                    .target
                    .as_ref()
                    .is_none_or(|re| re.is_match(&weights.tensors[*i].name))
            })
            .collect();
        let target_sizes = targets
            .iter()
            .map(|i| (weights.tensors[*i].name.clone(), stored[*i].words.len()))
            .collect();
        let target_bits = targets.iter().map(|i| flippable_bits(&stored[*i], bits)).collect();
        let target_dtypes = targets.iter().map(|i| dtype_name(weights.tensors[*i].dtype)).collect();
        let clean_values = Self::values(&stored, options.format, &[], &targets);
        let model = Weights::write_into(&model, &clean_values);
        let readers = readers(&model);
        // What any trial's suffix may read is kept from the fault-free run (within a memory
        // budget), so that no trial waits for a clean run of its own.
        let hit = targets
            .iter()
            .map(|i| weights.tensors[*i].name.as_str())
            .chain(layers.iter().map(String::as_str));
        let mut boundary: Vec<String> = Vec::new();
        for dirty in hit.filter_map(|name| readers.get(name)) {
            for name in suffix_boundary(&model, dirty)? {
                if !boundary.contains(&name) {
                    boundary.push(name);
                }
            }
        }
        let kept = CleanValues::new(&options.engine);
        let clean = kept
            .predict_and_keep(
                &model,
                &boundary,
                batches,
                CLEAN_VALUES_BUDGET / options.models.len().max(1),
            )
            .with_context(|| format!("running {} fault-free", path.display()))?;
        Ok(Subject {
            path: path.display().to_string(),
            readers,
            clean_values: kept,
            model,
            stored,
            targets,
            target_sizes,
            target_bits,
            target_dtypes,
            clean,
            judge: Judge::Top1,
            allowance: 0.0,
        })
    }

    /// Judges this model's faulty runs by `judge` against its fault-free run.
    fn judge_by(&mut self, judge: Judge) {
        if !judge.needs_values() {
            self.clean.drop_values();
        }
        self.allowance = judge.allowance(&self.clean);
        self.judge = judge;
    }

    /// Per sample: whether `faulty` differs from the fault-free run (SDC).
    fn corrupted(&self, faulty: &Predictions) -> Vec<bool> {
        (0..self.clean.classes.len())
            .map(|i| !self.judge.same_row(&self.clean, i, faulty, i, self.allowance))
            .collect()
    }

    /// Every tensor's values with `flips` (indexed over `targets`) applied to the stored words.
    fn values(stored: &[StoredTensor], format: WeightFormat, flips: &[Flip], targets: &[usize]) -> Vec<Values> {
        let mut words: Vec<Vec<u32>> = stored.iter().map(|s| s.words.clone()).collect();
        for flip in flips {
            words[targets[flip.tensor]][flip.element] ^= 1 << flip.bit;
        }
        words.iter().zip(stored).map(|(w, s)| load(s, w, format)).collect()
    }

    fn flips(&self, options: &EvaluateOptions, ber: f64, trial: usize) -> Vec<Flip> {
        let tensors: Vec<(&str, usize, &[u32])> = self
            .target_sizes
            .iter()
            .zip(&self.target_bits)
            .map(|((n, s), bits)| (n.as_str(), *s, bits.as_slice()))
            .collect();
        sample_flips_in(&tensors, ber, options.seed, trial as u64)
    }

    /// How many of `flips` hit each element type.
    fn flips_by_dtype(&self, flips: &[Flip]) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for flip in flips {
            *counts.entry(self.target_dtypes[flip.tensor].clone()).or_default() += 1;
        }
        counts
    }

    /// How many stored values faults may hit, per element type.
    fn weights_by_dtype(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (dtype, (_, size)) in self.target_dtypes.iter().zip(&self.target_sizes) {
            *counts.entry(dtype.clone()).or_default() += size;
        }
        counts
    }

    /// One faulty run. Only the nodes a flipped weight can reach are rerun (`extract_suffix`),
    /// on the clean values of the tensors they read; a trial whose flips reach no output is
    /// the fault-free run.
    fn trial(&self, flips: &[Flip], options: &EvaluateOptions, batches: &Batches) -> Result<Predictions> {
        let mut dirty: Vec<usize> = flips
            .iter()
            .flat_map(|f| {
                self.readers
                    .get(&self.target_sizes[f.tensor].0)
                    .into_iter()
                    .flatten()
                    .copied()
            })
            .collect();
        dirty.sort_unstable();
        dirty.dedup();
        let clean = || self.clean.clone();
        if dirty.is_empty() {
            return Ok(clean());
        }
        let values = Self::values(&self.stored, options.format, flips, &self.targets);
        let model = Weights::write_into(&self.model, &values);
        let suffix = extract_suffix(&model, &dirty)?;
        let Some(logits) = suffix.recomputed_outputs.first().filter(|r| **r).map(|_| 0) else {
            return Ok(clean());
        };
        let feeds = self
            .clean_values
            .boundary_values(&self.model, &suffix.boundary, batches)?;
        let keep = self.judge.needs_values();
        run_suffix(&options.engine, &suffix.model, &feeds, batches, logits, keep)
    }

    /// One inference-time fault per sample: a layer chosen per trial (the same for every
    /// model), then in each sample one random bit of one random element of that tensor. The
    /// consumers of the tensor and everything downstream rerun on the flipped values.
    fn activation_trial(
        &self,
        engine: &Engine,
        layers: &[String],
        seed: u64,
        trial: usize,
        batches: &Batches,
    ) -> Result<(Predictions, usize)> {
        let mut rng = tensor_rng(seed, trial as u64, 0.0, "activation layer");
        let layer = &layers[rng.random_range(0..layers.len())];
        let dirty = self.readers.get(layer).cloned().unwrap_or_default();
        let suffix = extract_suffix(&self.model, &dirty)?;
        ensure!(
            suffix.recomputed_outputs.first() == Some(&true),
            "tensor '{layer}' does not reach the judged output"
        );
        let position = suffix
            .boundary
            .iter()
            .position(|n| n == layer)
            .context("the hit tensor feeds its readers")?;
        let mut feeds = self
            .clean_values
            .boundary_values(&self.model, &suffix.boundary, batches)?;
        let rows = batches.batches[0].1.max(batches.batches[0].0[0].shape()[0]);
        let mut flips = 0;
        for (b, (feed, (_, valid))) in feeds.iter_mut().zip(&batches.batches).enumerate() {
            let mut tensor = feed[position]
                .1
                .to_array::<f32>()
                .with_context(|| format!("tensor '{layer}' is not float32"))?;
            let values = tensor.as_slice_mut().context("an owned array is contiguous")?;
            let per_sample = values.len() / rows;
            for row in 0..*valid {
                let sample = b * rows + row;
                let mut rng = tensor_rng(seed, trial as u64, 0.0, &format!("activation sample {sample}"));
                let element = row * per_sample + rng.random_range(0..per_sample);
                values[element] = f32::from_bits(values[element].to_bits() ^ (1 << rng.random_range(0..32u32)));
                flips += 1;
            }
            feed[position].1 = Value::from(tensor);
        }
        let keep = self.judge.needs_values();
        Ok((run_suffix(engine, &suffix.model, &feeds, batches, 0, keep)?, flips))
    }
}

pub fn evaluate(options: &EvaluateOptions) -> Result<CampaignReport> {
    evaluate_on(options, None)
}

/// `evaluate`, on `data` when the caller has already read `options.data` (with its labels).
/// The steps: check the options, read the data, load the subjects, draw the jobs (BER x
/// trial: each job draws its fault patterns from its seed), run the trials, aggregate.
pub fn evaluate_on(options: &EvaluateOptions, data: Option<Dataset>) -> Result<CampaignReport> {
    let (options, bits) = checked_options(options)?;
    let options = &options;
    let first = read_model(&options.models[0]).context("reading the first model")?.model;
    let data = match data {
        Some(data) => data,
        None => load_dataset(
            &options.data,
            &first,
            options.labels.as_deref(),
            &options.images,
            options.data_cap,
        )
        .context("reading the data")?,
    };
    let (samples, labels) = (data.samples, data.labels);
    let batch_size = batch_size_for(&first, options.batch_size.min(samples.count));
    let batches = Batches::new(&samples, batch_size);
    let layers = activation_layers(options, &first)?;
    let output = judged_output(&first, options.output.as_deref()).context("the first model")?;
    let (subjects, judge) = load_subjects(options, &batches, &layers, labels.as_deref(), &output, &bits)?;
    let campaign = Campaign {
        options,
        subjects: &subjects,
        layers: &layers,
        batches: &batches,
        labels: labels.as_deref(),
        samples: samples.count,
    };
    let (records, dumps) = campaign.run_trials(&trial_jobs(options))?;
    if let Some(path) = &options.dump_faults {
        let json = serde_json::to_string(&dumps)? + "\n";
        crate::model_io::write_atomically(path, json.as_bytes()).context("writing the fault dump")?;
    }
    let mut config = campaign_config(options, &layers, labels.is_some(), samples.count, bits);
    config.output = Some(output);
    config.sdc = Some(judge);
    let summaries = subjects
        .iter()
        .map(|s| ModelSummary {
            model: s.path.clone(),
            sha256: None,
            weights: s.target_sizes.iter().map(|(_, n)| n).sum(),
            weights_by_dtype: s.weights_by_dtype(),
            clean_accuracy: labels.as_ref().map(|l| accuracy(&s.clean.classes, l)),
            accuracy_auc: None,
            output_range: judge.needs_values().then(|| f64::from(value_range(&s.clean.values))),
        })
        .collect();
    Ok(aggregate(Some(options.engine.info()), config, summaries, records))
}

/// The options as the campaign runs them (activation faults: one BER, 0), checked, and the
/// bit positions that may flip.
fn checked_options(options: &EvaluateOptions) -> Result<(EvaluateOptions, Vec<u32>)> {
    ensure!(!options.models.is_empty(), "no model to evaluate");
    let activation = options.fault == FaultKind::Activation;
    ensure!(activation || !options.bers.is_empty(), "no BER given (--ber)");
    ensure!(
        !(activation && options.dump_faults.is_some()),
        "--dump-faults records weight faults only"
    );
    // Activation faults have no BER: one flip per inference; records carry BER 0.
    let bers: Vec<f64> = if activation { vec![0.0] } else { options.bers.clone() };
    let options = EvaluateOptions {
        bers,
        ..options.clone()
    };
    ensure!(options.trials > 0, "--trials must be at least 1");
    if let Some(bad) = options.bers.iter().find(|b| !(0.0..=1.0).contains(*b)) {
        bail!("BER {bad} is not a probability in [0, 1]");
    }
    let width = options.format.bits();
    let bits: Vec<u32> = if options.bits.is_empty() {
        (0..width).collect()
    } else {
        options.bits.clone()
    };
    if let Some(bad) = bits.iter().find(|b| **b >= width) {
        bail!("bit {bad} does not exist in a {width}-bit {:?} word", options.format);
    }
    Ok((options, bits))
}

/// The tensors activation faults hit: `--layer`, or every Relu input of the main graph of
/// the first model; none for weight faults.
fn activation_layers(options: &EvaluateOptions, first: &ModelProto) -> Result<Vec<String>> {
    let activation = options.fault == FaultKind::Activation;
    let layers: Vec<String> = match (&options.layer, activation) {
        (_, false) => Vec::new(),
        (Some(layer), true) => vec![layer.clone()],
        (None, true) => fitact_passes::activations::find_relus(first)
            .into_iter()
            .filter(|s| s.graph.is_main())
            .map(|s| s.input)
            .collect(),
    };
    ensure!(
        !activation || !layers.is_empty(),
        "no activation to hit: give --layer TENSOR"
    );
    Ok(layers)
}

/// Every model of the campaign, run fault-free, checked against the labels and the layers,
/// and the judge of their `output` (decided on the first model's fault-free output).
fn load_subjects(
    options: &EvaluateOptions,
    batches: &Batches,
    layers: &[String],
    labels: Option<&[usize]>,
    output: &str,
    bits: &[u32],
) -> Result<(Vec<Subject>, Judge)> {
    let mut subjects = options
        .models
        .iter()
        .map(|p| Subject::new(p, options, batches, layers, output, bits))
        .collect::<Result<Vec<_>>>()?;
    let shape = subjects[0].clean.shape.clone();
    let judge = Judge::resolve(options.sdc, options.sdc_tolerance, &shape);
    check_labelled(judge, labels.is_some(), output, &shape)?;
    for subject in &mut subjects {
        subject.judge_by(judge);
    }
    if let Some(labels) = labels {
        let source = options.labels.as_ref().unwrap_or(&options.data);
        crate::replay::check_labels(labels, subjects[0].clean.width)
            .with_context(|| format!("{}", source.display()))?;
    }
    for subject in &subjects {
        if let Some(missing) = layers.iter().find(|l| !subject.readers.contains_key(*l)) {
            bail!(
                "{} has no tensor '{missing}' read by a node of its main graph",
                subject.path
            );
        }
    }
    for subject in &subjects {
        log::info!(
            "{}: {} weight tensors may flip ({} words)",
            subject.path,
            subject.targets.len(),
            subject.target_sizes.iter().map(|(_, n)| n).sum::<usize>()
        );
    }
    Ok((subjects, judge))
}

/// The jobs of this run: (BER index, trial) for every BER and every trial of the shard.
fn trial_jobs(options: &EvaluateOptions) -> Vec<(usize, usize)> {
    let trials: Vec<usize> = (0..options.trials)
        .filter(|t| options.shard.is_none_or(|s| t % s.count == s.index))
        .collect();
    (0..options.bers.len())
        .flat_map(|b| trials.iter().map(move |t| (b, *t)))
        .collect()
}

/// What every trial of a campaign needs.
struct Campaign<'a> {
    options: &'a EvaluateOptions,
    subjects: &'a [Subject],
    layers: &'a [String],
    batches: &'a Batches,
    labels: Option<&'a [usize]>,
    samples: usize,
}

impl Campaign<'_> {
    /// Runs the jobs in parallel; records and dumps come back in job order, so the report does
    /// not depend on the thread count.
    fn run_trials(&self, jobs: &[(usize, usize)]) -> Result<(Vec<TrialRecord>, Vec<FaultDump>)> {
        let started = std::time::Instant::now();
        let progress = if self.options.progress {
            ProgressBar::new(jobs.len() as u64).with_style(
                ProgressStyle::with_template("fault injection {bar:30} {pos}/{len} trials, {eta} left")
                    .expect("valid template"),
            )
        } else {
            ProgressBar::hidden()
        };
        type JobResult = Result<(Vec<TrialRecord>, Vec<FaultDump>)>;
        let outcomes: Vec<JobResult> = jobs
            .par_iter()
            .map(|&(b, t)| {
                let outcome = self.job(b, t);
                if outcome.is_ok() {
                    progress.inc(1);
                }
                outcome
            })
            .collect();
        progress.finish_and_clear();
        log::info!(
            "{} trials x {} models in {:.1}s",
            jobs.len(),
            self.subjects.len(),
            started.elapsed().as_secs_f64()
        );
        let mut records = Vec::new();
        let mut dumps = Vec::new();
        for outcome in outcomes {
            let (r, d) = outcome?;
            records.extend(r);
            dumps.extend(d);
        }
        Ok((records, dumps))
    }

    /// Trial `t` at BER index `b` for every model: the same faults in the tensors they share.
    fn job(&self, b: usize, t: usize) -> Result<(Vec<TrialRecord>, Vec<FaultDump>)> {
        let options = self.options;
        let ber = options.bers[b];
        let mut records = Vec::new();
        let mut dumps = Vec::new();
        for (m, subject) in self.subjects.iter().enumerate() {
            let (flips, faulty, flip_count, refused) = if options.fault == FaultKind::Activation {
                let (faulty, count) =
                    subject.activation_trial(&options.engine, self.layers, options.seed, t, self.batches)?;
                (Vec::new(), faulty, count, false)
            } else {
                let flips = subject.flips(options, ber, t);
                let run = subject.trial(&flips, options, self.batches);
                let (faulty, refused) = faulty_or_refused(run, self.samples, subject.clean.width)?;
                let count = flips.len();
                (flips, faulty, count, refused)
            };
            let n = self.samples as f64;
            let corrupted = subject.corrupted(&faulty);
            let sdc = corrupted.iter().filter(|c| **c).count() as f64 / n;
            let nonfinite = faulty.nonfinite.iter().filter(|x| **x).count() as f64 / n;
            if options.dump_faults.is_some() {
                let trial = FaultDump::new(subject, (m, b, ber, t), &flips, options.format, &faulty, corrupted);
                dumps.push(trial);
            }
            records.push(TrialRecord {
                model: m,
                ber: b,
                trial: t,
                flips: flip_count,
                flips_by_dtype: subject.flips_by_dtype(&flips),
                accuracy: self.labels.map(|l| accuracy(&faulty.classes, l)),
                sdc,
                nonfinite,
                refused,
            });
        }
        Ok((records, dumps))
    }
}

/// What the campaign ran, as its report says it.
fn campaign_config(
    options: &EvaluateOptions,
    layers: &[String],
    labelled: bool,
    samples: usize,
    bits: Vec<u32>,
) -> CampaignConfig {
    CampaignConfig {
        fault: options.fault,
        layers: layers.to_vec(),
        data: options.data.display().to_string(),
        labels: match (&options.labels, labelled) {
            (Some(path), _) => Some(path.display().to_string()),
            (None, true) => Some(format!("class folders of {}", options.data.display())),
            (None, false) => None,
        },
        data_sha256: None,
        samples,
        bers: options.bers.clone(),
        trials: options.trials,
        seed: options.seed,
        format: options.format,
        bits,
        target: options.target.as_ref().map(|r| r.as_str().to_owned()),
        shard: options.shard,
        output: None,
        sdc: None,
    }
}

/// One trial's faults for one model, as `--dump-faults` writes them, for replaying elsewhere.
#[derive(Debug, Clone, Serialize)]
pub struct FaultDump {
    pub model: String,
    pub model_index: usize,
    pub ber: f64,
    pub ber_index: usize,
    pub trial: usize,
    pub format: WeightFormat,
    /// (tensor name, flat element index, bit, value after all flips of this trial)
    pub flips: Vec<(String, usize, u32, f32)>,
    /// The predicted class of every sample (`null` for a NaN/Inf output; the argmax of the
    /// judged output, meaningful for class scores only).
    pub predictions: Vec<Option<usize>>,
    /// Per sample: whether it was corrupted (SDC, by the campaign's `config.sdc`).
    pub corrupted: Vec<bool>,
}

impl FaultDump {
    /// `at`: (model index, BER index, BER, trial); `corrupted`: per sample, as the campaign
    /// judged `faulty`.
    fn new(
        subject: &Subject,
        at: (usize, usize, f64, usize),
        flips: &[Flip],
        format: WeightFormat,
        faulty: &Predictions,
        corrupted: Vec<bool>,
    ) -> FaultDump {
        let (model_index, ber_index, ber, trial) = at;
        let values = Subject::values(&subject.stored, format, flips, &subject.targets);
        FaultDump {
            model: subject.path.clone(),
            model_index,
            ber,
            ber_index,
            trial,
            format,
            flips: flips
                .iter()
                .map(|f| {
                    let tensor = subject.targets[f.tensor];
                    (
                        subject.target_sizes[f.tensor].0.clone(),
                        f.element,
                        f.bit,
                        values[tensor].get(f.element),
                    )
                })
                .collect(),
            predictions: faulty
                .classes
                .iter()
                .map(|c| (*c != usize::MAX).then_some(*c))
                .collect(),
            corrupted,
        }
    }
}
