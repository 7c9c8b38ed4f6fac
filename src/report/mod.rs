//! A campaign's report in the forms people read: the accuracy-versus-BER plot (SVG) and a
//! self-contained HTML page.
//!
//! Owns: `plot` (the SVG plot) and `html` (the page). May use `faults` (the campaign report it
//! renders) and nothing else of the crate.

pub mod html;
pub mod plot;
