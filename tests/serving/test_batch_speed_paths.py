"""The faster code paths of batch scoring give exactly what the plain definitions give.

``candidate_actions`` (one sort of a user x action value matrix) against a per-user brute force;
``stable_hash64`` against hashlib; ``action_columns`` on shuffled candidates (the sorting fallback) against
sorted ones; Parquet part files written with zstd and read back unchanged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from scoring_fixtures import SCORE_AS_OF, score_features_frame, small_bundle, small_config

from features.config import StrataConfig
from serving.batch import read_scores, run_batch
from serving.interventions import (
    action_columns,
    candidate_actions,
    control_flags,
    expected_incremental_value,
    select_without_budget,
    stable_hash64,
)
from serving.scorer import Scorer


def test_stable_hash64_matches_hashlib_blake2b_on_awkward_strings() -> None:
    values = ["", "a", "é中文", "x" * 127, "y" * 128, "z" * 129, "u" * 1000, "b000000001"]
    expected = [int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "big") for v in values]
    got = stable_hash64(values)
    assert got.dtype == np.uint64 and got.tolist() == expected
    assert stable_hash64([]).shape == (0,) and stable_hash64([]).dtype == np.uint64


def _random_scores(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lifecycle = rng.choice(["new", "growth", "mature", "declining", "churned", "prospect"], n)
    buyer = lifecycle != "prospect"
    risk = np.where(buyer, rng.choice([0.1, 0.3, 0.5], n), np.nan)  # few distinct values: many ties
    conv = np.where(buyer, np.nan, rng.choice([0.05, 0.2], n))
    value = rng.choice([0.0, 10.0, 50.0, np.nan], n, p=[0.2, 0.4, 0.35, 0.05])
    return pd.DataFrame({
        "user_id": [f"u{i:05d}" for i in range(n)],
        "as_of": SCORE_AS_OF,
        "lifecycle": lifecycle,
        "refined_layer": rng.choice(["at_risk", "high_potential", "recoverable", "growth", "none"], n),
        "churn_risk": risk,
        "conversion_prob": conv,
        "predicted_value": value,
    })


def _brute_force_candidates(scores: pd.DataFrame, config: StrataConfig, capped: set[tuple[str, str]]) -> pd.DataFrame:
    """Per user: every eligible action with a value, best first, ties by action id."""
    rows = []
    actions = sorted(config.interventions.playbook, key=lambda a: a.id)
    for r in scores.itertuples(index=False):
        mine = []
        for a in actions:
            if r.lifecycle not in a.layers and r.refined_layer not in a.layers:
                continue
            if (r.user_id, a.id) in capped:
                continue
            v = expected_incremental_value(
                np.array([r.churn_risk]), np.array([r.conversion_prob]), np.array([r.predicted_value]),
                float(a.uplift_prior), float(a.unit_cost),
            )[0]
            if not np.isnan(v):
                mine.append((-v, a.id, float(a.unit_cost), v))
        mine.sort(key=lambda t: (t[0], t[1]))
        for rank, (_, aid, cost, v) in enumerate(mine, start=1):
            rows.append((r.user_id, aid, rank, cost, v))
    frame = pd.DataFrame(rows, columns=["user_id", "action_id", "rank", "unit_cost", "expected_incremental_value"])
    frame["control"] = control_flags(frame["user_id"].tolist(), frame["action_id"].tolist(),
                                     config.interventions.control_share)
    frame["selected"] = False
    return frame


def test_candidate_actions_equal_a_per_user_brute_force_with_and_without_caps() -> None:
    config = small_config()
    scores = _random_scores(400, seed=3)
    got = candidate_actions(scores, config.interventions)
    expected = _brute_force_candidates(scores, config, set())
    pd.testing.assert_frame_equal(got, expected, check_exact=True, check_dtype=False)
    assert got["rank"].dtype == np.int64 and got["control"].dtype == bool
    # Frequency caps: contacts 5 days ago cap every action whose cap is longer than that.
    pairs = got.iloc[::3][["user_id", "action_id"]]
    history = pairs.assign(last_contacted_at=SCORE_AS_OF - pd.Timedelta(days=5))
    caps = {a.id: a.frequency_cap_days for a in config.interventions.playbook}
    capped = {(u, a) for u, a in zip(pairs["user_id"], pairs["action_id"], strict=True) if caps[a] > 5}
    assert capped
    got_capped = candidate_actions(scores, config.interventions, last_contacted=history)
    pd.testing.assert_frame_equal(got_capped, _brute_force_candidates(scores, config, capped), check_exact=True,
                                  check_dtype=False)


def test_action_columns_do_not_depend_on_candidate_order() -> None:
    config = small_config()
    scores = _random_scores(300, seed=5)
    cands = select_without_budget(candidate_actions(scores, config.interventions), 1)
    shuffled = cands.sample(frac=1.0, random_state=1)
    sorted_cols = action_columns(scores["user_id"], cands, config.interventions)
    pd.testing.assert_frame_equal(action_columns(scores["user_id"], shuffled, config.interventions), sorted_cols)
    assert (sorted_cols["interventions"] != "[]").any()


def test_parquet_parts_are_zstd_and_read_back_identical(tmp_path: Path) -> None:
    scorer = Scorer(small_bundle(), small_config(), "strata", "3", "champion")
    features = score_features_frame().copy()
    run_batch(scorer, lambda: features, tmp_path / "out", run_args={"t": 1}, chunk_users=700)
    part = pq.ParquetFile(tmp_path / "out" / "part-00000.parquet")
    codecs = {part.metadata.row_group(0).column(j).compression for j in range(part.metadata.num_columns)}
    assert codecs == {"ZSTD"}
    pd.testing.assert_frame_equal(read_scores(tmp_path / "out"), scorer.score_features(features))
