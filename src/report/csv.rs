//! A campaign's results as CSV: one row per model and BER (docs/reports.md).

use crate::faults::CampaignReport;
use anyhow::Result;

impl CampaignReport {
    pub fn to_csv(&self) -> Result<String> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record([
            "model",
            "ber",
            "trials",
            "clean_accuracy",
            "accuracy_mean",
            "accuracy_ci95",
            "sdc_mean",
            "sdc_ci95",
            "nonfinite_rate",
            "mean_flips",
        ])?;
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
        for r in &self.results {
            w.write_record([
                r.model.clone(),
                r.ber.to_string(),
                r.trials.to_string(),
                opt(r.clean_accuracy),
                opt(r.accuracy.map(|a| a.mean)),
                opt(r.accuracy.map(|a| a.ci95)),
                r.sdc.mean.to_string(),
                r.sdc.ci95.to_string(),
                r.nonfinite_rate.to_string(),
                r.mean_flips.to_string(),
            ])?;
        }
        Ok(String::from_utf8(w.into_inner()?)?)
    }
}
