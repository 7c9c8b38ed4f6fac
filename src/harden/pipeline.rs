//! `harden`: read a model, calibrate its activations, bound them, write the hardened model.
//! `harden` is the sequence; each step is a function of its own: find the sites to bound
//! (`sites_to_bound`), read and cut the calibration samples (`calibration_sets`), calibrate,
//! turn extremes into bounds (`BoundRule`), optionally search tighter ones (`search_bounds`),
//! bound the model (`bound_model`), record what was done in its metadata, write it and the report.

use crate::data::dataset::{Samples, load_dataset};
use crate::data::images::ImageOptions;
use crate::engine::ElemType;
use crate::harden::bounds::{Granularity, bound_from_maxima, bound_from_range, site_granularities};
use crate::harden::bounds_file::{BoundsFile, bounds_from_file, bounds_to_file};
use crate::harden::calibrate::{
    ActivationMax, CalibrateOptions, Calibration, ReachedCalibration, calibrate_reached, top_for,
};
use crate::harden::method::{EmissionName, Method, ModeName};
use crate::harden::report::{ActivationReport, CalibrationSummary, HardenReport, OpsetRaised, Stats, UnreachedReport};
use crate::model_io::{read_model, write_atomically, write_model};
use crate::replay::judge::{judged_output, with_output_first};
use crate::search::{Bases, FOLDS, KFold, MIN_SAMPLES, SearchData, SearchLog, SearchOptions, k_fold, search};
use crate::{TOOL, VERSION};
use anyhow::{Context, Result};
use fitact_passes::activations::{ActivationKind, ActivationSite, default_kinds};
use fitact_passes::bound_activations::{Applied, Bound, BoundRequest, Emission, Mode, scaled_threshold_applies};
use fitact_passes::bound_stored::{bound_stored, is_integer, stored_bound};
use fitact_passes::fold_channel_bounds::fold_channel_bounds;
use fitact_passes::graph::default_opset;
use fitact_passes::onnx::{ModelProto, StringStringEntryProto};
use fitact_passes::quantized_activations::{UINT8, sites_of};
use fitact_passes::raise_opset::{RAISED, Raise, plan_raise, raise_opset};
use fitact_passes::tensor::FLOAT;
use fitact_passes::validate::validate;
use std::path::{Path, PathBuf};
use std::time::Instant;
use thiserror::Error;

#[derive(Debug, Clone)]
pub struct HardenOptions {
    /// The engine that runs the model (calibration, search).
    pub engine: crate::engine::Engine,
    pub input: PathBuf,
    pub output: PathBuf,
    /// Calibration samples: .npy, .npz or a folder of images.
    pub calib: PathBuf,
    /// How images become inputs, when `calib` is a folder.
    pub images: ImageOptions,
    /// The memory the calibration samples (and labels) may take.
    pub data_cap: crate::data::cap::DataCap,
    /// The kinds of activation to bound; None: `default_kinds` of the model.
    pub activations: Option<Vec<ActivationKind>>,
    pub method: Method,
    pub granularity: Option<Granularity>,
    pub mode: Option<ModeName>,
    /// The nodes a bounded Relu gets (`--emission`).
    pub emission: EmissionName,
    pub margin: f32,
    pub batch_size: usize,
    pub report: Option<PathBuf>,
    pub progress: bool,
    /// Tighten the calibrated bounds by search (`search`); None keeps the calibrated maxima.
    pub search: Option<SearchSettings>,
    /// `output` is the input, which may then be replaced.
    pub in_place: bool,
    /// Emit these bounds (`bounds_file`) instead of the calibrated ones.
    pub bounds_in: Option<PathBuf>,
    /// Write the bounds emitted here (`bounds_file`).
    pub bounds_out: Option<PathBuf>,
    /// What to do with an activation no calibration sample reaches.
    pub unreached: Unreached,
    /// `--max-overhead`: bound only what fits in a latency budget (`harden::budgeted`).
    pub budget: Option<crate::harden::budgeted::BudgetSettings>,
}

impl HardenOptions {
    /// The kinds to bound in `model`: those asked, or the model's default.
    pub fn kinds(&self, model: &ModelProto) -> Vec<ActivationKind> {
        self.activations.clone().unwrap_or_else(|| default_kinds(model))
    }
}

/// What `harden` does with an activation that no calibration sample reaches (an `If` branch
/// the samples never take): it has no calibrated bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unreached {
    /// Refuse, naming the activation (calibrate with samples that reach it).
    #[default]
    Error,
    /// Leave it unbounded, and name it in the report, the summary and the model's metadata.
    Keep,
}

#[derive(Debug, Clone)]
pub struct SearchSettings {
    pub budget: f64,
    pub objective: crate::search::Objective,
    /// Labels of the calibration samples: the budget is then on accuracy, not agreement.
    pub labels: Option<PathBuf>,
    pub max_evals: Option<usize>,
    pub time_limit: Option<std::time::Duration>,
    /// Try this per-neuron percentile in place of the maxima where outliers set them.
    pub percentile: Option<f64>,
    /// The output the search judges (default: the first), and how (`replay::judge`).
    pub output: Option<String>,
    pub sdc: crate::replay::judge::SdcRule,
    pub sdc_tolerance: f64,
}

