//! Calibration: run samples through the engine and record, in one pass, the maximum of every
//! observed activation per neuron (every non-batch element), and its minimum too when the
//! activation can be negative. Per-channel and per-layer maxima
//! are reductions of the per-neuron one (`bounds`), so nothing else needs to be kept. On
//! request (`CalibrateOptions::top`, for the bound search), it also keeps each neuron's `top`
//! largest values, whose smallest is a per-neuron percentile that ignores a few outliers.
//!
//! Activations inside `If` branches are observed too: the enclosing graph exposes the
//! condition and the tensors the branches read, and the branch the condition selects runs as
//! a model of its own (`extract_branch`) on those values, to any depth. So are activations in
//! the body of a `Loop`: the enclosing graph exposes the trip count, the condition, the initial
//! loop-carried values and what the body reads, and the body runs as a model once per
//! iteration (tract has no `Loop`, and no engine exposes a body's tensors), its maxima taken
//! over every iteration.

use crate::data::dataset::Samples;
use crate::engine::{ElemType, Engine, EngineError, Outputs, Session, Value};
use fitact_passes::activations::ActivationSite;
use fitact_passes::extract_branch::extract_branch;
use fitact_passes::graph::{GraphPath, SubgraphStep};
use fitact_passes::onnx::ModelProto;
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::ArrayD;
use std::collections::HashMap;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CalibrateError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("tensor '{tensor}' is {found}, expected float32, float16 or 8-bit integer activations")]
    NotFloat { tensor: String, found: String },
    #[error(
        "tensor '{tensor}' has shape {found:?} in one batch and {expected:?} in another; bounds need a fixed per-sample shape"
    )]
    ShapeChanged {
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor '{tensor}' has shape {shape:?}, whose first axis is not the batch of {batch}")]
    NoBatchAxis {
        tensor: String,
        shape: Vec<usize>,
        batch: usize,
    },
    #[error("{site}: only If branches and Loop bodies can be calibrated, not the body of a {op}")]
    UnsupportedSubgraph { site: String, op: String },
    #[error(
        "{site} never ran on the calibration samples (its If branch was never taken), so it has no bound; calibrate with samples that take that branch, or leave it unbounded with --unreached keep"
    )]
    NeverRan { site: String },
    #[error("{op} node '{node}': its condition is not a boolean scalar")]
    BadCondition { op: &'static str, node: String },
    #[error("Loop node '{node}': {reason}")]
    BadLoop { node: String, reason: String },
    #[error("{0}")]
    Graph(#[from] fitact_passes::PassError),
}

/// The per-neuron maximum (and, for activations that can go negative, minimum) of one
/// activation tensor over all samples.
#[derive(Debug, Clone)]
pub struct ActivationMax {
    pub tensor: String,
    /// Shape of one sample's activation (the tensor's shape without the batch axis).
    pub shape: Vec<usize>,
    pub neuron_max: ArrayD<f32>,
    /// Kept only for activations that are not `nonnegative`, which get two-sided bounds.
    pub neuron_min: Option<ArrayD<f32>>,
    /// How many NaN or infinite values the clean samples produced (should be 0).
    pub nonfinite: usize,
    /// With `CalibrateOptions::top`: per neuron, its largest values, in descending order
    /// (neuron-major, the same number per neuron).
    pub neuron_top: Option<Vec<f32>>,
    /// The activation's element type (float32, float16, or an integer one in a quantized
    /// model): its bounds are stored in it.
    pub elem: ElemType,
}

impl ActivationMax {
    /// Per neuron, the `rank`-th largest value over the samples (1: the maximum), or the
    /// smallest kept if fewer were kept; the maximum when none were.
    pub fn neuron_percentile(&self, rank: usize) -> ArrayD<f32> {
        let Some(values) = &self.neuron_top else {
            return self.neuron_max.clone();
        };
        let kept = values.len() / self.neuron_max.len().max(1);
        let rank = rank.clamp(1, kept.max(1));
        let kth = values.chunks_exact(kept.max(1)).map(|top| top[rank - 1]).collect();
        ArrayD::from_shape_vec(self.neuron_max.shape(), kth).expect("one value per neuron")
    }
}

#[derive(Debug, Clone)]
pub struct Calibration {
    pub samples: usize,
    pub batch_size: usize,
    /// One entry per requested site, in the same order.
    pub activations: Vec<ActivationMax>,
}

impl Calibration {
    /// Adds the extremes of another calibration of the same sites (other samples), and the
    /// largest values of both where they were kept: the largest `k` of the union are among
    /// the largest `k` of each part, so the merged ones are exact.
    pub fn merge(&mut self, other: Calibration) {
        self.samples += other.samples;
        for (mine, theirs) in self.activations.iter_mut().zip(other.activations) {
            mine.neuron_max.zip_mut_with(&theirs.neuron_max, |a, b| *a = a.max(*b));
            if let (Some(a), Some(b)) = (mine.neuron_min.as_mut(), theirs.neuron_min) {
                a.zip_mut_with(&b, |x, y| *x = x.min(*y));
            }
            if let (Some(a), Some(b)) = (mine.neuron_top.as_mut(), theirs.neuron_top) {
                let neurons = mine.neuron_max.len().max(1);
                let (k_mine, k_theirs) = (a.len() / neurons, b.len() / neurons);
                for (top, other) in a.chunks_exact_mut(k_mine.max(1)).zip(b.chunks_exact(k_theirs.max(1))) {
                    other.iter().for_each(|v| insert_descending(top, *v));
                }
            }
            mine.nonfinite += theirs.nonfinite;
        }
    }
}

pub struct CalibrateOptions {
    pub engine: Engine,
    pub batch_size: usize,
    pub progress: bool,
    /// Per neuron, also keep this many largest values (0: only the maximum). At most the
    /// number of samples.
    pub top: usize,
}

/// How many largest values per neuron make the `percentile` of `samples` values: the
/// smallest of them is that percentile (at least the 2nd largest, at most every sample).
pub fn top_for(percentile: f64, samples: usize) -> usize {
    (((1.0 - percentile) * samples as f64).ceil() as usize)
        .max(2)
        .min(samples.max(1))
}

/// Runs every sample through `model` and returns the per-neuron maxima of the output of
/// every site, in the order given; a site that never ran (an `If` branch no sample takes) is
/// an error (`NeverRan`).
pub fn calibrate(
    model: &ModelProto,
    samples: &Samples,
    sites: &[ActivationSite],
    options: &CalibrateOptions,
) -> Result<Calibration, CalibrateError> {
    let partial = calibrate_reached(model, samples, sites, options)?;
    let activations = partial
        .activations
        .into_iter()
        .zip(sites)
        .map(|(m, site)| m.ok_or_else(|| CalibrateError::NeverRan { site: site.describe() }))
        .collect::<Result<_, _>>()?;
    Ok(Calibration {
        samples: partial.samples,
        batch_size: partial.batch_size,
        activations,
    })
}

/// A calibration in which some sites may never have run (`None`: no sample reached them).
#[derive(Debug, Clone)]
pub struct ReachedCalibration {
    pub samples: usize,
    pub batch_size: usize,
    /// One entry per requested site, in the same order.
    pub activations: Vec<Option<ActivationMax>>,
}

impl ReachedCalibration {
    /// The indices of the sites no sample reached.
    pub fn unreached(&self) -> Vec<usize> {
        (0..self.activations.len())
            .filter(|i| self.activations[*i].is_none())
            .collect()
    }

    /// The calibration of the sites not in `dropped` (which holds every unreached one).
    pub fn without(self, dropped: &[usize]) -> Calibration {
        let activations = self
            .activations
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !dropped.contains(i))
            .map(|(_, m)| m.expect("every site left was reached"))
            .collect();
        Calibration {
            samples: self.samples,
            batch_size: self.batch_size,
            activations,
        }
    }
}

