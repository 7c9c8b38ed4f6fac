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
//! its fastest run over the original's fastest, minus 1. A run is timed in CPU time of the
//! thread that runs it (the engines run a one-thread session on the calling thread): on a
//! machine shared with other work (the one this was built on ran 7 jobs on 2 cores, load
//! 10), wall time is the run's own work plus whatever else held the core meanwhile; medians
//! of paired wall-time ratios moved by up to 18 points between two timings of the same models
//! there, and with load 10 no 6 ms run went undisturbed. On an idle machine the two agree. Per form, an additive cost is then fitted to those
//! measurements (least squares, prices >= 0): a site in the form costs `per_site` (what no
//! node count sees: a fusion the bound breaks, a layout conversion around it), plus
//! `per_node` for each element-wise node it adds (a runtime's fixed cost per node run: what
//! dominates on small inputs), plus `per_value` times the activation values those nodes pass
//! over; a site's cost is its own count, nodes and values at those prices (and never below `choice::RESOLUTION` for a form that adds a node).
//! The fit, not each group's own measurement, prices a site: it uses
//! every group at once, so one noisy round moves every price a little rather than a group's a
//! lot. The sum over the chosen forms is the prediction, which `plan` then checks by timing
//! the chosen model itself.
//!
//! **Counted** (`--cost-model count`): no timing. A form costs the element-wise passes over the
//! activation it adds that a runtime cannot fuse into the producer (`Site::forms[].passes`),
//! against `COUNT_PASSES` passes over every activation value for the original. Deterministic,
//! so tests and machines that cannot time use it; its percentages are estimates of the
//! right order (a conv-heavy ResNet-50 costs more per activation value than that, a mobile
//! net less), not latencies.

use crate::budget::choice::RESOLUTION;
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
/// Interleaved rounds per block of models: at least `ROUNDS`, and up to `MAX_ROUNDS` while a
/// model's fastest run still improves by more than `SETTLED` in the last `ROUNDS / 2` rounds
/// (on a busy machine, the fastest run of a few rounds may still be a disturbed one).
pub const ROUNDS: usize = 7;
pub const MAX_ROUNDS: usize = 25;
pub const SETTLED: f64 = 0.01;
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
    /// The first model's fastest run (seconds).
    pub original_seconds: f64,
}

impl Timer {
    /// Times `models` (the first is the baseline) in interleaved rounds.
    pub fn time(&self, models: &[ModelProto]) -> Result<Timed> {
        let times = match &self.runtime {
            Runtime::Engine(engine) => engine_times(engine, models, &self.sample)?,
            Runtime::OpenVino => openvino::times(models, &self.sample, MIN_ROUND_SECONDS)?,
        };
        Ok(fastest(&times))
    }
}

/// Per round, per model: the fastest run's seconds (thread CPU time), in `engine`.
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
    let started = thread_cpu_seconds();
    for _ in 0..3 {
        run(0)?;
    }
    let one = (thread_cpu_seconds() - started) / 3.0;
    let repeats = ((MIN_ROUND_SECONDS / one.max(1e-6)).ceil() as usize).clamp(1, 1000);
    let mut times: Vec<Vec<f64>> = Vec::new();
    while times.len() < ROUNDS || (times.len() < MAX_ROUNDS && !settled(&times)) {
        let round = times.len();
        let mut row = vec![0.0; models.len()];
        for k in 0..models.len() {
            let m = (k + round) % models.len();
            let mut fastest = f64::INFINITY;
            for _ in 0..repeats {
                let started = thread_cpu_seconds();
                run(m)?;
                fastest = fastest.min(thread_cpu_seconds() - started);
            }
            row[m] = fastest;
        }
        times.push(row);
    }
    Ok(times)
}

