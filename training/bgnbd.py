"""BG/NBD model of repeat purchasing (Fader, Hardie and Lee 2005, "Counting your customers the easy way").

Each customer, while alive, buys as a Poisson process with rate ``lambda ~ Gamma(r, alpha)`` (rate
parameter ``alpha``, in the inverse time unit of the inputs); after every repeat purchase they drop out
with probability ``p ~ Beta(a, b)``. Inputs per customer, all in one time unit (days or weeks):

- ``frequency`` (x): number of repeat purchases (purchase *days* after the first one),
- ``recency`` (t_x): time from the first purchase to the last one (0 when x == 0),
- ``T``: time from the first purchase to the end of the observation period.

:class:`BetaGeoModel` fits ``r, alpha, a, b`` by maximum likelihood (L-BFGS-B on the log parameters with
an analytic gradient) and predicts, for the next ``t`` time units: the expected number of purchases, the
probability that the customer is still alive, and the probability of no purchase at all (churn).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.integrate import IntegrationWarning, quad
from scipy.optimize import minimize
from scipy.special import betaln, digamma, gammaln, hyp2f1
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from features.errors import InsufficientDataError, StrataError

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]

# Log parameters are kept in this box: wide enough for day or week units, and it keeps exp() finite
# when the likelihood is flat in one direction (e.g. nobody ever drops out, so b grows without bound).
_LOG_BOUND = 18.0


class ModelInputError(StrataError, ValueError):
    """Inputs to a customer-base model are inconsistent; the message names the argument, row and value."""


def _as_float_array(values: ArrayLike, name: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ModelInputError(f"{name}: expected a one-dimensional array, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ModelInputError(f"{name}: row {i}: value {float(arr[i])!r} is not a finite number")
    return arr


def _first_bad(mask: npt.NDArray[np.bool_]) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if len(idx) else None


def check_rft(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Validate and convert (frequency, recency, T) to float arrays of one length.

    Raises :class:`ModelInputError` naming the argument, the row and the value when frequency is not a
    non-negative integer, recency is negative or above T, or recency is not 0 for a customer without
    repeat purchases.
    """
    x = _as_float_array(frequency, "frequency")
    tx = _as_float_array(recency, "recency")
    t_obs = _as_float_array(T, "T")
    if not (len(x) == len(tx) == len(t_obs)):
        raise ModelInputError(
            f"frequency, recency and T must have the same length (got {len(x)}, {len(tx)}, {len(t_obs)})"
        )
    checks = [
        ("frequency", x, (x < 0) | (x != np.round(x)), "must be a non-negative whole number"),
        ("recency", tx, tx < 0, "must be >= 0"),
        ("T", t_obs, t_obs < 0, "must be >= 0"),
        ("recency", tx, tx > t_obs * (1 + 1e-12) + 1e-12, "must not exceed T"),
        ("recency", tx, (x == 0) & (tx != 0), "must be 0 when frequency is 0"),
    ]
    for name, arr, mask, what in checks:
        i = _first_bad(mask)
        if i is not None:
            raise ModelInputError(
                f"{name}: row {i}: value {float(arr[i])!r} {what} (frequency={float(x[i])!r}, recency={float(tx[i])!r}, T={float(t_obs[i])!r})"
            )
    return x, tx, t_obs


def bgnbd_log_likelihood(
    params: ArrayLike, frequency: FloatArray, recency: FloatArray, T: FloatArray
) -> FloatArray:
    """Per-customer BG/NBD log-likelihood at ``params = (r, alpha, a, b)``.

    Computed as ``A1 + A2 + logaddexp(A3, A4)`` with gammaln/betaln so that large frequencies do not
    overflow; ``A4`` (the "dropped out after the last purchase" branch) is absent when frequency is 0.
    """
    r, alpha, a, b = (float(v) for v in np.asarray(params, dtype=np.float64))
    x, tx, t_obs = frequency, recency, T
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = betaln(a, b + x) - betaln(a, b)
    a3 = -(r + x) * np.log(alpha + t_obs)
    a4 = _log_dropout_branch(r, alpha, a, b, x, tx)
    return a1 + a2 + np.logaddexp(a3, a4)