/// `calibrate`, leaving the sites no sample reached as `None` instead of failing.
pub fn calibrate_reached(
    model: &ModelProto,
    samples: &Samples,
    sites: &[ActivationSite],
    options: &CalibrateOptions,
) -> Result<ReachedCalibration, CalibrateError> {
    let indexed: Vec<(usize, ActivationSite)> = sites.iter().cloned().enumerate().collect();
    let mut main = GraphObserver::build(model.clone(), &indexed, &options.engine)?;
    let runner = samples.session(
        &options.engine,
        model,
        options.batch_size,
        Outputs::Tensors(&main.outputs),
    )?;
    let batch_size = runner.batch_size(samples.run_size(options.batch_size));
    let progress = if options.progress && samples.count > 4 * batch_size {
        ProgressBar::new(samples.count as u64).with_style(
            ProgressStyle::with_template("calibrating {bar:30} {pos}/{len} samples, {eta} left")
                .expect("valid template"),
        )
    } else {
        ProgressBar::hidden()
    };

    let mut maxima: Vec<Slot> = sites
        .iter()
        .map(|site| Slot {
            track_min: !site.nonnegative,
            top: options.top.min(samples.count),
            value: None,
        })
        .collect();
    for start in (0..samples.count).step_by(batch_size) {
        let end = (start + batch_size).min(samples.count);
        let (outputs, _) = runner.run(samples.slice(start, end))?;
        // A fixed-batch model pads a short batch with copies of its last sample: the maxima
        // are unchanged, so every row is folded.
        main.observe(&outputs, runner.batch_size(end - start), &mut maxima)?;
        progress.inc((end - start) as u64);
    }
    progress.finish_and_clear();
    Ok(ReachedCalibration {
        samples: samples.count,
        batch_size,
        activations: maxima.into_iter().map(|m| m.value).collect(),
    })
}