/// Whether no model's fastest run improved by more than `SETTLED` in the last `ROUNDS / 2`
/// rounds.
pub fn settled(times: &[Vec<f64>]) -> bool {
    let recent = ROUNDS / 2;
    if times.len() <= recent {
        return false;
    }
    let fastest = |rows: &[Vec<f64>], m: usize| rows.iter().map(|r| r[m]).fold(f64::INFINITY, f64::min);
    let before = &times[..times.len() - recent];
    (0..times[0].len()).all(|m| fastest(times, m) >= fastest(before, m) * (1.0 - SETTLED))
}

/// CPU time of the calling thread, seconds.
fn thread_cpu_seconds() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid timespec to write; CLOCK_THREAD_CPUTIME_ID exists on Linux and
    // macOS. A failure leaves 0, which times nothing rather than anything wrong.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Per model, its fastest time over all rounds over the first model's fastest, minus 1.
pub fn fastest(times: &[Vec<f64>]) -> Timed {
    let models = times.first().map_or(0, Vec::len);
    let best: Vec<f64> = (0..models)
        .map(|m| times.iter().map(|round| round[m]).fold(f64::INFINITY, f64::min))
        .collect();
    Timed {
        overheads: best.iter().map(|b| b / best[0] - 1.0).collect(),
        original_seconds: best.first().copied().unwrap_or(f64::NAN),
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
/// fits each form's prices per node and per value to those measurements (`fit`).
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
        let mut rows = vec![(work(sites, 0..sites.len(), form), timed.overheads[1])];
        for (range, overhead) in ranges.iter().zip(&timed.overheads[2..]) {
            group_costs.push(GroupCost {
                sites: (range.start, range.end),
                form,
                overhead: *overhead,
            });
            rows.push((work(sites, range.clone(), form), *overhead));
        }
        let prices = fit(&rows);
        log::info!(
            "{form:?} form: {:.3}% per site, {:.3}% per node, {:.3}% per million values passed",
            100.0 * prices[0],
            100.0 * prices[1],
            100.0 * prices[2]
        );
        for (i, site) in sites.iter().enumerate() {
            if let Some(k) = site.forms.iter().position(|f| f.form == form) {
                let w = work(sites, i..i + 1, form);
                // A node that runs costs something: at least the choice's resolution, so
                // that a fit that prices a form at 0 (noise) still lets the check's repair
                // remove it when the model measures over the budget.
                let floor = if w[1] > 0.0 { RESOLUTION } else { 0.0 };
                per_site[i][k] = (0..3).map(|f| prices[f] * w[f]).sum::<f64>().max(floor);
            }
        }
    }
    Ok(Costs {
        per_site,
        all_in_form,
        groups: group_costs,
        original_seconds,
    })
}

/// What the sites in `range` add in `form`: how many are in it, the element-wise nodes they
/// add, and the millions of activation values those nodes pass over.
fn work(sites: &[Site], range: Range<usize>, form: Form) -> [f64; 3] {
    range
        .filter_map(|i| {
            sites[i]
                .form(form)
                .map(|f| [1.0, f.passes as f64, (f.passes * sites[i].elements) as f64 / 1e6])
        })
        .fold([0.0; 3], |t, w| [t[0] + w[0], t[1] + w[1], t[2] + w[2]])
}

/// Least squares `y = p . x` over `rows` (x, y) with every price in `p` >= 0: of the fits on
/// every subset of the features, the feasible one with the least squared error.
pub fn fit(rows: &[([f64; 3], f64)]) -> [f64; 3] {
    let sse = |p: &[f64; 3]| {
        rows.iter()
            .map(|(x, y)| (y - (0..3).map(|k| p[k] * x[k]).sum::<f64>()).powi(2))
            .sum::<f64>()
    };
    let mut best = ([0.0; 3], sse(&[0.0; 3]));
    for subset in 1..8u32 {
        let used: Vec<usize> = (0..3).filter(|k| subset & (1 << k) != 0).collect();
        let Some(solved) = least_squares(rows, &used) else {
            continue;
        };
        let mut p = [0.0; 3];
        for (k, v) in used.iter().zip(solved) {
            p[*k] = v;
        }
        let error = sse(&p);
        if p.iter().all(|v| *v >= 0.0) && error < best.1 - 1e-15 {
            best = (p, error);
        }
    }
    best.0
}

