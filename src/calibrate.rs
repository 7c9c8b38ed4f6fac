//! Calibration: run samples through tract and record, in one pass, the maximum of every
//! observed activation per neuron (every non-batch element). Per-channel and per-layer maxima
//! are reductions of the per-neuron one (`bounds`), so nothing else needs to be kept.

use crate::dataset::Samples;
use crate::runtime::{Outputs, Runner, RuntimeError};
use fitact_passes::onnx::ModelProto;
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{ArrayD, Axis, Zip};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CalibrateError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("tensor '{tensor}' is {found}, expected float32 activations")]
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
}

/// The per-neuron maximum of one activation tensor over all samples.
#[derive(Debug, Clone)]
pub struct ActivationMax {
    pub tensor: String,
    /// Shape of one sample's activation (the tensor's shape without the batch axis).
    pub shape: Vec<usize>,
    pub neuron_max: ArrayD<f32>,
    /// How many NaN or infinite values the clean samples produced (should be 0).
    pub nonfinite: usize,
}

#[derive(Debug, Clone)]
pub struct Calibration {
    pub samples: usize,
    pub batch_size: usize,
    pub activations: Vec<ActivationMax>,
}

pub struct CalibrateOptions {
    pub batch_size: usize,
    pub progress: bool,
}

/// Runs every sample through `model` and returns the per-neuron maxima of `tensors`.
pub fn calibrate(
    model: &ModelProto,
    samples: &Samples,
    tensors: &[String],
    options: &CalibrateOptions,
) -> Result<Calibration, CalibrateError> {
    let runner = Runner::new(model, &samples.sample_shapes(), Outputs::Tensors(tensors))?;
    let batch_size = runner.batch_size(options.batch_size);
    let batches = samples.count.div_ceil(batch_size);
    let progress = if options.progress && batches > 4 {
        ProgressBar::new(samples.count as u64).with_style(
            ProgressStyle::with_template("calibrating {bar:30} {pos}/{len} samples, {eta} left")
                .expect("valid template"),
        )
    } else {
        ProgressBar::hidden()
    };

    let mut maxima: Vec<Option<ActivationMax>> = vec![None; tensors.len()];
    for start in (0..samples.count).step_by(batch_size) {
        let end = (start + batch_size).min(samples.count);
        let (outputs, valid) = runner.run(samples.slice(start, end))?;
        for ((slot, value), name) in maxima.iter_mut().zip(&outputs).zip(tensors) {
            let view =
                value
                    .to_plain_array_view::<f32>()
                    .map_err(|_| CalibrateError::NotFloat {
                        tensor: name.clone(),
                        found: format!("{:?}", value.datum_type()),
                    })?;
            let shape = view.shape();
            if shape.first() != Some(&runner.batch_size(end - start)) {
                return Err(CalibrateError::NoBatchAxis {
                    tensor: name.clone(),
                    shape: shape.to_vec(),
                    batch: end - start,
                });
            }
            let acc = slot.get_or_insert_with(|| ActivationMax {
                tensor: name.clone(),
                shape: shape[1..].to_vec(),
                neuron_max: ArrayD::from_elem(&shape[1..], f32::NEG_INFINITY),
                nonfinite: 0,
            });
            if acc.shape != shape[1..] {
                return Err(CalibrateError::ShapeChanged {
                    tensor: name.clone(),
                    expected: acc.shape.clone(),
                    found: shape[1..].to_vec(),
                });
            }
            for row in view.axis_iter(Axis(0)).take(valid) {
                Zip::from(&mut acc.neuron_max).and(&row).for_each(|m, &v| {
                    if v > *m {
                        *m = v;
                    }
                    if !v.is_finite() {
                        acc.nonfinite += 1;
                    }
                });
            }
        }
        progress.inc((end - start) as u64);
    }
    progress.finish_and_clear();
    Ok(Calibration {
        samples: samples.count,
        batch_size,
        activations: maxima
            .into_iter()
            .map(|m| m.expect("at least one batch ran"))
            .collect(),
    })
}
