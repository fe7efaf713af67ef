"""Gamma-Gamma spend model: published CDNOW estimates, density, gradient, shrinkage, recovery."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats
from sklearn.exceptions import NotFittedError

from training.bgnbd import ModelInputError
from training.gamma_gamma import GammaGammaModel, _neg_loglik_and_grad, gamma_gamma_log_likelihood

CDNOW_SAMPLE = Path("/work/shared/data/cdnow/CDNOW_sample.txt")


def cdnow_repeat_spend() -> pd.DataFrame:
    """Repeat buyers of the 2,357 sample in the 39-week calibration: count and mean spend of repeat days."""
    raw = pd.read_csv(
        CDNOW_SAMPLE,
        sep=r"\s+",
        header=None,
        names=["master_id", "sample_id", "date", "cds", "dollars"],
        dtype=str,
    )
    raw["date"] = pd.to_datetime(raw["date"], format="%Y%m%d")
    raw["dollars"] = raw["dollars"].astype(float)
    cal = raw[raw["date"] <= pd.Timestamp("1997-09-30")]
    days = (
        cal.groupby(["sample_id", "date"], as_index=False)["dollars"].sum().sort_values(["sample_id", "date"])
    )
    repeat_days = days[days["sample_id"].duplicated()]  # every day after each customer's first
    return repeat_days.groupby("sample_id")["dollars"].agg(frequency="size", monetary_value="mean")


def central_differences(f: Callable[[np.ndarray], float], point: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Independent numerical gradient (central differences, error O(h^2))."""
    steps = np.eye(len(point)) * h
    return np.array([(f(point + e) - f(point - e)) / (2 * h) for e in steps])


def fixed_model(p: float, q: float, v: float) -> GammaGammaModel:
    model = GammaGammaModel()
    model.p_, model.q_, model.v_ = p, q, v
    return model


def test_reproduces_published_cdnow_estimates() -> None:
    # Fader, Hardie and Lee (2005), "RFM and CLV": p = 6.25, q = 3.74, gamma = 15.44 (946 repeat buyers)
    data = cdnow_repeat_spend()
    assert len(data) == 946
    model = GammaGammaModel().fit(data["frequency"], data["monetary_value"])
    assert round(model.p_, 2) == 6.25
    assert round(model.q_, 2) == 3.74
    assert round(model.v_, 2) == 15.44
    assert model.converged_


@pytest.mark.parametrize("x", [1, 3, 12])
def test_density_matches_numerical_mixture_and_integrates_to_one(x: int) -> None:
    """Independent oracle: mix the Gamma(p x, rate nu x) density of the mean over nu ~ Gamma(q, rate v)."""
    p, q, v = 6.25, 3.74, 15.44
    for m in (5.0, 30.0, 120.0):

        def mixture(nu: float, m: float = m) -> float:
            return stats.gamma.pdf(m, p * x, scale=1 / (nu * x)) * stats.gamma.pdf(nu, q, scale=1 / v)

        oracle, _ = integrate.quad(mixture, 0, np.inf, limit=200)
        ours = np.exp(gamma_gamma_log_likelihood((p, q, v), np.array([float(x)]), np.array([m])))[0]
        assert ours == pytest.approx(oracle, rel=1e-6)
    total, _ = integrate.quad(
        lambda m: np.exp(gamma_gamma_log_likelihood((p, q, v), np.array([float(x)]), np.array([m])))[0],
        0,
        np.inf,
        limit=200,
    )
    assert total == pytest.approx(1.0, abs=1e-6)


def test_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(42)
    x = rng.integers(1, 10, size=200).astype(float)
    m = rng.gamma(3.0, 10.0, size=200)
    w = np.ones_like(x)
    args = (x, m, w, float(len(x)), 0.01)
    for point in ([0.0, 0.0, 0.0], [1.8, 1.3, 2.7], [-0.5, 2.0, 1.0]):

        def f(z: np.ndarray) -> float:
            return _neg_loglik_and_grad(z, *args)[0]

        def g(z: np.ndarray) -> np.ndarray:
            return _neg_loglik_and_grad(z, *args)[1]

        np.testing.assert_allclose(
            g(np.array(point)), central_differences(f, np.array(point)), rtol=1e-6, atol=1e-9
        )


