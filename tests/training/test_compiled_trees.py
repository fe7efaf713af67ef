"""Compiled trees against LightGBM itself: raw scores, transformed predictions, leaves and path credits
on edge values (NaN, zeros, thresholds, +-Inf, huge and tiny numbers, odd category codes), every
missing-value mode, categorical splits, single-leaf trees, the real bundle, and the fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from training_fixtures import DEMO_END, demo_data, demo_fit, fast_config

from features.pipeline import build_features
from training import compiled_trees
from training.bundle import ModelBundle
from training.compiled_trees import (
    compile_booster,
    lightgbm_matrix,
    predict,
    predict_leaves,
    predict_raw,
    raw_and_contributions,
    try_compile,
)
from training.tree_paths import PARALLEL_MIN_ROWS, contributions_from_leaves, path_tables

TOLERANCE = 1e-6  # the bar; the tests also record bit-equality where we claim it


def _training_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Five numeric features (NaN and exact zeros in them) and a category code 0..9 in column 5."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    num = X[:, :5]  # a view: the numeric features
    num[rng.random((n, 5)) < 0.15] = np.nan
    num[rng.random((n, 5)) < 0.15] = 0.0
    X[:, 5] = rng.integers(0, 10, n)
    y = np.nan_to_num(X[:, 0], nan=2.0) + np.isnan(X[:, 1]) - (X[:, 2] == 0.0) + np.isin(X[:, 5], [1, 4, 7])
    return X, y + rng.normal(scale=0.2, size=n)


def _thresholds(booster: lgb.Booster) -> np.ndarray:
    found: list[float] = []

    def walk(node: dict) -> None:
        if "split_feature" in node:
            if node["decision_type"] == "<=":
                found.append(float(node["threshold"]))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return np.asarray(found)


def _edge_matrix(booster: lgb.Booster, n: int, seed: int, n_features: int = 6) -> np.ndarray:
    """Rows mixing ordinary values with every edge case LightGBM's decision rules treat specially."""
    rng = np.random.default_rng(seed)
    specials = np.array([np.nan, 0.0, -0.0, 1e-36, -1e-36, 1.0000000180025095e-35, -1.0000000180025095e-35,
                         np.inf, -np.inf, 1e300, -1e300, 1e20, -1e20, 1.7976931348623157e308])
    thresholds = _thresholds(booster)
    X = rng.normal(size=(n, n_features)) * rng.choice([1.0, 100.0], size=(n, n_features))
    pick = rng.random((n, n_features))
    X = np.where(pick < 0.3, rng.choice(specials, size=(n, n_features)), X)
    if len(thresholds):
        on = rng.choice(thresholds, size=(n, n_features))
        X = np.where((pick >= 0.3) & (pick < 0.5), on, X)  # exactly on a threshold
        X = np.where((pick >= 0.5) & (pick < 0.55), np.nextafter(on, np.inf), X)  # just above it
    return X


def _categorical_column(X: np.ndarray, seed: int) -> None:
    """Column 5: training codes, unseen codes, negative, fractional, NaN, +-Inf and out-of-int-range codes."""
    rng = np.random.default_rng(seed)
    odd = np.array([np.nan, -1.0, -0.5, -3.0, 0.5, 2.7, 9.99, 10.0, 31.0, 32.0, 40.0, 63.0, 64.0, 1e12, -1e12,
                    np.inf, -np.inf, 2147483647.0, 2147483648.0, -2147483648.0, -2147483649.0])
    codes = rng.integers(0, 10, len(X)).astype(float)
    X[:, 5] = np.where(rng.random(len(X)) < 0.4, rng.choice(odd, len(X)), codes)


PARAMS = {
    "nan_missing": {},
    "zero_as_missing": {"zero_as_missing": True},
    "no_missing": {"use_missing": False},
}


