//! `harden --max-overhead`: the pipeline's bounds, handed to the budget stage (`budget`) as
//! forms it can choose per activation, and the model written with the forms it chose.
//!
//! The forms offered: `Full`, the bounds and form asked for (method, granularity, mode,
//! emission); `Cheap`, the same granularity in saturate mode (with the `fold` emissions, a
//! per-channel bound on a Relu after a convolution is folded into the weights around it and
//! becomes `Clip(0, 1)`, which runtimes fuse into the convolution: close to free, and as tight
//! as the full form's bounds), offered where it adds fewer element-wise passes than the full
//! form; `Unbounded`. A model with some sites in each form is bounded in two
//! runs of `bound_model` (one per mode); the second finds its sites again by their output
//! tensors, since the first run moved the node indices.

use crate::budget::{self, BudgetOptions, BudgetReport, Form, FormInfo, Site};
use crate::engine::ElemType;
use crate::harden::bounds::site_granularities;
use crate::harden::calibrate::Calibration;
use crate::harden::method::{EmissionName, ModeName};
use crate::harden::pipeline::{BoundRule, Bounded, bound_model};
use anyhow::{Context, Result};
use fitact_passes::activations::{ActivationSite, find_sites};
use fitact_passes::bound_activations::{Applied, Bound};
use fitact_passes::graph::graph_at;
use fitact_passes::onnx::ModelProto;

/// What `--max-overhead` adds to the harden options.
#[derive(Debug, Clone)]
pub struct BudgetSettings {
    pub options: BudgetOptions,
    /// Labels of the calibration samples: resilience is then accuracy, not agreement.
    pub labels: Option<std::path::PathBuf>,
    /// The campaigns run on the first this many calibration samples.
    pub samples: usize,
    /// What the labels file may take in memory (`--max-data-memory`).
    pub data_cap: crate::data::cap::DataCap,
}

/// The bounds of each form, per site, and how each form is emitted.
pub struct Forms<'a> {
    pub original: &'a ModelProto,
    pub sites: &'a [ActivationSite],
    pub full: Vec<Bound>,
    pub mode: ModeName,
    pub emission: EmissionName,
    /// The type each site's activation is stored in (integer sites are bounded in integers).
    pub elems: Vec<ElemType>,
    /// Bounds for the saturate form (None when it is the full form).
    pub cheap: Option<Vec<Bound>>,
}

/// A model with some sites in each form: what each run of the pass bounded.
pub struct Built {
    pub model: ModelProto,
    /// (site index, what was bounded) per bounded site, in site order.
    pub bounded: Vec<(usize, Bounded)>,
}

impl Forms<'_> {
    /// The bounds for `rule`'s sites: the full ones given, and bounds at the same granularity
    /// in saturate mode from the same calibration, unless that is the full form already.
    pub fn new<'a>(
        original: &'a ModelProto,
        rule: &BoundRule<'a>,
        full: Vec<Bound>,
        calibration: &Calibration,
        emission: EmissionName,
    ) -> Forms<'a> {
        // A model with sites in both forms is bounded in two runs, and the second finds its
        // sites again by their outputs: an integer site's output moves to its bound node, so
        // models with integer sites are offered the full form or none.
        let integer = calibration
            .activations
            .iter()
            .any(|a| matches!(a.elem, ElemType::U8 | ElemType::I8));
        let cheap = (rule.mode != ModeName::Saturate && !integer).then(|| {
            BoundRule {
                sites: rule.sites,
                granularity: rule.granularity,
                margin: rule.margin,
                mode: ModeName::Saturate,
            }
            .bounds(&calibration.activations, None)
        });
        Forms {
            original,
            sites: rule.sites,
            full,
            mode: rule.mode,
            emission,
            elems: calibration.activations.iter().map(|a| a.elem).collect(),
            cheap,
        }
    }

    /// The original with each site in its form: the full ones first, then the cheap ones
    /// (their sites found again in the rewritten model).
    pub fn build(&self, forms: &[Form]) -> Result<Built> {
        let mut model = self.original.clone();
        let mut bounded = Vec::new();
        let full: Vec<usize> = (0..forms.len()).filter(|i| forms[*i] == Form::Full).collect();
        if !full.is_empty() {
            let sites: Vec<ActivationSite> = full.iter().map(|i| self.sites[*i].clone()).collect();
            let bounds = full.iter().map(|i| self.full[*i].clone()).collect();
            let elems = self.elems_of(&full);
            let done = bound_model(&mut model, &sites, bounds, self.mode, self.emission, &elems)?;
            bounded.extend(split(&full, done));
        }
        let cheap: Vec<usize> = (0..forms.len()).filter(|i| forms[*i] == Form::Cheap).collect();
        if let (false, Some(cheap_bounds)) = (cheap.is_empty(), &self.cheap) {
            let sites = found_again(&model, cheap.iter().map(|i| &self.sites[*i]))?;
            let bounds = cheap.iter().map(|i| cheap_bounds[*i].clone()).collect();
            let elems = self.elems_of(&cheap);
            let done = bound_model(&mut model, &sites, bounds, ModeName::Saturate, self.emission, &elems)?;
            bounded.extend(split(&cheap, done));
        }
        bounded.sort_by_key(|(i, _)| *i);
        Ok(Built { model, bounded })
    }

    fn elems_of(&self, indices: &[usize]) -> Vec<ElemType> {
        indices.iter().map(|i| self.elems[*i]).collect()
    }
}

