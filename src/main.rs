//! The command line: parse arguments, call the library, print one line for an error.
//! Exit codes: 0 done, 1 nothing to do (or a check failed), 2 error.

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use fitact_onnx::check::{CheckOptions, check};
use fitact_onnx::data::images::{ImageOptions, Layout, Preset};
use fitact_onnx::engine::{Engine, EngineChoice};
use fitact_onnx::faults::campaign::{CampaignReport, EvaluateOptions, FaultKind, Shard, evaluate, merge};
use fitact_onnx::faults::flips::WeightFormat;
use fitact_onnx::harden::bounds::Granularity;
use fitact_onnx::harden::method::{Method, ModeName};
use fitact_onnx::harden::{HardenError, HardenOptions, SearchSettings, harden};
use fitact_onnx::model_io::{read_model, write_atomically, write_model};
use fitact_onnx::search::{FaultSweep, Objective};
use fitact_passes::activations::{ActivationKind, parse_kinds};
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
    /// Print nothing but errors (and the one-line verdict of `check`).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Say more about each step on stderr (-v: steps and timings, -vv: details).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

/// How a folder of images becomes model inputs (ignored for .npy/.npz data).
#[derive(Args, Clone)]
struct ImageArgs {
    /// Pixel convention: unit = [0, 1], symmetric = [-1, 1], imagenet = ImageNet mean/std,
    /// raw = 0 to 255. --scale, --mean and --std override its parts.
    #[arg(long, value_enum, default_value_t = Preset::Unit)]
    preset: Preset,
    /// Multiply pixels (0 to 255) by this before the mean is subtracted.
    #[arg(long)]
    scale: Option<f32>,
    /// Mean subtracted per channel: one value or one per channel, comma-separated.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    mean: Option<Vec<f32>>,
    /// Divisor per channel: one value or one per channel, comma-separated.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    std: Option<Vec<f32>>,
    /// Channel axis of the model input (default: from its shape).
    #[arg(long, value_enum)]
    layout: Option<Layout>,
}

impl ImageArgs {
    fn options(self) -> ImageOptions {
        ImageOptions {
            preset: Some(self.preset),
            scale: self.scale,
            mean: self.mean,
            std: self.std,
            layout: self.layout,
        }
    }
}

/// Which engine runs the models.
#[derive(Args, Clone)]
struct EngineArgs {
    /// auto: onnxruntime when its library is found (-v says where), tract (built in) otherwise.
    #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
    engine: EngineChoice,
    /// The onnxruntime library (libonnxruntime.so*). Default: ORT_DYLIB_PATH, else the
    /// onnxruntime package of the python3 on PATH (pip install onnxruntime), else the system's.
    #[arg(long)]
    ort_lib: Option<PathBuf>,
}

impl EngineArgs {
    fn engine(&self) -> Result<Engine> {
        Ok(Engine::select(self.engine, self.ort_lib.as_deref())?)
    }
}

