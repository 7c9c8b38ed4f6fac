//! Cutting a campaign into shards (`--shard K/N`: trial t belongs to shard `t % N`) and
//! putting the shards' reports back together (`merge`).

use crate::faults::campaign_report::{CampaignReport, ModelSummary};
use crate::faults::statistics::aggregate;
use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

/// Which slice of the trials this run does: trial t belongs to shard `t % count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let (k, n) = s.split_once('/').ok_or_else(|| format!("'{s}' is not K/N"))?;
        let index: usize = k.parse().map_err(|_| format!("'{k}' is not a shard number"))?;
        let count: usize = n.parse().map_err(|_| format!("'{n}' is not a shard count"))?;
        if count == 0 || index >= count {
            return Err(format!("shard {index}/{count}: need 0 <= K < N"));
        }
        Ok(Shard { index, count })
    }
}

/// Puts the reports of a campaign's shards back together; refuses shards of different
/// campaigns and trials present twice.
pub fn merge(reports: Vec<CampaignReport>) -> Result<CampaignReport> {
    let first = reports.first().context("no report to merge")?;
    let mut config = first.config.clone();
    config.shard = None;
    let strip = |r: &CampaignReport| -> Vec<(String, usize, Option<f64>)> {
        r.models
            .iter()
            .map(|m| (m.model.clone(), m.weights, m.clean_accuracy))
            .collect()
    };
    let mut trials = Vec::new();
    for report in &reports {
        let mut other = report.config.clone();
        other.shard = None;
        ensure!(
            other == config,
            "the reports are of different campaigns (their settings differ)"
        );
        ensure!(strip(report) == strip(first), "the reports are of different models");
        if report.engine != first.engine {
            let name = |e: &Option<crate::engine::EngineInfo>| {
                e.as_ref()
                    .map_or("an unnamed engine".to_owned(), |e| format!("{} {}", e.name, e.version))
            };
            bail!(
                "the reports were run in different engines ({} and {}): merge shards run in one engine",
                name(&first.engine),
                name(&report.engine)
            );
        }
        trials.extend(report.trials.iter().cloned());
    }
    let mut keys: Vec<(usize, usize, usize)> = trials.iter().map(|r| (r.model, r.ber, r.trial)).collect();
    keys.sort();
    if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
        bail!(
            "trial {} at BER {} is in more than one report",
            w[0].2,
            config.bers[w[0].1]
        );
    }
    let models = first
        .models
        .iter()
        .map(|m| ModelSummary {
            accuracy_auc: None,
            ..m.clone()
        })
        .collect();
    Ok(aggregate(first.engine.clone(), config, models, trials))
}
