//! Bounds as a file: `harden --save-bounds` writes the bounds it emitted, `harden --bounds`
//! emits the bounds a file gives instead of the calibrated ones (bounds fitted elsewhere, e.g.
//! by FitAct's gradient training in `docs/fitact_anchor.py`, or a search kept from an earlier
//! run). One entry per activation, by node name:
//!
//! ```json
//! {"format": "fitact-onnx-bounds", "version": 1,
//!  "bounds": [{"node": "relu1", "dims": [64, 1, 1], "high": [0.5, ...], "low": null}]}
//! ```
//!
//! `dims` is the bound's shape against one sample's activation (no batch axis): `[]` per
//! layer, `[C, 1, 1]` (or `[C]` on a rank-2 activation) per channel, the sample's shape per
//! neuron; `high` (and `low`, for a two-sided bound) hold its values in row-major order.

use crate::harden::bounds::Granularity;
use fitact_passes::activations::ActivationSite;
use fitact_passes::bound_activations::Bound;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use thiserror::Error;

/// The `format` every bounds file names.
pub const FORMAT: &str = "fitact-onnx-bounds";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct BoundsFile {
    pub format: String,
    pub version: u32,
    /// What wrote the file (free text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub bounds: Vec<BoundEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BoundEntry {
    /// The activation's node name (`harden --report`'s `node`).
    pub node: String,
    pub dims: Vec<i64>,
    pub high: Vec<f32>,
    #[serde(default)]
    pub low: Option<Vec<f32>>,
}

/// What is wrong with a bounds file, against the model's activations.
#[derive(Debug, Error, PartialEq)]
pub enum BoundsFileError {
    #[error("not a bounds file: format is '{0}', expected '{FORMAT}'")]
    Format(String),
    #[error("bounds file version {0} is not supported (this version reads {FORMAT_VERSION})")]
    Version(u32),
    #[error("no bound for activation '{0}' (every activation bounded needs one; --activations picks which)")]
    Missing(String),
    #[error("a bound for '{0}', which is not an activation bounded here")]
    Unknown(String),
    #[error("two bounds for '{0}'")]
    Duplicate(String),
    #[error(
        "the bound for '{node}' has dims {dims:?}, which do not fit its activation of shape {shape:?} (expected [], {channel:?} or {shape:?})"
    )]
    Dims {
        node: String,
        dims: Vec<i64>,
        shape: Vec<usize>,
        channel: Vec<i64>,
    },
    #[error("the bound for '{node}' has {found} {what} values for dims {dims:?} ({expected} expected)")]
    Count {
        node: String,
        what: &'static str,
        found: usize,
        expected: usize,
        dims: Vec<i64>,
    },
    #[error("the bound for '{0}' has a value that is not a finite number")]
    NotFinite(String),
    #[error("the bound for '{0}' has a value below 0 above an activation that is never negative")]
    Negative(String),
    #[error("the bound for '{0}' has a value below its bound below")]
    Inverted(String),
    #[error("the bounds mix granularities ({0}); give one granularity for every activation")]
    Mixed(String),
}

/// The dims of a per-channel bound on an activation of one sample's `shape`.
fn channel_dims(shape: &[usize]) -> Vec<i64> {
    match shape.split_first() {
        Some((c, rest)) => std::iter::once(*c as i64).chain(rest.iter().map(|_| 1)).collect(),
        None => Vec::new(),
    }
}

/// The granularities `dims` can be on an activation of one sample's `shape`: on a rank-1
/// activation (a Gemm's features) one bound per channel is one per neuron.
fn granularities_of(dims: &[i64], shape: &[usize]) -> Vec<Granularity> {
    let full: Vec<i64> = shape.iter().map(|d| *d as i64).collect();
    let mut found = Vec::new();
    if dims.is_empty() {
        found.push(Granularity::Layer);
    }
    if !dims.is_empty() && dims == channel_dims(shape).as_slice() {
        found.push(Granularity::Channel);
    }
    if !dims.is_empty() && dims == full.as_slice() {
        found.push(Granularity::Neuron);
    }
    found
}

