//! The command line: parse arguments, call the library, print one line for an error.
//! Exit codes: 0 done, 1 nothing to do (or a check failed), 2 error.

use anyhow::Result;
use clap::{Parser, Subcommand};
use fitact_onnx::bounds::Granularity;
use fitact_onnx::harden::{HardenError, HardenOptions, harden};
use fitact_onnx::method::{Method, ModeName};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fitact-onnx",
    version,
    about = "Harden ONNX models against bit flips by bounding their activations (FitAct, post-training, gradient-free)"
)]
struct Cli {
    /// Print nothing but errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Calibrate every Relu on sample data and write a model whose Relus are bounded.
    #[command(
        after_help = "Example:\n  fitact-onnx harden model.onnx model.hardened.onnx --calib calib.npy --report report.json"
    )]
    Harden {
        /// The model to harden (read only; external data beside it is read too).
        input: PathBuf,
        /// Where to write the hardened model (atomically; never the input).
        output: PathBuf,
        /// Calibration samples: .npy for a single-input model, .npz with one array per input name.
        #[arg(long)]
        calib: PathBuf,
        /// Preset: fitact = channel + zero, ranger = layer + saturate, clipact = layer + zero.
        #[arg(long, value_enum, default_value_t = Method::Fitact)]
        method: Method,
        /// One bound per layer, per channel (axis 1) or per neuron; overrides the preset.
        #[arg(long, value_enum)]
        granularity: Option<Granularity>,
        /// Above the bound: zero (also NaN and +Inf) or saturate; overrides the preset.
        #[arg(long, value_enum)]
        mode: Option<ModeName>,
        /// Bounds are the calibrated maxima times (1 + margin). The small default is numerical
        /// headroom: another runtime (or another batch split) may compute a maximum one rounding
        /// step higher, and a bound exactly at the maximum would then zero it.
        #[arg(long, default_value_t = 0.001)]
        margin: f32,
        /// Samples per tract run (a model with a fixed batch dimension uses its own).
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        /// Write a JSON report of every bound here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// List the Relus the tool would bound, their shapes, and where the weights live.
    #[command(after_help = "Example:\n  fitact-onnx inspect model.onnx --json")]
    Inspect {
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match try_main(cli) {
        Ok(code) => code,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "error: {err:#}");
            if err
                .downcast_ref::<HardenError>()
                .is_some_and(|e| matches!(e, HardenError::NoActivations(_)))
            {
                ExitCode::from(1)
            } else {
                ExitCode::from(2)
            }
        }
    }
}

fn try_main(cli: Cli) -> Result<ExitCode> {
    let progress = !cli.quiet && std::io::stderr().is_terminal();
    match cli.command {
        Command::Harden {
            input,
            output,
            calib,
            method,
            granularity,
            mode,
            margin,
            batch_size,
            report,
        } => {
            if !(margin.is_finite() && margin > -1.0) {
                anyhow::bail!("--margin must be a finite number above -1, got {margin}");
            }
            let options = HardenOptions {
                input,
                output,
                calib,
                method,
                granularity,
                mode,
                margin,
                batch_size,
                report,
                progress,
            };
            let report = harden(&options)?;
            if !cli.quiet {
                eprint!("{}", report.summary());
            }
        }
        Command::Inspect { model, json } => {
            let inspection = fitact_onnx::inspect::inspect(&model)?;
            let text = if json {
                serde_json::to_string_pretty(&inspection)? + "\n"
            } else {
                inspection.to_text()
            };
            print_stdout(&text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints to stdout; a closed pipe (`| head`) is a normal end, not an error.
fn print_stdout(text: &str) -> Result<()> {
    match std::io::stdout().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
