//! `inspect`: what the tool sees in a model before it changes anything: every activation, by
//! kind and form (the opt-in sites too: logits, int8 linear conv outputs), whether
//! `--activations` would bound it, its shape (as tract infers it), and
//! where the weights live.

use crate::model_io::read_model;
use anyhow::{Context, Result};
use fitact_passes::activations::{ActivationKind, default_kinds};
use fitact_passes::graph::{default_opset, for_each_graph};
use fitact_passes::quantized_activations::sites_of;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub model: String,
    pub ir_version: i64,
    pub opset: Option<i64>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// The kinds `--activations` selects.
    pub selected: Vec<String>,
    pub activations: Vec<ActivationInfo>,
    pub weights: WeightsInfo,
    /// Why shapes are missing, if tract could not analyse the model.
    pub shape_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ActivationInfo {
    pub kind: &'static str,
    /// The operator, or the decomposed form matched.
    pub form: &'static str,
    /// Whether `harden --activations` (as given to inspect) bounds it.
    pub bounded: bool,
    pub node: String,
    pub graph: String,
    pub input: String,
    pub output: String,
    /// As tract infers it, e.g. `N,32,14,14`; `None` when unknown.
    pub shape: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct WeightsInfo {
    pub initializers: usize,
    pub initializer_elements: u64,
    pub external_initializers: usize,
    pub constant_nodes: usize,
    pub constant_elements: u64,
}

fn elements(dims: &[i64]) -> u64 {
    dims.iter().map(|d| (*d).max(0) as u64).product()
}

/// What `path` holds; `kinds` as harden's `--activations` (None: its default for the model).
pub fn inspect(path: &Path, kinds: Option<&[ActivationKind]>) -> Result<Inspection> {
    let file = read_model(path).context("reading the model")?;
    let model = &file.model;
    let kinds = kinds.map_or_else(|| default_kinds(model), <[ActivationKind]>::to_vec);
    let mut weights = WeightsInfo::default();
    for_each_graph(model, |_, graph| {
        weights.initializers += graph.initializer.len();
        weights.initializer_elements += graph.initializer.iter().map(|t| elements(&t.dims)).sum::<u64>();
        for node in graph.node.iter().filter(|n| n.op_type() == "Constant") {
            weights.constant_nodes += 1;
            weights.constant_elements += node
                .attribute
                .iter()
                .filter_map(|a| a.t.as_ref())
                .map(|t| elements(&t.dims))
                .sum::<u64>();
        }
    });
    weights.external_initializers = file.external_tensors.len();

    let (shapes, shape_error) = match crate::engine::tract::tensor_shapes(model) {
        Ok(shapes) => (shapes, None),
        Err(e) => (Default::default(), Some(format!("{e:#}"))),
    };
    // The opt-in kinds too (logits, linear conv outputs), so a user sees what naming them adds.
    let every: Vec<ActivationKind> = ActivationKind::every().collect();
    let activations = sites_of(model, &every)
        .into_iter()
        .map(|site| ActivationInfo {
            kind: site.kind.op_type(),
            form: site.form,
            bounded: kinds.contains(&site.kind),
            node: site.stem().to_owned(),
            graph: site.graph.to_string(),
            shape: site
                .graph
                .is_main()
                .then(|| shapes.get(&site.output).cloned())
                .flatten(),
            input: site.input,
            output: site.output,
        })
        .collect();
    let graph = model.graph.as_ref();
    Ok(Inspection {
        model: path.display().to_string(),
        ir_version: model.ir_version(),
        opset: default_opset(model).ok(),
        inputs: crate::engine::model_input_names(model),
        outputs: graph
            .iter()
            .flat_map(|g| g.output.iter().map(|o| o.name().to_owned()))
            .collect(),
        selected: kinds.iter().map(|k| k.cli_name()).collect(),
        activations,
        weights,
        shape_error,
    })
}

impl Inspection {
    pub fn to_text(&self) -> String {
        let mut t = format!(
            "{}: IR {}, opset {}, inputs {:?}, outputs {:?}\n",
            self.model,
            self.ir_version,
            self.opset.map_or("none".into(), |o| o.to_string()),
            self.inputs,
            self.outputs
        );
        let w = &self.weights;
        t += &format!(
            "weights: {} initializers ({} values, {} in external data), {} Constant nodes ({} values)\n",
            w.initializers, w.initializer_elements, w.external_initializers, w.constant_nodes, w.constant_elements
        );
        t += &format!(
            "{} site(s), {} bounded with --activations {} (*):\n",
            self.activations.len(),
            self.activations.iter().filter(|a| a.bounded).count(),
            self.selected.join(",")
        );
        for r in &self.activations {
            let kind = if r.form == r.kind {
                r.kind.to_owned()
            } else {
                format!("{} ({})", r.kind, r.form)
            };
            t += &format!(
                "{} {:<32} {:<12} {} -> {}  [{}]{}\n",
                if r.bounded { "*" } else { " " },
                r.node,
                kind,
                r.input,
                r.output,
                r.shape.as_deref().unwrap_or("?"),
                if r.graph == "main" {
                    String::new()
                } else {
                    format!("  in {}", r.graph)
                }
            );
        }
        if let Some(e) = &self.shape_error {
            t += &format!("shapes unavailable: {e}\n");
        }
        t
    }
}