/// The bounds of `file` for `sites` (in their order), whose activations have one sample's
/// `shapes`, and their one granularity. Values are checked: finite, the right count, not below
/// 0 on an activation that is never negative, and a bound below not above the bound above.
pub fn bounds_from_file(
    file: BoundsFile,
    sites: &[ActivationSite],
    shapes: &[Vec<usize>],
) -> Result<(Vec<Bound>, Granularity), BoundsFileError> {
    if file.format != FORMAT {
        return Err(BoundsFileError::Format(file.format));
    }
    if file.version != FORMAT_VERSION {
        return Err(BoundsFileError::Version(file.version));
    }
    let mut by_node: HashMap<String, BoundEntry> = HashMap::new();
    for entry in file.bounds {
        if !sites.iter().any(|s| s.stem() == entry.node) {
            return Err(BoundsFileError::Unknown(entry.node));
        }
        if by_node.contains_key(&entry.node) {
            return Err(BoundsFileError::Duplicate(entry.node));
        }
        by_node.insert(entry.node.clone(), entry);
    }
    let mut bounds = Vec::with_capacity(sites.len());
    // The granularities every bound so far can be, and the ones some bound is.
    let mut common = vec![Granularity::Layer, Granularity::Channel, Granularity::Neuron];
    let mut seen = Vec::new();
    for (site, shape) in sites.iter().zip(shapes) {
        let entry = by_node
            .remove(site.stem())
            .ok_or_else(|| BoundsFileError::Missing(site.stem().to_owned()))?;
        let possible = granularities_of(&entry.dims, shape);
        if possible.is_empty() {
            return Err(BoundsFileError::Dims {
                node: entry.node.clone(),
                dims: entry.dims.clone(),
                shape: shape.clone(),
                channel: channel_dims(shape),
            });
        }
        common.retain(|g| possible.contains(g));
        if !seen.contains(&possible[0]) {
            seen.push(possible[0]);
        }
        bounds.push(checked_bound(entry, site.nonnegative)?);
    }
    match common.first() {
        Some(granularity) => Ok((bounds, *granularity)),
        None => {
            let names: Vec<String> = seen.iter().map(|g| format!("{g:?}").to_lowercase()).collect();
            Err(BoundsFileError::Mixed(names.join(", ")))
        }
    }
}

/// One entry as a bound, with its values checked.
fn checked_bound(entry: BoundEntry, nonnegative: bool) -> Result<Bound, BoundsFileError> {
    let expected = entry.dims.iter().product::<i64>().max(0) as usize;
    let count = |what: &'static str, found: usize| BoundsFileError::Count {
        node: entry.node.clone(),
        what,
        found,
        expected,
        dims: entry.dims.clone(),
    };
    if entry.high.len() != expected {
        return Err(count("high", entry.high.len()));
    }
    if let Some(low) = &entry.low
        && low.len() != expected
    {
        return Err(count("low", low.len()));
    }
    let values = entry.high.iter().chain(entry.low.iter().flatten());
    if values.clone().any(|v| !v.is_finite()) {
        return Err(BoundsFileError::NotFinite(entry.node));
    }
    if entry.low.is_none() && nonnegative && entry.high.iter().any(|v| *v < 0.0) {
        return Err(BoundsFileError::Negative(entry.node));
    }
    if let Some(low) = &entry.low
        && low.iter().zip(&entry.high).any(|(l, h)| l > h)
    {
        return Err(BoundsFileError::Inverted(entry.node));
    }
    Ok(Bound {
        dims: entry.dims,
        values: entry.high,
        low: entry.low,
    })
}

