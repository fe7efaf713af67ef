"""BG/NBD: published CDNOW estimates, likelihood gradient, predictions vs quadrature and simulation."""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal, localcontext
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import hyp2f1
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from training.bgnbd import BetaGeoModel, ModelInputError, _neg_loglik_and_grad, bgnbd_log_likelihood

CDNOW_SAMPLE = Path("/work/shared/data/cdnow/CDNOW_sample.txt")
CAL_END = pd.Timestamp("1997-09-30")


def cdnow_weekly_summary() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, t_x, T) in weeks for the 2,357 sample customers, per-day transactions, calibration to 1997-09-30."""
    raw = pd.read_csv(
        CDNOW_SAMPLE,
        sep=r"\s+",
        header=None,
        names=["master_id", "sample_id", "date", "cds", "dollars"],
        dtype=str,
    )
    raw["date"] = pd.to_datetime(raw["date"], format="%Y%m%d")
    days = raw[raw["date"] <= CAL_END].drop_duplicates(["sample_id", "date"])
    per = days.groupby("sample_id")["date"].agg(["min", "max", "count"])
    x = (per["count"] - 1).to_numpy(dtype=float)
    tx = ((per["max"] - per["min"]).dt.days / 7).to_numpy()
    big_t = ((CAL_END - per["min"]).dt.days / 7).to_numpy()
    return x, tx, big_t


@pytest.fixture(scope="module")
def cdnow() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return cdnow_weekly_summary()


@pytest.fixture(scope="module")
def cdnow_model(cdnow: tuple[np.ndarray, np.ndarray, np.ndarray]) -> BetaGeoModel:
    return BetaGeoModel().fit(*cdnow)


def central_differences(f: Callable[[np.ndarray], float], point: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Independent numerical gradient (central differences, error O(h^2))."""
    steps = np.eye(len(point)) * h
    return np.array([(f(point + e) - f(point - e)) / (2 * h) for e in steps])


def fixed_model(r: float, alpha: float, a: float, b: float) -> BetaGeoModel:
    model = BetaGeoModel()
    model.r_, model.alpha_, model.a_, model.b_ = r, alpha, a, b
    return model


