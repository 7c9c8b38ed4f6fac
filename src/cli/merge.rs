//! `fitact-onnx merge`: its arguments, and a `run` that reads the shards' reports, merges them
//! (`fitact_onnx::faults::merge`) and writes the whole campaign's files and table.

use super::Terminal;
use super::output::{CampaignFiles, write_outputs};
use crate::faults::{CampaignReport, merge};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The shards' reports, in any order: every shard of one campaign, once (a shard missing
    /// or given twice, or reports of different campaigns, are refused, naming what differs).
    #[arg(required = true)]
    reports: Vec<PathBuf>,
    #[arg(long)]
    report: PathBuf,
    #[arg(long)]
    csv: Option<PathBuf>,
    #[arg(long)]
    plot: Option<PathBuf>,
    #[arg(long)]
    html: Option<PathBuf>,
}

pub fn run(args: Args, terminal: Terminal) -> Result<ExitCode> {
    let Args {
        reports,
        report,
        csv,
        plot,
        html,
    } = args;
    let parts = reports
        .iter()
        .map(|p| -> Result<(String, CampaignReport)> {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let report =
                serde_json::from_str(&text).with_context(|| format!("{} is not a campaign report", p.display()))?;
            Ok((p.display().to_string(), report))
        })
        .collect::<Result<Vec<_>>>()?;
    let merged = merge(parts)?;
    let files = CampaignFiles {
        report: Some(report),
        csv,
        plot,
        html,
    };
    write_outputs(&merged, &files, terminal.quiet)?;
    Ok(ExitCode::SUCCESS)
}
