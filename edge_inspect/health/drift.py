"""Drift watch: is today's line still the line the threshold was calibrated on?

A threshold set for "reject at most α of good parts" keeps that promise only while good parts score as
they did at calibration (lighting, lens, fixture and material all move scores). The watch keeps the
scores of the last ``window`` parts judged OK and, every ``check_every`` verdicts, estimates today's
false-reject rate at the threshold in force with ``threshold_model.recent_false_reject_rate`` against
the calibration's good-score model. Above ``alert_frr`` the state is "drift" (a WARNING in the log);
it is "ok" again once the estimate falls to HYSTERESIS × alert_frr (an INFO), so an estimate hovering
at the limit does not flap.

States: "off" (disabled in the settings), "unavailable" (the manifest's calibration has no usable
good-score statistics), "warming_up" (fewer than ``min_samples`` OK scores since the model or threshold
last changed), "ok", "drift".

Threading: ``observe`` is called by the pipeline's publish thread only (it owns the window); ``snapshot``
and ``reset`` may be called from any thread. ``observe`` is O(1) except on every ``check_every``-th call,
which costs well under a millisecond for the default window of 500.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque

from ..errors import DataError
from ..manifest import Calibration
from ..threshold_model import GoodScoreModel, recent_false_reject_rate
from .settings import DriftSettings

log = logging.getLogger(__name__)

STATES = ("off", "unavailable", "warming_up", "ok", "drift")
HYSTERESIS = 0.8  # back to "ok" only once the estimate is at most this fraction of alert_frr
MIN_ALERT_FRR = 0.02  # default alert level: max(ALERT_FACTOR × target, MIN_ALERT_FRR)
ALERT_FACTOR = 4.0


def reference_model(calibration: Calibration) -> GoodScoreModel | None:
    """The good-score model the threshold was calibrated with (manifest schema 3), or, for older manifests,
    a plain normal one from the good-score statistics (mean, std in score units); None with fewer than 2
    good scores (no spread to compare with)."""
    tm = calibration.threshold_model
    if tm is not None:
        return GoodScoreModel(n=tm.n, center=tm.center, scale=tm.scale, yj_lambda=tm.yj_lambda,
                              mean=tm.mean, std=tm.std)
    good = calibration.good_scores
    if good.count < 2:
        return None
    scale = good.std if good.std > 0 else 1.0  # equal scores: any scale; the shift then reads in score units
    return GoodScoreModel(n=good.count, center=good.mean, scale=scale, yj_lambda=1.0, mean=0.0, std=1.0)


def calibration_target_frr(calibration: Calibration, reference: GoodScoreModel) -> float:
    """The false-reject rate the calibration promised: the threshold model's target, or (older manifests)
    the reference model's rate at the manifest's image threshold. A fraction."""
    if calibration.threshold_model is not None:
        return float(calibration.threshold_model.target_frr)
    return float(reference.false_reject_rate(calibration.image_threshold))


def _finite(x) -> float | None:
    """``x`` as a float when finite, else None (the drift block goes out as JSON, which has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class DriftMonitor:
    """Running false-reject-rate estimate from recent OK scores; see the module docstring."""

    def __init__(self, settings: DriftSettings | None = None):
        self.settings = settings if settings is not None else DriftSettings()
        w = self.settings.window
        self._lock = threading.Lock()
        self._ok_scores: deque[float] = deque(maxlen=w)  # raw image scores of parts judged OK
        self._judged: deque[bool] = deque(maxlen=w)  # True for NG, over the last `window` parts judged
        self._ng_in_window = 0
        self._context: object | None = None  # what the window belongs to (the pipeline's Thresholds object)
        self._expected: object | None = None  # after reset(in_force): the only context a new window may start with
        self._epoch = 0  # bumped by reset(): a check computed before a reset is not stored after it
        self._reference: GoodScoreModel | None = None
        self._threshold: float | None = None
        self._target: float | None = None
        self._alert: float | None = None
        self._since_check = 0
        self._estimate: dict | None = None
        self._state = "warming_up" if self.settings.enabled else "off"

    # ---- publish thread ----------------------------------------------------------------------

    def observe(self, label: str, score: float | None, threshold: float, calibration: Calibration,
                context: object) -> None:
        """Note one published verdict (``label`` ok/ng/unknown, raw ``score``) judged at ``threshold``
        (score units) with ``calibration``'s model. ``context`` identifies the model and thresholds in force
        (compared by identity): when it changes, the window starts again. Unknown verdicts are ignored."""
        if not self.settings.enabled or label not in ("ok", "ng"):
            return
        if context is not self._context:
            if self._expected is not None and context is not self._expected:
                return  # judged before the reset, published after it: it must not open the new window
            self._start(threshold, calibration, context)
        with self._lock:
            if len(self._judged) == self._judged.maxlen and self._judged[0]:
                self._ng_in_window -= 1
            ng = label == "ng"
            self._judged.append(ng)
            self._ng_in_window += ng
            if not ng and score is not None and math.isfinite(score):
                self._ok_scores.append(float(score))
            self._since_check += 1
            n = len(self._ok_scores)
            due = n >= self.settings.min_samples and (
                self._since_check >= self.settings.check_every or self._state == "warming_up")
            if not due or self._reference is None:
                return
            self._since_check = 0
            scores, reference, threshold, epoch = list(self._ok_scores), self._reference, self._threshold, self._epoch
        self._check(scores, reference, threshold, epoch)  # outside the lock: status readers never wait on it

    def _start(self, threshold: float, calibration: Calibration, context: object) -> None:
        """A new window for a new model or threshold: its reference model, target and alert level."""
        reference = reference_model(calibration)
        target = calibration_target_frr(calibration, reference) if reference is not None else None
        alert = self.settings.alert_frr
        if alert is None:
            alert = max(ALERT_FACTOR * target, MIN_ALERT_FRR) if target is not None else MIN_ALERT_FRR
        with self._lock:
            self._clear()
            self._context, self._reference = context, reference
            self._threshold, self._target, self._alert = float(threshold), _finite(target), float(alert)
            self._state = "warming_up" if reference is not None else "unavailable"
        log.debug("drift watch: new window (threshold %.4g, target false-reject rate %s, alert above %.3g)",
                  threshold, target, alert)

    def _check(self, scores: list[float], reference: GoodScoreModel, threshold: float, epoch: int) -> None:
        try:
            est = recent_false_reject_rate(reference, scores, threshold)
        except DataError:  # fewer than 10 finite scores: cannot happen with min_samples >= 10, but no crash
            return
        frr = _finite(est["estimated_frr"])
        with self._lock:
            if epoch != self._epoch:  # reset meanwhile (reload, set_threshold): this belongs to the old window
                return
            self._estimate = est
            before = self._state
            if frr is None:
                after = before if before in ("ok", "drift") else "ok"
            elif frr > self._alert:
                after = "drift"
            elif before == "drift" and frr > HYSTERESIS * self._alert:
                after = "drift"
            else:
                after = "ok"
            self._state = after
            alert, target = self._alert, self._target
        if after == "drift" and before != "drift":
            log.warning("drift watch: estimated false-reject rate %.2f %% is above the alert level %.2f %% "
                        "(target %s): median OK score %.4g vs %.4g at calibration (%+.2f σ), over %d OK parts; "
                        "recalibrate the threshold or check the line (lighting, optics, material)",
                        100 * frr, 100 * alert, _percent(target), est["median"], est["calibration_median"],
                        est["shift_sigma"], est["n"])
        elif before == "drift" and after == "ok":
            log.info("drift watch: back to normal, estimated false-reject rate %.2f %% (alert level %.2f %%)",
                     100 * (frr or 0.0), 100 * alert)

    # ---- any thread ----------------------------------------------------------------------------

    def reset(self, in_force: object | None = None) -> None:
        """Forget the window (a reload or a new threshold makes it meaningless); the next verdict starts a new
        one. ``in_force``: the context now in force; verdicts of another one (still in flight) are ignored."""
        with self._lock:
            self._clear()
            self._context, self._expected = None, in_force
            if self.settings.enabled and self._state != "unavailable":
                self._state = "warming_up"

    def _clear(self) -> None:
        """Empty the window; the caller holds the lock."""
        self._ok_scores.clear()
        self._judged.clear()
        self._ng_in_window = 0
        self._since_check = 0
        self._estimate = None
        self._epoch += 1

    def snapshot(self) -> dict:
        """The drift block of status() and the heartbeat: state, n (OK scores in the window), median and
        calibration_median (score units), shift_sigma (calibration standard deviations), spread_ratio,
        estimated_frr / target_frr / alert_frr (fractions), ng_share (NG among the last ``window`` parts
        judged), threshold (in force), window. Numbers are null until known; all finite."""
        with self._lock:
            est = self._estimate or {}
            judged = len(self._judged)
            return {
                "state": self._state,
                "n": len(self._ok_scores),
                "window": self.settings.window,
                "median": _finite(est.get("median")),
                "calibration_median": _finite(est.get("calibration_median")),
                "shift_sigma": _finite(est.get("shift_sigma")),
                "spread_ratio": _finite(est.get("spread_ratio")),
                "estimated_frr": _finite(est.get("estimated_frr")),
                "target_frr": self._target,
                "alert_frr": self._alert,
                "ng_share": self._ng_in_window / judged if judged else None,
                "threshold": self._threshold,
            }

    @property
    def state(self) -> str:
        with self._lock:
            return self._state


def _percent(x: float | None) -> str:
    return "unknown" if x is None else f"{100 * x:.2f} %"