@pytest.mark.parametrize("mode", sorted(PARAMS))
@pytest.mark.parametrize("objective", ["regression", "binary", "tweedie", "quantile"])
def test_equal_to_lightgbm_on_edge_values(mode: str, objective: str) -> None:
    X, y = _training_data(3000, seed=1)
    if objective == "binary":
        y = (y > np.median(y)).astype(float)
    elif objective == "tweedie":
        y = np.maximum(y, 0.0)
    params = {"objective": objective, "verbosity": -1, "num_leaves": 15, "min_data_in_leaf": 10,
              "min_data_per_group": 5, "cat_smooth": 1.0, "seed": 3, "num_threads": 1, **PARAMS[mode]}
    booster = lgb.train(params, lgb.Dataset(X, y, categorical_feature=[5]), 40)
    forest = compile_booster(booster)
    T = _edge_matrix(booster, 4000, seed=2)
    _categorical_column(T, seed=3)

    raw_lgb = booster.predict(T, raw_score=True)
    raw = predict_raw(forest, T)
    assert np.max(np.abs(raw - raw_lgb)) <= TOLERANCE
    assert np.array_equal(raw, raw_lgb), "raw scores are within 1e-6 but no longer bit-equal to LightGBM's"
    pred_lgb = booster.predict(T)
    pred = predict(forest, T)
    assert np.max(np.abs(pred - pred_lgb)) <= TOLERANCE
    np.testing.assert_array_equal(predict_leaves(forest, T), booster.predict(T, pred_leaf=True))


def test_the_models_use_every_kind_of_split() -> None:
    """The models of the test above do exercise what they claim to: each missing type, both default
    directions, categorical splits and +inf thresholds."""
    kinds: set[tuple[str, str, bool]] = set()
    infinite = False
    for mode in PARAMS:
        X, y = _training_data(3000, seed=1)
        booster = lgb.train({"objective": "regression", "verbosity": -1, "num_leaves": 15, "min_data_in_leaf": 10,
                             "min_data_per_group": 5, "cat_smooth": 1.0, "seed": 3, "num_threads": 1, **PARAMS[mode]},
                            lgb.Dataset(X, y, categorical_feature=[5]), 40)
        infinite |= "inf" in booster.model_to_string()
        for tree in booster.dump_model()["tree_info"]:
            stack = [tree["tree_structure"]]
            while stack:
                node = stack.pop()
                if "split_feature" in node:
                    kinds.add((node["decision_type"], node["missing_type"], bool(node["default_left"])))
                    stack += [node["left_child"], node["right_child"]]
    assert {("<=", "NaN", True), ("<=", "NaN", False), ("<=", "None", True)} <= kinds
    assert any(k[1] == "Zero" for k in kinds)
    assert any(k[0] == "==" for k in kinds)
    assert infinite  # a split "x <= inf" that sends NaN right: dump_model() shows it as 1e300


def test_pandas_input_is_coded_as_lightgbm_codes_it() -> None:
    rng = np.random.default_rng(5)
    n = 2000
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    frame["channel"] = pd.Categorical(rng.choice(["ad", "wecom", "store", "referral"], n))
    y = frame["a"].to_numpy() + (frame["channel"] == "wecom").to_numpy() * 2.0
    booster = lgb.train({"objective": "regression", "verbosity": -1, "min_data_per_group": 5, "cat_smooth": 1.0,
                         "num_threads": 1}, lgb.Dataset(frame, y), 30)
    test = frame.head(500).copy()
    # Other category order, an unseen level and missing values: LightGBM re-codes to its training levels.
    levels = ["store", "wecom", "tiktok", "ad", "referral"]
    values = rng.choice([*levels, None], 500).tolist()
    test["channel"] = pd.Categorical(values, categories=levels)
    matrix = lightgbm_matrix(test, booster.pandas_categorical)
    assert matrix.flags.c_contiguous and matrix.dtype == np.float64
    forest = compile_booster(booster)
    np.testing.assert_array_equal(predict_raw(forest, matrix), booster.predict(test, raw_score=True))
    with pytest.raises(ValueError, match="categorical_feature do not match"):
        lightgbm_matrix(test[["a", "b"]].assign(c=test["channel"], d=test["channel"]), booster.pandas_categorical)


def test_single_leaf_trees() -> None:
    X, y = _training_data(400, seed=4)
    y = np.ones(400)
    y[:3] = 0.0  # almost constant: trees that cannot split
    booster = lgb.train({"objective": "binary", "verbosity": -1, "min_data_in_leaf": 300, "num_threads": 1},
                        lgb.Dataset(X, y), 3)
    forest = compile_booster(booster)
    assert forest.n_slots == forest.n_trees  # every tree is one leaf
    T = _edge_matrix(booster, 50, seed=5)
    np.testing.assert_array_equal(predict_raw(forest, T), booster.predict(T, raw_score=True))
    raw, contrib = raw_and_contributions(forest, path_tables(booster), T)
    np.testing.assert_array_equal(contrib[:, -1], np.full(50, path_tables(booster).bias))
    assert not contrib[:, :-1].any()
    np.testing.assert_allclose(raw, contrib.sum(axis=1), atol=1e-12)


