"""A training run against a real MLflow SQLite store: what is logged, registered and loadable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from training_fixtures import DEMO_END, demo_data, fast_config, isolate_tracking

from features.config import config_from_dict
from features.errors import InsufficientDataError
from training.tracking import artifact_location, resolve_tracking_uri


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """One training run in a fresh working directory; yields (result, workdir)."""
    from training.train import train_model

    work = tmp_path_factory.mktemp("mlflow_work")
    mp = pytest.MonkeyPatch()
    isolate_tracking(mp, work, fresh_store=True)  # the default store must be created by the run itself
    try:
        result = train_model(demo_data(), fast_config(), as_of=DEMO_END, horizon_days=60, run_name="unit")
        yield result, work
    finally:
        mp.undo()


def test_tracking_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = fast_config()
    assert resolve_tracking_uri(cfg, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert artifact_location(cfg, resolve_tracking_uri(cfg, tmp_path), tmp_path) == (tmp_path / "mlartifacts").resolve().as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/x.db")
    assert resolve_tracking_uri(cfg, tmp_path) == "sqlite:////elsewhere/x.db"
    explicit = config_from_dict({"tracking": {"tracking_uri": "http://mlflow.internal:5000"}})
    assert resolve_tracking_uri(explicit, tmp_path) == "http://mlflow.internal:5000"
    assert artifact_location(explicit, "http://mlflow.internal:5000", tmp_path) is None


def test_importing_training_has_no_side_effects(tmp_path: Path) -> None:
    code = (
        "import mlflow, os\n"
        "before = mlflow.get_tracking_uri()\n"
        "import training.train, training.registry, training.pyfunc, training.experiment, training.tracking\n"
        "import strata_cli.cmd_train\n"
        "assert mlflow.get_tracking_uri() == before, (before, mlflow.get_tracking_uri())\n"
        "print(sorted(os.listdir('.')))\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "MLFLOW_TRACKING_URI"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"  # no mlflow.db, no mlartifacts, nothing


def test_run_is_logged_with_params_metrics_and_artifacts(trained) -> None:  # noqa: ANN001
    import mlflow

    result, work = trained
    assert (work / "mlflow.db").exists() and (work / "mlartifacts").is_dir()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work}/mlflow.db")
    run = client.get_run(result.run_id)
    p = run.data.params
    assert p["horizon_days"] == "60" and p["end"] == DEMO_END.isoformat() and p["end_source"] == "as_of"
    assert result.bundle.horizon_days == 60 and result.bundle.config["labels"]["horizon_days"] == 60
    assert p["latest_cutoff"] == (DEMO_END - pd.Timedelta(days=60)).isoformat()
    assert p["data_hash"] == result.bundle.data_fingerprint["data_hash"]
    assert int(p["n_eval_rows"]) > 0 and int(p["n_train_rows"]) > int(p["n_eval_rows"])
    m = run.data.metrics
    for key in ("churn_auc", "churn_ece", "churn_brier", "churn_lift_top_decile", "value_normalized_gini",
                "value_total_spend_error_pct", "conversion_auc",
                "bgnbd_churn_auc", "bgnbd_value_normalized_gini", "rule_churn_auc", "rule_value_normalized_gini"):
        assert key in m and np.isfinite(m[key]), key
    # model and baselines are scored on the same rows
    assert m["churn_n"] == m["bgnbd_churn_n"] == m["rule_churn_n"]
    arts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"data", "evaluation", "plots", "config", "notes.txt"} <= arts
    plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert plots == {
        "plots/churn_calibration.png", "plots/churn_lift_gain.png", "plots/value_deciles.png",
        "plots/churn_feature_importance.png", "plots/value_feature_importance.png",
    }
    local = Path(mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="plots/churn_calibration.png",
                                                      tracking_uri=f"sqlite:///{work}/mlflow.db"))
    assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fp_path = mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="data/fingerprint.json",
                                                  tracking_uri=f"sqlite:///{work}/mlflow.db")
    fp = json.loads(Path(fp_path).read_text())
    assert len(fp["cutoffs"]) == 6 and sum(fp["rows_per_cutoff"].values()) == fp["n_rows"]
    table_path = mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="evaluation/metrics_side_by_side.csv",
                                                     tracking_uri=f"sqlite:///{work}/mlflow.db")
    table = pd.read_csv(table_path).set_index("metric")
    assert table.loc["churn_auc", "model"] == pytest.approx(m["churn_auc"])
    assert table.loc["churn_auc", "bgnbd"] == pytest.approx(m["bgnbd_churn_auc"])


def test_version_is_registered_as_challenger_and_loads(trained) -> None:  # noqa: ANN001
    import mlflow

    from training.pyfunc import load_bundle

    result, work = trained
    uri = f"sqlite:///{work}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    mv = client.get_model_version_by_alias("strata", "challenger")
    assert str(mv.version) == result.model_version == "1"
    assert mv.tags["run_id"] == result.run_id
    assert float(mv.tags["churn_auc"]) == pytest.approx(result.metrics["churn_auc"], abs=1e-6)
    from features.pipeline import build_features

    feats = build_features(demo_data(), DEMO_END, fast_config())
    expected = result.bundle.predict(feats)
    mp = pytest.MonkeyPatch()
    isolate_tracking(mp, work)
    try:
        loaded = load_bundle("models:/strata@challenger", fast_config())
        pd.testing.assert_frame_equal(loaded.predict(feats), expected)
        # the pyfunc flavour gives the same scores, with the input checked against the logged signature
        model = mlflow.pyfunc.load_model("models:/strata@challenger")
        names = [c.name for c in model.metadata.get_input_schema().inputs]
        assert names == ["user_id", *result.bundle.feature_names]
        got = model.predict(feats[["user_id", *result.bundle.feature_names]])
        pd.testing.assert_frame_equal(got.reset_index(drop=True), expected, check_dtype=False)
    finally:
        mp.undo()


def test_unknown_model_uri_is_a_clear_error(trained) -> None:  # noqa: ANN001
    from features.errors import ModelNotFoundError
    from training.pyfunc import load_bundle

    _, work = trained
    mp = pytest.MonkeyPatch()
    isolate_tracking(mp, work)
    try:
        with pytest.raises(ModelNotFoundError, match="models:/strata@champion: no such model"):
            load_bundle("models:/strata@champion", fast_config())
    finally:
        mp.undo()


def test_insufficient_data_fails_before_any_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from features.demo_data import generate_dataset
    from training.train import train_model

    isolate_tracking(monkeypatch, tmp_path, fresh_store=True)
    tiny = generate_dataset(n_users=50, end=DEMO_END, seed=5)
    with pytest.raises(InsufficientDataError, match="min_users"):
        train_model(tiny, fast_config(), as_of=DEMO_END)
    assert not (tmp_path / "mlflow.db").exists()


def test_cli_errors_are_one_line(demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(`strata train` itself runs in the registry flow test.)"""
    from typer.testing import CliRunner

    from strata_cli.main import app

    isolate_tracking(monkeypatch, tmp_path)
    runner = CliRunner()
    bad = runner.invoke(app, ["train", "--data", str(demo_dir), "--as-of", "2031-01-01"])
    assert bad.exit_code == 2 and "after the last order or event" in bad.output
    assert "Traceback" not in bad.output
    missing = runner.invoke(app, ["train"])
    assert missing.exit_code == 2 and "--data" in missing.output
    listed = runner.invoke(app, ["models"])
    assert listed.exit_code == 0 and "no versions of 'strata' registered yet" in listed.output