/// One graph to observe: the main graph, or an `If` branch extracted as a model.
struct GraphObserver {
    model: ModelProto,
    /// (site index, tensor) for the sites directly in this graph.
    sites: Vec<(usize, String)>,
    ifs: Vec<IfObserver>,
    loops: Vec<LoopObserver>,
    /// What a run of this graph returns: the site tensors, then each If's condition and the
    /// tensors its observed branches read, each Loop's inputs and what its body reads, and
    /// last the graph's own outputs when it is a Loop body (`carried`).
    outputs: Vec<String>,
    /// A Loop body: how many of `outputs`, at the end, are the body's outputs.
    carried: usize,
    /// Sessions by input types and shapes (branches only: their inputs are concrete tensors).
    runners: HashMap<Vec<(ElemType, Vec<usize>)>, Session>,
    engine: Engine,
}

/// A `Loop` whose body holds sites.
struct LoopObserver {
    node: String,
    /// The trip count and condition inputs ("" when absent) and the initial carried values.
    trip: String,
    condition: String,
    initial: Vec<String>,
    /// The body as a model; its inputs are the iteration number, the condition, the carried
    /// values, then `free_inputs`.
    body: Box<GraphObserver>,
    body_inputs: Vec<String>,
    free_inputs: Vec<String>,
}

/// Most iterations a calibrated Loop may run (a guard against a loop that never ends).
const MAX_ITERATIONS: i64 = 100_000;

struct IfObserver {
    node: String,
    condition: String,
    /// then_branch and else_branch, when they hold sites: the observer and its inputs.
    branches: [Option<(GraphObserver, Vec<String>)>; 2],
}