/// One `Bounded` per site of a run of the pass (`indices`: the sites, in the run's order).
fn split(indices: &[usize], done: Bounded) -> Vec<(usize, Bounded)> {
    let Bounded {
        requests,
        applied,
        folded,
    } = done;
    indices
        .iter()
        .zip(requests.into_iter().zip(applied).zip(folded))
        .map(|(i, ((request, applied), folded))| {
            (
                *i,
                Bounded {
                    requests: vec![request],
                    applied: vec![applied],
                    folded: vec![folded],
                },
            )
        })
        .collect()
}

/// `sites` as found in `model` after another run of the pass moved its nodes: the activation
/// writing the same output in the graph of the same labels.
fn found_again<'s>(model: &ModelProto, sites: impl Iterator<Item = &'s ActivationSite>) -> Result<Vec<ActivationSite>> {
    let now = find_sites(model);
    let labels = |s: &ActivationSite| s.graph.0.iter().map(|step| step.label.clone()).collect::<Vec<_>>();
    sites
        .map(|site| {
            now.iter()
                .find(|s| s.output == site.output && s.kind == site.kind && labels(s) == labels(site))
                .cloned()
                .with_context(|| format!("{} is no longer in the model after bounding others", site.describe()))
        })
        .collect()
}

/// Element-wise passes over the activation that a site's emitted nodes add and a runtime
/// cannot fuse into the producer: every emitted node but the activation itself (for another
/// activation than Relu, which keeps its node) and a `Relu` or `Clip` reading a `Conv`; less
/// one for a Relu that read neither a `Conv` nor an `Add` (the original ran it as a pass of
/// its own).
fn added_passes(model: &ModelProto, site: &ActivationSite, applied: &Applied) -> usize {
    let Ok(graph) = graph_at(model, &site.graph) else {
        return applied.nodes.len();
    };
    let producer = |tensor: &str| {
        graph
            .node
            .iter()
            .find(|n| n.output.iter().any(|o| o == tensor))
            .map(|n| n.op_type().to_owned())
    };
    let is_relu = site.kind.op_type() == "Relu";
    let added = applied
        .nodes
        .iter()
        .filter_map(|name| graph.node.iter().find(|n| n.name() == name))
        .filter(|node| {
            let own = !is_relu && node.op_type() == site.op_type;
            let fused = matches!(node.op_type(), "Relu" | "Clip")
                && node
                    .input
                    .first()
                    .and_then(|i| producer(i))
                    .is_some_and(|p| p == "Conv");
            !own && !fused
        })
        .count();
    // onnxruntime and OpenVINO fuse a Relu after a Conv, and after a residual Add of a Conv.
    let original_pass = is_relu && producer(&site.input).is_none_or(|p| p != "Conv" && p != "Add");
    added.saturating_sub(usize::from(original_pass))
}

