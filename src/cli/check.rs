//! `fitact-onnx check`: its arguments, and a `run` that builds `CheckOptions`, runs the gate
//! (`fitact_onnx::check::check`), writes its report and prints the verdict; exit 1 on FAIL.

use super::Terminal;
use super::args::{DataArgs, EngineArgs, SdcArgs};
use super::output::print_stdout;
use super::values::parse_fraction;
use crate::check::{CheckOptions, check};
use crate::faults::flips::WeightFormat;
use crate::model_io::write_atomically;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The hardened model.
    model: PathBuf,
    /// The model it was made from.
    #[arg(long)]
    reference: PathBuf,
    /// With labels the budget is on accuracy; without, on agreement with the reference (the
    /// same top-1 class, or for an output that is not class scores, values within
    /// --sdc-tolerance).
    #[command(flatten)]
    data: DataArgs,
    /// The model output compared (default: the first).
    #[arg(long)]
    output: Option<String>,
    #[command(flatten)]
    judge: SdcArgs,
    /// Largest allowed drop, e.g. 0.5% or 0.005.
    #[arg(long, default_value = "0.5%", value_parser = parse_fraction)]
    max_accuracy_drop: f64,
    /// Also run a weight-fault campaign at this BER and require --min-accuracy.
    #[arg(long, requires = "min_accuracy")]
    ber: Option<f64>,
    /// Mean accuracy under faults the model must reach, e.g. 80%.
    #[arg(long, value_parser = parse_fraction, requires = "ber")]
    min_accuracy: Option<f64>,
    #[arg(long, default_value_t = 20)]
    trials: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = WeightFormat::Float32)]
    format: WeightFormat,
    /// Samples per run.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[command(flatten)]
    engine: EngineArgs,
    /// Write the JSON report (docs/reports.md) here.
    #[arg(long)]
    report: Option<PathBuf>,
}

pub fn run(args: Args, terminal: Terminal) -> Result<ExitCode> {
    let Args {
        model,
        reference,
        data: DataArgs {
            data,
            labels,
            images,
            cap,
        },
        output,
        judge,
        max_accuracy_drop,
        ber,
        min_accuracy,
        trials,
        seed,
        format,
        batch_size,
        engine,
        report,
    } = args;
    let options = CheckOptions {
        engine: engine.engine()?,
        model,
        reference,
        data,
        labels,
        images: images.options(),
        data_cap: cap.max_data_memory,
        max_drop: max_accuracy_drop,
        resilience: ber.zip(min_accuracy),
        trials,
        seed,
        format,
        batch_size,
        progress: terminal.progress,
        output,
        sdc: judge.sdc,
        sdc_tolerance: judge.sdc_tolerance,
    };
    let outcome = check(&options)?;
    if let Some(path) = report {
        let json = serde_json::to_string_pretty(&outcome)? + "\n";
        write_atomically(&path, json.as_bytes()).context("writing the report")?;
    }
    print_stdout(&format!("{}\n", outcome.verdict))?;
    if !outcome.passed {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
