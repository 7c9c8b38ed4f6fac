//! From calibrated per-neuron maxima to bound tensors at a granularity: one scalar per layer,
//! one value per channel (axis 1 of the activation, axis 0 of a sample), or one per neuron;
//! `hybrid` (ProAct's HyReLU) is layer bounds everywhere and neuron bounds at the last
//! activation (`site_granularities` resolves it per activation).

use fitact_passes::activations::ActivationSite;
use fitact_passes::bound_activations::Bound;
use ndarray::{ArrayD, Axis};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Layer,
    Channel,
    Neuron,
    /// One bound per layer, and one per neuron at the last activation of the main graph
    /// (ProAct's HyReLU, 2024: the last activation feeds the classifier, where a fault that
    /// gets through does the most harm, and its neuron bounds cost few parameters).
    Hybrid,
}

impl std::fmt::Display for Granularity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Granularity::Layer => "layer",
            Granularity::Channel => "channel",
            Granularity::Neuron => "neuron",
            Granularity::Hybrid => "hybrid",
        })
    }
}

/// The granularity each of `sites` gets: `granularity` itself, or for `Hybrid` the layer
/// everywhere but at the last activation of the main graph (in node order; the last of all
/// when none is in the main graph; logits and conv outputs are not activations), which gets
/// one bound per neuron.
pub fn site_granularities(granularity: Granularity, sites: &[ActivationSite]) -> Vec<Granularity> {
    if granularity != Granularity::Hybrid {
        return vec![granularity; sites.len()];
    }
    let activation = |s: &ActivationSite| s.kind.is_activation();
    let last = sites
        .iter()
        .rposition(|s| s.graph.is_main() && activation(s))
        .or_else(|| sites.iter().rposition(activation));
    (0..sites.len())
        .map(|i| {
            if Some(i) == last {
                Granularity::Neuron
            } else {
                Granularity::Layer
            }
        })
        .collect()
}

/// The bound for one activation: the maxima reduced to `granularity`, scaled by
/// `1 + margin`, and never below 0 (a neuron that never fired gets bound 0, which changes
/// nothing on clean data: its Relu output was 0 already).
///
/// Shapes: layer `[]`; channel `[C, 1, ..]` with one 1 per remaining sample axis, so it
/// broadcasts against `[N, C, ..]`; neuron the sample shape itself.
pub fn bound_from_maxima(neuron_max: &ArrayD<f32>, granularity: Granularity, margin: f32) -> Bound {
    let scale = |v: f32| if v > 0.0 { v * (1.0 + margin) } else { 0.0 };
    let (dims, values) = reduce(neuron_max, granularity, f32::NEG_INFINITY, f32::max);
    Bound {
        dims,
        values: values.into_iter().map(scale).collect(),
        low: None,
    }
}

/// A two-sided bound `[low, high]` from the per-neuron minima and maxima, reduced to
/// `granularity` and widened on each side by `margin` times the larger magnitude of the two
/// ends (the same numerical headroom `bound_from_maxima` leaves above a maximum).
pub fn bound_from_range(
    neuron_min: &ArrayD<f32>,
    neuron_max: &ArrayD<f32>,
    granularity: Granularity,
    margin: f32,
) -> Bound {
    let (dims, high) = reduce(neuron_max, granularity, f32::NEG_INFINITY, f32::max);
    let (_, low) = reduce(neuron_min, granularity, f32::INFINITY, f32::min);
    let (low, high): (Vec<f32>, Vec<f32>) = low
        .iter()
        .zip(&high)
        .map(|(l, h)| {
            let slack = margin.max(0.0) * l.abs().max(h.abs());
            (l - slack, h + slack)
        })
        .unzip();
    Bound {
        dims,
        values: high,
        low: Some(low),
    }
}

