//! What each form of each activation costs, as a share of the original's latency.
//!
//! **Measured** (`--cost-model measure`, the default): in the runtime named by `--runtime`, batch
//! 1, one thread, the first calibration sample every run. A bound costs little (often under
//! 0.3% of a ResNet-50), below what one timing resolves on a busy machine, so activations are
//! timed in groups: the sites are cut into at most `TIMING_GROUPS` runs of consecutive
//! activations, and for each form a model with that group alone in that form (the rest as in
//! the original) is timed against the original, with every site in that form too. The models
//! of a block are loaded together and run in interleaved rounds (the order rotated each round;
//! each model run enough times per round to take `MIN_ROUND_SECONDS`); a model's overhead is
//! the median over rounds of its time over the original's in the same round, minus 1 (paired:
//! a load that comes and goes slows both). A group's cost is split over its activations in
//! proportion to the work each adds (`count`). The sum over the chosen forms is the
//! prediction, which `plan` then checks by timing the chosen model itself.
//!
//! **Counted** (`--cost-model count`): no timing. A form costs the element-wise passes over the
//! activation it adds that a runtime cannot fuse into the producer (`Site::forms[].passes`),
//! against `COUNT_PASSES` passes over every activation value for the original. Deterministic,
//! so tests and machines that cannot time use it; its percentages are estimates of the
//! right order (a conv-heavy ResNet-50 costs more per activation value than that, a mobile
//! net less), not latencies.

use crate::budget::openvino;
use crate::budget::{Build, Form, Site};
use crate::data::dataset::Samples;
use crate::engine::{Engine, Outputs, Value};
use crate::replay::Batches;
use anyhow::{Context, Result};
use fitact_passes::onnx::ModelProto;
use serde::Serialize;
use std::ops::Range;
use std::time::Instant;

/// At most this many groups of activations are timed per form.
pub const TIMING_GROUPS: usize = 8;
/// Interleaved rounds per block of models.
pub const ROUNDS: usize = 7;
/// Each model runs at least this long per round (repeated runs of short models).
pub const MIN_ROUND_SECONDS: f64 = 0.05;
/// The count model's cost of the original: this many passes over every activation value.
pub const COUNT_PASSES: f64 = 8.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CostModel {
    /// Time the models in the runtime (`--runtime`).
    Measure,
    /// Count the element-wise passes each form adds (deterministic, approximate).
    Count,
}

/// Where the models are timed.
#[derive(Debug, Clone)]
pub enum Runtime {
    /// An engine of this tool: onnxruntime (one intra-op thread) or tract.
    Engine(Engine),
    /// OpenVINO's CPU plugin (one thread, latency hint, float32), through `python3` and the
    /// `openvino` package.
    OpenVino,
}

impl Runtime {
    pub fn describe(&self) -> String {
        match self {
            Runtime::Engine(engine) => engine.describe(),
            Runtime::OpenVino => "openvino".to_owned(),
        }
    }
}

/// Times models against the first of them.
pub struct Timer {
    pub runtime: Runtime,
    /// One sample: what every run is fed.
    pub sample: Samples,
}

/// A block's timing: per model, its overhead over the first (0 for the first).
#[derive(Debug, Clone)]
pub struct Timed {
    pub overheads: Vec<f64>,
    /// The first model's median latency (seconds).
    pub original_seconds: f64,
}

impl Timer {
    /// Times `models` (the first is the baseline) in interleaved rounds.
    pub fn time(&self, models: &[ModelProto]) -> Result<Timed> {
        let times = match &self.runtime {
            Runtime::Engine(engine) => engine_times(engine, models, &self.sample)?,
            Runtime::OpenVino => openvino::times(models, &self.sample, ROUNDS, MIN_ROUND_SECONDS)?,
        };
        Ok(paired(&times))
    }
}

