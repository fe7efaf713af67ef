"""Benchmark of batch scoring against raw LightGBM prediction of the same models, in the same run.

A model bundle is trained with the production code (:func:`training.train.fit_bundle`, default
configuration) on ``--train-users`` synthetic users. The feature table to score is the scoring-date
feature table of that data set, resampled with replacement to ``--users`` rows with fresh user ids
(features precomputed, as the brief asks: the feature pipeline has its own benchmark). Then, on the
same rows:

* ``raw predict``: the bare LightGBM ``Booster.predict`` of every booster the bundle uses (churn on
  buyers, conversion on prospects, every value-model booster on everyone), on the model matrix;
* ``raw pred_contrib``: LightGBM ``pred_contrib`` (TreeSHAP) of the churn model on buyers and the
  conversion model on prospects: the work the reason codes need and plain prediction does not do;
* ``batch scoring``: :func:`serving.batch.run_batch` end to end (chunks of ``scoring.chunk_users``,
  model matrix, calibration, layers, refinement, reason codes, interventions, control groups, budget
  allocation, Parquet part files, manifest), without the online store;
* ``online store``: upserting the same features and scores into the SQLite online store.

Printed: wall times, users per second, and the ratios batch / raw predict and batch / (raw predict +
raw pred_contrib). Usage::

    python benchmarks/bench_scoring.py --users 200000
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.config import StrataConfig
from features.demo_data import generate_dataset
from features.pipeline import build_features
from serving.batch import run_batch
from serving.online_store import OnlineStore
from serving.scorer import Scorer
from training.bundle import ModelBundle
from training.train import fit_bundle, prepare_training_data

END = pd.Timestamp("2024-12-31", tz="UTC")


class Clock:
    """Wall and CPU seconds (user + system, all threads of this process) of a block."""

    def __enter__(self) -> Clock:
        self._w = time.perf_counter()
        r = resource.getrusage(resource.RUSAGE_SELF)
        self._c = r.ru_utime + r.ru_stime
        return self

    def __exit__(self, *exc: object) -> None:
        r = resource.getrusage(resource.RUSAGE_SELF)
        self.wall = time.perf_counter() - self._w
        self.cpu = r.ru_utime + r.ru_stime - self._c


def train_bundle(n_users: int, seed: int, config: StrataConfig) -> tuple[ModelBundle, pd.DataFrame]:
    """A bundle trained by the production code, and the scoring-date features of its data set."""
    dataset = generate_dataset(n_users=n_users, end=END, seed=seed)
    data = prepare_training_data(dataset, config, as_of=END)
    fit = fit_bundle(data)
    return fit.bundle, build_features(dataset, END, config)


def resample(features: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` rows drawn with replacement from ``features``, with fresh unique user ids."""
    rng = np.random.default_rng(seed)
    out = features.iloc[rng.integers(0, len(features), n)].reset_index(drop=True)
    out["user_id"] = [f"b{i:09d}" for i in range(n)]
    return out


def _boosters(bundle: ModelBundle) -> list[tuple[str, object, str]]:
    """(name, booster, rows) of every booster scoring uses; rows: buyers, prospects or all."""
    out: list[tuple[str, object, str]] = [("churn", bundle.churn_model.booster_, "buyers")]
    if bundle.conversion_model is not None:
        out.append(("conversion", bundle.conversion_model.booster_, "prospects"))
    value = bundle.value_model
    for key, part in value.parts_.items():
        if hasattr(part, "booster_"):
            out.append((f"value_{key}", part.booster_, "all"))
    out.append(("value_q_low", value.q_low_.booster_, "all"))
    out.append(("value_q_high", value.q_high_.booster_, "all"))
    return out


