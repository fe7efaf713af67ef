"""Load test of the online API (single-user ``POST /predict``) next to a FastAPI + LightGBM baseline.

What it does, all under a temporary directory, bounded in time (about 5 minutes with the defaults):

1. generates a synthetic customer base, trains a small model (``train_model``), promotes it and
   batch-scores the base into the online store (the real pipeline, as in production); then fills the
   store up to ``--store-users`` rows (200,000 by default) with copies of those feature rows under new
   ids, so that lookups hit a store of realistic size;
2. starts two ``strata serve`` processes: one with the answer cache disabled
   (``serving.prediction_cache_users = 0``: every request reads the online store and scores the row,
   the headline figure), one with the cache on and warmed with the users asked (the second line);
3. starts ``benchmarks/fastapi_baseline.py`` (uvicorn, the raw churn booster, one ``predict`` per
   request), the floor, and sends it the same load with feature vectors of the same users;
4. sends single-user ``/predict`` requests for random stored users (``--sample`` distinct ids) at 16 and
   64 concurrent connections, alternating the three servers round by round, and prints requests/s,
   p50/p99 latency, errors and server CPU per request, the ratio to the floor and the load average.

The load generator is ``wrk`` when installed (``apt-get install -y wrk``), else an asyncio + httpx
client in this process (slower: on a small machine it competes with the server for CPU, so its figures
understate the server). Both server and load generator share the machine: figures are for comparison
within one run, not absolute capacity.

Usage: ``.venv/bin/python benchmarks/bench_api.py [--users 2000] [--duration 10] [--workers 1]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.config import StrataConfig

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "bench-key"
AS_OF = "2024-12-31"


@dataclass
class LoadResult:
    """One load run: throughput (requests/s), latency percentiles (ms) and failed requests."""

    target: str
    connections: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    tool: str
    cpu_us: float = float("nan")
    """Server CPU time (user + system, all its processes) per request, microseconds."""


# ----------------------------------------------------------------------------- setup


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_config(root: Path, cache_users: int, tree_engine: str) -> Path:
    path = root / f"strata-cache{cache_users}.toml"
    path.write_text(
        f"""
