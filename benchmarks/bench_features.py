"""Benchmark of the point-in-time feature pipeline against baselines measured in the same run.

All methods start from the same typed Parquet files (generated once into a cache directory, at the
issue's volume: about 20 orders and 60 events per user) and each run is a fresh process, so that its
peak resident memory is its own (not the generator's, not another method's). Methods:

* ``full``: every feature, :meth:`features.pipeline.DuckDBEngine.from_parquet` then ``features()``
  (duplicate-order check, the whole feature query, conversion to the pandas contract);
* ``full_unique``: the same with ``orders_unique=True``, the path of validated input (validation
  rejects duplicate order ids, so ``strata features`` skips the duplicate check): the feature work
  alone, like for like with ``bare``, which skips the check too;
* ``bare``: the same engine and views, one pass per table computing only count, sum and max per user
  (orders) and count, max per user (events), joined: the floor of any DuckDB feature set;
* ``rfm``: the RFM family only, through the same machinery and SQL definitions (``families=["rfm"]``);
* ``pandas``: the RFM subset in pandas as it is usually written (one groupby per quantity and window,
  joined), after ``pd.read_parquet`` of the columns it needs;
* ``pandas_vec``: the same subset in vectorised pandas (one groupby over per-row window columns);
* ``frames`` (with ``--frames``): every feature from pandas frames, the path of ``strata features``
  after validation (:func:`features.pipeline.build_features`); the frames are read before the clock
  starts, so its input differs from the others (reported apart);
* ``command`` (with ``--command``): the whole ``strata features --data DIR --as-of ... --out ...`` command in a
  process of its own: interpreter start, reading and validating every input row (each accepted or rejected with
  a reason), the features of the accepted rows, writing the table. Its CPU time and peak RSS are the child's
  (``os.wait4``);
* with ``--stages``, where the time of ``full_unique`` goes: each aggregate stage of the feature query run
  on its own (:func:`features.pipeline.stage_query`: the orders pass, the paid-orders window, the events
  pass; each a per-user aggregate over one source, fetched into Arrow), next to the bare aggregate of
  that source alone (``bare_orders``: count, sum and max per user; ``bare_events``: count and max).

Runs are interleaved over ``--repeat`` rounds (other load hits all methods alike); best wall time and
best process CPU time (all threads) are reported, with the peak RSS of the process (``ru_maxrss``) and
input rows per second (rows of the tables the method reads). Usage::

    python benchmarks/bench_features.py --users 1000000          # ~80M rows, cached in --cache
    python benchmarks/bench_features.py --users 10000000 --skip-pandas   # generated in chunks
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

END = pd.Timestamp("2024-06-30", tz="UTC")
AS_OF = pd.Timestamp("2024-03-31", tz="UTC")
#: Generator rates giving about 20 orders and 60 events per user (the issue's 20M + 60M at 1M users).
ORDER_RATE, EVENT_RATE = 5.4, 1.55
PANDAS_COLUMNS = ["user_id", "order_id", "ordered_at", "amount", "status"]
METHODS = ("full", "full_unique", "bare", "rfm", "pandas", "pandas_vec")
STAGE_METHODS = ("stage_orders", "stage_paid_orders", "stage_events", "bare_orders", "bare_events")
LABELS = {
    "full": "full feature set (DuckDB)",
    "full_unique": "full set, orders known unique",
    "bare": "bare aggregate (DuckDB)",
    "rfm": "RFM subset (DuckDB, same SQL)",
    "pandas": "pandas RFM, straightforward",
    "pandas_vec": "pandas RFM, vectorised",
    "frames": "full set from pandas frames",
    "command": "strata features (whole command)",
    "stage_orders": "stage: orders pass",
    "stage_paid_orders": "stage: paid-orders window",
    "stage_events": "stage: events pass",
    "bare_orders": "bare aggregate, orders only",
    "bare_events": "bare aggregate, events only",
}


# --------------------------------------------------------------------------- data


def _data_dir(cache: Path, users: int, seed: int, order_rate: float, event_rate: float) -> Path:
    return cache / f"u{users}_s{seed}_o{order_rate:g}_e{event_rate:g}"


def _renumber(ids: pd.Series, prefix: str, offset: int, width: int) -> np.ndarray:
    """``u0000123`` -> ``u{123 + offset}`` zero-padded to ``width`` digits (ids unique across chunks)."""
    codes, uniques = pd.factorize(ids, sort=False)
    numbers = np.fromiter((int(s[1:]) for s in uniques), dtype=np.int64, count=len(uniques)) + offset
    names = np.char.add(prefix, np.char.zfill(numbers.astype(f"U{width}"), width)).astype(object)
    return names[codes]


def generate(out: Path, users: int, seed: int, order_rate: float, event_rate: float, chunk: int) -> dict[str, float]:
    """Generate the data set into ``out`` as Parquet, ``chunk`` users at a time; return its statistics.

    One chunk is exactly :func:`features.demo_data.generate_dataset`; with several, chunk ``k`` uses seed
    ``seed + k`` and its user and order ids are renumbered to stay unique, and each table is one Parquet
    file of row groups (time-sorted within a chunk only). Peak memory is that of one chunk.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from features.demo_data import generate_dataset

    t0, c0 = time.perf_counter(), time.process_time()
    out.mkdir(parents=True, exist_ok=True)
    writers: dict[str, pq.ParquetWriter] = {}
    rows = {"orders": 0, "events": 0, "users": 0}
    width = max(7, len(str(users - 1)))
    for k, first in enumerate(range(0, users, chunk)):
        n = min(chunk, users - first)
        ds = generate_dataset(n, END, seed=seed + k, order_rate=order_rate, event_rate=event_rate)
        tables = {"orders": ds.orders, "events": ds.events, "users": ds.users}
        if users > chunk:
            for df in tables.values():
                assert df is not None
                df["user_id"] = _renumber(df["user_id"], "u", first, width)
            ds.orders["order_id"] = _renumber(ds.orders["order_id"], "o", rows["orders"], 10)
        for name, df in tables.items():
            assert df is not None
            table = pa.Table.from_pandas(df, preserve_index=False)
            if name not in writers:
                writers[name] = pq.ParquetWriter(out / f"{name}.parquet", table.schema)
            writers[name].write_table(table)
            rows[name] += len(df)
        del ds, tables
        print(f"  generated users {first:,}..{first + n - 1:,} ({time.perf_counter() - t0:.0f}s)", flush=True)
    for w in writers.values():
        w.close()
    stats = {**{f"rows_{k}": float(v) for k, v in rows.items()}, "seconds": time.perf_counter() - t0,
             "cpu_seconds": time.process_time() - c0,
             "peak_rss_bytes": float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)}
    (out / "generated.json").write_text(json.dumps(stats))
    return stats


