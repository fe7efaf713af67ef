"""Benchmark of the Spark path against the embedded path on the same data and machine, in the same run.

One synthetic data set (``--users`` users, written as CSV or Parquet with ``--input-format``) and one
model bundle (trained with the production code on ``--train-users`` users, or loaded with
``--bundle``) are prepared once. Then every configuration runs in a fresh subprocess (so each Spark
start-up is a cold JVM start, and thread limits apply from the start), timing the same three stages:

* ``validation``: reading and validating the input files (pandas ``load_dataset`` / ``load_dataset_spark``);
* ``features``: the feature table as of ``--as-of`` (DuckDB / the same SQL on Spark, materialised);
* ``scoring``: ``Scorer.score_features`` on every user (in process / per partition with ``mapInPandas``).

Configurations: embedded with 1 and 2 threads (DuckDB ``threads``, ``OMP_NUM_THREADS`` for LightGBM),
and Spark ``local[1]`` and ``local[2]`` (plus any ``--masters``). Spark start-up (session creation and a
first trivial job) is reported separately. Every stage reports wall seconds and CPU seconds of the
whole process tree (the JVM and the Python workers included, read from ``/proc``), so figures stay
comparable when other jobs share the machine: rows per second per core (wall) and rows per CPU
second. The speed-up of 2 over 1 thread is printed for each engine. Usage::

    python benchmarks/bench_spark.py --users 50000 --skip-scoring
    python benchmarks/bench_spark.py --users 50000 --skip-scoring --input-format parquet
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


def _tree_cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (default: this one) and its descendants.

    Living descendants are read from ``/proc``; finished ones are counted through their parents'
    ``cutime``/``cstime`` once reaped. Returns NaN where ``/proc`` is unavailable.
    """
    pid = os.getpid() if pid is None else pid
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    try:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = fields
            children.setdefault(int(fields[1]), []).append(int(entry))
    except OSError:
        return float("nan")
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        f = stats.get(p)
        if f is None:
            continue
        # fields after the command: state ppid ... utime(11) stime(12) cutime(13) cstime(14)
        total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        todo.extend(children.get(p, []))
    return total / tick


class _Stage:
    """Wall and CPU seconds of one stage, stored into ``out[name]`` and ``out[name + '_cpu']``."""

    def __init__(self, out: dict[str, Any], name: str) -> None:
        self.out, self.name = out, name

    def __enter__(self) -> _Stage:
        self.t, self.c = time.perf_counter(), _tree_cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.out[self.name] = time.perf_counter() - self.t
        self.out[self.name + "_cpu"] = _tree_cpu_seconds() - self.c


def run_embedded(data_dir: Path, bundle_dir: Path | None, as_of: pd.Timestamp, threads: int) -> dict[str, Any]:
    """Stage timings (seconds) of the embedded path with ``threads`` threads."""
    from features.config import StrataConfig
    from features.pipeline import DuckDBEngine
    from features.validation import load_dataset

    config = StrataConfig()
    out: dict[str, Any] = {}
    with _Stage(out, "validation"):
        dataset, report = load_dataset(data_dir, config=config, now=NOW)
    out["rows_in"] = report.rows_in
    with _Stage(out, "features"), DuckDBEngine(dataset, threads=threads) as engine:
        features = engine.features(as_of, config)
    out["users"] = len(features)
    if bundle_dir is not None:
        from serving.scorer import Scorer
        from training.bundle import ModelBundle

        scorer = Scorer(ModelBundle.load(bundle_dir), config, model_name="bench", model_version="1")
        with _Stage(out, "scoring"):
            scores = scorer.score_features(features)
        assert len(scores) == len(features)
    return out