/// Per round, per model: seconds per run, in `engine` (`ROUNDS` rounds).
fn engine_times(engine: &Engine, models: &[ModelProto], sample: &Samples) -> Result<Vec<Vec<f64>>> {
    let batches = Batches::new(sample, 1);
    let sessions = models
        .iter()
        .map(|m| batches.session(engine, m, Outputs::Model))
        .collect::<Result<Vec<_>, _>>()
        .context("loading the models to time")?;
    let feeds: Vec<Vec<(String, Value)>> = sessions
        .iter()
        .map(|s| {
            let rows = s.batch_size(1);
            batches
                .named(0)
                .into_iter()
                .map(|(n, v)| if rows > 1 { (n, v.pad_rows(rows)) } else { (n, v) })
                .collect()
        })
        .collect();
    let run = |m: usize| sessions[m].run_values(&feeds[m]).map(|_| ());
    for m in 0..models.len() {
        run(m)?;
        run(m)?;
    }
    let started = Instant::now();
    for _ in 0..3 {
        run(0)?;
    }
    let one = started.elapsed().as_secs_f64() / 3.0;
    let repeats = ((MIN_ROUND_SECONDS / one.max(1e-6)).ceil() as usize).clamp(1, 1000);
    let mut times = vec![vec![0.0; models.len()]; ROUNDS];
    for (round, row) in times.iter_mut().enumerate() {
        for k in 0..models.len() {
            let m = (k + round) % models.len();
            let started = Instant::now();
            for _ in 0..repeats {
                run(m)?;
            }
            row[m] = started.elapsed().as_secs_f64() / repeats as f64;
        }
    }
    Ok(times)
}

