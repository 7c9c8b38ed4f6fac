//! The pipeline around `harden`: calibration from an image folder, the CI gate's three exit
//! codes, byte-identical reruns, the HTML/SVG reports rendered in headless Chromium, the
//! command line itself (version, examples, completions) and its verbosity.

mod common;

use common::{cli, fixture, harden_ok};
use ndarray::{ArrayD, Axis, s};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The first `count` test images as PNGs in class folders `00`..`09`, and the same images as
/// a float .npy (pixels / 255, as the fixtures are) with its labels.
fn image_folder(dir: &Path, count: usize) -> (PathBuf, PathBuf, PathBuf) {
    let x: ArrayD<f32> = ndarray_npy::read_npy(fixture("test.npy")).unwrap();
    let y: ndarray::Array1<i64> = ndarray_npy::read_npy(fixture("test_labels.npy")).unwrap();
    let folder = dir.join("images");
    for i in 0..count {
        let class = folder.join(format!("{:02}", y[i]));
        std::fs::create_dir_all(&class).unwrap();
        let pixels: Vec<u8> = x
            .index_axis(Axis(0), i)
            .iter()
            .map(|v| (v * 255.0).round() as u8)
            .collect();
        image::GrayImage::from_raw(28, 28, pixels)
            .unwrap()
            .save(class.join(format!("{i:04}.png")))
            .unwrap();
    }
    let npy = dir.join("images.npy");
    // The folder is read in path order: class by class, then by index.
    let mut order: Vec<usize> = (0..count).collect();
    order.sort_by_key(|i| (y[*i], *i));
    let xs: Vec<_> = order.iter().map(|i| x.index_axis(Axis(0), *i)).collect();
    ndarray_npy::write_npy(&npy, &ndarray::stack(Axis(0), &xs).unwrap()).unwrap();
    let labels = dir.join("images_labels.npy");
    ndarray_npy::write_npy(&labels, &order.iter().map(|i| y[*i]).collect::<ndarray::Array1<i64>>()).unwrap();
    (folder, npy, labels)
}

#[test]
fn an_image_folder_calibrates_exactly_like_the_same_pixels_in_npy() {
    let dir = tempfile::tempdir().unwrap();
    let (folder, npy, labels) = image_folder(dir.path(), 60);
    let from_images = dir.path().join("from_images.onnx");
    let from_npy = dir.path().join("from_npy.onnx");
    harden_ok(&fixture("alexnet.onnx"), &from_images, &folder, &[]);
    harden_ok(&fixture("alexnet.onnx"), &from_npy, &npy, &[]);
    assert!(
        std::fs::read(&from_images).unwrap() == std::fs::read(&from_npy).unwrap(),
        "same pixels, same hardened model"
    );

    // Class folders are labels: evaluate reads them as it reads a labels file.
    let campaign = |data: &Path, extra: &[&str]| -> serde_json::Value {
        let report = dir.path().join("campaign.json");
        let mut args = vec![
            "evaluate",
            from_images.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--ber",
            "1e-6",
            "--trials",
            "2",
            "-q",
            "--report",
            report.to_str().unwrap(),
        ];
        args.extend(extra);
        let run = cli(&args);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap()
    };
    let by_folder = campaign(&folder, &[]);
    let by_file = campaign(&npy, &["--labels", labels.to_str().unwrap()]);
    assert!(
        by_folder["config"]["labels"]
            .as_str()
            .unwrap()
            .starts_with("class folders of")
    );
    assert_eq!(by_folder["results"], by_file["results"]);
    assert!(by_folder["results"][0]["clean_accuracy"].as_f64().unwrap() > 0.8);
}

fn gate(model: &Path, data: &Path, labels: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let reference = fixture("alexnet.onnx");
    let mut args = vec![
        "check",
        model.to_str().unwrap(),
        "--reference",
        reference.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
    ];
    args.extend(extra);
    let run = cli(&args);
    (
        run.status.code(),
        String::from_utf8_lossy(&run.stdout).into_owned(),
        String::from_utf8_lossy(&run.stderr).into_owned(),
    )
}

#[test]
fn the_gate_passes_fails_and_errs_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("test200.npy");
    let labels = dir.path().join("test200_labels.npy");
    let x: ArrayD<f32> = ndarray_npy::read_npy(fixture("test.npy")).unwrap();
    let y: ndarray::Array1<i64> = ndarray_npy::read_npy(fixture("test_labels.npy")).unwrap();
    ndarray_npy::write_npy(&data, &x.slice_axis(Axis(0), (0..200).into()).to_owned()).unwrap();
    ndarray_npy::write_npy(&labels, &y.slice(s![0..200]).to_owned()).unwrap();
    let good = dir.path().join("good.onnx");
    let tight = dir.path().join("tight.onnx");
    harden_ok(&fixture("alexnet.onnx"), &good, &fixture("calib.npy"), &[]);
    // Bounds at a tenth of the calibrated maxima cut the activations the model needs.
    harden_ok(
        &fixture("alexnet.onnx"),
        &tight,
        &fixture("calib.npy"),
        &["--margin", "-0.9"],
    );

    let report = dir.path().join("check.json");
    let (code, stdout, _) = gate(
        &good,
        &data,
        &labels,
        &["--max-accuracy-drop", "0.5%", "--report", report.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.starts_with("PASS: accuracy "), "{stdout}");
    assert_eq!(stdout.lines().count(), 1);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(
        (json["passed"].as_bool(), json["metric"].as_str()),
        (Some(true), Some("accuracy"))
    );

    let (code, stdout, _) = gate(&tight, &data, &labels, &[]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.starts_with("FAIL: accuracy "), "{stdout}");

    // The resilience floor: the unprotected model at BER 3e-5 is far below 90%.
    let (code, stdout, _) = gate(
        &fixture("alexnet.onnx"),
        &data,
        &labels,
        &["--ber", "3e-5", "--min-accuracy", "90%", "--trials", "3"],
    );
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("below the floor of 90.00%"), "{stdout}");
    let (code, stdout, _) = gate(
        &good,
        &data,
        &labels,
        &["--ber", "1e-6", "--min-accuracy", "50%", "--trials", "3"],
    );
    assert_eq!(code, Some(0), "{stdout}");

    let missing = dir.path().join("missing.npy");
    let (code, stdout, stderr) = gate(&good, &missing, &labels, &[]);
    assert_eq!(code, Some(2));
    assert!(stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("missing.npy"), "{stderr}");
}