/// Conditions under which there is nothing sensible to write.
#[derive(Debug, Error)]
pub enum HardenError {
    #[error("{0} has no {1} to bound")]
    NoActivations(String, String),
    #[error("could not bound {site}: {reason}")]
    Skipped { site: String, reason: String },
}

pub fn harden(options: &HardenOptions) -> Result<HardenReport> {
    let source = read_model(&options.input).context("reading the model")?;
    let mut model = source.model;
    let options = &HardenOptions {
        activations: Some(options.kinds(&model)),
        ..options.clone()
    };
    let (opset, mut sites) = sites_to_bound(&model, options)?;
    let (mut granularity, mode) = options.method.resolve(options.granularity, options.mode);
    log::info!(
        "{}: opset {opset}, {} activation(s) to bound ({granularity:?} granularity, {mode:?} mode), run in {}",
        options.input.display(),
        sites.len(),
        options.engine.describe()
    );
    for site in &sites {
        log::debug!("found {}", site.describe());
    }
    let sets = calibration_sets(&model, options)?;
    let started = Instant::now();
    let (mut calibration, fold_calibrations, unreached) = calibrate_sets(&model, &sets, &sites, options)?;
    let unreached = leave_unbounded(&mut sites, &unreached);
    anyhow::ensure!(
        !sites.is_empty(),
        "none of the {} activation(s) to bound ran on the calibration samples",
        unreached.len()
    );
    let seconds = started.elapsed().as_secs_f64();
    let rule = BoundRule {
        sites: &sites,
        granularity,
        margin: options.margin,
        mode,
    };
    log::info!("calibrated on {} samples in {seconds:.2}s", calibration.samples);
    let mut search_log = None;
    let bounds = match (&options.search, &sets.search, &options.bounds_in) {
        (Some(settings), Some(search_sets), _) => {
            let fold = FoldCalibrations {
                folds: &fold_calibrations,
                all: &calibration,
            };
            let (bounds, log) = search_bounds(&model, options, settings, &rule, &sets, search_sets, fold)?;
            search_log = Some(log);
            bounds
        }
        (_, _, Some(path)) => {
            let (bounds, given) = read_bounds(path, &sites, &calibration)?;
            granularity = given;
            bounds
        }
        _ => rule.bounds(&calibration.activations, None),
    };
    let bounds_file = options.bounds_out.as_ref().map(|_| {
        bounds_to_file(
            &sites,
            &bounds,
            format!("{TOOL} {VERSION} harden {}", options.input.display()),
        )
    });
    let (
        Bounded {
            requests,
            applied,
            folded,
        },
        budget,
    ) = bound_as_asked(&mut model, &rule, bounds, &mut calibration, &sets.samples, options)?;
    record_metadata(&mut model, harden_metadata(options, granularity, mode, requests.len())?);
    record_unreached(&mut model, &unreached);
    // In place, the files read may be replaced (each atomically; the data file first).
    let protected: &[PathBuf] = if options.in_place { &[] } else { &source.files_read };
    write_model(&options.output, &model, &source.external_tensors, protected).context("writing the hardened model")?;
    log::info!("wrote {}", options.output.display());
    if let (Some(path), Some(file)) = (&options.bounds_out, bounds_file) {
        let text = serde_json::to_string_pretty(&file)? + "\n";
        write_atomically(path, text.as_bytes()).with_context(|| format!("writing the bounds to {}", path.display()))?;
    }

    let made = Hardened {
        opset,
        granularity,
        mode,
        calibration: &calibration,
        calibration_seconds: seconds,
        requests: &requests,
        applied: &applied,
        folded: &folded,
        model: &model,
        unreached: &unreached,
    };
    let mut report = harden_report(options, &made, search_log);
    report.budget = budget;
    note_opset(&mut report, opset, &model, &requests, mode)?;
    if let Some(path) = &options.report {
        write_atomically(path, report.to_json().as_bytes()).context("writing the report")?;
    }
    Ok(report)
}

/// Names the activations left unbounded in the model's metadata (`fitact.unreached`).
fn record_unreached(model: &mut ModelProto, unreached: &[ActivationSite]) {
    if !unreached.is_empty() {
        let names: Vec<&str> = unreached.iter().map(|site| site.stem()).collect();
        record_metadata(model, [("fitact.unreached", names.join(","))]);
    }
}