# --------------------------------------------------------------------------- methods


def bare_table_sql(table: str, as_of: pd.Timestamp) -> str:
    """The part of :func:`bare_sql` over one table: count, (sum,) max per user at or before ``as_of``."""
    from features.pipeline import timestamp_literal

    cut = timestamp_literal(as_of)
    if table == "orders":
        return (f"SELECT user_id, COUNT(*) AS n_orders, SUM(amount) AS spend, MAX(ordered_at) AS last_order "
                f"FROM orders WHERE ordered_at <= {cut} GROUP BY user_id")
    return (f"SELECT user_id, COUNT(*) AS n_events, MAX(occurred_at) AS last_event FROM events "
            f"WHERE occurred_at <= {cut} GROUP BY user_id")


def bare_sql(has_events: bool, as_of: pd.Timestamp) -> str:
    """Count, sum and max per user over orders and events at or before ``as_of`` (one pass each), joined."""
    events = bare_table_sql("events", as_of)
    if not has_events:
        events = "SELECT CAST(NULL AS VARCHAR) AS user_id, 0 AS n_events, NULL AS last_event WHERE 1 = 0"
    return f"WITH o AS ({bare_table_sql('orders', as_of)}), e AS ({events}) SELECT * FROM o FULL OUTER JOIN e USING (user_id)"


