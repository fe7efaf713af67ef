"""``strata monitor`` end to end: a real tiny model trained with ``train_model`` into a temporary MLflow
SQLite store and promoted to champion, monitored on data files with and without injected shifts.

Exit codes: 0 quiet, 1 breach, 2 error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import monitoring_fixtures as mf
import pandas as pd
import pytest
from typer.testing import CliRunner

runner = CliRunner()


@dataclass
class Env:
    root: Path
    config_path: Path
    null_dir: Path
    flooded_dir: Path
    stopped_dir: Path
    scores_dir: Path
    version: str


def _write_config(root: Path) -> Path:
    training = "\n".join(f"{k} = {v}" for k, v in mf.FAST_TRAINING.items())
    text = (
        f"[labels]\nn_cutoffs = 5\n\n[training]\n{training}\n\n"
        f'[tracking]\ntracking_uri = "sqlite:///{root / "mlflow.db"}"\nartifact_dir = "{root / "mlartifacts"}"\n'
    )
    path = root / "strata.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    from features.config import load_config
    from features.demo_data import write_dataset
    from features.pipeline import build_features
    from serving.batch import run_batch
    from serving.scorer import Scorer
    from training.registry import promote
    from training.train import train_model

    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        root = tmp_path_factory.mktemp("monitor_cli")
        config_path = _write_config(root)
        config = load_config(config_path)
        result = train_model(mf.demo(7), config, as_of=mf.TRAIN_END)
        assert promote(config).promoted
        dirs = {}
        stopped = mf.stop_buying(mf.demo(8), mf.TRAIN_END + pd.Timedelta(days=15), share=0.5)
        for name, ds in (
            ("null", mf.demo(8)),
            ("flooded", mf.flood_channel(mf.demo(8), mf.REFERENCE_CUTOFF, n_new=700)),
            ("stopped", stopped),
        ):
            dirs[name] = root / name
            write_dataset(ds, dirs[name], "parquet")
        # what the champion served on 2024-06-02 (a `strata score` output)
        served = pd.Timestamp("2024-06-02", tz="UTC")
        scorer = Scorer.from_registry(config, alias="champion")
        scores_dir = root / "scores-2024-06-02"
        run_batch(scorer, lambda: build_features(stopped, served, config), scores_dir,
                  run_args={"as_of": served.isoformat()})
        yield Env(root, config_path, dirs["null"], dirs["flooded"], dirs["stopped"], scores_dir, result.model_version)
    finally:
        mp.undo()


def _invoke(env: Env, *args: str):  # noqa: ANN202  (click Result)
    from strata_cli.main import app

    return runner.invoke(app, ["monitor", "--config", str(env.config_path), *args])


def test_an_independent_sample_exits_0_with_a_quiet_json_summary(env: Env) -> None:
    res = _invoke(env, "--data", str(env.null_dir), "--as-of", str(mf.REFERENCE_CUTOFF.date()), "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["status"] == "ok" and summary["breached"] is False
    assert summary["model"] == {**summary["model"], "name": "strata", "version": env.version, "alias": "champion"}
    assert summary["model"]["reference_cutoff"].startswith(str(mf.REFERENCE_CUTOFF.date()))
    assert summary["drift"]["features_alert"] == 0 and summary["drift"]["features_checked"] > 50
    assert {s["name"] for s in summary["drift"]["scores"]} >= {"churn_risk", "predicted_value"}
    assert all(s["status"] == "ok" for s in summary["drift"]["scores"])
    assert summary["layers"]["baseline"].startswith("training reference")
    # outcomes up to the reference cutoff are all from the training period: nothing to judge yet
    assert summary["health"]["status"].startswith("pending")
    assert all(not row["out_of_time"] for row in summary["health"]["trend"])
    assert summary["recommendation"]["retrain"] is False


def test_a_channel_flood_exits_1_and_names_the_drifted_features(env: Env) -> None:
    res = _invoke(env, "--data", str(env.flooded_dir), "--as-of", str(mf.REFERENCE_CUTOFF.date()), "--json",
                  "--backtest-cutoffs", "0")
    assert res.exit_code == 1, res.output
    summary = json.loads(res.stdout)
    assert summary["status"] == "breach"
    drifted = summary["drift"]["drifted_features"]
    assert drifted[0] == "source_channel" and "days_since_joined" in drifted
    assert "douyin_live" in summary["drift"]["features"][0]["new_levels"]
    rec = summary["recommendation"]
    assert rec["retrain"] is True and "source_channel (PSI" in rec["summary"]
    shifted_layers = {(s["dimension"], s["layer"]) for s in summary["layers"]["shares"] if s["status"] == "alert"}
    assert ("lifecycle", "potential") in shifted_layers
    assert summary["health"]["trend"] == []


def test_realised_performance_breach_with_an_earlier_scoring_output(env: Env) -> None:
    res = _invoke(env, "--data", str(env.stopped_dir), "--as-of", str(mf.MONITOR_AS_OF.date()),
                  "--scores", str(env.scores_dir), "--backtest-cutoffs", "2")
    assert res.exit_code == 1, res.output
    out = res.stdout
    assert "Realised performance" in out and "Feature drift since training" in out
    assert "2024-06-02" in out and "scores" in out and "backtest" in out
    assert "churn AUC fell from" in out and "calibration error" in out
    assert "BREACH" in out and "retraining recommended" in out


def test_an_unexpected_failure_exits_2_not_1(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Schedulers read exit code 1 as a breach: a crash must not look like one."""
    import serving.monitoring

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(serving.monitoring, "run_monitor", broken)
    res = _invoke(env, "--data", str(env.null_dir), "--as-of", "2024-04-01", "--backtest-cutoffs", "0")
    assert res.exit_code == 2 and "failed unexpectedly" in res.stderr and "boom" in res.stderr


def test_errors_exit_2_with_one_line(env: Env) -> None:
    res = _invoke(env, "--data", str(env.null_dir), "--as-of", "2024-04-01", "--model-alias", "nope")
    assert res.exit_code == 2 and "models:/strata@nope" in res.stderr
    res = _invoke(env, "--data", str(env.null_dir), "--as-of", "not-a-date")
    assert res.exit_code == 2 and "cannot parse 'not-a-date'" in res.stderr
    res = _invoke(env, "--data", str(env.root / "missing"), "--as-of", "2024-04-01")
    assert res.exit_code == 2 and "missing" in res.stderr
    res = _invoke(env, "--as-of", "2024-04-01")
    assert res.exit_code == 2 and "no input" in res.stderr
    res = _invoke(env, "--data", str(env.null_dir), "--as-of", "2024-04-01", "--scores", str(env.root))
    assert res.exit_code == 2 and "not a finished scoring output" in res.stderr