/// The model's opset and the activations of the kinds asked; none is an error
/// (`HardenError::NoActivations`, exit 1) that says what was looked for.
pub fn sites_to_bound(model: &ModelProto, options: &HardenOptions) -> Result<(i64, Vec<ActivationSite>)> {
    validate(model).with_context(|| format!("{} is not a usable model", options.input.display()))?;
    let opset = default_opset(model).with_context(|| format!("{}", options.input.display()))?;
    let kinds = options.kinds(model);
    let sites = sites_of(model, &kinds);
    if sites.is_empty() {
        let wanted = match kinds.as_slice() {
            [ActivationKind::Relu] => "Relu".to_owned(),
            kinds if kinds.len() == ActivationKind::ALL.len() => "activation".to_owned(),
            kinds => {
                let names: Vec<String> = kinds.iter().map(|k| k.cli_name()).collect();
                format!("activation of the kinds asked ({})", names.join(", "))
            }
        };
        return Err(HardenError::NoActivations(options.input.display().to_string(), wanted).into());
    }
    Ok((opset, sites))
}

/// The calibration samples, and, with a search, how they are cut for it.
pub struct CalibrationSets {
    /// Every calibration sample.
    pub samples: Samples,
    /// With a search: the folds, and the samples' labels if known.
    pub search: Option<SearchSets>,
    /// How many of each neuron's largest values calibration keeps (`--percentile`; else 0).
    pub top: usize,
}

/// The calibration samples cut for a search (`search::k_fold`).
pub struct SearchSets {
    pub k_fold: KFold,
    pub labels: Option<Vec<usize>>,
}

/// Reads the calibration samples (and the search's labels, given or from class folders, now,
/// so a bad file fails before any work) and, with a search, cuts them into folds
/// (`search::k_fold`): at least `MIN_SAMPLES` of them.
pub fn calibration_sets(model: &ModelProto, options: &HardenOptions) -> Result<CalibrationSets> {
    let search_labels = options.search.as_ref().and_then(|s| s.labels.as_deref());
    let data = load_dataset(&options.calib, model, search_labels, &options.images, options.data_cap)
        .context("reading calibration samples")?;
    let samples = data.samples;
    log::info!(
        "{}: {} samples{}",
        options.calib.display(),
        samples.count,
        if data.labels.is_some() { " with labels" } else { "" }
    );
    if options.search.is_some() && samples.count < MIN_SAMPLES {
        anyhow::bail!(
            "--search needs at least {MIN_SAMPLES} calibration samples ({FOLDS} folds of {}), {} has {}",
            MIN_SAMPLES / FOLDS,
            options.calib.display(),
            samples.count
        );
    }
    let search = options.search.as_ref().map(|_| SearchSets {
        k_fold: k_fold(samples.count),
        labels: data.labels,
    });
    // With `--percentile`, each neuron's largest values, as many as the percentile of every
    // calibration sample needs (a fold's percentile needs fewer): fold calibrations then
    // merge exactly.
    let top = search_percentile(options).map_or(0, |p| top_for(p, samples.count));
    Ok(CalibrationSets { samples, search, top })
}

/// `--percentile`, with `--search`.
fn search_percentile(options: &HardenOptions) -> Option<f64> {
    options.search.as_ref().and_then(|s| s.percentile)
}

fn calibrate_on(
    model: &ModelProto,
    samples: &Samples,
    sites: &[ActivationSite],
    options: &HardenOptions,
    top: usize,
    progress: bool,
) -> Result<ReachedCalibration> {
    Ok(calibrate_reached(
        model,
        samples,
        sites,
        &CalibrateOptions {
            engine: options.engine.clone(),
            batch_size: options.batch_size,
            progress,
            top,
        },
    )?)
}

/// Calibrates every sample; with a search, fold by fold (the folds' calibrations are kept,
/// and merge into the one of every sample). Also returns the indices of the sites left out:
/// none reached in every fold (with `--unreached keep`; an error otherwise, naming the first).
fn calibrate_sets(
    model: &ModelProto,
    sets: &CalibrationSets,
    sites: &[ActivationSite],
    options: &HardenOptions,
) -> Result<(Calibration, Vec<Calibration>, Vec<usize>)> {
    let Some(search) = &sets.search else {
        let all =
            calibrate_on(model, &sets.samples, sites, options, sets.top, options.progress).context("calibrating")?;
        let unreached = check_reached(&all.unreached(), sites, options.unreached).context("calibrating")?;
        return Ok((all.without(&unreached), Vec::new(), unreached));
    };
    let mut folds = Vec::new();
    for (f, rows) in search.k_fold.folds.iter().enumerate() {
        let context = || format!("calibrating fold {} of {}", f + 1, search.k_fold.folds.len());
        let calibration = calibrate_on(
            model,
            &sets.samples.select(rows),
            sites,
            options,
            sets.top,
            options.progress,
        )
        .with_context(context)?;
        check_reached(&calibration.unreached(), sites, options.unreached).with_context(context)?;
        folds.push(calibration);
    }
    let mut unreached: Vec<usize> = folds.iter().flat_map(ReachedCalibration::unreached).collect();
    unreached.sort_unstable();
    unreached.dedup();
    let folds: Vec<Calibration> = folds.into_iter().map(|f| f.without(&unreached)).collect();
    let all = merged(folds.iter(), None).context("calibration has folds")?;
    Ok((all, folds, unreached))
}