impl GraphObserver {
    /// `sites` carry paths relative to this graph.
    fn build(model: ModelProto, sites: &[(usize, ActivationSite)], engine: &Engine) -> Result<Self, CalibrateError> {
        let mut direct = Vec::new();
        let mut nested: Vec<(usize, Vec<(usize, ActivationSite)>)> = Vec::new();
        for (index, site) in sites {
            match site.graph.0.first() {
                None => direct.push((*index, site.output.clone())),
                Some(step) => match nested.iter_mut().find(|(node, _)| *node == step.node) {
                    Some((_, group)) => group.push((*index, site.clone())),
                    None => nested.push((step.node, vec![(*index, site.clone())])),
                },
            }
        }
        let graph = model.graph.as_ref().ok_or(fitact_passes::PassError::NoGraph)?;
        let mut ifs = Vec::new();
        let mut loops = Vec::new();
        for (node_index, group) in nested {
            let node = &graph.node[node_index];
            if node.op_type() == "Loop" {
                loops.push(LoopObserver::build(&model, node_index, &group, engine)?);
                continue;
            }
            if node.op_type() != "If" {
                return Err(CalibrateError::UnsupportedSubgraph {
                    site: group[0].1.describe(),
                    op: node.op_type().to_owned(),
                });
            }
            let mut branches: [Option<(GraphObserver, Vec<String>)>; 2] = [None, None];
            for (slot, attribute) in ["then_branch", "else_branch"].iter().enumerate() {
                let Some(attr_index) = node.attribute.iter().position(|a| a.name() == *attribute) else {
                    continue;
                };
                let inner: Vec<(usize, ActivationSite)> = group
                    .iter()
                    .filter(|(_, s)| s.graph.0[0].attribute == attr_index)
                    .map(|(i, s)| {
                        let mut relative = s.clone();
                        relative.graph = GraphPath(s.graph.0[1..].to_vec());
                        (*i, relative)
                    })
                    .collect();
                if inner.is_empty() {
                    continue;
                }
                let step = SubgraphStep {
                    node: node_index,
                    attribute: attr_index,
                    graph: 0,
                    label: String::new(),
                };
                let extracted = extract_branch(&model, &GraphPath(vec![step]))?;
                branches[slot] = Some((
                    GraphObserver::build(extracted.model, &inner, engine)?,
                    extracted.free_inputs,
                ));
            }
            ifs.push(IfObserver {
                node: node.name().to_owned(),
                condition: node.input[0].clone(),
                branches,
            });
        }
        let mut outputs: Vec<String> = direct.iter().map(|(_, t)| t.clone()).collect();
        for observer in &ifs {
            let reads = observer.branches.iter().flatten().flat_map(|(_, inputs)| inputs.iter());
            for name in std::iter::once(&observer.condition).chain(reads) {
                if !outputs.contains(name) {
                    outputs.push(name.clone());
                }
            }
        }
        for observer in &loops {
            let inputs = [&observer.trip, &observer.condition]
                .into_iter()
                .chain(&observer.initial);
            for name in inputs.chain(&observer.free_inputs).filter(|n| !n.is_empty()) {
                if !outputs.contains(name) {
                    outputs.push(name.clone());
                }
            }
        }
        Ok(GraphObserver {
            model,
            sites: direct,
            ifs,
            loops,
            outputs,
            carried: 0,
            runners: HashMap::new(),
            engine: engine.clone(),
        })
    }

    /// Folds one run's outputs (in `self.outputs` order) into the maxima, then runs the
    /// branches the conditions select.
    fn observe(&mut self, values: &[Value], batch: usize, maxima: &mut [Slot]) -> Result<(), CalibrateError> {
        for ((index, tensor), value) in self.sites.iter().zip(values) {
            fold_max(&mut maxima[*index], tensor, value, batch)?;
        }
        let by_name: HashMap<&str, &Value> = self.outputs.iter().map(String::as_str).zip(values).collect();
        for observer in &mut self.ifs {
            let condition =
                by_name[observer.condition.as_str()]
                    .scalar_bool()
                    .ok_or_else(|| CalibrateError::BadCondition {
                        op: "If",
                        node: observer.node.clone(),
                    })?;
            let Some((branch, inputs)) = &mut observer.branches[if condition { 0 } else { 1 }] else {
                continue;
            };
            let feed: Vec<(String, Value)> = inputs
                .iter()
                .map(|n| (n.clone(), by_name[n.as_str()].clone()))
                .collect();
            branch.run(&feed, batch, maxima)?;
        }
        for observer in &mut self.loops {
            observer.run(&by_name, batch, maxima)?;
        }
        Ok(())
    }