def test_fit_recovers_simulated_parameters_and_beats_truth() -> None:
    rng = np.random.default_rng(42)
    p, q, v = 4.0, 3.0, 20.0
    n = 5000
    nu = rng.gamma(q, 1 / v, size=n)
    x = rng.integers(1, 8, size=n)
    spends = [rng.gamma(p, 1 / nu_i, size=x_i) for nu_i, x_i in zip(nu, x, strict=True)]
    m = np.array([s.mean() for s in spends])
    model = GammaGammaModel().fit(x, m)
    np.testing.assert_allclose([model.p_, model.q_, model.v_], [p, q, v], rtol=0.15)
    assert model.loglik_ >= gamma_gamma_log_likelihood((p, q, v), x.astype(float), m).sum()
    # the conditional expectation is the posterior mean of p / nu: compare with the simulated truth
    predicted = model.conditional_expected_average_spend(x, m)
    true_mean_spend = p / nu
    assert abs(predicted.mean() - true_mean_spend.mean()) < 0.03 * true_mean_spend.mean()
    # shrinkage beats the raw mean as an estimate of the customer's true mean spend
    assert np.mean((predicted - true_mean_spend) ** 2) < np.mean((m - true_mean_spend) ** 2)


def test_conditional_spend_shrinks_towards_population_mean() -> None:
    model = fixed_model(6.25, 3.74, 15.44)
    population = 6.25 * 15.44 / (3.74 - 1)
    assert model.population_mean_spend_ == pytest.approx(population)
    # one-time buyers (x = 0) get the population mean whatever their monetary value
    np.testing.assert_allclose(model.conditional_expected_average_spend([0, 0], [1.0, 500.0]), population)
    # a weighted average of the observed mean and the population mean, moving to the observed one with x
    m = 100.0
    values = model.conditional_expected_average_spend([1, 5, 50, 5000], [m] * 4)
    assert np.all((values > population) & (values < m))
    assert np.all(np.diff(values) > 0)
    assert values[-1] == pytest.approx(m, rel=0.01)
    # worked by hand: p (v + m x) / (p x + q - 1) at x = 2, m = 40
    hand = 6.25 * (15.44 + 40 * 2) / (6.25 * 2 + 3.74 - 1)
    assert model.conditional_expected_average_spend([2], [40])[0] == pytest.approx(hand)


def test_doubling_spend_doubles_the_fitted_scale_and_predictions() -> None:
    data = cdnow_repeat_spend()
    base = GammaGammaModel().fit(data["frequency"], data["monetary_value"])
    doubled = GammaGammaModel().fit(data["frequency"], 2 * data["monetary_value"])
    assert doubled.p_ == pytest.approx(base.p_, rel=1e-5)
    assert doubled.q_ == pytest.approx(base.q_, rel=1e-5)
    assert doubled.v_ == pytest.approx(2 * base.v_, rel=1e-5)


def test_no_finite_mean_gives_nan() -> None:
    model = fixed_model(2.0, 0.8, 10.0)
    assert model.population_mean_spend_ == float("inf")
    values = model.conditional_expected_average_spend([0, 3], [10.0, 10.0])
    assert np.isnan(values[0]) and np.isfinite(values[1])


def test_prediction_before_fit_raises() -> None:
    with pytest.raises(NotFittedError):
        GammaGammaModel().conditional_expected_average_spend([1], [10.0])


@pytest.mark.parametrize(
    ("frequency", "monetary", "message"),
    [
        (
            [1, 0, 2],
            [10.0, 5.0, 7.0],
            r"frequency: row 1: value 0.0 must be a whole number >= 1 \(fit on repeat buyers",
        ),
        ([1, 2, 2], [10.0, -5.0, 7.0], "monetary_value: row 1: value -5.0 must be > 0"),
        ([1, 2], [10.0], "same length"),
    ],
)
def test_invalid_inputs_name_row_and_value(frequency: list, monetary: list, message: str) -> None:
    with pytest.raises(ModelInputError, match=message):
        GammaGammaModel().fit(frequency, monetary)