/// `unreached` when `--unreached keep` allows it; else the error naming the first such site.
fn check_reached(unreached: &[usize], sites: &[ActivationSite], rule: Unreached) -> Result<Vec<usize>> {
    match (unreached.first(), rule) {
        (Some(first), Unreached::Error) => Err(crate::harden::calibrate::CalibrateError::NeverRan {
            site: sites[*first].describe(),
        }
        .into()),
        _ => Ok(unreached.to_vec()),
    }
}

/// Removes the sites at `indices` from `sites` and returns them.
fn leave_unbounded(sites: &mut Vec<ActivationSite>, indices: &[usize]) -> Vec<ActivationSite> {
    let mut left = Vec::new();
    let mut index = 0;
    sites.retain(|site| {
        let keep = !indices.contains(&index);
        index += 1;
        if !keep {
            left.push(site.clone());
        }
        keep
    });
    left
}

/// The calibrations merged, but for the one at `skip`.
fn merged<'c>(calibrations: impl Iterator<Item = &'c Calibration>, skip: Option<usize>) -> Option<Calibration> {
    let mut kept = calibrations
        .enumerate()
        .filter(|(i, _)| Some(*i) != skip)
        .map(|(_, c)| c);
    let mut all = kept.next()?.clone();
    kept.for_each(|c| all.merge(c.clone()));
    Some(all)
}

/// The calibrations a search fits bounds from: per fold, and of every sample.
struct FoldCalibrations<'c> {
    folds: &'c [Calibration],
    all: &'c Calibration,
}

/// How calibrated extremes become bounds: per site, at one granularity, with one margin, in one mode.
pub struct BoundRule<'a> {
    pub sites: &'a [ActivationSite],
    pub granularity: Granularity,
    pub margin: f32,
    /// What the emitted nodes do above the bound (the search checks candidates with it).
    pub mode: ModeName,
}

impl BoundRule<'_> {
    /// Bounds from the per-neuron maxima, or from the per-neuron `rank`-th largest values (a
    /// percentile); two-sided for activations that can go negative, unless the bound below is
    /// redundant (then the bound above is the one-sided one, with its own margin).
    pub fn bounds(&self, activations: &[ActivationMax], rank: Option<usize>) -> Vec<Bound> {
        activations
            .iter()
            .zip(self.sites)
            .zip(site_granularities(self.granularity, self.sites))
            .map(|((max, site), granularity)| {
                let high = match rank {
                    Some(rank) => max.neuron_percentile(rank),
                    None => max.neuron_max.clone(),
                };
                let one_sided = || bound_from_maxima(&high, granularity, self.margin);
                match &max.neuron_min {
                    Some(min) => {
                        let margin = self.margin.max(site.kind.least_margin());
                        let two_sided = bound_from_range(min, &high, granularity, margin);
                        if redundant_low(&two_sided, site) {
                            one_sided()
                        } else {
                            two_sided
                        }
                    }
                    None => one_sided(),
                }
            })
            .collect::<Vec<_>>()
    }
}

/// `--search`: the scales found for the bounds of every fold (fitted on the other folds,
/// checked on it), applied to the bounds fitted on every sample.
fn search_bounds(
    model: &ModelProto,
    options: &HardenOptions,
    settings: &SearchSettings,
    rule: &BoundRule,
    sets: &CalibrationSets,
    search_sets: &SearchSets,
    calibrations: FoldCalibrations,
) -> Result<(Vec<Bound>, SearchLog)> {
    let search_options = SearchOptions {
        engine: options.engine.clone(),
        budget: settings.budget,
        objective: settings.objective.clone(),
        max_evals: settings.max_evals,
        time_limit: settings.time_limit,
        batch_size: options.batch_size,
        sdc: settings.sdc,
        sdc_tolerance: settings.sdc_tolerance,
    };
    // The search judges the first output of what it runs: the judged one, moved first.
    let output = judged_output(model, settings.output.as_deref())?;
    let judged = with_output_first(model, &output)?;
    let percentile = search_percentile(options);
    let fit = |calibration: &Calibration| {
        let maxima = rule.bounds(&calibration.activations, None);
        let percentiles =
            percentile.map(|p| rule.bounds(&calibration.activations, Some(top_for(p, calibration.samples))));
        (maxima, percentiles)
    };
    let folds: Vec<(Vec<Bound>, Option<Vec<Bound>>)> = (0..calibrations.folds.len())
        .map(|f| merged(calibrations.folds.iter(), Some(f)).map(|c| fit(&c)))
        .collect::<Option<_>>()
        .context("a search has more than one fold")?;
    let all = fit(calibrations.all);
    let data = SearchData {
        samples: &sets.samples,
        labels: search_sets.labels.as_deref(),
        k_fold: &search_sets.k_fold,
        fold_bases: folds
            .iter()
            .map(|(maxima, percentiles)| Bases {
                maxima,
                percentiles: percentiles.as_deref(),
            })
            .collect(),
        full: Bases {
            maxima: &all.0,
            percentiles: all.1.as_deref(),
        },
    };
    // Candidates are emitted in each activation's own type, as the bounds written are.
    let types: Vec<i32> = calibrations.all.activations.iter().map(|a| a.elem.onnx()).collect();
    let (bounds, log) = search(&judged, rule.sites, &types, &data, rule.mode.into(), &search_options)
        .context("searching the bounds")?;
    log::info!("search: {} evaluations in {:.1}s", log.evaluations, log.seconds);
    Ok((bounds, log))
}

