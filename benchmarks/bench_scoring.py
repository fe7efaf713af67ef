"""Benchmark of batch scoring against raw LightGBM prediction of the same models, in the same run.

A model bundle is trained with the production code (:func:`training.train.fit_bundle`, default
configuration) on ``--train-users`` synthetic users. The feature table to score is the scoring-date
feature table of that data set, resampled with replacement to ``--users`` rows with fresh user ids
(features precomputed, as the brief asks: the feature pipeline has its own benchmark). Then, on the
same rows:

* ``raw predict``: the bare LightGBM ``Booster.predict`` of every booster the bundle uses (churn on
  buyers, conversion on prospects, every value-model booster including the p10/p90 quantile models on
  everyone), on the model matrix (built outside the timing): the baseline;
* ``batch scoring``: :func:`serving.batch.run_batch` end to end, i.e. what ``strata score
  --no-online-store --features FILE`` does from precomputed features: reading the feature table from a
  Parquet file (written before the timing; read here with ``pd.read_parquet``, where the command reads it
  through pyarrow one block per column), the work copy of the feature table, chunks of ``scoring.chunk_users``, model matrix,
  scores, calibration, layers, refinement, reason codes with ``scoring.reason_method = "path"``,
  interventions, control groups, budget allocation, Parquet part files, manifest;
* ``batch, one chunk at a time`` (``--compare-serial``): the same run with ``scoring.pipeline = false``
  (no model pass of the next chunk on a second thread, as before the pipeline), with a check that
  both runs wrote the same part files byte for byte and the same summary;
* ``batch + online store``: the same run with the SQLite online store, as plain ``strata score`` does
  by default (``--online-store``), timed again from scratch (skip with ``--skip-online-store``).

Before the batch, on the same rows: ``compiled vs LightGBM``, per booster, LightGBM's ``predict``
(response scale, as above) on the pandas model matrix (the baseline's input) and on the float64
NumPy matrix (no pandas conversion), against the compiled evaluator (:mod:`training.compiled_trees`,
what batch scoring uses with ``scoring.tree_engine = "compiled"``, ``--tree-engine compiled``) on that NumPy matrix: CPU and wall seconds, the gain factor (LightGBM CPU /
compiled CPU; the issue asks for 3x) and the largest absolute difference of the predictions (the
issue asks for 1e-6), plus whether they are bit-equal. Compiling (once per model) is timed apart.
Then the same boosters fused as batch scoring calls them (``ModelBundle.predict_matrix``: buyers walk
churn and the value boosters in one pass, prospects conversion and the value boosters), gain in CPU and
wall against the LightGBM pandas total; and single rows as the API scores them (2,000 rows, one call
each: churn or conversion with path contributions plus the value boosters), LightGBM vs compiled, in
microseconds per row.

Then, on the first ``--shap-users`` rows (0: skip), the same raw predict baseline and the batch with
``scoring.reason_method = "path"`` and ``"shap"`` (LightGBM TreeSHAP reasons), with a check that the
two outputs are identical in every column but ``reasons``.

Printed: wall and CPU seconds (CPU: user + system of every thread of this process, the fairer figure
on a shared machine), users per second, and the ratio batch / raw predict (target 1.5x). Usage::

    python benchmarks/bench_scoring.py --users 1000000 --shap-users 100000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

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


def raw_lightgbm(bundle: ModelBundle, features: pd.DataFrame) -> tuple[Clock, dict[str, float]]:
    """Bare LightGBM predict of every booster on the model matrix (built outside the timing)."""
    X = bundle.model_matrix(features)
    prospect = features["is_prospect"].to_numpy() >= 0.5
    rows = {"buyers": X.loc[~prospect], "prospects": X.loc[prospect], "all": X}
    times: dict[str, float] = {}
    with Clock() as total:
        for name, booster, which in _boosters(bundle):
            t0 = time.perf_counter()
            booster.predict(rows[which])  # type: ignore[attr-defined]
            times[name] = time.perf_counter() - t0
    return total, times


def compiled_vs_lightgbm(bundle: ModelBundle, features: pd.DataFrame, single_rows: int = 2000) -> None:
    """LightGBM ``predict`` vs the compiled evaluator of every booster, same rows of the same matrix:
    per booster, then all boosters fused as batch scoring calls them, then single rows as the API."""
    from training.compiled_trees import (
        PARALLEL_MIN_ROWS,
        compile_booster,
        compile_group,
        predict,
        predict_group,
    )

    X = bundle.model_matrix(features)
    with Clock() as built:
        Xn = bundle.numeric_model_matrix(features)
    assert isinstance(Xn, np.ndarray)
    prospect = features["is_prospect"].to_numpy() >= 0.5
    masks = {"buyers": ~prospect, "prospects": prospect, "all": np.ones(len(X), dtype=bool)}
    print(f"-- compiled trees vs LightGBM predict, same rows (float64 matrix built once in {built.cpu:.2f}s cpu)")
    print(f"{'booster':<14}{'rows':>9}{'trees':>6}  {'lgb pandas cpu/wall':>20}  {'lgb numpy cpu/wall':>19}  "
          f"{'compiled cpu/wall':>18}  {'gain':>6} {'gain np':>7}  {'max |diff|':>10}  bit-equal  compile")
    totals = np.zeros(3)
    walls = np.zeros(3)
    forests: dict[str, Any] = {}
    expected: dict[str, np.ndarray] = {}
    for name, booster, which in _boosters(bundle):
        mask = masks[which]
        rows = np.flatnonzero(mask)
        frame = X if mask.all() else X.loc[mask]
        matrix = Xn[rows]
        with Clock() as compiling:
            forest = forests[name] = compile_booster(booster)
        predict(forest, Xn[: PARALLEL_MIN_ROWS + 8])  # load the cached kernels (serial and parallel)
        predict(forest, Xn[:8])
        with Clock() as lgb_pandas:
            expected[name] = booster.predict(frame)  # type: ignore[attr-defined]
        with Clock() as lgb_numpy:
            booster.predict(matrix)  # type: ignore[attr-defined]
        with Clock() as compiled:
            got = predict(forest, Xn, rows)
        totals += (lgb_pandas.cpu, lgb_numpy.cpu, compiled.cpu)
        walls += (lgb_pandas.wall, lgb_numpy.wall, compiled.wall)
        diff = float(np.max(np.abs(got - expected[name]))) if len(rows) else 0.0
        print(f"{name:<14}{len(rows):>9,}{booster.num_trees():>6}  "  # type: ignore[attr-defined]
              f"{lgb_pandas.cpu:>9.2f}/{lgb_pandas.wall:<9.2f}  {lgb_numpy.cpu:>8.2f}/{lgb_numpy.wall:<9.2f}  "
              f"{compiled.cpu:>8.2f}/{compiled.wall:<8.2f}  {lgb_pandas.cpu / compiled.cpu:>5.2f}x "
              f"{lgb_numpy.cpu / compiled.cpu:>6.2f}x  {diff:>10.1e}  {str(bool(np.array_equal(got, expected[name]))):<9}  "
              f"{compiling.wall:.2f}s")
    print(f"{'all boosters':<29}  {totals[0]:>9.2f} cpu            {totals[1]:>8.2f} cpu            "
          f"{totals[2]:>8.2f} cpu           {totals[0] / totals[2]:>5.2f}x {totals[1] / totals[2]:>6.2f}x   (target 3x)")
    print(f"{'':<29}  {walls[0]:>9.2f} wall           {walls[1]:>8.2f} wall           "
          f"{walls[2]:>8.2f} wall          {walls[0] / walls[2]:>5.2f}x {walls[1] / walls[2]:>6.2f}x   (wall)")

    # Fused, as batch scoring calls them (training.bundle.ModelBundle._fused_scores): buyers walk churn and
    # the value boosters, prospects conversion and the value boosters, each row's columns filled once.
    value = [name for name, _, which in _boosters(bundle) if which == "all"]
    plan = [("buyers", ["churn", *value])]
    if bundle.conversion_model is not None:
        plan.append(("prospects", ["conversion", *value]))
    else:
        plan.append(("prospects", value))
    groups = [(which, names, compile_group([forests[k] for k in names])) for which, names in plan]
    for _, _, group in groups:
        predict_group(group, Xn[: PARALLEL_MIN_ROWS + 8])
        predict_group(group, Xn[:8])
    equal = True
    worst = 0.0
    with Clock() as fused:
        results = [predict_group(group, Xn, np.flatnonzero(masks[which])) for which, _, group in groups]
    for (which, names, _), out in zip(groups, results, strict=True):
        rows = np.flatnonzero(masks[which])
        for k, name in enumerate(names):
            want = expected[name] if name in ("churn", "conversion") else expected[name][rows]
            equal &= bool(np.array_equal(out[k], want))
            worst = max(worst, float(np.max(np.abs(out[k] - want))) if len(want) else 0.0)
    print(f"{'fused groups':<29}  {totals[0]:>9.2f}/{walls[0]:<9.2f} (lgb pandas)                  "
          f"{fused.cpu:>8.2f}/{fused.wall:<8.2f}  {totals[0] / fused.cpu:>5.2f}x cpu, {walls[0] / fused.wall:.2f}x wall "
          f"(target 3x); max |diff| {worst:.1e}, bit-equal {equal}")
    single_row_api(bundle, Xn, prospect, forests, single_rows)


def single_row_api(bundle: ModelBundle, Xn: np.ndarray, prospect: np.ndarray, forests: dict[str, Any],
                   n_rows: int) -> None:
    """Per-row cost of the boosters one API answer needs: churn (buyers) or conversion (prospects) with
    path contributions, plus the value boosters; LightGBM (as the API's LightGBM route: ``pred_leaf`` for
    the contributions, then ``predict`` per value booster, one thread) vs one fused compiled call."""
    from training.compiled_trees import (
        compile_group,
        group_raw_and_contributions,
        predict_raw,
        raw_and_contributions,
    )
    from training.tree_paths import contributions_from_leaves

    if n_rows <= 0:
        return
    value = [(name, b) for name, b, which in _boosters(bundle) if which == "all"]
    classifiers = {False: ("churn", bundle.churn_model)}
    if bundle.conversion_model is not None:
        classifiers[True] = ("conversion", bundle.conversion_model)
    groups = {k: compile_group([forests[name], *(forests[v] for v, _ in value)]) for k, (name, _) in classifiers.items()}
    tables = {k: model.path_tables() for k, (_, model) in classifiers.items()}
    take = np.random.default_rng(0).integers(0, len(Xn), n_rows)
    take = take[np.isin(prospect[take], list(classifiers))]
    rows = [np.ascontiguousarray(Xn[i : i + 1]) for i in take]
    kinds = [bool(prospect[i]) for i in take]

    def lightgbm(x: np.ndarray, kind: bool) -> None:
        model = classifiers[kind][1]
        leaves = model.booster_.predict(x, pred_leaf=True, num_threads=1)
        contributions_from_leaves(tables[kind], np.asarray(leaves).reshape(1, -1))
        for _, b in value:
            b.predict(x, num_threads=1)  # type: ignore[attr-defined]

    def per_model(x: np.ndarray, kind: bool) -> None:
        raw_and_contributions(forests[classifiers[kind][0]], tables[kind], x)
        for name, _ in value:
            predict_raw(forests[name], x)

    def fused(x: np.ndarray, kind: bool) -> None:
        group_raw_and_contributions(groups[kind], tables[kind], x)

    print(f"-- single rows ({len(rows):,} rows, one call each: {classifiers[False][0]}/conversion with path "
          f"contributions + {len(value)} value boosters)")
    timings = {}
    for label, fn in (("LightGBM", lightgbm), ("compiled, per booster", per_model), ("compiled, fused", fused)):
        for x, kind in zip(rows[:20], kinds[:20], strict=True):  # warm-up
            fn(x, kind)
        with Clock() as took:
            for x, kind in zip(rows, kinds, strict=True):
                fn(x, kind)
        timings[label] = took
        base = timings["LightGBM"]
        print(f"{label:<24}{took.cpu / len(rows) * 1e6:8.1f} us cpu {took.wall / len(rows) * 1e6:8.1f} us wall per row"
              f"   gain {base.cpu / took.cpu:5.2f}x cpu, {base.wall / took.wall:5.2f}x wall")


def machine_cpu() -> float:
    """CPU seconds every process of the machine used since boot (``/proc/stat``; NaN where there is none)."""
    try:
        with open("/proc/stat") as fh:
            ticks = [int(v) for v in fh.readline().split()[1:]]
    except OSError:
        return float("nan")
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def batch(
    scorer: Scorer, features: pd.DataFrame | Path, out: Path, budget: float | None, store: Path | None = None
) -> tuple[Clock, Any]:
    """``run_batch`` end to end from precomputed features (a frame, or a Parquet file read inside the
    timing) into ``out``, with the online store at ``store`` (None: none). The clock also gets
    ``others``: CPU seconds other processes used meanwhile (on 2 cores, wall figures taken while others
    ran are not comparable)."""
    build = (lambda: pd.read_parquet(features)) if isinstance(features, Path) else (lambda: features)
    before = machine_cpu()
    with Clock() as took:
        summary = run_batch(scorer, build, out, run_args={"bench": str(features)[:40]}, budget=budget,
                            online_store=None if store is None else OnlineStore(store))
    took.others = machine_cpu() - before - took.cpu  # type: ignore[attr-defined]
    return took, summary


def same_output(a: Path, b: Path) -> str:
    """Whether two finished batch outputs hold byte-identical part files and the same summary (but
    ``seconds`` and ``out``): ``"identical"``, or what differs."""
    parts = sorted(p.name for p in a.glob("part-*"))
    if parts != sorted(p.name for p in b.glob("part-*")):
        return f"different part files: {parts} vs {sorted(p.name for p in b.glob('part-*'))}"
    differ = [name for name in parts if (a / name).read_bytes() != (b / name).read_bytes()]
    if differ:
        return f"part files differ: {differ}"
    summaries = [json.loads((d / "_manifest.json").read_text())["summary"] for d in (a, b)]
    for summary in summaries:
        del summary["seconds"], summary["out"]
    if summaries[0] != summaries[1]:
        return f"summaries differ: {[k for k in summaries[0] if summaries[0][k] != summaries[1].get(k)]}"
    return f"identical ({len(parts)} part files, summary)"


def load_line() -> str:
    """The machine's load averages (1, 5, 15 minutes) and cores, as ``uptime`` shows them."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} cores"


