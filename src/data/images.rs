//! Sample sets from a folder of images: every PNG or JPEG under the folder (recursively, in
//! path order) becomes one sample of the model's single image input. Images are resized so
//! they cover the model's height and width, centre-cropped to it, converted to grey or RGB
//! (by the model's channel count) and to float by `(pixel / divisor - mean[c]) / std[c]`
//! (`pixel * scale` instead of `pixel / divisor` when a scale is given).
//! When the images sit in sub-folders, each first-level sub-folder is a class and its index
//! (sub-folders in name order) is the sample's label, as torchvision's `ImageFolder` does.

use crate::data::cap::{Budget, DataCap, held};
use crate::data::dataset::Samples;
use clap::ValueEnum;
use image::imageops::FilterType;
use ndarray::{Array4, ArrayD};
use serde::Serialize;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// Where the channel axis is in the model's image input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// Usual conventions for turning 8-bit pixels into model inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// [0, 1]: pixel / 255.
    Unit,
    /// [-1, 1]: (pixel / 255 - 0.5) / 0.5.
    Symmetric,
    /// torchvision's ImageNet normalisation: (pixel / 255 - mean) / std, per RGB channel.
    Imagenet,
    /// The pixel values themselves, 0 to 255.
    Raw,
}

impl Preset {
    /// (divisor, mean, std) of the preset. Pixels are divided (not multiplied by 1/255), so
    /// that `unit` gives exactly the floats of `uint8 / 255` that numpy pipelines give.
    pub fn parameters(self) -> (f32, Vec<f32>, Vec<f32>) {
        match self {
            Preset::Unit => (255.0, vec![0.0], vec![1.0]),
            Preset::Symmetric => (255.0, vec![0.5], vec![0.5]),
            Preset::Imagenet => (255.0, vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225]),
            Preset::Raw => (1.0, vec![0.0], vec![1.0]),
        }
    }
}

/// How pixels become model inputs: a preset, each part of which may be overridden.
#[derive(Debug, Clone, Default)]
pub struct ImageOptions {
    pub preset: Option<Preset>,
    pub scale: Option<f32>,
    /// One value for every channel, or one per channel.
    pub mean: Option<Vec<f32>>,
    pub std: Option<Vec<f32>>,
    /// Default: from the model's input shape (a channel axis of 1 or 3 after the batch axis
    /// is NCHW, else NHWC).
    pub layout: Option<Layout>,
}

/// Images read from a folder, ready to feed.
pub struct ImageSet {
    pub samples: Samples,
    /// One label per sample when the images sit in class sub-folders.
    pub labels: Option<Vec<usize>>,
    /// The class sub-folder names, in label order.
    pub classes: Vec<String>,
    pub files: Vec<PathBuf>,
}

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The image files under `dir`, in path order.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir).follow_links(true).sort_by_file_name() {
        let entry = entry.map_err(|e| e.to_string())?;
        let is_image = entry
            .path()
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if entry.file_type().is_file() && is_image {
            files.push(entry.into_path());
        }
    }
    Ok(files)
}

/// The geometry of the model's image input: (channels, height, width, layout).
fn geometry(dims: &[Option<i64>], layout: Option<Layout>) -> Result<(usize, usize, usize, Layout), String> {
    let shown = || {
        let parts: Vec<String> = dims.iter().map(|d| d.map_or("?".into(), |d| d.to_string())).collect();
        format!("[{}]", parts.join(", "))
    };
    if dims.len() != 4 {
        return Err(format!(
            "the model's input has shape {}, not an image batch [N, C, H, W] or [N, H, W, C]",
            shown()
        ));
    }
    let layout = layout.unwrap_or(if matches!(dims[1], Some(1 | 3)) {
        Layout::Nchw
    } else {
        Layout::Nhwc
    });
    let (c, h, w) = match layout {
        Layout::Nchw => (dims[1], dims[2], dims[3]),
        Layout::Nhwc => (dims[3], dims[1], dims[2]),
    };
    match (c, h, w) {
        (Some(c @ (1 | 3)), Some(h), Some(w)) if h > 0 && w > 0 => Ok((c as usize, h as usize, w as usize, layout)),
        (Some(c), Some(_), Some(_)) if c != 1 && c != 3 => Err(format!(
            "the model's input {} has {c} channels in {layout:?} layout; images give 1 (grey) or 3 (RGB)",
            shown()
        )),
        _ => Err(format!(
            "the model's input {} does not fix the image height, width and channels",
            shown()
        )),
    }
}