/// Per model, the median over rounds of its time over the first model's in the same round.
pub fn paired(times: &[Vec<f64>]) -> Timed {
    let models = times.first().map_or(0, Vec::len);
    let overheads = (0..models)
        .map(|m| median(times.iter().map(|round| round[m] / round[0] - 1.0).collect()))
        .collect();
    Timed {
        overheads,
        original_seconds: median(times.iter().map(|round| round[0]).collect()),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Each site's cost per offered form (in the order of `Site::forms`), and what timing saw.
#[derive(Debug, Clone)]
pub struct Costs {
    pub per_site: Vec<Vec<f64>>,
    /// Every site in each timed form, measured (form, overhead).
    pub all_in_form: Vec<(Form, f64)>,
    /// The groups timed (site ranges) and each one's measured overhead per form.
    pub groups: Vec<GroupCost>,
    /// The original's latency, seconds (timed costs only).
    pub original_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupCost {
    /// The first and one past the last activation of the group (indices into the sites).
    pub sites: (usize, usize),
    pub form: Form,
    pub overhead: f64,
}

/// The count model: `passes x elements` over `COUNT_PASSES x` every activation value.
pub fn counted(sites: &[Site]) -> Costs {
    let total: f64 = sites.iter().map(|s| s.elements as f64).sum::<f64>().max(1.0) * COUNT_PASSES;
    Costs {
        per_site: sites
            .iter()
            .map(|s| s.forms.iter().map(|f| (f.passes * s.elements) as f64 / total).collect())
            .collect(),
        all_in_form: Vec::new(),
        groups: Vec::new(),
        original_seconds: None,
    }
}

/// At most `TIMING_GROUPS` runs of consecutive sites, as even as can be.
pub fn groups(n: usize) -> Vec<Range<usize>> {
    let count = n.min(TIMING_GROUPS);
    (0..count).map(|g| (g * n / count)..((g + 1) * n / count)).collect()
}

/// Times every group of sites in every form some site offers (besides `Unbounded`), and
/// splits each group's cost over its sites by the work each adds.
pub fn measured(sites: &[Site], build: &Build, timer: &Timer) -> Result<Costs> {
    let ranges = groups(sites.len());
    let mut per_site: Vec<Vec<f64>> = sites.iter().map(|s| vec![0.0; s.forms.len()]).collect();
    let mut all_in_form = Vec::new();
    let mut group_costs = Vec::new();
    let mut original_seconds = None;
    for form in [Form::Cheap, Form::Full] {
        if !sites.iter().any(|s| s.form(form).is_some()) {
            continue;
        }
        let assign = |range: Range<usize>| -> Vec<Form> {
            sites
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    if range.contains(&i) && s.form(form).is_some() {
                        form
                    } else {
                        Form::Unbounded
                    }
                })
                .collect()
        };
        let mut models = vec![
            build(&vec![Form::Unbounded; sites.len()])?,
            build(&assign(0..sites.len()))?,
        ];
        for range in &ranges {
            models.push(build(&assign(range.clone()))?);
        }
        let started = Instant::now();
        let timed = timer.time(&models)?;
        log::info!(
            "timed {} models ({form:?} form) in {:.1}s: every site {:+.1}%",
            models.len(),
            started.elapsed().as_secs_f64(),
            100.0 * timed.overheads[1]
        );
        original_seconds.get_or_insert(timed.original_seconds);
        all_in_form.push((form, timed.overheads[1]));
        for (range, overhead) in ranges.iter().zip(&timed.overheads[2..]) {
            group_costs.push(GroupCost {
                sites: (range.start, range.end),
                form,
                overhead: *overhead,
            });
            split(sites, range.clone(), form, overhead.max(0.0), &mut per_site);
        }
    }
    Ok(Costs {
        per_site,
        all_in_form,
        groups: group_costs,
        original_seconds,
    })
}

/// Shares `cost` (of the sites in `range` in `form`) among them in proportion to the work
/// each adds (`passes x elements`), or to their sizes when none adds any.
fn split(sites: &[Site], range: Range<usize>, form: Form, cost: f64, per_site: &mut [Vec<f64>]) {
    let offered: Vec<(usize, usize, f64, f64)> = range
        .filter_map(|i| {
            let s = &sites[i];
            let k = s.forms.iter().position(|f| f.form == form)?;
            Some((i, k, (s.forms[k].passes * s.elements) as f64, s.elements as f64))
        })
        .collect();
    let work: f64 = offered.iter().map(|o| o.2).sum();
    let size: f64 = offered.iter().map(|o| o.3).sum();
    for (i, k, w, e) in offered {
        per_site[i][k] = if work > 0.0 {
            cost * w / work
        } else if size > 0.0 {
            cost * e / size
        } else {
            0.0
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::FormInfo;

    fn site(elements: usize, cheap: usize, full: usize) -> Site {
        let info = |form, passes| FormInfo {
            form,
            label: format!("{form:?}"),
            passes,
        };
        Site {
            node: "n".into(),
            kind: "Relu",
            elements,
            forms: vec![
                info(Form::Unbounded, 0),
                info(Form::Cheap, cheap),
                info(Form::Full, full),
            ],
        }
    }

    #[test]
    fn groups_cover_every_site_once_in_order() {
        for n in 1..40 {
            let g = groups(n);
            assert_eq!(g.len(), n.min(TIMING_GROUPS));
            assert_eq!(g[0].start, 0);
            assert_eq!(g.last().unwrap().end, n);
            assert!(g.windows(2).all(|w| w[0].end == w[1].start && w[0].start < w[0].end));
        }
    }

    #[test]
    fn a_group_cost_is_split_by_the_work_each_site_adds() {
        let sites = [site(100, 0, 1), site(300, 0, 1), site(50, 0, 0)];
        let mut per = vec![vec![0.0; 3]; 3];
        split(&sites, 0..3, Form::Full, 0.08, &mut per);
        assert_eq!((per[0][2], per[1][2], per[2][2]), (0.02, 0.06, 0.0));
        // Forms that add no pass: by size.
        split(&sites, 0..2, Form::Cheap, 0.04, &mut per);
        assert_eq!((per[0][1], per[1][1]), (0.01, 0.03));
    }

    #[test]
    fn paired_overheads_are_medians_of_ratios_within_rounds() {
        // Round 2 is slow for everything: the ratio is unaffected.
        let times = vec![vec![1.0, 1.1, 2.0], vec![2.0, 2.2, 4.0], vec![1.0, 1.1, 2.2]];
        let t = paired(&times);
        assert_eq!(t.overheads[0], 0.0);
        assert!((t.overheads[1] - 0.1).abs() < 1e-12);
        assert!((t.overheads[2] - 1.0).abs() < 1e-12);
        assert_eq!(t.original_seconds, 1.0);
    }

    #[test]
    fn the_count_model_is_passes_times_elements_over_the_original() {
        let c = counted(&[site(100, 0, 1), site(300, 1, 4)]);
        let total = 400.0 * COUNT_PASSES;
        assert_eq!(c.per_site[0], vec![0.0, 0.0, 100.0 / total]);
        assert_eq!(c.per_site[1], vec![0.0, 300.0 / total, 1200.0 / total]);
    }
}
