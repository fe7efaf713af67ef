"""Path (Saabas) contributions from LightGBM leaf indices: hand-checked values and exact additivity."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from training.tree_paths import PARALLEL_MIN_ROWS, contributions_from_leaves, path_tables

#: Two trees written by hand (LightGBM model text). Tree 0: x0 <= 0.5 ? leaf A (1.0, 60 rows) :
#: (x2 <= 2 ? leaf B (-1.0, 30 rows) : leaf C (3.0, 10 rows)). Tree 1: x1 <= 0 ? 0.5 : -0.5 (50/50 rows).
HAND_MODEL = """tree
version=v4
num_class=1
num_tree_per_iteration=1
label_index=0
max_feature_idx=2
objective=regression
feature_names=x0 x1 x2
feature_infos=[0:1] [-1:1] [0:5]

Tree=0
num_leaves=3
num_cat=0
split_feature=0 2
split_gain=1 1
threshold=0.5 2
decision_type=2 2
left_child=-1 -2
right_child=1 -3
leaf_value=1 -1 3
leaf_weight=60 30 10
leaf_count=60 30 10
internal_value=0.6 0
internal_weight=100 40
internal_count=100 40
is_linear=0
shrinkage=1


Tree=1
num_leaves=2
num_cat=0
split_feature=1
split_gain=1
threshold=0
decision_type=2
left_child=-1
right_child=-2
leaf_value=0.5 -0.5
leaf_weight=50 50
leaf_count=50 50
internal_value=0
internal_weight=100
internal_count=100
is_linear=0
shrinkage=1


end of trees

pandas_categorical:null
"""


def test_hand_checked_two_trees() -> None:
    booster = lgb.Booster(model_str=HAND_MODEL)
    # Expected values (leaf values weighted by leaf_count): tree 0 root (60*1 - 30*1 + 10*3)/100 = 0.6,
    # its right node (-30 + 30)/40 = 0; tree 1 root 0. So bias = 0.6 and, per leaf of tree 0:
    # A: x0 += 1 - 0.6;  B: x0 += 0 - 0.6, x2 += -1 - 0;  C: x0 += -0.6, x2 += 3 - 0. Tree 1: x1 += +-0.5.
    X = np.array([[0.0, -1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 5.0]])
    expected = np.array(
        [
            [0.4, 0.5, 0.0, 0.6],
            [-0.6, -0.5, -1.0, 0.6],
            [-0.6, 0.5, 3.0, 0.6],
        ]
    )
    tables = path_tables(booster)
    assert tables.bias == pytest.approx(0.6, abs=1e-15)
    raw, contrib = contributions_from_leaves(tables, booster.predict(X, pred_leaf=True))
    np.testing.assert_allclose(contrib, expected, atol=1e-12)
    np.testing.assert_allclose(raw, [1.5, -1.5, 3.5], atol=1e-12)
    np.testing.assert_allclose(raw, booster.predict(X, raw_score=True), atol=1e-12)
    # TreeSHAP spreads the credit differently (x2 gets some for rows that never test it) with the same
    # bias and the same total: that is the documented trade-off.
    shap = booster.predict(X, pred_contrib=True)
    np.testing.assert_allclose(shap[:, -1], contrib[:, -1], atol=1e-12)
    np.testing.assert_allclose(shap.sum(axis=1), contrib.sum(axis=1), atol=1e-12)
    assert shap[0, 2] != 0.0 and contrib[0, 2] == 0.0


def _synthetic(n: int, seed: int = 42) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=["a", "b", "c", "d"])
    X.loc[rng.random(n) < 0.2, "a"] = np.nan
    X.loc[rng.random(n) < 0.1, "b"] = np.nan
    X["channel"] = pd.Categorical(rng.choice(["ad", "wecom", "store", "referral", "content"], n))
    logit = X["a"].fillna(1.5) + X["b"].fillna(-1.0) * X["c"] + (X["channel"] == "wecom") - 0.5 * (X["channel"] == "ad")
    y = (logit + rng.normal(scale=0.7, size=n) > 0.3).astype(float).to_numpy()
    return X, y


def test_sums_to_the_raw_score_with_missing_values_and_categories() -> None:
    X, y = _synthetic(3000)
    params = {"objective": "binary", "verbosity": -1, "num_leaves": 15, "min_data_in_leaf": 10,
              "min_data_per_group": 10, "cat_smooth": 1.0, "seed": 1, "deterministic": True, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(X, y), 60)
    kinds = {(n["decision_type"], n["missing_type"], n["default_left"]) for n in _splits(booster)}
    assert ("==", "None", False) in kinds  # categorical splits
    assert any(k[1] == "NaN" and k[2] for k in kinds) and any(k[1] == "NaN" and not k[2] for k in kinds)
    test = X.copy()
    test.loc[test.index[:50], ["a", "b", "c", "d"]] = np.nan  # rows that take the default branch everywhere
    raw_lgb = booster.predict(test, raw_score=True)
    raw, contrib = contributions_from_leaves(path_tables(booster), booster.predict(test, pred_leaf=True))
    np.testing.assert_allclose(raw, raw_lgb, rtol=0, atol=1e-9)
    np.testing.assert_allclose(contrib.sum(axis=1), raw_lgb, rtol=0, atol=1e-9)
    # Same bias as LightGBM's TreeSHAP (the count-weighted expected value of every tree).
    shap = booster.predict(test.head(200), pred_contrib=True)
    np.testing.assert_allclose(contrib[:200, -1], shap[:, -1], atol=1e-12)


def _splits(booster: lgb.Booster) -> list[dict]:
    out: list[dict] = []

    def walk(node: dict) -> None:
        if "split_feature" in node:
            out.append(node)
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return out


def test_parallel_and_serial_kernels_agree() -> None:
    X, y = _synthetic(PARALLEL_MIN_ROWS + 500, seed=3)
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_leaves": 7, "num_threads": 1},
                        lgb.Dataset(X, y), 20)
    tables = path_tables(booster)
    leaves = booster.predict(X, pred_leaf=True)
    raw_all, contrib_all = contributions_from_leaves(tables, leaves)  # parallel (many rows)
    for lo in (0, 7, len(X) - 3):
        raw_one, contrib_one = contributions_from_leaves(tables, leaves[lo : lo + 3])  # serial
        np.testing.assert_array_equal(raw_one, raw_all[lo : lo + 3])
        np.testing.assert_array_equal(contrib_one, contrib_all[lo : lo + 3])
    with pytest.raises(ValueError, match="leaf indices"):
        contributions_from_leaves(tables, leaves[:, :-1])
    bad = leaves[:2].copy()
    bad[0, 0] = 10_000
    with pytest.raises(ValueError, match="out of range"):
        contributions_from_leaves(tables, bad)


def test_single_leaf_trees_count_in_the_bias() -> None:
    X, y = _synthetic(400)
    y = np.ones_like(y)
    y[:3] = 0.0  # almost constant: LightGBM grows trees that cannot split
    booster = lgb.train({"objective": "binary", "verbosity": -1, "min_data_in_leaf": 300, "num_threads": 1},
                        lgb.Dataset(X, y), 3)
    raw, contrib = contributions_from_leaves(path_tables(booster), booster.predict(X, pred_leaf=True))
    np.testing.assert_allclose(raw, booster.predict(X, raw_score=True), atol=1e-12)
    np.testing.assert_allclose(contrib[:, -1], raw, atol=1e-12)
    assert not contrib[:, :-1].any()
