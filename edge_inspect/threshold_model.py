"""The image threshold as a target false-reject rate: a model of good-part scores fitted on few images.

Why a model: a plant wants "reject at most 0.5 % of good parts", and the 99.5th percentile of a few
dozen good scores is just their maximum. So the good scores are modelled instead:

  x (raw image score) → z = (x − center) / scale → y = Yeo-Johnson(z, λ)  (λ = 1: no transform)
  y of a good part ~ normal(mean, std), both estimated from the n calibration scores.

A NEW good part's y then follows the predictive distribution mean + std·√(1 + 1/n)·T with T a Student t
of n − 1 degrees of freedom, which widens the tail as n shrinks (the estimation error of mean and std is
part of it). The threshold for a target false-reject rate α is that distribution's (1 − α) quantile, so
its expected false-reject rate over repeated calibrations is α when the model fits. λ is fitted
(penalised maximum likelihood, see _fit_lambda) when there are at least MIN_N_FOR_SHAPE scores: anomaly
scores are often skewed to the right, and a plain normal then under-estimates the tail. Below that it
stays 1.

Uncertainty: the sampling distribution of the fitted mean and std (a pivot, exact for normal transformed
scores) gives an interval of the false-reject rate the chosen threshold really has, and an interval of
where the ideal threshold for α lies. With 6 scores the first spans about 0 % to 2.5 % for α = 0.5 %;
with 150, 0.2 % to 1 %.

Checked by simulation on 200 out-of-sample good scores of a synthetic demo model (skew 0.5), target
1 %: mean false-reject rate with n = 20 / 40 scores 1.4 % / 1.2 % (plain normal-t: 1.9 % / 1.7 %; the
empirical 99th percentile: 5.3 % / 3.1 %).

numpy and the standard library only: the runtime (drift watch) and ``edge-inspect calibrate`` on a Jetson
use it too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from .errors import ConfigError, DataError

MIN_N = 2  # a std needs two scores
MIN_N_FOR_SHAPE = 20  # fewer scores cannot tell a skewed distribution from a normal one
RECOMMENDED_N = 30
# How far λ may stray from 1 on little evidence. Chosen by simulation on out-of-sample good scores of two
# demo models (200 each, draws of 20 and 40, targets 1 % and 2 %): 0.5 kept the mean false-reject rate
# within 1.0-1.4× the target while cutting the 90th percentile of the threshold by 10-20 % against the
# plain maximum-likelihood λ; 0.3 let the rate drift to 1.5× on the more skewed model.
LAMBDA_PRIOR_SD = 0.5
_LAMBDAS = np.round(np.arange(0.0, 2.0001, 0.05), 4)  # λ in [0, 2]: both branches stay invertible
_STD_NORMAL = NormalDist()


# ---- Yeo-Johnson ---------------------------------------------------------------------------------

def yeo_johnson(z, lam: float) -> np.ndarray:
    """Yeo-Johnson power transform of ``z`` (any real numbers) with λ in [0, 2]; λ = 1 is the identity."""
    z = np.asarray(z, np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    zp, zn = z[pos], z[~pos]
    out[pos] = np.log1p(zp) if lam == 0 else ((1.0 + zp) ** lam - 1.0) / lam
    out[~pos] = -np.log1p(-zn) if lam == 2 else -((1.0 - zn) ** (2.0 - lam) - 1.0) / (2.0 - lam)
    return out


def yeo_johnson_inverse(y: float, lam: float) -> float:
    """The z with yeo_johnson(z, λ) == y (λ in [0, 2])."""
    if y >= 0:
        return math.expm1(y) if lam == 0 else (1.0 + lam * y) ** (1.0 / lam) - 1.0
    return -math.expm1(-y) if lam == 2 else 1.0 - (1.0 - (2.0 - lam) * y) ** (1.0 / (2.0 - lam))


def _fit_lambda(z: np.ndarray) -> float:
    """λ of the Yeo-Johnson transform for standardised scores ``z`` (n,): penalised maximum likelihood on a
    grid, pulled towards 1 (no transform) as by a normal prior of sd LAMBDA_PRIOR_SD, so a few dozen scores
    cannot bend the modelled tail far (their skewness is mostly noise); hundreds of scores outweigh it."""
    jac = np.sum(np.sign(z) * np.log1p(np.abs(z)))
    best, best_ll = 1.0, -math.inf
    for lam in _LAMBDAS:
        var = float(yeo_johnson(z, float(lam)).var())
        if var <= 0:
            continue
        ll = -0.5 * z.size * math.log(var) + (lam - 1.0) * jac - 0.5 * ((lam - 1.0) / LAMBDA_PRIOR_SD) ** 2
        if ll > best_ll + 1e-12:
            best, best_ll = float(lam), ll
    return best


# ---- Student t -----------------------------------------------------------------------------------

def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with ``df`` > 0 degrees of freedom (numerical integration of the density)."""
    if df > 1e6:
        return _STD_NORMAL.cdf(t)
    a = min(abs(t), 1e6)
    # Integrate the density from 0 to |t| in u = atan(x / √df), which maps the heavy tail to a finite range:
    # x = √df·tan(u), dx = √df·sec²(u) du, f(x) ∝ (1 + x²/df)^(−(df+1)/2) = cos(u)^(df+1).
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    upper = math.atan(a / math.sqrt(df))
    u = np.linspace(0.0, upper, 2001)
    f = np.cos(u) ** (df - 1.0)  # cos^(df+1) · sec²
    h = upper / 2000
    area = h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())
    half = math.exp(log_c) * math.sqrt(df) * area
    return 0.5 + half if t >= 0 else 0.5 - half


