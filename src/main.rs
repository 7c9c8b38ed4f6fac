//! The command line: parse arguments, call the library, print one line for an error.
//! Exit codes: 0 done, 1 nothing to do (or a check failed), 2 error.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fitact_onnx::bounds::Granularity;
use fitact_onnx::evaluate::{CampaignReport, EvaluateOptions, FaultKind, Shard, evaluate, merge};
use fitact_onnx::faults::WeightFormat;
use fitact_onnx::harden::{HardenError, HardenOptions, SearchSettings, harden};
use fitact_onnx::method::{Method, ModeName};
use fitact_onnx::model_io::{read_model, write_atomically, write_model};
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
        /// Where to write the hardened model (atomically; never the input unless --in-place).
        #[arg(required_unless_present = "in_place")]
        output: Option<PathBuf>,
        /// Replace the input model with the hardened one (atomically); OUTPUT may be omitted.
        #[arg(long)]
        in_place: bool,
        /// A model without any Relu is written unchanged (exit 0) instead of exit 1.
        #[arg(long)]
        allow_unchanged: bool,
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
        /// Samples per tract run (a model with a fixed batch dimension uses its own). Small
        /// batches run fastest in tract on CNNs (benches/calibration.rs, FITACT_BENCH_SWEEP).
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        /// Write a JSON report of every bound here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Tighten the bounds by a gradient-free search under a clean-accuracy budget, checked
        /// on a held-out quarter of the calibration samples.
        #[arg(long)]
        search: bool,
        /// Labels of the calibration samples (int64/int32 .npy): the budget is then on top-1
        /// accuracy; without, on top-1 agreement with the original model.
        #[arg(long, requires = "search")]
        labels: Option<PathBuf>,
        /// Allowed drop of held-out accuracy/agreement, e.g. 0.5% or 0.005.
        #[arg(long, default_value = "0.5%", value_parser = parse_fraction, requires = "search")]
        budget: f64,
        /// Stop the search after this many candidate evaluations (best point so far is kept).
        #[arg(long, requires = "search")]
        max_evals: Option<usize>,
        /// Stop the search after this long, e.g. 60s or 2m (best point so far is kept).
        #[arg(long, value_parser = parse_duration, requires = "search")]
        time_limit: Option<std::time::Duration>,
    },
    /// Fault-injection campaign: accuracy and SDC rate of each model under weight bit flips.
    #[command(
        after_help = "Example:\n  fitact-onnx evaluate model.onnx ranger.onnx clipact.onnx fitact.onnx \\\n      --data test.npy --labels test_labels.npy --ber 1e-7,1e-6,1e-5,3e-5 --trials 100 --seed 7 \\\n      --report campaign.json --csv campaign.csv --plot campaign.svg"
    )]
    Evaluate {
        /// The models to compare; models that share weights get the same faults in each trial.
        #[arg(required = true)]
        models: Vec<PathBuf>,
        /// Samples: .npy for a single-input model, .npz with one array per input name.
        #[arg(long)]
        data: PathBuf,
        /// Labels (int64 or int32 .npy, one per sample) for accuracy; SDC needs none.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Bit error rates, comma-separated: each stored bit flips with this probability.
        #[arg(long, value_delimiter = ',', required_unless_present = "fault")]
        ber: Vec<f64>,
        /// weight: bit flips in stored weights at each BER; activation: one flipped bit in
        /// one element of one activation per inference (no BER).
        #[arg(long, value_enum)]
        fault: Option<FaultKind>,
        /// With --fault activation: the tensor to hit (default: a random Relu input per trial).
        #[arg(long)]
        layer: Option<String>,
        /// Trials per BER.
        #[arg(long, default_value_t = 100)]
        trials: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// How weights are stored: float32, q15.16 (fixed point) or int8 (per-tensor scale).
        #[arg(long, value_enum, default_value_t = WeightFormat::Float32)]
        format: WeightFormat,
        /// Only these bit positions flip, e.g. 23-30 (the float32 exponent) or 30,31.
        #[arg(long, value_parser = parse_bits)]
        bits: Option<BitList>,
        /// Only tensors whose name matches this regular expression flip.
        #[arg(long)]
        target: Option<regex::Regex>,
        /// Run only trials t with t % N == K (K/N), to spread a campaign; see `merge`.
        #[arg(long)]
        shard: Option<Shard>,
        /// Worker threads (default: all cores). Results do not depend on it.
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long, default_value_t = 256)]
        batch_size: usize,
        /// Write the JSON report (docs/reports.md) here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Write the results table as CSV here.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Write the accuracy-versus-BER plot (SVG) here; needs --labels.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Write every trial's flips and predictions (JSON), to replay them in another runtime.
        #[arg(long)]
        dump_faults: Option<PathBuf>,
    },
    /// Merge the JSON reports of the shards of one campaign into the report of the whole.
    #[command(
        after_help = "Example:\n  fitact-onnx merge shard0.json shard1.json --report campaign.json --csv campaign.csv"
    )]
    Merge {
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        #[arg(long)]
        report: PathBuf,
        #[arg(long)]
        csv: Option<PathBuf>,
        #[arg(long)]
        plot: Option<PathBuf>,
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
            in_place,
            allow_unchanged,
            calib,
            method,
            granularity,
            mode,
            margin,
            batch_size,
            report,
            search,
            labels,
            budget,
            max_evals,
            time_limit,
        } => {
            if !(margin.is_finite() && margin > -1.0) {
                anyhow::bail!("--margin must be a finite number above -1, got {margin}");
            }
            let output = match (output, in_place) {
                (Some(output), true) if !same_file(&output, &input) => {
                    anyhow::bail!(
                        "--in-place writes over the input; OUTPUT {} is another file",
                        output.display()
                    )
                }
                (_, true) => input.clone(),
                (Some(output), false) => output,
                (None, false) => unreachable!("clap requires OUTPUT without --in-place"),
            };
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
                search: search.then_some(SearchSettings {
                    budget,
                    labels,
                    max_evals,
                    time_limit,
                }),
                in_place,
            };
            let report = match harden(&options) {
                Err(e) if allow_unchanged && matches!(e.downcast_ref(), Some(HardenError::NoActivations(_))) => {
                    copy_unchanged(&options)?;
                    if !cli.quiet {
                        eprintln!("{e:#}: written unchanged to {}", options.output.display());
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                other => other?,
            };
            if !cli.quiet {
                eprint!("{}", report.summary());
            }
        }
        Command::Evaluate {
            models,
            data,
            labels,
            ber,
            fault,
            layer,
            trials,
            seed,
            format,
            bits,
            target,
            shard,
            threads,
            batch_size,
            report,
            csv,
            plot,
            dump_faults,
        } => {
            if let Some(threads) = threads {
                rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;
            }
            let options = EvaluateOptions {
                models,
                data,
                labels,
                bers: ber,
                trials,
                seed,
                format,
                bits: bits.map(|b| b.0).unwrap_or_default(),
                target,
                batch_size,
                shard,
                progress,
                dump_faults,
                fault: fault.unwrap_or(FaultKind::Weight),
                layer,
            };
            let campaign = evaluate(&options)?;
            write_outputs(&campaign, report.as_ref(), csv.as_ref(), plot.as_ref(), cli.quiet)?;
        }
        Command::Merge {
            reports,
            report,
            csv,
            plot,
        } => {
            let parts = reports
                .iter()
                .map(|p| -> Result<CampaignReport> {
                    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                    serde_json::from_str(&text).with_context(|| format!("{} is not a campaign report", p.display()))
                })
                .collect::<Result<Vec<_>>>()?;
            let merged = merge(parts)?;
            write_outputs(&merged, Some(&report), csv.as_ref(), plot.as_ref(), cli.quiet)?;
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

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// `--allow-unchanged` on a model without Relu: the model as read, written as `harden` would.
fn copy_unchanged(options: &HardenOptions) -> Result<()> {
    if options.in_place {
        return Ok(());
    }
    let source = read_model(&options.input).context("reading the model")?;
    write_model(
        &options.output,
        &source.model,
        &source.external_tensors,
        &source.files_read,
    )
    .context("writing the model")?;
    Ok(())
}

/// A fraction, written `0.5%` or `0.005`.
fn parse_fraction(text: &str) -> Result<f64, String> {
    let (number, scale) = match text.strip_suffix('%') {
        Some(n) => (n, 0.01),
        None => (text, 1.0),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a number or a percentage"))?;
    let value = value * scale;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("'{text}' is not between 0 and 100%"));
    }
    Ok(value)
}

/// A duration, written `90s`, `2m` or `1h` (plain numbers are seconds).
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = match text.trim().char_indices().find(|(_, c)| c.is_alphabetic()) {
        Some((i, _)) => text.trim().split_at(i),
        None => (text.trim(), "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration like 90s or 2m"))?;
    let seconds = match unit {
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit '{other}' in '{text}': use s, m or h")),
    };
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("'{text}' is not a positive duration"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

/// A list of bit positions, from `23-30,31`.
#[derive(Clone, Debug)]
struct BitList(Vec<u32>);

fn parse_bits(text: &str) -> Result<BitList, String> {
    let mut bits = Vec::new();
    for part in text.split(',') {
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("'{s}' is not a bit position"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b)?);
                if a > b {
                    return Err(format!("range {a}-{b} is empty"));
                }
                bits.extend(a..=b);
            }
            None => bits.push(number(part)?),
        }
    }
    bits.sort_unstable();
    bits.dedup();
    Ok(BitList(bits))
}

/// Writes the campaign's files (each atomically) and prints its table.
fn write_outputs(
    campaign: &CampaignReport,
    report: Option<&PathBuf>,
    csv: Option<&PathBuf>,
    plot: Option<&PathBuf>,
    quiet: bool,
) -> Result<()> {
    if let Some(path) = report {
        write_atomically(path, campaign.to_json().as_bytes()).context("writing the report")?;
    }
    if let Some(path) = csv {
        write_atomically(path, campaign.to_csv()?.as_bytes()).context("writing the CSV")?;
    }
    if let Some(path) = plot {
        let svg = fitact_onnx::plot::accuracy_svg(campaign)?;
        write_atomically(path, svg.as_bytes()).context("writing the plot")?;
    }
    if !quiet {
        print_stdout(&campaign.table())?;
    }
    Ok(())
}

/// Prints to stdout; a closed pipe (`| head`) is a normal end, not an error.
fn print_stdout(text: &str) -> Result<()> {
    match std::io::stdout().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
