"""Refined layers from the lifecycle stage and the model scores (hand-built rows)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.config import RefinementConfig
from features.layer_names import LIFECYCLE_STAGES
from serving.refinement import (
    REFINED_LAYER_NAMES,
    disagreement_table,
    refine_layers,
    refined_layer_label,
)

CFG = RefinementConfig(at_risk_churn_risk=0.6, recoverable_return_prob=0.25, hot_prospect_conversion_prob=0.3)
NAN = np.nan


def _refine(rows: list[tuple[str, float, float, float]], threshold: float = 500.0) -> list[str]:
    frame = pd.DataFrame(rows, columns=["lifecycle", "risk", "conv", "value"])
    out = refine_layers(frame["lifecycle"], frame["risk"], frame["conv"], frame["value"], CFG, threshold)
    return out.tolist()


def test_each_rule_and_its_boundary() -> None:
    rows = [
        ("mature", 0.6, NAN, 100.0),  # at the at-risk threshold -> at_risk
        ("mature", 0.59, NAN, 100.0),  # below -> stays mature
        ("growth", 0.9, NAN, 100.0),
        ("new", 0.7, NAN, 900.0),  # at risk wins over high potential (early warning first)
        ("new", 0.2, NAN, 500.0),  # value at the frozen threshold -> high potential
        ("new", 0.2, NAN, 499.0),
        ("churned", 0.75, NAN, 10.0),  # return prob 0.25 -> recoverable
        ("churned", 0.76, NAN, 10.0),
        ("potential", NAN, 0.3, 5.0),  # hot prospect at threshold
        ("potential", NAN, 0.29, 5.0),
        ("potential", NAN, NAN, 5.0),  # no conversion model: stays potential
        ("declining", 0.95, NAN, 10.0),  # declining is already a warning layer: kept
    ]
    assert _refine(rows) == [
        "at_risk", "mature", "at_risk", "at_risk", "high_potential_new", "new",
        "recoverable", "churned", "hot_prospect", "potential", "potential", "declining",
    ]


def test_index_is_kept_and_names_are_bilingual() -> None:
    frame = pd.DataFrame(
        {"lifecycle": ["new", "mature"], "r": [0.1, 0.9], "c": [NAN, NAN], "v": [1.0, 2.0]}, index=[10, 20]
    )
    out = refine_layers(frame["lifecycle"], frame["r"], frame["c"], frame["v"], CFG, 1e9)
    assert list(out.index) == [10, 20]
    for code in [*LIFECYCLE_STAGES, "at_risk", "high_potential_new", "recoverable", "hot_prospect"]:
        zh, en = REFINED_LAYER_NAMES[code]
        assert zh and en and refined_layer_label(code) == f"{zh} {en}"


def test_disagreement_table_counts_pairs() -> None:
    rule = pd.Series(["mature", "mature", "mature", "new", "churned"])
    refined = pd.Series(["at_risk", "mature", "at_risk", "new", "recoverable"])
    table = disagreement_table(rule, refined)
    assert table["users"].sum() == 5
    first = table.iloc[0]
    assert (first["rule_layer"], first["refined_layer"], first["users"], bool(first["agrees"])) == (
        "mature", "at_risk", 2, False,
    )
    row = table[(table.rule_layer == "mature") & (table.refined_layer == "mature")].iloc[0]
    assert row["share_of_rule_layer"] == pytest.approx(1 / 3)
    assert int(table.loc[~table["agrees"], "users"].sum()) == 3
    with pytest.raises(ValueError):
        disagreement_table(rule, refined.iloc[:2])
