//! Rerunning part of a model on the clean values of the rest: the data cut into uniform
//! batches, fault-free predictions with any tensors observed on the way, a per-model cache of
//! clean tensor values, and predictions of a suffix model (`extract_suffix`) fed from it.
//! Fault injection and the bound search both change a few nodes and rerun only what follows,
//! and `check` compares clean predictions: so this is a stage of its own, below them.
//!
//! May use `data` (the samples), `engine` and `passes`; nothing above.

pub mod judge;

use crate::data::dataset::Samples;
use crate::engine::{ElemType, Engine, EngineError, Outputs, Session, Value};
use anyhow::Result;
use fitact_passes::onnx::ModelProto;
use std::collections::HashMap;
use std::sync::Mutex;

/// Predictions of one run over the data set: per sample (row), from the first output.
#[derive(Debug, Clone, Default)]
pub struct Predictions {
    pub classes: Vec<usize>,
    /// Length of one row of the first output: the number of classes.
    pub width: usize,
    /// Per row: the top-1 output minus the runner-up (0 for a NaN/Inf row or a single class).
    pub margins: Vec<f32>,
    /// Rows whose output held NaN or Inf (their class is `usize::MAX`).
    pub nonfinite: Vec<bool>,
    /// The shape of the first output of the first run (batch axis first; for whole feeds, one
    /// sample's output as the model returns it).
    pub shape: Vec<usize>,
    /// Every row's values, `width` each, when kept (`keeping_values`): what a judge by
    /// tolerance compares.
    pub values: Vec<f32>,
    keep_values: bool,
}

impl Predictions {
    /// Predictions that keep their rows' values.
    pub fn keeping_values() -> Predictions {
        Predictions {
            keep_values: true,
            ..Default::default()
        }
    }

    /// Empty predictions for `count` samples, keeping values when asked.
    fn with_capacity(count: usize, keep_values: bool) -> Predictions {
        Predictions {
            classes: Vec::with_capacity(count),
            keep_values,
            ..Default::default()
        }
    }

    /// The rows `order` (indices into these), in that order.
    pub fn select(&self, order: &[usize]) -> Predictions {
        let width = self.width;
        Predictions {
            classes: order.iter().map(|i| self.classes[*i]).collect(),
            width,
            margins: order.iter().map(|i| self.margins[*i]).collect(),
            nonfinite: order.iter().map(|i| self.nonfinite[*i]).collect(),
            shape: self.shape.clone(),
            values: if self.values.is_empty() {
                Vec::new()
            } else {
                order
                    .iter()
                    .flat_map(|i| self.values[i * width..(i + 1) * width].iter().copied())
                    .collect()
            },
            keep_values: self.keep_values,
        }
    }

    /// `count` samples that lost their prediction (the runtime refused the model): no class,
    /// no values, so every judge counts them as changed and every label as missed.
    pub fn lost(count: usize, width: usize) -> Predictions {
        Predictions {
            classes: vec![usize::MAX; count],
            width,
            margins: vec![0.0; count],
            nonfinite: vec![false; count],
            ..Default::default()
        }
    }

    /// Stops keeping values and frees those kept (once the judge is known not to need them).
    pub fn drop_values(&mut self) {
        self.keep_values = false;
        self.values = Vec::new();
    }
}

fn argmax(row: ndarray::ArrayView1<f32>) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// The data set cut into batches of one size (the last padded with copies of its last
/// sample), so that every run of a model sees the same shapes and one plan serves them all.
/// A model with an input that takes whole feeds (`Layout::Whole`) runs one sample at a time.
pub struct Batches {
    /// Per batch: one value per model input, and how many rows are real samples.
    pub batches: Vec<(Vec<Value>, usize)>,
    pub input_names: Vec<String>,
    pub count: usize,
    /// Whether each batch is one sample's whole feeds (no batch axis to pad or to read).
    pub one_at_a_time: bool,
}

