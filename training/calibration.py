"""Probability calibration of a classifier's raw score (log-odds), fitted on held-out rows.

A churn risk of 0.3 must mean about 30%: boosted trees rank well but their probabilities drift, so a
monotone map from the raw score to a probability is fitted on rows the trees never saw (the
held-out half of the latest cutoff, see :func:`training.models.split_by_time`).

Two methods: ``isotonic`` (a non-decreasing map, flexible, needs some hundreds of rows per class)
and ``platt`` (a logistic curve ``p = 1 / (1 + exp(-(a * s + b)))``, two parameters, robust on few
rows). ``auto`` picks isotonic when the held-out rows are plentiful. The isotonic map is *centred*: it
interpolates linearly between the mean raw score of each block of the isotonic fit and the block's
positive rate, instead of keeping the steps. A step map gives every score of a block the same
probability (some tens of distinct risks for thousands of users), which discards the trees' ranking
within a block and costs AUC and top-decile lift; the centred map is strictly increasing between the
first and the last block and calibrates as well. The fitted state is a few numbers, saved as JSON (no
pickle).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

log = logging.getLogger(__name__)

CalibrationMethod = Literal["auto", "isotonic", "platt"]

#: ``auto`` uses isotonic regression when the held-out rows have at least this many of each class.
ISOTONIC_MIN_PER_CLASS = 200
#: Calibrated probabilities are kept in ``[PROB_FLOOR, 1 - PROB_FLOOR]``: an isotonic end step fitted on a
#: few held-out rows would otherwise claim certainty (risk exactly 0 or 1).
PROB_FLOOR = 1e-3


class ScoreCalibrator(BaseEstimator):
    """Map a raw classifier score (log-odds) to a calibrated probability.

    Parameters
    ----------
    method : {"auto", "isotonic", "platt"}
        ``auto`` chooses ``isotonic`` when both classes have at least
        :data:`ISOTONIC_MIN_PER_CLASS` held-out rows, else ``platt``.
    """

    def __init__(self, method: CalibrationMethod = "auto") -> None:
        self.method = method

    def fit(self, raw_score: np.ndarray, y: np.ndarray) -> ScoreCalibrator:
        """Fit on held-out raw scores ``raw_score`` (log-odds) and binary outcomes ``y``."""
        s = np.asarray(raw_score, dtype=float)
        t = np.asarray(y, dtype=float)
        if s.shape != t.shape or s.ndim != 1:
            raise ValueError(f"raw_score and y must be 1-d of equal length, got {s.shape} and {t.shape}")
        n_pos = int(t.sum())
        n_neg = int(len(t) - n_pos)
        if n_pos == 0 or n_neg == 0:
            raise ValueError(f"calibration needs both classes, got {n_pos} positives and {n_neg} negatives")
        method = self.method
        if method == "auto":
            method = "isotonic" if min(n_pos, n_neg) >= ISOTONIC_MIN_PER_CLASS else "platt"
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
            block_value = iso.fit(s, t).predict(s)
            # Centred isotonic regression: one knot per block (blocks are disjoint score intervals with
            # strictly increasing values), at the block's mean raw score.
            values, block = np.unique(block_value, return_inverse=True)
            centres = np.bincount(block, weights=s) / np.bincount(block)
            self.x_thresholds_ = np.asarray(centres, dtype=float)
            self.y_thresholds_ = np.asarray(values, dtype=float)
        elif method == "platt":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=1e6, max_iter=1000)
            lr.fit(s.reshape(-1, 1), t)
            self.slope_ = float(lr.coef_[0, 0])
            self.intercept_ = float(lr.intercept_[0])
        else:
            raise ValueError(f"unknown calibration method {self.method!r}; use 'auto', 'isotonic' or 'platt'")
        self.method_ = method
        self.n_fit_rows_ = len(t)
        log.debug("calibrator: %s on %d held-out rows (%d positives)", method, len(t), n_pos)
        return self

    def predict(self, raw_score: np.ndarray) -> np.ndarray:
        """Calibrated probability in ``[PROB_FLOOR, 1 - PROB_FLOOR]`` for each raw score (log-odds)."""
        check_is_fitted(self, "method_")
        s = np.asarray(raw_score, dtype=float)
        if self.method_ == "isotonic":
            p = np.interp(s, self.x_thresholds_, self.y_thresholds_)
        else:
            p = 1.0 / (1.0 + np.exp(-(self.slope_ * s + self.intercept_)))
        return np.clip(p, PROB_FLOOR, 1.0 - PROB_FLOOR)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fitted state."""
        check_is_fitted(self, "method_")
        state: dict[str, Any] = {"method": self.method, "method_": self.method_, "n_fit_rows_": self.n_fit_rows_}
        if self.method_ == "isotonic":
            state["x_thresholds_"] = self.x_thresholds_.tolist()
            state["y_thresholds_"] = self.y_thresholds_.tolist()
        else:
            state["slope_"] = self.slope_
            state["intercept_"] = self.intercept_
        return state

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ScoreCalibrator:
        """Rebuild a fitted calibrator from :meth:`to_dict` output."""
        cal = cls(method=state["method"])
        cal.method_ = state["method_"]
        cal.n_fit_rows_ = int(state["n_fit_rows_"])
        if cal.method_ == "isotonic":
            cal.x_thresholds_ = np.asarray(state["x_thresholds_"], dtype=float)
            cal.y_thresholds_ = np.asarray(state["y_thresholds_"], dtype=float)
        else:
            cal.slope_ = float(state["slope_"])
            cal.intercept_ = float(state["intercept_"])
        return cal