def pandas_rfm_straightforward(orders: pd.DataFrame, as_of: pd.Timestamp, windows: list[int]) -> pd.DataFrame:
    """The RFM subset as it is commonly written in pandas: one groupby per quantity and window, joined."""
    o = orders[orders["ordered_at"] <= as_of]
    o = o.assign(signed=np.where(o["status"] == "paid", o["amount"], -o["amount"]))
    paid = o[o["status"] == "paid"]
    out = paid.groupby("user_id").agg(
        last=("ordered_at", "max"), first=("ordered_at", "min"), orders_total=("order_id", "count"),
        avg_order_value=("amount", "mean"), max_order_value=("amount", "max"),
    )
    out["days_since_last_order"] = (as_of - out.pop("last")).dt.total_seconds() / 86400
    out["days_since_first_order"] = (as_of - out.pop("first")).dt.total_seconds() / 86400
    first_day = paid.assign(day=paid["ordered_at"].dt.floor("D"))
    first_day = first_day[first_day["day"] == first_day.groupby("user_id")["day"].transform("min")]
    out["first_order_value"] = first_day.groupby("user_id")["amount"].sum()
    out = out.join(o.groupby("user_id")["signed"].sum().rename("spend_total"), how="outer")
    for w in windows:
        recent = o[o["ordered_at"] > as_of - pd.Timedelta(days=w)]
        out = out.join(recent[recent["status"] == "paid"].groupby("user_id").size().rename(f"orders_{w}d"), how="left")
        out = out.join(recent.groupby("user_id")["signed"].sum().rename(f"spend_{w}d"), how="left")
    return out.fillna({c: 0 for c in out.columns if c.startswith(("orders_", "spend_"))}).sort_index()


