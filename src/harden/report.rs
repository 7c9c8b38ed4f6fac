//! The `harden` report: what was bounded and with what, as JSON for tools (`--report`) and
//! as a short summary for people (stderr). The JSON layout is documented in docs/reports.md.

use crate::harden::bounds::Granularity;
use crate::harden::method::{EmissionName, Method, ModeName};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct HardenReport {
    pub tool: &'static str,
    pub version: &'static str,
    pub input: String,
    pub output: String,
    pub method: Method,
    pub granularity: Granularity,
    pub mode: ModeName,
    /// `--emission`: the nodes a bounded Relu got.
    pub emission: EmissionName,
    pub margin: f32,
    /// The input model's default-domain opset.
    pub opset: i64,
    /// When the written model imports a later opset than the input: from, to and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opset_raised: Option<OpsetRaised>,
    /// The engine that ran the calibration (and the search).
    pub engine: crate::engine::EngineInfo,
    pub calibration: CalibrationSummary,
    pub activations: Vec<ActivationReport>,
    /// Activations left unbounded: no calibration sample reached them (`--unreached keep`).
    pub unreached: Vec<UnreachedReport>,
    /// The bound search, when `--search` was given.
    pub search: Option<crate::search::SearchLog>,
    /// With `--max-overhead`: every activation's forms, costs and benefits, the choice, its
    /// measured overhead and resilience (absent without the flag).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<crate::budget::BudgetReport>,
    /// What the user should know about the result, one line each (also printed).
    pub warnings: Vec<String>,
}

/// The opset `harden` moved the model to, and why (no operator of the model reads differently there).
#[derive(Debug, Clone, Serialize)]
pub struct OpsetRaised {
    pub from: i64,
    pub to: i64,
    pub why: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct CalibrationSummary {
    pub file: String,
    pub samples: usize,
    pub batch_size: usize,
    pub seconds: f64,
}

/// An activation `harden` left unbounded, as `--unreached keep` allows.
#[derive(Debug, Clone, Serialize)]
pub struct UnreachedReport {
    pub kind: &'static str,
    pub node: String,
    pub graph: String,
    pub output: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActivationReport {
    pub kind: &'static str,
    /// The operator, or the decomposed form matched (e.g. `x * Sigmoid(x)`).
    pub form: &'static str,
    pub node: String,
    pub graph: String,
    pub input: String,
    pub output: String,
    /// Shape of one sample's activation (without the batch axis).
    pub sample_shape: Vec<usize>,
    pub bound_initializer: String,
    pub bound_shape: Vec<i64>,
    pub bound: Stats,
    /// Two-sided bounds (activations that can be negative): the bound below.
    pub low_initializer: Option<String>,
    pub low: Option<Stats>,
    /// The largest value this activation took on the calibration samples.
    pub calibrated_max: f32,
    /// The smallest, for activations with two-sided bounds.
    pub calibrated_min: Option<f32>,
    /// NaN or infinite values seen on clean samples (a sign of a broken model or data).
    pub nonfinite_values: usize,
    pub emitted_nodes: Vec<String>,
    /// With `--emission fold`: the initializers the per-channel bound was folded into (the
    /// producer's first); `bound_initializer` then holds the scalar 1 (or is empty: an
    /// attribute of `ThresholdedRelu`). Empty where the bound was not folded.
    pub folded_into: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Stats {
    pub min: f32,
    pub mean: f32,
    pub max: f32,
}

impl Stats {
    pub fn of(values: &[f32]) -> Stats {
        let min = values.iter().copied().fold(f32::INFINITY, f32::min);
        let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mean = (values.iter().map(|v| f64::from(*v)).sum::<f64>() / values.len().max(1) as f64) as f32;
        Stats { min, mean, max }
    }
}

impl HardenReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes") + "\n"
    }