impl Batches {
    pub fn new(samples: &Samples, size: usize) -> Batches {
        let size = samples.run_size(size);
        let one_at_a_time = samples.one_at_a_time();
        let batches = (0..samples.count)
            .step_by(size)
            .map(|start| {
                let end = (start + size).min(samples.count);
                let mut inputs = samples.slice(start, end);
                if !one_at_a_time {
                    inputs = inputs.into_iter().map(|a| a.pad_rows(size)).collect();
                }
                (inputs, end - start)
            })
            .collect();
        let input_names = samples.inputs.iter().map(|(n, _)| n.clone()).collect();
        Batches {
            batches,
            input_names,
            count: samples.count,
            one_at_a_time,
        }
    }

    /// The first batch's feeds by input name.
    pub fn named(&self, b: usize) -> Vec<(String, Value)> {
        self.input_names
            .iter()
            .cloned()
            .zip(self.batches[b].0.iter().cloned())
            .collect()
    }

    /// A session of `model` for these batches: loaded for their shapes, with the batch axis
    /// free where a model declares it so; for whole feeds, for exactly the first batch's.
    pub fn session(&self, engine: &Engine, model: &ModelProto, outputs: Outputs) -> Result<Session, EngineError> {
        let size = self.batches[0]
            .0
            .first()
            .and_then(|a| a.shape().first().copied())
            .unwrap_or(1);
        crate::data::dataset::session_for(engine, model, &self.named(0), self.one_at_a_time, size, outputs)
    }
}

/// Refuses labels that name a class the model does not have (its first output has `width`
/// values per sample).
pub fn check_labels(labels: &[usize], width: usize) -> Result<()> {
    if let Some(bad) = labels.iter().find(|l| **l >= width) {
        anyhow::bail!(
            "label {bad} is not a class of the model: its output has {width} classes (0 to {})",
            width.saturating_sub(1)
        );
    }
    Ok(())
}

/// Appends the predictions of one batch's first output (its `valid` rows). With `whole`
/// (whole feeds, one sample per run), the whole output is the sample's row, whatever its
/// shape.
pub fn push_predictions(predictions: &mut Predictions, logits: &Value, valid: usize, whole: bool) -> Result<()> {
    // float16 scores (a model with float16 I/O) are read widened, exactly.
    let widened;
    let view = match logits.view::<f32>() {
        Some(view) => view,
        None if logits.elem_type() == ElemType::F16 => {
            widened = logits.widened_f32().map_err(anyhow::Error::msg)?;
            widened.view()
        }
        None => anyhow::bail!(
            "the model's first output is {}; the tool reads float32 or float16 scores",
            logits.elem_type().name()
        ),
    };
    let len = view.len();
    let rows = match view.shape().first() {
        Some(rows) if !whole => *rows,
        _ => 1,
    };
    if predictions.shape.is_empty() && predictions.classes.is_empty() {
        predictions.shape = view.shape().to_vec();
    }
    let view = view.into_shape_with_order((rows, len / rows.max(1)))?;
    predictions.width = len / rows.max(1);
    for row in view.outer_iter().take(valid) {
        if predictions.keep_values {
            predictions.values.extend(row.iter().copied());
        }
        let bad = row.iter().any(|v| !v.is_finite());
        predictions.nonfinite.push(bad);
        let class = if bad { usize::MAX } else { argmax(row) };
        predictions.classes.push(class);
        let runner_up = row
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != class)
            .map(|(_, v)| *v)
            .fold(f32::NEG_INFINITY, f32::max);
        predictions.margins.push(if bad || runner_up == f32::NEG_INFINITY {
            0.0
        } else {
            row[class] - runner_up
        });
    }
    Ok(())
}

/// Runs `model` over every batch; the prediction is the argmax of the first output (and its
/// values, with `keep_values`). With `observe`, also returns the per-batch values of those
/// tensors.
pub fn predict(
    engine: &Engine,
    model: &ModelProto,
    batches: &Batches,
    observe: &[String],
    keep_values: bool,
) -> Result<(Predictions, Vec<Vec<Value>>)> {
    let runner = prediction_runner(engine, model, batches, observe)?;
    let mut predictions = Predictions::with_capacity(batches.count, keep_values);
    let mut observed = Vec::new();
    for (inputs, valid) in &batches.batches {
        let (outputs, _) = runner.run(inputs.clone())?;
        push_predictions(&mut predictions, &outputs[0], *valid, batches.one_at_a_time)?;
        if !observe.is_empty() {
            observed.push(outputs[1..].to_vec());
        }
    }
    Ok((predictions, observed))
}