/// The samples a command runs, and their labels.
#[derive(Args, Clone)]
struct DataArgs {
    /// Samples: .npy for a single-input model, .npz with one array per input name, or a
    /// folder of PNG/JPEG images (class sub-folders give the labels).
    #[arg(long)]
    data: PathBuf,
    /// Labels (int64 or int32 .npy, one per sample) for accuracy; SDC needs none.
    #[arg(long)]
    labels: Option<PathBuf>,
    #[command(flatten)]
    images: ImageArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Calibrate every activation on sample data and write a model whose activations are bounded.
    #[command(
        after_help = "Examples:\n  fitact-onnx harden model.onnx model.hardened.onnx --calib calib.npy --report report.json\n  fitact-onnx harden model.onnx out.onnx --calib images/ --preset imagenet --search --budget 0.5%"
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
        /// Calibration samples: .npy for a single-input model, .npz with one array per input
        /// name, or a folder of PNG/JPEG images (class sub-folders give the labels --search uses).
        #[arg(long)]
        calib: PathBuf,
        #[command(flatten)]
        images: ImageArgs,
        /// Which activations to bound: all (the default), or a comma-separated list of relu,
        /// leakyrelu, prelu, clip, hardsigmoid, hardswish, sigmoid, tanh, silu, gelu, norm (the
        /// output of a normalisation read by a residual Add). Decomposed forms (x * Sigmoid(x),
        /// GELU's erf and tanh forms, x * Clip(x + 3, 0, 6) / 6) are bounded once, at their output.
        #[arg(long, default_value = "all", value_parser = parse_kind_list)]
        activations: KindList,
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
        #[arg(long, default_value_t = 0.001, allow_hyphen_values = true)]
        margin: f32,
        /// Samples per run (a model with a fixed batch dimension uses its own). Small batches
        /// run fastest on CNNs (benches/calibration.rs, FITACT_BENCH_SWEEP).
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        #[command(flatten)]
        engine: EngineArgs,
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
        /// Where a few outlying values set an activation's maxima (its per-neuron percentiles
        /// are below 95% of them), try this per-neuron percentile in their place, e.g. 0.99
        /// (kept only if it loses nothing on the check). Off by default: on the fixtures it
        /// let the test accuracy drop beyond the budget (docs/results.md).
        #[arg(long, value_parser = parse_percentile, requires = "search")]
        percentile: Option<f64>,
        /// tight: the smallest bounds within the budget; resilience: within the budget, the best
        /// accuracy under weight faults over --fault-ber with fixed fault patterns.
        #[arg(long, value_enum, default_value_t = ObjectiveName::Tight, requires = "search")]
        objective: ObjectiveName,
        /// Objective resilience: the BERs of the fault sweep.
        #[arg(long, value_delimiter = ',', default_value = "1e-5,3e-5")]
        fault_ber: Vec<f64>,
        /// Objective resilience: fault patterns per BER (the same for every candidate).
        #[arg(long, default_value_t = 4)]
        fault_patterns: usize,
        /// Objective resilience: how weights are stored (as evaluate's --format).
        #[arg(long, value_enum, default_value_t = WeightFormat::Float32)]
        fault_format: WeightFormat,
        /// Objective resilience: the seed of the fault patterns.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Fault-injection campaign: accuracy and SDC rate of each model under weight bit flips.
    #[command(
        after_help = "Example:\n  fitact-onnx evaluate model.onnx ranger.onnx clipact.onnx fitact.onnx \\\n      --data test.npy --labels test_labels.npy --ber 1e-7,1e-6,1e-5,3e-5 --trials 100 --seed 7 \\\n      --report campaign.json --csv campaign.csv --plot campaign.svg"
    )]
    Evaluate {
        /// The models to compare; models that share weights get the same faults in each trial.
        #[arg(required = true)]
        models: Vec<PathBuf>,
        #[command(flatten)]
        data: DataArgs,
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
        /// Samples per run. Small batches run fastest on CNNs (ResNet fixture in tract, one
        /// thread: batch 8 takes 0.67x the time of batch 256).
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        #[command(flatten)]
        engine: EngineArgs,
        /// Write the JSON report (docs/reports.md) here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Write the results table as CSV here.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Write the accuracy-versus-BER plot (SVG) here; needs --labels.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Write a self-contained HTML page (table and plot) here.
        #[arg(long)]
        html: Option<PathBuf>,
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
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// CI gate: exit 0 if the hardened model keeps its accuracy within the budget (and meets
    /// the resilience floor, if asked), 1 if not, 2 on error; prints one line saying why.
    #[command(
        after_help = "Example:\n  fitact-onnx check hardened.onnx --reference original.onnx --data test.npy --labels test_labels.npy \\\n      --max-accuracy-drop 0.5% --ber 1e-5 --min-accuracy 80%"
    )]
    Check {
        /// The hardened model.
        model: PathBuf,
        /// The model it was made from.
        #[arg(long)]
        reference: PathBuf,
        /// With labels the budget is on accuracy; without, on top-1 agreement with the reference.
        #[command(flatten)]
        data: DataArgs,
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
    },
    /// Print a shell completion script, e.g. `fitact-onnx completions bash > /etc/bash_completion.d/fitact-onnx`.
    #[command(after_help = "Example:\n  fitact-onnx completions zsh > ~/.zfunc/_fitact-onnx")]
    Completions { shell: clap_complete::Shell },
    /// List every activation found, by kind, which ones --activations would bound, their
    /// shapes, and where the weights live.
    #[command(after_help = "Example:\n  fitact-onnx inspect model.onnx --activations all --json")]
    Inspect {
        model: PathBuf,
        /// The kinds harden would bound (as harden's --activations).
        #[arg(long, default_value = "all", value_parser = parse_kind_list)]
        activations: KindList,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => log::LevelFilter::Error,
        (false, 0) => log::LevelFilter::Warn,
        (false, 1) => log::LevelFilter::Info,
        (false, _) => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .format_timestamp(None)
        .format_target(false)
        .init();
    // An engine's panic is caught and reported as an error where it runs (`engine::guard`);
    // a panic anywhere else is a bug, reported in one line too, with a backtrace on request.
    let backtrace = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if backtrace {
            default_hook(info);
        }
    }));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| try_main(cli)));
    let outcome = outcome.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        Err(anyhow::anyhow!("internal error (please report it): {message}"))
    });
    match outcome {
        Ok(code) => code,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "error: {err:#}");
            if err
                .downcast_ref::<HardenError>()
                .is_some_and(|e| matches!(e, HardenError::NoActivations(..)))
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
            images,
            activations,
            method,
            granularity,
            mode,
            margin,
            batch_size,
            engine,
            report,
            search,
            labels,
            budget,
            max_evals,
            time_limit,
            percentile,
            objective,
            fault_ber,
            fault_patterns,
            fault_format,
            seed,
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
                engine: engine.engine()?,
                input,
                output,
                calib,
                images: images.options(),
                activations: activations.0,
                method,
                granularity,
                mode,
                margin,
                batch_size,
                report,
                progress,
                search: search.then_some(SearchSettings {
                    budget,
                    objective: match objective {
                        ObjectiveName::Tight => Objective::Tight,
                        ObjectiveName::Resilience => Objective::Resilience(FaultSweep {
                            bers: fault_ber,
                            patterns: fault_patterns,
                            seed,
                            format: fault_format,
                        }),
                    },
                    labels,
                    max_evals,
                    time_limit,
                    percentile,
                }),
                in_place,
            };
            let report = match harden(&options) {
                Err(e) if allow_unchanged && matches!(e.downcast_ref(), Some(HardenError::NoActivations(..))) => {
                    copy_unchanged(&options)?;
                    if !cli.quiet {
                        print_stderr(&format!("{e:#}: written unchanged to {}\n", options.output.display()));
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                other => other?,
            };
            if !cli.quiet {
                print_stderr(&report.summary());
            }
        }
        Command::Evaluate {
            models,
            data: DataArgs { data, labels, images },
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
            engine,
            report,
            csv,
            plot,
            html,
            dump_faults,
        } => {
            if let Some(threads) = threads {
                rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;
            }
            let options = EvaluateOptions {
                engine: engine.engine()?,
                models,
                data,
                labels,
                images: images.options(),
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
            let files = CampaignFiles {
                report,
                csv,
                plot,
                html,
            };
            write_outputs(&campaign, &files, cli.quiet)?;
        }
        Command::Merge {
            reports,
            report,
            csv,
            plot,
            html,
        } => {
            let parts = reports
                .iter()
                .map(|p| -> Result<CampaignReport> {
                    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                    serde_json::from_str(&text).with_context(|| format!("{} is not a campaign report", p.display()))
                })
                .collect::<Result<Vec<_>>>()?;
            let merged = merge(parts)?;
            let files = CampaignFiles {
                report: Some(report),
                csv,
                plot,
                html,
            };
            write_outputs(&merged, &files, cli.quiet)?;
        }
        Command::Check {
            model,
            reference,
            data: DataArgs { data, labels, images },
            max_accuracy_drop,
            ber,
            min_accuracy,
            trials,
            seed,
            format,
            batch_size,
            engine,
            report,
        } => {
            let options = CheckOptions {
                engine: engine.engine()?,
                model,
                reference,
                data,
                labels,
                images: images.options(),
                max_drop: max_accuracy_drop,
                resilience: ber.zip(min_accuracy),
                trials,
                seed,
                format,
                batch_size,
                progress,
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
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "fitact-onnx", &mut script);
            print_stdout(&String::from_utf8(script)?)?;
        }
        Command::Inspect {
            model,
            activations,
            json,
        } => {
            let inspection = fitact_onnx::harden::inspect::inspect(&model, &activations.0)?;
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
/// A percentile as a fraction strictly between 0.5 and 1, e.g. 0.99 or 99%.
fn parse_percentile(text: &str) -> Result<f64, String> {
    match parse_fraction(text) {
        Ok(value) if value > 0.5 && value < 1.0 => Ok(value),
        _ => Err(format!(
            "a percentile must lie between 0.5 and 1 (e.g. 0.99 or 99%), got '{text}'"
        )),
    }
}

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

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ObjectiveName {
    Tight,
    Resilience,
}

/// The kinds `--activations` names.
#[derive(Clone, Debug)]
struct KindList(Vec<ActivationKind>);

fn parse_kind_list(text: &str) -> Result<KindList, String> {
    parse_kinds(text).map(KindList)
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

/// Where a campaign's files go.
struct CampaignFiles {
    report: Option<PathBuf>,
    csv: Option<PathBuf>,
    plot: Option<PathBuf>,
    html: Option<PathBuf>,
}

/// Writes the campaign's files (each atomically) and prints its table.
fn write_outputs(campaign: &CampaignReport, files: &CampaignFiles, quiet: bool) -> Result<()> {
    let CampaignFiles {
        report,
        csv,
        plot,
        html,
    } = files;
    if let Some(path) = html {
        let page = fitact_onnx::report::html::campaign_html(campaign)?;
        write_atomically(path, page.as_bytes()).context("writing the HTML page")?;
    }
    if let Some(path) = report {
        write_atomically(path, campaign.to_json().as_bytes()).context("writing the report")?;
    }
    if let Some(path) = csv {
        write_atomically(path, campaign.to_csv()?.as_bytes()).context("writing the CSV")?;
    }
    if let Some(path) = plot {
        let svg = fitact_onnx::report::plot::accuracy_svg(campaign)?;
        write_atomically(path, svg.as_bytes()).context("writing the plot")?;
    }
    if !quiet {
        print_stdout(&campaign.table())?;
    }
    Ok(())
}

/// Prints to stderr; a closed stderr is not an error (the work is done, the file written).
fn print_stderr(text: &str) {
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// Prints to stdout; a closed pipe (`| head`) is a normal end, not an error.
fn print_stdout(text: &str) -> Result<()> {
    match std::io::stdout().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
