"""Benchmark of the point-in-time feature pipeline against two baselines measured in the same run.

* ``full pipeline``: :func:`features.pipeline.build_features` (Arrow conversion, DuckDB registration,
  the whole feature query, conversion to the pandas contract);
* ``bare aggregate``: the same registration and a single pass per table computing only count, sum and
  max per user (orders) and count, max per user (events), joined: the floor of any DuckDB feature set;
* ``pandas RFM``: pandas implementations of the RFM subset only (recency, tenure, counts and net
  spend in each window, average / max / first order value): "straightforward" (one groupby per
  quantity and window, joined, as it is usually written) and "vectorised" (one groupby over
  precomputed per-row window columns).

Each is run ``--repeat`` times, interleaved (so that load from other processes hits all alike); the
best wall time (and the best process CPU time, steadier on a shared machine) is reported with the
peak resident memory of the process during the run and the input
rows per second. Usage::

    python benchmarks/bench_features.py --users 200000
"""

from __future__ import annotations

import argparse
import gc
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.config import StrataConfig
from features.dataset import Dataset
from features.demo_data import generate_dataset
from features.pipeline import DuckDBEngine, build_features, timestamp_literal


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Samples the resident set size every 5 ms while active; ``peak`` in bytes."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self.peak = _rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def bare_sql(dataset: Dataset, as_of: pd.Timestamp) -> str:
    """Count, sum and max per user over orders and events at or before ``as_of`` (one pass each)."""
    cut = timestamp_literal(as_of)
    events = (
        f"SELECT user_id, COUNT(*) AS n_events, MAX(occurred_at) AS last_event FROM events "
        f"WHERE occurred_at <= {cut} GROUP BY user_id"
    )
    if not dataset.has_events:
        events = "SELECT CAST(NULL AS VARCHAR) AS user_id, 0 AS n_events, NULL AS last_event WHERE 1 = 0"
    sql = (
        f"WITH o AS (SELECT user_id, COUNT(*) AS n_orders, SUM(amount) AS spend, MAX(ordered_at) AS last_order "
        f"FROM orders WHERE ordered_at <= {cut} GROUP BY user_id), e AS ({events}) "
        "SELECT * FROM o FULL OUTER JOIN e USING (user_id)"
    )
    return sql


def bare_aggregate(dataset: Dataset, as_of: pd.Timestamp) -> pd.DataFrame:
    """The bare aggregate end to end: load into DuckDB as the pipeline does, then :func:`bare_sql`."""
    with DuckDBEngine(dataset, copy=False) as engine:
        return engine.query(bare_sql(dataset, as_of))


def pandas_rfm_straightforward(dataset: Dataset, as_of: pd.Timestamp, windows: list[int]) -> pd.DataFrame:
    """The RFM subset as it is commonly written in pandas: one groupby per quantity and window, joined."""
    o = dataset.orders[dataset.orders["ordered_at"] <= as_of]
    o = o.assign(signed=np.where(o["status"] == "paid", o["amount"], -o["amount"]))
    paid = o[o["status"] == "paid"]
    out = paid.groupby("user_id").agg(
        last=("ordered_at", "max"), first=("ordered_at", "min"), orders_total=("order_id", "count"),
        avg_order_value=("amount", "mean"), max_order_value=("amount", "max"),
    )
    out["days_since_last_order"] = (as_of - out.pop("last")).dt.total_seconds() / 86400
    out["days_since_first_order"] = (as_of - out.pop("first")).dt.total_seconds() / 86400
    out["first_order_value"] = paid.sort_values("ordered_at").groupby("user_id")["amount"].first()
    out = out.join(o.groupby("user_id")["signed"].sum().rename("spend_total"), how="outer")
    for w in windows:
        recent = o[o["ordered_at"] > as_of - pd.Timedelta(days=w)]
        out = out.join(recent[recent["status"] == "paid"].groupby("user_id").size().rename(f"orders_{w}d"), how="left")
        out = out.join(recent.groupby("user_id")["signed"].sum().rename(f"spend_{w}d"), how="left")
    return out.fillna({c: 0 for c in out.columns if c.startswith(("orders_", "spend_"))}).sort_index()


def pandas_rfm(dataset: Dataset, as_of: pd.Timestamp, windows: list[int]) -> pd.DataFrame:
    """The RFM subset in vectorised pandas: filter, then one ``groupby().agg`` over per-row window columns."""
    o = dataset.orders[dataset.orders["ordered_at"] <= as_of]
    paid = (o["status"] == "paid").to_numpy() if "status" in o else np.ones(len(o), dtype=bool)
    amount = o["amount"].to_numpy()
    age = (as_of - o["ordered_at"]).dt.total_seconds().to_numpy() / 86400.0
    cols: dict[str, np.ndarray] = {
        "user_id": o["user_id"].to_numpy(),
        "paid": paid.astype(float),
        "paid_age": np.where(paid, age, np.nan),
        "paid_amount": np.where(paid, amount, np.nan),
        "signed": np.where(paid, amount, -amount),
    }
    for w in windows:
        cols[f"orders_{w}d"] = (paid & (age < w)).astype(float)
        cols[f"spend_{w}d"] = np.where(age < w, cols["signed"], 0.0)
    frame = pd.DataFrame(cols)
    agg = {
        "paid": "sum",
        "signed": "sum",
        "paid_amount": ["mean", "max"],
        "paid_age": ["min", "max"],
        **{f"orders_{w}d": "sum" for w in windows},
        **{f"spend_{w}d": "sum" for w in windows},
    }
    return frame.groupby("user_id", sort=True).agg(agg)


