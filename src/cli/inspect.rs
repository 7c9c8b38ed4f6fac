//! `fitact-onnx inspect`: its arguments, and a `run` that lists what `fitact_onnx::harden::inspect`
//! finds in a model, as text or JSON.

use super::output::print_stdout;
use super::values::{KindList, parse_kind_list};
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    model: PathBuf,
    /// The kinds harden would bound (as harden's --activations; default: harden's default).
    #[arg(long, value_parser = parse_kind_list)]
    activations: Option<KindList>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let Args {
        model,
        activations,
        json,
    } = args;
    let inspection = crate::harden::inspect::inspect(&model, activations.as_ref().map(|k| k.0.as_slice()))?;
    let text = if json {
        serde_json::to_string_pretty(&inspection)? + "\n"
    } else {
        inspection.to_text()
    };
    print_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}
