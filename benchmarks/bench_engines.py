"""The events pass in DuckDB against other embedded engines: is there an engine whose aggregates cost less?

The events pass is the largest stage of the feature query (about half its CPU time at 1M users): one
``GROUP BY user_id`` over every event at or before ``as_of`` computing 39 aggregates (decayed counts for
every half-life, days since the last event, the 30-day activity bits, and per event type a packed 30/90-day
count and a decayed count, the influence and coupon counts, the mean review score). Its floor is a bare
count and max per user over the same rows. The full feature set's 4x target is missed in DuckDB because
each per-type aggregate costs about 0.25 CPU-s per 49M events; this benchmark asks whether another
in-process engine does the same work for less, on the same Parquet file (the feature benchmark's data):

* ``duckdb``: the product's own SQL (the feature query's events stage, :func:`features.pipeline.stage_query`),
  through the engine's typed views;
* ``chdb`` (embedded ClickHouse, if importable): the same aggregates written the idiomatic ClickHouse way
  (``sumIf``/``countIf`` combinators, non-nullable schema inference, which roughly halves its time);
* ``polars`` (if importable): the same aggregates as a lazy ``group_by().agg()``.

Each engine also runs its bare aggregate (count and max per user). Every run is a fresh process; rounds are
interleaved and the best wall time is reported, with CPU seconds and peak RSS. Checksums of four outputs
(events total, a decayed count, 30- and 90-day counts) must agree across engines, so that all of them do the
same work. The other engines are not project dependencies; put them in a throwaway virtualenv and pass its
interpreter (the DuckDB runs use this project's)::

    python -m venv /tmp/engines && /tmp/engines/bin/pip install chdb polars pyarrow
    python benchmarks/bench_engines.py --users 1000000 --engine-python /tmp/engines/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ENGINES = ("duckdb", "chdb", "polars")


# --------------------------------------------------------------------------- queries (run in the child)


def _duckdb(spec: dict, events: Path, bare: bool) -> Any:
    import pandas as pd

    from features.config import StrataConfig
    from features.pipeline import DuckDBEngine, stage_query, timestamp_literal

    as_of = pd.Timestamp(spec["as_of"])
    with DuckDBEngine.from_parquet(events.parent / "orders.parquet", events, orders_unique=True) as engine:
        if bare:
            sql = (f"SELECT user_id, COUNT(*) AS events_total, MAX(occurred_at) AS last_event FROM events "
                   f"WHERE occurred_at <= {timestamp_literal(as_of)} GROUP BY user_id")
        else:  # the feature query's own events stage (its other CTEs are not read, so not run)
            sql = stage_query(StrataConfig(), as_of, engine.sources, "events", dedupe_orders=False)
        return engine.con.sql(sql).to_arrow_table()


def _chdb(spec: dict, events: Path, bare: bool) -> Any:
    import chdb

    src = f"file('{events}', Parquet)"
    cut = f"toDateTime64('{spec['as_of_text']}', 6, 'UTC')"
    settings = f" SETTINGS max_threads={os.cpu_count()}, schema_inference_make_columns_nullable=0"
    if bare:
        sql = f"SELECT user_id, count() AS events_total, max(occurred_at) AS last_event FROM {src} WHERE occurred_at <= {cut} GROUP BY user_id"
        return chdb.query(sql + settings, "ArrowTable")
    decay = ", ".join(f"exp(age_days * {-rate!r}) AS w_hl{h}" for h, rate in spec["rates"].items())
    rows = (f"SELECT user_id, event_type, value, age_days, {decay} FROM (SELECT user_id, event_type, value, "
            f"toFloat64({spec['as_of_us']} - toUnixTimestamp64Micro(occurred_at)) / 86400e6 AS age_days FROM {src} "
            f"WHERE occurred_at <= {cut})")
    hmax = spec["hl_max"]
    aggs = [*(f"sum(w_hl{h}) AS events_decay_hl{h}" for h in spec["rates"]), "min(age_days) AS days_since_last_event",
            "groupBitOr(if(age_days < 30, bitShiftLeft(toInt64(1), toUInt8(floor(age_days))), 0)) AS event_day_bits_30d",
            "count() AS events_total"]
    for t, tok in spec["types"].items():
        aggs.append(f"sumIf(if(age_days < 30, {spec['pack'] + 1}, 1), event_type = '{t}' AND age_days < 90) AS events_{tok}_30d_90d_packed")
        aggs.append(f"sumIf(w_hl{hmax}, event_type = '{t}') AS events_{tok}_decay_hl{hmax}")
    for t, name in spec["totals"].items():
        aggs.append(f"countIf(event_type = '{t}') AS {name}")
    aggs.append("avgIf(value, event_type = 'review') AS review_sentiment_mean")
    sql = f"SELECT user_id, {', '.join(aggs)} FROM ({rows}) GROUP BY user_id"
    return chdb.query(sql + settings, "ArrowTable")


def _polars(spec: dict, events: Path, bare: bool) -> Any:
    import datetime as dt

    import polars as pl

    cut = dt.datetime.fromtimestamp(spec["as_of_epoch"], tz=dt.UTC)
    lf = pl.scan_parquet(events).filter(pl.col("occurred_at") <= cut)
    if bare:
        return lf.group_by("user_id").agg(pl.len().alias("events_total"), pl.col("occurred_at").max()).collect()
    age = pl.col("age_days")
    # ages from whole microseconds, as features.pipeline computes them
    lf = lf.with_columns(((spec["as_of_us"] - pl.col("occurred_at").dt.epoch("us")).cast(pl.Float64) / 86400e6).alias("age_days"))
    lf = lf.with_columns([(age * -rate).exp().alias(f"w_hl{h}") for h, rate in spec["rates"].items()])
    et, hmax = pl.col("event_type"), spec["hl_max"]
    aggs = [*(pl.col(f"w_hl{h}").sum().alias(f"events_decay_hl{h}") for h in spec["rates"]),
            age.min().alias("days_since_last_event"), pl.len().alias("events_total")]
    for t, tok in spec["types"].items():
        aggs.append(((et == t) & (age < 30)).sum().alias(f"events_{tok}_30d"))
        aggs.append(((et == t) & (age < 90)).sum().alias(f"events_{tok}_90d"))
        aggs.append(pl.col(f"w_hl{hmax}").filter(et == t).sum().alias(f"events_{tok}_decay_hl{hmax}"))
    for t, name in spec["totals"].items():
        aggs.append((et == t).sum().alias(name))
    aggs.append(pl.col("value").filter(et == "review").mean().alias("review_sentiment_mean"))
    # the activity bits as DuckDB and chDB compute them: OR of 1 << whole days, within 30 days
    bits = pl.when(age < 30).then(pl.lit(1, pl.Int64) * (2 ** age.floor()).cast(pl.Int64)).otherwise(0)
    aggs.append(bits.unique().sum().alias("event_day_bits_30d"))  # distinct powers of two: their sum is their OR
    return lf.group_by("user_id").agg(aggs).collect()


def _checksums(table: Any, spec: dict, bare: bool) -> dict[str, float]:
    """Sums over users of a few outputs of an Arrow ``table``: equal across engines that compute the same thing."""
    out = {name: table.column(name).to_pylist() for name in table.column_names
           if name in ("user_id", "events_total") or name.startswith(f"events_{spec['check_type']}_")}
    sums = {"users": float(len(out["user_id"])), "events_total": float(sum(out["events_total"]))}
    if bare:
        return sums
    tok, hmax = spec["check_type"], spec["hl_max"]
    if f"events_{tok}_30d" in out:
        short, long = out[f"events_{tok}_30d"], out[f"events_{tok}_90d"]
    else:
        packed = [p or 0 for p in out[f"events_{tok}_30d_90d_packed"]]
        short, long = [p // spec['pack'] for p in packed], [p % spec['pack'] for p in packed]
    sums[f"events_{tok}_30d"], sums[f"events_{tok}_90d"] = float(sum(short)), float(sum(long))
    sums[f"events_{tok}_decay_hl{hmax}"] = sum(v or 0.0 for v in out[f"events_{tok}_decay_hl{hmax}"])
    return sums


def _child(engine: str, bare: bool, events: Path, spec: dict) -> None:
    run = {"duckdb": _duckdb, "chdb": _chdb, "polars": _polars}[engine]
    # imports are not measured: the engine's, and for DuckDB the project's (pandas, pydantic, features)
    for module in (["duckdb", "pandas", "features.pipeline"] if engine == "duckdb" else [engine]):
        __import__(module)
    t0, c0 = time.perf_counter(), time.process_time()
    out = run(spec, events, bare)  # an Arrow table (DuckDB, chDB) or a polars frame, in memory
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    version = sys.modules[engine].__version__
    if engine == "polars":
        out = out.to_arrow()
    print(json.dumps({"wall": wall, "cpu": cpu, "peak": peak, "version": version, "columns": out.num_columns,
                      "checksums": _checksums(out, spec, bare)}))


# --------------------------------------------------------------------------- driver


def _spec() -> dict:
    import pandas as pd
    from bench_features import AS_OF

    from features.config import StrataConfig
    from features.definitions import PACKED_COUNT_BITS, column_token, decay_rate
    from features.pipeline import epoch_micros, epoch_seconds

    config = StrataConfig()
    hls = sorted(set(config.features.half_lives_days))
    as_of = pd.Timestamp(AS_OF)
    return {
        "as_of": as_of.isoformat(), "as_of_text": as_of.strftime("%Y-%m-%d %H:%M:%S"), "as_of_epoch": epoch_seconds(as_of),
        "as_of_us": epoch_micros(as_of),
        "rates": {str(h): decay_rate(h) for h in hls}, "hl_max": str(max(hls)),
        "types": {t: column_token(t) for t in config.data.event_types},
        "totals": {"share": "shares_total", "referral": "referrals_total", "coupon_claim": "coupon_claims_total",
                   "coupon_redeem": "coupon_redeems_total"},
        "check_type": "page_view",
        # packed 30/90-day counts, as the product computes them: the 90-day count plus this times the 30-day one
        "pack": 2**PACKED_COUNT_BITS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000, help="Size of the feature benchmark's data to use.")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("STRATA_BENCH_CACHE", "/tmp/strata-bench")),
                        help="The feature benchmark's data cache (bench_features.py generates the data).")
    parser.add_argument("--engine-python", default=sys.executable,
                        help="Interpreter with chdb and/or polars installed, for those engines' runs (default: this one).")
    parser.add_argument("--engines", default=",".join(ENGINES), help="Comma-separated engines to run.")
    parser.add_argument("--repeat", type=int, default=3, help="Interleaved rounds (best is reported).")
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.bare, args.events, json.loads(args.spec))
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_features import EVENT_RATE, ORDER_RATE, _data_dir

    data = _data_dir(args.cache, args.users, 42, ORDER_RATE, EVENT_RATE)
    events = data / "events.parquet"
    if not events.exists():
        raise SystemExit(f"no data in {data}: run `python benchmarks/bench_features.py --users {args.users}` first")
    spec = _spec()
    runs: dict[tuple[str, bool], list[dict]] = {}
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise SystemExit(f"unknown engines {unknown}; expected some of {list(ENGINES)}")
    print(f"events pass and bare aggregate on {events} ({os.cpu_count()} CPUs), {args.repeat} interleaved rounds, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    skipped: set[str] = set()
    for r in range(args.repeat):
        for engine in engines:
            for bare in (True, False):
                if engine in skipped:
                    break
                python = sys.executable if engine == "duckdb" else args.engine_python
                cmd = [python, __file__, "--child", engine, "--events", str(events), "--spec", json.dumps(spec)]
                proc = subprocess.run(cmd + (["--bare"] if bare else []), capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    last = (proc.stderr.strip().splitlines() or ["?"])[-1]
                    print(f"  {engine}: skipped ({last})", flush=True)
                    skipped.add(engine)
                    break
                got = json.loads(proc.stdout.strip().splitlines()[-1])
                runs.setdefault((engine, bare), []).append(got)
                print(f"  round {r + 1}: {engine:7s} {'bare' if bare else 'events pass':12s} "
                      f"{got['wall']:6.2f} s wall {got['cpu']:6.2f} s CPU", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    header = f"{'engine':16s} {'bare s':>7s} {'CPU s':>6s} {'events s':>9s} {'CPU s':>6s} {'peak GiB':>9s} {'ratio':>6s} {'CPU ratio':>9s}"
    print(header)
    print("-" * len(header))
    for engine in dict.fromkeys(e for e, _ in runs):
        if (engine, False) not in runs or (engine, True) not in runs:
            continue
        b, f = runs[(engine, True)], runs[(engine, False)]
        bw, bc = min(x["wall"] for x in b), min(x["cpu"] for x in b)
        fw, fc = min(x["wall"] for x in f), min(x["cpu"] for x in f)
        peak = max(x["peak"] for x in f) / 2**30
        print(f"{engine + ' ' + f[0]['version']:16s} {bw:7.2f} {bc:6.2f} {fw:9.2f} {fc:6.2f} {peak:9.2f} "
              f"{fw / bw:5.2f}x {fc / bc:8.2f}x")
    # the engines must have done the same work: the same users and the same sums
    reference, mismatches = None, 0
    for (engine, bare), got in runs.items():
        if bare:
            continue
        sums = got[0]["checksums"]
        if reference is None:
            reference = (engine, sums)
            continue
        for key, value in sums.items():
            ref = reference[1][key]
            if abs(value - ref) > 1e-9 * max(1.0, abs(ref)):
                print(f"MISMATCH: {engine} {key} = {value!r}, {reference[0]} has {ref!r}")
                mismatches += 1
    compared = sum(1 for _, bare in runs if not bare)
    if reference is not None and compared > 1:
        verdict = "all engines agree" if not mismatches else f"{mismatches} MISMATCHES"
        print(f"checksums of the events pass ({', '.join(reference[1])}) against {reference[0]}: {verdict}")


if __name__ == "__main__":
    main()