def pandas_rfm_vectorised(orders: pd.DataFrame, as_of: pd.Timestamp, windows: list[int]) -> pd.DataFrame:
    """The RFM subset in vectorised pandas: filter, then one ``groupby().agg`` over per-row window columns."""
    o = orders[orders["ordered_at"] <= as_of]
    paid = (o["status"] == "paid").to_numpy()
    amount = o["amount"].to_numpy()
    age = (as_of - o["ordered_at"]).dt.total_seconds().to_numpy() / 86400.0
    day = np.floor((o["ordered_at"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy() / 86400.0)
    cols: dict[str, np.ndarray] = {
        "user_id": o["user_id"].to_numpy(),
        "paid": paid.astype(float),
        "paid_age": np.where(paid, age, np.nan),
        "paid_amount": np.where(paid, amount, np.nan),
        "paid_day": np.where(paid, day, np.nan),
        "signed": np.where(paid, amount, -amount),
    }
    for w in windows:
        cols[f"orders_{w}d"] = (paid & (age < w)).astype(float)
        cols[f"spend_{w}d"] = np.where(age < w, cols["signed"], 0.0)
    frame = pd.DataFrame(cols)
    agg = {
        "paid": "sum", "signed": "sum", "paid_amount": ["mean", "max"], "paid_age": ["min", "max"],
        **{f"orders_{w}d": "sum" for w in windows}, **{f"spend_{w}d": "sum" for w in windows},
    }
    out = frame.groupby("user_id", sort=True).agg(agg)
    first_day = frame.groupby("user_id", sort=True)["paid_day"].transform("min")
    on_first = frame["paid_day"].to_numpy() == first_day.to_numpy()
    out["first_order_value"] = frame["paid_amount"].where(on_first).groupby(frame["user_id"], sort=True).sum(min_count=1)
    return out


def run_method(method: str, data: Path, as_of: pd.Timestamp) -> tuple[int, int]:
    """Run one method on the Parquet files in ``data``; return (input rows read, output rows)."""
    import pyarrow.parquet as pq

    from features.config import StrataConfig
    from features.pipeline import DuckDBEngine

    config = StrataConfig()
    paths = {name: data / f"{name}.parquet" for name in ("orders", "events", "users")}
    n = {name: pq.ParquetFile(p).metadata.num_rows for name, p in paths.items()}
    windows = list(config.features.windows_days)
    if method == "full":
        with DuckDBEngine.from_parquet(paths["orders"], paths["events"], paths["users"]) as engine:
            return sum(n.values()), len(engine.features(as_of, config))
    if method == "full_unique":
        with DuckDBEngine.from_parquet(paths["orders"], paths["events"], paths["users"], orders_unique=True) as engine:
            return sum(n.values()), len(engine.features(as_of, config))
    if method == "bare":
        with DuckDBEngine.from_parquet(paths["orders"], paths["events"], orders_unique=True) as engine:
            return n["orders"] + n["events"], len(engine.query(bare_sql(engine.sources.events is not None, as_of)))
    if method.startswith("stage_"):
        from features.pipeline import stage_query

        stage = method.removeprefix("stage_")
        with DuckDBEngine.from_parquet(paths["orders"], paths["events"], paths["users"], orders_unique=True) as engine:
            sql = stage_query(config, as_of, engine.sources, stage, dedupe_orders=False)
            rows = n["events"] if stage == "events" else n["orders"]
            return rows, engine.con.sql(sql).to_arrow_table().num_rows
    if method in ("bare_orders", "bare_events"):
        table = method.removeprefix("bare_")
        with DuckDBEngine.from_parquet(paths["orders"], paths["events"], orders_unique=True) as engine:
            return n[table], engine.con.sql(bare_table_sql(table, as_of)).to_arrow_table().num_rows
    if method == "rfm":
        with DuckDBEngine.from_parquet(paths["orders"], paths["events"], paths["users"]) as engine:
            return n["orders"], len(engine.features(as_of, config, families=["rfm"]))
    if method in ("pandas", "pandas_vec"):
        orders = pd.read_parquet(paths["orders"], columns=PANDAS_COLUMNS)
        fn = pandas_rfm_straightforward if method == "pandas" else pandas_rfm_vectorised
        return n["orders"], len(fn(orders, as_of, windows))
    raise ValueError(f"unknown method {method!r}")


def _child(method: str, data: Path) -> None:
    """Measure one method in this (fresh) process and print one JSON line."""
    if method == "frames":
        from features.config import StrataConfig
        from features.dataset import Dataset
        from features.pipeline import FEATURE_INPUT_COLUMNS, build_features

        frames = {name: pd.read_parquet(data / f"{name}.parquet", columns=list(FEATURE_INPUT_COLUMNS[name]))
                  for name in ("orders", "events", "users")}
        ds = Dataset(**frames)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        t0, c0 = time.perf_counter(), time.process_time()
        rows_out = len(build_features(ds, AS_OF, StrataConfig()))
        rows_in = sum(len(f) for f in frames.values())
    else:
        import duckdb  # noqa: F401  (imports are not part of the measurement)

        import features.pipeline  # noqa: F401

        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        t0, c0 = time.perf_counter(), time.process_time()
        rows_in, rows_out = run_method(method, data, AS_OF)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"wall": wall, "cpu": cpu, "peak": peak, "rss_before": rss_before, "rows_in": rows_in,
                      "rows_out": rows_out}))


# --------------------------------------------------------------------------- driver


@dataclass
class Result:
    method: str
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    peak: list[int] = field(default_factory=list)
    rss_before: int = 0
    rows_in: int = 0
    rows_out: int = 0