@dataclass
class Result:
    name: str
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    rows_out: int = 0


def _measure(result: Result, fn: Callable[[], pd.DataFrame]) -> None:
    gc.collect()
    with PeakRss() as rss:
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    result.times.append(elapsed)
    result.cpu.append(cpu)
    result.peaks.append(rss.peak)
    result.rows_out = len(out)
    del out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200_000, help="Number of users to generate.")
    parser.add_argument("--repeat", type=int, default=3, help="Runs per method (best wall time is reported).")
    parser.add_argument("--seed", type=int, default=42, help="Seed of the generated data.")
    parser.add_argument("--skip-pandas", action="store_true", help="Do not run the pandas baseline.")
    args = parser.parse_args()

    end = pd.Timestamp("2024-06-30", tz="UTC")
    as_of = pd.Timestamp("2024-03-31", tz="UTC")
    config = StrataConfig()
    t0 = time.perf_counter()
    dataset = generate_dataset(args.users, end, seed=args.seed)
    n_orders, n_events = len(dataset.orders), len(dataset.events) if dataset.events is not None else 0
    n_users = len(dataset.users) if dataset.users is not None else 0
    rows_in = n_orders + n_events + n_users  # rows/s below are over all input rows, for every method
    print(
        f"data: {args.users:,} users -> {n_orders:,} orders, {n_events:,} events, {n_users:,} user rows "
        f"(generated in {time.perf_counter() - t0:.1f}s); as_of {as_of.date()}; cores {os.cpu_count()}; "
        f"RSS after generation {_rss_bytes() / 2**30:.2f} GiB"
    )

    orders_only = Dataset(orders=dataset.orders)
    bare = bare_sql(dataset, as_of)
    # phase 1, end to end from the pandas frames (the peak RSS of each includes the frames themselves)
    methods: list[tuple[Result, Callable[[], pd.DataFrame]]] = [
        (Result("full pipeline, end to end"), lambda: build_features(dataset, as_of, config)),
        (Result("bare aggregate, end to end"), lambda: bare_aggregate(dataset, as_of)),
        (Result("full pipeline, orders only"), lambda: build_features(orders_only, as_of, config)),
    ]
    if not args.skip_pandas:
        windows = list(config.features.windows_days)
        methods.append((Result("pandas RFM, straightforward"), lambda: pandas_rfm_straightforward(dataset, as_of, windows)))
        methods.append((Result("pandas RFM, vectorised"), lambda: pandas_rfm(dataset, as_of, windows)))
    for _ in range(args.repeat):
        for result, fn in methods:
            _measure(result, fn)
    # phase 2, queries on data already in DuckDB tables (the engine's copy adds to the peak RSS)
    engine = DuckDBEngine(dataset)
    queries: list[tuple[Result, Callable[[], pd.DataFrame]]] = [
        (Result("full pipeline, query only"), lambda: engine.features(as_of, config)),
        (Result("bare aggregate, query only"), lambda: engine.query(bare)),
    ]
    for _ in range(args.repeat):
        for result, fn in queries:
            _measure(result, fn)
    engine.close()
    methods += queries

    full = min(methods[0][0].times)
    header = f"{'method':30s} {'best s':>8s} {'median s':>9s} {'CPU s':>7s} {'peak RSS GiB':>13s} {'input rows/s':>14s} {'rows out':>10s} {'vs full':>8s}"
    print(header)
    print("-" * len(header))
    for result, _ in methods:
        best = min(result.times)
        print(
            f"{result.name:30s} {best:8.2f} {float(np.median(result.times)):9.2f} {min(result.cpu):7.2f} "
            f"{max(result.peaks) / 2**30:13.2f} {rows_in / best:14,.0f} {result.rows_out:10,d} {best / full:8.2f}"
        )
    best = {result.name: min(result.times) for result, _ in methods}
    cpu = {result.name: min(result.cpu) for result, _ in methods}
    for label, table in (("wall", best), ("CPU", cpu)):
        e2e = table["full pipeline, end to end"] / table["bare aggregate, end to end"]
        query = table["full pipeline, query only"] / table["bare aggregate, query only"]
        print(f"full pipeline / bare aggregate ({label}): {e2e:.2f}x end to end, {query:.2f}x query only (target <= 4x)")
    if not args.skip_pandas:
        for variant in ("straightforward", "vectorised"):
            for label, table in (("wall", best), ("CPU", cpu)):
                pandas_best = table[f"pandas RFM, {variant}"]
                print(
                    f"pandas RFM ({variant}) / full pipeline ({label}): {pandas_best / table['full pipeline, end to end']:.2f}x "
                    f"vs all features from all tables, {pandas_best / table['full pipeline, orders only']:.2f}x vs all "
                    "features from the same orders (target >= 5x)"
                )


if __name__ == "__main__":
    main()