def simulate_bgnbd(
    r: float, alpha: float, a: float, b: float, big_t: np.ndarray, horizon: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulate the BG/NBD story itself: (x, t_x) over (0, T] and the purchase count in (T, T + horizon]."""
    n = len(big_t)
    lam = rng.gamma(r, 1.0 / alpha, size=n)
    p = rng.beta(a, b, size=n)
    x, tx, hold, now = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    active = np.arange(n)
    while len(active):
        now[active] += rng.exponential(1.0, size=len(active)) / lam[active]
        t_now = now[active]
        in_cal = t_now <= big_t[active]
        in_hold = ~in_cal & (t_now <= big_t[active] + horizon)
        x[active[in_cal]] += 1
        tx[active[in_cal]] = t_now[in_cal]
        hold[active[in_hold]] += 1
        survives = rng.random(len(active)) >= p[active]  # dropout only right after a repeat purchase
        active = active[(in_cal | in_hold) & survives]
    return x, tx, hold


def test_reproduces_published_cdnow_estimates(cdnow_model: BetaGeoModel) -> None:
    # Fader, Hardie and Lee (2005): r = 0.243, alpha = 4.414, a = 0.793, b = 2.426, LL = -9582.4
    params = cdnow_model.params_
    assert round(params["r"], 3) == 0.243
    assert round(params["alpha"], 3) == 4.414
    assert round(params["a"], 3) == 0.793
    assert round(params["b"], 3) == 2.426
    assert round(cdnow_model.loglik_, 1) == -9582.4
    assert cdnow_model.converged_
    assert cdnow_model.n_customers_ == 2357


def test_reproduces_published_conditional_expectation(cdnow_model: BetaGeoModel) -> None:
    # The paper's worked example: x = 2, t_x = 30.43, T = 38.86 -> E[Y(39) | ...] = 1.226
    value = cdnow_model.expected_purchases(39.0, [2], [30.43], [38.86])
    assert round(float(value[0]), 3) == 1.226


def test_time_unit_only_rescales_alpha(cdnow: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x, tx, big_t = cdnow
    weeks = BetaGeoModel().fit(x, tx, big_t)
    days = BetaGeoModel().fit(x, tx * 7, big_t * 7)
    assert days.alpha_ == pytest.approx(weeks.alpha_ * 7, rel=1e-5)
    for name in ("r_", "a_", "b_"):
        assert getattr(days, name) == pytest.approx(getattr(weeks, name), rel=1e-5)
    # densities of the repeat-purchase times pick up one factor 1/7 per repeat purchase
    assert days.loglik_ == pytest.approx(weeks.loglik_ - x.sum() * math.log(7), abs=1e-3)
    np.testing.assert_allclose(
        days.prob_no_purchase(273, x, tx * 7, big_t * 7), weeks.prob_no_purchase(39, x, tx, big_t), atol=1e-6
    )


def test_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(42)
    big_t = rng.uniform(5, 40, size=300)
    x, tx, _ = simulate_bgnbd(0.5, 6.0, 0.8, 2.0, big_t, 1.0, rng)
    w = rng.integers(1, 4, size=len(x)).astype(float)
    args = (x, tx, big_t, w, float(w.sum()), 0.01)
    for point in ([0.0, 0.0, 0.0, 0.0], [-1.2, 1.5, -0.3, 0.8], [0.5, 2.5, 1.0, -0.5]):

        def f(p: np.ndarray) -> float:
            return _neg_loglik_and_grad(p, *args)[0]

        def g(p: np.ndarray) -> np.ndarray:
            return _neg_loglik_and_grad(p, *args)[1]

        np.testing.assert_allclose(
            g(np.array(point)), central_differences(f, np.array(point)), rtol=1e-6, atol=1e-9
        )


def test_fit_recovers_simulated_parameters_and_beats_truth() -> None:
    rng = np.random.default_rng(42)
    truth = (0.4, 5.0, 0.7, 2.5)
    big_t = rng.uniform(20, 40, size=20_000)
    x, tx, _ = simulate_bgnbd(*truth, big_t, 39.0, rng)
    model = BetaGeoModel().fit(x, tx, big_t)
    np.testing.assert_allclose([model.r_, model.alpha_, model.a_, model.b_], truth, rtol=0.15)
    assert model.loglik_ >= bgnbd_log_likelihood(truth, x, tx, big_t).sum()


def test_predictions_match_simulated_holdout() -> None:
    """Conditional predictions at the true parameters against the simulated future (independent oracle)."""
    rng = np.random.default_rng(7)
    truth = (0.4, 5.0, 0.7, 2.5)
    big_t = rng.uniform(20, 40, size=20_000)
    x, tx, hold = simulate_bgnbd(*truth, big_t, 39.0, rng)
    model = fixed_model(*truth)
    p_zero = model.prob_no_purchase(39.0, x, tx, big_t)
    expected = model.expected_purchases(39.0, x, tx, big_t)
    for lo, hi in [(0, 0), (1, 2), (3, 6), (7, np.inf)]:
        rows = (x >= lo) & (x <= hi)
        n = rows.sum()
        observed_zero = (hold[rows] == 0).mean()
        se_zero = math.sqrt(observed_zero * (1 - observed_zero) / n)
        assert abs(p_zero[rows].mean() - observed_zero) < 4 * se_zero + 1e-3, (lo, hi)
        se_count = hold[rows].std() / math.sqrt(n)
        assert abs(expected[rows].mean() - hold[rows].mean()) < 4 * se_count + 1e-3, (lo, hi)


def test_closed_form_agrees_with_quadrature_where_raw_hyp2f1_overflows(cdnow_model: BetaGeoModel) -> None:
    x = np.array([0, 1, 2, 5, 20, 80, 300, 1000], dtype=float)
    big_t = np.full(len(x), 38.0)
    tx = np.where(x > 0, 37.5, 0.0)
    for t in (0.01, 1.0, 39.0, 520.0):
        closed = cdnow_model.expected_purchases(t, x, tx, big_t)
        quad = cdnow_model.expected_purchases_quadrature(t, x, tx, big_t)
        np.testing.assert_allclose(closed, quad, rtol=1e-8, atol=1e-12)
    # the untransformed 2F1 of the paper's formula overflows for the heavy buyers above
    r, alpha, a, b = cdnow_model.params_array_
    assert not np.isfinite(hyp2f1(r + 1000, b + 1000, a + b + 999, 520 / (alpha + 38 + 520)))


def _hyp2f1_decimal(a: Decimal, b: Decimal, c: Decimal, z: Decimal) -> Decimal:
    term = total = Decimal(1)
    j = 0
    while abs(term) > Decimal(10) ** -45 * abs(total) or j < 10:
        term = term * (a + j) * (b + j) / ((c + j) * (j + 1)) * z
        total += term
        j += 1
    return total


@pytest.mark.parametrize(("x", "t"), [(0, 39.0), (2, 39.0), (10, 39.0), (50, 39.0), (2, 520.0), (25, 520.0)])
def test_closed_form_matches_untransformed_published_formula_in_high_precision(
    cdnow_model: BetaGeoModel, x: int, t: float
) -> None:
    """The paper's conditional-expectation formula, its 2F1 summed as a 60-digit series (no Euler transform, no scipy)."""
    with localcontext() as ctx:
        ctx.prec = 60
        tx, big_t = (30.0 if x else 0.0), 38.0
        r, alpha, a, b = (Decimal(float(v)) for v in cdnow_model.params_array_)
        z = Decimal(t) / (alpha + Decimal(big_t) + Decimal(t))
        f21 = _hyp2f1_decimal(r + x, b + x, a + b + x - 1, z)
        ratio = (alpha + Decimal(big_t)) / (alpha + Decimal(big_t) + Decimal(t))
        numerator = (a + b + x - 1) / (a - 1) * (1 - (ratio.ln() * (r + x)).exp() * f21)
        odds = (
            a / (b + x - 1) * (((alpha + Decimal(big_t)) / (alpha + Decimal(tx))).ln() * (r + x)).exp()
            if x
            else 0
        )
        expected = float(numerator / (1 + odds))
    assert cdnow_model.expected_purchases(t, [x], [tx], [big_t])[0] == pytest.approx(expected, rel=1e-10)


def test_a_equal_one_uses_the_quadrature_fallback() -> None:
    # a == 1 makes the closed form 0/0; the limit is finite and continuous in a
    at_one = fixed_model(0.5, 4.0, 1.0, 2.0).expected_purchases(10.0, [0, 3], [0, 8], [10, 10])
    near = fixed_model(0.5, 4.0, 1.0 + 1e-4, 2.0).expected_purchases(10.0, [0, 3], [0, 8], [10, 10])
    assert np.all(np.isfinite(at_one))
    np.testing.assert_allclose(at_one, near, rtol=1e-3)


@settings(max_examples=150, deadline=None)
@given(
    r=st.floats(0.05, 20),
    alpha=st.floats(0.1, 200),
    a=st.floats(0.05, 20),
    b=st.floats(0.05, 20),
    x=st.integers(0, 200),
    frac=st.floats(0, 1),
    big_t=st.floats(0.5, 400),
    t=st.floats(0.01, 500),
)
def test_prediction_invariants(
    r: float, alpha: float, a: float, b: float, x: int, frac: float, big_t: float, t: float
) -> None:
    model = fixed_model(r, alpha, a, b)
    tx = frac * big_t if x > 0 else 0.0
    args = ([x], [tx], [big_t])
    p_alive = model.prob_alive(*args)[0]
    p_zero = model.prob_no_purchase(t, *args)[0]
    expected = model.expected_purchases(t, *args)[0]
    assert 0.0 <= p_alive <= 1.0
    assert 1.0 - p_alive - 1e-12 <= p_zero <= 1.0
    assert 0.0 <= expected <= p_alive * (r + x) * t / (alpha + big_t) * (1 + 1e-9) + 1e-300
    quad = model.expected_purchases_quadrature(t, *args)[0]
    assert expected == pytest.approx(quad, rel=1e-6, abs=1e-12)


def test_behaviour_recent_buyers_are_less_likely_to_churn(cdnow_model: BetaGeoModel) -> None:
    # same purchase count and age; the longer since the last purchase, the higher the churn risk
    tx = np.array([38.0, 30.0, 20.0, 10.0, 2.0])
    x, big_t = np.full(5, 4.0), np.full(5, 38.5)
    churn = cdnow_model.prob_no_purchase(13.0, x, tx, big_t)
    assert np.all(np.diff(churn) > 0)
    assert np.all(np.diff(cdnow_model.prob_alive(x, tx, big_t)) < 0)
    assert np.all(np.diff(cdnow_model.expected_purchases(13.0, x, tx, big_t)) < 0)
    # a customer without repeat purchases is alive by assumption
    assert cdnow_model.prob_alive([0], [0], [30])[0] == 1.0


def test_prediction_before_fit_raises() -> None:
    with pytest.raises(NotFittedError):
        BetaGeoModel().prob_alive([1], [1], [2])


def test_sklearn_contract() -> None:
    model = BetaGeoModel(penalizer=0.1, max_iter=50)
    assert model.get_params() == {"penalizer": 0.1, "max_iter": 50}
    assert clone(model).get_params() == model.get_params()
    assert not hasattr(model, "r_")


@pytest.mark.parametrize(
    ("frequency", "recency", "big_t", "message"),
    [
        ([1, 2], [1, 1], [3], "same length"),
        ([1, -1], [1, 0], [3, 3], "frequency: row 1: value -1.0"),
        ([1.5], [1], [3], "frequency: row 0: value 1.5"),
        ([1, 2], [1, 4], [3, 3], "recency: row 1: value 4.0 must not exceed T"),
        ([0], [1], [3], "recency: row 0: value 1.0 must be 0 when frequency is 0"),
        ([1, np.nan], [1, 1], [3, 3], "frequency: row 1: value nan"),
    ],
)
def test_invalid_inputs_name_row_and_value(frequency: list, recency: list, big_t: list, message: str) -> None:
    with pytest.raises(ModelInputError, match=message.replace("(", r"\(")):
        BetaGeoModel().fit(frequency, recency, big_t)


def test_no_repeat_purchases_is_insufficient_data() -> None:
    from features.errors import InsufficientDataError

    with pytest.raises(InsufficientDataError, match="repeat purchase"):
        BetaGeoModel().fit([0, 0, 0], [0, 0, 0], [3, 4, 5])