    /// Runs this graph (a branch or a Loop body) on `feed`, folds what it observes, and
    /// returns the body's outputs (nothing for a branch).
    fn run(
        &mut self,
        feed: &[(String, Value)],
        batch: usize,
        maxima: &mut [Slot],
    ) -> Result<Vec<Value>, CalibrateError> {
        let key: Vec<(ElemType, Vec<usize>)> = feed.iter().map(|(_, v)| (v.elem_type(), v.shape().to_vec())).collect();
        if !self.runners.contains_key(&key) {
            let runner = self
                .engine
                .load_for_values(&self.model, feed, Outputs::Tensors(&self.outputs))?;
            self.runners.insert(key.clone(), runner);
        }
        let outputs = self.runners[&key].run_values(feed)?;
        self.observe(&outputs, batch, maxima)?;
        Ok(outputs[outputs.len() - self.carried..].to_vec())
    }
}

impl LoopObserver {
    fn build(
        model: &ModelProto,
        node_index: usize,
        group: &[(usize, ActivationSite)],
        engine: &Engine,
    ) -> Result<Self, CalibrateError> {
        let node = &model.graph.as_ref().ok_or(fitact_passes::PassError::NoGraph)?.node[node_index];
        let bad = |reason: &str| CalibrateError::BadLoop {
            node: node.name().to_owned(),
            reason: reason.to_owned(),
        };
        let attr_index = node
            .attribute
            .iter()
            .position(|a| a.name() == "body")
            .ok_or_else(|| bad("it has no body"))?;
        let inner: Vec<(usize, ActivationSite)> = group
            .iter()
            .map(|(i, s)| {
                let mut relative = s.clone();
                relative.graph = GraphPath(s.graph.0[1..].to_vec());
                (*i, relative)
            })
            .collect();
        let step = SubgraphStep {
            node: node_index,
            attribute: attr_index,
            graph: 0,
            label: String::new(),
        };
        let extracted = extract_branch(model, &GraphPath(vec![step]))?;
        let body_graph = extracted
            .model
            .graph
            .as_ref()
            .ok_or(fitact_passes::PassError::NoGraph)?;
        let declared = body_graph.input.len() - extracted.free_inputs.len();
        let body_inputs: Vec<String> = body_graph.input[..declared]
            .iter()
            .map(|i| i.name().to_owned())
            .collect();
        let body_outputs: Vec<String> = body_graph.output.iter().map(|o| o.name().to_owned()).collect();
        let initial: Vec<String> = node.input.iter().skip(2).cloned().collect();
        if body_inputs.len() != initial.len() + 2 || body_outputs.len() < initial.len() + 1 {
            return Err(bad(
                "its body's inputs and outputs do not match its loop-carried values",
            ));
        }
        let mut body = GraphObserver::build(extracted.model.clone(), &inner, engine)?;
        body.carried = body_outputs.len();
        body.outputs.extend(body_outputs);
        Ok(LoopObserver {
            node: node.name().to_owned(),
            trip: node.input.first().cloned().unwrap_or_default(),
            condition: node.input.get(1).cloned().unwrap_or_default(),
            initial,
            body: Box::new(body),
            body_inputs,
            free_inputs: extracted.free_inputs,
        })
    }

