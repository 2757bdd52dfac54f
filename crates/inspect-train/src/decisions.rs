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

/// How a calibrated threshold was estimated from held-out scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Estimator {
    /// The empirical quantile: enough scores that at least [`EMPIRICAL_MIN_EXCEEDANCES`] of
    /// them lie above it.
    Empirical,
    /// A generalized Pareto tail fitted to the highest scores, read at the rate: too few scores
    /// for the empirical quantile, which would be the maximum (exceeded by `1 / (n + 1)` of
    /// new tiles on average, above the target).
    TailFit,
}

impl Estimator {
    /// The name the manifest and reports use.
    pub fn name(self) -> &'static str {
        match self {
            Estimator::Empirical => "empirical",
            Estimator::TailFit => "tail-fit",
        }
    }
}

/// The empirical quantile is used when the rate leaves at least this many held-out scores above
/// it; below that the highest scores are too few to place it and a tail is fitted.
pub const EMPIRICAL_MIN_EXCEEDANCES: f64 = 10.0;

/// Scores the tail fit uses at least (or a fifth of them when more).
const TAIL_MIN_SCORES: usize = 10;

/// The threshold for a false-alarm `rate` from held-out defect-free `scores`: the empirical
/// quantile when the scores are many enough, else a generalized Pareto tail fitted to the
/// highest fifth (at least 10) of them by probability-weighted moments (Hosking & Wallis 1987)
/// and read at the rate. `None` with fewer than 10 finite scores.
pub fn calibrated_threshold(scores: &[f32], rate: f64) -> Option<(f32, Estimator)> {
    let mut sorted: Vec<f64> = scores
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| f64::from(v))
        .collect();
    let n = sorted.len();
    if n < TAIL_MIN_SCORES {
        return None;
    }
    if rate * n as f64 >= EMPIRICAL_MIN_EXCEEDANCES {
        return Some((threshold_for_rate(scores, rate), Estimator::Empirical));
    }
    sorted.sort_by(f64::total_cmp);
    let tail = (n / 5).max(TAIL_MIN_SCORES).min(n - 1);
    // The threshold u is the highest score below the tail; y are the exceedances over it.
    let u = sorted[n - tail - 1];
    let y: Vec<f64> = sorted[n - tail..].iter().map(|v| v - u).collect();
    let (scale, shape) = pareto_pwm(&y)?;
    // P(X > u + t) = (tail / n) (1 - k t / scale)^(1 / k); solve for P = rate.
    let q = (rate * n as f64 / tail as f64).min(1.0);
    let t = if shape.abs() < 1e-9 {
        -scale * q.ln()
    } else {
        scale / shape * (1.0 - q.powf(shape))
    };
    Some(((u + t) as f32, Estimator::TailFit))
}

/// The threshold calibration sets from held-out `scores`: [`calibrated_threshold`], or with
/// fewer than 10 scores (too few for a tail) their empirical quantile, which is then the
/// maximum.
pub fn held_out_threshold(scores: &[f32], rate: f64) -> (f32, Estimator) {
    calibrated_threshold(scores, rate)
        .unwrap_or((threshold_for_rate(scores, rate), Estimator::Empirical))
}

/// Scale and shape `k` (Hosking's sign: `k > 0` bounded tail, `k < 0` heavy) of a generalized
/// Pareto distribution with location 0 fitted to `y` (ascending, >= 0) by probability-weighted
/// moments; `None` when the moments admit no fit (all equal).
fn pareto_pwm(y: &[f64]) -> Option<(f64, f64)> {
    let n = y.len() as f64;
    let a0 = y.iter().sum::<f64>() / n;
    // a1 = E[X (1 - F(X))], with the plotting position (i - 0.35) / n of the i-th smallest.
    let a1 = y
        .iter()
        .enumerate()
        .map(|(i, v)| v * (1.0 - (i as f64 + 0.65) / n))
        .sum::<f64>()
        / n;
    let denominator = a0 - 2.0 * a1;
    if !(a0 > 0.0 && denominator > 0.0) {
        return None;
    }
    let shape = a0 / denominator - 2.0;
    let scale = 2.0 * a0 * a1 / denominator;
    Some((scale, shape))
}

