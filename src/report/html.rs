//! The campaign as one self-contained HTML page: what was run, the results table, the
//! accuracy-versus-BER plot inlined as SVG (when the campaign has labels), and the AUCs. No
//! script, no external file: the page can be attached to a CI run or mailed as it is.

use crate::faults::{CampaignReport, FaultKind};
use anyhow::Result;

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:1em 0}\
th,td{border:1px solid #bbb;padding:4px 10px;text-align:right}\
th{background:#eef}td:first-child,th:first-child{text-align:left}\
.plot svg{max-width:100%;height:auto}dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px}\
dt{font-weight:bold}";

pub fn campaign_html(report: &CampaignReport) -> Result<String> {
    let pct = |v: f64| format!("{:.2}", 100.0 * v);
    let config = &report.config;
    let fault = match config.fault {
        FaultKind::Weight => format!(
            "weight bit flips, {} storage",
            serde_json::to_value(config.format)?.as_str().unwrap_or_default()
        ),
        FaultKind::Activation => "one activation bit flip per inference".to_owned(),
    };
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Fault-injection campaign</title>\
         <style>{STYLE}</style></head><body>\n<h1>Fault-injection campaign</h1>\n<dl>\
         <dt>faults</dt><dd>{}</dd><dt>data</dt><dd>{} ({} samples)</dd><dt>labels</dt><dd>{}</dd>\
         <dt>SDC</dt><dd>{}</dd><dt>trials</dt><dd>{} per point, seed {}</dd><dt>tool</dt><dd>{} {}</dd></dl>\n",
        escape(&fault),
        escape(&config.data),
        config.samples,
        escape(config.labels.as_deref().unwrap_or("none (SDC only)")),
        escape(config.sdc_definition().trim_start_matches("SDC: ")),
        config.trials,
        config.seed,
        escape(&report.tool),
        escape(&report.version),
    );
    if report.results.iter().all(|r| r.accuracy.is_some()) && config.bers.iter().any(|b| *b > 0.0) {
        html += &format!(
            "<div class=\"plot\">{}</div>\n",
            crate::report::plot::accuracy_svg(report)?
        );
    }
    html += "<table>\n<tr><th>model</th><th>BER</th><th>clean accuracy %</th><th>accuracy % (±95% CI)</th>\
             <th>SDC % (±95% CI)</th><th>NaN/Inf %</th><th>mean flips</th></tr>\n";
    for r in &report.results {
        let ber = match config.fault {
            FaultKind::Weight => format!("{:.0e}", r.ber),
            FaultKind::Activation => "1 per inference".into(),
        };
        html += &format!(
            "<tr><td>{}</td><td>{ber}</td><td>{}</td><td>{}</td><td>{} ± {}</td><td>{}</td><td>{:.1}</td></tr>\n",
            escape(&r.model),
            r.clean_accuracy.map_or("-".into(), pct),
            r.accuracy
                .map_or("-".into(), |a| format!("{} ± {}", pct(a.mean), pct(a.ci95))),
            pct(r.sdc.mean),
            pct(r.sdc.ci95),
            pct(r.nonfinite_rate),
            r.mean_flips,
        );
    }
    html += "</table>\n";
    let aucs: Vec<String> = report
        .models
        .iter()
        .filter_map(|m| {
            m.accuracy_auc
                .map(|auc| format!("<li>{}: {}%</li>", escape(&m.model), pct(auc)))
        })
        .collect();
    if !aucs.is_empty() {
        html += &format!("<h2>Accuracy AUC over log BER</h2>\n<ul>{}</ul>\n", aucs.join(""));
    }
    html += "</body></html>\n";
    Ok(html)
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn markup_in_names_is_escaped() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
