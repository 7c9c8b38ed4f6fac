//! What counts as the same prediction: the rule `evaluate` (SDC), `check` (agreement) and the
//! bound search (kept samples) judge an output by. Class scores `[N, classes]` are judged by
//! their top-1 class; any other output (boxes, sequences, masks, regressions) by its values:
//! a sample is the same when every element of its row is within a tolerance of the
//! reference's, the tolerance being relative to the reference output's range over the data.
//! Also the choice of the judged output (`--output`), which becomes the first output of the
//! copies the tools run, so that everything downstream judges "the first output".

use super::Predictions;
use anyhow::{Result, bail};
use fitact_passes::onnx::ModelProto;
use serde::{Deserialize, Serialize};

/// How the judge is chosen (`--sdc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SdcRule {
    /// top1 for an output of rank 2 (`[N, classes]`), tolerance for any other.
    #[default]
    Auto,
    /// The top-1 class differs.
    Top1,
    /// An element differs by more than the tolerance.
    Tolerance,
}

/// The default `--sdc-tolerance`: 1% of the output's fault-free range.
pub const DEFAULT_TOLERANCE: f64 = 0.01;

/// The rule an output is judged by, as reports record it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "lowercase")]
pub enum Judge {
    /// A sample is the same when its top-1 class is the reference's (a NaN/Inf row has no
    /// class: it matches only another NaN/Inf row).
    Top1,
    /// A sample is the same when every element is within `tolerance` x the reference output's
    /// range (max - min of its finite values over every sample) of the reference's, and every
    /// NaN or Inf of either is the same NaN or Inf in the other.
    Tolerance { tolerance: f64 },
}

impl Judge {
    /// The judge `rule` gives an output whose rows (one per sample) have `shape` (the batch
    /// axis first, as a run returns them).
    pub fn resolve(rule: SdcRule, tolerance: f64, shape: &[usize]) -> Judge {
        match rule {
            SdcRule::Top1 => Judge::Top1,
            SdcRule::Tolerance => Judge::Tolerance { tolerance },
            SdcRule::Auto if shape.len() == 2 => Judge::Top1,
            SdcRule::Auto => Judge::Tolerance { tolerance },
        }
    }

    /// Whether predictions must keep their output values for this judge.
    pub fn needs_values(self) -> bool {
        matches!(self, Judge::Tolerance { .. })
    }

    /// One line for reports: what SDC means under this judge, on `output` (None: the first
    /// output, unnamed).
    pub fn describe(self, output: Option<&str>) -> String {
        let output = output.map_or("the first output".to_owned(), |o| format!("output '{o}'"));
        match self {
            Judge::Top1 => format!("SDC: the top-1 class of {output} differs from the fault-free run's"),
            Judge::Tolerance { tolerance } => format!(
                "SDC: an element of {output} differs from the fault-free run's by more than {}% of its fault-free range, or is NaN/Inf where that was not",
                100.0 * tolerance
            ),
        }
    }

    /// What `reference` (the judge's yardstick) allows as a difference per element.
    pub fn allowance(self, reference: &Predictions) -> f32 {
        match self {
            Judge::Top1 => 0.0,
            Judge::Tolerance { tolerance } => (tolerance * f64::from(value_range(&reference.values))) as f32,
        }
    }

    /// Per sample (row `i` of both): whether `other` is the same as `reference`.
    pub fn agreement(self, reference: &Predictions, other: &Predictions) -> Vec<bool> {
        let allowance = self.allowance(reference);
        (0..other.classes.len().min(reference.classes.len()))
            .map(|i| self.same_row(reference, i, other, i, allowance))
            .collect()
    }

    /// Whether row `j` of `other` is the same as row `i` of `reference`, `allowance` being
    /// `self.allowance(reference)`.
    pub fn same_row(self, reference: &Predictions, i: usize, other: &Predictions, j: usize, allowance: f32) -> bool {
        match self {
            Judge::Top1 => reference
                .classes
                .get(i)
                .is_some_and(|c| other.classes.get(j) == Some(c)),
            Judge::Tolerance { .. } => {
                match (row(reference, i), row(other, j)) {
                    (Some(a), Some(b)) if a.len() == b.len() => {
                        a.iter().zip(b).all(|(x, y)| same_value(*x, *y, allowance))
                    }
                    // A row that is missing or of another length is not the same output.
                    _ => false,
                }
            }
        }
    }
}

/// Row `r` of `p`'s kept values, if it has one.
fn row(p: &Predictions, r: usize) -> Option<&[f32]> {
    p.values.get(r * p.width..(r + 1) * p.width)
}

/// max - min of the finite values (0 when there are none).
pub fn value_range(values: &[f32]) -> f32 {
    let (low, high) = values
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| (l.min(*v), h.max(*v)));
    if high >= low { high - low } else { 0.0 }
}

