//! Targeted fault events (`--benefit targeted`): the resilience of a candidate estimated from
//! single damaging flips placed where each activation's bound would catch them, instead of
//! from sampled patterns.
//!
//! Why: at a low BER a sampled pattern holds one to three catastrophic flips (float32's top
//! exponent bit), so the loss of unbounding an activation is measured from the 0-2 of them
//! that happened to land in the weights it reads; which activations one set of patterns finds
//! worth bounding does not carry over to other patterns (docs/results/budget_2026-12-05.md).
//!
//! Before: `P` sampled patterns per candidate, each with whatever flips the BER draws.
//! After: one fault-free run and `K` single-flip runs per stratum. A stratum is the set of
//! weights whose faults first meet the same activations downstream (the weights a bound there
//! catches when every activation is bounded; those read after the last activation form a
//! stratum of their own), of one sign and one stored type: a weight blown up to a huge negative value mostly
//! feeds zeros through the next Relu, a positive one garbage, so drawing the sign by chance
//! would make a few events decide an activation's worth. Within a stratum a flip lands in a
//! weight with probability proportional to its damaging bits, at a uniform damaging bit
//! (`damaging_bits`); the events are drawn once, from the seed, and every candidate runs the
//! same ones (common random numbers: differences between candidates are paired).
//!
//! The estimate: damaging flips in stratum s are Poisson with mean `l_s` = mean BER x
//! damaging bits of its tensors, and each one, independently, keeps a share `1 - r_s` of the
//! fault-free metric `m_0`, with `r_s` the mean of `(m_0 - m_e) / m_0` over its events; so
//! the metric under faults is `m_0 * exp(-sum_s l_s r_s)`. Flips in other bits are left out
//! (first-order: they move a weight little), and so are flips in tensors the original does
//! not have (bounds). In a state where an activation is unbounded, the events of its stratum
//! reach the next bound downstream, so the estimate follows the state as the path prunes.
//! Applies to every weight format; integer tensors take the top two bits of their words.

