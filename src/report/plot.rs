//! The campaign plot, as in the FitAct paper's figures: top-1 accuracy under faults against
//! the bit error rate (log axis), one line per model, with 95% confidence bars.

use crate::faults::CampaignReport;
use anyhow::{Result, anyhow, ensure};
use plotters::prelude::*;

const COLORS: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// The plot as an SVG document. Needs labels (accuracy) and BERs above 0.
pub fn accuracy_svg(report: &CampaignReport) -> Result<String> {
    let bers: Vec<f64> = report.config.bers.iter().copied().filter(|b| *b > 0.0).collect();
    ensure!(!bers.is_empty(), "the plot needs a BER above 0");
    ensure!(
        report.results.iter().all(|r| r.accuracy.is_some()),
        "the plot shows accuracy: give --labels"
    );
    let (lo, hi) = bers
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), b| (lo.min(*b), hi.max(*b)));
    let (lo, hi) = if lo == hi {
        (lo / 2.0, hi * 2.0)
    } else {
        (lo / 1.5, hi * 1.5)
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let title = format!(
            "Top-1 accuracy under {} weight bit flips ({} trials)",
            serde_json::to_value(report.config.format)?.as_str().unwrap_or_default(),
            report.config.trials
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0..100.0)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("bit error rate")
            .y_desc("top-1 accuracy (%)")
            .x_label_formatter(&|x| format!("{x:.0e}"))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        for (m, model) in report.models.iter().enumerate() {
            let color = COLORS[m % COLORS.len()];
            let points: Vec<(f64, f64, f64)> = report
                .results
                .iter()
                .filter(|r| r.model == model.model && r.ber > 0.0)
                .filter_map(|r| r.accuracy.map(|a| (r.ber, 100.0 * a.mean, 100.0 * a.ci95)))
                .collect();
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|p| (p.0, p.1)),
                    color.stroke_width(2),
                ))
                .map_err(|e| anyhow!("{e}"))?
                .label(legend_name(&model.model))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart
                .draw_series(points.iter().map(|p| Circle::new((p.0, p.1), 3, color.filled())))
                .map_err(|e| anyhow!("{e}"))?;
            chart
                .draw_series(
                    points.iter().map(|p| {
                        PathElement::new(vec![(p.0, (p.1 - p.2).max(0.0)), (p.0, (p.1 + p.2).min(100.0))], color)
                    }),
                )
                .map_err(|e| anyhow!("{e}"))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    Ok(svg)
}

/// A model's label in the legend: its file name (paths make the legend unreadable).
fn legend_name(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .map_or(path.to_owned(), |n| n.to_string_lossy().into_owned())
}
