//! `fitact-onnx harden`: its arguments, and a `run` that builds `HardenOptions`, calls
//! `fitact_onnx::harden::harden` and prints the summary (or, with `--allow-unchanged`, writes a
//! model without activations unchanged).

use super::Terminal;
use super::args::{DataCapArgs, EngineArgs, ImageArgs};
use super::output::print_stderr;
use super::values::{KindList, ObjectiveName, parse_duration, parse_fraction, parse_kind_list, parse_percentile};
use crate::budget::{Benefit, BudgetOptions, CostModel, FaultSettings, Runtime};
use crate::engine::{Engine, EngineChoice, EngineKind};
use crate::faults::flips::WeightFormat;
use crate::harden::bounds::Granularity;
use crate::harden::budgeted::BudgetSettings;
use crate::harden::method::{EmissionName, Method, ModeName};
use crate::harden::{HardenError, HardenOptions, SearchSettings, Unreached, harden};
use crate::model_io::write_atomically;
use crate::model_io::{read_model, write_model};
use crate::search::{FaultSweep, Objective};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `harden`'s flags, one field each (long-function: a declaration, one line of help per
/// flag; the search's and the emission's flags read best beside the others in `--help`).
#[derive(clap::Args)]
pub struct Args {
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
    /// name (as --data of evaluate: any numeric dtype, converted where lossless; an input with
    /// no batch axis in front takes (N, *its shape), fed one sample at a time), or a folder of
    /// PNG/JPEG images (class sub-folders give the labels --search uses).
    #[arg(long)]
    calib: PathBuf,
    #[command(flatten)]
    images: ImageArgs,
    #[command(flatten)]
    cap: DataCapArgs,
    /// Which activations to bound: all (the default; with logits when the classifier computes
    /// in float16 or bfloat16), or a comma-separated list of relu,
    /// leakyrelu, prelu, clip, hardsigmoid, hardswish, sigmoid, tanh, silu, gelu, norm (the
    /// output of a normalisation read by a residual Add), and, only when named (e.g.
    /// all,logits,linear), logits (the classifier's scores, bounded on both sides with a
    /// quarter of room) and linear (int8 models: the quantized output of a conv no activation
    /// follows, bounded on both sides in its integers).
    /// Decomposed forms (x * Sigmoid(x), GELU's erf and tanh forms, x * Clip(x + 3, 0, 6) / 6)
    /// are bounded once, at their output.
    #[arg(long, value_parser = parse_kind_list)]
    activations: Option<KindList>,
    /// Preset: fitact = channel + zero, ranger = layer + saturate, clipact = layer + zero.
    #[arg(long, value_enum, default_value_t = Method::Fitact)]
    method: Method,
    /// One bound per layer, per channel (axis 1) or per neuron; overrides the preset.
    #[arg(long, value_enum)]
    granularity: Option<Granularity>,
    /// Above the bound: zero (also NaN and +Inf) or saturate; overrides the preset.
    #[arg(long, value_enum)]
    mode: Option<ModeName>,
    /// Which nodes a bounded Relu gets; the same function whichever (docs/results/deployment
    /// tables give each one's cost). plain: LessOrEqual/Where/Max or Min/Max in place of the
    /// Relu; relu-first: the Relu kept (runtimes fuse it into the convolution), the bound after
    /// it; fold: relu-first, with per-channel bounds folded into the weights before and after
    /// the Relu where they can be, so that the bound is the scalar 1; fold-threshold: fold, and
    /// in zero mode the folded Relus are Clip + ThresholdedRelu (one element-wise op), every
    /// other bound the scaled threshold (Mul, ThresholdedRelu, Div, ThresholdedRelu).
    #[arg(long, value_enum, default_value_t = EmissionName::FoldThreshold)]
    emission: EmissionName,
    /// Bounds are the calibrated maxima times (1 + margin). The small default is numerical
    /// headroom: another runtime (or another batch split) may compute a maximum one rounding
    /// step higher, and a bound exactly at the maximum would then zero it.
    #[arg(long, default_value_t = 0.001, allow_hyphen_values = true)]
    margin: f32,
    /// Samples per run (a model with a fixed batch dimension uses its own). Small batches
    /// run fastest on CNNs (benches/calibration.rs, FITACT_BENCH_SWEEP).
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// An activation no calibration sample reaches (an If branch never taken): error, or keep
    /// it unbounded, named in the report, the summary and the model's metadata.
    #[arg(long, value_enum, default_value_t = Unreached::Error)]
    unreached: Unreached,
    #[command(flatten)]
    engine: EngineArgs,
    /// Write a JSON report of every bound here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Emit the bounds this JSON file gives (one per activation, by node name: the format
    /// --save-bounds writes; docs/fitact_anchor.py writes it too) instead of the calibrated
    /// ones. The file's dims set the granularity; calibration still checks their shapes.
    #[arg(long, conflicts_with = "search")]
    bounds: Option<PathBuf>,
    /// Write the bounds emitted (calibrated, searched or read) to this JSON file.
    #[arg(long)]
    save_bounds: Option<PathBuf>,
    /// Worker threads of the search, which checks its folds in parallel (default: all
    /// cores). The bounds do not depend on it.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// Tighten the bounds by a gradient-free search under a clean-accuracy budget, checked
    /// by 4-fold cross-validation on the calibration samples (at least 64).
    #[arg(long)]
    search: bool,
    /// Labels of the calibration samples (int64/int32 .npy): the search's budget and
    /// --max-overhead's resilience are then top-1 accuracy; without, top-1 agreement with the
    /// original model. Needs --search or --max-overhead.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// The model output the search judges (default: the first).
    #[arg(long, requires = "search")]
    search_output: Option<String>,
    /// How the search judges that output (as evaluate's --sdc).
    #[command(flatten)]
    judge: super::args::SdcArgs,
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
    /// resilience (the default): of the points the search passes through within the budget
    /// (calibrated to tightest), the best under weight faults of --fault-format at
    /// --fault-ber, leaving the calibrated bounds only for a gain with 95% confidence; tight:
    /// the smallest bounds within the budget.
    #[arg(long, value_enum, default_value_t = ObjectiveName::Resilience, requires = "search")]
    objective: ObjectiveName,
    /// Objective resilience and --max-overhead: the BERs of the fault sweep.
    #[arg(long, value_delimiter = ',', default_value = "1e-5,3e-5")]
    fault_ber: Vec<f64>,
    /// Objective resilience and --max-overhead: fault patterns per BER (the same for every
    /// point or candidate checked).
    #[arg(long, default_value_t = 16)]
    fault_patterns: usize,
    /// Objective resilience and --max-overhead: how float weights are stored (as evaluate's
    /// --format; integer tensors are flipped in their own words whatever it says).
    #[arg(long, value_enum, default_value_t = WeightFormat::Float32)]
    fault_format: WeightFormat,
    /// Objective resilience and --max-overhead: the seed of the fault patterns.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    within: BudgetArgs,
}