def _line(label: str, clock: Clock, n: int, extra: str = "") -> str:
    return (f"{label:<20}{clock.wall:9.2f}s wall {clock.cpu:9.2f}s cpu  ({n / clock.wall:,.0f} users/s)  {extra}")


def compare_reason_methods(
    bundle: ModelBundle, config: StrataConfig, features: pd.DataFrame, tmp: Path, budget: float | None
) -> None:
    """Raw predict, batch with path reasons and batch with TreeSHAP reasons on the same rows."""
    from serving.batch import read_scores

    n = len(features)
    print(f"-- reason methods on the first {n:,} users")
    raw, _ = raw_lightgbm(bundle, features)
    print(_line("raw predict", raw, n))
    outputs = {}
    for method in ("path", "shap"):
        cfg = config.model_copy(update={"scoring": config.scoring.model_copy(update={"reason_method": method})})
        scorer = Scorer(bundle, cfg, model_name="bench", model_version="1")
        took, _ = batch(scorer, features, tmp / f"out-{method}", budget)
        print(_line(f"batch ({method})", took, n, f"cpu {took.cpu / raw.cpu:6.2f}x raw predict, "
                    f"wall {took.wall / raw.wall:6.2f}x"))
        outputs[method] = read_scores(tmp / f"out-{method}")
    others = [c for c in outputs["path"].columns if c != "reasons"]
    same = outputs["path"][others].equals(outputs["shap"][others])
    differ = float((outputs["path"]["reasons"] != outputs["shap"]["reasons"]).mean())
    top = {m: outputs[m]["reasons"].map(_top_features) for m in outputs}
    same_top = float((top["path"] == top["shap"]).mean())
    same_first = float((top["path"].map(lambda t: t[:1]) == top["shap"].map(lambda t: t[:1])).mean())
    print(f"path vs shap: every column but reasons identical: {same}; reason text differs for {differ:.1%} of "
          f"users; same features in the same order for {same_top:.1%}; same first feature for {same_first:.1%}")