def _log_dropout_branch(
    r: float, alpha: float, a: float, b: float, x: FloatArray, tx: FloatArray
) -> FloatArray:
    repeat = x > 0
    out = np.full(x.shape, -np.inf)
    xr = x[repeat]
    out[repeat] = np.log(a) - np.log(b + xr - 1.0) - (r + xr) * np.log(alpha + tx[repeat])
    return out


def _neg_loglik_and_grad(
    log_params: FloatArray,
    x: FloatArray,
    tx: FloatArray,
    t_obs: FloatArray,
    weights: FloatArray,
    n_total: float,
    penalizer: float,
) -> tuple[float, FloatArray]:
    """Mean negative log-likelihood (plus penalty) and its gradient in the log parameters."""
    r, alpha, a, b = np.exp(log_params)
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = betaln(a, b + x) - betaln(a, b)
    a3 = -(r + x) * np.log(alpha + t_obs)
    a4 = _log_dropout_branch(r, alpha, a, b, x, tx)
    a34 = np.logaddexp(a3, a4)
    ll = a1 + a2 + a34
    w3 = np.exp(a3 - a34)
    w4 = np.exp(a4 - a34)
    repeat = x > 0
    log_alpha_tx = np.zeros_like(x)
    log_alpha_tx[repeat] = np.log(alpha + tx[repeat])
    inv_alpha_tx = np.zeros_like(x)
    inv_alpha_tx[repeat] = 1.0 / (alpha + tx[repeat])
    inv_b_x = np.zeros_like(x)
    inv_b_x[repeat] = 1.0 / (b + x[repeat] - 1.0)
    d_r = digamma(r + x) - digamma(r) + np.log(alpha) - w3 * np.log(alpha + t_obs) - w4 * log_alpha_tx
    d_alpha = r / alpha - (r + x) * (w3 / (alpha + t_obs) + w4 * inv_alpha_tx)
    d_a = digamma(a + b) - digamma(a + b + x) + w4 / a
    d_b = digamma(b + x) - digamma(b) + digamma(a + b) - digamma(a + b + x) - w4 * inv_b_x
    grad = np.array([(weights * d).sum() for d in (d_r, d_alpha, d_a, d_b)]) * np.array([r, alpha, a, b])
    value = -(weights * ll).sum() / n_total + penalizer * float(np.sum(log_params**2))
    gradient = -grad / n_total + 2.0 * penalizer * log_params
    return float(value), gradient


def _collapse(*columns: FloatArray) -> tuple[list[FloatArray], FloatArray]:
    """Distinct rows of the given columns and how often each occurs (likelihood weights)."""
    stacked = np.column_stack(columns)
    uniq, counts = np.unique(stacked, axis=0, return_counts=True)
    return [uniq[:, j].copy() for j in range(uniq.shape[1])], counts.astype(np.float64)


def minimize_from_starts(
    objective: Callable[..., tuple[float, FloatArray]],
    starts: list[FloatArray],
    args: tuple[Any, ...],
    log_bound: float,
    max_iter: int,
) -> Any:
    """Best (lowest finite objective) L-BFGS-B result over ``starts``, log parameters boxed to
    ``[-log_bound, log_bound]``; None when no start gives a finite objective."""
    best: Any = None
    bounds = [(-log_bound, log_bound)] * len(starts[0])
    # BLAS threads only slow down a few-parameter L-BFGS-B: they busy-wait, 30x slower on a busy machine.
    with threadpool_limits(limits=1, user_api="blas"):
        for x0 in starts:
            res = minimize(
                objective,
                np.clip(x0, -log_bound + 1, log_bound - 1),
                args=args,
                jac=True,
                method="L-BFGS-B",
                bounds=bounds,
                options={"maxiter": max_iter, "ftol": 1e-14, "gtol": 1e-10},
            )
            if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
                best = res
    return best


