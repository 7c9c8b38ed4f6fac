//! The command line (`fitact_onnx::cli`): the arguments (`Cli`, clap), one file per command,
//! each with its clap `Args` and a `run` that turns them into the library's options, makes one
//! call into the library and writes what it returns; `run` dispatches to them and `error_code`
//! maps an error to the exit code (0 done, 1 nothing to do or a check failed, 2 error). The
//! binary (`src/main.rs`) and the Python module (`python/src/lib.rs`) parse `Cli` and call
//! `run`, so both run the same commands with the same options, checks and messages.
//!
//! Owns: the commands (`harden`, `evaluate`, `merge`, `check`, `inspect`, `completions`), the
//! argument groups several commands share (`args`), the parsers of flag values (`values`) and
//! how results reach files and the terminal (`output`). May use every stage of the library;
//! no stage uses it (it is the top of docs/architecture.md's order).

pub mod args;
pub mod check;
pub mod completions;
pub mod evaluate;
pub mod harden;
pub mod inspect;
pub mod merge;
pub mod output;
pub mod values;

use crate::harden::HardenError;
use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};
use std::io::IsTerminal;
use std::process::ExitCode;

/// What every command is told of the global flags.
#[derive(Clone, Copy)]
pub struct Terminal {
    /// `-q`: print nothing but errors (and the one-line verdict of `check`).
    pub quiet: bool,
    /// Progress bars: only when stderr is a terminal and not `-q`.
    pub progress: bool,
}

#[derive(Parser)]
#[command(
    name = "fitact-onnx",
    version,
    about = "Harden ONNX models against bit flips by bounding their activations (FitAct, post-training, gradient-free)"
)]
pub struct Cli {
    /// Print nothing but errors (and the one-line verdict of `check`).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Say more about each step on stderr (-v: steps and timings, -vv: details).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Calibrate every activation on sample data and write a model whose activations are bounded.
    #[command(
        after_help = "Examples:\n  fitact-onnx harden model.onnx model.hardened.onnx --calib calib.npy --report report.json\n  fitact-onnx harden model.onnx out.onnx --calib images/ --preset imagenet --search --budget 0.5%"
    )]
    Harden(harden::Args),
    /// Fault-injection campaign: accuracy and SDC rate of each model under weight bit flips.
    #[command(
        after_help = "Example:\n  fitact-onnx evaluate model.onnx ranger.onnx clipact.onnx fitact.onnx \\\n      --data test.npy --labels test_labels.npy --ber 1e-7,1e-6,1e-5,3e-5 --trials 100 --seed 7 \\\n      --report campaign.json --csv campaign.csv --plot campaign.svg"
    )]
    Evaluate(evaluate::Args),
    /// Merge the JSON reports of the shards of one campaign into the report of the whole.
    #[command(
        after_help = "Example:\n  fitact-onnx merge shard0.json shard1.json --report campaign.json --csv campaign.csv"
    )]
    Merge(merge::Args),
    /// CI gate: exit 0 if the hardened model keeps its accuracy within the budget (and meets
    /// the resilience floor, if asked), 1 if not, 2 on error; prints one line saying why.
    #[command(
        after_help = "Example:\n  fitact-onnx check hardened.onnx --reference original.onnx --data test.npy --labels test_labels.npy \\\n      --max-accuracy-drop 0.5% --ber 1e-5 --min-accuracy 80%"
    )]
    Check(check::Args),
    /// Print a shell completion script, e.g. `fitact-onnx completions bash > /etc/bash_completion.d/fitact-onnx`.
    #[command(after_help = "Example:\n  fitact-onnx completions zsh > ~/.zfunc/_fitact-onnx")]
    Completions { shell: clap_complete::Shell },
    /// List every activation found, by kind, which ones --activations would bound, their
    /// shapes, and where the weights live.
    #[command(after_help = "Example:\n  fitact-onnx inspect model.onnx --activations all --json")]
    Inspect(inspect::Args),
}

/// Logs at the level `-q`/`-v` ask for. The logger is installed once per process (the
/// Python module calls this once per command).
pub fn set_log_level(quiet: bool, verbose: u8) {
    let level = match (quiet, verbose) {
        (true, _) => log::LevelFilter::Error,
        (false, 0) => log::LevelFilter::Warn,
        (false, 1) => log::LevelFilter::Info,
        (false, _) => log::LevelFilter::Debug,
    };
    let _ = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Debug)
        .format_timestamp(None)
        .format_target(false)
        .try_init();
    log::set_max_level(level);
}

/// Runs the command, a panic turned into an error; the exit code, or the error to report.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| try_main(cli)));
    outcome.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        Err(anyhow::anyhow!("internal error (please report it): {message}"))
    })
}

/// The exit code of an error: 1 for nothing to do (a model without activations), else 2.
pub fn error_code(err: &anyhow::Error) -> u8 {
    let nothing_to_do = err
        .downcast_ref::<HardenError>()
        .is_some_and(|e| matches!(e, HardenError::NoActivations(..)));
    if nothing_to_do { 1 } else { 2 }
}

/// Runs the command; its exit code, or the error `main` reports.
fn try_main(cli: Cli) -> Result<ExitCode> {
    let terminal = Terminal {
        quiet: cli.quiet,
        progress: !cli.quiet && std::io::stderr().is_terminal(),
    };
    match cli.command {
        Command::Harden(args) => harden::run(args, terminal),
        Command::Evaluate(args) => evaluate::run(args, terminal),
        Command::Merge(args) => merge::run(args, terminal),
        Command::Check(args) => check::run(args, terminal),
        Command::Completions { shell } => completions::run(shell, &mut Cli::command()),
        Command::Inspect(args) => inspect::run(args),
    }
}
