//! How results leave the tool: a campaign's files, written atomically, and its table; text on
//! stdout and stderr, where a closed pipe or a closed stderr is a normal end, not an error.

use crate::faults::CampaignReport;
use crate::model_io::write_atomically;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::PathBuf;

/// Where a campaign's files go.
pub struct CampaignFiles {
    pub report: Option<PathBuf>,
    pub csv: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub html: Option<PathBuf>,
}

/// Writes the campaign's files (each atomically) and prints its table.
pub fn write_outputs(campaign: &CampaignReport, files: &CampaignFiles, quiet: bool) -> Result<()> {
    let CampaignFiles {
        report,
        csv,
        plot,
        html,
    } = files;
    if let Some(path) = html {
        let page = crate::report::html::campaign_html(campaign)?;
        write_atomically(path, page.as_bytes()).context("writing the HTML page")?;
    }
    if let Some(path) = report {
        write_atomically(path, campaign.to_json().as_bytes()).context("writing the report")?;
    }
    if let Some(path) = csv {
        write_atomically(path, campaign.to_csv()?.as_bytes()).context("writing the CSV")?;
    }
    if let Some(path) = plot {
        let svg = crate::report::plot::accuracy_svg(campaign)?;
        write_atomically(path, svg.as_bytes()).context("writing the plot")?;
    }
    if !quiet {
        print_stdout(&campaign.table())?;
    }
    Ok(())
}

/// Prints to stderr; a closed stderr is not an error (the work is done, the file written).
pub fn print_stderr(text: &str) {
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// Prints to stdout; a closed pipe (`| head`) is a normal end, not an error.
pub fn print_stdout(text: &str) -> Result<()> {
    match std::io::stdout().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