def _top_features(text: str) -> tuple[tuple[str, str], ...]:
    return tuple((r["direction"], r["feature"]) for r in json.loads(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000, help="Users to score.")
    parser.add_argument("--train-users", type=int, default=20_000, help="Synthetic users to train the bundle on.")
    parser.add_argument("--seed", type=int, default=42, help="Seed of the synthetic data.")
    parser.add_argument("--budget", type=float, default=None, help="Budget of the batch run (default: none).")
    parser.add_argument("--bundle", type=Path, default=None,
                        help="Load/save the trained bundle and its features here (skips retraining).")
    parser.add_argument("--skip-online-store", action="store_true", help="Do not time the online store.")
    parser.add_argument("--compare-serial", action="store_true",
                        help="Also time the batch with scoring.pipeline = false (one chunk at a time) and check "
                             "that both runs wrote the same bytes.")
    parser.add_argument("--tree-engine", choices=["compiled", "lightgbm"], default=StrataConfig().scoring.tree_engine,
                        help="scoring.tree_engine of the batch runs (default: the configuration's default, what "
                             "strata score uses); the raw predict baseline is always LightGBM.")
    parser.add_argument("--shap-users", type=int, default=100_000,
                        help="Also compare path and TreeSHAP reasons on this many users (0: skip).")
    args = parser.parse_args()

    config = StrataConfig()
    config = config.model_copy(
        update={"scoring": config.scoring.model_copy(update={"tree_engine": args.tree_engine})})
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

    tmp = Path(tempfile.mkdtemp(prefix="strata-bench-"))
    try:
        features_file = tmp / "features.parquet"
        features.to_parquet(features_file, index=False)
        print(f"[{load_line()}]")
        compiled_vs_lightgbm(bundle, features)
        print(f"[{load_line()}]")
        raw, raw_parts = raw_lightgbm(bundle, features)
        print(_line("raw predict", raw, len(features), ", ".join(f"{k} {v:.2f}s" for k, v in raw_parts.items())))

        scorer = Scorer(bundle, config, model_name="bench", model_version="1")
        took, summary = batch(scorer, features_file, tmp / "out", args.budget)
        size = sum(f.stat().st_size for f in (tmp / "out").iterdir()) / 1e6
        print(_line("batch scoring", took, len(features), f"{summary.n_chunks} part(s), {size:,.0f} MB, "
                    f"reasons: {config.scoring.reason_method}, trees: {config.scoring.tree_engine}, pipeline: "
                    f"{config.scoring.pipeline}; = strata score --no-online-store; other processes meanwhile: "
                    f"{took.others:.1f}s cpu"))
        print(f"[{load_line()}]")
        for what in ("wall", "cpu"):
            b, r = getattr(took, what), getattr(raw, what)
            print(f"[{what}] batch / raw predict: {b / r:6.2f}x (target 1.5x); batch time beyond raw predict: "
                  f"{b - r:8.2f}s")
        if args.compare_serial:
            serial_config = config.model_copy(
                update={"scoring": config.scoring.model_copy(update={"pipeline": not config.scoring.pipeline})})
            serial_scorer = Scorer(bundle, serial_config, model_name="bench", model_version="1")
            took_serial, _ = batch(serial_scorer, features_file, tmp / "out-serial", args.budget)
            label = "batch, pipelined" if serial_config.scoring.pipeline else "batch, 1 at a time"
            print(_line(label, took_serial, len(features),
                        f"cpu {took_serial.cpu / raw.cpu:5.2f}x, wall {took_serial.wall / raw.wall:5.2f}x raw "
                        f"predict; wall / cpu {took_serial.wall / took_serial.cpu:4.2f} (batch above: "
                        f"{took.wall / took.cpu:4.2f}); other processes meanwhile: {took_serial.others:.1f}s cpu"))
            print(f"same output as the batch above: {same_output(tmp / 'out', tmp / 'out-serial')}")
            shutil.rmtree(tmp / "out-serial")
            print(f"[{load_line()}]")
        if not args.skip_online_store:
            with_store, _ = batch(scorer, features_file, tmp / "out-store", args.budget, store=tmp / "online.db")
            print(_line("batch + online store", with_store, len(features),
                        f"{(tmp / 'online.db').stat().st_size / 1e6:,.0f} MB store; = strata score (default)"))
            print(f"[cpu] batch + online store / raw predict: {with_store.cpu / raw.cpu:6.2f}x; the online store "
                  f"alone: {with_store.cpu - took.cpu:8.2f}s cpu")
        else:
            print("online store skipped (--skip-online-store): strata score writes it by default")
        print(f"[{load_line()}]")
        if args.shap_users > 0:
            compare_reason_methods(bundle, config, features.head(args.shap_users), tmp, args.budget)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