/// Bounds every site (`bound_model`), or with `--max-overhead` the sites and forms the budget
/// chooses (`harden::budgeted`; `calibration` then keeps the bounded sites' entries only).
fn bound_as_asked(
    model: &mut ModelProto,
    rule: &BoundRule,
    bounds: Vec<Bound>,
    calibration: &mut Calibration,
    samples: &Samples,
    options: &HardenOptions,
) -> Result<(Bounded, Option<crate::budget::BudgetReport>)> {
    let Some(settings) = &options.budget else {
        let elems: Vec<ElemType> = calibration.activations.iter().map(|a| a.elem).collect();
        let bounded = bound_model(model, rule.sites, bounds, rule.mode, options.emission, &elems)?;
        return Ok((bounded, None));
    };
    let within = crate::harden::budgeted::bound_within_budget(
        model,
        rule,
        bounds,
        calibration,
        samples,
        options.emission,
        settings,
    )?;
    record_metadata(model, within.metadata());
    *calibration = within.calibration;
    Ok((within.bounded, Some(within.report)))
}

/// What `bound_model` did: the requests (holding the calibrated bounds, folded or not), what
/// the pass applied, and per request the initializers its bound was folded into (none where
/// it was not folded).
pub struct Bounded {
    pub requests: Vec<BoundRequest>,
    pub applied: Vec<Applied>,
    pub folded: Vec<Vec<String>>,
}

/// The bounds of a bounds file (`--bounds`) for `sites`, checked against the shapes their
/// activations had in calibration, and the file's granularity.
fn read_bounds(path: &Path, sites: &[ActivationSite], calibration: &Calibration) -> Result<(Vec<Bound>, Granularity)> {
    let context = || format!("reading the bounds in {}", path.display());
    let text = std::fs::read_to_string(path).with_context(context)?;
    let file: BoundsFile = serde_json::from_str(&text).with_context(context)?;
    let shapes: Vec<Vec<usize>> = calibration.activations.iter().map(|a| a.shape.clone()).collect();
    bounds_from_file(file, sites, &shapes).with_context(context)
}

/// Bounds every site in `model` (with `fold` emissions, `fold_channel_bounds` first, then the
/// `bound_stored` pass: float activations by `bound_activations`, integer ones in their integers
/// by `bound_quantized`); a site the pass skips is an error, never a half-hardened model.
/// Bounds are stored in each activation's own type (`elems`, as calibration saw it): a float16 one's
/// rounded outward to float16, so no calibrated value is cut, and emitted in the plain forms
/// (folding rescales weights, and the scaled threshold's exactness holds in float32 only).
pub fn bound_model(
    model: &mut ModelProto,
    sites: &[ActivationSite],
    bounds: Vec<Bound>,
    mode: ModeName,
    emission: EmissionName,
    elems: &[ElemType],
) -> Result<Bounded> {
    let requests: Vec<BoundRequest> = sites
        .iter()
        .zip(bounds)
        .zip(elems)
        .map(|((site, bound), elem)| BoundRequest {
            site: site.clone(),
            elem_type: elem.onnx(),
            bound: stored_bound(bound, elem.onnx()),
        })
        .collect();
    let integer: Vec<bool> = requests.iter().map(|r| is_integer(r.elem_type)).collect();
    let float_requests: Vec<BoundRequest> = requests
        .iter()
        .zip(&integer)
        .filter(|(_, i)| !**i)
        .map(|(r, _)| r.clone())
        .collect();
    let float32 = requests.iter().all(|r| r.elem_type == FLOAT);
    if !float32 && emission != EmissionName::Plain {
        log::info!(
            "activations in float16 or integers: float bounds emitted in the plain form (--emission {emission} is float32's)"
        );
    }
    let emission = if float32 { emission } else { EmissionName::Plain };
    let EmissionPlan {
        emitted,
        emissions,
        folded,
    } = emission_plan(model, &float_requests, mode, emission)?;
    // The float requests as planned (their bounds the scalar 1 where folded), with the integer
    // ones, in request order.
    let (mut planned, mut plans) = (emitted.into_iter().zip(emissions), folded.into_iter());
    let mut ordered = Vec::with_capacity(requests.len());
    let mut ordered_emissions = Vec::with_capacity(requests.len());
    let mut rescaled = Vec::with_capacity(requests.len());
    for (request, is_integer) in requests.iter().zip(&integer) {
        if *is_integer {
            ordered.push(request.clone());
            ordered_emissions.push(Emission::Plain);
            rescaled.push(Vec::new());
        } else {
            let (emitted, form) = planned.next().context("the plan has every float request")?;
            ordered.push(emitted);
            ordered_emissions.push(form);
            rescaled.push(plans.next().context("the plan has every float request")?);
        }
    }
    raise_for_masks(model, &requests, mode)?;
    let outcome = bound_stored(model, &ordered, mode.into(), &ordered_emissions).context("bounding the activations")?;
    if let Some(skipped) = outcome.skipped.first() {
        return Err(HardenError::Skipped {
            site: skipped.site.describe(),
            reason: skipped.reason.to_string(),
        }
        .into());
    }
    Ok(Bounded {
        requests,
        applied: outcome.applied,
        folded: rescaled,
    })
}