/// Two finite values within `allowance`, or the same NaN/Inf.
fn same_value(x: f32, y: f32, allowance: f32) -> bool {
    if x.is_finite() && y.is_finite() {
        (x - y).abs() <= allowance
    } else {
        (x.is_nan() && y.is_nan()) || x == y
    }
}

/// The graph output a tool judges: `name`, or the first.
pub fn judged_output(model: &ModelProto, name: Option<&str>) -> Result<String> {
    let outputs: Vec<&str> = model
        .graph
        .as_ref()
        .map(|g| g.output.iter().map(|o| o.name()).collect())
        .unwrap_or_default();
    match name {
        None => match outputs.first() {
            Some(first) => Ok((*first).to_owned()),
            None => bail!("the model has no output"),
        },
        Some(name) if outputs.contains(&name) => Ok(name.to_owned()),
        Some(name) => bail!(
            "--output '{name}': the model has no output of that name (its outputs: {})",
            outputs.join(", ")
        ),
    }
}

/// A copy of `model` whose first graph output is `name` (the others follow in their order).
pub fn with_output_first(model: &ModelProto, name: &str) -> Result<ModelProto> {
    let mut model = model.clone();
    let Some(graph) = model.graph.as_mut() else {
        bail!("the model has no graph");
    };
    let Some(at) = graph.output.iter().position(|o| o.name() == name) else {
        bail!("the model has no output '{name}'");
    };
    let judged = graph.output.remove(at);
    graph.output.insert(0, judged);
    Ok(model)
}

/// Refuses labels for an output judged by tolerance: accuracy needs class scores.
pub fn check_labelled(judge: Judge, labelled: bool, output: &str, shape: &[usize]) -> Result<()> {
    if labelled && judge != Judge::Top1 {
        bail!(
            "labels need class scores [N, classes], but output '{output}' has rank {} and is judged by tolerance: \
             drop --labels, choose a class output with --output, or give --sdc top1",
            shape.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(values: &[f32], width: usize) -> Predictions {
        let mut p = Predictions::keeping_values();
        p.width = width;
        p.values = values.to_vec();
        p.classes = vec![0; values.len() / width];
        p
    }

    #[test]
    fn rank_two_outputs_are_class_scores_and_the_rest_are_judged_by_value() {
        assert_eq!(Judge::resolve(SdcRule::Auto, 0.01, &[8, 10]), Judge::Top1);
        assert_eq!(
            Judge::resolve(SdcRule::Auto, 0.01, &[8, 16, 4]),
            Judge::Tolerance { tolerance: 0.01 }
        );
        assert_eq!(
            Judge::resolve(SdcRule::Auto, 0.01, &[8]),
            Judge::Tolerance { tolerance: 0.01 }
        );
        assert_eq!(Judge::resolve(SdcRule::Top1, 0.01, &[8, 16, 4]), Judge::Top1);
        assert_eq!(
            Judge::resolve(SdcRule::Tolerance, 0.2, &[8, 10]),
            Judge::Tolerance { tolerance: 0.2 }
        );
    }

    #[test]
    fn tolerance_is_relative_to_the_reference_range_and_nan_matches_only_nan() {
        // Range 10 (from -2 to 8): 1% allows 0.1 per element.
        let reference = rows(&[-2.0, 8.0, 1.0, 1.0, f32::NAN, 0.0], 2);
        let judge = Judge::Tolerance { tolerance: 0.01 };
        let near = rows(&[-1.95, 8.09, 1.0, 1.11, f32::NAN, 0.0], 2);
        assert_eq!(judge.agreement(&reference, &near), [true, false, true]);
        let inf = rows(&[-2.0, 8.0, 1.0, 1.0, f32::INFINITY, 0.0], 2);
        assert_eq!(judge.agreement(&reference, &inf), [true, true, false]);
    }

    #[test]
    fn the_range_ignores_nan_and_inf() {
        assert_eq!(value_range(&[1.0, f32::NAN, 3.0, f32::INFINITY]), 2.0);
        assert_eq!(value_range(&[f32::NAN]), 0.0);
    }

    #[test]
    fn the_judged_output_moves_first_and_an_unknown_one_is_named() {
        use fitact_passes::onnx::{GraphProto, ValueInfoProto};
        let output = |n: &str| ValueInfoProto {
            name: Some(n.into()),
            ..Default::default()
        };
        let model = ModelProto {
            graph: Some(GraphProto {
                output: vec![output("boxes"), output("scores")],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(judged_output(&model, None).unwrap(), "boxes");
        assert_eq!(judged_output(&model, Some("scores")).unwrap(), "scores");
        let err = judged_output(&model, Some("logits")).unwrap_err().to_string();
        assert_eq!(
            err,
            "--output 'logits': the model has no output of that name (its outputs: boxes, scores)"
        );
        let moved = with_output_first(&model, "scores").unwrap();
        let graph = moved.graph.unwrap();
        let names: Vec<&str> = graph.output.iter().map(|o| o.name()).collect();
        assert_eq!(names, ["scores", "boxes"]);
    }
}
