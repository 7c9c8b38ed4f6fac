//! `--budget-costs REPORT`: the costs of an earlier `harden --max-overhead` report, so that a
//! pipeline that timed them once makes the same choice on every later run (timing noise moves
//! measured costs by more than the choice's resolution; faults and samples are seeded).
//!
//! Before: the sites and the forms each offers. After: each form's cost as the report lists
//! it. Applies when the report is of the same model and options: every activation, in order,
//! with a cost for every form offered now; anything else is refused, naming what differs.

use crate::budget::Site;
use crate::budget::cost::Costs;
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
struct Report {
    budget: Option<Budget>,
}

#[derive(Deserialize)]
struct Budget {
    original_ms: Option<f64>,
    activations: Vec<Activation>,
}

#[derive(Deserialize)]
struct Activation {
    node: String,
    forms: Vec<FormCost>,
}

#[derive(Deserialize)]
struct FormCost {
    form: String,
    cost: f64,
}

/// The costs of `sites` as `path` (a harden report with a `budget`) lists them.
pub fn costs_from_report(sites: &[Site], path: &Path) -> Result<Costs> {
    let context = || format!("reading the costs in {}", path.display());
    let text = std::fs::read_to_string(path).with_context(context)?;
    let report: Report = serde_json::from_str(&text).with_context(context)?;
    let Some(budget) = report.budget else {
        bail!(
            "{} has no budget: it is not the report of a harden --max-overhead run",
            path.display()
        );
    };
    costs_of(sites, &budget).with_context(context)
}

fn costs_of(sites: &[Site], budget: &Budget) -> Result<Costs> {
    if budget.activations.len() != sites.len() {
        bail!(
            "it lists {} activations, the model has {}: it is the report of another model or other --activations",
            budget.activations.len(),
            sites.len()
        );
    }
    let mut per_site = Vec::with_capacity(sites.len());
    for (site, listed) in sites.iter().zip(&budget.activations) {
        if listed.node != site.node {
            bail!("it lists {} where the model has {}", listed.node, site.node);
        }
        let costs = site
            .forms
            .iter()
            .map(|offered| {
                let cost = listed.forms.iter().find(|f| f.form == offered.label).map(|f| f.cost);
                match cost {
                    Some(c) if c.is_finite() && c >= 0.0 => Ok(c),
                    Some(c) => bail!("{}: the cost of {} is {c}", site.node, offered.label),
                    None => bail!(
                        "{} has no cost for {}: the report is of other hardening options",
                        site.node,
                        offered.label
                    ),
                }
            })
            .collect::<Result<Vec<f64>>>()?;
        per_site.push(costs);
    }
    Ok(Costs {
        per_site,
        all_in_form: Vec::new(),
        groups: Vec::new(),
        original_seconds: budget.original_ms.map(|ms| ms / 1000.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{Form, FormInfo};

    fn site(node: &str) -> Site {
        let form = |form, label: &str| FormInfo {
            form,
            label: label.to_owned(),
            passes: 1,
        };
        Site {
            node: node.to_owned(),
            kind: "Relu",
            elements: 10,
            forms: vec![form(Form::Unbounded, "none"), form(Form::Full, "channel/zero")],
        }
    }

    fn budget(json: &str) -> Budget {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn costs_are_read_per_site_and_form_and_other_models_are_refused() {
        let listed = budget(
            r#"{"original_ms": 2.0, "activations": [
                {"node": "a", "forms": [{"form": "none", "cost": 0.0}, {"form": "channel/zero", "cost": 0.031}]},
                {"node": "b", "forms": [{"form": "channel/zero", "cost": 0.02}, {"form": "none", "cost": 0.0}]}]}"#,
        );
        let costs = costs_of(&[site("a"), site("b")], &listed).unwrap();
        assert_eq!(costs.per_site, vec![vec![0.0, 0.031], vec![0.0, 0.02]]);
        assert_eq!(costs.original_seconds, Some(0.002));
        let err = costs_of(&[site("a"), site("c")], &listed).unwrap_err().to_string();
        assert!(err.contains("lists b where the model has c"), "{err}");
        let err = costs_of(&[site("a")], &listed).unwrap_err().to_string();
        assert!(err.contains("lists 2 activations, the model has 1"), "{err}");
        let layer = budget(
            r#"{"original_ms": null, "activations": [{"node": "a", "forms": [{"form": "none", "cost": 0.0}, {"form": "layer/zero", "cost": 0.03}]}]}"#,
        );
        let err = costs_of(&[site("a")], &layer).unwrap_err().to_string();
        assert!(err.contains("a has no cost for channel/zero"), "{err}");
    }
}