/// A session of `model` for `batches` whose outputs are the model's first output, then the
/// `observe` tensors.
pub fn prediction_runner(
    engine: &Engine,
    model: &ModelProto,
    batches: &Batches,
    observe: &[String],
) -> Result<Session> {
    let first_output = model
        .graph
        .as_ref()
        .and_then(|g| g.output.first())
        .map(|o| o.name().to_owned());
    let mut wanted: Vec<String> = first_output.into_iter().collect();
    wanted.extend(observe.iter().cloned());
    Ok(batches.session(engine, model, Outputs::Tensors(&wanted))?)
}

/// Clean values of tensors, per batch, computed on demand and kept, each with a tag that says
/// which version of the model computed it (a caller that changes the model changes the tags of
/// the tensors that change with it).
pub struct CleanValues {
    engine: Engine,
    values: Mutex<HashMap<String, Kept>>,
}

/// One tensor's kept values, per batch, and the tag of the model version that computed them.
struct Kept {
    tag: Vec<u32>,
    values: Vec<Value>,
}

/// Per batch: named input values of a (suffix) model.
pub type Feeds = Vec<Vec<(String, Value)>>;

impl CleanValues {
    /// An empty cache whose values `engine` computes.
    pub fn new(engine: &Engine) -> CleanValues {
        CleanValues {
            engine: engine.clone(),
            values: Default::default(),
        }
    }

    /// Per batch, the clean values of `names` in `model` (model inputs come from the data), computing
    /// and keeping those not seen yet with one clean run.
    pub fn boundary_values(&self, model: &ModelProto, names: &[String], batches: &Batches) -> Result<Feeds> {
        let untagged: Vec<(String, Vec<u32>)> = names.iter().map(|n| (n.clone(), Vec::new())).collect();
        self.refresh(model, &untagged, batches)?;
        Ok(self.values(names, batches))
    }

    /// Runs `model` over every batch for its predictions (with their values) and keeps, in
    /// the same run, the values of `names` (untagged), so that later suffix runs find them;
    /// unless they would take more than `budget` bytes over every batch (judged on the first
    /// batch), in which case none is kept and each is computed when first asked for.
    pub fn predict_and_keep(
        &self,
        model: &ModelProto,
        names: &[String],
        batches: &Batches,
        budget: usize,
    ) -> Result<Predictions> {
        let fresh: Vec<String> = names
            .iter()
            .filter(|n| !batches.input_names.contains(n))
            .cloned()
            .collect();
        let runner = prediction_runner(&self.engine, model, batches, &fresh)?;
        let whole = batches.one_at_a_time;
        let mut predictions = Predictions::with_capacity(batches.count, true);
        let mut kept: Vec<Vec<Value>> = vec![Vec::new(); fresh.len()];
        for (b, (inputs, valid)) in batches.batches.iter().enumerate() {
            let (outputs, _) = runner.run(inputs.clone())?;
            push_predictions(&mut predictions, &outputs[0], *valid, whole)?;
            if b == 0 {
                let bytes: usize = outputs[1..].iter().map(Value::bytes).sum();
                if bytes.saturating_mul(batches.batches.len()) > budget {
                    log::info!(
                        "clean values of {} tensors would take {} MB: computed when needed instead",
                        fresh.len(),
                        (bytes * batches.batches.len()) >> 20
                    );
                    let plain = prediction_runner(&self.engine, model, batches, &[])?;
                    for (inputs, valid) in &batches.batches[1..] {
                        let (outputs, _) = plain.run(inputs.clone())?;
                        push_predictions(&mut predictions, &outputs[0], *valid, whole)?;
                    }
                    return Ok(predictions);
                }
            }
            for (slot, value) in kept.iter_mut().zip(outputs.into_iter().skip(1)) {
                slot.push(value);
            }
        }
        let mut cache = self.values.lock().expect("no panic while holding the cache");
        for (name, values) in fresh.into_iter().zip(kept) {
            cache.insert(
                name,
                Kept {
                    tag: Vec::new(),
                    values,
                },
            );
        }
        Ok(predictions)
    }

