//! The table `evaluate` and `merge` print: one row per model and BER, then the AUCs.

use crate::faults::CampaignReport;
use crate::faults::FaultKind;

impl CampaignReport {
    /// The table people read: one row per model and BER.
    pub fn table(&self) -> String {
        let pct = |v: f64| format!("{:.2}", 100.0 * v);
        let mut t = format!(
            "{:<40} {:>8} {:>7} {:>17} {:>17} {:>9}\n",
            "model", "BER", "clean%", "accuracy% ±95%CI", "SDC% ±95%CI", "NaN/Inf%"
        );
        for r in &self.results {
            let acc = r
                .accuracy
                .map_or("-".into(), |a| format!("{} ±{}", pct(a.mean), pct(a.ci95)));
            let ber = match self.config.fault {
                FaultKind::Weight => format!("{:.0e}", r.ber),
                FaultKind::Activation => "1/inf.".into(),
            };
            t += &format!(
                "{:<40} {:>8} {:>7} {:>17} {:>17} {:>9}\n",
                r.model,
                ber,
                r.clean_accuracy.map_or("-".into(), pct),
                acc,
                format!("{} ±{}", pct(r.sdc.mean), pct(r.sdc.ci95)),
                pct(r.nonfinite_rate)
            );
        }
        for r in self.results.iter().filter(|r| r.refused > 0) {
            t += &format!(
                "{}: the runtime refused {} of {} faulty models at BER {:.0e} (counted as every sample wrong)\n",
                r.model, r.refused, r.trials, r.ber
            );
        }
        for m in &self.models {
            if let Some(auc) = m.accuracy_auc {
                t += &format!("{}: accuracy AUC over log BER {:.2}%\n", m.model, 100.0 * auc);
            }
        }
        t += &self.config.sdc_definition();
        t += "\n";
        t
    }
}
