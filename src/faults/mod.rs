//! Faults and what they do: the weight fault model, the formats weights are stored in, a
//! model's weights as fault injection sees memory, and fault-injection campaigns (`evaluate`).
//!
//! Owns: `flips` (sampling bit flips, weight formats), `weights` (decoding the stored weights
//! and writing faulty copies back), `campaign` (campaigns over models, BERs and trials, their
//! statistics, shards and `merge`, and the campaign report).
//! May use `replay`, `data`, `engine`, `model_io` and `passes`; nothing above.

pub mod campaign;
pub mod flips;
pub mod weights;

pub use campaign::{CampaignReport, EvaluateOptions, evaluate, merge};