def run_spark(data_dir: Path, bundle_dir: Path | None, as_of: pd.Timestamp, master: str) -> dict[str, Any]:
    """Stage timings (seconds) of the Spark path on ``master``, start-up included separately."""
    from pyspark import StorageLevel

    from features.config import StrataConfig
    from features.spark.feature_sql import build_features_spark
    from features.spark.session import spark_session
    from features.spark.validation import load_dataset_spark

    config = StrataConfig()  # the default [spark] conf: shuffle partitions follow the local cores
    out: dict[str, Any] = {}
    with _Stage(out, "start-up"):
        spark = spark_session(config.spark, master=master, app_name="strata-bench")
        spark.range(1).count()
    out["shuffle_partitions"] = spark.conf.get("spark.sql.shuffle.partitions")
    with _Stage(out, "validation"):
        dataset, report = load_dataset_spark(spark, data_dir, config=config, now=NOW)  # counts are eager
    out["rows_in"] = report.rows_in
    out["input_partitions"] = {name: frame.rdd.getNumPartitions() for name, frame in dataset.tables().items()}
    with _Stage(out, "features"):
        features = build_features_spark(spark, dataset, as_of, config).persist(StorageLevel.MEMORY_AND_DISK)
        out["users"] = features.count()
    if bundle_dir is not None:
        from serving.scorer import Scorer
        from serving.spark_scoring import score_features_spark
        from training.bundle import ModelBundle

        scorer = Scorer(ModelBundle.load(bundle_dir), config, model_name="bench", model_version="1")
        with _Stage(out, "scoring"):
            score_features_spark(features, scorer).write.format("noop").mode("overwrite").save()
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
    write_dataset(generate_dataset(args.users, END, seed=args.seed), data_dir, args.input_format)
    print(f"data: {args.users:,} users written as {args.input_format} in {time.perf_counter() - t:.1f}s", flush=True)
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
    parser.add_argument("--input-format", choices=("csv", "parquet"), default="csv",
                        help="Format of the input files (Parquet is the usual format on a cluster).")
    parser.add_argument("--no-pin", action="store_true",
                        help="Do not pin each configuration to as many CPUs as it has threads (taskset). Without "
                             "pinning, a local[1] JVM still spreads JIT compilation and GC over every core.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--bundle-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return

    tmp = Path(tempfile.mkdtemp(prefix="strata-bench-spark-"))
    load_start = os.getloadavg()
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
            pinned = not args.no_pin and shutil.which("taskset") is not None
            if pinned:
                cores = min(_cores(kind, arg), os.cpu_count() or 1)
                cmd = ["taskset", "-c", ",".join(str(i) for i in range(cores)), *cmd]
            t = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                print(f"{label}: failed (exit {proc.returncode})\n{proc.stderr[-2000:]}", flush=True)
                continue
            results[label] = json.loads(lines[-1][len("RESULT "):])
            results[label]["cores"] = _cores(kind, arg)
            results[label]["process"] = time.perf_counter() - t
            results[label]["pinned"] = pinned
            print(f"{label}: done in {results[label]['process']:.1f}s", flush=True)
        _print_table(results, args.input_format, load_start)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _print_table(results: dict[str, dict[str, Any]], input_format: str, load_start: tuple[float, float, float]) -> None:
    if not results:
        return
    labels = list(results)
    first = next(iter(results.values()))
    rows_in, users = first["rows_in"], first["users"]
    load_end = os.getloadavg()
    print(f"\n{rows_in:,} input rows ({input_format}), {users:,} users on {os.cpu_count()} cores; load average "
          f"(1 min) {load_start[0]:.1f} at start, {load_end[0]:.1f} at end: wall times include other jobs' "
          f"contention, CPU seconds much less so")
    width = max(18, *(len(label) + 2 for label in labels))
    print(f"{'':<30}" + "".join(f"{label:>{width}}" for label in labels))

    def line(name: str, values: list[str]) -> None:
        print(f"{name:<30}" + "".join(f"{v:>{width}}" for v in values))

    def seconds(key: str) -> list[str]:
        return [f"{r[key]:.2f}" if key in r else "-" for r in results.values()]

    line("Spark start-up (s)", seconds("start-up"))
    line("  CPU s", seconds("start-up_cpu"))
    stages = [s for s in ("validation", "features", "scoring") if any(s in r for r in results.values())]
    for stage in stages:
        unit, n = ("users", users) if stage == "scoring" else ("rows", rows_in)
        line(f"{stage} (s)", seconds(stage))
        line("  CPU s", seconds(f"{stage}_cpu"))
        line(f"  {unit}/s per core", [_fmt_rate(n, r.get(stage), r["cores"]) for r in results.values()])
        line(f"  {unit} per CPU s", [_fmt_rate(n, r.get(f"{stage}_cpu"), 1) for r in results.values()])
    totals = [sum(r.get(k, 0.0) for k in stages) for r in results.values()]
    cpus = [sum(r.get(f"{k}_cpu", 0.0) for k in stages) for r in results.values()]
    line("total without start-up (s)", [f"{t:.2f}" for t in totals])
    line("  CPU s", [f"{c:.2f}" for c in cpus])
    line("  input rows/s per core", [_fmt_rate(rows_in, t, r["cores"]) for t, r in zip(totals, results.values(), strict=True)])
    line("  input rows per CPU s", [_fmt_rate(rows_in, c, 1) for c in cpus])
    base = totals[0]
    line(f"  time vs {labels[0]}", [f"{t / base:.2f}x" for t in totals])
    # Scaling: each engine's 1-core time over its 2-core time (2.00x is perfect scaling).
    for kind in ("embedded", "spark"):
        by_cores = {r["cores"]: t for (label, r), t in zip(results.items(), totals, strict=True) if label.startswith(kind)}
        if 1 in by_cores and 2 in by_cores:
            print(f"{kind}: 1 -> 2 cores speed-up {by_cores[1] / by_cores[2]:.2f}x (wall, validation + features"
                  + (" + scoring" if "scoring" in stages else "") + ")")
    if any(r.get("pinned") for r in results.values()):
        print("each configuration ran pinned (taskset) to as many CPUs as it has threads; --no-pin to let it spread")
    for label, r in results.items():
        if "input_partitions" in r:
            parts = ", ".join(f"{k} {v}" for k, v in r["input_partitions"].items())
            print(f"{label}: input partitions {parts}; spark.sql.shuffle.partitions {r['shuffle_partitions']}")


if __name__ == "__main__":
    main()