use crate::budget::Site;
use crate::faults::campaign_report::MeanCi;
use crate::faults::flips::{StoredTensor, WeightFormat, tensor_rng};
use crate::faults::weights::{Weights, flippable_bits};
use fitact_passes::activations::find_sites;
use fitact_passes::onnx::{GraphProto, ModelProto};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One single-bit fault: `bit` of element `element` of the tensor named `tensor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub tensor: String,
    pub element: usize,
    pub bit: u32,
}

/// The weights whose faults first meet the same activations, of one sign.
#[derive(Debug, Clone)]
pub struct Stratum {
    /// The sites (indices into the budget's sites) first reached; empty: none is.
    pub sites: Vec<usize>,
    /// Its weights are negative (else zero or positive).
    pub negative: bool,
    /// Expected damaging flips in its tensors under the fault model.
    pub rate: f64,
    /// Its events' range in `Targeted::events`.
    pub events: std::ops::Range<usize>,
}

/// A tensor (index among the weights) and the elements of it in a stratum.
type Members = (usize, Vec<usize>);

/// Every stratum with its events.
#[derive(Debug, Clone)]
pub struct Targeted {
    pub strata: Vec<Stratum>,
    pub events: Vec<Event>,
}

/// The bits of a stored word whose flip can wreck a weight: a float format's top exponent bit
/// (a weight below 2 in magnitude becomes at least 2^64 times larger), the sign and top value
/// bit of a fixed-point or 8-bit integer word, and the top half of a wider integer word (an
/// int32 bias moved by 2^16 or more saturates its channel at every position: most of what
/// faults cost a hardened int8 model, docs/results/precision_logits_2026-12-06.md).
pub fn damaging_bits(stored: &StoredTensor, format: WeightFormat) -> Vec<u32> {
    let float = match format {
        WeightFormat::Float32 => vec![30],
        WeightFormat::Float16 | WeightFormat::BFloat16 => vec![14],
        WeightFormat::Q15_16 => vec![30, 31],
        WeightFormat::Int8 => vec![6, 7],
    };
    let bits = flippable_bits(stored, &float);
    match stored.integer {
        Some(_) if bits.len() > 8 => bits[bits.len() / 2..].to_vec(),
        Some(_) => bits[bits.len().saturating_sub(2)..].to_vec(),
        None => bits,
    }
}

/// For every weight tensor of `graph`, the sites first reached downstream: consumers are
/// followed through every node that is not one of `sites` (by node index in the main graph).
fn first_sites(graph: &GraphProto, weights: &[String], sites: &HashMap<usize, usize>) -> Vec<BTreeSet<usize>> {
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, node) in graph.node.iter().enumerate() {
        for input in node.input.iter().filter(|s| !s.is_empty()) {
            consumers.entry(input.as_str()).or_default().push(i);
        }
    }
    weights
        .iter()
        .map(|name| {
            let mut reached = BTreeSet::new();
            let mut seen: BTreeSet<usize> = BTreeSet::new();
            let mut queue: Vec<&str> = vec![name.as_str()];
            while let Some(tensor) = queue.pop() {
                for &n in consumers.get(tensor).into_iter().flatten() {
                    if !seen.insert(n) {
                        continue;
                    }
                    match sites.get(&n) {
                        Some(site) => {
                            reached.insert(*site);
                        }
                        None => queue.extend(graph.node[n].output.iter().map(String::as_str)),
                    }
                }
            }
            reached
        })
        .collect()
}

/// Main-graph node index -> budget site, for every node of each site (a decomposed form
/// has several). Sites in subgraphs are not reached: their weights fall to the stratum
/// of what the main graph reaches.
fn site_nodes(original: &ModelProto, sites: &[Site]) -> HashMap<usize, usize> {
    let mut nodes = HashMap::new();
    for found in find_sites(original).iter().filter(|s| s.graph.is_main()) {
        if let Some(i) = sites.iter().position(|s| s.node == found.stem()) {
            for n in &found.nodes {
                nodes.insert(*n, i);
            }
        }
    }
    nodes
}

impl Targeted {
    /// `flips` events per stratum of `original`'s weights for `sites`, drawn from `seed`.
    pub fn new(
        original: &ModelProto,
        sites: &[Site],
        format: WeightFormat,
        mean_ber: f64,
        flips: usize,
        seed: u64,
    ) -> Targeted {
        let weights = Weights::of(original);
        let names: Vec<String> = weights.tensors.iter().map(|t| t.name.clone()).collect();
        let stored: Vec<StoredTensor> = weights.tensors.iter().map(|t| t.store(format)).collect();
        let bits: Vec<Vec<u32>> = stored.iter().map(|s| damaging_bits(s, format)).collect();
        let stored_types: Vec<Option<i32>> = stored.iter().map(|s| s.integer).collect();
        let empty = GraphProto::default();
        let graph = original.graph.as_ref().unwrap_or(&empty);
        let reached = first_sites(graph, &names, &site_nodes(original, sites));
        // Keyed by the sites reached, the sign, and the integer type a tensor is stored in
        // (None: the float format), so that a few 32-bit biases are not drowned among the 8-bit
        // weights that share their sites.
        let mut groups: BTreeMap<(Vec<usize>, bool, Option<i32>), Vec<Members>> = BTreeMap::new();
        for (t, sites) in reached.into_iter().enumerate() {
            let sites: Vec<usize> = sites.into_iter().collect();
            let values = &weights.tensors[t].values;
            let (negative, other): (Vec<usize>, Vec<usize>) = (0..values.len()).partition(|i| values.get(*i) < 0.0);
            let stored = stored_types[t];
            for (sign, elements) in [(false, other), (true, negative)] {
                if !elements.is_empty() && !bits[t].is_empty() {
                    groups
                        .entry((sites.clone(), sign, stored))
                        .or_default()
                        .push((t, elements));
                }
            }
        }
        let mut targeted = Targeted {
            strata: Vec::new(),
            events: Vec::new(),
        };
        for ((sites, negative, _), members) in groups {
            let mass: Vec<f64> = members
                .iter()
                .map(|(t, elements)| (elements.len() * bits[*t].len()) as f64)
                .collect();
            let total: f64 = mass.iter().sum();
            let start = targeted.events.len();
            let first = &names[members[0].0];
            let mut rng = tensor_rng(seed, u64::MAX - u64::from(negative), mean_ber, first);
            for _ in 0..flips {
                let (t, elements) = &members[pick(&mass, total * rng.random::<f64>())];
                let element = elements[rng.random_range(0..elements.len())];
                let bit = bits[*t][rng.random_range(0..bits[*t].len())];
                targeted.events.push(Event {
                    tensor: names[*t].clone(),
                    element,
                    bit,
                });
            }
            targeted.strata.push(Stratum {
                sites,
                negative,
                rate: mean_ber * total,
                events: start..targeted.events.len(),
            });
        }
        targeted
    }

    /// Runs per candidate: the fault-free one, then one per event.
    pub fn runs(&self) -> usize {
        1 + self.events.len()
    }

    /// The runs (indices as in `runs`) a candidate whose sites `changed` are in another form
    /// than in the reference must run itself: the fault-free one and the events of every
    /// stratum that first reaches one of them. The other events' faults meet a bound as in
    /// the reference before any changed site, so their runs are taken from the reference's
    /// (first order: a cut fault can still leave a value above a later, weaker bound; on the
    /// fixtures, benefits moved by at most 0.06 points and the path was the same, in a sixth
    /// of the time: docs/results/budget_2026-12-06.md).
    pub fn affected(&self, changed: &[usize]) -> Vec<usize> {
        let mut runs = vec![0];
        for s in &self.strata {
            if s.sites.iter().any(|i| changed.contains(i)) {
                runs.extend(s.events.clone().map(|e| 1 + e));
            }
        }
        runs
    }

    /// The estimate from one candidate's runs (fault-free first, then the events in order),
    /// with a 95% interval from the spread of each stratum's events (delta method; NaN, which
    /// reports write as null, with a single event per stratum).
    pub fn estimate(&self, runs: &[f64]) -> MeanCi {
        let clean = runs[0];
        if clean <= 0.0 {
            return MeanCi { mean: 0.0, ci95: 0.0 };
        }
        let (mut exponent, mut variance) = (0.0, 0.0);
        for s in &self.strata {
            let shares: Vec<f64> = runs[1 + s.events.start..1 + s.events.end]
                .iter()
                .map(|m| (clean - m) / clean)
                .collect();
            let k = shares.len() as f64;
            let mean = shares.iter().sum::<f64>() / k;
            exponent += s.rate * mean;
            variance += if shares.len() > 1 {
                let var = shares.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (k - 1.0);
                s.rate * s.rate * var / k
            } else {
                f64::NAN
            };
        }
        let mean = clean * (-exponent).exp();
        MeanCi {
            mean,
            ci95: 1.96 * mean * variance.sqrt(),
        }
    }
}

/// The index whose cumulative `mass` first exceeds `at` (the last for rounding at the end).
fn pick(mass: &[f64], at: f64) -> usize {
    let mut sum = 0.0;
    for (i, m) in mass.iter().enumerate() {
        sum += m;
        if at < sum {
            return i;
        }
    }
    mass.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{Form, FormInfo};
    use fitact_passes::onnx::NodeProto;
    use fitact_passes::tensor::{FLOAT, float_tensor};

    fn node(op: &str, name: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            name: Some(name.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    fn site(name: &str) -> Site {
        let info = |form| FormInfo {
            form,
            label: String::new(),
            passes: 0,
        };
        Site {
            node: name.into(),
            kind: "Relu",
            elements: 1,
            forms: vec![info(Form::Unbounded), info(Form::Full)],
        }
    }

    /// x -> Conv(w1, b1) -> Relu r1 -> Conv(w2) -> Relu r2 -> Add(c) -> y.
    fn chain() -> ModelProto {
        let t = |name: &str, n: usize| float_tensor(name, &[n as i64], &vec![0.1; n], FLOAT);
        let mut w1: Vec<f32> = vec![0.1; 30];
        w1[..12].fill(-0.1);
        ModelProto {
            graph: Some(GraphProto {
                node: vec![
                    node("Conv", "c1", &["x", "w1", "b1"], "a1"),
                    node("Relu", "r1", &["a1"], "h1"),
                    node("Conv", "c2", &["h1", "w2"], "a2"),
                    node("Relu", "r2", &["a2"], "h2"),
                    node("Add", "add", &["h2", "c"], "y"),
                ],
                initializer: vec![
                    float_tensor("w1", &[30], &w1, FLOAT),
                    t("b1", 10),
                    t("w2", 40),
                    t("c", 5),
                ],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn weights_fall_to_the_first_activation_they_reach_and_events_follow_the_seed() {
        let model = chain();
        let sites = [site("r1"), site("r2")];
        let targeted = Targeted::new(&model, &sites, WeightFormat::Float32, 1e-3, 5, 7);
        let strata: Vec<(Vec<usize>, bool, f64)> = targeted
            .strata
            .iter()
            .map(|s| (s.sites.clone(), s.negative, s.rate))
            .collect();
        // After the last activation: c (5 words); r1: w1 and b1 (40, of them w1's first 12
        // negative); r2: w2 (40); one bit each.
        assert_eq!(
            strata,
            [
                (vec![], false, 5e-3),
                (vec![0], false, 28e-3),
                (vec![0], true, 12e-3),
                (vec![1], false, 40e-3)
            ]
        );
        assert_eq!(targeted.runs(), 21);
        for (s, stratum) in targeted.strata.iter().enumerate() {
            let allowed: &[&str] = [&["c"][..], &["w1", "b1"], &["w1"], &["w2"]][s];
            for e in &targeted.events[stratum.events.clone()] {
                assert!(allowed.contains(&e.tensor.as_str()), "{e:?} in stratum {s}");
                assert!(!stratum.negative || e.element < 12, "{e:?} is a negative weight");
                assert_eq!(e.bit, 30);
            }
        }
        let again = Targeted::new(&model, &sites, WeightFormat::Float32, 1e-3, 5, 7);
        assert_eq!(again.events, targeted.events);
        let other = Targeted::new(&model, &sites, WeightFormat::Float32, 1e-3, 5, 8);
        assert_ne!(other.events, targeted.events);
        // Without r1 among the sites, w1 and b1 reach r2.
        let one = Targeted::new(&model, &[site("r2")], WeightFormat::Float32, 1e-3, 5, 7);
        assert_eq!(one.strata[1].sites, vec![0]);
        assert!((one.strata[1].rate - 68e-3).abs() < 1e-12);
    }

    #[test]
    fn the_estimate_is_the_clean_metric_times_the_expected_survival() {
        let model = chain();
        let targeted = Targeted::new(&model, &[site("r1"), site("r2")], WeightFormat::Float32, 1e-3, 2, 0);
        // Fault-free 0.8; every event in r1's positive weights halves it, the others do nothing.
        let mut runs = vec![0.8; targeted.runs()];
        for e in targeted.strata[1].events.clone() {
            runs[1 + e] = 0.4;
        }
        let estimate = targeted.estimate(&runs);
        assert!((estimate.mean - 0.8 * (-28e-3 * 0.5f64).exp()).abs() < 1e-12);
        assert_eq!(estimate.ci95, 0.0, "no spread within a stratum");
        let single = Targeted::new(&model, &[site("r1"), site("r2")], WeightFormat::Float32, 1e-3, 1, 0);
        assert!(
            single.estimate(&vec![0.8; single.runs()]).ci95.is_nan(),
            "no spread to measure"
        );
        assert_eq!(targeted.estimate(&vec![0.8; targeted.runs()]).mean, 0.8);
        // r1 changed: the fault-free run and r1's two strata (events 2..6) run again; the
        // events after the last activation (0..2) and r2's (6..8) are the reference's.
        assert_eq!(targeted.affected(&[0]), [0, 3, 4, 5, 6]);
        assert_eq!(targeted.affected(&[]), [0]);
        assert_eq!(targeted.affected(&[0, 1]), [0, 3, 4, 5, 6, 7, 8]);
        // The int8 format's damaging bits are the top two of its words.
        let stored = WeightFormat::Int8.store(&[0.5, -0.25]);
        assert_eq!(damaging_bits(&stored, WeightFormat::Int8), [6, 7]);
        // An int32 word (a quantized bias): its top half.
        let bias = StoredTensor {
            words: vec![0; 2],
            scale: 1.0,
            integer: Some(6),
        };
        assert_eq!(
            damaging_bits(&bias, WeightFormat::Float32),
            (16..32).collect::<Vec<u32>>()
        );
    }
}
