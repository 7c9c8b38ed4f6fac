//! Typed errors of the graph library; the CLI adds file context at its boundary.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum PassError {
    #[error("model has no graph")]
    NoGraph,
    #[error("model imports no default-domain (ai.onnx) opset")]
    NoDefaultOpset,
    #[error("opset {0} is older than 9, the oldest this tool emits for (Where needs opset 9); convert the model first")]
    OpsetTooOld(i64),
    #[error("no activation at {0}: the model changed since it was analysed")]
    SiteNotFound(String),
    #[error(
        "unsupported element type {elem_type} for the bound of {site}: only float32 and float64 activations are bounded"
    )]
    UnsupportedElemType { site: String, elem_type: i32 },
    #[error("{0}")]
    Invalid(String),
    #[error("bound of {site}: {reason}")]
    InvalidBound { site: String, reason: String },
}