def test_contributions_are_those_of_lightgbms_leaves_and_add_up() -> None:
    X, y = _training_data(3000, seed=6)
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_leaves": 15, "min_data_in_leaf": 10,
                         "min_data_per_group": 5, "cat_smooth": 1.0, "num_threads": 1},
                        lgb.Dataset(X, (y > 0.5).astype(float), categorical_feature=[5]), 50)
    T = _edge_matrix(booster, 3000, seed=7)
    _categorical_column(T, seed=8)
    tables = path_tables(booster)
    raw, contrib = raw_and_contributions(compile_booster(booster), tables, T)
    raw_leaves, contrib_leaves = contributions_from_leaves(tables, booster.predict(T, pred_leaf=True))
    np.testing.assert_array_equal(raw, raw_leaves)
    np.testing.assert_array_equal(contrib, contrib_leaves)
    np.testing.assert_allclose(contrib.sum(axis=1), booster.predict(T, raw_score=True), rtol=0, atol=1e-9)


def test_parallel_and_serial_kernels_agree_and_rows_select() -> None:
    X, y = _training_data(PARALLEL_MIN_ROWS + 301, seed=9)
    booster = lgb.train({"objective": "regression", "verbosity": -1, "num_leaves": 7, "num_threads": 1},
                        lgb.Dataset(X, y, categorical_feature=[5]), 20)
    forest, tables = compile_booster(booster), path_tables(booster)
    raw_all, contrib_all = raw_and_contributions(forest, tables, X)  # parallel (many rows)
    np.testing.assert_array_equal(raw_all, booster.predict(X, raw_score=True))
    few = 2 * compiled_trees.LANES + 5  # serial: two blocks of lanes and rows walked alone
    for lo in (0, 5, len(X) - few):
        raw_few, contrib_few = raw_and_contributions(forest, tables, X[lo : lo + few])
        np.testing.assert_array_equal(raw_few, raw_all[lo : lo + few])
        np.testing.assert_array_equal(contrib_few, contrib_all[lo : lo + few])
        np.testing.assert_array_equal(predict_raw(forest, X[lo : lo + 1]), raw_all[lo : lo + 1])
    mask = np.zeros(len(X), dtype=bool)
    mask[::3] = True
    np.testing.assert_array_equal(predict_raw(forest, X, mask), raw_all[mask])
    np.testing.assert_array_equal(predict_raw(forest, X, np.array([4, 2, 4])), raw_all[[4, 2, 4]])
    assert predict_raw(forest, X[:0]).shape == (0,)
    with pytest.raises(ValueError, match="features"):
        predict_raw(forest, X[:, :-1])
    with pytest.raises(ValueError, match="out of range"):
        predict_raw(forest, X, np.array([len(X)]))


def test_linear_trees_fall_back_to_lightgbm(caplog: pytest.LogCaptureFixture) -> None:
    from training.models import BoostedRegressor

    rng = np.random.default_rng(11)
    X = pd.DataFrame(rng.normal(size=(1500, 3)), columns=["a", "b", "c"])
    y = 2.0 * X["a"].to_numpy() + rng.normal(scale=0.1, size=1500)
    model = BoostedRegressor(num_boost_round=20, min_data_in_leaf=20,
                             extra_params={"linear_tree": True}).fit(X, y, X_holdout=X.head(300), y_holdout=y[:300])
    model.use_compiled_trees = True  # scoring.tree_engine = "compiled"
    with pytest.raises(compiled_trees.UnsupportedModel, match="linear trees"):
        compile_booster(model.booster_)
    with caplog.at_level(logging.INFO, logger="training.compiled_trees"):
        first = model.predict(X)
        second = model.predict(X.to_numpy())
    reasons = [r for r in caplog.records if "compiled trees not used" in r.getMessage()]
    assert len(reasons) == 1 and "linear trees" in reasons[0].getMessage()
    np.testing.assert_array_equal(first, model.booster_.predict(X))
    np.testing.assert_array_equal(second, first)
    assert try_compile(model.booster_, "test") is None


