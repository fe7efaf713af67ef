"""Gamma-Gamma model of spend per transaction (Fader, Hardie and Lee 2005, "RFM and CLV").

A customer's transaction values are Gamma(p, nu) with a customer-specific scale ``nu ~ Gamma(q, gamma)``
(so a customer's mean spend ``p / nu`` varies across customers; ``gamma`` is called ``v`` here). Fitted on
repeat buyers only: ``frequency`` (x >= 1, the number of repeat transactions) and ``monetary_value``
(the mean spend of those repeat transactions, > 0; the first purchase is left out by convention).
The conditional expectation of a customer's mean spend shrinks their observed mean towards the
population mean ``p v / (q - 1)``, the more so the fewer transactions they have.
"""

from __future__ import annotations

import numpy as np
from scipy.special import digamma, gammaln
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from features.errors import InsufficientDataError
from training.bgnbd import (
    ArrayLike,
    FloatArray,
    ModelInputError,
    _as_float_array,
    _collapse,
    minimize_from_starts,
)

_LOG_BOUND = 25.0


def _check_xm(
    frequency: ArrayLike, monetary_value: ArrayLike, min_frequency: float
) -> tuple[FloatArray, FloatArray]:
    x = _as_float_array(frequency, "frequency")
    m = _as_float_array(monetary_value, "monetary_value")
    if len(x) != len(m):
        raise ModelInputError(
            f"frequency and monetary_value must have the same length (got {len(x)}, {len(m)})"
        )
    bad_x = np.flatnonzero((x < min_frequency) | (x != np.round(x)))
    if len(bad_x):
        i = int(bad_x[0])
        raise ModelInputError(
            f"frequency: row {i}: value {float(x[i])!r} must be a whole number >= {min_frequency:g}"
            + (" (fit on repeat buyers only)" if min_frequency > 0 else "")
        )
    bad_m = np.flatnonzero(m <= 0)
    if len(bad_m):
        i = int(bad_m[0])
        raise ModelInputError(
            f"monetary_value: row {i}: value {float(m[i])!r} must be > 0 (mean spend per repeat transaction)"
        )
    return x, m


def gamma_gamma_log_likelihood(
    params: ArrayLike, frequency: FloatArray, monetary_value: FloatArray
) -> FloatArray:
    """Per-customer log density of the observed mean spend ``monetary_value`` over ``frequency`` transactions.

    The mean of x Gamma(p, nu) values is Gamma(p x, nu x); integrating nu over Gamma(q, v) gives
    ``lnG(px+q) - lnG(px) - lnG(q) + q ln v + (px-1) ln m + px ln x - (px+q) ln(v + m x)``.
    """
    p, q, v = (float(t) for t in np.asarray(params, dtype=np.float64))
    x, m = frequency, monetary_value
    return (
        gammaln(p * x + q)
        - gammaln(p * x)
        - gammaln(q)
        + q * np.log(v)
        + (p * x - 1.0) * np.log(m)
        + p * x * np.log(x)
        - (p * x + q) * np.log(v + m * x)
    )


def _neg_loglik_and_grad(
    log_params: FloatArray,
    x: FloatArray,
    m: FloatArray,
    weights: FloatArray,
    n_total: float,
    penalizer: float,
) -> tuple[float, FloatArray]:
    p, q, v = np.exp(log_params)
    ll = gamma_gamma_log_likelihood((p, q, v), x, m)
    log_vmx = np.log(v + m * x)
    d_p = x * (digamma(p * x + q) - digamma(p * x) + np.log(m) + np.log(x) - log_vmx)
    d_q = digamma(p * x + q) - digamma(q) + np.log(v) - log_vmx
    d_v = q / v - (p * x + q) / (v + m * x)
    grad = np.array([(weights * d).sum() for d in (d_p, d_q, d_v)]) * np.array([p, q, v])
    value = -(weights * ll).sum() / n_total + penalizer * float(np.sum(log_params**2))
    return float(value), -grad / n_total + 2.0 * penalizer * log_params


