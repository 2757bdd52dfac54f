//! Tile decisions as counts: the threshold for a target false-alarm rate, what it detects and
//! how often it false-alarms on a labelled set, and how sure that rate is (an exact binomial
//! interval). Calibration picks thresholds with it; `eval` and `score-candidates` report with it.

/// The threshold that at most `rate` of `scores` exceed (alerts fire above it): the
/// `floor(rate n) + 1`-th largest score.
pub fn threshold_for_rate(scores: &[f32], rate: f64) -> f32 {
    let mut sorted: Vec<f32> = scores.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return f32::INFINITY;
    }
    sorted.sort_by(f32::total_cmp);
    let allowed = (rate * sorted.len() as f64).floor() as usize;
    sorted[sorted.len() - 1 - allowed.min(sorted.len() - 1)]
}

/// A threshold applied to labelled tiles.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct OperatingPoint {
    /// Tiles scoring above this alert.
    pub threshold: f32,
    /// Defect tiles that alert.
    pub detected: usize,
    /// Defect tiles.
    pub defects: usize,
    /// Defect-free tiles that alert.
    pub false_alarms: usize,
    /// Defect-free tiles.
    pub good: usize,
    /// 95% Clopper-Pearson interval of the false-alarm rate.
    pub false_alarm_interval: (f64, f64),
}

impl OperatingPoint {
    /// Counts the alerts of `threshold` among defect-free and defect tiles.
    pub fn at(threshold: f32, good: &[f32], defect: &[f32]) -> OperatingPoint {
        let above = |scores: &[f32]| scores.iter().filter(|&&s| s > threshold).count();
        let false_alarms = above(good);
        OperatingPoint {
            threshold,
            detected: above(defect),
            defects: defect.len(),
            false_alarms,
            good: good.len(),
            false_alarm_interval: clopper_pearson(false_alarms, good.len(), 0.95),
        }
    }

    /// Detected fraction of the defect tiles (tile recall, TPR).
    pub fn true_positive_rate(&self) -> f64 {
        ratio(self.detected, self.defects)
    }

    /// Alerting fraction of the defect-free tiles (FPR).
    pub fn false_alarm_rate(&self) -> f64 {
        ratio(self.false_alarms, self.good)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// The exact (Clopper-Pearson) two-sided interval of a binomial proportion after `k` successes
/// in `n` trials, at `confidence` (e.g. 0.95). `(0, 1)` when `n` is 0.
pub fn clopper_pearson(k: usize, n: usize, confidence: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let tail = (1.0 - confidence) / 2.0;
    // Lower: the p at which k or more successes have probability `tail`; upper: the p at
    // which k or fewer do. Both tails are monotone in p, so bisection finds them.
    let lower = if k == 0 {
        0.0
    } else {
        bisect(|p| 1.0 - binomial_cdf(k - 1, n, p) < tail)
    };
    let upper = if k == n {
        1.0
    } else {
        bisect(|p| binomial_cdf(k, n, p) > tail)
    };
    (lower, upper)
}

/// The largest p in 0..1 (to 1e-12) where `below(p)` still holds, for a `below` that holds on
/// an interval starting at 0.
fn bisect(below: impl Fn(f64) -> bool) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while hi - lo > 1e-12 {
        let mid = 0.5 * (lo + hi);
        if below(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// P(X <= k) for X ~ Binomial(n, p), summed in log space so large n does not underflow.
fn binomial_cdf(k: usize, n: usize, p: f64) -> f64 {
    if p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return if k >= n { 1.0 } else { 0.0 };
    }
    let (ln_p, ln_q) = (p.ln(), (-p).ln_1p());
    let mut ln_choose = 0.0f64;
    let mut total = 0.0f64;
    for i in 0..=k.min(n) {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        total += (ln_choose + i as f64 * ln_p + (n - i) as f64 * ln_q).exp();
    }
    total.min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_lets_at_most_the_rate_through() {
        let scores: Vec<f32> = (1..=100).map(|i| i as f32).collect();
        assert_eq!(threshold_for_rate(&scores, 0.01), 99.0, "one of 100 above");
        assert_eq!(threshold_for_rate(&scores, 0.1), 90.0);
        assert_eq!(
            threshold_for_rate(&scores[..50], 0.01),
            50.0,
            "none of 50 above"
        );
        assert_eq!(threshold_for_rate(&[], 0.01), f32::INFINITY);
    }

    #[test]
    fn clopper_pearson_matches_the_beta_quantiles() {
        // Closed forms at the ends: (alpha/2)^(1/n).
        let (lo, hi) = clopper_pearson(0, 10, 0.95);
        assert_eq!(lo, 0.0);
        assert!((hi - (1.0 - 0.025f64.powf(0.1))).abs() < 1e-9, "{hi}");
        let (lo, hi) = clopper_pearson(10, 10, 0.95);
        assert!((lo - 0.025f64.powf(0.1)).abs() < 1e-9, "{lo}");
        assert_eq!(hi, 1.0);
        // scipy.stats.beta.ppf(0.025, 1, 150), beta.ppf(0.975, 2, 149).
        let (lo, hi) = clopper_pearson(1, 150, 0.95);
        assert!((lo - 1.687_711_4e-4).abs() < 1e-9, "{lo}");
        assert!((hi - 3.658_316_8e-2).abs() < 1e-8, "{hi}");
        // beta.ppf(0.025, 27, 974), beta.ppf(0.975, 28, 973): 27 of 1000.
        let (lo, hi) = clopper_pearson(27, 1000, 0.95);
        assert!((lo - 1.786_690_6e-2).abs() < 1e-8, "{lo}");
        assert!((hi - 3.904_174_7e-2).abs() < 1e-8, "{hi}");
    }

    #[test]
    fn an_operating_point_counts_alerts_above_the_threshold() {
        let good = [0.1, 0.2, 0.3, 0.9];
        let defect = [0.5, 0.95, 0.2];
        let p = OperatingPoint::at(0.4, &good, &defect);
        assert_eq!(
            (p.detected, p.defects, p.false_alarms, p.good),
            (2, 3, 1, 4)
        );
        assert!((p.true_positive_rate() - 2.0 / 3.0).abs() < 1e-12);
        assert!((p.false_alarm_rate() - 0.25).abs() < 1e-12);
        let (lo, hi) = p.false_alarm_interval;
        assert!(lo < 0.25 && 0.25 < hi);
    }
}
