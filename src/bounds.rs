//! From calibrated per-neuron maxima to bound tensors at a granularity: one scalar per layer,
//! one value per channel (axis 1 of the activation, axis 0 of a sample), or one per neuron.

use fitact_passes::bound_activations::Bound;
use ndarray::{ArrayD, Axis};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Layer,
    Channel,
    Neuron,
}

/// The bound for one activation: the maxima reduced to `granularity`, scaled by
/// `1 + margin`, and never below 0 (a neuron that never fired gets bound 0, which changes
/// nothing on clean data: its Relu output was 0 already).
///
/// Shapes: layer `[]`; channel `[C, 1, ..]` with one 1 per remaining sample axis, so it
/// broadcasts against `[N, C, ..]`; neuron the sample shape itself.
pub fn bound_from_maxima(neuron_max: &ArrayD<f32>, granularity: Granularity, margin: f32) -> Bound {
    let scale = |v: f32| if v > 0.0 { v * (1.0 + margin) } else { 0.0 };
    let channel_axis = neuron_max.ndim() >= 1;
    match granularity {
        Granularity::Channel if channel_axis => {
            let channels = neuron_max.shape()[0];
            let values = neuron_max
                .axis_iter(Axis(0))
                .map(|c| scale(c.iter().copied().fold(f32::NEG_INFINITY, f32::max)))
                .collect();
            let dims = std::iter::once(channels as i64)
                .chain(std::iter::repeat_n(1, neuron_max.ndim() - 1))
                .collect();
            Bound { dims, values }
        }
        Granularity::Neuron if channel_axis => Bound {
            dims: neuron_max.shape().iter().map(|d| *d as i64).collect(),
            values: neuron_max.iter().map(|v| scale(*v)).collect(),
        },
        _ => Bound::scalar(scale(neuron_max.iter().copied().fold(f32::NEG_INFINITY, f32::max))),
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
}