def test_unsupported_objectives_and_multiclass_fall_back() -> None:
    X, y = _training_data(600, seed=12)
    multi = lgb.train({"objective": "multiclass", "num_class": 3, "verbosity": -1, "num_threads": 1},
                      lgb.Dataset(X, np.digitize(y, [-0.5, 0.5]).astype(float)), 3)
    with pytest.raises(compiled_trees.UnsupportedModel, match="multi-output"):
        compile_booster(multi)
    sqrt = lgb.train({"objective": "regression", "reg_sqrt": True, "verbosity": -1, "num_threads": 1},
                     lgb.Dataset(X, np.abs(y)), 3)
    with pytest.raises(compiled_trees.UnsupportedModel, match="sqrt"):
        compile_booster(sqrt)
    forest = lgb.train({"boosting": "rf", "bagging_fraction": 0.5, "bagging_freq": 1, "verbosity": -1,
                        "num_threads": 1}, lgb.Dataset(X, y), 3)
    with pytest.raises(compiled_trees.UnsupportedModel, match="random-forest"):
        compile_booster(forest)


# ----------------------------------------------------------------------------- the real bundle


def _bundle_boosters(bundle: object) -> list[tuple[str, lgb.Booster]]:
    value = bundle.value_model  # type: ignore[attr-defined]
    out = [("churn", bundle.churn_model.booster_), ("q_low", value.q_low_.booster_),  # type: ignore[attr-defined]
           ("q_high", value.q_high_.booster_)]
    out += [(k, p.booster_) for k, p in value.parts_.items() if hasattr(p, "booster_")]
    if bundle.conversion_model is not None:  # type: ignore[attr-defined]
        out.append(("conversion", bundle.conversion_model.booster_))  # type: ignore[attr-defined]
    return out


def test_the_real_bundles_boosters_are_bit_equal() -> None:
    bundle = demo_fit().bundle
    source = build_features(demo_data(), DEMO_END, fast_config())
    pandas_matrix = bundle.model_matrix(source)
    matrix = bundle.numeric_model_matrix(source)
    assert isinstance(matrix, np.ndarray)
    edges = _edge_matrix(bundle.churn_model.booster_, 500, seed=13, n_features=matrix.shape[1])
    for j, f in enumerate(bundle.feature_names):
        if f in bundle.categorical_levels:  # codes: the levels, unseen ones, negative, NaN
            edges[:, j] = np.random.default_rng(j).choice([0, 1, 2, len(bundle.categorical_levels[f]), 50, -1, np.nan], 500)
    for name, booster in _bundle_boosters(bundle):
        forest = compile_booster(booster)
        expected = booster.predict(pandas_matrix, raw_score=True)  # LightGBM on the pandas matrix
        got = predict_raw(forest, matrix)
        assert np.max(np.abs(got - expected)) <= TOLERANCE, name
        assert np.array_equal(got, expected), f"{name}: within 1e-6 but not bit-equal"
        np.testing.assert_array_equal(predict(forest, matrix), booster.predict(pandas_matrix), err_msg=name)
        np.testing.assert_array_equal(predict_raw(forest, edges), booster.predict(edges, raw_score=True), err_msg=name)


def test_numeric_model_matrix_is_what_lightgbm_makes_of_the_pandas_one() -> None:
    from training.models import to_model_matrix, to_numeric_model_matrix

    bundle = demo_fit().bundle
    features = build_features(demo_data(), DEMO_END, fast_config()).head(400).copy()
    cats = [f for f in bundle.feature_names if f in bundle.categorical_levels]
    assert cats, "the demo bundle has a categorical feature"
    values = features[cats[0]].astype(object)
    values.iloc[:5] = None
    values.iloc[5:10] = "a level never seen in training"
    features[cats[0]] = values
    pandas_matrix = to_model_matrix(features, bundle.feature_names, bundle.categorical_levels)
    numeric = to_numeric_model_matrix(features, bundle.feature_names, bundle.categorical_levels)
    assert numeric.flags.c_contiguous
    booster = bundle.churn_model.booster_
    np.testing.assert_array_equal(numeric, lightgbm_matrix(pandas_matrix, booster.pandas_categorical))
    np.testing.assert_array_equal(booster.predict(numeric, raw_score=True), booster.predict(pandas_matrix, raw_score=True))