[scoring]
tree_engine = "{tree_engine}"
[labels]
n_cutoffs = 5
[training]
num_boost_round = 60
early_stopping_rounds = 10
min_data_in_leaf = 20
[tracking]
tracking_uri = "sqlite:///{root / 'mlflow.db'}"
artifact_dir = "{root / 'mlartifacts'}"
[serving]
online_store = "{root / 'online.db'}"
api_key = "{API_KEY}"
model_poll_seconds = 30
prediction_cache_users = {cache_users}
""",
        encoding="utf-8",
    )
    return path


def prepare(root: Path, n_users: int, store_users: int = 0) -> tuple[list[str], list[list[float | None]], Path]:
    """Train, promote and batch-score a synthetic base, then fill the store to ``store_users`` rows.

    Returns every stored user id, the churn-model vector of each (copies share their original's) and
    the saved churn booster (for the baseline).
    """
    import pandas as pd

    from features.config import load_config
    from features.demo_data import generate_dataset
    from features.pipeline import build_features
    from serving.batch import read_scores, run_batch
    from serving.online_store import OnlineStore
    from serving.scorer import Scorer
    from training.pyfunc import load_bundle
    from training.registry import promote
    from training.train import train_model

    config = load_config(_write_config(root, 0, StrataConfig().scoring.tree_engine))
    as_of = pd.Timestamp(AS_OF, tz="UTC")
    t0 = time.perf_counter()
    dataset = generate_dataset(n_users=n_users, end=as_of, seed=5)
    result = train_model(dataset, config, as_of=as_of)
    promote(config)
    version = str(result.model_version)
    bundle = load_bundle(f"models:/{config.training.model_name}/{version}", config)
    scorer = Scorer(bundle, config, model_name=config.training.model_name, model_version=version,
                    model_alias="champion")
    features = build_features(dataset, as_of, config)
    run_batch(scorer, lambda: features, root / "batch", run_args={"as_of": AS_OF},
              online_store=OnlineStore(config.serving.online_store))
    matrix = bundle.model_matrix(features)
    for col in matrix.columns:
        if isinstance(matrix[col].dtype, pd.CategoricalDtype):
            matrix[col] = matrix[col].cat.codes.astype(float)
    vectors = [[None if np.isnan(v) else float(v) for v in row] for row in matrix.to_numpy(dtype=float)]
    booster_file = root / "churn_booster.txt"
    bundle.churn_model.booster_.save_model(str(booster_file))
    print(f"setup: {n_users} users, model v{version} trained, promoted and batch-scored "
          f"in {time.perf_counter() - t0:.0f} s")
    ids = features["user_id"].astype(str).tolist()
    all_ids, all_vectors = list(ids), list(vectors)
    store = OnlineStore(config.serving.online_store)
    scores = read_scores(root / "batch").set_index("user_id").loc[ids].reset_index()
    copy = 0
    t1 = time.perf_counter()
    while len(all_ids) < store_users:
        copy += 1
        take = min(len(ids), store_users - len(all_ids))
        part = features.iloc[:take].copy()
        part["user_id"] = [f"{u}~{copy}" for u in ids[:take]]
        part_scores = scores.iloc[:take].copy()
        part_scores["user_id"] = part["user_id"].to_numpy()
        store.write(part, part_scores)
        all_ids += part["user_id"].tolist()
        all_vectors += vectors[:take]
    store.close()
    if copy:
        print(f"setup: online store filled to {len(all_ids):,} users in {time.perf_counter() - t1:.0f} s")
    return all_ids, all_vectors, booster_file


class Server:
    """A server subprocess (strata serve or uvicorn) on a free loopback port."""

    def __init__(self, cmd: list[str], port: int, cwd: Path, env: dict[str, str], ready_path: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = (cwd / f"server-{port}.log").open("wb")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait(ready_path)

    def _wait(self, path: str, timeout: float = 180.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early (code {self.proc.returncode}); see {self.log.name}")
            try:
                if httpx.get(self.url + path, timeout=2.0).status_code in (200, 405):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout:.0f} s; see {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def start_strata(root: Path, cache_users: int, workers: int, tree_engine: str) -> Server:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("STRATA_API_KEY", "MLFLOW_TRACKING_URI")}
    cmd = [sys.executable, "-m", "strata_cli.main", "serve", "--config", str(_write_config(root, cache_users, tree_engine)),
           "--port", str(port), "--workers", str(workers)]
    return Server(cmd, port, root, env, "/readyz")


def start_baseline(root: Path, booster_file: Path, workers: int) -> Server:
    port = _free_port()
    env = {**os.environ, "STRATA_BASELINE_MODEL": str(booster_file)}
    cmd = [sys.executable, "-m", "uvicorn", "fastapi_baseline:create_app", "--factory",
           "--app-dir", str(ROOT / "benchmarks"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--log-level", "warning", "--no-access-log"]
    return Server(cmd, port, root, env, "/predict")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children (BentoML runs workers as children)."""
    import psutil

    total = 0.0
    try:
        proc = psutil.Process(pid)
        for p in [proc, *proc.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    return total


# ----------------------------------------------------------------------------- load generators


def _lua_script(path: Path, bodies: list[str], headers: dict[str, str]) -> Path:
    lines = ['wrk.method = "POST"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    lines.append("local bodies = {")
    lines += [f"  {json.dumps(b)}," for b in bodies]
    lines.append("}")
    lines.append("math.randomseed(42)")
    lines.append("request = function()")
    lines.append("  return wrk.format(nil, nil, nil, bodies[math.random(#bodies)])")
    lines.append("end")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk_ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * _WRK_UNITS[m.group(2)]


def run_wrk(url: str, bodies: list[str], headers: dict[str, str], connections: int, duration: float,
            target: str, workdir: Path) -> LoadResult:
    script = _lua_script(workdir / f"load-{connections}.lua", bodies, headers)
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(duration)}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, timeout=duration + 60, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _wrk_ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _wrk_ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups())
    return LoadResult(target, connections, rps, p50, p99, errors, "wrk")


def run_python_load(url: str, bodies: list[str], headers: dict[str, str], connections: int, duration: float,
                    target: str) -> LoadResult:
    import httpx

    async def main() -> tuple[list[float], int, float]:
        latencies: list[float] = []
        errors = 0
        rng = random.Random(42)
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(limits=limits, headers={**headers}, timeout=30.0) as client:
            start = time.perf_counter()
            deadline = start + duration

            async def worker() -> None:
                nonlocal errors
                while time.perf_counter() < deadline:
                    t = time.perf_counter()
                    try:
                        resp = await client.post(url, content=rng.choice(bodies))
                        if resp.status_code != 200:
                            errors += 1
                    except httpx.HTTPError:
                        errors += 1
                    latencies.append((time.perf_counter() - t) * 1000.0)

            await asyncio.gather(*(worker() for _ in range(connections)))
            return latencies, errors, time.perf_counter() - start

    latencies, errors, elapsed = asyncio.run(main())
    arr = np.asarray(latencies)
    return LoadResult(target, connections, len(arr) / elapsed, float(np.percentile(arr, 50)),
                      float(np.percentile(arr, 99)), errors, "httpx")


def load(server: Server, bodies: list[str], headers: dict[str, str], connections: int, duration: float,
         target: str, workdir: Path) -> LoadResult:
    """One load run against ``server``'s ``/predict``, with the server's CPU time per request."""
    url = server.url + "/predict"
    cpu0 = _cpu_seconds(server.proc.pid)
    if shutil.which("wrk"):
        result = run_wrk(url, bodies, headers, connections, duration, target, workdir)
    else:
        result = run_python_load(url, bodies, headers, connections, duration, target)
    cpu = _cpu_seconds(server.proc.pid) - cpu0
    result.cpu_us = cpu / max(1.0, result.requests_per_s * duration) * 1e6
    return result


def warm_cache(url: str, user_ids: list[str]) -> float:
    """Ask for every user once (64 per call); returns the seconds it took."""
    import httpx

    t0 = time.perf_counter()
    with httpx.Client(headers={"X-API-Key": API_KEY, "Content-Type": "application/json"}, timeout=120) as c:
        for i in range(0, len(user_ids), 64):
            resp = c.post(url, content=json.dumps({"user_ids": user_ids[i : i + 64]}))
            resp.raise_for_status()
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- report


def print_table(results: list[LoadResult]) -> None:
    print(f"\n{'target':34s} {'conns':>5s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'errors':>7s} "
          f"{'CPU us/req':>10s}  tool")
    for r in results:
        print(f"{r.target:34s} {r.connections:5d} {r.requests_per_s:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} "
              f"{r.errors:7d} {r.cpu_us:10.0f}  {r.tool}")


UNCACHED = "strata /predict (uncached)"
CACHED = "strata /predict (cached)"
FLOOR = "fastapi baseline (raw LightGBM)"


def summarize(results: list[LoadResult]) -> None:
    by = {(r.target, r.connections): r for r in results}
    print("\ntargets (uncached): >= 1000 req/s and p99 < 50 ms at 16 connections; >= 0.7x the FastAPI floor; "
          "zero errors")
    for c in sorted({r.connections for r in results}):
        base = by.get((FLOOR, c))
        for target, what in ((UNCACHED, "uncached, headline"), (CACHED, "cached answers")):
            strata = by.get((target, c))
            if strata is None:
                continue
            line = (f"  {c:3d} connections, strata ({what}): {strata.requests_per_s:.0f} req/s, "
                    f"p99 {strata.p99_ms:.1f} ms, {strata.errors} errors")
            if base is not None and base.requests_per_s > 0:
                line += (f"; {strata.requests_per_s / base.requests_per_s:.2f}x the floor's throughput "
                         f"({base.requests_per_s:.0f} req/s), {strata.cpu_us:.0f} vs {base.cpu_us:.0f} "
                         "server CPU us per request")
            print(line)
    print("  (throughput depends on what else the machine runs; CPU per request does not, or much less)")


def load_average() -> str:
    """The 1/5/15-minute load averages (``uptime``), for the record."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


def _median_result(runs: list[LoadResult]) -> LoadResult:
    """The run with the median throughput (its latencies kept together), errors summed over runs."""
    ordered = sorted(runs, key=lambda r: r.requests_per_s)
    mid = ordered[len(ordered) // 2]
    cpu = float(np.median([r.cpu_us for r in runs]))
    return LoadResult(mid.target, mid.connections, mid.requests_per_s, mid.p50_ms, mid.p99_ms,
                      sum(r.errors for r in runs), f"{mid.tool}, median of {len(runs)}", cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000, help="synthetic users trained on and batch-scored")
    parser.add_argument("--store-users", type=int, default=200_000,
                        help="users in the online store (copies of the scored rows under new ids)")
    parser.add_argument("--sample", type=int, default=20_000, help="distinct stored users the requests ask for")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per run")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating uncached/cached/floor runs per connection count (the median is reported)")
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 64], help="concurrent connections")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (all servers)")
    parser.add_argument("--skip-cached", action="store_true", help="skip the runs with the answer cache on")
    parser.add_argument("--tree-engine", choices=["lightgbm", "compiled"],
                        default=StrataConfig().scoring.tree_engine,
                        help="scoring.tree_engine of the Strata servers (default: the configuration's default, "
                             "%(default)s); the FastAPI floor always runs LightGBM")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        print("wrk not found: using the Python load generator (install wrk for better figures: "
              "apt-get install -y wrk)")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    print(f"start: {load_average()}; strata servers with scoring.tree_engine = {args.tree_engine}")
    results: list[LoadResult] = []
    with tempfile.TemporaryDirectory(prefix="strata-bench-") as tmp:
        root = Path(tmp)
        user_ids, vectors, booster_file = prepare(root, args.users, args.store_users)
        rng = random.Random(7)
        sample = rng.sample(range(len(user_ids)), min(args.sample, len(user_ids)))
        predict_bodies = [json.dumps({"user_ids": [user_ids[i]]}) for i in sample]
        vector_bodies = [json.dumps({"features": vectors[i]}) for i in sample]
        headers = {"Content-Type": "application/json", "X-API-Key": API_KEY}
        json_only = {"Content-Type": "application/json"}

        # All servers up at once and runs alternated, so that a change in the machine's background
        # load hits every side alike.
        servers: list[tuple[str, Server, list[str], dict[str, str]]] = []
        try:
            servers.append((UNCACHED, start_strata(root, 0, args.workers, args.tree_engine), predict_bodies, headers))
            if not args.skip_cached:
                cached = start_strata(root, len(sample), args.workers, args.tree_engine)
                servers.append((CACHED, cached, predict_bodies, headers))
                warm = warm_cache(cached.url + "/predict", [user_ids[i] for i in sample])
                print(f"cache warm-up: {len(sample)} users in {warm:.1f} s")
            servers.append((FLOOR, start_baseline(root, booster_file, args.workers), vector_bodies, json_only))
            for c in args.connections:
                runs: dict[str, list[LoadResult]] = {target: [] for target, *_ in servers}
                for _ in range(args.rounds):
                    for target, server, bodies, hdrs in servers:
                        runs[target].append(load(server, bodies, hdrs, c, args.duration, target, root))
                results += [_median_result(r) for r in runs.values()]
        finally:
            for _, server, _, _ in servers:
                server.stop()
    print_table(results)
    summarize(results)
    print(f"end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