/// One value per channel from a list of one or `channels` values.
fn per_channel(values: &[f32], channels: usize, what: &str) -> Result<Vec<f32>, String> {
    match values.len() {
        1 => Ok(vec![values[0]; channels]),
        n if n == channels => Ok(values.to_vec()),
        n => Err(format!(
            "--{what} has {n} values; the model's input has {channels} channels"
        )),
    }
}

/// Reads every image under `dir` for the model input `input` whose declared dimensions are
/// `dims` (batch axis included), into at most `cap` of memory.
pub fn load_images(
    dir: &Path,
    input: &str,
    dims: &[Option<i64>],
    options: &ImageOptions,
    cap: DataCap,
) -> Result<ImageSet, ImageError> {
    let invalid = |reason: String| ImageError::Invalid {
        path: dir.display().to_string(),
        reason,
    };
    let (channels, height, width, layout) =
        geometry(dims, options.layout).map_err(|r| invalid(format!("input '{input}': {r}")))?;
    let (divisor, preset_mean, preset_std) = options.preset.unwrap_or(Preset::Unit).parameters();
    let to_float = |pixel: u8| match options.scale {
        Some(scale) => f32::from(pixel) * scale,
        None => f32::from(pixel) / divisor,
    };
    let mean = per_channel(options.mean.as_deref().unwrap_or(&preset_mean), channels, "mean").map_err(invalid)?;
    let std = per_channel(options.std.as_deref().unwrap_or(&preset_std), channels, "std").map_err(invalid)?;
    if let Some(bad) = std.iter().find(|s| !(s.is_finite() && **s != 0.0)) {
        return Err(invalid(format!("--std {bad} cannot divide")));
    }

    let files = image_files(dir).map_err(invalid)?;
    if files.is_empty() {
        return Err(invalid(format!("no image ({}) in this folder", EXTENSIONS.join(", "))));
    }
    let class_of = |file: &Path| -> Option<String> {
        let relative = file.strip_prefix(dir).ok()?;
        let mut parts = relative.components();
        let first = parts.next()?;
        parts.next().map(|_| first.as_os_str().to_string_lossy().into_owned())
    };
    let mut classes: Vec<String> = files.iter().filter_map(|f| class_of(f)).collect();
    classes.sort();
    classes.dedup();
    let labels = if classes.is_empty() {
        None
    } else {
        let labels = files
            .iter()
            .map(|f| {
                class_of(f).and_then(|c| classes.binary_search(&c).ok()).ok_or_else(|| {
                    invalid(format!(
                        "{} is not inside a class sub-folder, unlike the others",
                        f.display()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Some(labels)
    };

    let values = [files.len(), channels, height, width]
        .iter()
        .try_fold(1usize, |n, d| n.checked_mul(*d));
    Budget::new(cap)
        .charge(
            &format!(
                "{} image{} of {channels}x{height}x{width} float32",
                files.len(),
                if files.len() == 1 { "" } else { "s" }
            ),
            values.and_then(|v| held(v, 4)),
        )
        .map_err(invalid)?;
    let mut batch = Array4::<f32>::zeros((files.len(), channels, height, width));
    for (index, file) in files.iter().enumerate() {
        let image = image::open(file).map_err(|e| ImageError::Invalid {
            path: file.display().to_string(),
            reason: format!("not a readable image: {e}"),
        })?;
        let image = image.resize_to_fill(width as u32, height as u32, FilterType::Triangle);
        let pixels: Vec<u8> = if channels == 1 {
            image.to_luma8().into_raw()
        } else {
            image.to_rgb8().into_raw()
        };
        for (i, pixel) in pixels.iter().enumerate() {
            let (y, x, c) = (i / (width * channels), (i / channels) % width, i % channels);
            batch[[index, c, y, x]] = (to_float(*pixel) - mean[c]) / std[c];
        }
    }
    let array: ArrayD<f32> = match layout {
        Layout::Nchw => batch.into_dyn(),
        Layout::Nhwc => batch
            .permuted_axes([0, 2, 3, 1])
            .as_standard_layout()
            .to_owned()
            .into_dyn(),
    };
    Ok(ImageSet {
        samples: Samples::batched(vec![(input.to_owned(), array)]),
        labels,
        classes,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, width: u32, height: u32, value: impl Fn(u32, u32) -> [u8; 3]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_fn(width, height, |x, y| image::Rgb(value(x, y)))
            .save(path)
            .unwrap();
    }

    #[test]
    fn class_folders_give_labels_and_pixels_are_normalised() {
        let dir = tempfile::tempdir().unwrap();
        write_png(&dir.path().join("cat/a.png"), 4, 4, |_, _| [255, 0, 51]);
        write_png(&dir.path().join("ant/b.png"), 4, 4, |x, _| [0, (x * 60) as u8, 0]);
        write_png(&dir.path().join("ant/c.PNG"), 4, 4, |_, _| [0, 0, 0]);
        std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
        let dims = [None, Some(3), Some(4), Some(4)];
        let set = load_images(dir.path(), "x", &dims, &ImageOptions::default(), DataCap::DEFAULT).unwrap();
        assert_eq!(set.classes, ["ant", "cat"]);
        assert_eq!(set.labels, Some(vec![0, 0, 1]));
        let x = set.samples.inputs[0].1.view::<f32>().unwrap();
        assert_eq!(x.shape(), [3, 3, 4, 4]);
        assert_eq!(x[[2, 0, 1, 1]], 1.0);
        assert_eq!(x[[2, 2, 3, 3]], 51.0 / 255.0);
        assert_eq!(x[[0, 1, 0, 3]], 180.0 / 255.0);

        let imagenet = ImageOptions {
            preset: Some(Preset::Imagenet),
            layout: Some(Layout::Nhwc),
            ..Default::default()
        };
        let set = load_images(
            dir.path(),
            "x",
            &[None, Some(4), Some(4), Some(3)],
            &imagenet,
            DataCap::DEFAULT,
        )
        .unwrap();
        let x = set.samples.inputs[0].1.view::<f32>().unwrap();
        assert_eq!(x.shape(), [3, 4, 4, 3]);
        assert!((x[[2, 0, 0, 0]] - (1.0 - 0.485) / 0.229).abs() < 1e-5);
    }

    #[test]
    fn images_are_resized_to_cover_and_centre_cropped_in_grey() {
        let dir = tempfile::tempdir().unwrap();
        // 8 wide, 4 high: left half black, right half white; the centre crop keeps both.
        write_png(
            &dir.path().join("a.png"),
            8,
            4,
            |x, _| if x < 4 { [0; 3] } else { [255; 3] },
        );
        let set = load_images(
            dir.path(),
            "x",
            &[Some(1), Some(1), Some(2), Some(2)],
            &ImageOptions::default(),
            DataCap::DEFAULT,
        )
        .unwrap();
        assert_eq!(set.labels, None);
        let x = set.samples.inputs[0].1.view::<f32>().unwrap();
        assert_eq!(x.shape(), [1, 1, 2, 2]);
        assert!(x[[0, 0, 0, 0]] < 0.2 && x[[0, 0, 0, 1]] > 0.8, "{x:?}");
    }

    #[test]
    fn what_does_not_fit_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = |dims: &[Option<i64>], options: &ImageOptions| {
            load_images(dir.path(), "x", dims, options, DataCap::DEFAULT)
                .err()
                .unwrap()
                .to_string()
        };
        let image_dims = [None, Some(3), Some(4), Some(4)];
        assert!(err(&image_dims, &ImageOptions::default()).contains("no image (png, jpg, jpeg) in this folder"));
        write_png(&dir.path().join("a.png"), 4, 4, |_, _| [1; 3]);
        assert!(err(&[None, Some(10)], &ImageOptions::default()).contains("not an image batch"));
        assert!(err(&[None, Some(3), None, None], &ImageOptions::default()).contains("does not fix the image height"));
        let two_means = ImageOptions {
            mean: Some(vec![0.1, 0.2]),
            ..Default::default()
        };
        assert!(err(&image_dims, &two_means).contains("--mean has 2 values; the model's input has 3 channels"));
        // A model that declares huge images is refused before the batch is allocated.
        let huge = [None, Some(3), Some(1 << 20), Some(1 << 20)];
        assert!(
            err(&huge, &ImageOptions::default())
                .contains("1 image of 3x1048576x1048576 float32 would take 12.0 TiB, over the 4.0 GiB data cap"),
            "{}",
            err(&huge, &ImageOptions::default())
        );
        write_png(&dir.path().join("sub/b.png"), 4, 4, |_, _| [1; 3]);
        assert!(err(&image_dims, &ImageOptions::default()).contains("a.png is not inside a class sub-folder"));
        std::fs::write(dir.path().join("sub/c.jpg"), "garbage").unwrap();
        std::fs::remove_file(dir.path().join("a.png")).unwrap();
        assert!(err(&image_dims, &ImageOptions::default()).contains("c.jpg: not a readable image"));
    }
}
