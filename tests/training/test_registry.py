"""Promotion, rollback and listing against a real MLflow registry (SQLite in a temporary directory).

One store is shared by the flow: v1 weak -> promoted (first); v2 strong -> promoted (beats v1);
v3 weak -> rejected; v3 forced -> promoted; rollbacks walk the history back to v1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from training_fixtures import (
    DEMO_END,
    FAST_TRAINING,
    WEAK_TRAINING,
    config_toml,
    demo_data,
    fast_config,
    isolate_tracking,
)
from typer.testing import CliRunner

from features.errors import ModelNotFoundError
from training.registry import PromotionError, alias_version, list_models, promote, rollback


def _client(work: Path):  # noqa: ANN202
    import mlflow

    uri = f"sqlite:///{work}/mlflow.db"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _tags(work: Path, version: str) -> dict[str, str]:
    return dict(_client(work).get_model_version("strata", version).tags)


def _history(work: Path) -> list[str]:
    return json.loads(_client(work).get_registered_model("strata").tags["champion_history"])


def test_nothing_to_promote_or_roll_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_tracking(monkeypatch, tmp_path)
    with pytest.raises(ModelNotFoundError, match="no 'challenger' version: train one"):
        promote(fast_config())
    with pytest.raises(ModelNotFoundError, match="no 'champion'"):
        rollback(fast_config())
    assert list_models(fast_config()).empty
    assert alias_version(fast_config()) is None


def test_promotion_and_rollback_flow(demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from strata_cli.main import app
    from training.pyfunc import load_bundle
    from training.train import EVAL_ROWS_ARTIFACT, evaluate_bundle, train_model

    isolate_tracking(monkeypatch, tmp_path)
    weak, strong = fast_config(**WEAK_TRAINING), fast_config()
    runner = CliRunner()

    # v1 (weak): the first promotion always succeeds
    assert train_model(demo_data(), weak, as_of=DEMO_END).model_version == "1"
    first = promote(weak)
    assert first.promoted and first.champion_version is None and "first promotion" in first.reason
    assert alias_version(weak) == "1"

    # v2 (strong, through the CLI): promoted because it beats v1 on v2's evaluation rows
    (tmp_path / "strata.toml").write_text(config_toml(FAST_TRAINING))
    out = runner.invoke(app, ["train", "--data", str(demo_dir), "--as-of", "2024-12-31"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["promote"])
    assert out.exit_code == 0, out.output
    assert "promoted strata v2 to champion" in out.output
    tags = _tags(tmp_path, "2")
    assert tags["promotion_decision"] == "promoted" and tags["promotion_compared_with"] == "1"
    assert float(tags["promotion_challenger_churn_auc"]) > float(tags["promotion_champion_churn_auc"])
    # the comparison used the same rows for both: recompute it from the logged evaluation rows
    import mlflow

    rows = pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=tags["run_id"], artifact_path=EVAL_ROWS_ARTIFACT))
    v1_on_rows = evaluate_bundle(load_bundle("models:/strata/1"), rows)
    v2_on_rows = evaluate_bundle(load_bundle("models:/strata/2"), rows)
    assert float(tags["promotion_champion_churn_auc"]) == pytest.approx(v1_on_rows["churn_auc"], abs=1e-6)
    assert float(tags["promotion_challenger_churn_auc"]) == pytest.approx(v2_on_rows["churn_auc"], abs=1e-6)
    assert float(tags["promotion_challenger_value_normalized_gini"]) == pytest.approx(v2_on_rows["value_normalized_gini"], abs=1e-6)
    assert alias_version(strong) == "2" and _history(tmp_path) == ["1", "2"]

    # v3 (weak): rejected; the champion stays v2 and the decision is recorded on v3
    train_model(demo_data(), weak, as_of=DEMO_END)
    rejected = promote(strong)
    assert not rejected.promoted and rejected.champion_version == "2"
    assert "does not beat champion" in rejected.reason and "churn AUC" in rejected.reason
    assert alias_version(strong) == "2"
    assert _tags(tmp_path, "3")["promotion_decision"] == "rejected"
    assert alias_version(strong, "challenger") == "3"

    # --force needs a reason; with one it promotes and records both
    with pytest.raises(PromotionError, match="--reason"):
        promote(strong, force=True)
    out = runner.invoke(app, ["promote", "--force"])
    assert out.exit_code == 2 and "--reason" in out.output
    out = runner.invoke(app, ["promote", "--force", "--reason", "incident 42: v2 scores stale events"])
    assert out.exit_code == 0, out.output
    tags3 = _tags(tmp_path, "3")
    assert tags3["promotion_forced"] == "true" and "incident 42" in tags3["promotion_reason"]
    assert "does not beat champion" in tags3["promotion_reason"]  # the overridden comparison is kept
    assert alias_version(strong) == "3" and _history(tmp_path) == ["1", "2", "3"]
    again = promote(strong)
    assert not again.promoted and "already the champion" in again.reason

    # models lists every version with its aliases and metrics
    listed = list_models(strong)
    assert list(listed["version"]) == [3, 2, 1]
    aliases = dict(zip(listed["version"], listed["aliases"], strict=True))
    assert aliases == {3: "challenger,champion", 2: "", 1: ""}
    assert listed["churn_auc"].notna().all() and listed["bgnbd_churn_auc"].notna().all()
    assert listed.set_index("version").loc[2, "churn_auc"] > listed.set_index("version").loc[1, "churn_auc"]
    out = runner.invoke(app, ["models"])
    assert out.exit_code == 0 and "champion" in out.output

    # rollback walks the champion history back, tagging what was rolled back
    out = runner.invoke(app, ["rollback"])
    assert out.exit_code == 0 and "from v3 to v2" in out.output
    assert alias_version(strong) == "2" and _tags(tmp_path, "3")["rolled_back_to"] == "2"
    assert rollback(strong).to_version == "1"
    assert alias_version(strong) == "1"
    with pytest.raises(PromotionError, match="no previous champion"):
        rollback(strong)
    out = runner.invoke(app, ["rollback"])
    assert out.exit_code == 2 and "no previous champion" in out.output
    log = json.loads(_client(tmp_path).get_registered_model("strata").tags["champion_log"])
    assert [e.split(" ", 1)[1].split(":")[0] for e in log] == [
        "promote v1 (was v-)", "promote v2 (was v1)", "promote v3 (was v2)", "rollback v3 -> v2", "rollback v2 -> v1",
    ]
    # serving reads the champion: after the rollbacks it is v1 again
    assert load_bundle("models:/strata@champion").data_fingerprint == load_bundle("models:/strata/1").data_fingerprint


def test_alias_lookup_on_a_missing_sqlite_store_creates_nothing(tmp_path, monkeypatch) -> None:
    """Polling for the champion where no store exists answers None and leaves no mlflow.db behind."""
    from features.config import StrataConfig
    from training.registry import alias_version

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert alias_version(StrataConfig()) is None
    assert list(tmp_path.iterdir()) == []