/// `values` reduced with `fold` (from `start`) to the granularity's dims (`Hybrid`, which
/// callers resolve per site with `site_granularities`, reduces as `Layer`).
fn reduce(
    values: &ArrayD<f32>,
    granularity: Granularity,
    start: f32,
    fold: fn(f32, f32) -> f32,
) -> (Vec<i64>, Vec<f32>) {
    let channel_axis = values.ndim() >= 1;
    match granularity {
        Granularity::Channel if channel_axis => {
            let dims = std::iter::once(values.shape()[0] as i64)
                .chain(std::iter::repeat_n(1, values.ndim() - 1))
                .collect();
            let reduced = values
                .axis_iter(Axis(0))
                .map(|c| c.iter().copied().fold(start, fold))
                .collect();
            (dims, reduced)
        }
        Granularity::Neuron if channel_axis => (
            values.shape().iter().map(|d| *d as i64).collect(),
            values.iter().copied().collect(),
        ),
        _ => (Vec::new(), vec![values.iter().copied().fold(start, fold)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn reduces_to_each_granularity_with_broadcastable_shapes() {
        // 2 channels, 1x2 spatial: channel 0 max 3, channel 1 never fires.
        let max = array![[[1.0f32, 3.0]], [[-2.0, -1.0]]].into_dyn();
        let layer = bound_from_maxima(&max, Granularity::Layer, 0.0);
        assert_eq!((layer.dims, layer.values), (vec![], vec![3.0]));
        let channel = bound_from_maxima(&max, Granularity::Channel, 0.5);
        assert_eq!((channel.dims, channel.values), (vec![2, 1, 1], vec![4.5, 0.0]));
        let neuron = bound_from_maxima(&max, Granularity::Neuron, 0.0);
        assert_eq!((neuron.dims, neuron.values), (vec![2, 1, 2], vec![1.0, 3.0, 0.0, 0.0]));
        // An NC activation: one value per feature, shape [C].
        let fc = array![0.5f32, 2.0].into_dyn();
        assert_eq!(bound_from_maxima(&fc, Granularity::Channel, 0.0).dims, vec![2]);
    }

    #[test]
    fn two_sided_bounds_reduce_both_ends_and_widen_by_the_margin() {
        let max = array![[1.0f32, 3.0], [0.5, -0.25]].into_dyn();
        let min = array![[-2.0f32, 0.0], [-0.5, -1.0]].into_dyn();
        let channel = bound_from_range(&min, &max, Granularity::Channel, 0.0);
        assert_eq!(channel.dims, vec![2, 1]);
        assert_eq!(
            (channel.low.unwrap(), channel.values),
            (vec![-2.0, -1.0], vec![3.0, 0.5])
        );
        let layer = bound_from_range(&min, &max, Granularity::Layer, 0.5);
        // Widened by half of max(|-2|, |3|) on both sides.
        assert_eq!((layer.low.unwrap(), layer.values), (vec![-3.5], vec![4.5]));
        let neuron = bound_from_range(&min, &max, Granularity::Neuron, 0.0);
        assert_eq!(neuron.low.unwrap(), vec![-2.0, 0.0, -0.5, -1.0]);
    }

    #[test]
    fn hybrid_is_layer_everywhere_and_neuron_at_the_last_main_graph_activation() {
        use fitact_passes::activations::ActivationKind;
        use fitact_passes::graph::GraphPath;
        let site = |node: usize, graph: GraphPath| ActivationSite {
            kind: ActivationKind::Relu,
            form: "Relu",
            graph,
            node,
            op_type: "Relu".into(),
            nodes: vec![node],
            node_name: format!("r{node}"),
            input: format!("x{node}"),
            output: format!("y{node}"),
            nonnegative: true,
        };
        let main = GraphPath::default();
        let sites = [site(0, main.clone()), site(1, main.clone()), site(2, main)];
        assert_eq!(
            site_granularities(Granularity::Hybrid, &sites),
            vec![Granularity::Layer, Granularity::Layer, Granularity::Neuron]
        );
        assert_eq!(
            site_granularities(Granularity::Channel, &sites),
            vec![Granularity::Channel; 3]
        );
        assert!(site_granularities(Granularity::Hybrid, &[]).is_empty());
    }
}
