//! `check`: a gate for CI. A hardened model passes when its clean accuracy (with labels) or
//! its agreement with the reference (without: the same top-1 class, or for an output that is
//! not class scores, values within a tolerance; `replay::judge`) drops by no more than the
//! budget, and, when asked, when its mean accuracy under weight faults at one BER reaches a
//! floor.
//!
//! A stage of its own, above `faults`: may use `faults` (the resilience campaign), `replay`
//! (clean predictions), `data`, `engine`, `model_io` and `passes`.

use crate::data::dataset::{Dataset, load_dataset};
use crate::data::images::ImageOptions;
use crate::engine::batch_size_for;
use crate::faults::flips::WeightFormat;
use crate::faults::{EvaluateOptions, FaultKind, evaluate_on};
use crate::model_io::read_model;
use crate::replay::judge::{Judge, SdcRule, check_labelled, judged_output, with_output_first};
use crate::replay::{Batches, check_labels, predict};
use crate::{TOOL, VERSION};
use anyhow::{Context, Result, ensure};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub engine: crate::engine::Engine,
    pub model: PathBuf,
    pub reference: PathBuf,
    pub data: PathBuf,
    pub labels: Option<PathBuf>,
    pub images: ImageOptions,
    /// The memory the data (and labels) may take.
    pub data_cap: crate::data::cap::DataCap,
    /// Largest allowed drop of accuracy (or of agreement, without labels), as a fraction.
    pub max_drop: f64,
    /// The resilience floor: (BER, minimum mean accuracy under faults).
    pub resilience: Option<(f64, f64)>,
    pub trials: usize,
    pub seed: u64,
    pub format: WeightFormat,
    pub batch_size: usize,
    pub progress: bool,
    /// The output judged (default: the first), and how (`replay::judge`).
    pub output: Option<String>,
    pub sdc: SdcRule,
    pub sdc_tolerance: f64,
}

/// What the gate measured and decided; `--report` writes it as JSON (docs/reports.md).
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub tool: &'static str,
    pub version: &'static str,
    /// The engine that ran both models.
    pub engine: crate::engine::EngineInfo,
    pub model: String,
    pub reference: String,
    pub samples: usize,
    /// "accuracy" with labels, "agreement" (with the reference, by `judge`) without.
    pub metric: &'static str,
    /// The output compared, and what counts as agreeing on it.
    pub output: String,
    pub judge: Judge,
    /// The reference's accuracy (1 for agreement: it agrees with itself).
    pub reference_value: f64,
    pub value: f64,
    pub drop: f64,
    pub max_drop: f64,
    pub resilience: Option<ResilienceCheck>,
    pub passed: bool,
    /// One line saying why it passed or failed.
    pub verdict: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResilienceCheck {
    pub ber: f64,
    pub trials: usize,
    pub seed: u64,
    pub accuracy: f64,
    pub ci95: f64,
    pub min_accuracy: f64,
}

fn pct(v: f64) -> String {
    format!("{:.2}%", 100.0 * v)
}