def t_ppf(p: float, df: float) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (bisection on t_cdf)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_ppf(1 - p, df)
    lo, hi = 0.0, max(1.0, _STD_NORMAL.inv_cdf(p))
    while t_cdf(hi, df) < p:
        hi *= 2
        if hi > 1e9:
            return math.inf
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)


# ---- the model -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class GoodScoreModel:
    """A fitted model of good-part image scores (see the module docstring); all numbers in score units
    except ``mean``/``std``, which are in transformed units."""

    n: int
    center: float
    scale: float
    yj_lambda: float
    mean: float
    std: float

    @property
    def predictive_scale(self) -> float:
        return self.std * math.sqrt(1.0 + 1.0 / self.n)

    def transform(self, scores) -> np.ndarray:
        """Raw scores → transformed units y."""
        return yeo_johnson((np.asarray(scores, np.float64) - self.center) / self.scale, self.yj_lambda)

    def threshold_for(self, frr: float) -> float:
        """The score a new good part exceeds with probability ``frr``."""
        y = self.mean + t_ppf(1.0 - frr, self.n - 1) * self.predictive_scale
        return self.center + self.scale * yeo_johnson_inverse(y, self.yj_lambda)

    def false_reject_rate(self, threshold: float) -> float:
        """P(a new good part scores > ``threshold``) under the model."""
        y = float(self.transform([threshold])[0])
        return 1.0 - t_cdf((y - self.mean) / self.predictive_scale, self.n - 1)


def fit_good_scores(scores, fit_shape: bool | None = None) -> GoodScoreModel:
    """Fit GoodScoreModel to good-part scores (n,), n ≥ 2, all finite. ``fit_shape``: fit λ (default:
    when n ≥ MIN_N_FOR_SHAPE). Raises DataError for too few, non-finite or constant scores."""
    x = np.asarray(scores, np.float64).ravel()
    if x.size < MIN_N:
        raise DataError(f"need at least {MIN_N} good scores to model them, got {x.size}")
    if not np.isfinite(x).all():
        raise DataError(f"{int((~np.isfinite(x)).sum())} of {x.size} good scores are NaN or inf")
    center, scale = float(x.mean()), float(x.std())
    if scale <= 1e-12 * max(1.0, abs(center)):
        raise DataError(f"all {x.size} good scores are equal ({center:g}); the model gives the same score to "
                        "every image, so no threshold can be fitted")
    z = (x - center) / scale
    lam = _fit_lambda(z) if (fit_shape if fit_shape is not None else x.size >= MIN_N_FOR_SHAPE) else 1.0
    y = yeo_johnson(z, lam)
    return GoodScoreModel(n=int(x.size), center=center, scale=scale, yj_lambda=lam,
                          mean=float(y.mean()), std=max(float(y.std(ddof=1)), 1e-12))


@dataclass(frozen=True)
class OperatingPoint:
    """The threshold for a target false-reject rate, with the intervals of the fit."""

    model: GoodScoreModel
    target_frr: float
    threshold: float
    expected_frr: float  # model's false-reject rate at ``threshold`` (the target, unless the threshold was clamped)
    confidence: float
    threshold_interval: tuple[float, float]
    frr_interval: tuple[float, float]