    /// A few lines for stderr.
    pub fn summary(&self) -> String {
        let bound_values: usize = self
            .activations
            .iter()
            .map(|a| a.bound_shape.iter().product::<i64>() as usize)
            .sum();
        let what = if self.activations.iter().all(|a| a.kind == "Relu") {
            "Relu(s)"
        } else {
            "activation(s)"
        };
        let mut text = format!(
            "{} -> {}: {} {what} bounded ({} method: {} granularity, {} mode), {} bound values, calibrated on {} samples in {:.1}s\n",
            self.input,
            self.output,
            self.activations.len(),
            self.method,
            self.granularity,
            self.mode,
            bound_values,
            self.calibration.samples,
            self.calibration.seconds
        );
        for a in &self.activations {
            text += &format!(
                "  {:<32} bound {:?} min {:.3} mean {:.3} max {:.3}",
                a.node, a.bound_shape, a.bound.min, a.bound.mean, a.bound.max
            );
            if let Some(low) = &a.low {
                text += &format!("; below {:.3} to {:.3}", low.min, low.max);
            }
            if a.kind != "Relu" {
                text += &format!(" ({})", a.kind);
            }
            text += "\n";
        }
        if let Some(raised) = &self.opset_raised {
            text += &format!("opset {} raised to {}: {}\n", raised.from, raised.to, raised.why);
        }
        if let Some(search) = &self.search {
            text += &search_summary(search);
        }
        if let Some(budget) = &self.budget {
            text += &budget_summary(budget);
        }
        let nonfinite: usize = self.activations.iter().map(|a| a.nonfinite_values).sum();
        if nonfinite > 0 {
            text += &format!("warning: the clean calibration samples produced {nonfinite} NaN/Inf activation values\n");
        }
        for warning in &self.warnings {
            text += &format!("warning: {warning}\n");
        }
        text
    }
}

/// The summary's lines on `--max-overhead`: what was chosen, its overhead and resilience.
fn budget_summary(budget: &crate::budget::BudgetReport) -> String {
    let mut forms: Vec<(String, usize)> = Vec::new();
    for a in &budget.activations {
        match forms.iter_mut().find(|(f, _)| *f == a.form) {
            Some((_, n)) => *n += 1,
            None => forms.push((a.form.clone(), 1)),
        }
    }
    let forms: Vec<String> = forms.iter().map(|(f, n)| format!("{n} {f}")).collect();
    let percent = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:+.1}%", 100.0 * v));
    let r = &budget.resilience;
    format!(
        "budget: within {:.1}% in {}: {}; overhead predicted {}, measured {} (every activation bounded: predicted {}, measured {})\n\
         budget: {} under faults {:.2}% +- {} (unprotected {:.2}%, every activation bounded {:.2}%): {} of what full hardening buys kept\n",
        100.0 * budget.max_overhead,
        budget.runtime,
        forms.join(", "),
        percent(Some(budget.predicted_overhead)),
        percent(budget.measured_overhead),
        percent(Some(budget.full_predicted_overhead)),
        percent(budget.full_measured_overhead),
        r.metric,
        100.0 * r.chosen.mean,
        if r.chosen.ci95.is_finite() {
            format!("{:.2}", 100.0 * r.chosen.ci95)
        } else {
            "-".to_owned()
        },
        100.0 * r.unbounded.mean,
        100.0 * r.full.mean,
        r.kept
            .map_or("none (full hardening buys nothing here)".to_owned(), |k| format!(
                "{:.0}%",
                100.0 * k
            ))
    )
}

/// The search's lines of the summary: what it did and why (`SearchLog::verdict`), under which
/// objective and fault model, and what its check samples vouch for.
fn search_summary(search: &crate::search::SearchLog) -> String {
    let objective = match &search.fault_sweep {
        Some(sweep) => format!(
            "resilience under {} weight faults at BER {} ({} patterns each, {} samples)",
            search.fault_model(),
            sweep
                .bers
                .iter()
                .map(|b| format!("{b:e}"))
                .collect::<Vec<_>>()
                .join(","),
            sweep.patterns,
            search.fault_samples.unwrap_or(0)
        ),
        None => "tight".to_owned(),
    };
    let mut text = format!("search: {}\n", search.verdict);
    text += &format!(
        "search: objective {objective}; {}-fold {} {:.2}% on {} check samples (original {:.2}%, calibrated bounds {:.2}%), {} lost: a drop of at most {:.2}% (95%, budget {:.2}%); {} evaluations in {:.1}s, {}\n",
        search.folds,
        search.metric,
        100.0 * search.final_metric,
        search.holdout_samples,
        100.0 * search.reference,
        100.0 * search.calibrated_metric,
        search.lost,
        100.0 * search.drop_upper_bound,
        100.0 * search.budget,
        search.evaluations,
        search.seconds,
        search.stopped
    );
    if let (Some(before), Some(after)) = (search.calibrated_fault_metric, search.final_fault_metric) {
        text += &format!(
            "search: {} under faults {:.2}% with the calibrated bounds, {:.2}% with the bounds written\n",
            search.metric,
            100.0 * before,
            100.0 * after
        );
    }
    text
}
