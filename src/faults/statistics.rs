//! The statistics of a campaign: accuracy, means with their 95% confidence intervals, the
//! accuracy-over-BER AUC, and the aggregation of trial records into results.

use crate::faults::campaign_report::{CampaignConfig, CampaignReport, MeanCi, ModelSummary, ResultRecord, TrialRecord};
use crate::{TOOL, VERSION};

/// The share of `classes` equal to their `labels`.
pub fn accuracy(classes: &[usize], labels: &[usize]) -> f64 {
    classes.iter().zip(labels).filter(|(c, l)| c == l).count() as f64 / labels.len().max(1) as f64
}

/// The one-sided 95% lower confidence bound of the mean of paired differences `d` (Student's
/// t, its quantile by the Cornish-Fisher expansion: within 0.01 of the table from 4 degrees
/// of freedom); -Inf for fewer than two.
pub fn lower_bound_95(d: &[f64]) -> f64 {
    if d.len() < 2 {
        return f64::NEG_INFINITY;
    }
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    let var = d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    mean - t_95(n - 1.0) * (var / n).sqrt()
}

/// Student's t quantile at 0.95 for `df` degrees of freedom.
fn t_95(df: f64) -> f64 {
    let z: f64 = 1.644_853_6;
    z + (z.powi(3) + z) / (4.0 * df)
        + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * df.powi(2))
        + (3.0 * z.powi(7) + 19.0 * z.powi(5) + 17.0 * z.powi(3) - 15.0 * z) / (384.0 * df.powi(3))
}

/// Mean and 95% half-width (normal approximation) of per-trial or per-pattern values.
pub fn mean_ci(values: &[f64]) -> MeanCi {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n.max(1.0);
    let ci95 = if values.len() > 1 {
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        1.96 * (var / n).sqrt()
    } else {
        0.0
    };
    MeanCi { mean, ci95 }
}

/// Recomputes `results` and the AUCs from the trial records (sorted, so any order of shards
/// gives the same report).
pub fn aggregate(
    engine: Option<crate::engine::EngineInfo>,
    config: CampaignConfig,
    mut models: Vec<ModelSummary>,
    mut trials: Vec<TrialRecord>,
) -> CampaignReport {
    trials.sort_by_key(|r| (r.model, r.ber, r.trial));
    let mut results = Vec::new();
    for (m, summary) in models.iter_mut().enumerate() {
        let mut curve = Vec::new();
        for (b, ber) in config.bers.iter().enumerate() {
            let these: Vec<&TrialRecord> = trials.iter().filter(|r| r.model == m && r.ber == b).collect();
            if these.is_empty() {
                continue;
            }
            let accuracy = these
                .iter()
                .map(|r| r.accuracy)
                .collect::<Option<Vec<f64>>>()
                .map(|a| mean_ci(&a));
            if let Some(a) = accuracy {
                curve.push((*ber, a.mean));
            }
            let n = these.len() as f64;
            results.push(ResultRecord {
                model: summary.model.clone(),
                ber: *ber,
                trials: these.len(),
                clean_accuracy: summary.clean_accuracy,
                accuracy,
                sdc: mean_ci(&these.iter().map(|r| r.sdc).collect::<Vec<_>>()),
                nonfinite_rate: these.iter().map(|r| r.nonfinite).sum::<f64>() / n,
                refused: these.iter().filter(|r| r.refused).count(),
                mean_flips: these.iter().map(|r| r.flips as f64).sum::<f64>() / n,
                mean_flips_by_dtype: mean_by_dtype(&these),
            });
        }
        summary.accuracy_auc = auc(&curve);
    }
    CampaignReport {
        tool: TOOL.into(),
        version: VERSION.into(),
        engine,
        config,
        models,
        results,
        trials,
    }
}

/// Mean flips per trial, per element type (types no trial hit are left out).
fn mean_by_dtype(trials: &[&TrialRecord]) -> std::collections::BTreeMap<String, f64> {
    let mut sums: std::collections::BTreeMap<String, f64> = Default::default();
    for record in trials {
        for (dtype, count) in &record.flips_by_dtype {
            *sums.entry(dtype.clone()).or_default() += *count as f64;
        }
    }
    let n = trials.len().max(1) as f64;
    sums.values_mut().for_each(|s| *s /= n);
    sums
}

/// Mean of accuracy over the log10-BER span (trapezoids); BER 0 points are left out.
fn auc(curve: &[(f64, f64)]) -> Option<f64> {
    let mut points: Vec<(f64, f64)> = curve
        .iter()
        .filter(|(b, _)| *b > 0.0)
        .map(|(b, a)| (b.log10(), *a))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    match points.len() {
        0 => None,
        1 => Some(points[0].1),
        _ => {
            let span = points.last().unwrap().0 - points[0].0;
            if span == 0.0 {
                return Some(points.iter().map(|p| p.1).sum::<f64>() / points.len() as f64);
            }
            let area: f64 = points
                .windows(2)
                .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
                .sum();
            Some(area / span)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_t_quantile_matches_the_table() {
        for (df, table) in [
            (4.0, 2.132),
            (9.0, 1.833),
            (29.0, 1.699),
            (47.0, 1.678),
            (1000.0, 1.646),
        ] {
            assert!((t_95(df) - table).abs() < 0.01, "df {df}: {} against {table}", t_95(df));
        }
    }

    #[test]
    fn a_lower_bound_is_above_zero_only_for_a_consistent_gain() {
        assert!(lower_bound_95(&[0.02, 0.03, 0.01, 0.02, 0.04, 0.02]) > 0.0);
        assert!(lower_bound_95(&[0.05, -0.04, 0.0, 0.03, -0.03, 0.01]) < 0.0);
        assert_eq!(lower_bound_95(&[0.5]), f64::NEG_INFINITY);
        assert_eq!(lower_bound_95(&[0.0; 8]), 0.0);
    }
}
