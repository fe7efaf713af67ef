"""Peak memory of batch scoring against the number of users scored.

The scoring issue asks for bounded memory: scoring is chunked, and 10M users must not need 10x the
memory of 1M. For each ``--users`` size, this benchmark:

* resamples the scoring-date features of the benchmark bundle (as ``bench_scoring.py`` does) to that many
  users with fresh ids, and writes them to a Parquet file, outside the measurement;
* runs :func:`serving.batch.run_batch` on that file in a **fresh process** (what ``strata score
  --no-online-store --features FILE`` does, reading the file the same way; ``--online-store`` adds the SQLite store), so
  that its peak resident memory (``VmHWM``, the process's high-water mark) is that run's alone (with
  the model bundle loaded; "at start" is the mark before the run);
* prints per size: peak RSS, wall and CPU seconds, and the ratio of peaks next to the ratio of users.

Where the memory goes: the run holds the whole feature table (read from the Parquet file as
:func:`features.io.read_feature_table` reads it, about 0.75 GB per million users at 91 numeric features, plus the user
id strings); the work file is written one chunk at a time, and everything else per chunk (model matrix,
scores, reasons, the part file) is bounded by ``scoring.chunk_users``. So peak memory grows with the
users, but by far less than their ratio.

Run: ``python benchmarks/bench_scoring_memory.py --users 1000000,10000000 --bundle /tmp/sbundle``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def _vm_hwm() -> int:
    """Peak resident bytes of this process image (``VmHWM``). Unlike ``ru_maxrss``, which Linux carries
    across ``exec`` (so a child would start at its parent's size), it starts afresh in a new program."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # no /proc: the closest figure


def _child(features: Path, out: Path, bundle_dir: Path, store: Path | None) -> None:
    """One batch run in this fresh process; prints one JSON line (peak RSS, wall, CPU, users)."""
    import bench_scoring

    from features.config import StrataConfig
    from features.io import read_feature_table
    from serving.batch import run_batch
    from serving.online_store import OnlineStore
    from serving.scorer import Scorer
    from training.bundle import ModelBundle

    scorer = Scorer(ModelBundle.load(bundle_dir), StrataConfig(), model_name="bench", model_version="1")
    start = _vm_hwm()
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    # what `strata score --features FILE` reads
    summary = run_batch(scorer, lambda: read_feature_table(features, bench_scoring.END), out, run_args={"bench": features.name},
                        online_store=None if store is None else OnlineStore(store))
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "users": summary.n_users,
        "wall": time.perf_counter() - t0,
        "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
        "peak_bytes": _vm_hwm(),
        "start_bytes": start,
    }))


def _measure(n: int, base: object, bundle_dir: Path, with_store: bool, seed: int) -> dict[str, float]:
    import bench_scoring

    tmp = Path(tempfile.mkdtemp(prefix="strata-mem-"))
    try:
        features = bench_scoring.resample(base, n, seed)  # type: ignore[arg-type]
        path = tmp / "features.parquet"
        features.to_parquet(path, index=False)
        del features
        gc.collect()
        cmd = [sys.executable, __file__, "--child", str(path), str(tmp / "out"), str(bundle_dir)]
        if with_store:
            cmd.append(str(tmp / "online.db"))
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"the batch run of {n:,} users failed:\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", default="1000000,10000000",
                        help="Comma-separated numbers of users to score, smallest first (default: 1M and 10M).")
    parser.add_argument("--bundle", type=Path, default=Path(tempfile.gettempdir()) / "strata-bench-bundle",
                        help="Load the bundle and its features here, or train and save them there (as bench_scoring.py).")
    parser.add_argument("--train-users", type=int, default=20_000, help="Synthetic users to train a new bundle on.")
    parser.add_argument("--seed", type=int, default=42, help="Seed of the synthetic data and the resampling.")
    parser.add_argument("--online-store", action="store_true", help="Also write the SQLite online store.")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.users.split(","))

    import bench_scoring
    import pandas as pd

    from features.config import StrataConfig
    from training.bundle import ModelBundle

    if not (args.bundle / "bundle.json").exists():
        print(f"training a bundle on {args.train_users:,} synthetic users into {args.bundle}", flush=True)
        bundle, base = bench_scoring.train_bundle(args.train_users, args.seed, StrataConfig())
        bundle.save(args.bundle)
        base.to_parquet(args.bundle / "features.parquet")
    else:
        ModelBundle.load(args.bundle)  # fail early on a bundle this version cannot read
    base = pd.read_parquet(args.bundle / "features.parquet")
    config = StrataConfig()
    print(f"batch scoring, {len(base.columns) - 2} features, chunks of {config.scoring.chunk_users:,} users, "
          f"online store {'on' if args.online_store else 'off'}; each size in a fresh process; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    rows = []
    for n in sizes:
        r = _measure(n, base, args.bundle, args.online_store, args.seed)
        rows.append(r)
        print(f"{int(r['users']):>12,} users  peak {r['peak_bytes'] / 2**30:6.2f} GiB  (at start "
              f"{r['start_bytes'] / 2**30:4.2f})  {r['wall']:7.1f} s wall  {r['cpu']:7.1f} s CPU", flush=True)
    first = rows[0]
    for r in rows[1:]:
        per_user = (r["peak_bytes"] - first["peak_bytes"]) / (r["users"] - first["users"])
        print(f"{int(r['users']):,} vs {int(first['users']):,} users ({r['users'] / first['users']:.1f}x): peak memory "
              f"{r['peak_bytes'] / first['peak_bytes']:.2f}x; {per_user:,.0f} bytes per additional user")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]) if len(sys.argv) > 5 else None)
    else:
        main()