/// A threshold applied to labelled tiles.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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

    /// The counts of several operating points added up (each tile set with its own threshold;
    /// the threshold is then their mean), with the interval of the summed false alarms.
    pub fn summed(points: &[OperatingPoint]) -> OperatingPoint {
        let sum = |f: fn(&OperatingPoint) -> usize| points.iter().map(f).sum::<usize>();
        let (false_alarms, good) = (sum(|p| p.false_alarms), sum(|p| p.good));
        let mean =
            points.iter().map(|p| f64::from(p.threshold)).sum::<f64>() / points.len().max(1) as f64;
        OperatingPoint {
            threshold: mean as f32,
            detected: sum(|p| p.detected),
            defects: sum(|p| p.defects),
            false_alarms,
            good,
            false_alarm_interval: clopper_pearson(false_alarms, good, 0.95),
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
    fn summed_points_add_their_counts_and_widen_nothing() {
        let a = OperatingPoint::at(1.0, &[0.5, 2.0, 0.1], &[3.0, 0.2]);
        let b = OperatingPoint::at(3.0, &[4.0, 1.0], &[5.0, 6.0, 2.0]);
        let both = OperatingPoint::summed(&[a, b]);
        assert_eq!(
            (both.false_alarms, both.good, both.detected, both.defects),
            (2, 5, 3, 5)
        );
        assert_eq!(both.threshold, 2.0);
        assert_eq!(both.false_alarm_interval, clopper_pearson(2, 5, 0.95));
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

    /// `n` draws of a quantile function at evenly spread probabilities (a smooth sample).
    fn sample(n: usize, quantile: impl Fn(f64) -> f64, seed: u64) -> Vec<f32> {
        let mut rng = inspect_core::random::SplitMix::new(seed);
        (0..n)
            .map(|_| quantile(f64::from(rng.unit()).clamp(1e-9, 1.0 - 1e-9)) as f32)
            .collect()
    }

    #[test]
    fn the_tail_fit_finds_known_quantiles_beyond_the_sample() {
        // 200 scores, rate 1e-3: the empirical quantile would be the maximum; the fit reads
        // the tail. Averaged over seeds, it lands within 8% of the true quantile of each
        // family (the sample maximum falls 15% short for the exponential, 37% for the heavy
        // tail, and 0.004 short of the uniform's 0.999, four times the tolerance there).
        let rate: f64 = 1e-3;
        type Quantile = Box<dyn Fn(f64) -> f64>;
        let families: [(&str, Quantile, f64); 3] = [
            // Exponential (k = 0): quantile -ln(1 - p).
            (
                "exponential",
                Box::new(|p: f64| -(1.0 - p).ln()),
                -(rate.ln()),
            ),
            // Pareto-like heavy tail (k = -0.2): ((1 - p)^-0.2 - 1) / 0.2.
            (
                "heavy",
                Box::new(|p: f64| ((1.0 - p).powf(-0.2) - 1.0) / 0.2),
                (rate.powf(-0.2) - 1.0) / 0.2,
            ),
            // Normal-ish bounded scores: uniform on 0..1, quantile 1 - rate.
            ("uniform", Box::new(|p: f64| p), 1.0 - rate),
        ];
        for (name, quantile, truth) in families {
            let mut estimates = Vec::new();
            for seed in 0..40 {
                let scores = sample(200, &quantile, seed);
                let (t, how) = calibrated_threshold(&scores, rate).unwrap();
                assert_eq!(how, Estimator::TailFit);
                estimates.push(f64::from(t));
            }
            let mean = estimates.iter().sum::<f64>() / estimates.len() as f64;
            let tolerance = if name == "uniform" {
                1e-3
            } else {
                0.08 * truth
            };
            assert!(
                (mean - truth).abs() < tolerance,
                "{name}: mean estimate {mean:.4} against the true quantile {truth:.4}"
            );
        }
    }

    #[test]
    fn many_scores_use_the_empirical_quantile_and_few_are_refused() {
        let scores: Vec<f32> = (1..=2000).map(|i| i as f32).collect();
        assert_eq!(
            calibrated_threshold(&scores, 0.01),
            Some((1980.0, Estimator::Empirical))
        );
        assert_eq!(calibrated_threshold(&scores[..9], 0.01), None);
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