/// `--max-overhead` and what it is measured with.
#[derive(clap::Args)]
struct BudgetArgs {
    /// Bound only the activations, and in the forms (the one asked for, layer/saturate, or
    /// none), that keep the most resilience under the --fault-* faults while the model runs at
    /// most this much slower than the original (e.g. 10%), batch 1, one thread, in --runtime;
    /// the chosen model is timed and run under the faults to check (docs/guide/methods.md).
    #[arg(long, value_parser = parse_fraction)]
    max_overhead: Option<f64>,
    /// Where --max-overhead times the models (default: the engine in use). openvino needs the
    /// openvino Python package (pip install openvino) for python3.
    #[arg(long, value_enum, requires = "max_overhead")]
    runtime: Option<RuntimeName>,
    /// measure: time the models in --runtime; count: count the element-wise passes each
    /// form adds (deterministic, approximate: for tests, or where nothing can be timed).
    #[arg(long, value_enum, default_value_t = CostModel::Measure, requires = "max_overhead")]
    cost_model: CostModel,
    /// Take the costs from this earlier harden report of the same model and options instead
    /// of timing them: the same choice on every run (nothing is timed then).
    #[arg(long, value_name = "REPORT", requires = "max_overhead")]
    budget_costs: Option<PathBuf>,
    /// --max-overhead's fault campaigns run on the first this many calibration samples.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..), requires = "max_overhead")]
    budget_samples: u64,
    /// Also measure the resilience-vs-overhead curve over budgets 0-100% and plot it here (SVG).
    #[arg(long, requires = "max_overhead")]
    plot_budget: Option<PathBuf>,
    /// How --max-overhead estimates what each bound buys: targeted (single damaging flips in
    /// the weights each activation's bound catches, --benefit-flips per group of weights,
    /// weighted by the chance of such a flip at --fault-ber; it kept more of full hardening on
    /// held-out faults, docs/results/budget_2026-12-05.md) or sampled (the metric under
    /// --fault-patterns sampled patterns per BER).
    #[arg(long, value_enum, default_value_t = Benefit::Targeted, requires = "max_overhead")]
    benefit: Benefit,
    /// --benefit targeted: single-flip runs per group of weights whose faults first reach the
    /// same activations, one group per sign (2 or more also give the estimate an interval).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..), requires = "max_overhead")]
    benefit_flips: u64,
}

/// `--runtime`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RuntimeName {
    Onnxruntime,
    Openvino,
    Tract,
}