class BetaGeoModel(BaseEstimator):  # type: ignore[misc]
    """BG/NBD estimator (scikit-learn conventions: fitted state ends in ``_``).

    Parameters
    ----------
    penalizer : float
        L2 penalty on the *log* parameters, added to the mean negative log-likelihood per customer.
        0 (default) gives the plain maximum-likelihood estimate.
    max_iter : int
        Iteration limit of each L-BFGS-B run.

    Attributes
    ----------
    r_, alpha_, a_, b_ : float
        Fitted parameters; ``alpha_`` is in the time unit of the inputs (weeks in, weeks out).
    loglik_ : float
        Total log-likelihood of the fitted data at the estimate (without the penalty).
    n_customers_ : int
    converged_ : bool
        Whether the optimiser reported convergence (False e.g. when a parameter runs to its bound
        because the likelihood keeps rising, as a and b do when every buyer has the same dropout).
    n_iter_ : int
        L-BFGS-B iterations of the best start.
    """

    def __init__(self, penalizer: float = 0.0, max_iter: int = 1000) -> None:
        self.penalizer = penalizer
        self.max_iter = max_iter

    # ------------------------------------------------------------------ fitting
    def fit(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> BetaGeoModel:
        """Fit by maximum likelihood. Inputs in one time unit (see module docstring). Returns self."""
        x, tx, t_obs = check_rft(frequency, recency, T)
        if len(x) < 2:
            raise InsufficientDataError(
                f"BG/NBD needs at least 2 customers with a first purchase, got {len(x)}"
            )
        if not (x > 0).any():
            raise InsufficientDataError(
                f"BG/NBD needs at least one repeat purchase; none of the {len(x)} customers bought again"
            )
        if self.penalizer < 0:
            raise ModelInputError(f"penalizer: value {self.penalizer!r} must be >= 0")
        (ux, utx, ut), weights = _collapse(x, tx, t_obs)
        n_total = float(len(x))
        args = (ux, utx, ut, weights, n_total, float(self.penalizer))
        # Two starts: unit parameters, and one whose alpha matches the observed purchase rate scale
        # (alpha is in the time unit of the data, so day and week inputs differ by a factor of 7).
        rate = max(float(x.sum()) / max(float(t_obs.sum()), 1e-12), 1e-12)
        starts = [np.zeros(4), np.log(np.array([1.0, 1.0 / rate, 1.0, 1.0]))]
        best = minimize_from_starts(_neg_loglik_and_grad, starts, args, _LOG_BOUND, self.max_iter)
        if best is None:
            raise InsufficientDataError("BG/NBD: the likelihood is not finite at any starting point")
        self.r_, self.alpha_, self.a_, self.b_ = (float(v) for v in np.exp(best.x))
        self.loglik_ = float((weights * bgnbd_log_likelihood(self.params_array_, ux, utx, ut)).sum())
        self.n_customers_ = len(x)
        self.converged_ = bool(best.success)
        self.n_iter_ = int(best.nit)
        return self

    @property
    def params_array_(self) -> FloatArray:
        check_is_fitted(self, ["r_", "alpha_", "a_", "b_"])
        return np.array([self.r_, self.alpha_, self.a_, self.b_])

    @property
    def params_(self) -> dict[str, float]:
        """Fitted parameters as a dict ``{"r", "alpha", "a", "b"}``."""
        r, alpha, a, b = self.params_array_
        return {"r": float(r), "alpha": float(alpha), "a": float(a), "b": float(b)}

    def individual_log_likelihood(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> FloatArray:
        """Log-likelihood of each customer's history under the fitted parameters."""
        x, tx, t_obs = check_rft(frequency, recency, T)
        return bgnbd_log_likelihood(self.params_array_, x, tx, t_obs)

    # -------------------------------------------------------------- prediction
    def prob_alive(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> FloatArray:
        """P(customer still alive at T | history): probability in [0, 1] (1 when frequency is 0)."""
        x, tx, t_obs = check_rft(frequency, recency, T)
        return self._prob_alive(x, tx, t_obs)

    def _prob_alive(self, x: FloatArray, tx: FloatArray, t_obs: FloatArray) -> FloatArray:
        r, alpha, a, b = self.params_array_
        # log of the odds "dropped out after the last purchase" : "alive"
        log_odds = np.full(x.shape, -np.inf)
        rep = x > 0
        xr = x[rep]
        log_odds[rep] = (
            np.log(a)
            - np.log(b + xr - 1.0)
            + (r + xr) * (np.log(alpha + t_obs[rep]) - np.log(alpha + tx[rep]))
        )
        return np.exp(-np.logaddexp(0.0, log_odds))

    def prob_no_purchase(
        self, t: float, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """P(no purchase in (T, T + t] | history): the churn probability over the next ``t`` time units.

        Exact under BG/NBD: a customer who is dead buys nothing; one who is alive at T has (given the
        history) rate ``lambda ~ Gamma(r + x, alpha + T)`` and a dropout only ever happens right after a
        purchase, so ``P(0) = 1 - P(alive) + P(alive) * ((alpha + T) / (alpha + T + t)) ** (r + x)``.
        """
        x, tx, t_obs = check_rft(frequency, recency, T)
        t = _check_horizon(t)
        r, alpha, _, _ = self.params_array_
        p_alive = self._prob_alive(x, tx, t_obs)
        # P(no purchase in t | alive) computed as a log to stay accurate for heavy buyers.
        p_zero_alive = np.exp(-(r + x) * np.log1p(t / (alpha + t_obs)))
        return 1.0 - p_alive * (1.0 - p_zero_alive)

    def expected_purchases(
        self, t: float, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """E[number of purchases in (T, T + t] | history], in purchases (t in the inputs' time unit).

        Closed form of Fader, Hardie and Lee (2005) after Euler's transformation of the
        Gaussian hypergeometric function,
        ``((alpha+T)/(alpha+T+t))**(r+x) * 2F1(r+x, b+x; a+b+x-1; z)
        = (1-z)**(a-1) * 2F1(a+b-1-r, a-1; a+b+x-1; z)`` with ``z = t/(alpha+T+t)``,
        whose parameters do not grow with x (the untransformed 2F1 overflows for heavy buyers). Rows
        where the closed form is not finite, falls outside its bounds ``[0, P(alive) (r+x) t/(alpha+T)]``
        or is 0/0 (a == 1) are recomputed by adaptive quadrature of
        ``P(alive) * E_p[(1 - ((alpha+T)/(alpha+T+p t))**(r+x)) / p]`` with ``p ~ Beta(a, b+x)``.
        """
        x, tx, t_obs = check_rft(frequency, recency, T)
        t = _check_horizon(t)
        r, alpha, a, b = self.params_array_
        p_alive = self._prob_alive(x, tx, t_obs)
        if t == 0:
            return np.zeros_like(x)
        z = t / (alpha + t_obs + t)
        c = a + b + x - 1.0
        with np.errstate(all="ignore"):
            tail = np.exp((a - 1.0) * np.log1p(-z)) * hyp2f1(a + b - 1.0 - r, a - 1.0, c, z)
            closed = p_alive * c / (a - 1.0) * (1.0 - tail)
        upper = p_alive * (r + x) * t / (alpha + t_obs)
        bad = ~np.isfinite(closed) | (closed < -1e-9 * upper) | (closed > upper * (1 + 1e-9))
        if abs(a - 1.0) < 1e-6:
            bad[:] = True
        out = closed.copy()
        if bad.any():
            out[bad] = p_alive[bad] * _expected_given_alive_quadrature(r, alpha, a, b, t, x[bad], t_obs[bad])
        return np.clip(out, 0.0, None)

    def expected_purchases_quadrature(
        self, t: float, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """Same quantity as :meth:`expected_purchases`, always by quadrature (a cross-check)."""
        x, tx, t_obs = check_rft(frequency, recency, T)
        t = _check_horizon(t)
        r, alpha, a, b = self.params_array_
        return self._prob_alive(x, tx, t_obs) * _expected_given_alive_quadrature(r, alpha, a, b, t, x, t_obs)


def _check_horizon(t: float) -> float:
    t = float(t)
    if not np.isfinite(t) or t < 0:
        raise ModelInputError(f"t: value {t!r} must be a finite number >= 0 (time units ahead)")
    return t


def _expected_given_alive_quadrature(
    r: float, alpha: float, a: float, b: float, t: float, x: FloatArray, t_obs: FloatArray
) -> FloatArray:
    """E[purchases in t | alive, history] = E_p[(1 - E_lambda[exp(-lambda p t)]) / p], one row at a time.

    Given alive, the posterior factorises: lambda ~ Gamma(r+x, alpha+T), p ~ Beta(a, b+x); a customer
    with (lambda, p) makes (1 - exp(-lambda p t)) / p purchases in expectation over t. The inner
    expectation over lambda is closed-form (its integrand tends to (r+x) t / (alpha+T) as p -> 0); the
    outer one is adaptive quadrature (QUADPACK) of the Beta density split at p = 1/2. A singular end of
    the density (``p^(a-1)`` with a < 1, ``(1-p)^(b+x-1)`` with b + x < 1) is integrated as an algebraic
    weight (QAWS, exact for the singularity); otherwise the density is part of the integrand and the
    Beta mean and +-4 standard deviations are break points. About 1 ms per row.
    """
    out = np.empty_like(x)
    opts: dict[str, Any] = {"epsabs": 0.0, "epsrel": 1e-12, "limit": 500}
    for i, (xv, tv) in enumerate(zip(x, t_obs, strict=True)):
        b_post = b + xv
        mean = a / (a + b_post)
        sd = float(np.sqrt(a * b_post / ((a + b_post) ** 2 * (a + b_post + 1.0))))
        total = 0.0
        for lo, hi in ((0.0, 0.5), (0.5, 1.0)):
            # a singular end of the density goes into the QAWS weight, the rest stays in the integrand
            w_lo = a - 1.0 if (lo == 0.0 and a < 1.0) else 0.0
            w_hi = b_post - 1.0 if (hi == 1.0 and b_post < 1.0) else 0.0
            args = (r + xv, t / (alpha + tv), a - 1.0 - w_lo, b_post - 1.0 - w_hi, -betaln(a, b_post))
            with warnings.catch_warnings():
                # QUADPACK warns when it cannot reach 1e-12; the result is still far better than needed.
                warnings.simplefilter("ignore", IntegrationWarning)
                if w_lo or w_hi:
                    value, _ = quad(
                        _posterior_integrand, lo, hi, args=args, weight="alg", wvar=(w_lo, w_hi), **opts
                    )
                else:
                    points = [q for q in (mean - 4 * sd, mean, mean + 4 * sd) if lo < q < hi]
                    value, _ = quad(_posterior_integrand, lo, hi, args=args, points=points or None, **opts)
            total += value
        out[i] = total
    return out


def _posterior_integrand(p: float, k: float, s: float, e_lo: float, e_hi: float, log_norm: float) -> float:
    """``(1 - (1 + s p)^-k) / p * p^e_lo * (1-p)^e_hi * exp(log_norm)`` (the non-weight part of the density)."""
    p = min(max(p, 1e-300), 1.0)
    purchases = -np.expm1(-k * np.log1p(s * p)) / p
    with np.errstate(divide="ignore"):
        log_density = e_lo * np.log(p) + (e_hi * np.log1p(-p) if e_hi else 0.0) + log_norm
    return float(purchases * np.exp(log_density))
