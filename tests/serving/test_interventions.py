"""Interventions: eligibility, expected incremental value, control groups, budget allocation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from features.config import Action, InterventionConfig
from serving.interventions import (
    MIN_PROB,
    PlaybookError,
    action_columns,
    allocate_budget,
    candidate_actions,
    control_flags,
    control_uniform,
    expected_incremental_value,
    money_units,
    select_without_budget,
)

AS_OF = pd.Timestamp("2024-06-30", tz="UTC")

PLAYBOOK = [
    Action(id="retain", name="Retention offer", layers=["at_risk", "declining"], unit_cost=2.0, uplift_prior=0.3),
    Action(id="vip", name="VIP advisor", layers=["mature"], unit_cost=5.0, uplift_prior=0.2),
    Action(id="coupon", name="New-customer coupon", layers=["potential"], unit_cost=1.0, uplift_prior=0.5,
           frequency_cap_days=30),
    Action(id="winback", name="Win-back", layers=["recoverable"], unit_cost=3.0, uplift_prior=0.1),
]


def _config(**kw: object) -> InterventionConfig:
    return InterventionConfig(playbook=PLAYBOOK, **kw)  # type: ignore[arg-type]


def _scores() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["m_at_risk", "m_ok", "prospect", "churned", "recov"],
            "as_of": AS_OF,
            "lifecycle": ["mature", "mature", "potential", "churned", "churned"],
            "refined_layer": ["at_risk", "mature", "hot_prospect", "churned", "recoverable"],
            "churn_risk": [0.8, 0.1, np.nan, 0.9, 0.7],
            "conversion_prob": [np.nan, np.nan, 0.4, np.nan, np.nan],
            "predicted_value": [100.0, 500.0, 20.0, 1.0, 60.0],
        }
    )


def test_expected_incremental_value_formulas() -> None:
    # buyer: risk x value-if-retained x uplift - cost, value-if-retained = value / (1 - risk)
    v = expected_incremental_value(np.array([0.8]), np.array([np.nan]), np.array([100.0]), 0.1, 2.0)
    assert v[0] == pytest.approx(0.8 * (100.0 / 0.2) * 0.1 - 2.0)
    # the floor on 1 - risk keeps it finite
    v = expected_incremental_value(np.array([1.0]), np.array([np.nan]), np.array([10.0]), 0.1, 0.0)
    assert v[0] == pytest.approx(1.0 * (10.0 / MIN_PROB) * 0.1)
    # prospect: conversion x uplift x value-if-converted - cost
    v = expected_incremental_value(np.array([np.nan]), np.array([0.4]), np.array([20.0]), 0.5, 1.0)
    assert v[0] == pytest.approx(0.4 * 0.5 * (20.0 / 0.4) - 1.0)
    # neither score -> NaN (not eligible for anything)
    v = expected_incremental_value(np.array([np.nan]), np.array([np.nan]), np.array([20.0]), 0.5, 1.0)
    assert np.isnan(v[0])


def test_eligibility_uses_refined_layer_and_lifecycle() -> None:
    cands = candidate_actions(_scores(), _config(control_share=0.0))
    by_user = cands.groupby("user_id")["action_id"].apply(list).to_dict()
    assert by_user["m_at_risk"] == ["retain", "vip"]  # at-risk and mature playbooks, ranked by value
    assert by_user["m_ok"] == ["vip"]
    assert by_user["prospect"] == ["coupon"]  # hot prospect gets the potential playbook
    assert by_user["recov"] == ["winback"]
    assert "churned" not in by_user  # nothing in this playbook for rule-churned users
    first = cands[cands.user_id == "m_at_risk"].iloc[0]
    assert first["rank"] == 1 and first["expected_incremental_value"] == pytest.approx(0.8 * 500 * 0.3 - 2)


def test_playbook_errors_name_the_action() -> None:
    dup = [*PLAYBOOK, PLAYBOOK[0]]
    with pytest.raises(PlaybookError, match="duplicate action id 'retain'"):
        candidate_actions(_scores(), InterventionConfig(playbook=dup))


def test_select_without_budget_takes_best_positive_actions() -> None:
    cands = candidate_actions(_scores(), _config(control_share=0.0))
    sel = select_without_budget(cands, 1)
    chosen = sel[sel.selected].set_index("user_id")["action_id"].to_dict()
    assert chosen == {"m_at_risk": "retain", "m_ok": "vip", "prospect": "coupon", "recov": "winback"}
    assert (sel.loc[sel.selected, "expected_incremental_value"] > 0).all()
    two = select_without_budget(cands, 2)
    assert two[two.user_id == "m_at_risk"].selected.tolist() == [True, True]


def test_action_columns_and_json() -> None:
    scores = _scores()
    cands = select_without_budget(candidate_actions(scores, _config(control_share=0.0)), 1)
    cols = action_columns(scores["user_id"], cands, _config())
    assert cols["action_id"].tolist() == ["retain", "vip", "coupon", None, "winback"]
    assert cols["action_name"].iloc[0] == "Retention offer"
    assert cols["action_cost"].iloc[0] == 2.0 and np.isnan(cols["action_cost"].iloc[3])
    items = json.loads(cols["interventions"].iloc[0])
    assert [i["action_id"] for i in items] == ["retain", "vip"]
    assert items[0]["selected"] is True and items[1]["selected"] is False
    assert json.loads(cols["interventions"].iloc[3]) == []


def test_frequency_cap_drops_recent_contacts_only() -> None:
    history = pd.DataFrame(
        {
            "user_id": ["prospect", "m_ok"],
            "action_id": ["coupon", "vip"],
            "last_contacted_at": [AS_OF - pd.Timedelta(days=10), AS_OF - pd.Timedelta(days=45)],
        }
    )
    cands = candidate_actions(_scores(), _config(control_share=0.0), last_contacted=history)
    assert "prospect" not in set(cands.user_id)  # coupon contacted 10 days ago, cap 30 days
    assert "vip" in set(cands[cands.user_id == "m_ok"].action_id)  # 45 days ago, cap 30 days


def test_control_flags_are_deterministic_and_per_action() -> None:
    users = [f"u{i}" for i in range(1000)]
    a = control_flags(users, ["retain"] * 1000, 0.1)
    assert np.array_equal(a, control_flags(users, ["retain"] * 1000, 0.1))
    assert a[5] == (control_uniform("u5", "retain") < 0.1)
    b = control_flags(users, ["vip"] * 1000, 0.1)
    assert not np.array_equal(a, b)
    assert not control_flags(users, ["vip"] * 1000, 0.0).any()


def test_control_share_within_binomial_bounds_on_20k_users() -> None:
    n, share = 20_000, 0.10
    users = [f"user-{i:06d}" for i in range(n)]
    lo, hi = stats.binom.interval(0.999999, n, share)
    for action in ("retain", "vip", "coupon"):
        k = int(control_flags(users, [action] * n, share).sum())
        assert lo <= k <= hi, (action, k, lo, hi)
    # Two actions' control groups are independent: overlap ~ share^2.
    both = int((control_flags(users, ["retain"] * n, share) & control_flags(users, ["vip"] * n, share)).sum())
    lo2, hi2 = stats.binom.interval(0.999999, n, share * share)
    assert lo2 <= both <= hi2


def _random_candidates(seed: int, n_users: int, share: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for a in range(int(rng.integers(1, 4))):
            rows.append((f"u{u}", f"a{a}", float(rng.choice([0.1, 0.2, 0.5, 1.0, 2.5, 7.0])), float(rng.normal(1.0, 2.0))))
    frame = pd.DataFrame(rows, columns=["user_id", "action_id", "unit_cost", "expected_incremental_value"])
    frame = frame.sort_values(["user_id", "expected_incremental_value"], ascending=[True, False])
    frame["rank"] = frame.groupby("user_id").cumcount() + 1
    frame["control"] = control_flags(frame["user_id"].tolist(), frame["action_id"].tolist(), share)
    frame["selected"] = False
    return frame.reset_index(drop=True)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_users=st.integers(1, 60),
    budget=st.floats(0.0, 80.0, allow_nan=False),
    share=st.sampled_from([0.0, 0.1, 0.5]),
    per_user=st.integers(1, 2),
)
def test_budget_is_never_exceeded_and_greedy_is_maximal(
    seed: int, n_users: int, budget: float, share: float, per_user: int
) -> None:
    cands = _random_candidates(seed, n_users, share)
    alloc = allocate_budget(cands, budget, per_user)
    out = alloc.candidates
    sel = out[out.selected]
    treated_cost = float(sel.loc[~sel.control, "unit_cost"].sum())
    # Exact in money units (millionths); in floats up to the rounding of the sum.
    budget_units = int(money_units(np.array([budget]))[0])
    treated_units = int(money_units(sel.loc[~sel.control, "unit_cost"].to_numpy()).sum())
    assert treated_units <= budget_units
    assert treated_cost <= budget + 1e-6
    assert alloc.spent == pytest.approx(treated_cost)
    assert (sel["expected_incremental_value"] > 0).all()
    assert (sel.groupby("user_id").size() <= per_user).all()
    assert alloc.treated == int((~sel.control).sum()) and alloc.control == int(sel.control.sum())
    # Maximal: no unselected positive pair of a user with a free slot would still fit.
    remaining_units = budget_units - treated_units
    taken = sel.groupby("user_id").size()
    free = out[~out.selected & (out.expected_incremental_value > 0)]
    free = free[free.user_id.map(taken).fillna(0) < per_user]
    assert (money_units(free["unit_cost"].to_numpy()) > remaining_units).all()


def test_budget_allocation_prefers_higher_value_and_controls_are_free() -> None:
    cands = pd.DataFrame(
        {
            "user_id": ["a", "b", "c", "d"],
            "action_id": ["x", "x", "x", "x"],
            "rank": [1, 1, 1, 1],
            "unit_cost": [4.0, 4.0, 4.0, 1.0],
            "expected_incremental_value": [10.0, 9.0, 8.0, 0.5],
            "control": [False, True, False, False],
            "selected": False,
        }
    )
    alloc = allocate_budget(cands, 8.0, 1)
    chosen = alloc.candidates.set_index("user_id")["selected"].to_dict()
    # a (treated, 4 left), b (control: fits, consumes nothing), c (treated, 0 left), d no longer fits.
    assert chosen == {"a": True, "b": True, "c": True, "d": False}
    assert alloc.spent == 8.0 and alloc.treated == 2 and alloc.control == 1
    alloc = allocate_budget(cands, 5.0, 1)
    chosen = alloc.candidates.set_index("user_id")["selected"].to_dict()
    # a (1 left); b and c (cost 4) are skipped, control b too (it mirrors who would be contacted); d fits.
    assert chosen == {"a": True, "b": False, "c": False, "d": True}
    with pytest.raises(Exception, match="budget"):
        allocate_budget(cands, -1.0, 1)


def test_budget_counts_money_exactly() -> None:
    """0.1 + 0.2 > 0.3 in floats; in money units both pairs fit a budget of 0.3, and nothing more."""
    cands = pd.DataFrame(
        {
            "user_id": ["a", "b", "c"],
            "action_id": "x",
            "rank": 1,
            "unit_cost": [0.1, 0.2, 0.1],
            "expected_incremental_value": [3.0, 2.0, 1.0],
            "control": False,
            "selected": False,
        }
    )
    alloc = allocate_budget(cands, 0.3, 1)
    assert alloc.candidates["selected"].tolist() == [True, True, False]
    assert alloc.spent == pytest.approx(0.3)
