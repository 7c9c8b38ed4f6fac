//! The data cap: how much memory the arrays of one data set may take once read, the size
//! syntax that sets it (`512MiB`, `2GiB`, `4G`, plain bytes) and the budget a reader charges
//! each array to before it allocates the array.
//!
//! An array is counted as the tool holds it after reading (`dataset::Raw`): 4 bytes a value
//! for float16 (widened to float32) and float32, 8 for float64 and for every integer type
//! (widened to int64), 1 for bool. The conversion to the input's type is not counted.

use std::fmt;
use std::str::FromStr;

/// The most memory, in bytes, the arrays of one data set may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataCap(u64);

impl DataCap {
    /// 4 GiB: above any calibration set the tool needs, below what a small machine has, so
    /// that a header or archive member that lies about its size is refused, not allocated.
    pub const DEFAULT: DataCap = DataCap(4 << 30);

    /// A cap of `bytes` (at least 1).
    pub fn bytes(bytes: u64) -> DataCap {
        DataCap(bytes.max(1))
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// Parses a size: a number with an optional unit, `B`, `K`/`KiB`, `M`/`MiB`, `G`/`GiB`,
    /// `T`/`TiB` (powers of 1024) or `KB`, `MB`, `GB`, `TB` (powers of 1000), any case.
    pub fn parse(text: &str) -> Result<DataCap, String> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "t" | "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            other => {
                return Err(format!(
                    "unknown unit '{other}' in '{text}': use B, KiB, MiB, GiB, TiB (or K, M, G, T), or KB, MB, GB, TB"
                ));
            }
        };
        let value: f64 = number
            .parse()
            .map_err(|_| format!("'{text}' is not a size like 512MiB, 2GiB, 4G or a number of bytes"))?;
        let bytes = value * scale as f64;
        if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
            return Err(format!("'{text}' is not a size of at least one byte"));
        }
        Ok(DataCap(bytes as u64))
    }
}

impl Default for DataCap {
    fn default() -> DataCap {
        DataCap::DEFAULT
    }
}

impl FromStr for DataCap {
    type Err = String;

    fn from_str(text: &str) -> Result<DataCap, String> {
        DataCap::parse(text)
    }
}

impl fmt::Display for DataCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&size(self.0))
    }
}

/// A size for a message: `8.0 GiB`, `512.0 MiB`, `100 bytes`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The bytes `values` values take at `per_value` bytes each, if that is a number at all.
pub(crate) fn held(values: usize, per_value: u64) -> Option<u64> {
    u64::try_from(values).ok()?.checked_mul(per_value)
}

/// The arrays of one data set counted against its cap, each charged before it is allocated.
#[derive(Debug)]
pub(crate) struct Budget {
    cap: DataCap,
    used: u64,
}

impl Budget {
    pub(crate) fn new(cap: DataCap) -> Budget {
        Budget { cap, used: 0 }
    }

    /// Charges `bytes` (None: more than a u64 counts) for `what` (`array 'x'`), or says in
    /// one line why they are over the cap.
    pub(crate) fn charge(&mut self, what: &str, bytes: Option<u64>) -> Result<(), String> {
        let total = bytes.and_then(|b| b.checked_add(self.used));
        match (bytes, total) {
            (Some(_), Some(total)) if total <= self.cap.0 => {
                self.used = total;
                Ok(())
            }
            (None, _) => Err(format!(
                "{what} would take more than 16 EiB, over the {} data cap (--max-data-memory)",
                self.cap
            )),
            (Some(bytes), _) if self.used == 0 => Err(format!(
                "{what} would take {}, over the {} data cap (--max-data-memory)",
                size(bytes),
                self.cap
            )),
            (Some(bytes), _) => Err(format!(
                "{what} would take {} ({} with the arrays read before it), over the {} data cap (--max-data-memory)",
                size(bytes),
                size(self.used.saturating_add(bytes)),
                self.cap
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_and_decimal_units() {
        let parsed = |t: &str| DataCap::parse(t).map(DataCap::get);
        assert_eq!(parsed("512MiB"), Ok(512 << 20));
        assert_eq!(parsed("2GiB"), Ok(2 << 30));
        assert_eq!(parsed("4G"), Ok(4 << 30));
        assert_eq!(parsed("4g"), Ok(4 << 30));
        assert_eq!(parsed("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parsed("2GB"), Ok(2_000_000_000));
        assert_eq!(parsed("1000"), Ok(1000));
        assert_eq!(parsed("64KiB"), Ok(65_536));
        assert!(parsed("4 parsecs").unwrap_err().contains("unknown unit 'parsecs'"));
        assert!(parsed("GiB").unwrap_err().contains("is not a size like"));
        assert!(parsed("0").unwrap_err().contains("at least one byte"));
        assert!(parsed("99999999999T").is_err());
        assert_eq!(DataCap::default().to_string(), "4.0 GiB");
        assert_eq!(size(100), "100 bytes");
        assert_eq!(size(8 << 30), "8.0 GiB");
    }

    #[test]
    fn a_budget_refuses_what_would_go_over_the_cap_counting_earlier_arrays() {
        let mut budget = Budget::new(DataCap::parse("1MiB").unwrap());
        assert_eq!(
            budget.charge("array 'x'", Some(8 << 30)).unwrap_err(),
            "array 'x' would take 8.0 GiB, over the 1.0 MiB data cap (--max-data-memory)"
        );
        budget.charge("array 'a'", Some(768 << 10)).unwrap();
        assert_eq!(
            budget.charge("array 'b'", Some(512 << 10)).unwrap_err(),
            "array 'b' would take 512.0 KiB (1.2 MiB with the arrays read before it), over the 1.0 MiB data cap (--max-data-memory)"
        );
        budget.charge("array 'c'", Some(256 << 10)).unwrap();
        assert!(
            budget
                .charge("array 'd'", None)
                .unwrap_err()
                .contains("more than 16 EiB")
        );
        assert_eq!(held(usize::MAX, 8), None);
    }
}
