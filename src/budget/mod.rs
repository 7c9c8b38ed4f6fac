//! Hardening within a latency budget (`harden --max-overhead`): which activations to bound,
//! and in which form, so that the hardened model keeps the most resilience and runs at most
//! that much slower than the original in the runtime it is deployed to.
//!
//! Owns: `cost` (what each form of each activation costs: timed in the runtime on the user's
//! model, in groups, interleaved rounds, fastest runs, prices fitted per node and per value; or counted, `--cost-model
//! count`), `openvino` (the timing in OpenVINO, through its Python package), `benefit` (paired
//! fault campaigns: the resilience each activation's bound buys), `targeted` (their single-flip
//! events per activation, `--benefit targeted`), `choice` (the best forms
//! within the budget: an exact knapsack over costs rounded to `choice::RESOLUTION`) and
//! `reused_costs` (the costs of an earlier report, `--budget-costs`), `plan` (the sequence: costs, benefits, choice, the measured check of the chosen model and
//! its repair, the resilience-vs-overhead curve), whose result is `BudgetReport`.
//!
//! Knows nothing of how a form is emitted: the caller (`harden::budgeted`) describes every
//! activation and gives a function that builds the model for any assignment of forms.
//! May use `faults` (fault patterns, stored weights), `replay` (batches, predictions), `data`,
//! `engine` and `passes`; nothing above (`harden` calls it).

pub mod benefit;
pub mod choice;
pub mod cost;
mod openvino;
pub mod plan;
mod reused_costs;
pub mod targeted;

pub use benefit::{Benefit, FaultSettings};
pub use cost::{CostModel, Runtime};
pub use plan::{BudgetOptions, BudgetReport, choose};

use fitact_passes::onnx::ModelProto;
use serde::Serialize;

/// How one activation is bounded in a candidate model, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// Left as in the original.
    Unbounded,
    /// The cheaper form the caller offers (layer bounds, saturate: a scalar `Clip` that
    /// runtimes fuse into the convolution before it).
    Cheap,
    /// The form asked for (`--method`, `--granularity`, `--mode`, `--emission`).
    Full,
}

/// One activation as the budget sees it.
#[derive(Debug, Clone)]
pub struct Site {
    /// Its node (the report's name for it).
    pub node: String,
    pub kind: &'static str,
    /// Values of one sample's activation.
    pub elements: usize,
    /// The forms offered (`Unbounded` and `Full` always), each with its name in reports
    /// (`channel/zero`) and the element-wise passes over the activation it adds that a
    /// runtime cannot fuse into the producer (`cost::count`).
    pub forms: Vec<FormInfo>,
}

#[derive(Debug, Clone)]
pub struct FormInfo {
    pub form: Form,
    pub label: String,
    pub passes: usize,
}

impl Site {
    /// The info of `form`, if offered.
    pub fn form(&self, form: Form) -> Option<&FormInfo> {
        self.forms.iter().find(|f| f.form == form)
    }
}

/// Builds the model with each activation in the given form (one per site, in order).
pub type Build<'a> = dyn Fn(&[Form]) -> anyhow::Result<ModelProto> + Sync + 'a;