def raw_lightgbm(bundle: ModelBundle, features: pd.DataFrame, contrib: bool) -> tuple[Clock, dict[str, float]]:
    """Bare LightGBM predict (or pred_contrib) on the model matrix (built outside the timing)."""
    X = bundle.model_matrix(features)
    prospect = features["is_prospect"].to_numpy() >= 0.5
    rows = {"buyers": X.loc[~prospect], "prospects": X.loc[prospect], "all": X}
    times: dict[str, float] = {}
    with Clock() as total:
        for name, booster, which in _boosters(bundle):
            if contrib and name not in ("churn", "conversion"):
                continue
            t0 = time.perf_counter()
            booster.predict(rows[which], pred_contrib=contrib)  # type: ignore[attr-defined]
            times[name] = time.perf_counter() - t0
    return total, times


def _line(label: str, clock: Clock, n: int, extra: str = "") -> str:
    return (f"{label:<20}{clock.wall:9.2f}s wall {clock.cpu:9.2f}s cpu  ({n / clock.wall:,.0f} users/s)  {extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000, help="Users to score.")
    parser.add_argument("--train-users", type=int, default=20_000, help="Synthetic users to train the bundle on.")
    parser.add_argument("--seed", type=int, default=42, help="Seed of the synthetic data.")
    parser.add_argument("--budget", type=float, default=None, help="Budget of the batch run (default: none).")
    parser.add_argument("--bundle", type=Path, default=None,
                        help="Load/save the trained bundle and its features here (skips retraining).")
    parser.add_argument("--skip-online-store", action="store_true", help="Do not time the online store.")
    args = parser.parse_args()

    config = StrataConfig()
    t0 = time.perf_counter()
    if args.bundle is not None and (args.bundle / "bundle.json").exists():
        bundle = ModelBundle.load(args.bundle)
        base = pd.read_parquet(args.bundle / "features.parquet")
    else:
        bundle, base = train_bundle(args.train_users, args.seed, config)
        if args.bundle is not None:
            bundle.save(args.bundle)
            base.to_parquet(args.bundle / "features.parquet")
    trees = {name: b.num_trees() for name, b, _ in _boosters(bundle)}  # type: ignore[attr-defined]
    print(f"bundle ready in {time.perf_counter() - t0:.1f}s; trees per booster: {trees}")
    features = resample(base, args.users, args.seed)
    n_prospects = int((features["is_prospect"] >= 0.5).sum())
    print(f"scoring {len(features):,} users ({n_prospects:,} prospects), {len(bundle.feature_names)} features, "
          f"chunks of {config.scoring.chunk_users:,}")

    raw, raw_parts = raw_lightgbm(bundle, features, contrib=False)
    print(_line("raw predict", raw, len(features), ", ".join(f"{k} {v:.2f}s" for k, v in raw_parts.items())))
    shap, shap_parts = raw_lightgbm(bundle, features, contrib=True)
    print(_line("raw pred_contrib", shap, len(features), ", ".join(f"{k} {v:.2f}s" for k, v in shap_parts.items())))

    scorer = Scorer(bundle, config, model_name="bench", model_version="1")
    tmp = Path(tempfile.mkdtemp(prefix="strata-bench-"))
    try:
        with Clock() as batch:
            summary = run_batch(scorer, lambda: features, tmp / "out", run_args={"bench": args.users},
                                budget=args.budget)
        size = sum(f.stat().st_size for f in (tmp / "out").iterdir()) / 1e6
        print(_line("batch scoring", batch, len(features), f"{summary.n_chunks} part(s), {size:,.0f} MB"))
        for what in ("wall", "cpu"):
            b, r, s_ = getattr(batch, what), getattr(raw, what), getattr(shap, what)
            print(f"[{what}] batch / raw predict: {b / r:6.2f}x (target 1.5x); batch / (raw predict + "
                  f"pred_contrib): {b / (r + s_):5.2f}x; batch time outside LightGBM: {b - r - s_:8.2f}s")
        if not args.skip_online_store:
            from serving.batch import read_scores

            scores = read_scores(tmp / "out")
            store = OnlineStore(tmp / "online.db")
            chunk = config.scoring.chunk_users
            with Clock() as took:
                for start in range(0, len(features), chunk):
                    store.write(features.iloc[start : start + chunk], scores.iloc[start : start + chunk])
            print(_line("online store write", took, len(features),
                        f"{(tmp / 'online.db').stat().st_size / 1e6:,.0f} MB"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
