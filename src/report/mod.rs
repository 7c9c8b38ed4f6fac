//! A campaign's report in the forms people and spreadsheets read: CSV, the table printed on
//! stdout, the accuracy-versus-BER plot (SVG) and a self-contained HTML page. The report's
//! JSON types stay with the stage that fills them (`faults::campaign_report`; the harden
//! report is `harden::report`), so that no stage reaches up to here.
//!
//! Owns: `csv` (`CampaignReport::to_csv`), `table` (`CampaignReport::table`), `plot` (the
//! SVG plot), `html` (the page) and `budget_curve` (the resilience-vs-overhead plot of
//! `harden --max-overhead`). May use `faults` and `budget` (the reports it renders) and
//! nothing else of the crate.

pub mod budget_curve;
pub mod csv;
pub mod html;
pub mod plot;
pub mod table;