def operating_point(scores, target_frr: float = 0.005, confidence: float = 0.9, n_sim: int = 20000,
                    seed: int = 0, lower_bound: float | None = None) -> OperatingPoint:
    """Fit the good scores and set the threshold for ``target_frr``, with intervals at ``confidence``.

    ``lower_bound``: the least score the model can give (the threshold is not put below it).
    Raises ConfigError for a target outside (0, 0.5) or a confidence outside (0, 1), DataError for bad scores.
    """
    if not (isinstance(target_frr, (int, float)) and 0 < target_frr < 0.5):
        raise ConfigError(f"target false-reject rate must be in (0, 0.5), got {target_frr!r}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")
    model = fit_good_scores(scores)
    threshold = model.threshold_for(target_frr)
    if lower_bound is not None and threshold < lower_bound:
        threshold = float(lower_bound)
    frr_interval, k_interval = _pivot_intervals(model, threshold, target_frr, confidence, n_sim, seed)
    y_bounds = [model.mean + k * model.std for k in k_interval]
    t_lo, t_hi = (model.center + model.scale * yeo_johnson_inverse(y, model.yj_lambda) for y in y_bounds)
    expected = model.false_reject_rate(threshold)
    return OperatingPoint(model=model, target_frr=float(target_frr), threshold=float(threshold),
                          expected_frr=float(expected), confidence=float(confidence),
                          threshold_interval=(min(t_lo, threshold), max(t_hi, threshold)),
                          frr_interval=(min(frr_interval[0], expected), max(frr_interval[1], expected)))


def _pivot_intervals(model: GoodScoreModel, threshold: float, target_frr: float, confidence: float, n_sim: int,
                     seed: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Intervals from the sampling distribution of the fit, exact when the transformed scores are normal.

    With n scores the estimates are mean ± σ·Z/√n and std = σ·S (Z standard normal, S² a χ² over n − 1
    degrees of freedom divided by n − 1), whatever the true μ and σ. Simulating (Z, S) gives
    - the false-reject rate a threshold set k fitted standard deviations above the fitted mean really has:
      1 − Φ(Z/√n + k·S), its spread over calibrations being the rate's interval;
    - where the true (1 − target) quantile lies in fitted units: (z_target − Z/√n) / S, the threshold's
      interval (returned as multiples of the fitted std above the fitted mean).
    λ is taken as known (its own uncertainty is not in the intervals).
    """
    rng = np.random.default_rng(seed)
    n = model.n
    z_bar = rng.standard_normal(n_sim) / math.sqrt(n)
    s = np.sqrt(rng.chisquare(n - 1, n_sim) / (n - 1))
    k = (float(model.transform([threshold])[0]) - model.mean) / model.std
    achieved = 0.5 * np.vectorize(math.erfc)((z_bar + k * s) / math.sqrt(2.0))
    ideal_k = (_STD_NORMAL.inv_cdf(1.0 - target_frr) - z_bar) / s
    tail = (1.0 - confidence) / 2
    f_lo, f_hi = (float(v) for v in np.quantile(achieved, [tail, 1 - tail]))
    k_lo, k_hi = (float(v) for v in np.quantile(ideal_k, [tail, 1 - tail]))
    return (f_lo, f_hi), (k_lo, k_hi)


def wilson_interval(k: int, n: int, confidence: float = 0.9) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k / n (n ≥ 1)."""
    if n <= 0:
        raise ValueError("wilson_interval needs n ≥ 1")
    z = _STD_NORMAL.inv_cdf(0.5 + confidence / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def recent_false_reject_rate(model: GoodScoreModel, recent_ok_scores, threshold: float) -> dict:
    """Estimate today's false-reject rate from recent scores of parts judged OK (drift watch).

    Parts judged OK are cut off at the threshold and escaped defects sit in the upper tail, so only the
    middle is trusted: the median and the interquartile range of the recent scores, in the model's
    transformed units, say how far the good distribution has moved (shift) and widened (ratio).
    The calibration model moved and widened the same way gives the estimate, so a line that has not
    drifted reads the calibration's own rate. Returns {"n", "median", "calibration_median",
    "shift_sigma", "spread_ratio", "estimated_frr"} (shift in calibration standard deviations).
    Needs ≥ 10 scores.
    """
    s = np.asarray(recent_ok_scores, np.float64).ravel()
    s = s[np.isfinite(s)]
    if s.size < 10:
        raise DataError(f"need at least 10 recent scores, got {s.size}")
    y = model.transform(s)
    q25, med, q75 = (float(v) for v in np.quantile(y, [0.25, 0.5, 0.75]))
    sigma = max((q75 - q25) / 1.3489795003921634, 1e-12)  # a normal's quartiles lie 1.349 σ apart
    ratio = sigma / model.std
    y_t = float(model.transform([threshold])[0])
    frr = 1.0 - t_cdf((y_t - med) / (model.predictive_scale * ratio), model.n - 1)
    cal_median = model.center + model.scale * yeo_johnson_inverse(model.mean, model.yj_lambda)
    return {
        "n": int(s.size),
        "median": float(np.median(s)),
        "calibration_median": float(cal_median),
        "shift_sigma": float((med - model.mean) / model.std),
        "spread_ratio": float(ratio),
        "estimated_frr": float(frr),
    }
