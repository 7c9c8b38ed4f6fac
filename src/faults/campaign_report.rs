//! A campaign's report: what was run (`CampaignConfig`), each model's summary, the results
//! per model and BER, and every trial's record, from which `statistics::aggregate` computes
//! the results (so `merge` can recompute them). Serialized as JSON (docs/reports.md).

use crate::faults::campaign::FaultKind;
use crate::faults::flips::WeightFormat;
use crate::faults::shards::Shard;
use serde::{Deserialize, Serialize};

/// What a campaign was run with; shards of one campaign share all of it but `shard`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignConfig {
    pub fault: FaultKind,
    /// Activation faults: the tensors a trial may hit (one, chosen per trial).
    #[serde(default)]
    pub layers: Vec<String>,
    pub data: String,
    pub labels: Option<String>,
    /// SHA-256 of the samples and labels as the campaign read them (absent in reports of
    /// earlier versions and of library callers of `evaluate`): with it, `merge` compares
    /// the data by content, not by path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_sha256: Option<String>,
    pub samples: usize,
    pub bers: Vec<f64>,
    pub trials: usize,
    pub seed: u64,
    pub format: WeightFormat,
    pub bits: Vec<u32>,
    pub target: Option<String>,
    pub shard: Option<Shard>,
    /// The output the campaign judged (absent in reports before `--output`: the first).
    #[serde(default)]
    pub output: Option<String>,
    /// What counted as SDC on it (absent in reports before `--sdc`: top-1).
    #[serde(default)]
    pub sdc: Option<crate::replay::judge::Judge>,
}

impl CampaignConfig {
    /// What SDC means in this campaign, in one line.
    pub fn sdc_definition(&self) -> String {
        self.sdc
            .unwrap_or(crate::replay::judge::Judge::Top1)
            .describe(self.output.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    pub model: String,
    /// SHA-256 of the model file followed by its external data files (absent as
    /// `config.data_sha256` is): with it, `merge` compares the model by content, not by path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Stored values that can be hit (after --target), and how many of each element type.
    pub weights: usize,
    #[serde(default)]
    pub weights_by_dtype: std::collections::BTreeMap<String, usize>,
    pub clean_accuracy: Option<f64>,
    /// Mean accuracy over the BER range on a log axis (trapezoids over log10 BER); the single
    /// BER's accuracy if there is one.
    pub accuracy_auc: Option<f64>,
    /// Judged by tolerance: the fault-free output's range (max - min) the tolerance is
    /// relative to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_range: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanCi {
    pub mean: f64,
    /// Half-width of the 95% confidence interval of the mean (normal approximation).
    pub ci95: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    pub model: String,
    pub ber: f64,
    pub trials: usize,
    pub clean_accuracy: Option<f64>,
    pub accuracy: Option<MeanCi>,
    pub sdc: MeanCi,
    pub nonfinite_rate: f64,
    /// Trials whose faulty model the runtime refused to run (counted as every sample wrong).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refused: usize,
    pub mean_flips: f64,
    /// Mean flips per trial in tensors of each element type.
    #[serde(default)]
    pub mean_flips_by_dtype: std::collections::BTreeMap<String, f64>,
}

/// One model in one trial at one BER.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    pub model: usize,
    pub ber: usize,
    pub trial: usize,
    pub flips: usize,
    /// Of `flips`, how many hit tensors of each element type (activation faults: none).
    #[serde(default)]
    pub flips_by_dtype: std::collections::BTreeMap<String, usize>,
    pub accuracy: Option<f64>,
    pub sdc: f64,
    pub nonfinite: f64,
    /// The runtime refused to run the faulty model: every sample counts as wrong and changed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignReport {
    pub tool: String,
    pub version: String,
    /// The engine that ran the trials (absent in reports of versions before engines).
    #[serde(default)]
    pub engine: Option<crate::engine::EngineInfo>,
    pub config: CampaignConfig,
    pub models: Vec<ModelSummary>,
    pub results: Vec<ResultRecord>,
    /// Every (model, BER, trial) outcome; `merge` recomputes `results` from these.
    pub trials: Vec<TrialRecord>,
}

impl CampaignReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes") + "\n"
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
