//! Faults and what they do: the weight fault model, the formats weights are stored in, a
//! model's weights as fault injection sees memory, and fault-injection campaigns (`evaluate`).
//!
//! Owns: `flips` (sampling bit flips, weight formats), `weights` (decoding the stored weights
//! and writing faulty copies back), `campaign` (campaigns over models, BERs and trials, and
//! the fault dump), `campaign_report` (the report's types and JSON), `statistics` (means,
//! confidence intervals, AUCs, aggregating trials), `shards` (`--shard` and `merge`).
//! May use `replay`, `data`, `engine`, `model_io` and `passes`; nothing above.

pub mod campaign;
pub mod campaign_report;
pub mod flips;
pub mod shards;
pub mod statistics;
pub mod weights;

pub use campaign::{EvaluateOptions, FaultKind, evaluate, evaluate_on};
pub use campaign_report::CampaignReport;
pub use shards::{Shard, merge};