pub fn check(options: &CheckOptions) -> Result<CheckReport> {
    let model = read_model(&options.model).context("reading the model")?.model;
    let reference = read_model(&options.reference)
        .context("reading the reference model")?
        .model;
    let data = load_dataset(
        &options.data,
        &model,
        options.labels.as_deref(),
        &options.images,
        options.data_cap,
    )
    .context("reading the data")?;
    if options.resilience.is_some() {
        ensure!(
            data.labels.is_some(),
            "--min-accuracy needs labels: give --labels or a folder of class sub-folders"
        );
    }
    let batches = Batches::new(
        &data.samples,
        batch_size_for(&model, options.batch_size.min(data.samples.count)),
    );
    let output = judged_output(&reference, options.output.as_deref()).context("the reference model")?;
    let reference = with_output_first(&reference, &output).context("the reference model")?;
    let model = with_output_first(&model, &output).context("the hardened model")?;
    let (theirs, _) = predict(&options.engine, &reference, &batches, &[], true)
        .with_context(|| format!("running {}", options.reference.display()))?;
    let judge = Judge::resolve(options.sdc, options.sdc_tolerance, &theirs.shape);
    check_labelled(judge, data.labels.is_some(), &output, &theirs.shape)?;
    let (ours, _) = predict(&options.engine, &model, &batches, &[], judge.needs_values())
        .with_context(|| format!("running {}", options.model.display()))?;
    let fraction = |a: &[usize], b: &[usize]| a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64;
    let (metric, reference_value, value) = match &data.labels {
        Some(labels) => {
            check_labels(labels, theirs.width).context("checking the labels")?;
            (
                "accuracy",
                fraction(&theirs.classes, labels),
                fraction(&ours.classes, labels),
            )
        }
        None => {
            let agreement = judge.agreement(&theirs, &ours);
            let agreed = agreement.iter().filter(|a| **a).count();
            ("agreement", 1.0, agreed as f64 / agreement.len().max(1) as f64)
        }
    };
    let samples = data.samples.count;
    let drop = reference_value - value;
    // A drop equal to the budget passes; the tolerance absorbs the decimal budget's rounding.
    let clean_ok = drop <= options.max_drop + 1e-9;

    let resilience = match options.resilience {
        None => None,
        Some((ber, min_accuracy)) => Some(resilience_check(options, data, ber, min_accuracy)?),
    };
    let resilience_ok = resilience.as_ref().is_none_or(|r| r.accuracy >= r.min_accuracy);
    let passed = clean_ok && resilience_ok;

    let metric_label = match (metric, judge) {
        ("agreement", Judge::Tolerance { tolerance }) => {
            format!("agreement within {}% of its range on '{output}'", 100.0 * tolerance)
        }
        _ => metric.to_owned(),
    };
    let verdict = verdict(
        passed,
        &metric_label,
        value,
        reference_value,
        drop,
        options.max_drop,
        resilience.as_ref(),
    );
    Ok(CheckReport {
        tool: TOOL,
        version: VERSION,
        engine: options.engine.info(),
        model: options.model.display().to_string(),
        reference: options.reference.display().to_string(),
        samples,
        metric,
        output,
        judge,
        reference_value,
        value,
        drop,
        max_drop: options.max_drop,
        resilience,
        passed,
        verdict,
    })
}

/// The resilience floor's campaign: weight faults at `ber` in the model, on the data read.
fn resilience_check(options: &CheckOptions, data: Dataset, ber: f64, min_accuracy: f64) -> Result<ResilienceCheck> {
    let campaign = evaluate_on(
        &EvaluateOptions {
            engine: options.engine.clone(),
            models: vec![options.model.clone()],
            data: options.data.clone(),
            labels: options.labels.clone(),
            images: options.images.clone(),
            data_cap: options.data_cap,
            bers: vec![ber],
            trials: options.trials,
            seed: options.seed,
            format: options.format,
            bits: Vec::new(),
            target: None,
            batch_size: options.batch_size,
            shard: None,
            progress: options.progress,
            dump_faults: None,
            fault: FaultKind::Weight,
            layer: None,
            output: options.output.clone(),
            sdc: options.sdc,
            sdc_tolerance: options.sdc_tolerance,
        },
        Some(data),
    )
    .context("running the fault campaign")?;
    let accuracy = campaign.results[0].accuracy.expect("labels were checked above");
    Ok(ResilienceCheck {
        ber,
        trials: options.trials,
        seed: options.seed,
        accuracy: accuracy.mean,
        ci95: accuracy.ci95,
        min_accuracy,
    })
}

/// The one line `check` prints: PASS or FAIL, and why.
fn verdict(
    passed: bool,
    metric: &str,
    value: f64,
    reference_value: f64,
    drop: f64,
    max_drop: f64,
    resilience: Option<&ResilienceCheck>,
) -> String {
    let mut verdict = format!(
        "{}: {metric} {} against the reference's {} (drop {:.2} points, allowed {:.2})",
        if passed { "PASS" } else { "FAIL" },
        pct(value),
        pct(reference_value),
        100.0 * drop,
        100.0 * max_drop,
    );
    if let Some(r) = resilience {
        verdict += &format!(
            "; under faults at BER {:e}: accuracy {} ±{} over {} trials ({} {})",
            r.ber,
            pct(r.accuracy),
            pct(r.ci95),
            r.trials,
            if r.accuracy >= r.min_accuracy {
                "floor"
            } else {
                "below the floor of"
            },
            pct(r.min_accuracy)
        );
    }
    verdict
}
