//! `fitact-onnx evaluate`: its arguments, and a `run` that builds `EvaluateOptions`, runs the
//! campaign (`fitact_onnx::faults::evaluate`) and writes its files and table.

use super::Terminal;
use super::args::{DataArgs, EngineArgs, SdcArgs};
use super::output::{CampaignFiles, write_outputs};
use super::values::{BitList, parse_bits};
use crate::faults::flips::WeightFormat;
use crate::faults::shards::{ShardRequest, evaluate_identified, resolve_shard};
use crate::faults::{EvaluateOptions, FaultKind};
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
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
    /// The model output the campaign judges (default: the first).
    #[arg(long)]
    output: Option<String>,
    #[command(flatten)]
    judge: SdcArgs,
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
    /// Run only trials t with t % N == K (K/N), to spread a campaign; see `merge`. `auto`:
    /// K and N from the scheduler running this process: a Slurm array job, a Kubernetes
    /// Indexed Job (N from --shard-count or FITACT_SHARD_COUNT), or FITACT_SHARD_INDEX and
    /// FITACT_SHARD_COUNT (docs/guide/scale-out.md).
    #[arg(long, value_name = "K/N|auto")]
    shard: Option<ShardRequest>,
    /// The number of shards N, for --shard auto where the scheduler gives only K; it must
    /// agree with N where that is known.
    #[arg(long, requires = "shard", value_name = "N")]
    shard_count: Option<usize>,
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
}

pub fn run(args: Args, terminal: Terminal) -> Result<ExitCode> {
    let Args {
        models,
        data: DataArgs {
            data,
            labels,
            images,
            cap,
        },
        ber,
        fault,
        layer,
        output,
        judge,
        trials,
        seed,
        format,
        bits,
        target,
        shard,
        shard_count,
        threads,
        batch_size,
        engine,
        report,
        csv,
        plot,
        html,
        dump_faults,
    } = args;
    let shard = match shard {
        Some(request) => Some(resolve_shard(request, shard_count, &environment())?),
        None => None,
    };
    let options = EvaluateOptions {
        engine: engine.engine()?,
        models,
        data,
        labels,
        images: images.options(),
        data_cap: cap.max_data_memory,
        bers: ber,
        trials,
        seed,
        format,
        bits: bits.map(|b| b.0).unwrap_or_default(),
        target,
        batch_size,
        shard,
        progress: terminal.progress,
        dump_faults,
        fault: fault.unwrap_or(FaultKind::Weight),
        layer,
        output,
        sdc: judge.sdc,
        sdc_tolerance: judge.sdc_tolerance,
    };
    // A pool of this call's own, not the global one: the Python API runs commands again in
    // one process, and shards side by side in threads (Dask workers with processes=False).
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(threads) = threads {
        pool = pool.num_threads(threads);
    }
    let campaign = pool.build()?.install(|| evaluate_identified(&options))?;
    let files = CampaignFiles {
        report,
        csv,
        plot,
        html,
    };
    write_outputs(&campaign, &files, terminal.quiet)?;
    Ok(ExitCode::SUCCESS)
}

/// The process environment as `--shard auto` reads it (variables that are not UTF-8 left out:
/// none of those it reads can be).
fn environment() -> std::collections::BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}
