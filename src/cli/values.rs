//! Parsers of flag values: fractions and percentages, percentiles, durations, lists of
//! activation kinds and of bit positions, and the search objective's name.

use fitact_passes::activations::{ActivationKind, parse_kinds};

/// A percentile as a fraction strictly between 0.5 and 1, e.g. 0.99 or 99%.
pub fn parse_percentile(text: &str) -> Result<f64, String> {
    match parse_fraction(text) {
        Ok(value) if value > 0.5 && value < 1.0 => Ok(value),
        _ => Err(format!(
            "a percentile must lie between 0.5 and 1 (e.g. 0.99 or 99%), got '{text}'"
        )),
    }
}

/// A fraction, written `0.5%` or `0.005`.
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    let (number, scale) = match text.strip_suffix('%') {
        Some(n) => (n, 0.01),
        None => (text, 1.0),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a number or a percentage"))?;
    let value = value * scale;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("'{text}' is not between 0 and 100%"));
    }
    Ok(value)
}

/// A duration, written `90s`, `2m` or `1h` (plain numbers are seconds).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = match text.trim().char_indices().find(|(_, c)| c.is_alphabetic()) {
        Some((i, _)) => text.trim().split_at(i),
        None => (text.trim(), "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration like 90s or 2m"))?;
    let seconds = match unit {
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit '{other}' in '{text}': use s, m or h")),
    };
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("'{text}' is not a positive duration"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ObjectiveName {
    Tight,
    Resilience,
}

/// The kinds `--activations` names.
#[derive(Clone, Debug)]
pub struct KindList(pub Vec<ActivationKind>);

pub fn parse_kind_list(text: &str) -> Result<KindList, String> {
    parse_kinds(text).map(KindList)
}

/// A list of bit positions, from `23-30,31`.
#[derive(Clone, Debug)]
pub struct BitList(pub Vec<u32>);

pub fn parse_bits(text: &str) -> Result<BitList, String> {
    let mut bits = Vec::new();
    for part in text.split(',') {
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("'{s}' is not a bit position"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b)?);
                if a > b {
                    return Err(format!("range {a}-{b} is empty"));
                }
                bits.extend(a..=b);
            }
            None => bits.push(number(part)?),
        }
    }
    bits.sort_unstable();
    bits.dedup();
    Ok(BitList(bits))
}