class GammaGammaModel(BaseEstimator):  # type: ignore[misc]
    """Gamma-Gamma spend estimator (scikit-learn conventions: fitted state ends in ``_``).

    Parameters
    ----------
    penalizer : float
        L2 penalty on the log parameters added to the mean negative log-likelihood; 0 gives the MLE.
    max_iter : int
        Iteration limit of each L-BFGS-B run.

    Attributes
    ----------
    p_, q_, v_ : float
        Fitted parameters (``v_`` is the paper's gamma, in currency units).
    loglik_ : float
        Total log-likelihood at the estimate (without the penalty).
    population_mean_spend_ : float
        ``p v / (q - 1)``: expected spend per transaction of a customer with no repeat history
        (currency); ``inf`` if ``q <= 1`` (the mean does not exist).
    n_customers_, converged_, n_iter_ : int, bool, int
        Repeat buyers fitted, whether L-BFGS-B reported convergence, its iterations.
    """

    def __init__(self, penalizer: float = 0.0, max_iter: int = 1000) -> None:
        self.penalizer = penalizer
        self.max_iter = max_iter

    def fit(self, frequency: ArrayLike, monetary_value: ArrayLike) -> GammaGammaModel:
        """Fit on repeat buyers: frequency >= 1 (repeat transactions), monetary_value > 0 (their mean)."""
        x, m = _check_xm(frequency, monetary_value, min_frequency=1)
        if len(x) < 2:
            raise InsufficientDataError(f"Gamma-Gamma needs at least 2 repeat buyers, got {len(x)}")
        if self.penalizer < 0:
            raise ModelInputError(f"penalizer: value {self.penalizer!r} must be >= 0")
        (ux, um), weights = _collapse(x, m)
        args = (ux, um, weights, float(len(x)), float(self.penalizer))
        scale = float(np.mean(m))
        starts = [np.zeros(3), np.log(np.array([1.0, 2.0, scale]))]
        best = minimize_from_starts(_neg_loglik_and_grad, starts, args, _LOG_BOUND, self.max_iter)
        if best is None:
            raise InsufficientDataError("Gamma-Gamma: the likelihood is not finite at any starting point")
        self.p_, self.q_, self.v_ = (float(t) for t in np.exp(best.x))
        self.loglik_ = float(
            (weights * gamma_gamma_log_likelihood((self.p_, self.q_, self.v_), ux, um)).sum()
        )
        self.n_customers_ = len(x)
        self.converged_ = bool(best.success)
        self.n_iter_ = int(best.nit)
        return self

    @property
    def params_(self) -> dict[str, float]:
        """Fitted parameters as a dict ``{"p", "q", "v"}``."""
        check_is_fitted(self, ["p_", "q_", "v_"])
        return {"p": self.p_, "q": self.q_, "v": self.v_}

    @property
    def population_mean_spend_(self) -> float:
        check_is_fitted(self, ["p_", "q_", "v_"])
        return self.p_ * self.v_ / (self.q_ - 1.0) if self.q_ > 1.0 else float("inf")

    def conditional_expected_average_spend(
        self, frequency: ArrayLike, monetary_value: ArrayLike
    ) -> FloatArray:
        """E[mean spend per transaction | x, m] in currency: ``p (v + m x) / (p x + q - 1)``.

        ``frequency`` may be 0 (one-time buyers; ``monetary_value`` is then ignored and may be any
        positive number) which gives the population mean. NaN where ``p x + q <= 1`` (no finite mean).
        """
        check_is_fitted(self, ["p_", "q_", "v_"])
        x = _as_float_array(frequency, "frequency")
        m = _as_float_array(monetary_value, "monetary_value")
        m = np.where(x == 0, 1.0, m)
        x, m = _check_xm(x, m, min_frequency=0)
        denom = self.p_ * x + self.q_ - 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            out = self.p_ * (self.v_ + m * x) / denom
        return np.where(denom > 0, out, np.nan)
