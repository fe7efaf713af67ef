"""Batch scoring: same rows as the scorer, atomic output, resume after failure and after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from scoring_fixtures import SCORE_AS_OF, score_features_frame, small_bundle, small_config

from serving.batch import BatchError, read_scores, read_summary, run_batch
from serving.online_store import OnlineStore
from serving.scorer import Scorer

ARGS = {"as_of": SCORE_AS_OF.isoformat(), "inputs": "test"}


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer(small_bundle(), small_config(), "strata", "3", "champion")


def _features() -> pd.DataFrame:
    return score_features_frame().copy()


def test_batch_equals_scorer_in_memory(tmp_path: Path, scorer: Scorer) -> None:
    out = tmp_path / "scores"
    store = OnlineStore(tmp_path / "online.db")
    summary = run_batch(scorer, _features, out, run_args=ARGS, chunk_users=300, online_store=store)
    expected = scorer.score_features(_features())
    got = read_scores(out)
    pd.testing.assert_frame_equal(got, expected)
    assert summary.n_users == len(expected) and summary.n_chunks == 7
    assert sorted(p.name for p in out.iterdir()) == ["_manifest.json", *[f"part-{i:05d}.parquet" for i in range(7)]]
    assert not list(tmp_path.glob("scores.tmp-*"))
    # summary figures are the sums over the rows
    assert summary.lifecycle == expected["lifecycle"].value_counts().to_dict()
    assert summary.refined_layer == expected["refined_layer"].value_counts().to_dict()
    assert summary.expected_churners == pytest.approx(expected["churn_risk"].sum())
    assert summary.predicted_value_total == pytest.approx(expected["predicted_value"].sum())
    treated = expected.action_id.notna() & ~expected.control
    assert summary.treated == treated.sum() and summary.budget_used == pytest.approx(expected.loc[treated, "action_cost"].sum())
    assert read_summary(out)["n_users"] == len(expected)
    # The online store holds the latest features and scores; scoring stored features reproduces the batch.
    assert store.count() == len(expected)
    ids = expected["user_id"].iloc[[0, 5, 777, 1999]].tolist()
    again = scorer.score_features(store.get_features(ids))
    pd.testing.assert_frame_equal(again, expected.set_index("user_id").loc[ids].reset_index())


def test_budgeted_batch_allocates_globally_across_chunks(tmp_path: Path, scorer: Scorer) -> None:
    out = tmp_path / "scores"
    summary = run_batch(scorer, _features, out, run_args=ARGS, budget=120.0, chunk_users=250, fmt="csv")
    expected = scorer.score_features(_features(), budget=120.0)
    got = read_scores(out)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12)
    assert all(p.suffix == ".csv" for p in out.glob("part-*"))
    assert summary.budget_used <= 120.0 and summary.budget_used == pytest.approx(
        expected.loc[expected.action_id.notna() & ~expected.control, "action_cost"].sum()
    )


def test_existing_output_is_refused_unless_overwrite(tmp_path: Path, scorer: Scorer) -> None:
    out = tmp_path / "scores"
    out.mkdir()
    (out / "old.txt").write_text("x")
    with pytest.raises(BatchError, match="already exists"):
        run_batch(scorer, _features, out, run_args=ARGS, chunk_users=1000)
    run_batch(scorer, _features, out, run_args=ARGS, chunk_users=1000, overwrite=True)
    assert not (out / "old.txt").exists() and len(read_scores(out)) == 2000


class _FailingScorer(Scorer):
    """Fails on the n-th chunk, like a crash half way through."""

    fail_at: int = 3
    calls: int = 0

    def score_core(self, features, **kw):  # noqa: ANN001, ANN003, ANN201
        type(self).calls += 1
        if type(self).calls == self.fail_at:
            raise RuntimeError("boom")
        return super().score_core(features, **kw)


def test_resume_after_a_failure_skips_finished_chunks(tmp_path: Path, scorer: Scorer) -> None:
    out = tmp_path / "scores"
    failing = _FailingScorer(small_bundle(), small_config(), "strata", "3", "champion")
    built = []

    def build() -> pd.DataFrame:
        built.append(1)
        return _features()

    for budget in (None, 80.0):
        _FailingScorer.calls = 0
        target = out.with_name(f"scores-{budget}")
        with pytest.raises(RuntimeError, match="boom"):
            run_batch(failing, build, target, run_args=ARGS, budget=budget, chunk_users=400)
        assert not target.exists() and len(list(tmp_path.glob(f"{target.name}.tmp-*"))) == 1
        summary = run_batch(scorer, build, target, run_args=ARGS, budget=budget, chunk_users=400)
        assert summary.chunks_resumed == (2 if budget is None else 0)
        pd.testing.assert_frame_equal(read_scores(target), scorer.score_features(_features(), budget=budget))
    assert len(built) == 2  # features were built once per run, not again on resume


SCRIPT = textwrap.dedent(
    """
    import sys
    import pandas as pd
    from features.config import config_from_dict
    from training.bundle import ModelBundle
    from serving.batch import run_batch
    from serving.scorer import Scorer

    bundle_dir, features_path, out, config_json = sys.argv[1:5]
    import json
    config = config_from_dict(json.loads(config_json))
    scorer = Scorer(ModelBundle.load(bundle_dir), config, "strata", "3", "champion")
    summary = run_batch(scorer, lambda: pd.read_parquet(features_path), out, run_args={"inputs": features_path},
                        chunk_users=100)
    print("RESUMED", summary.chunks_resumed, "CHUNKS", summary.n_chunks)
    """
)


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_scores_every_user_exactly_once(tmp_path: Path, scorer: Scorer) -> None:
    bundle_dir = small_bundle().save(tmp_path / "bundle")
    features_path = tmp_path / "features.parquet"
    _features().to_parquet(features_path)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    out = tmp_path / "scores"
    cmd = [sys.executable, str(script), str(bundle_dir), str(features_path), str(out),
           json.dumps(small_config().model_dump(mode="json"))]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 600  # generous: the machine may be busy
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        manifests = list(tmp_path.glob("scores.tmp-*/_work/manifest.json"))
        if manifests:
            try:
                done = len(json.loads(manifests[0].read_text())["final"])
            except (json.JSONDecodeError, FileNotFoundError):
                done = 0
            if done >= 3:
                break
        time.sleep(0.005)
    assert proc.poll() is None, f"run finished before it could be killed: {proc.communicate()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # nothing published by a killed run
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    resumed = int(rerun.stdout.split("RESUMED")[1].split()[0])
    assert resumed >= 3
    got = read_scores(out)
    assert got["user_id"].is_unique and len(got) == len(_features())
    assert set(got["user_id"]) == set(_features()["user_id"])
    pd.testing.assert_frame_equal(got, scorer.score_features(_features()))


@pytest.mark.slow
def test_cli_score_with_a_registered_champion(tmp_path: Path, demo_dir: Path) -> None:
    """`strata score` end to end: real MLflow registry (SQLite), CSV inputs, budget, online store."""
    import mlflow
    from typer.testing import CliRunner

    from features.config import load_config
    from features.validation import load_dataset
    from strata_cli.main import app
    from training.pyfunc import log_bundle_model
    from training.tracking import configure_tracking

    cfg_path = tmp_path / "strata.toml"
    cfg_path.write_text(
        "[training]\nnum_boost_round = 40\nearly_stopping_rounds = 10\nmin_data_in_leaf = 20\nnum_leaves = 15\n"
        f"[tracking]\ntracking_uri = 'sqlite:///{tmp_path / 'mlflow.db'}'\nartifact_dir = '{tmp_path / 'art'}'\n"
        f"[serving]\nonline_store = '{tmp_path / 'online.db'}'\n[scoring]\nchunk_users = 700\n"
    )
    config = load_config(cfg_path)
    assert config.model_dump(exclude={"tracking", "serving", "scoring"}) == small_config().model_dump(
        exclude={"tracking", "serving", "scoring"}
    )
    configure_tracking(config)
    with mlflow.start_run():
        info = log_bundle_model(small_bundle(), score_features_frame())
    version = mlflow.register_model(info.model_uri, "strata").version
    mlflow.MlflowClient().set_registered_model_alias("strata", "champion", version)

    out = tmp_path / "out"
    args = ["score", "--data", str(demo_dir), "--as-of", "2024-12-31", "--out", str(out), "--budget", "100",
            "--config", str(cfg_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"version {version} (champion)" in result.output and "wrote 2,000 users in 3 part file(s)" in result.output
    dataset, _ = load_dataset(demo_dir, config=config)
    expected = Scorer(small_bundle(), config, "strata", str(version), "champion").score_raw(
        dataset, SCORE_AS_OF, budget=100.0
    )
    pd.testing.assert_frame_equal(read_scores(out), expected)
    assert OnlineStore(tmp_path / "online.db").count() == 2000

    # from a precomputed feature table (`strata features --out`): the same scores
    table = tmp_path / "features.parquet"
    built = CliRunner().invoke(app, ["features", "--data", str(demo_dir), "--as-of", "2024-12-31", "--out", str(table),
                                     "--config", str(cfg_path)])
    assert built.exit_code == 0, built.output
    from_table = [*args[:1], "--features", str(table), *args[3:]]
    from_table[from_table.index(str(out))] = str(tmp_path / "out-f")
    result = CliRunner().invoke(app, [*from_table, "--no-online-store"])
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(read_scores(tmp_path / "out-f"), expected)
    both = CliRunner().invoke(app, [*args, "--features", str(table)])
    assert both.exit_code == 2 and "not both" in both.output
    other_day = [*from_table[:3], "--as-of", "2024-11-30", *from_table[5:]]
    other_day[other_day.index(str(tmp_path / "out-f"))] = str(tmp_path / "out-g")
    wrong = CliRunner().invoke(app, other_day)
    assert wrong.exit_code != 0 and "column 'as_of', row 1" in wrong.output and "--as-of" in wrong.output
    assert not (tmp_path / "out-g").exists()

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "already exists" in again.output
    missing = CliRunner().invoke(app, [*args[:6], str(tmp_path / "o2"), "--model-alias", "nope", *args[7:]])
    assert missing.exit_code == 2 and "models:/strata@nope" in missing.output
