"""Drift statistics (PSI by hand, KS and chi-square against scipy) and drift detection on demo data with
known injected shifts (a new acquisition channel floods in; engagement collapses) and without any."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import monitoring_fixtures as mf
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from features.config import MonitoringConfig
from features.layers import assign_layers
from features.pipeline import build_features
from features.rfm_segments import rfm_thresholds
from serving.drift import (
    DRIFT_COLUMNS,
    categorical_drift,
    chi_square_against_shares,
    feature_drift,
    ks_against_quantiles,
    layer_shares,
    layer_shift,
    numeric_drift,
    psi,
)
from training.bundle import reference_distribution, reference_distributions
from training.models import categorical_features, feature_columns

CFG = MonitoringConfig()


# ----------------------------------------------------------------------------------------- by hand


def test_psi_matches_a_hand_computation() -> None:
    # (0.7 - 0.5) ln(0.7 / 0.5) + (0.3 - 0.5) ln(0.3 / 0.5)
    expected = 0.2 * math.log(1.4) + 0.2 * math.log(5 / 3)
    assert psi([0.5, 0.5], [0.7, 0.3]) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.16946, abs=1e-5)
    # four bins, one empty on the current side: floored at 1e-4
    e, a = [0.1, 0.2, 0.3, 0.4], [0.0, 0.2, 0.3, 0.5]
    by_hand = (1e-4 - 0.1) * math.log(1e-4 / 0.1) + 0.1 * math.log(0.5 / 0.4)
    assert psi(e, a) == pytest.approx(by_hand, abs=1e-12)
    assert psi(e, e) == 0.0
    assert psi(e, a) == pytest.approx(psi(a, e))  # symmetric


def test_psi_rejects_mismatched_bins() -> None:
    with pytest.raises(ValueError, match="3 expected bins but 2 actual"):
        psi([0.2, 0.3, 0.5], [0.5, 0.5])


def test_numeric_drift_by_hand() -> None:
    # reference: bins (-inf, 2], (2, 3], (3, inf) with 50/25/25% of the non-missing values, 20% missing
    ref = {"edges": [2.0, 3.0], "proportions": [0.5, 0.25, 0.25], "missing_share": 0.2, "n": 1000,
           "min": 0.0, "max": 10.0}
    current = np.array([1.0, 1.0, 2.5, 4.0, 4.0, 4.0, 11.0, 12.0, np.nan, np.nan])
    row = numeric_drift("x", ref, current, CFG)
    # bins with missing: reference [0.4, 0.2, 0.2, 0.2]; current [2/10, 1/10, 5/10, 2/10]
    e = [0.4, 0.2, 0.2, 0.2]
    a = [0.2, 0.1, 0.5, 0.2]
    by_hand = sum((ai - ei) * math.log(ai / ei) for ei, ai in zip(e, a, strict=True))
    assert row["psi"] == pytest.approx(by_hand, abs=1e-12)
    assert row["missing_reference"] == 0.2 and row["missing_current"] == pytest.approx(0.2)
    assert row["out_of_range"] == pytest.approx(2 / 8)  # 11 and 12 above the reference max
    assert row["status"] == "alert"  # PSI 0.48 >= 0.25 and 25% out of range
    assert "outside the reference range" in row["reasons"]
    assert set(row) == set(DRIFT_COLUMNS)


def test_without_stored_quantiles_ks_uses_the_bin_edges() -> None:
    """Bundles without quantiles: D is the largest gap of the binned CDFs (a lower bound of the true D)."""
    ref = {"edges": [2.0, 3.0], "proportions": [0.5, 0.25, 0.25], "missing_share": 0.0, "n": 400}
    row = numeric_drift("x", ref, np.array([1.0, 2.5, 2.5, 2.5, 4.0]), CFG)
    # CDFs at the edges: reference 0.5, 0.75; current 0.2, 0.8 -> D = 0.3
    assert row["statistic"] == pytest.approx(0.3)
    assert np.isnan(row["out_of_range"])  # no stored range either


def test_ks_against_the_full_sample_equals_scipy() -> None:
    rng = np.random.default_rng(42)
    ref = rng.normal(0.0, 1.0, 700)
    cur = rng.normal(0.15, 1.0, 900)
    d, p = ks_against_quantiles(cur, ref, len(ref))
    oracle = stats.ks_2samp(cur, ref, method="asymp")
    assert d == pytest.approx(oracle.statistic, abs=1e-12)
    assert p == pytest.approx(oracle.pvalue, rel=1e-6)


def test_ks_against_stored_quantiles_is_within_one_percent_of_the_exact_statistic() -> None:
    rng = np.random.default_rng(42)
    ref = np.concatenate([np.zeros(3000), rng.lognormal(4.0, 1.0, 7000)])  # zero mass + long tail, like spend
    cur = np.concatenate([np.zeros(2000), rng.lognormal(4.3, 1.0, 8000)])
    stored = reference_distribution(ref)
    assert len(stored["quantiles"]) == 100 and stored["min"] == 0.0 and stored["max"] == ref.max()
    d, p = ks_against_quantiles(cur, stored["quantiles"], len(ref))
    exact = stats.ks_2samp(cur, ref)
    assert abs(d - exact.statistic) <= 0.01
    assert p < 1e-10 and exact.pvalue < 1e-10


def test_chi_square_equals_scipy_contingency() -> None:
    ref_shares = {"ad": 0.5, "content": 0.3, "referral": 0.2}
    counts = {"ad": 40, "content": 40, "referral": 10, "douyin": 10}
    stat, p = chi_square_against_shares(counts, ref_shares, 1000)
    table = np.array([[500, 300, 0, 200], [40, 40, 10, 10]])  # levels sorted: ad, content, douyin, referral
    oracle = stats.chi2_contingency(table, correction=False)
    assert stat == pytest.approx(oracle.statistic) and p == pytest.approx(oracle.pvalue)


def test_categorical_drift_names_unseen_levels_and_counts_missing_as_unknown() -> None:
    ref = {"levels": {"ad": 0.6, "content": 0.4}, "n": 500}
    values = pd.Series(["ad"] * 40 + ["content"] * 30 + ["douyin"] * 20 + [None] * 10)
    row = categorical_drift("source_channel", ref, values, CFG)
    levels = ["ad", "content", "douyin", "unknown"]
    e = [0.6, 0.4, 1e-4, 1e-4]
    a = [0.4, 0.3, 0.2, 0.1]
    assert levels == sorted(levels)
    assert row["psi"] == pytest.approx(sum((x - y) * math.log(x / y) for y, x in zip(e, a, strict=True)))
    assert row["new_levels"] == "douyin (20.0%), unknown (10.0%)"
    assert row["missing_current"] == pytest.approx(0.1) and row["status"] == "alert"


def test_a_significant_test_alone_is_no_breach() -> None:
    """With many users KS rejects a trivial shift: informative, not a breach (PSI decides)."""
    rng = np.random.default_rng(42)
    ref = reference_distribution(rng.normal(0.0, 1.0, 200_000))
    row = numeric_drift("x", ref, rng.normal(0.03, 1.0, 200_000), CFG)
    assert row["p_value"] < CFG.ks_pvalue and row["significant"]
    assert row["psi"] < 0.01 and row["status"] == "ok"


def test_layer_shift_by_hand() -> None:
    ref = {"lifecycle": {"potential": 0.40, "new": 0.35, "mature": 0.25}}
    cur = {"lifecycle": {"potential": 0.47, "new": 0.33, "mature": 0.18, "churned": 0.02}}
    table = layer_shift(ref, cur, CFG)
    got = table.set_index("layer")
    assert got.loc["potential", "change"] == pytest.approx(0.07) and got.loc["potential", "status"] == "alert"
    assert got.loc["mature", "change"] == pytest.approx(-0.07) and got.loc["mature", "status"] == "alert"
    assert got.loc["new", "status"] == "ok" and got.loc["churned", "reference_share"] == 0.0
    assert list(table["status"][:2]) == ["alert", "alert"]
    assert table["p_value"].isna().all()  # no population sizes: the size of the change decides


def test_layer_shift_within_sampling_noise_is_no_breach() -> None:
    ref = {"lifecycle": {"potential": 0.40, "new": 0.60}}
    cur = {"lifecycle": {"potential": 0.47, "new": 0.53}}
    small = layer_shift(ref, cur, CFG, n_reference=100, n_current=100).set_index("layer")
    large = layer_shift(ref, cur, CFG, n_reference=20_000, n_current=20_000).set_index("layer")
    # z = 0.07 / sqrt(0.435 * 0.565 * 2 / n): 1.0 with 100 users each, 14.1 with 20,000
    assert small.loc["potential", "p_value"] == pytest.approx(2 * stats.norm.sf(0.07 / math.sqrt(0.435 * 0.565 * 0.02)))
    assert small.loc["potential", "status"] == "ok"
    assert large.loc["potential", "status"] == "alert" and large.loc["potential", "p_value"] < 1e-40


def test_a_large_psi_on_a_tiny_sample_is_only_a_warning() -> None:
    rng = np.random.default_rng(42)
    ref = reference_distribution(rng.normal(0.0, 1.0, 5000))
    row = numeric_drift("x", ref, rng.normal(0.0, 1.0, 12), CFG)  # 12 values in 10 bins: PSI is mostly noise
    assert row["psi"] >= CFG.psi_alert and not row["significant"]
    assert row["status"] == "warn" and "within sampling noise" in row["reasons"]


# ----------------------------------------------------------------------------------------- demo data


@lru_cache(maxsize=1)
def _reference() -> tuple[dict[str, Any], Any]:
    """Reference distributions and layer shares of the seed-7 population at the reference cutoff."""
    cfg = mf.monitor_config()
    features = build_features(mf.demo(7), mf.REFERENCE_CUTOFF, cfg)
    names = feature_columns(features)
    cats = categorical_features(features, names)
    ref = reference_distributions(features, pd.DataFrame(), names, {c: [] for c in cats})
    th = rfm_thresholds(features, cfg.layers.rfm)
    ref["layers"] = layer_shares(assign_layers(features, cfg, thresholds=th), ["lifecycle", "activity_tier"])
    ref["layers_n"] = len(features)
    return ref, th


def _check(dataset: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    cfg = mf.monitor_config()
    ref, th = _reference()
    features = build_features(dataset, mf.REFERENCE_CUTOFF, cfg)
    drift = feature_drift(ref, features, cfg.monitoring)
    current = layer_shares(assign_layers(features, cfg, thresholds=th), ["lifecycle", "activity_tier"])
    return drift, layer_shift(ref["layers"], current, cfg.monitoring, n_reference=ref["layers_n"],
                              n_current=len(features))


def test_an_independent_sample_from_the_same_generator_stays_quiet() -> None:
    drift, layers = _check(mf.demo(8))
    assert len(drift) > 50 and "as_of_month" not in set(drift["name"])  # excluded by default
    assert (drift["status"] == "ok").all(), drift.head(5).to_string()
    assert drift["psi"].max() < CFG.psi_warn
    assert (layers["status"] == "ok").all(), layers.head(5).to_string()


def test_a_flood_from_a_new_acquisition_channel_is_flagged_and_named() -> None:
    flooded = mf.flood_channel(mf.demo(8), mf.REFERENCE_CUTOFF, n_new=700)
    drift, layers = _check(flooded)
    alerts = drift[drift["status"] == "alert"]
    assert alerts.iloc[0]["name"] == "source_channel"  # worst first
    assert "douyin_live" in alerts.iloc[0]["new_levels"]
    assert {"source_channel", "days_since_joined", "events_add_wecom_30d"} <= set(alerts["name"])
    # more prospects: buyer-only features (NaN for prospects) breach on their missing share
    assert alerts.set_index("name").loc["days_since_last_order", "missing_change"] > 0.1
    # orders did not change: all-time spend and order counts move a little (more zeros) but do not breach
    assert not {"spend_total", "orders_total"} & set(alerts["name"])
    potential = layers.set_index(["dimension", "layer"]).loc[("lifecycle", "potential")]
    assert potential["status"] == "alert" and potential["change"] > 0.1


def test_an_engagement_collapse_is_flagged_on_the_engagement_features() -> None:
    collapsed = mf.collapse_engagement(mf.demo(8), mf.REFERENCE_CUTOFF, days=45, keep=0.1)
    drift, layers = _check(collapsed)
    alerts = set(drift.loc[drift["status"] == "alert", "name"])
    assert {"active_days_30d", "events_decay_hl7", "days_since_last_interaction"} <= alerts
    assert any(n.startswith("events_page_view_") for n in alerts)
    assert not {"source_channel", "spend_total", "orders_total", "days_since_joined"} & alerts
    sleeping = layers.set_index(["dimension", "layer"]).loc[("activity_tier", "sleeping")]
    assert sleeping["status"] == "alert" and sleeping["change"] > 0


def test_missing_feature_columns_are_named() -> None:
    from serving.drift import DriftInputError

    ref, _ = _reference()
    features = build_features(mf.demo(8), mf.REFERENCE_CUTOFF, mf.monitor_config()).drop(columns=["spend_total"])
    with pytest.raises(DriftInputError, match="spend_total"):
        feature_drift(ref, features, CFG)
