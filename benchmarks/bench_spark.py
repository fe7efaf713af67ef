"""Benchmark of the Spark path against the embedded path on the same data and machine, in the same run.

One synthetic data set (``--users`` users, CSV files) and one model bundle (trained with the production
code on ``--train-users`` users, or loaded with ``--bundle``) are prepared once. Then every
configuration runs in a fresh subprocess (so each Spark start-up is a cold JVM start, and thread
limits apply from the start), timing the same three stages:

* ``validation``: reading and validating the CSV files (pandas ``load_dataset`` / ``load_dataset_spark``);
* ``features``: the feature table as of ``--as-of`` (DuckDB / the same SQL on Spark, materialised);
* ``scoring``: ``Scorer.score_features`` on every user (in process / per partition with ``mapInPandas``).

Configurations: embedded with 1 and 2 threads (DuckDB ``threads``, ``OMP_NUM_THREADS`` for LightGBM),
and Spark ``local[1]`` and ``local[2]`` (plus any ``--masters``). Spark start-up (session creation and a
first trivial job) is reported separately. Throughput is per core: rows per second divided by the
cores the configuration may use. Usage::

    python benchmarks/bench_spark.py --users 20000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

END = pd.Timestamp("2024-12-31", tz="UTC")
NOW = pd.Timestamp("2025-01-01", tz="UTC")


def _cores(kind: str, arg: str) -> int:
    if kind == "embedded":
        return int(arg)
    inside = arg[arg.find("[") + 1: arg.find("]")] if "[" in arg else "1"
    return (os.cpu_count() or 1) if inside == "*" else int(inside)


def run_embedded(data_dir: Path, bundle_dir: Path | None, as_of: pd.Timestamp, threads: int) -> dict[str, Any]:
    """Stage timings (seconds) of the embedded path with ``threads`` threads."""
    from features.config import StrataConfig
    from features.pipeline import DuckDBEngine
    from features.validation import load_dataset

    config = StrataConfig()
    out: dict[str, Any] = {}
    t = time.perf_counter()
    dataset, report = load_dataset(data_dir, config=config, now=NOW)
    out["validation"] = time.perf_counter() - t
    out["rows_in"] = report.rows_in
    t = time.perf_counter()
    with DuckDBEngine(dataset, threads=threads) as engine:
        features = engine.features(as_of, config)
    out["features"] = time.perf_counter() - t
    out["users"] = len(features)
    if bundle_dir is not None:
        from serving.scorer import Scorer
        from training.bundle import ModelBundle

        scorer = Scorer(ModelBundle.load(bundle_dir), config, model_name="bench", model_version="1")
        t = time.perf_counter()
        scores = scorer.score_features(features)
        out["scoring"] = time.perf_counter() - t
        assert len(scores) == len(features)
    return out


def run_spark(data_dir: Path, bundle_dir: Path | None, as_of: pd.Timestamp, master: str) -> dict[str, Any]:
    """Stage timings (seconds) of the Spark path on ``master``, start-up included separately."""
    from pyspark import StorageLevel

    from features.config import SparkConfig, StrataConfig
    from features.spark_engine import build_features_spark, load_dataset_spark, spark_session

    config = StrataConfig()
    out: dict[str, Any] = {}
    t = time.perf_counter()
    spark = spark_session(SparkConfig(master=master, conf={"spark.sql.shuffle.partitions": str(2 * _cores("spark", master)),
                                                           "spark.ui.enabled": "false"}), app_name="strata-bench")
    spark.range(1).count()
    out["start-up"] = time.perf_counter() - t
    t = time.perf_counter()
    dataset, report = load_dataset_spark(spark, data_dir, config=config, now=NOW)  # counts are eager
    out["validation"] = time.perf_counter() - t
    out["rows_in"] = report.rows_in
    t = time.perf_counter()
    features = build_features_spark(spark, dataset, as_of, config).persist(StorageLevel.MEMORY_AND_DISK)
    out["users"] = features.count()
    out["features"] = time.perf_counter() - t
    if bundle_dir is not None:
        from serving.scorer import Scorer
        from serving.spark_scoring import score_features_spark
        from training.bundle import ModelBundle

        scorer = Scorer(ModelBundle.load(bundle_dir), config, model_name="bench", model_version="1")
        t = time.perf_counter()
        score_features_spark(features, scorer).write.format("noop").mode("overwrite").save()
        out["scoring"] = time.perf_counter() - t
    spark.stop()
    return out


def _worker(args: argparse.Namespace) -> None:
    kind, _, arg = args.worker.partition(":")
    bundle = Path(args.bundle_dir) if args.bundle_dir else None
    as_of = pd.Timestamp(args.as_of, tz="UTC")
    if kind == "embedded":
        result = run_embedded(Path(args.data_dir), bundle, as_of, int(arg))
    else:
        result = run_spark(Path(args.data_dir), bundle, as_of, arg)
    print("RESULT " + json.dumps(result), flush=True)


def _prepare(args: argparse.Namespace, tmp: Path) -> tuple[Path, Path | None]:
    from features.config import StrataConfig
    from features.demo_data import generate_dataset, write_dataset

    t = time.perf_counter()
    data_dir = tmp / "data"
    write_dataset(generate_dataset(args.users, END, seed=args.seed), data_dir, "csv")
    print(f"data: {args.users:,} users written as CSV in {time.perf_counter() - t:.1f}s", flush=True)
    if args.skip_scoring:
        return data_dir, None
    if args.bundle is not None:
        return data_dir, args.bundle
    from training.train import fit_bundle, prepare_training_data

    t = time.perf_counter()
    train = generate_dataset(args.train_users, END, seed=args.seed + 1)
    fit = fit_bundle(prepare_training_data(train, StrataConfig(), as_of=END))
    bundle_dir = fit.bundle.save(tmp / "bundle")
    print(f"bundle: trained on {args.train_users:,} users in {time.perf_counter() - t:.1f}s", flush=True)
    return data_dir, Path(bundle_dir)


def _fmt_rate(rows: float, seconds: float | None, cores: int) -> str:
    if not seconds:
        return "-"
    return f"{rows / seconds / cores:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000, help="Synthetic users in the benchmark data.")
    parser.add_argument("--train-users", type=int, default=3_000, help="Users to train the model bundle on.")
    parser.add_argument("--bundle", type=Path, default=None, help="Use this saved ModelBundle directory instead.")
    parser.add_argument("--as-of", default="2024-12-31", help="Feature cutoff (UTC date).")
    parser.add_argument("--seed", type=int, default=42, help="Seed of the synthetic data.")
    parser.add_argument("--masters", default="local[1],local[2]", help="Comma-separated Spark masters to time.")
    parser.add_argument("--threads", default="1,2", help="Comma-separated embedded thread counts to time.")
    parser.add_argument("--skip-scoring", action="store_true", help="Time validation and features only.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--bundle-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return

    tmp = Path(tempfile.mkdtemp(prefix="strata-bench-spark-"))
    try:
        data_dir, bundle_dir = _prepare(args, tmp)
        configs = [("embedded", t) for t in args.threads.split(",")] + [("spark", m) for m in args.masters.split(",")]
        results: dict[str, dict[str, Any]] = {}
        for kind, arg in configs:
            label = f"embedded {arg} thr" if kind == "embedded" else f"spark {arg}"
            env = dict(os.environ, SPARK_LOCAL_IP=os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"))
            env["OMP_NUM_THREADS"] = arg if kind == "embedded" else "1"  # Spark: one thread per task
            cmd = [sys.executable, __file__, "--worker", f"{kind}:{arg}", "--data-dir", str(data_dir),
                   "--as-of", args.as_of]
            if bundle_dir is not None:
                cmd += ["--bundle-dir", str(bundle_dir)]
            t = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                print(f"{label}: failed (exit {proc.returncode})\n{proc.stderr[-2000:]}", flush=True)
                continue
            results[label] = json.loads(lines[-1][len("RESULT "):])
            results[label]["cores"] = _cores(kind, arg)
            results[label]["process"] = time.perf_counter() - t
            print(f"{label}: done in {results[label]['process']:.1f}s", flush=True)
        _print_table(results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _print_table(results: dict[str, dict[str, Any]]) -> None:
    if not results:
        return
    labels = list(results)
    first = next(iter(results.values()))
    rows_in, users = first["rows_in"], first["users"]
    print(f"\n{rows_in:,} input rows, {users:,} users; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    width = max(18, *(len(label) + 2 for label in labels))
    print(f"{'':<28}" + "".join(f"{label:>{width}}" for label in labels))

    def line(name: str, values: list[str]) -> None:
        print(f"{name:<28}" + "".join(f"{v:>{width}}" for v in values))

    def seconds(key: str) -> list[str]:
        return [f"{r[key]:.2f}" if key in r else "-" for r in results.values()]

    line("Spark start-up (s)", seconds("start-up"))
    for stage, unit, n in (("validation", "rows", rows_in), ("features", "rows", rows_in), ("scoring", "users", users)):
        if not any(stage in r for r in results.values()):
            continue
        line(f"{stage} (s)", seconds(stage))
        line(f"  {unit}/s per core", [_fmt_rate(n, r.get(stage), r["cores"]) for r in results.values()])
    totals = [sum(r.get(k, 0.0) for k in ("validation", "features", "scoring")) for r in results.values()]
    line("total without start-up (s)", [f"{t:.2f}" for t in totals])
    line("  input rows/s per core", [_fmt_rate(rows_in, t, r["cores"]) for t, r in zip(totals, results.values(), strict=True)])
    base = totals[0]
    line(f"  time vs {labels[0]}", [f"{t / base:.2f}x" for t in totals])


if __name__ == "__main__":
    main()