/// Raises a model at opset 12 or 13 to 14 when a uint8 zero bound wants the mask form and 14
/// reads every node alike (`raise_opset`); else leaves it (the bounds are then `Where`).
fn raise_for_masks(model: &mut ModelProto, requests: &[BoundRequest], mode: ModeName) -> Result<()> {
    if wants_mask(mode, requests.iter().map(|r| r.elem_type)) {
        let raise = raise_opset(model).context("raising the opset for the uint8 mask form")?;
        log::debug!("opset for the uint8 mask form: {raise:?}");
    }
    Ok(())
}

/// Why `harden` raises an opset: `bound_quantized` emits a uint8 zero bound as a mask
/// (`Mul`/`Sub`/`Add` on uint8, opset 14) rather than `Where`, 1.29x the int8 model instead of
/// 1.50x on resnet_qdq in onnxruntime (docs/results/precision_resilience_2026-12-05.md).
pub const MASK_NEEDS_14: &str = "uint8 zero bounds as a mask (Mul on uint8 needs opset 14), cheaper than Where";

/// Whether a zero-mode bound of these integer types has a cheaper form from opset 14 (uint8's mask).
fn wants_mask(mode: ModeName, mut elem_types: impl Iterator<Item = i32>) -> bool {
    mode == ModeName::Zero && elem_types.any(|t| t == UINT8)
}

/// Puts `opset_note` into the report (and the log).
fn note_opset(
    report: &mut HardenReport,
    input_opset: i64,
    model: &ModelProto,
    requests: &[BoundRequest],
    mode: ModeName,
) -> Result<()> {
    let (raised, kept) = opset_note(input_opset, model, requests, mode)?;
    if let Some(raised) = &raised {
        log::info!("opset {} raised to {}: {}", raised.from, raised.to, raised.why);
    }
    report.opset_raised = raised;
    report.warnings.extend(kept);
    Ok(())
}

/// The report's note on the opset: raised (from `input_opset` to the written model's) for the
/// mask form, or kept with the reasons when a uint8 zero bound wanted it and 14 would read the
/// model differently (a warning: the bounds are then the dearer Where).
fn opset_note(
    input_opset: i64,
    model: &ModelProto,
    requests: &[BoundRequest],
    mode: ModeName,
) -> Result<(Option<OpsetRaised>, Option<String>)> {
    let written = default_opset(model)?;
    if written != input_opset {
        let raised = OpsetRaised {
            from: input_opset,
            to: written,
            why: MASK_NEEDS_14,
        };
        return Ok((Some(raised), None));
    }
    if !wants_mask(mode, requests.iter().map(|r| r.elem_type)) || written >= RAISED {
        return Ok((None, None));
    }
    Ok(match plan_raise(model)? {
        Raise::Refused { opset, reasons } => (
            None,
            Some(format!(
                "opset {opset} kept, so the uint8 zero bounds are Where, not the cheaper mask of opset 14: {}",
                reasons.join("; ")
            )),
        ),
        _ => (None, None),
    })
}

/// What the pass is asked to emit: per request, its bound (the scalar 1 where folded), its
/// form, and the initializers its bound was folded into.
struct EmissionPlan {
    emitted: Vec<BoundRequest>,
    emissions: Vec<Emission>,
    folded: Vec<Vec<String>>,
}

/// What the pass is asked to emit for each request: with `fold`, the folded Relus are bounded
/// by the scalar 1 (negated with `fold-threshold` in zero mode, from opset 10).
fn emission_plan(
    model: &mut ModelProto,
    requests: &[BoundRequest],
    mode: ModeName,
    emission: EmissionName,
) -> Result<EmissionPlan> {
    let mut emitted = requests.to_vec();
    let mut rescaled = vec![Vec::new(); requests.len()];
    let kept = match emission {
        EmissionName::Plain => Emission::Plain,
        _ => Emission::ReluFirst,
    };
    let mut emissions = vec![kept; requests.len()];
    if matches!(emission, EmissionName::Fold | EmissionName::FoldThreshold) {
        let negate = emission == EmissionName::FoldThreshold && mode == ModeName::Zero && default_opset(model)? >= 10;
        let report = fold_channel_bounds(model, requests, negate);
        for folded in &report.folded {
            emitted[folded.index].bound = Bound::scalar(1.0);
            rescaled[folded.index] = folded.rescaled.clone();
            if folded.negated {
                emissions[folded.index] = Emission::NegatedThreshold;
            }
        }
        log::info!(
            "{} of {} bounds folded into the weights",
            report.folded.len(),
            requests.len()
        );
        for skipped in &report.not_folded {
            log::debug!("not folded: {}: {}", skipped.site.describe(), skipped.reason);
        }
        if emission == EmissionName::FoldThreshold {
            scale_the_rest(&emitted, &mut emissions, mode.into(), default_opset(model)?);
        }
    }
    Ok(EmissionPlan {
        emitted,
        emissions,
        folded: rescaled,
    })
}

