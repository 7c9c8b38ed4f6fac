//! The command line: parse the arguments, dispatch to the command's `run` (`cli/`, one file
//! per command), print one line for an error and map the outcome to an exit code.
//! Exit codes: 0 done, 1 nothing to do (or a check failed), 2 error.

pub(crate) mod cli;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};
use fitact_onnx::harden::HardenError;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fitact-onnx",
    version,
    about = "Harden ONNX models against bit flips by bounding their activations (FitAct, post-training, gradient-free)"
)]
pub(crate) struct Cli {
    /// Print nothing but errors (and the one-line verdict of `check`).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,
    /// Say more about each step on stderr (-v: steps and timings, -vv: details).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Calibrate every activation on sample data and write a model whose activations are bounded.
    #[command(
        after_help = "Examples:\n  fitact-onnx harden model.onnx model.hardened.onnx --calib calib.npy --report report.json\n  fitact-onnx harden model.onnx out.onnx --calib images/ --preset imagenet --search --budget 0.5%"
    )]
    Harden(cli::harden::Args),
    /// Fault-injection campaign: accuracy and SDC rate of each model under weight bit flips.
    #[command(
        after_help = "Example:\n  fitact-onnx evaluate model.onnx ranger.onnx clipact.onnx fitact.onnx \\\n      --data test.npy --labels test_labels.npy --ber 1e-7,1e-6,1e-5,3e-5 --trials 100 --seed 7 \\\n      --report campaign.json --csv campaign.csv --plot campaign.svg"
    )]
    Evaluate(cli::evaluate::Args),
    /// Merge the JSON reports of the shards of one campaign into the report of the whole.
    #[command(
        after_help = "Example:\n  fitact-onnx merge shard0.json shard1.json --report campaign.json --csv campaign.csv"
    )]
    Merge(cli::merge::Args),
    /// CI gate: exit 0 if the hardened model keeps its accuracy within the budget (and meets
    /// the resilience floor, if asked), 1 if not, 2 on error; prints one line saying why.
    #[command(
        after_help = "Example:\n  fitact-onnx check hardened.onnx --reference original.onnx --data test.npy --labels test_labels.npy \\\n      --max-accuracy-drop 0.5% --ber 1e-5 --min-accuracy 80%"
    )]
    Check(cli::check::Args),
    /// Print a shell completion script, e.g. `fitact-onnx completions bash > /etc/bash_completion.d/fitact-onnx`.
    #[command(after_help = "Example:\n  fitact-onnx completions zsh > ~/.zfunc/_fitact-onnx")]
    Completions { shell: clap_complete::Shell },
    /// List every activation found, by kind, which ones --activations would bound, their
    /// shapes, and where the weights live.
    #[command(after_help = "Example:\n  fitact-onnx inspect model.onnx --activations all --json")]
    Inspect(cli::inspect::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    set_log_level(cli.quiet, cli.verbose);
    // An engine's panic is caught and reported as an error where it runs (`engine::guard`);
    // a panic anywhere else is a bug, reported in one line too, with a backtrace on request.
    let backtrace = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if backtrace {
            default_hook(info);
        }
    }));
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "error: {err:#}");
            ExitCode::from(error_code(&err))
        }
    }
}

/// Logs at the level `-q`/`-v` ask for. The logger is installed once per process (the
/// Python module calls this once per command).
pub(crate) fn set_log_level(quiet: bool, verbose: u8) {
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
pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
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
pub(crate) fn error_code(err: &anyhow::Error) -> u8 {
    let nothing_to_do = err
        .downcast_ref::<HardenError>()
        .is_some_and(|e| matches!(e, HardenError::NoActivations(..)));
    if nothing_to_do { 1 } else { 2 }
}

/// Runs the command; its exit code, or the error `main` reports.
fn try_main(cli: Cli) -> Result<ExitCode> {
    let terminal = cli::Terminal {
        quiet: cli.quiet,
        progress: !cli.quiet && std::io::stderr().is_terminal(),
    };
    match cli.command {
        Command::Harden(args) => cli::harden::run(args, terminal),
        Command::Evaluate(args) => cli::evaluate::run(args, terminal),
        Command::Merge(args) => cli::merge::run(args, terminal),
        Command::Check(args) => cli::check::run(args, terminal),
        Command::Completions { shell } => cli::completions::run(shell, &mut Cli::command()),
        Command::Inspect(args) => cli::inspect::run(args),
    }
}
