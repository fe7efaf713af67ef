"""A scoring run of no user never replaces the online store; a cutoff long after the data gets a warning.

``strata score`` end to end with a registered champion (real MLflow on SQLite), and ``run_batch`` /
``Snapshot.publish`` themselves: a feature table of no user is refused before anything is written, and an
empty snapshot is never published over the live store.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from scoring_fixtures import SCORE_AS_OF, score_features_frame, small_bundle, small_config
from typer.testing import CliRunner

from serving.batch import BatchError, read_scores, run_batch
from serving.online_store import OnlineStore, OnlineStoreError
from serving.scorer import Scorer

runner = CliRunner()
LAST_EVENT = "2024-12-30T23:57:59+00:00"  # the last event of the demo data (tests/conftest.py)
N_USERS = 2000


@dataclass
class Env:
    root: Path
    cfg: Path
    store: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Iterator[Env]:
    """A champion registered from the small bundle, and a live online store filled by a normal `strata score`."""
    import mlflow

    from features.config import load_config
    from strata_cli.main import app
    from training.pyfunc import log_bundle_model
    from training.tracking import configure_tracking

    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        root = tmp_path_factory.mktemp("score_cutoffs")
        cfg = root / "strata.toml"
        cfg.write_text(
            "[training]\nnum_boost_round = 40\nearly_stopping_rounds = 10\nmin_data_in_leaf = 20\nnum_leaves = 15\n"
            f"[tracking]\ntracking_uri = 'sqlite:///{root / 'mlflow.db'}'\nartifact_dir = '{root / 'art'}'\n"
            f"[serving]\nonline_store = '{root / 'online.db'}'\n[scoring]\nchunk_users = 700\n"
        )
        configure_tracking(load_config(cfg))
        with mlflow.start_run():
            info = log_bundle_model(small_bundle(), score_features_frame())
        version = mlflow.register_model(info.model_uri, "strata").version
        mlflow.MlflowClient().set_registered_model_alias("strata", "champion", version)
        result = runner.invoke(app, ["score", "--data", str(demo_dir), "--as-of", "2024-12-31", "--out",
                                     str(root / "s1"), "--config", str(cfg)])
        assert result.exit_code == 0, result.output
        assert "warning" not in result.stderr  # the data's own end: no warning
        assert OnlineStore(root / "online.db").count() == N_USERS
        yield Env(root=root, cfg=cfg, store=root / "online.db")
    finally:
        mp.undo()


def _score(env: Env, *args: str) -> tuple[int, str, str]:
    from strata_cli.main import app

    result = runner.invoke(app, ["score", *args, "--config", str(env.cfg)])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.stdout, result.stderr


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if ".tmp-" in p.name or ".build-" in p.name)


def test_score_before_the_data_refuses_and_keeps_the_online_store(env: Env, demo_dir: Path) -> None:
    out = env.root / "s9"
    code, stdout, stderr = _score(env, "--data", str(demo_dir), "--as-of", "2000-01-01", "--out", str(out))
    assert code == 2
    assert ("no user is known at or before --as-of 2000-01-01T00:00:00+00:00 (the data starts at 2022-07-05"
            in stderr)
    assert "nothing to score, and the online store is left as it is; check --as-of" in stderr
    assert "wrote" not in stdout and not out.exists() and _leftovers(env.root) == []
    store = OnlineStore(env.store)
    assert store.count() == N_USERS and len(store.get_scores(["u0000000", "u0001999"])) == 2


def test_score_long_after_the_data_warns(env: Env, demo_dir: Path) -> None:
    out = env.root / "s30"
    code, stdout, stderr = _score(env, "--data", str(demo_dir), "--as-of", "2025-03-31", "--out", str(out),
                                  "--no-online-store")
    assert code == 0, stderr
    assert "warning:" in stderr and f"is 90 days after the last order or event in the data ({LAST_EVENT}" in stderr
    assert "every user looks lapsed" in stderr and "warning" not in stdout
    assert len(read_scores(out)) == N_USERS


def test_score_features_table_of_no_user_or_long_after_the_data(env: Env, demo_dir: Path) -> None:
    from strata_cli.main import app

    empty = env.root / "features-2000.parquet"
    built = runner.invoke(app, ["features", "--data", str(demo_dir), "--as-of", "2000-01-01", "--out", str(empty),
                                "--config", str(env.cfg)])
    assert built.exit_code == 0, built.output
    out = env.root / "s9f"
    code, _, stderr = _score(env, "--features", str(empty), "--as-of", "2000-01-01", "--out", str(out))
    assert code == 2 and f"no user is known at or before --as-of 2000-01-01T00:00:00+00:00 in {empty}" in stderr
    assert not out.exists() and _leftovers(env.root) == [] and OnlineStore(env.store).count() == N_USERS
    late = env.root / "features-late.parquet"
    built = runner.invoke(app, ["features", "--data", str(demo_dir), "--as-of", "2025-03-31", "--out", str(late),
                                "--config", str(env.cfg)])
    assert built.exit_code == 0, built.output
    code, _, stderr = _score(env, "--features", str(late), "--as-of", "2025-03-31", "--out", str(env.root / "s30f"),
                             "--no-online-store")
    assert code == 0, stderr
    assert f"after the last order or event in the feature table {late}" in stderr


def test_run_batch_of_no_user_writes_nothing(tmp_path: Path) -> None:
    scorer = Scorer(small_bundle(), small_config(), "strata", "3", "champion")
    store = OnlineStore(tmp_path / "online.db")
    args = {"as_of": SCORE_AS_OF.isoformat(), "inputs": "no-user-test"}
    features = score_features_frame().iloc[:300].copy()
    run_batch(scorer, lambda: features.copy(), tmp_path / "out", run_args=args, chunk_users=100, online_store=store)
    assert store.count() == 300
    empty = score_features_frame().iloc[:0].copy()
    with pytest.raises(BatchError, match="no user to score as of 2024-12-31.*the online store is left as it is"):
        run_batch(scorer, lambda: empty.copy(), tmp_path / "empty", run_args={**args, "n": 0}, online_store=store)
    assert store.count() == 300 and not (tmp_path / "empty").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["online.db", "out"]


def test_run_batch_removes_its_directory_when_the_features_fail(tmp_path: Path) -> None:
    scorer = Scorer(small_bundle(), small_config(), "strata", "3", "champion")

    def failing() -> pd.DataFrame:
        raise BatchError("cannot build")

    with pytest.raises(BatchError, match="cannot build"):
        run_batch(scorer, failing, tmp_path / "out", run_args={"x": 1})
    assert list(tmp_path.iterdir()) == []


def test_an_empty_snapshot_is_not_published(tmp_path: Path) -> None:
    path = tmp_path / "online.db"
    features = score_features_frame().iloc[:50].copy()
    scores = Scorer(small_bundle(), small_config(), "strata", "3", "champion").score_features(features)
    first = OnlineStore(path).snapshot("a")
    first.write(features, scores)
    first.publish()
    empty = OnlineStore(path).snapshot("b")
    with pytest.raises(OnlineStoreError, match="the new snapshot holds no user"):
        empty.publish()
    assert OnlineStore(path).count() == 50 and not empty.build_path.exists()


def _broken(kind: str) -> pd.DataFrame:
    import numpy as np

    features = score_features_frame().iloc[:50].copy()
    if kind == "null ids":
        features["user_id"] = None
    elif kind == "repeated ids":
        features.loc[features.index[1], "user_id"] = features["user_id"].iloc[0]
    else:
        name = next(c for c in features.columns if features[c].dtype.kind == "f")
        features.loc[features.index[3], name] = np.inf
    return features


@pytest.mark.parametrize(("kind", "message"), [
    ("null ids", r"50 row\(s\) have no user_id \(the first is row 1\)"),
    ("repeated ids", r"1 user_id value\(s\) appear more than once \(e\.g\. '.+'\)"),
    ("infinite", r"column '.+' is infinite in 1 row\(s\) \(first: user '.+', value inf\)"),
])
def test_a_feature_table_that_cannot_be_scored_is_named(tmp_path: Path, kind: str, message: str) -> None:
    # all-null ids used to be reported as "duplicate user_id values", and infinite values were scored silently
    scorer = Scorer(small_bundle(), small_config(), "strata", "3", "champion")
    features = _broken(kind)
    with pytest.raises(BatchError, match=message):
        run_batch(scorer, lambda: features.copy(), tmp_path / "out", run_args={"kind": kind})
    assert list(tmp_path.iterdir()) == []
