"""Benchmark of the demo-data generator (and optionally writing and validating what it wrote).

Usage::

    .venv/bin/python benchmarks/bench_generate.py [N_USERS=1000000] [--write] [--validate] [--format csv]
        [--order-rate 5.4 --event-rate 1.55]   # the feature benchmark's volume (~20 orders, ~60 events/user)

Prints users/s and rows/s of :func:`features.demo_data.generate_dataset`, next to a baseline measured in
the same run: the same renewal-process purchase draws done with a Python loop per user (on a subset,
extrapolated), which is what the vectorised generator replaces. With ``--write`` it also times writing
the files, and with ``--validate`` reading + validating them (``features.validation.load_dataset``).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _loop_baseline(n_users: int, span_days: float = 913.0, seed: int = 0) -> float:
    """Seconds per user of the same kind of generation written as a Python loop per user.

    Per user: join, lifetime, buyer flag, gamma-gap purchases with seasonal thinning, lognormal amounts,
    Poisson events with types; rows collected in lists and assembled into frames at the end.
    """
    rng = np.random.default_rng(seed)
    types = np.array(["page_view", "article_read", "link_click", "cart_add", "consult", "share"], dtype=object)
    start = time.perf_counter()
    o_rows: list[tuple[str, float, float]] = []
    e_rows: list[tuple[str, float, str]] = []
    for i in range(n_users):
        uid = f"u{i:07d}"
        join = span_days * rng.random() ** 0.75
        z = rng.standard_normal()
        death = join + 480 * np.exp(0.35 * z) * rng.weibull(1.3)
        limit = min(death, span_days)
        if rng.random() < 1 / (1 + np.exp(-(0.35 + z))):
            mean_gap, shape = np.exp(rng.normal(np.log(42), 0.55)), rng.uniform(1.3, 4.5)
            value = np.exp(rng.normal(np.log(95), 0.85))
            t = join + rng.exponential(20.0)
            while t < limit:
                if rng.random() < 0.6 + 0.4 * np.exp(-(((t % 365.25) - 327) / 26) ** 2):
                    o_rows.append((uid, t, round(value * rng.lognormal(-0.1, 0.45), 2)))
                t += rng.gamma(shape, 0.62 * mean_gap / shape)
        n_events = rng.poisson(0.075 * np.exp(0.85 * z) * max(0.0, limit - join))
        for t, k in zip(join + rng.random(n_events) * (limit - join), rng.integers(0, len(types), n_events), strict=True):
            e_rows.append((uid, float(t), types[k]))
    pd.DataFrame(o_rows, columns=["user_id", "t", "amount"]).sort_values("t")
    pd.DataFrame(e_rows, columns=["user_id", "t", "event_type"]).sort_values("t")
    return (time.perf_counter() - start) / n_users


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n_users", nargs="?", type=int, default=1_000_000, help="users to generate (default 1M)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--write", action="store_true", help="also time writing the files")
    parser.add_argument("--validate", action="store_true", help="also time reading + validating them (implies --write)")
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv")
    parser.add_argument("--order-rate", type=float, default=1.0,
                        help="generate_dataset order_rate (1: demo data, ~4 orders/user; 5.4: ~20/user)")
    parser.add_argument("--event-rate", type=float, default=1.0,
                        help="generate_dataset event_rate (1: demo data, ~32 events/user; 1.55 with order rate 5.4: ~60/user)")
    args = parser.parse_args()

    from features.config import StrataConfig
    from features.demo_data import generate_dataset, write_dataset
    from features.validation import load_dataset

    end = pd.Timestamp("2024-12-31", tz="UTC")
    t0, c0 = time.perf_counter(), time.process_time()
    ds = generate_dataset(args.n_users, end, seed=args.seed, order_rate=args.order_rate, event_rate=args.event_rate)
    gen_s, gen_cpu = time.perf_counter() - t0, time.process_time() - c0
    n_orders, n_events = len(ds.orders), len(ds.events) if ds.events is not None else 0
    rows = n_orders + n_events + args.n_users
    print(f"generate_dataset({args.n_users:,} users): {gen_s:.1f} s wall, {gen_cpu:.1f} s CPU, {n_orders:,} orders "
          f"({n_orders / args.n_users:.1f}/user), {n_events:,} events ({n_events / args.n_users:.1f}/user)")
    print(f"  vectorised: {args.n_users / gen_s:,.0f} users/s, {rows / gen_s:,.0f} rows/s")

    if (args.order_rate, args.event_rate) != (1.0, 1.0):
        print("  (the loop baseline below draws at the demo rates, fewer rows per user than above)")
    n_base = min(args.n_users, 5_000)
    c0 = time.process_time()
    per_user = _loop_baseline(n_base)
    base_cpu = (time.process_time() - c0) / n_base
    print(f"  baseline (same model as a Python loop per user, {n_base:,} users): "
          f"{1 / per_user:,.0f} users/s -> {per_user * args.n_users:.1f} s extrapolated "
          f"({per_user * args.n_users / gen_s:.1f}x slower; CPU {base_cpu * args.n_users:.1f} s extrapolated, "
          f"{base_cpu * args.n_users / gen_cpu:.1f}x the vectorised CPU time)")

    if args.write or args.validate:
        with tempfile.TemporaryDirectory() as tmp:
            t0, c0 = time.perf_counter(), time.process_time()
            write_dataset(ds, Path(tmp), args.format)
            write_s, write_cpu = time.perf_counter() - t0, time.process_time() - c0
            size = sum(p.stat().st_size for p in Path(tmp).iterdir())
            print(f"write_dataset ({args.format}): {write_s:.1f} s wall, {write_cpu:.1f} s CPU, "
                  f"{rows / write_s:,.0f} rows/s, {size / 1e6:,.0f} MB")
            if args.validate:
                del ds
                t0, c0 = time.perf_counter(), time.process_time()
                _, report = load_dataset(tmp, config=StrataConfig(), now=end + pd.Timedelta(days=1))
                val_s, val_cpu = time.perf_counter() - t0, time.process_time() - c0
                print(f"load_dataset (read + validate): {val_s:.1f} s wall, {val_cpu:.1f} s CPU, "
                      f"{report.rows_in / val_s:,.0f} rows/s, "
                      f"{report.rows_rejected:,} rejected")
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"peak resident memory: {peak_gb:.1f} GB; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
          f"(wall times grow with the load, CPU times much less)")


if __name__ == "__main__":
    main()