def test_bundle_scores_unchanged_against_lightgbm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Batch scores and reason contributions with compiled trees are those of the LightGBM route."""
    demo_fit().bundle.save(tmp_path / "b")
    compiled = ModelBundle.load(tmp_path / "b")
    compiled.set_tree_engine("compiled")
    features = build_features(demo_data(), DEMO_END, fast_config())
    got = compiled.predict_explained(features, "path")
    assert compiled.churn_model.compiled_trees() is not None
    lightgbm_only = ModelBundle.load(tmp_path / "b")
    lightgbm_only.set_tree_engine("compiled")  # asked for, but compiling is refused below

    def refuse(booster: object) -> None:
        raise compiled_trees.UnsupportedModel("disabled by the test")

    monkeypatch.setattr(compiled_trees, "compile_booster", refuse)
    want = lightgbm_only.predict_explained(features, "path")
    assert lightgbm_only.churn_model.compiled_trees() is None
    pd.testing.assert_frame_equal(got.scores, want.scores, check_exact=True)
    for a, b in ((got.churn_contributions, want.churn_contributions),
                 (got.conversion_contributions, want.conversion_contributions)):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a, b)
    pd.testing.assert_frame_equal(compiled.predict(features), want.scores, check_exact=True)


def test_tree_engine_switch_gives_lightgbm_the_same_numbers(tmp_path: Path) -> None:
    """``scoring.tree_engine`` (ModelBundle.set_tree_engine) switches between the engines: same scores."""
    demo_fit().bundle.save(tmp_path / "b")
    bundle = ModelBundle.load(tmp_path / "b")
    assert bundle.churn_model.compiled_trees() is None  # LightGBM by default
    bundle.set_tree_engine("compiled")
    features = build_features(demo_data(), DEMO_END, fast_config())
    compiled = bundle.predict_explained(features, "path")
    assert bundle.churn_model.compiled_trees() is not None
    assert bundle.has_fused_trees() and bundle.value_model._compiled_group() is not None
    bundle.set_tree_engine("lightgbm")
    models = [bundle.churn_model, bundle.value_model.q_low_, bundle.value_model.q_high_]
    assert all(m.compiled_trees() is None for m in models)
    # the cached forest groups follow the switch (keyed on each model's engine)
    assert not bundle.has_fused_trees() and bundle.value_model._compiled_group() is None
    lightgbm = bundle.predict_explained(features, "path")
    pd.testing.assert_frame_equal(compiled.scores, lightgbm.scores, check_exact=True)
    np.testing.assert_array_equal(compiled.churn_contributions, lightgbm.churn_contributions)
    bundle.set_tree_engine("compiled")
    assert bundle.churn_model.compiled_trees() is not None and bundle.has_fused_trees()
    with pytest.raises(ValueError, match="tree engine"):
        bundle.set_tree_engine("xgboost")


# ----------------------------------------------------------------------------- forest groups


def _group_boosters() -> tuple[list[lgb.Booster], np.ndarray]:
    """Boosters on the same 6 columns that use different column sets, missing modes and objectives:
    column 5 categorical in some, numeric in others; columns 3-4 constant (never split on) in one."""
    X, y = _training_data(3000, seed=21)
    base = {"verbosity": -1, "num_leaves": 15, "min_data_in_leaf": 10, "min_data_per_group": 5, "cat_smooth": 1.0,
            "seed": 3, "num_threads": 1}
    narrow = X.copy()
    narrow[:, 3:5] = 1.0
    boosters = [
        lgb.train({**base, "objective": "binary"}, lgb.Dataset(X, (y > np.median(y)).astype(float),
                                                               categorical_feature=[5]), 43),
        lgb.train({**base, "objective": "tweedie", "zero_as_missing": True}, lgb.Dataset(X, np.maximum(y, 0.0)), 21),
        lgb.train({**base, "objective": "quantile", "alpha": 0.1, "use_missing": False},
                  lgb.Dataset(narrow, y, categorical_feature=[5]), 37),
        lgb.train({**base, "objective": "regression"}, lgb.Dataset(X, y), 8),
    ]
    return boosters, X


def test_group_equals_each_booster_bit_for_bit() -> None:
    boosters, _ = _group_boosters()
    forests = [compile_booster(b) for b in boosters]
    assert len({tuple(f.col_feature) for f in forests}) == len(forests)  # the column sets differ
    assert not {3, 4} & set(forests[2].col_feature.tolist())
    group = compiled_trees.compile_group(forests)
    assert group.n_forests == len(boosters)
    assert len(group.col_feature) < sum(len(f.col_feature) for f in forests)  # shared columns filled once
    T = _edge_matrix(boosters[0], 3000, seed=22)
    _categorical_column(T, seed=23)
    raw = compiled_trees.predict_group(group, T, raw_score=True)
    pred = compiled_trees.predict_group(group, T)
    assert raw.shape == pred.shape == (len(boosters), len(T))
    for k, b in enumerate(boosters):
        np.testing.assert_array_equal(raw[k], b.predict(T, raw_score=True), err_msg=f"forest {k}")
        np.testing.assert_array_equal(pred[k], b.predict(T), err_msg=f"forest {k}")


def test_group_rows_single_rows_and_parallel_kernel() -> None:
    boosters, X = _group_boosters()
    group = compiled_trees.compile_group([compile_booster(b) for b in boosters])
    big = np.vstack([X] * (PARALLEL_MIN_ROWS // len(X) + 1))[: PARALLEL_MIN_ROWS + compiled_trees.LANES + 3]
    everything = compiled_trees.predict_group(group, big, raw_score=True)  # parallel kernel, a tail of 3 rows
    for k, b in enumerate(boosters):
        np.testing.assert_array_equal(everything[k], b.predict(big, raw_score=True))
    mask = np.zeros(len(X), dtype=bool)
    mask[1::7] = True
    picks = np.array([5, 2, 5, len(X) - 1])
    for rows, want in ((mask, everything[:, : len(X)][:, mask]), (picks, everything[:, picks])):
        np.testing.assert_array_equal(compiled_trees.predict_group(group, X, rows, raw_score=True), want)
    for i in (0, 17, len(X) - 1):  # single rows: trees walked 8 at a time, 43 = 5 x 8 + 3 trees
        np.testing.assert_array_equal(compiled_trees.predict_group(group, X[i : i + 1], raw_score=True),
                                      everything[:, i : i + 1])
    assert compiled_trees.predict_group(group, X[:0]).shape == (len(boosters), 0)
    with pytest.raises(ValueError, match="features"):
        compiled_trees.predict_group(group, X[:, :-1])
    with pytest.raises(ValueError, match="out of range"):
        compiled_trees.predict_group(group, X, np.array([-1]))


def test_group_contributions_are_those_of_its_first_forest() -> None:
    boosters, X = _group_boosters()
    forests = [compile_booster(b) for b in boosters]
    tables = path_tables(boosters[0])
    T = _edge_matrix(boosters[0], 700, seed=24)
    _categorical_column(T, seed=25)
    rows = np.arange(0, 700, 3)
    raw, contrib = compiled_trees.group_raw_and_contributions(compiled_trees.compile_group(forests), tables, T, rows)
    raw_leaves, contrib_leaves = contributions_from_leaves(tables, boosters[0].predict(T[rows], pred_leaf=True))
    np.testing.assert_array_equal(raw[0], raw_leaves)
    np.testing.assert_array_equal(contrib, contrib_leaves)
    for k, b in enumerate(boosters):
        np.testing.assert_array_equal(raw[k], b.predict(T[rows], raw_score=True))
    raw_one, contrib_one = compiled_trees.group_raw_and_contributions(compiled_trees.compile_group(forests), tables,
                                                                      T[4:5])
    np.testing.assert_array_equal(contrib_one, contributions_from_leaves(tables, boosters[0].predict(T[4:5], pred_leaf=True))[1])
    with pytest.raises(ValueError, match="different models"):
        compiled_trees.group_raw_and_contributions(compiled_trees.compile_group(forests[1:]), tables, T)


def test_group_refuses_what_it_cannot_hold() -> None:
    boosters, X = _group_boosters()
    forest = compile_booster(boosters[0])
    with pytest.raises(ValueError, match="at least one"):
        compiled_trees.compile_group([])
    other = lgb.train({"objective": "regression", "verbosity": -1, "num_threads": 1}, lgb.Dataset(X[:, :4], X[:, 0]), 3)
    with pytest.raises(ValueError, match="same number of features"):
        compiled_trees.compile_group([forest, compile_booster(other)])
    with pytest.raises(ValueError, match="C-contiguous"):
        compiled_trees.to_response_scale(forest, np.zeros((4, 2))[:, 0])


def test_value_model_parts_compose_as_predict() -> None:
    """``FutureValueModel.predict_from_parts`` on the parts' own outputs gives predict() and predict_interval()."""
    bundle = demo_fit().bundle
    value = bundle.value_model
    X = bundle.numeric_model_matrix(build_features(demo_data(), DEMO_END, fast_config()))
    outputs = [p.raw_score(X) if hasattr(p, "calibrator_") else p.predict(X) for p in value.boosted_parts()]
    got = value.predict_from_parts(outputs)
    want = (value.predict(X), *value.predict_interval(X))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="part outputs"):
        value.predict_from_parts(outputs[:-1])
    assert value._compiled_group() is None  # LightGBM: every part predicts on its own
    for a, b in zip(value.predict_with_interval(X), want, strict=True):
        np.testing.assert_array_equal(a, b)
    bundle.set_tree_engine("compiled")
    assert value._compiled_group() is not None  # one walk of every value booster
    for rows in (slice(None), slice(3, 4), slice(0, 0)):
        for a, b in zip(value.predict_with_interval(X[rows]), want, strict=True):
            np.testing.assert_array_equal(a, b[rows])
    bundle.set_tree_engine("lightgbm")


