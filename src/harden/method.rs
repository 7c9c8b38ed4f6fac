//! The method presets of the literature and how explicit flags override them.
//!
//! | method  | granularity       | above the bound |
//! |---------|-------------------|-----------------|
//! | fitact  | channel (neuron)  | zero            |
//! | ranger  | layer             | saturate        |
//! | clipact | layer             | zero            |

use crate::harden::bounds::Granularity;
use fitact_passes::bound_activations::Mode;
use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Per-channel (or per-neuron) bounds, zero above the bound (FitAct, DATE 2022).
    Fitact,
    /// One bound per layer, saturate at the bound (Ranger, DSN 2021).
    Ranger,
    /// One bound per layer, zero above the bound (FT-ClipAct, DATE 2020).
    Clipact,
}

/// `--mode` on the command line and in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModeName {
    /// x for 0 < x <= bound, 0 otherwise (NaN and +Inf too).
    Zero,
    /// min(max(x, 0), bound).
    Saturate,
}

/// `--emission`: which nodes a bounded Relu gets (the functions are the same; the forms differ
/// in what runtimes fuse, `passes/src/bound_activations/` and `fold_channel_bounds.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum EmissionName {
    /// LessOrEqual/Where/Max (zero), Clip or Max/Min (saturate) in place of each Relu.
    Plain,
    /// The Relu kept (fused into the convolution before it), the bound after it.
    ReluFirst,
    /// relu-first, and per-channel bounds folded into the weights around the Relu where they
    /// can be (the bound is then the scalar 1: Clip(0, 1) in saturate mode).
    Fold,
    /// fold, and in zero mode (opset >= 10) the folded Relus negated: Clip(max 0) +
    /// ThresholdedRelu, one element-wise op; every other bound above only (a Relu read by a
    /// residual Add or a MaxPool, layer and neuron bounds, other activations) the scaled
    /// threshold (`Emission::ScaledThreshold`) where it is exact.
    FoldThreshold,
}

impl fmt::Display for EmissionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EmissionName::Plain => "plain",
            EmissionName::ReluFirst => "relu-first",
            EmissionName::Fold => "fold",
            EmissionName::FoldThreshold => "fold-threshold",
        })
    }
}

impl From<ModeName> for Mode {
    fn from(m: ModeName) -> Mode {
        match m {
            ModeName::Zero => Mode::Zero,
            ModeName::Saturate => Mode::Saturate,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Fitact => "fitact",
            Method::Ranger => "ranger",
            Method::Clipact => "clipact",
        })
    }
}

impl fmt::Display for ModeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModeName::Zero => "zero",
            ModeName::Saturate => "saturate",
        })
    }
}

impl Method {
    /// The preset's granularity and mode, each replaced by an explicit choice if given.
    pub fn resolve(self, granularity: Option<Granularity>, mode: Option<ModeName>) -> (Granularity, ModeName) {
        let (g, m) = match self {
            Method::Fitact => (Granularity::Channel, ModeName::Zero),
            Method::Ranger => (Granularity::Layer, ModeName::Saturate),
            Method::Clipact => (Granularity::Layer, ModeName::Zero),
        };
        (granularity.unwrap_or(g), mode.unwrap_or(m))
    }
}