/// With `fold-threshold`, every bound not folded and negated (a Relu read by a residual Add or
/// a max pool, a tensor bound, any other activation) takes the scaled threshold where it is
/// exact: one comparison, four cheap element-wise ops that onnxruntime runs in about two thirds
/// of the time of `LessOrEqual` + `Where` (docs/results/deployment_2026-12-03.md).
fn scale_the_rest(emitted: &[BoundRequest], emissions: &mut [Emission], mode: Mode, opset: i64) {
    for (request, emission) in emitted.iter().zip(emissions.iter_mut()) {
        if *emission != Emission::NegatedThreshold && scaled_threshold_applies(request, mode, opset) {
            *emission = Emission::ScaledThreshold;
        }
    }
}

/// The `fitact.*` entries of the hardened model's `metadata_props`.
fn harden_metadata(
    options: &HardenOptions,
    granularity: Granularity,
    mode: ModeName,
    bounded: usize,
) -> Result<[(&'static str, String); 9]> {
    let kinds: Vec<String> = options.activations.iter().flatten().map(|k| k.cli_name()).collect();
    Ok([
        ("fitact.tool", format!("{TOOL} {VERSION}")),
        ("fitact.method", options.method.to_string()),
        ("fitact.granularity", granularity.to_string()),
        ("fitact.mode", mode.to_string()),
        ("fitact.emission", options.emission.to_string()),
        ("fitact.margin", options.margin.to_string()),
        ("fitact.activations", kinds.join(",")),
        ("fitact.bounded_activations", bounded.to_string()),
        ("fitact.engine", options.engine.describe()),
    ])
}

/// What hardening did, as the report needs it.
struct Hardened<'a> {
    opset: i64,
    granularity: Granularity,
    mode: ModeName,
    calibration: &'a Calibration,
    calibration_seconds: f64,
    requests: &'a [BoundRequest],
    applied: &'a [Applied],
    folded: &'a [Vec<String>],
    /// The hardened model.
    model: &'a ModelProto,
    /// The sites left unbounded: no calibration sample reached them (`--unreached keep`).
    unreached: &'a [ActivationSite],
}

/// The harden report: the options, what calibration saw and what each site got.
fn harden_report(options: &HardenOptions, made: &Hardened, search_log: Option<SearchLog>) -> HardenReport {
    let activations = made
        .requests
        .iter()
        .zip(made.applied)
        .zip(&made.calibration.activations)
        .zip(made.folded)
        .map(|(((request, applied), max), folded)| ActivationReport {
            folded_into: folded.clone(),
            ..activation_report(&request.site, request, applied, max)
        })
        .collect();
    HardenReport {
        tool: TOOL,
        version: VERSION,
        input: options.input.display().to_string(),
        output: options.output.display().to_string(),
        method: options.method,
        granularity: made.granularity,
        mode: made.mode,
        emission: options.emission,
        margin: options.margin,
        opset: made.opset,
        engine: options.engine.info(),
        calibration: CalibrationSummary {
            file: options.calib.display().to_string(),
            samples: made.calibration.samples,
            batch_size: made.calibration.batch_size,
            seconds: made.calibration_seconds,
        },
        activations,
        unreached: made.unreached.iter().map(unreached_report).collect(),
        search: search_log,
        budget: None,
        opset_raised: None,
        warnings: batch_coupling(options.input.display().to_string(), made)
            .into_iter()
            .chain(unreached_warning(made.unreached))
            .collect(),
    }
}

/// An activation left unbounded because no calibration sample reached it.
fn unreached_report(site: &ActivationSite) -> UnreachedReport {
    UnreachedReport {
        kind: site.kind.op_type(),
        node: site.stem().to_owned(),
        graph: site.graph.to_string(),
        output: site.output.clone(),
    }
}

/// The summary's line about the activations left unbounded, if any.
fn unreached_warning(unreached: &[ActivationSite]) -> Option<String> {
    let names: Vec<String> = unreached.iter().map(ActivationSite::describe).collect();
    (!names.is_empty()).then(|| {
        format!(
            "{} activation(s) left unbounded, never reached by the calibration samples (--unreached keep): {}",
            names.len(),
            names.join(", ")
        )
    })
}