def test_bundle_fused_scores_and_partial_fallback(tmp_path: Path) -> None:
    """Batch scores come from the fused groups when every booster compiles; if one does not (or is
    switched off), the others stay compiled, the scores stay those of LightGBM."""
    demo_fit().bundle.save(tmp_path / "b")
    features = build_features(demo_data(), DEMO_END, fast_config())
    lightgbm_only = ModelBundle.load(tmp_path / "b")
    want = lightgbm_only.predict_explained(features, "path")
    bundle = ModelBundle.load(tmp_path / "b")
    bundle.set_tree_engine("compiled")
    groups = bundle._compiled_groups()
    assert groups is not None and groups["buyers"].n_forests == 1 + len(bundle.value_model.boosted_parts())
    explained = bundle.predict_explained(features, "path")
    pd.testing.assert_frame_equal(explained.scores, want.scores, check_exact=True)
    np.testing.assert_array_equal(explained.churn_contributions, want.churn_contributions)
    assert (explained.conversion_contributions is None) == (want.conversion_contributions is None)
    if want.conversion_contributions is not None:
        np.testing.assert_array_equal(explained.conversion_contributions, want.conversion_contributions)
    pd.testing.assert_frame_equal(bundle.predict(features), want.scores, check_exact=True)
    bundle.value_model.q_low_.use_compiled_trees = False  # one booster back on LightGBM: no fused groups
    assert bundle._compiled_groups() is None
    pd.testing.assert_frame_equal(bundle.predict(features), want.scores, check_exact=True)
    bundle.value_model.q_low_.use_compiled_trees = True
    groups = bundle._compiled_groups()
    assert groups is not None and bundle._compiled_groups() is groups  # cached
    one_user = features.head(1)
    pd.testing.assert_frame_equal(bundle.predict(one_user), lightgbm_only.predict(one_user), check_exact=True)


def test_api_fast_path_with_compiled_trees_gives_batch_answers(tmp_path: Path) -> None:
    """The API's fast path (serving.fast_scorer) with ``scoring.tree_engine = "compiled"``: the value
    boosters in one compiled call, churn/conversion contributions from the compiled trees; the same JSON
    as the batch scorer for many rows at once and for single rows."""
    from serving.fast_scorer import FastScorer, FeatureRows, mismatches, probe_rows
    from serving.scorer import Scorer

    demo_fit().bundle.save(tmp_path / "b")
    bundle = ModelBundle.load(tmp_path / "b")
    config = fast_config()
    config = config.model_copy(update={"scoring": config.scoring.model_copy(update={"tree_engine": "compiled"})})
    scorer = Scorer(bundle, config, model_name="strata", model_version="1")
    fast = FastScorer(scorer)
    assert bundle.value_model._compiled_group() is not None
    features = build_features(demo_data(), DEMO_END, fast_config())
    rows = FeatureRows.from_frame(features.iloc[::7])
    assert mismatches(fast, rows) == []
    assert mismatches(fast, probe_rows(fast, n=40)) == []
    for i in (0, 1, 2):
        assert mismatches(fast, FeatureRows.from_frame(features.iloc[i : i + 1])) == []