/// The unconstrained least-squares prices of the features `used` (normal equations, Gaussian
/// elimination with partial pivoting); None when they are not independent on `rows`.
fn least_squares(rows: &[([f64; 3], f64)], used: &[usize]) -> Option<Vec<f64>> {
    let n = used.len();
    let mut a = vec![vec![0.0; n + 1]; n];
    for (x, y) in rows {
        for r in 0..n {
            for c in 0..n {
                a[r][c] += x[used[r]] * x[used[c]];
            }
            a[r][n] += x[used[r]] * y;
        }
    }
    let scale = (0..n).map(|k| a[k][k]).fold(0.0f64, f64::max);
    for col in 0..n {
        let pivot = (col..n).max_by(|i, j| a[*i][col].abs().total_cmp(&a[*j][col].abs()))?;
        if a[pivot][col].abs() <= 1e-9 * scale.max(1e-300) {
            return None;
        }
        a.swap(col, pivot);
        let pivot_row = a[col].clone();
        for (_, row) in a.iter_mut().enumerate().filter(|(r, _)| *r != col) {
            let f = row[col] / pivot_row[col];
            for (v, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                *v -= f * p;
            }
        }
    }
    Some((0..n).map(|k| a[k][n] / a[k][k]).collect())
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
    fn prices_are_fitted_non_negative_to_every_measurement() {
        let close = |a: [f64; 3], b: [f64; 3]| (0..3).all(|k| (a[k] - b[k]).abs() < 1e-9);
        // Exactly 0.002 per site, 0.01 per node and 0.003 per million values.
        let rows: Vec<([f64; 3], f64)> = [
            [1.0, 1.0, 2.0],
            [2.0, 3.0, 1.0],
            [1.0, 2.0, 8.0],
            [4.0, 6.0, 11.0],
            [2.0, 0.0, 0.0],
        ]
        .iter()
        .map(|x| (*x, 0.002 * x[0] + 0.01 * x[1] + 0.003 * x[2]))
        .collect();
        assert!(close(fit(&rows), [0.002, 0.01, 0.003]), "{:?}", fit(&rows));
        // Cost falling with values: no negative price; sites and nodes explain it.
        let rows = [
            ([1.0, 1.0, 5.0], 0.01),
            ([1.0, 2.0, 1.0], 0.02),
            ([1.0, 3.0, 0.0], 0.03),
        ];
        let p = fit(&rows);
        assert!(p.iter().all(|v| *v >= 0.0) && p[2] == 0.0, "{p:?}");
        // Forms that add no node but cost per site (a fusion broken): priced per site.
        let rows = [([2.0, 0.0, 0.0], 0.04), ([1.0, 0.0, 0.0], 0.02)];
        assert!(close(fit(&rows), [0.02, 0.0, 0.0]));
        // Nothing measurable: free.
        assert_eq!(fit(&[([0.0, 0.0, 0.0], 0.05)]), [0.0; 3]);
        assert_eq!(fit(&[([1.0, 1.0, 1.0], -0.02)]), [0.0; 3]);
    }

    #[test]
    fn rounds_go_on_while_a_fastest_run_still_improves() {
        let steady = vec![vec![1.0, 2.0]; ROUNDS];
        assert!(settled(&steady));
        let mut improving = steady.clone();
        improving[ROUNDS - 1][1] = 1.9;
        assert!(!settled(&improving));
        assert!(!settled(&steady[..ROUNDS / 2]));
    }

    #[test]
    fn overheads_are_fastest_runs_over_the_original_fastest() {
        // Round 2 is disturbed for everything, round 3 for the original only.
        let times = vec![vec![1.0, 1.1, 2.0], vec![2.0, 2.2, 4.0], vec![1.5, 1.2, 2.2]];
        let t = fastest(&times);
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