    /// Runs the body once per iteration on the values of the enclosing graph's run.
    fn run(&mut self, values: &HashMap<&str, &Value>, batch: usize, maxima: &mut [Slot]) -> Result<(), CalibrateError> {
        let bad = |reason: String| CalibrateError::BadLoop {
            node: self.node.clone(),
            reason,
        };
        let trip = match self.trip.as_str() {
            "" => None,
            name => Some(
                values[name]
                    .scalar_i64()
                    .ok_or_else(|| bad("its trip count is not an int64 scalar".into()))?,
            ),
        };
        let mut condition = match self.condition.as_str() {
            "" => true,
            name => values[name].scalar_bool().ok_or_else(|| CalibrateError::BadCondition {
                op: "Loop",
                node: self.node.clone(),
            })?,
        };
        let limit = trip.unwrap_or(MAX_ITERATIONS);
        if trip.is_none() && self.condition.is_empty() {
            return Err(bad("it has neither a trip count nor a condition".into()));
        }
        if limit > MAX_ITERATIONS {
            return Err(bad(format!(
                "{limit} iterations; calibration runs at most {MAX_ITERATIONS}"
            )));
        }
        let mut carried: Vec<Value> = self.initial.iter().map(|n| values[n.as_str()].clone()).collect();
        let free: Vec<(String, Value)> = self
            .free_inputs
            .iter()
            .map(|n| (n.clone(), values[n.as_str()].clone()))
            .collect();
        let mut iteration = 0i64;
        while iteration < limit && condition {
            let mut feed: Vec<(String, Value)> = vec![
                (self.body_inputs[0].clone(), Value::scalar(iteration)),
                (self.body_inputs[1].clone(), Value::scalar(condition)),
            ];
            feed.extend(self.body_inputs[2..].iter().cloned().zip(carried.iter().cloned()));
            feed.extend(free.iter().cloned());
            let outputs = self.body.run(&feed, batch, maxima)?;
            condition = outputs[0].scalar_bool().ok_or_else(|| CalibrateError::BadCondition {
                op: "Loop",
                node: self.node.clone(),
            })?;
            carried = outputs[1..=carried.len()].to_vec();
            iteration += 1;
        }
        if trip.is_none() && condition {
            return Err(bad(format!(
                "its condition still holds after {MAX_ITERATIONS} iterations"
            )));
        }
        Ok(())
    }
}

/// What calibration has folded so far for one site.
struct Slot {
    track_min: bool,
    top: usize,
    value: Option<ActivationMax>,
}

/// Inserts `v` into the descending `top` if it is larger than its smallest (NaN never is).
fn insert_descending(top: &mut [f32], v: f32) {
    let last = top.len() - 1;
    if v.is_nan() || v <= top[last] {
        return;
    }
    let mut i = last;
    while i > 0 && top[i - 1] < v {
        top[i] = top[i - 1];
        i -= 1;
    }
    top[i] = v;
}

