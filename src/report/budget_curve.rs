//! The plot of `harden --max-overhead ... --plot-budget FILE`: resilience under faults against
//! latency overhead, one point per budget of the curve (measured overhead where timed, else
//! predicted), with full hardening's and the unprotected model's resilience as lines, the
//! budget asked for as a vertical line and the model written marked.

use crate::budget::BudgetReport;
use anyhow::{Result, anyhow, ensure};
use plotters::prelude::*;

const CURVE: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const FULL: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
const NONE: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const CHOSEN: RGBColor = RGBColor(0xff, 0x7f, 0x0e);

/// The plot as an SVG document; needs the report's curve (`--plot-budget`).
pub fn budget_svg(report: &BudgetReport) -> Result<String> {
    ensure!(!report.curve.is_empty(), "the budget report has no curve");
    let r = &report.resilience;
    let points: Vec<(f64, f64)> = report
        .curve
        .iter()
        .map(|p| {
            (
                100.0 * p.measured_overhead.unwrap_or(p.predicted_overhead),
                100.0 * p.resilience,
            )
        })
        .collect();
    let chosen = (
        100.0 * report.measured_overhead.unwrap_or(report.predicted_overhead),
        100.0 * r.chosen.mean,
    );
    let x_max = points
        .iter()
        .map(|p| p.0)
        .chain([chosen.0, 100.0 * report.max_overhead])
        .fold(1.0f64, f64::max)
        * 1.08;
    let x_min = points.iter().map(|p| p.0).fold(0.0f64, f64::min) - 1.0;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let title = format!(
            "{} under {:?} weight faults vs overhead in {}",
            r.metric, r.faults.format, report.runtime
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(x_min..x_max, 0.0..100.0)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc(if report.measured_overhead.is_some() {
                "overhead, measured (%)"
            } else {
                "overhead, predicted (%)"
            })
            .y_desc(format!("{} under faults (%)", r.metric))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        let mut level = |y: f64, color: RGBColor, label: String| -> Result<()> {
            chart
                .draw_series(LineSeries::new([(x_min, y), (x_max, y)], color.stroke_width(1)))
                .map_err(|e| anyhow!("{e}"))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            Ok(())
        };
        level(
            100.0 * r.full.mean,
            FULL,
            format!("every activation bounded ({:.1}%)", 100.0 * r.full.mean),
        )?;
        level(
            100.0 * r.unbounded.mean,
            NONE,
            format!("unprotected ({:.1}%)", 100.0 * r.unbounded.mean),
        )?;
        let budget = 100.0 * report.max_overhead;
        chart
            .draw_series(LineSeries::new([(budget, 0.0), (budget, 100.0)], BLACK.mix(0.4)))
            .map_err(|e| anyhow!("{e}"))?
            .label(format!("budget {budget:.1}%"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
        chart
            .draw_series(LineSeries::new(points.iter().copied(), CURVE.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label("chosen forms per budget")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], CURVE.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 3, CURVE.filled())))
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series([Circle::new(chosen, 6, CHOSEN.filled())])
            .map_err(|e| anyhow!("{e}"))?
            .label("model written")
            .legend(|(x, y)| Circle::new((x + 10, y), 5, CHOSEN.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    Ok(svg)
}