impl BudgetArgs {
    /// The budget settings, when `--max-overhead` is given; `engine` is the one in use;
    /// `--labels` (and whether `--search`, which also takes them, is given).
    fn settings(
        &self,
        engine: &Engine,
        (labels, search): (Option<PathBuf>, bool),
        (batch_size, data_cap): (usize, crate::data::cap::DataCap),
        faults: FaultSettings,
    ) -> Result<Option<BudgetSettings>> {
        let Some(max_overhead) = self.max_overhead else {
            anyhow::ensure!(labels.is_none() || search, "--labels is for --search or --max-overhead");
            return Ok(None);
        };
        let runtime = match self.runtime {
            None => Runtime::Engine(engine.clone()),
            Some(RuntimeName::Tract) => Runtime::Engine(Engine::tract()),
            Some(RuntimeName::Openvino) => Runtime::OpenVino,
            Some(RuntimeName::Onnxruntime) if engine.kind() == EngineKind::Onnxruntime => {
                Runtime::Engine(engine.clone())
            }
            Some(RuntimeName::Onnxruntime) => {
                Runtime::Engine(Engine::select(EngineChoice::Onnxruntime, None).context("--runtime onnxruntime")?)
            }
        };
        Ok(Some(BudgetSettings {
            options: BudgetOptions {
                max_overhead,
                cost_model: self.cost_model,
                runtime,
                engine: engine.clone(),
                faults: faults.estimated_by(self.benefit, self.benefit_flips as usize),
                batch_size,
                curve: self.plot_budget.is_some(),
                costs_from: self.budget_costs.clone(),
            },
            labels,
            samples: self.budget_samples as usize,
            data_cap,
        }))
    }
}

pub fn run(args: Args, terminal: Terminal) -> Result<ExitCode> {
    let (allow_unchanged, threads) = (args.allow_unchanged, args.threads);
    let plot_budget = args.within.plot_budget.clone();
    let options = options(args, terminal)?;
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(threads) = threads {
        pool = pool.num_threads(usize::from(threads));
    }
    let hardened = pool.build()?.install(|| harden(&options));
    let report = match hardened {
        Err(e) if allow_unchanged && matches!(e.downcast_ref(), Some(HardenError::NoActivations(..))) => {
            copy_unchanged(&options)?;
            if !terminal.quiet {
                print_stderr(&format!("{e:#}: written unchanged to {}\n", options.output.display()));
            }
            return Ok(ExitCode::SUCCESS);
        }
        other => other?,
    };
    if let (Some(path), Some(budget)) = (&plot_budget, &report.budget) {
        let svg = crate::report::budget_curve::budget_svg(budget)?;
        write_atomically(path, svg.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    }
    if !terminal.quiet {
        print_stderr(&report.summary());
    }
    Ok(ExitCode::SUCCESS)
}

/// The library's options from the arguments: the output resolved against `--in-place`, the
/// search settings when `--search` is given.
fn options(args: Args, terminal: Terminal) -> Result<HardenOptions> {
    let Args {
        input,
        output,
        in_place,
        allow_unchanged: _,
        calib,
        images,
        cap,
        activations,
        method,
        granularity,
        mode,
        emission,
        margin,
        batch_size,
        unreached,
        engine,
        report,
        bounds,
        save_bounds,
        threads: _,
        search,
        labels,
        search_output,
        judge,
        budget,
        max_evals,
        time_limit,
        percentile,
        objective,
        fault_ber,
        fault_patterns,
        fault_format,
        seed,
        within: budget_args,
    } = args;
    if !(margin.is_finite() && margin > -1.0) {
        anyhow::bail!("--margin must be a finite number above -1, got {margin}");
    }
    let output = resolve_output(output, in_place, &input)?;
    let engine = engine.engine()?;
    let faults = FaultSettings::new(fault_format, fault_ber.clone(), fault_patterns, seed);
    let within = budget_args.settings(
        &engine,
        (labels.clone(), search),
        (batch_size, cap.max_data_memory),
        faults,
    )?;
    Ok(HardenOptions {
        engine,
        input,
        output,
        calib,
        images: images.options(),
        data_cap: cap.max_data_memory,
        activations: activations.map(|k| k.0),
        method,
        granularity,
        mode,
        emission,
        margin,
        batch_size,
        report,
        progress: terminal.progress,
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
            output: search_output,
            sdc: judge.sdc,
            sdc_tolerance: judge.sdc_tolerance,
        }),
        in_place,
        bounds_in: bounds,
        bounds_out: save_bounds,
        unreached,
        budget: within,
    })
}

/// Where the hardened model goes: OUTPUT, or the input itself with `--in-place`.
fn resolve_output(output: Option<PathBuf>, in_place: bool, input: &Path) -> Result<PathBuf> {
    Ok(match (output, in_place) {
        (Some(output), true) if !same_file(&output, input) => {
            anyhow::bail!(
                "--in-place writes over the input; OUTPUT {} is another file",
                output.display()
            )
        }
        (_, true) => input.to_path_buf(),
        (Some(output), false) => output,
        (None, false) => unreachable!("clap requires OUTPUT without --in-place"),
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
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
