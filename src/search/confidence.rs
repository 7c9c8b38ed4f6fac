//! How far the check samples vouch for a clean drop: the one-sided 95% upper bound on the drop
//! a point's check count allows (`drop_upper_bound`), and from it how many check samples a point
//! may lose within the budget (`Vouch`), or that none may.
//!
//! Why this bound. The check is paired by construction: a sample counts only if the original
//! keeps it (`Holdout::kept`), so a point's count differs from the original's by the samples it
//! loses, never by samples it gains (gains on the check set do not carry to new data:
//! docs/results/search_design.md). The drop on new data (lost minus gained) is then at most
//! the rate of lost samples, a binomial proportion: its exact (Clopper-Pearson) one-sided
//! upper bound holds for every n, where a normal or Wilson interval is loose at the zero to
//! three losses a few hundred samples see. Losing half a sample's margin counts as losing it
//! (`MARGIN_KEPT`), and the fold bounds cut more than the bounds written: both err on the side
//! of the budget, as the search picking among many candidates on the same samples must.

/// The confidence of the bound (one-sided).
pub const CONFIDENCE: f64 = 0.95;

/// The one-sided `CONFIDENCE` upper bound on the rate of lost samples, having lost `lost` of
/// `n` (Clopper-Pearson: the rate at which losing at most `lost` has probability
/// 1 - `CONFIDENCE`). With none lost it is 1 - 0.05^(1/n), about 3/n.
pub fn drop_upper_bound(lost: usize, n: usize) -> f64 {
    if lost >= n {
        return 1.0;
    }
    let alpha = 1.0 - CONFIDENCE;
    // P(at most `lost` of n | rate) falls as the rate grows: bisect for where it is alpha.
    let (mut lo, mut hi) = (lost as f64 / n as f64, 1.0f64);
    for _ in 0..64 {
        let mid = 0.5 * (lo + hi);
        if binomial_cdf(lost, n, mid) > alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// P(X <= k) for X ~ Binomial(n, p), 0 < p < 1, summed in log space (no underflow at n = 512).
fn binomial_cdf(k: usize, n: usize, p: f64) -> f64 {
    let (ln_p, ln_q) = (p.ln(), (-p).ln_1p());
    let mut ln_pmf = n as f64 * ln_q;
    let mut sum = ln_pmf.exp();
    for i in 0..k {
        ln_pmf += ((n - i) as f64 / (i + 1) as f64).ln() + ln_p - ln_q;
        sum += ln_pmf.exp();
    }
    sum.min(1.0)
}

/// What `n` check samples vouch for under a budget: the most of them a point may lose (the
/// largest count whose `drop_upper_bound` is within the budget), None when even losing none
/// is not enough (then the search keeps the calibrated bounds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vouch {
    pub may_lose: Option<usize>,
    /// The smallest budget `n` samples can vouch for: `drop_upper_bound(0, n)`.
    pub smallest_budget: f64,
}

impl Vouch {
    pub fn new(budget: f64, n: usize) -> Vouch {
        let may_lose = (0..=n).take_while(|l| drop_upper_bound(*l, n) <= budget).last();
        Vouch {
            may_lose,
            smallest_budget: drop_upper_bound(0, n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_loss_in_n_samples_vouches_for_about_three_over_n() {
        // 1 - 0.05^(1/n), the closed form with none lost.
        for n in [64, 200, 512] {
            let exact = 1.0 - 0.05f64.powf(1.0 / n as f64);
            assert!((drop_upper_bound(0, n) - exact).abs() < 1e-9, "{n}");
        }
        assert!((drop_upper_bound(0, 200) - 0.01487).abs() < 1e-4);
        assert_eq!(drop_upper_bound(5, 5), 1.0);
    }

    #[test]
    fn the_bound_matches_clopper_pearson_and_grows_with_the_losses() {
        // The one-sided Clopper-Pearson bound (scipy.stats.beta.ppf(0.95, k + 1, n - k)); 0.0466
        // for 1 in 100 is the textbook value.
        for (k, n, expected) in [(1, 100, 0.04656), (2, 200, 0.03114), (4, 200, 0.04518)] {
            assert!(
                (drop_upper_bound(k, n) - expected).abs() < 2e-4,
                "{k}/{n}: {}",
                drop_upper_bound(k, n)
            );
        }
        let bounds: Vec<f64> = (0..10).map(|k| drop_upper_bound(k, 128)).collect();
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
    }

    #[test]
    fn a_budget_below_what_the_samples_resolve_allows_no_loss_at_all() {
        let v = Vouch::new(0.005, 512);
        assert_eq!(v.may_lose, None, "half a point needs about 600 samples");
        assert!(v.smallest_budget > 0.005 && v.smallest_budget < 0.006);
        assert_eq!(Vouch::new(0.02, 200).may_lose, Some(0));
        let v = Vouch::new(0.05, 200);
        assert_eq!(v.may_lose, Some(4));
        assert!(drop_upper_bound(5, 200) > 0.05);
    }
}