    /// Of `wanted` (tensor names with tags), those not kept under that tag (model inputs are
    /// never stale: they come from the data).
    pub fn stale(&self, wanted: &[(String, Vec<u32>)], batches: &Batches) -> Vec<(String, Vec<u32>)> {
        stale_in(
            &self.values.lock().expect("no panic while holding the cache"),
            wanted,
            batches,
        )
    }

    /// Computes with one clean run of `model` the values of `wanted` that are stale, and keeps
    /// them under their tags (replacing what was kept under another). The cache stays locked
    /// meanwhile, so that threads asking for the same values compute them once.
    pub fn refresh(&self, model: &ModelProto, wanted: &[(String, Vec<u32>)], batches: &Batches) -> Result<()> {
        let mut cache = self.values.lock().expect("no panic while holding the cache");
        let missing = stale_in(&cache, wanted, batches);
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = missing.iter().map(|(n, _)| n.clone()).collect();
        let (_, observed) = predict(&self.engine, model, batches, &names, false)?;
        for (i, (name, tag)) in missing.into_iter().enumerate() {
            cache.insert(
                name,
                Kept {
                    tag,
                    values: observed.iter().map(|batch| batch[i].clone()).collect(),
                },
            );
        }
        Ok(())
    }

    /// Per batch, the values of `names`: model inputs from the data, the rest as kept (they
    /// must have been computed).
    pub fn values(&self, names: &[String], batches: &Batches) -> Feeds {
        let cache = self.values.lock().expect("no panic while holding the cache");
        (0..batches.batches.len())
            .map(|b| {
                names
                    .iter()
                    .map(|name| {
                        let value = match batches.input_names.iter().position(|n| n == name) {
                            Some(i) => batches.batches[b].0[i].clone(),
                            None => cache[name].values[b].clone(),
                        };
                        (name.clone(), value)
                    })
                    .collect()
            })
            .collect()
    }
}

/// Of `wanted`, those `cache` does not keep under that tag, each once.
fn stale_in(
    cache: &HashMap<String, Kept>,
    wanted: &[(String, Vec<u32>)],
    batches: &Batches,
) -> Vec<(String, Vec<u32>)> {
    let mut stale: Vec<(String, Vec<u32>)> = Vec::new();
    for (name, tag) in wanted {
        let kept = batches.input_names.contains(name) || cache.get(name).is_some_and(|kept| kept.tag == *tag);
        if !kept && !stale.iter().any(|(n, _)| n == name) {
            stale.push((name.clone(), tag.clone()));
        }
    }
    stale
}

/// A faulty model's predictions, or when the engine refuses to load or run it (a flipped scale
/// can put a quantized kernel "out of computation range"), `count` lost ones and `true`: a
/// fault that stops inference is a failed trial, not a failed campaign. Other errors pass.
pub fn faulty_or_refused(run: Result<Predictions>, count: usize, width: usize) -> Result<(Predictions, bool)> {
    match run {
        Ok(predictions) => Ok((predictions, false)),
        Err(e)
            if matches!(
                e.downcast_ref(),
                Some(EngineError::Load { .. } | EngineError::Run { .. })
            ) =>
        {
            log::warn!("a faulty model counts as failed: {e:#}");
            Ok((Predictions::lost(count, width), true))
        }
        Err(e) => Err(e),
    }
}