/// The sites as the budget sees them: size, and each form offered with its label and passes
/// (from the model with every site in that form).
fn budget_sites(forms: &Forms, rule: &BoundRule, calibration: &Calibration) -> Result<Vec<Site>> {
    let n = forms.sites.len();
    let passes_in = |form: Form| -> Result<Vec<usize>> {
        let built = forms.build(&vec![form; n])?;
        let mut passes = vec![0; n];
        for (i, bounded) in &built.bounded {
            passes[*i] = added_passes(&built.model, &forms.sites[*i], &bounded.applied[0]);
        }
        Ok(passes)
    };
    let full_passes = passes_in(Form::Full)?;
    let cheap_passes = match forms.cheap {
        Some(_) => Some(passes_in(Form::Cheap)?),
        None => None,
    };
    let granularities = site_granularities(rule.granularity, rule.sites);
    Ok(forms
        .sites
        .iter()
        .enumerate()
        .map(|(i, site)| {
            let info = |form, label: String, passes| FormInfo { form, label, passes };
            let mut offered = vec![info(Form::Unbounded, "none".to_owned(), 0)];
            if let Some(cheap) = &cheap_passes
                && cheap[i] < full_passes[i]
            {
                let label = format!("{}/saturate", granularities[i]);
                offered.push(info(Form::Cheap, label, cheap[i]));
            }
            offered.push(info(
                Form::Full,
                format!("{}/{}", granularities[i], rule.mode),
                full_passes[i],
            ));
            Site {
                node: site.stem().to_owned(),
                kind: site.kind.op_type(),
                elements: calibration.activations[i].shape.iter().product::<usize>().max(1),
                forms: offered,
            }
        })
        .collect())
}

/// What `harden_within` wrote into the model: what each bounded site got (in site order),
/// the calibration of those sites only (in the same order), and the report.
pub struct Within {
    pub bounded: Bounded,
    pub calibration: Calibration,
    pub report: BudgetReport,
    /// Per site: the form chosen.
    pub forms: Vec<Form>,
}

/// `bounds` (the pipeline's, for `rule`'s sites) offered as forms to the budget stage, and
/// `model` bounded with the forms it chose.
pub fn bound_within_budget(
    model: &mut ModelProto,
    rule: &BoundRule,
    bounds: Vec<Bound>,
    calibration: &Calibration,
    samples: &crate::data::dataset::Samples,
    emission: EmissionName,
    settings: &BudgetSettings,
) -> Result<Within> {
    let original = model.clone();
    let forms = Forms::new(&original, rule, bounds, calibration, emission);
    harden_within(model, &forms, rule, calibration, samples, settings)
}

/// Chooses the forms within the budget and bounds `model` with them.
pub fn harden_within(
    model: &mut ModelProto,
    forms: &Forms,
    rule: &BoundRule,
    calibration: &Calibration,
    samples: &crate::data::dataset::Samples,
    settings: &BudgetSettings,
) -> Result<Within> {
    let sites = budget_sites(forms, rule, calibration)?;
    let count = samples.count.min(settings.samples.max(1));
    let labels = match &settings.labels {
        Some(path) => Some(
            crate::data::dataset::load_labels(path, samples.count, settings.data_cap)
                .context("reading --labels")?
                .into_iter()
                .take(count)
                .collect::<Vec<_>>(),
        ),
        None => None,
    };
    let samples = samples.select(&(0..count).collect::<Vec<_>>());
    let build = |f: &[Form]| forms.build(f).map(|b| b.model);
    let (chosen, report) = budget::choose(
        forms.original,
        &sites,
        &build,
        &samples,
        labels.as_deref(),
        &settings.options,
    )?;
    let built = forms.build(&chosen)?;
    *model = built.model;
    let mut merged = Bounded {
        requests: Vec::new(),
        applied: Vec::new(),
        folded: Vec::new(),
    };
    let mut activations = Vec::new();
    for (i, bounded) in built.bounded {
        merged.requests.extend(bounded.requests);
        merged.applied.extend(bounded.applied);
        merged.folded.extend(bounded.folded);
        activations.push(calibration.activations[i].clone());
    }
    Ok(Within {
        bounded: merged,
        calibration: Calibration {
            activations,
            ..calibration.clone()
        },
        report,
        forms: chosen,
    })
}

impl Within {
    /// The model's `fitact.*` metadata of the choice: the budget, and every activation's form
    /// (no timings: the same choice writes the same bytes).
    pub fn metadata(&self) -> [(&'static str, String); 2] {
        let forms: Vec<String> = self
            .report
            .activations
            .iter()
            .map(|a| format!("{}:{}", a.node, a.form))
            .collect();
        [
            ("fitact.max_overhead", self.report.max_overhead.to_string()),
            ("fitact.budget_forms", forms.join(",")),
        ]
    }
}
