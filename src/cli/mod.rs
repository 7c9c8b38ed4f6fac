//! The command line, one file per command: each holds its clap `Args` and a `run` that turns
//! them into the library's options, makes one call into the library and writes what it
//! returns. `main.rs` parses, dispatches to these and maps errors to exit codes.
//!
//! Owns: the commands (`harden`, `evaluate`, `merge`, `check`, `inspect`, `completions`), the
//! argument groups several commands share (`args`), the parsers of flag values (`values`) and
//! how results reach files and the terminal (`output`). May use every stage of the library
//! (`fitact_onnx::*`); nothing in the library uses it.

pub mod args;
pub mod check;
pub mod completions;
pub mod evaluate;
pub mod harden;
pub mod inspect;
pub mod merge;
pub mod output;
pub mod values;

/// What every command is told of the global flags.
#[derive(Clone, Copy)]
pub struct Terminal {
    /// `-q`: print nothing but errors (and the one-line verdict of `check`).
    pub quiet: bool,
    /// Progress bars: only when stderr is a terminal and not `-q`.
    pub progress: bool,
}