/// Predictions of `suffix` (whose output `output` is the model's first) fed per batch, with
/// their values when `keep_values`.
pub fn run_suffix(
    engine: &Engine,
    suffix: &ModelProto,
    feeds: &[Vec<(String, Value)>],
    batches: &Batches,
    output: usize,
    keep_values: bool,
) -> Result<Predictions> {
    let runner = engine.load_for_values(suffix, &feeds[0], Outputs::Model)?;
    let mut predictions = Predictions::with_capacity(batches.count, keep_values);
    for (feed, (_, valid)) in feeds.iter().zip(&batches.batches) {
        let outputs = runner.run_values(feed)?;
        push_predictions(&mut predictions, &outputs[output], *valid, batches.one_at_a_time)?;
    }
    Ok(predictions)
}

/// For every tensor name: the main-graph nodes that read it, directly or from inside their
/// subgraphs (where a subgraph's own initializers count
/// as read by the node that holds it).
pub fn readers(model: &ModelProto) -> HashMap<String, Vec<usize>> {
    use fitact_passes::graph::{attribute_graphs, free_variables};
    let mut readers: HashMap<String, Vec<usize>> = Default::default();
    let Some(graph) = model.graph.as_ref() else {
        return readers;
    };
    fn inner_initializers(g: &fitact_passes::onnx::GraphProto, out: &mut Vec<String>) {
        out.extend(g.initializer.iter().map(|t| t.name().to_owned()));
        for node in &g.node {
            if node.op_type() == "Constant" {
                out.extend(node.output.iter().cloned());
            }
            for attr in &node.attribute {
                for sub in attribute_graphs(attr) {
                    inner_initializers(sub, out);
                }
            }
        }
    }
    for (i, node) in graph.node.iter().enumerate() {
        let mut names: Vec<String> = node.input.clone();
        for attr in &node.attribute {
            for sub in attribute_graphs(attr) {
                names.extend(free_variables(sub));
                inner_initializers(sub, &mut names);
            }
        }
        // A Constant node's weights are named after its output: its readers read them.
        for name in names {
            let entry = readers.entry(name).or_default();
            if !entry.contains(&i) {
                entry.push(i);
            }
        }
    }
    readers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineKind;
    use ndarray::{ArrayD, IxDyn};

    #[test]
    fn float16_scores_are_read_widened_and_integer_ones_named() {
        let scores = [0.5f32, 3.0, -1.0, 7.0, 2.0, 1.0];
        let f16 = ArrayD::from_shape_vec(IxDyn(&[2, 3]), scores.map(half::f16::from_f32).to_vec()).unwrap();
        let mut predictions = Predictions::default();
        push_predictions(&mut predictions, &Value::from(f16), 2, false).unwrap();
        assert_eq!(predictions.classes, [1, 0]);
        assert_eq!(predictions.margins, [2.5, 5.0]);
        let u8s = ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![1u8, 2, 3]).unwrap();
        let error = push_predictions(&mut Predictions::default(), &Value::from(u8s), 1, false).unwrap_err();
        assert!(format!("{error:#}").contains("first output is uint8"), "{error:#}");
    }

    #[test]
    fn a_faulty_model_the_runtime_refuses_loses_every_sample_and_other_errors_pass() {
        let refused = EngineError::Run {
            engine: EngineKind::Onnxruntime,
            message: "out of computation range".into(),
        };
        let run = Err(anyhow::Error::from(refused).context("running the suffix"));
        let (lost, was_refused) = faulty_or_refused(run, 3, 10).unwrap();
        assert!(was_refused);
        assert_eq!(lost.classes, [usize::MAX; 3]);
        assert_eq!(lost.width, 10);
        let (kept, was_refused) = faulty_or_refused(Ok(Predictions::lost(1, 2)), 1, 2).unwrap();
        assert!(!was_refused && kept.classes.len() == 1);
        let unsupported = EngineError::Unsupported {
            engine: EngineKind::Tract,
            op: "Foo".into(),
            node: "n".into(),
        };
        assert!(faulty_or_refused(Err(unsupported.into()), 1, 2).is_err());
        assert!(faulty_or_refused(Err(anyhow::anyhow!("a bug")), 1, 2).is_err());
    }
}
