//! Argument groups that several commands flatten into their own: how images become inputs,
//! which engine runs the models, and the data a command runs with its labels.

use crate::data::cap::DataCap;
use crate::data::images::{ImageOptions, Layout, Preset};
use crate::engine::{Engine, EngineChoice};
use crate::replay::judge::SdcRule;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// How a folder of images becomes model inputs (ignored for .npy/.npz data).
#[derive(Args, Clone)]
pub struct ImageArgs {
    /// Pixel convention: unit = [0, 1], symmetric = [-1, 1], imagenet = ImageNet mean/std,
    /// raw = 0 to 255. --scale, --mean and --std override its parts.
    #[arg(long, value_enum, default_value_t = Preset::Unit)]
    preset: Preset,
    /// Multiply pixels (0 to 255) by this before the mean is subtracted.
    #[arg(long)]
    scale: Option<f32>,
    /// Mean subtracted per channel: one value or one per channel, comma-separated.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    mean: Option<Vec<f32>>,
    /// Divisor per channel: one value or one per channel, comma-separated.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    std: Option<Vec<f32>>,
    /// Channel axis of the model input (default: from its shape).
    #[arg(long, value_enum)]
    layout: Option<Layout>,
}

impl ImageArgs {
    pub fn options(self) -> ImageOptions {
        ImageOptions {
            preset: Some(self.preset),
            scale: self.scale,
            mean: self.mean,
            std: self.std,
            layout: self.layout,
        }
    }
}

/// Which engine runs the models.
#[derive(Args, Clone)]
pub struct EngineArgs {
    /// auto: onnxruntime when its library is found (-v says where), tract (built in) otherwise.
    #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
    engine: EngineChoice,
    /// The onnxruntime library (libonnxruntime.so*). Default: ORT_DYLIB_PATH, else the
    /// onnxruntime package of the python3 on PATH (pip install onnxruntime), else the system's.
    #[arg(long)]
    ort_lib: Option<PathBuf>,
}

impl EngineArgs {
    pub fn engine(&self) -> Result<Engine> {
        Ok(Engine::select(self.engine, self.ort_lib.as_deref())?)
    }
}

/// The samples a command runs, and their labels.
#[derive(Args, Clone)]
pub struct DataArgs {
    /// Samples: .npy for a single-input model, .npz with one array per input name (any
    /// numeric dtype, converted to the input's type where lossless; (N, *shape after the
    /// batch axis) for batched inputs, (N, *whole input shape) for inputs with no batch axis
    /// in front, fed one sample at a time), or a folder of PNG/JPEG images (class
    /// sub-folders give the labels).
    #[arg(long)]
    pub data: PathBuf,
    /// Labels (int64 or int32 .npy, one per sample) for accuracy; SDC needs none.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    #[command(flatten)]
    pub images: ImageArgs,
    #[command(flatten)]
    pub cap: DataCapArgs,
}

/// The memory a data set may take (--data, --calib, --labels).
#[derive(Args, Clone)]
pub struct DataCapArgs {
    /// The most memory the samples may take once read, e.g. 512MiB, 2GiB, 4G or bytes; a
    /// file, archive member or image folder over it is refused before it is read. Counted
    /// as the arrays are read, before conversion to the input's type: 4 bytes a value for
    /// float16/float32, 8 for float64 and any integer type, 1 for bool.
    #[arg(long = "max-data-memory", value_name = "SIZE", default_value = "4GiB", value_parser = DataCap::parse)]
    pub max_data_memory: DataCap,
}

/// What counts as a changed prediction on the judged output (SDC, disagreement).
#[derive(Args, Clone)]
pub struct SdcArgs {
    /// auto: top1 for an output of rank 2 ([N, classes]), tolerance for any other (boxes,
    /// sequences, masks); top1: the top-1 class differs; tolerance: an element differs by
    /// more than --sdc-tolerance.
    #[arg(long, value_enum, default_value_t = SdcRule::Auto)]
    pub sdc: SdcRule,
    /// The largest difference per element that still counts as the same output, as a share
    /// of the output's fault-free range (max - min over the data), e.g. 1% or 0.01.
    #[arg(long, default_value = "1%", value_parser = super::values::parse_fraction)]
    pub sdc_tolerance: f64,
}