/// The file `harden --save-bounds` writes: the bounds emitted, one per site.
pub fn bounds_to_file(sites: &[ActivationSite], bounds: &[Bound], source: String) -> BoundsFile {
    BoundsFile {
        format: FORMAT.to_owned(),
        version: FORMAT_VERSION,
        source: Some(source),
        bounds: sites
            .iter()
            .zip(bounds)
            .map(|(site, bound)| BoundEntry {
                node: site.stem().to_owned(),
                dims: bound.dims.clone(),
                high: bound.values.clone(),
                low: bound.low.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fitact_passes::activations::find_relus;
    use fitact_passes::onnx::ModelProto;
    use prost::Message;

    fn alexnet_sites() -> Vec<ActivationSite> {
        let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/alexnet.onnx")).unwrap();
        find_relus(&ModelProto::decode(bytes.as_slice()).unwrap())
    }

    fn entry(node: &str, dims: Vec<i64>, high: Vec<f32>) -> BoundEntry {
        BoundEntry {
            node: node.to_owned(),
            dims,
            high,
            low: None,
        }
    }

    fn file(bounds: Vec<BoundEntry>) -> BoundsFile {
        BoundsFile {
            format: FORMAT.to_owned(),
            version: FORMAT_VERSION,
            source: None,
            bounds,
        }
    }

    /// Two sites: a [2,1,1]-channel conv activation and a [3] Gemm one.
    fn two() -> (Vec<ActivationSite>, Vec<Vec<usize>>) {
        (alexnet_sites()[..2].to_vec(), vec![vec![2, 4, 4], vec![3]])
    }

    #[test]
    fn a_saved_file_reads_back_as_the_same_bounds_and_granularity() {
        let (sites, shapes) = two();
        let bounds = vec![
            Bound {
                dims: vec![2, 1, 1],
                values: vec![1.0, 2.0],
                low: None,
            },
            Bound {
                dims: vec![3],
                values: vec![0.5, 0.25, 4.0],
                low: Some(vec![-1.0, -1.0, -1.0]),
            },
        ];
        let text = serde_json::to_string(&bounds_to_file(&sites, &bounds, "test".into())).unwrap();
        let (read, granularity) = bounds_from_file(serde_json::from_str(&text).unwrap(), &sites, &shapes).unwrap();
        assert_eq!(read, bounds);
        assert_eq!(granularity, Granularity::Channel);
    }

    #[test]
    fn a_bound_per_feature_of_a_gemm_activation_is_per_channel_and_per_neuron() {
        let (sites, shapes) = two();
        let (a, b) = (sites[0].stem().to_owned(), sites[1].stem().to_owned());
        let granularity = |dims: Vec<i64>| {
            let count = dims.iter().product::<i64>() as usize;
            let entries = vec![entry(&a, dims, vec![1.0; count]), entry(&b, vec![3], vec![1.0; 3])];
            bounds_from_file(file(entries), &sites, &shapes).unwrap().1
        };
        assert_eq!(granularity(vec![2, 4, 4]), Granularity::Neuron);
        assert_eq!(granularity(vec![2, 1, 1]), Granularity::Channel);
    }

    #[test]
    fn each_mistake_in_a_file_is_named() {
        let (sites, shapes) = two();
        let (a, b) = (sites[0].stem().to_owned(), sites[1].stem().to_owned());
        let read = |entries| bounds_from_file(file(entries), &sites, &shapes).unwrap_err();
        assert_eq!(
            read(vec![entry(&a, vec![], vec![1.0])]),
            BoundsFileError::Missing(b.clone())
        );
        assert_eq!(
            read(vec![entry("nope", vec![], vec![1.0])]),
            BoundsFileError::Unknown("nope".into())
        );
        assert_eq!(
            read(vec![entry(&a, vec![], vec![1.0]), entry(&a, vec![], vec![1.0])]),
            BoundsFileError::Duplicate(a.clone())
        );
        assert!(matches!(
            read(vec![entry(&a, vec![4], vec![1.0; 4]), entry(&b, vec![], vec![1.0])]),
            BoundsFileError::Dims { .. }
        ));
        assert!(matches!(
            read(vec![
                entry(&a, vec![2, 1, 1], vec![1.0]),
                entry(&b, vec![3], vec![1.0; 3])
            ]),
            BoundsFileError::Count {
                found: 1,
                expected: 2,
                ..
            }
        ));
        assert_eq!(
            read(vec![entry(&a, vec![], vec![f32::NAN]), entry(&b, vec![], vec![1.0])]),
            BoundsFileError::NotFinite(a.clone())
        );
        assert_eq!(
            read(vec![entry(&a, vec![], vec![-1.0]), entry(&b, vec![], vec![1.0])]),
            BoundsFileError::Negative(a.clone())
        );
        assert!(matches!(
            read(vec![entry(&a, vec![], vec![1.0]), entry(&b, vec![3], vec![1.0; 3])]),
            BoundsFileError::Mixed(_)
        ));
        let mut wrong = file(vec![]);
        wrong.format = "onnx".into();
        assert_eq!(
            bounds_from_file(wrong, &sites, &shapes).unwrap_err(),
            BoundsFileError::Format("onnx".into())
        );
    }
}