#[test]
fn the_same_inputs_and_flags_give_a_byte_identical_model() {
    let dir = tempfile::tempdir().unwrap();
    let labels = fixture("calib_labels.npy");
    for flags in [
        &["--method", "fitact"][..],
        &["--method", "ranger", "--granularity", "neuron"],
        &["--search", "--max-evals", "12", "--labels", labels.to_str().unwrap()],
    ] {
        let outputs: Vec<Vec<u8>> = (0..2)
            .map(|run| {
                let out = dir.path().join(format!("run{run}.onnx"));
                harden_ok(&fixture("resnet.onnx"), &out, &fixture("calib.npy"), flags);
                std::fs::read(out).unwrap()
            })
            .collect();
        assert!(outputs[0] == outputs[1], "{flags:?}: the two runs differ");
    }
}

/// A screenshot of `page` in headless Chromium (Debian's `chromium`; scripts/test installs it).
fn screenshot(page: &Path, png: &Path) -> image::RgbImage {
    let profile = tempfile::tempdir().unwrap();
    let run = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1000,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs (Debian package chromium: scripts/test installs it)");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    image::open(png).unwrap().to_rgb8()
}

/// How much of the image is not background, and how many colours it uses.
fn ink(image: &image::RgbImage) -> (f64, usize) {
    let background = *image.get_pixel(0, 0);
    let inked = image.pixels().filter(|p| **p != background).count();
    let colours: std::collections::HashSet<[u8; 3]> = image.pixels().map(|p| p.0).collect();
    (inked as f64 / image.pixels().len() as f64, colours.len())
}

#[test]
fn the_html_page_and_its_plot_render_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let hardened = dir.path().join("hardened.onnx");
    harden_ok(&fixture("alexnet.onnx"), &hardened, &fixture("calib.npy"), &[]);
    let (folder, _, _) = image_folder(dir.path(), 40);
    let (html, svg) = (dir.path().join("campaign.html"), dir.path().join("campaign.svg"));
    let run = cli(&[
        "evaluate",
        fixture("alexnet.onnx").to_str().unwrap(),
        hardened.to_str().unwrap(),
        "--data",
        folder.to_str().unwrap(),
        "--ber",
        "1e-6,1e-5",
        "--trials",
        "3",
        "-q",
        "--html",
        html.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && page.contains("hardened.onnx") && page.matches("<tr>").count() == 5);
    assert!(!page.contains("<script") && !page.contains("src=\""), "self-contained");

    for (name, file) in [("page", &html), ("plot", &svg)] {
        let shot = screenshot(file, &dir.path().join(format!("{name}.png")));
        let (inked, colours) = ink(&shot);
        assert!(
            inked > 0.02,
            "{name}: only {:.2}% of the screenshot is drawn",
            100.0 * inked
        );
        assert!(colours > 8, "{name}: {colours} colours");
    }
}

#[test]
fn version_examples_and_completions() {
    let run = cli(&["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        format!("fitact-onnx {}", env!("CARGO_PKG_VERSION"))
    );
    for command in ["harden", "evaluate", "merge", "check", "inspect", "completions"] {
        let help = String::from_utf8_lossy(&cli(&[command, "--help"]).stdout).into_owned();
        assert!(help.contains("Example"), "{command} --help has no example:\n{help}");
        assert!(help.contains(&format!("fitact-onnx {command}")), "{command}: {help}");
    }
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let run = cli(&["completions", shell]);
        let script = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success() && script.contains("fitact-onnx"), "{shell}");
        assert!(
            script.contains("max-accuracy-drop"),
            "{shell}: check's flags are completed"
        );
    }
}

#[test]
fn verbosity_is_chosen_and_no_progress_bar_reaches_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let (model, calib) = (fixture("alexnet.onnx"), fixture("calib.npy"));
    let run = |flags: &[&str]| {
        let mut args = vec![
            "harden",
            model.to_str().unwrap(),
            out.to_str().unwrap(),
            "--calib",
            calib.to_str().unwrap(),
        ];
        args.extend(flags);
        let run = cli(&args);
        assert!(run.status.success());
        String::from_utf8_lossy(&run.stderr).into_owned()
    };
    let quiet = run(&["-q"]);
    assert!(quiet.is_empty(), "{quiet}");
    let normal = run(&[]);
    assert!(
        normal.contains("7 Relu(s) bounded") && !normal.contains("INFO"),
        "{normal}"
    );
    assert!(
        !normal.contains("calibrating"),
        "no progress bar when stderr is not a terminal"
    );
    let verbose = run(&["-v"]);
    assert!(verbose.contains("[INFO ] calibrated on 512 samples"), "{verbose}");
    assert!(!verbose.contains("DEBUG"));
    let debug = run(&["-vv"]);
    assert!(debug.contains("[DEBUG] found Relu"), "{debug}");
}