def _measure_command(result: Result, data: Path) -> None:
    """Run ``strata features`` on ``data`` as a child process; its wall time, CPU time and peak RSS."""
    import tempfile

    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="strata-bench-") as tmp:
        out = Path(tmp) / "features.parquet"
        cmd = [sys.executable, "-m", "strata_cli.main", "features", "--data", str(data), "--as-of", AS_OF.isoformat(),
               "--out", str(out)]
        log = Path(tmp) / "stderr.txt"
        with log.open("wb") as err:  # a file, not a pipe: the child never blocks on a full pipe
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=tmp)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"strata features failed:\n{log.read_text(errors='replace')[-3000:]}")
        result.rows_out = pq.ParquetFile(out).metadata.num_rows
    result.wall.append(wall)
    result.cpu.append(usage.ru_utime + usage.ru_stime)
    result.peak.append(usage.ru_maxrss * 1024)
    result.rows_in = sum(pq.ParquetFile(data / f"{name}.parquet").metadata.num_rows for name in ("orders", "events", "users"))


def _measure(result: Result, data: Path) -> None:
    if result.method == "command":
        _measure_command(result, data)
        return
    cmd = [sys.executable, __file__, "--child", result.method, "--data", str(data)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{result.method} failed:\n{proc.stderr[-3000:]}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    result.wall.append(got["wall"])
    result.cpu.append(got["cpu"])
    result.peak.append(got["peak"])
    result.rss_before, result.rows_in, result.rows_out = got["rss_before"], got["rows_in"], got["rows_out"]


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000, help="Number of users to generate.")
    parser.add_argument("--order-rate", type=float, default=ORDER_RATE, help="Generator order_rate (5.4: ~20 orders/user).")
    parser.add_argument("--event-rate", type=float, default=EVENT_RATE, help="Generator event_rate (1.55: ~60 events/user).")
    parser.add_argument("--seed", type=int, default=42, help="Seed of the generated data.")
    parser.add_argument("--chunk", type=int, default=500_000, help="Users generated at a time (bounds generator memory).")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("STRATA_BENCH_CACHE", "/tmp/strata-bench")),
                        help="Directory of the generated Parquet data (reused across runs).")
    parser.add_argument("--repeat", type=int, default=3, help="Rounds of interleaved runs (best is reported).")
    parser.add_argument("--skip-pandas", action="store_true", help="Do not run the pandas baselines (e.g. at 10M users).")
    parser.add_argument("--frames", action="store_true", help="Also run the full set from pandas frames (product path).")
    parser.add_argument("--command", action="store_true",
                        help="Also run the whole `strata features` command (validation of every row included).")
    parser.add_argument("--stages", action="store_true",
                        help="Also run each aggregate stage of the feature query alone, and the bare aggregate of each "
                             "source alone (where the time goes).")
    parser.add_argument("--child", choices=[*METHODS, *STAGE_METHODS, "frames"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.data)
        return
    if args.generate:
        generate(args.generate, args.users, args.seed, args.order_rate, args.event_rate, args.chunk)
        return

    data = _data_dir(args.cache, args.users, args.seed, args.order_rate, args.event_rate)
    stats_file = data / "generated.json"
    if not stats_file.exists():
        print(f"generating {args.users:,} users into {data} (once; reused by later runs)", flush=True)
        # in a child process, so that the generator's memory is not held by this driver
        cmd = [sys.executable, __file__, "--generate", str(data), "--users", str(args.users), "--seed", str(args.seed),
               "--order-rate", str(args.order_rate), "--event-rate", str(args.event_rate), "--chunk", str(args.chunk)]
        proc = subprocess.run(cmd, check=False)
        if proc.returncode != 0:
            raise SystemExit("data generation failed")
    stats = json.loads(stats_file.read_text())
    n_o, n_e, n_u = int(stats["rows_orders"]), int(stats["rows_events"]), int(stats["rows_users"])
    size = sum(p.stat().st_size for p in data.glob("*.parquet"))
    print(f"data: {n_u:,} users, {n_o:,} orders ({n_o / n_u:.1f}/user), {n_e:,} events ({n_e / n_u:.1f}/user), "
          f"{size / 2**30:.2f} GiB Parquet in {data}")
    print(f"generation (once): {stats['seconds']:.0f} s wall, {stats['cpu_seconds']:.0f} s CPU, "
          f"peak RSS {stats['peak_rss_bytes'] / 2**30:.2f} GiB (chunks of {args.chunk:,} users)")
    print(f"as_of {AS_OF.date()}; every run is a fresh process reading the same Parquet files; "
          f"{args.repeat} interleaved rounds; before: {_load()}", flush=True)

    methods = [m for m in METHODS if not (args.skip_pandas and m.startswith("pandas"))]
    if args.frames:
        methods.append("frames")
    if args.command:
        methods.append("command")
    if args.stages:
        methods += STAGE_METHODS
    results = {m: Result(m) for m in methods}
    for r in range(args.repeat):
        for m in methods:
            _measure(results[m], data)
            print(f"  round {r + 1}: {LABELS[m]:32s} {results[m].wall[-1]:7.2f} s wall {results[m].cpu[-1]:7.2f} s CPU",
                  flush=True)
    print(f"after: {_load()}")

    best_wall = {m: min(res.wall) for m, res in results.items()}
    median_wall = {m: float(np.median(res.wall)) for m, res in results.items()}
    best_cpu = {m: min(res.cpu) for m, res in results.items()}
    header = (f"{'method':32s} {'best s':>7s} {'median s':>9s} {'CPU s':>7s} {'peak RSS GiB':>13s} "
              f"{'rows read':>13s} {'rows/s':>12s} {'users out':>10s}")
    print(header)
    print("-" * len(header))
    for m, res in results.items():
        print(f"{LABELS[m]:32s} {best_wall[m]:7.2f} {median_wall[m]:9.2f} {best_cpu[m]:7.2f} "
              f"{max(res.peak) / 2**30:13.2f} {res.rows_in:13,d} {res.rows_in / best_wall[m]:12,.0f} {res.rows_out:10,d}")
    print(f"(peak RSS is the process's ru_maxrss, including ~{results['full'].rss_before / 2**30:.2f} GiB of "
          "interpreter and imports; rows/s are over the rows of the tables each method reads)")

    def ratio(num: str, den: str, label: str, target: str) -> None:
        # best against best, and median against median: a short baseline makes the ratio noisy
        print(f"{label}: {best_wall[num] / best_wall[den]:.2f}x wall, {best_cpu[num] / best_cpu[den]:.2f}x CPU, "
              f"{median_wall[num] / median_wall[den]:.2f}x of medians {target}")

    ratio("full", "bare", "full feature set / bare aggregate", "(target <= 4x)")
    ratio("full_unique", "bare", "full set, orders known unique / bare aggregate (like for like)", "(target <= 4x)")
    if not args.skip_pandas:
        ratio("pandas", "rfm", "pandas straightforward RFM / DuckDB RFM subset (like for like)", "(target >= 5x)")
        ratio("pandas_vec", "rfm", "pandas vectorised RFM / DuckDB RFM subset", "")
        ratio("pandas", "full", "pandas straightforward RFM / full feature set (RFM only vs all features)", "")
    if args.frames:
        ratio("frames", "full", "full set from pandas frames / from Parquet", "")
    if args.command:
        ratio("command", "full_unique", "whole strata features command / its feature query (from Parquet)", "")
        print(f"whole strata features command: peak RSS {max(results['command'].peak) / 2**30:.2f} GiB "
              f"(target < 8 GiB at 1M users), {results['command'].rows_in / best_wall['command']:,.0f} input rows/s "
              "validated and turned into features")
    if args.stages:
        ratio("stage_orders", "bare_orders", "orders pass / bare aggregate of the orders", "")
        ratio("stage_paid_orders", "bare_orders", "paid-orders window / bare aggregate of the orders", "")
        ratio("stage_events", "bare_events", "events pass / bare aggregate of the events", "")
        parts = sum(best_wall[m] for m in ("stage_orders", "stage_paid_orders", "stage_events"))
        print(f"the three stages alone: {parts:.2f} s wall in all, against {best_wall['full_unique']:.2f} s for the "
              "whole query (the rest: users, the join, derived features, sorting, conversion to pandas; minus what "
              "the stages share in one query)")


if __name__ == "__main__":
    main()
