"""Outcomes: import with row accounting, join with control flags, measured uplift and ROI with intervals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.config import StrataConfig
from features.errors import InputFileError
from serving.outcomes import (
    Z95,
    last_contacted,
    load_store,
    outcome_summary,
    read_outcomes,
    recommendations,
    save_outcomes,
)

AS_OF = pd.Timestamp("2024-06-30", tz="UTC")
CONFIG = StrataConfig()


def _scores(n: int, action: str = "retention_offer", lifecycle: str = "mature", seed: int = 42) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user_id": [f"u{i:05d}" for i in range(n)],
            "as_of": AS_OF,
            "model_version": "4",
            "lifecycle": lifecycle,
            "refined_layer": "at_risk" if lifecycle != "potential" else "hot_prospect",
            "action_id": action,
            "control": rng.random(n) < 0.3,
            "interventions": "[]",
        }
    )


def _write(tmp_path: Path, frame: pd.DataFrame, name: str = "outcomes.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def test_rows_are_accepted_or_rejected_with_reasons(tmp_path: Path) -> None:
    scores = _scores(6)
    rows = pd.DataFrame(
        {
            "user_id": ["u00000", "u00001", "u00002", "u00003", "u00004", "u00000", "stranger", "u00005"],
            "action_id": ["retention_offer"] * 4 + ["no_such_action", "retention_offer", "retention_offer",
                                                    "vip_advisor"],
            "contacted": ["true", "1", "maybe", "no", "yes", "true", "true", "true"],
            "bought": ["false", "0", "1", "yes", "no", "true", "true", "true"],
            "spend": ["0", "", "12.5", "-3", "1", "5", "5", "5"],
        }
    )
    result = read_outcomes(_write(tmp_path, rows), scores, CONFIG)
    assert result.rows_in == 8 and len(result.accepted) + len(result.rejected) == 8
    assert result.accepted["user_id"].tolist() == ["u00000", "u00001"]
    assert result.accepted["spend"].tolist() == [0.0, 0.0]  # empty spend means 0
    reasons = dict(zip(result.rejected["row"], result.rejected["reason"], strict=True))
    assert reasons[3] == "contacted: 'maybe' is not a boolean (true/false/1/0/yes/no)"
    assert reasons[4] == "spend: '-3' is negative"
    assert reasons[5] == "action_id: 'no_such_action' is not in the playbook"
    assert reasons[6] == "duplicate (user_id, action_id) row in the file"
    assert "was not recommended" in reasons[7] and "'stranger'" in reasons[7]
    assert "was not recommended" in reasons[8]  # u00005 was recommended retention_offer, not vip_advisor
    # joined with the scoring: control flag and layers come from the scoring output
    first = result.accepted.iloc[0]
    assert bool(first["control"]) == bool(scores.loc[0, "control"]) and first["refined_layer"] == "at_risk"
    assert first["unit_cost"] == 10.0 and first["uplift_prior"] == 0.12


def test_file_level_errors_name_the_file_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, pd.DataFrame({"user_id": ["a"], "action_id": ["x"], "contacted": [True]}))
    with pytest.raises(InputFileError, match=r"outcomes.csv: missing column\(s\) bought, spend"):
        read_outcomes(path, _scores(2), CONFIG)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputFileError, match="empty"):
        read_outcomes(empty, _scores(2), CONFIG)


def test_summary_hand_computed() -> None:
    outcomes = pd.DataFrame(
        {
            "user_id": list("abcdef"),
            "action_id": "retention_offer",
            "contacted": [True, True, True, False, False, False],
            "bought": [True, True, False, False, False, True],
            "spend": [30.0, 10.0, 0.0, 0.0, 0.0, 20.0],
            "control": [False, False, False, False, True, True],
            "lifecycle": "mature",
            "refined_layer": "at_risk",
            "unit_cost": 10.0,
            "uplift_prior": 0.12,
        }
    )
    row = outcome_summary(outcomes, by="action_id").iloc[0]
    assert (row["n_treated"], row["n_control"], row["contacted_treated"]) == (4, 2, 3)
    assert row["rate_treated"] == 0.5 and row["rate_control"] == 0.5 and row["uplift"] == 0.0
    se = np.sqrt(0.25 / 4 + 0.25 / 2)
    assert row["uplift_lo"] == pytest.approx(-Z95 * se) and row["uplift_hi"] == pytest.approx(Z95 * se)
    assert row["incremental_spend"] == pytest.approx(10.0 - 10.0)
    assert row["cost"] == 30.0  # 3 contacted treated users x 10
    assert row["roi"] == pytest.approx((0.0 * 4 - 30.0) / 30.0)
    assert row["uplift_prior"] == 0.12
    assert row["control_contacted"] == 0


def test_measured_uplift_recovers_a_simulated_effect() -> None:
    rng = np.random.default_rng(42)
    n = 20_000
    control = rng.random(n) < 0.1
    base, lift = 0.30, 0.06  # no-purchase rate 0.70 -> relative reduction 0.06 / 0.70
    bought = rng.random(n) < np.where(control, base, base + lift)
    outcomes = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(n)], "action_id": "retention_offer", "contacted": ~control,
            "bought": bought, "spend": np.where(bought, rng.gamma(2.0, 25.0, n), 0.0), "control": control,
            "lifecycle": "mature", "refined_layer": "at_risk", "unit_cost": 10.0, "uplift_prior": 0.12,
        }
    )
    row = outcome_summary(outcomes).iloc[0]
    assert row["uplift_lo"] < lift < row["uplift_hi"]
    assert row["uplift_lo"] > 0  # clearly detected at this size
    rel = lift / (1 - base)
    assert row["relative_uplift_lo"] < rel < row["relative_uplift_hi"]
    # a 95% interval, not any interval around the estimate: its width is about the delta method's for
    # rel = 1 - (1 - p_t) / (1 - p_c)
    p_t, p_c = row["rate_treated"], row["rate_control"]
    n_t, n_c = row["n_treated"], row["n_control"]
    se_rel = np.sqrt(p_t * (1 - p_t) / n_t / (1 - p_c) ** 2 + (1 - p_t) ** 2 * p_c * (1 - p_c) / n_c / (1 - p_c) ** 4)
    assert 0.9 < (row["relative_uplift_hi"] - row["relative_uplift_lo"]) / (2 * Z95 * se_rel) < 1.1
    true_inc = lift * 50.0
    assert row["incremental_spend_lo"] < true_inc < row["incremental_spend_hi"]
    assert row["roi_lo"] < row["roi"] < row["roi_hi"]


def test_prospects_use_relative_rise_of_conversion() -> None:
    outcomes = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(400)], "action_id": "new_customer_coupon",
            "contacted": True, "bought": [i % 10 == 0 for i in range(200)] + [i % 20 == 0 for i in range(200)],
            "spend": 0.0, "control": [False] * 200 + [True] * 200, "lifecycle": "potential",
            "refined_layer": "hot_prospect", "unit_cost": 5.0, "uplift_prior": 0.08,
        }
    )
    row = outcome_summary(outcomes, by="refined_layer").iloc[0]
    assert row["group"] == "hot_prospect"
    assert row["relative_uplift"] == pytest.approx((0.10 - 0.05) / 0.05)


def test_store_merges_idempotently_and_gives_contact_history(tmp_path: Path) -> None:
    scores = _scores(50)
    rows = pd.DataFrame(
        {"user_id": scores["user_id"], "action_id": "retention_offer", "contacted": ~scores["control"],
         "bought": False, "spend": 0.0, "contacted_at": ["2024-07-02T10:00:00Z"] * 25 + [""] * 25}
    )
    path = _write(tmp_path, rows)
    store = tmp_path / "outcomes.parquet"
    first = save_outcomes(read_outcomes(path, scores, CONFIG).accepted, store)
    again = save_outcomes(read_outcomes(path, scores, CONFIG).accepted, store)
    assert len(first) == len(again) == 50 == len(load_store(store))
    history = last_contacted(load_store(store))
    assert len(history) == int((~scores["control"]).sum())
    stamped = history.set_index("user_id")["last_contacted_at"]
    early = [u for u in stamped.index if int(u[1:]) < 25]
    late = [u for u in stamped.index if int(u[1:]) >= 25]
    assert early and late
    assert all(stamped[u] == pd.Timestamp("2024-07-02T10:00:00Z") for u in early)
    assert all(stamped[u] == AS_OF for u in late)  # no contacted_at: the scoring's as_of


def test_recommendations_include_every_selected_action() -> None:
    scores = _scores(2)
    scores.loc[0, "interventions"] = (
        '[{"action_id": "retention_offer", "selected": true, "control": false}, '
        '{"action_id": "product_recall", "selected": true, "control": true}]'
    )
    recs = recommendations(scores)
    assert set(zip(recs.user_id, recs.action_id, recs.control, strict=True)) >= {("u00000", "product_recall", True)}
    assert len(recs) == 3


def test_cli_outcomes_import(tmp_path: Path) -> None:
    from scoring_fixtures import score_features_frame, small_bundle, small_config

    from serving.batch import read_scores, run_batch
    from serving.scorer import Scorer
    from strata_cli.main import app

    scorer = Scorer(small_bundle(), small_config(), "strata", "2", "champion")
    out = tmp_path / "scores"
    run_batch(scorer, score_features_frame, out, run_args={"t": 1}, chunk_users=5000)
    scored = read_scores(out)
    rec = scored[scored.action_id.notna()]
    rows = pd.DataFrame(
        {"user_id": rec.user_id, "action_id": rec.action_id, "contacted": ~rec.control,
         "bought": np.arange(len(rec)) % 3 == 0, "spend": 10.0}
    )
    rows = pd.concat([rows, pd.DataFrame([{"user_id": "nobody", "action_id": "brand_story", "contacted": "x",
                                           "bought": True, "spend": 1}])])
    path = _write(tmp_path, rows)
    store = tmp_path / "store.parquet"
    result = CliRunner().invoke(
        app, ["outcomes", "import", str(path), "--scores", str(out), "--store", str(store), "--by", "refined_layer"]
    )
    assert result.exit_code == 0, result.output
    assert f"{len(rec):,} accepted, 1 rejected" in result.output
    assert "row " + str(len(rows)) in result.output and "contacted: 'x'" in result.output
    assert "Measured uplift by refined_layer" in result.output
    assert len(load_store(store)) == len(rec)
    missing = CliRunner().invoke(app, ["outcomes", "import", str(tmp_path / "nope.csv"), "--scores", str(out)])
    assert missing.exit_code == 2 and "nope.csv: outcomes file not found" in missing.output