/// Whether the bound below of `bound` is redundant: every lower value lies under the
/// function's own minimum (hard-swish, SiLU and GELU outputs calibrated down to it), so the
/// function keeps its output above it whatever a fault does, and a one-sided bound (one
/// comparison) does the same job.
fn redundant_low(bound: &Bound, site: &ActivationSite) -> bool {
    match (&bound.low, site.kind.floor()) {
        // A margin of 1e-4 of the floor covers the rounding of the function's evaluation.
        (Some(low), Some(floor)) => low.iter().all(|l| *l <= floor - 1e-4 * floor.abs()),
        _ => false,
    }
}

fn activation_report(
    site: &ActivationSite,
    request: &BoundRequest,
    applied: &Applied,
    max: &ActivationMax,
) -> ActivationReport {
    ActivationReport {
        kind: site.kind.op_type(),
        form: site.form,
        node: site.stem().to_owned(),
        graph: site.graph.to_string(),
        input: site.input.clone(),
        output: site.output.clone(),
        sample_shape: max.shape.clone(),
        bound_initializer: applied.bound_initializer.clone(),
        bound_shape: request.bound.dims.clone(),
        bound: Stats::of(&request.bound.values),
        low_initializer: applied.low_initializer.clone(),
        low: request.bound.low.as_deref().map(Stats::of),
        calibrated_max: max.neuron_max.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        calibrated_min: max
            .neuron_min
            .as_ref()
            .map(|m| m.iter().copied().fold(f32::INFINITY, f32::min)),
        nonfinite_values: max.nonfinite,
        emitted_nodes: applied.nodes.clone(),
        folded_into: Vec::new(),
    }
}

/// Records what was done in the model's `metadata_props` (replacing earlier `fitact.*` keys),
/// so a deployed model says how it was hardened. No timestamps: reruns are byte-identical.
fn record_metadata<const N: usize>(model: &mut ModelProto, entries: [(&str, String); N]) {
    model
        .metadata_props
        .retain(|e| !entries.iter().any(|(k, _)| e.key() == *k));
    model
        .metadata_props
        .extend(entries.into_iter().map(|(k, v)| StringStringEntryProto {
            key: Some(k.to_owned()),
            value: Some(v),
        }));
}

/// Operators whose output for one sample depends on the other samples of its batch (they
/// quantize with a scale computed over the whole batch).
const BATCH_COUPLED: &[&str] = &["DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"];

/// A warning when the model's activations depend on the batch a sample runs in: the bounds
/// then hold for the calibration batch size, and may cut values at another.
fn batch_coupling(input: String, made: &Hardened) -> Option<String> {
    let mut found: Vec<&str> = Vec::new();
    fitact_passes::graph::for_each_graph(made.model, |_, graph| {
        for node in &graph.node {
            if let Some(op) = BATCH_COUPLED.iter().find(|op| **op == node.op_type())
                && !found.contains(op)
            {
                found.push(op);
            }
        }
    });
    (!found.is_empty()).then(|| {
        format!(
            "{input}: {} quantizes over the whole batch, so an activation depends on the batch it runs in: the bounds were fitted at batch {} and may cut values at other batch sizes (give --batch-size the size you deploy at, or --margin)",
            found.join(", "),
            made.calibration.batch_size
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fitact_passes::onnx::NodeProto;
    use fitact_passes::quantized_activations::find_quantized;

    /// The int8 QDQ ResNet fixture (opset 13) with a BatchNormalization with training outputs
    /// added, which opset 14 reads differently.
    fn qdq_with_training_bn() -> ModelProto {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/precision/resnet_qdq.onnx");
        let mut model = read_model(&path).unwrap().model;
        model.graph.as_mut().unwrap().node.push(NodeProto {
            op_type: Some("BatchNormalization".into()),
            name: Some("bn".into()),
            input: ["x", "s", "b", "m", "v"].map(String::from).to_vec(),
            output: ["n", "mean", "var"].map(String::from).to_vec(),
            ..Default::default()
        });
        model
    }

    #[test]
    fn the_report_says_why_an_opset_was_raised_or_kept() {
        let mut model = qdq_with_training_bn();
        let requests: Vec<BoundRequest> = find_quantized(&model)
            .into_iter()
            .filter(|q| q.site.kind != ActivationKind::Linear)
            .map(|q| BoundRequest {
                site: q.site,
                bound: Bound::scalar(100.0),
                elem_type: q.elem_type,
            })
            .collect();
        assert_eq!(requests.len(), 11);
        let (raised, kept) = opset_note(13, &model, &requests, ModeName::Zero).unwrap();
        assert!(raised.is_none());
        let kept = kept.expect("a warning");
        assert!(
            kept.starts_with("opset 13 kept") && kept.contains("BatchNormalization 'bn': training outputs"),
            "{kept}"
        );
        // Saturate mode has no mask form to want: nothing to say.
        assert_eq!(opset_note(13, &model, &requests, ModeName::Saturate).unwrap().1, None);
        // Written at 14 from an input at 13: raised, and why.
        model.opset_import[0].version = Some(14);
        let (raised, kept) = opset_note(13, &model, &requests, ModeName::Zero).unwrap();
        assert_eq!(raised.map(|r| (r.from, r.to)), Some((13, 14)));
        assert_eq!(kept, None);
    }
}