/// Folds one batch of an activation into its per-neuron maximum (and minimum).
fn fold_max(slot: &mut Slot, tensor: &str, value: &Value, batch: usize) -> Result<(), CalibrateError> {
    let widened;
    let view = match value.view::<f32>() {
        Some(view) => view,
        None => {
            widened = value.widened_f32().map_err(|found| CalibrateError::NotFloat {
                tensor: tensor.to_owned(),
                found,
            })?;
            widened.view()
        }
    };
    let shape = view.shape();
    if shape.first() != Some(&batch) {
        return Err(CalibrateError::NoBatchAxis {
            tensor: tensor.to_owned(),
            shape: shape.to_vec(),
            batch,
        });
    }
    let (track_min, top) = (slot.track_min, slot.top);
    let acc = slot.value.get_or_insert_with(|| ActivationMax {
        tensor: tensor.to_owned(),
        shape: shape[1..].to_vec(),
        neuron_max: ArrayD::from_elem(&shape[1..], f32::NEG_INFINITY),
        neuron_min: track_min.then(|| ArrayD::from_elem(&shape[1..], f32::INFINITY)),
        nonfinite: 0,
        neuron_top: (top > 0).then(|| vec![f32::NEG_INFINITY; shape[1..].iter().product::<usize>() * top]),
        elem: value.elem_type(),
    });
    if acc.shape != shape[1..] {
        return Err(CalibrateError::ShapeChanged {
            tensor: tensor.to_owned(),
            expected: acc.shape.clone(),
            found: shape[1..].to_vec(),
        });
    }
    // Written over plain slices, branch-free, so that it vectorizes: it runs on every
    // activation value of every sample (about 5% of an inference pass). The minimum, when
    // kept, is folded in the same pass over the values.
    let copied;
    let data = match view.as_slice() {
        Some(data) => data,
        None => {
            copied = view.iter().copied().collect::<Vec<f32>>();
            &copied
        }
    };
    let per_sample = acc.neuron_max.len();
    let maxima = acc
        .neuron_max
        .as_slice_mut()
        .expect("a new array has the standard layout");
    let nonfinite_in = |v: f32| u32::from(v.to_bits() & 0x7f80_0000 == 0x7f80_0000);
    match acc.neuron_min.as_mut() {
        None => {
            for row in data.chunks_exact(per_sample) {
                let mut nonfinite = 0u32;
                for (m, &v) in maxima.iter_mut().zip(row) {
                    *m = if v > *m { v } else { *m };
                    nonfinite += nonfinite_in(v);
                }
                acc.nonfinite += nonfinite as usize;
            }
        }
        Some(minima) => {
            let minima = minima.as_slice_mut().expect("a new array has the standard layout");
            for row in data.chunks_exact(per_sample) {
                let mut nonfinite = 0u32;
                for ((high, low), &v) in maxima.iter_mut().zip(minima.iter_mut()).zip(row) {
                    *high = if v > *high { v } else { *high };
                    *low = if v < *low { v } else { *low };
                    nonfinite += nonfinite_in(v);
                }
                acc.nonfinite += nonfinite as usize;
            }
        }
    }
    if let Some(kept) = acc.neuron_top.as_mut() {
        for row in data.chunks_exact(per_sample) {
            for (top, &v) in kept.chunks_exact_mut(top).zip(row) {
                insert_descending(top, v);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_largest_values_in_descending_order_ignoring_nan() {
        let mut top = vec![f32::NEG_INFINITY; 3];
        for v in [1.0, 5.0, f32::NAN, 3.0, 4.0, 2.0, 5.0] {
            insert_descending(&mut top, v);
        }
        assert_eq!(top, vec![5.0, 5.0, 4.0]);
    }

    #[test]
    fn merged_largest_values_are_those_of_the_union() {
        let part = |values: &[f32], k: usize| {
            let mut top = vec![f32::NEG_INFINITY; k];
            values.iter().for_each(|v| insert_descending(&mut top, *v));
            Calibration {
                samples: values.len(),
                batch_size: 1,
                activations: vec![ActivationMax {
                    tensor: "t".into(),
                    shape: vec![1],
                    neuron_max: ArrayD::from_elem(vec![1], values.iter().copied().fold(f32::MIN, f32::max)),
                    neuron_min: None,
                    nonfinite: 0,
                    neuron_top: Some(top),
                    elem: ElemType::F32,
                }],
            }
        };
        // The union's 3 largest come mostly from the first part.
        let mut merged = part(&[9.0, 1.0, 8.0, 7.0, 2.0], 3);
        merged.merge(part(&[3.0, 10.0], 3));
        let activation = &merged.activations[0];
        assert_eq!(activation.neuron_top.as_deref(), Some(&[10.0, 9.0, 8.0][..]));
        assert_eq!(activation.neuron_percentile(3).as_slice().unwrap(), &[8.0]);
        assert_eq!(activation.neuron_percentile(1).as_slice().unwrap(), &[10.0]);
        assert_eq!(
            activation.neuron_percentile(9).as_slice().unwrap(),
            &[8.0],
            "clamped to what was kept"
        );
        assert_eq!(merged.samples, 7);
    }

    #[test]
    fn the_percentile_keeps_enough_values() {
        assert_eq!(top_for(0.99, 384), 4);
        assert_eq!(top_for(0.99, 512), 6);
        assert_eq!(top_for(0.99, 10), 2);
        assert_eq!(top_for(0.99, 1), 1);
        assert_eq!(top_for(0.5, 7), 4);
    }
}
