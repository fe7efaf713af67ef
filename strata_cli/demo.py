"""``make demo``: run the main job end to end on built-in demo data, printing each command it runs.

Every step is a real ``strata`` command, so the demo doubles as a tutorial: copy any printed line to run it
yourself. Usage: ``python -m strata_cli.demo [--dir demo] [--users 20000] [--end 2025-12-31]``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.rule import Rule

console = Console()
console.soft_wrap = not console.is_terminal  # piped: whole lines, as the other commands print


def _strata(workdir: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> int:
    """Run ``strata ARGS`` in ``workdir``; print the command line first; return its exit code."""
    exe = Path(sys.executable).with_name("strata")
    cmd = [str(exe), *args]
    console.print(f"[bold cyan]$ strata {escape(shlex.join(args))}[/]")
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env={**os.environ, **(env or {})})
    console.print(f"[dim]  ({time.perf_counter() - started:.1f} s, exit {proc.returncode})[/]")
    if check and proc.returncode != 0:
        console.print(f"[bold red]demo step failed:[/] strata {escape(shlex.join(args))}")
        raise SystemExit(proc.returncode)
    return proc.returncode


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default="demo", help="Working directory for demo data and outputs (default: demo)")
    parser.add_argument("--users", type=int, default=20_000, help="Number of synthetic users (default: 20000)")
    parser.add_argument("--end", default="2025-12-31", help="Last day of the synthetic history (default: 2025-12-31)")
    args = parser.parse_args(argv)

    workdir = Path(args.dir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    as_of = args.end
    started = time.perf_counter()

    console.print(Rule("1. Generate a synthetic private-domain customer base (with some bad rows)"))
    _strata(workdir, "generate", "--users", str(args.users), "--out", "data", "--seed", "42",
            "--end", args.end, "--bad-rows", "0.002", "--overwrite")

    console.print(Rule("2. Validate it: every row accepted or rejected with a reason"))
    _strata(workdir, "validate", "--data", "data", "--rejects", "rejects")

    console.print(Rule("3. Point-in-time features as of the cutoff"))
    _strata(workdir, "features", "--data", "data", "--as-of", as_of, "--out", "features.parquet")

    console.print(Rule("4. Rule layers"))
    _strata(workdir, "layers", "--data", "data", "--as-of", as_of, "--out", "layers.parquet")

    console.print(Rule("5. Train churn / conversion / value models, tracked in MLflow (SQLite file)"))
    _strata(workdir, "train", "--data", "data", "--as-of", as_of)
    _strata(workdir, "promote")
    _strata(workdir, "models")

    console.print(Rule("6. Score the whole base with the champion model"))
    _strata(workdir, "score", "--data", "data", "--as-of", as_of, "--out", "scores", "--budget", "20000", "--overwrite")

    console.print(Rule("7. Report for the operations team"))
    _strata(workdir, "report", "--data", "data", "--as-of", as_of, "--scores", "scores", "--out", "report.html")

    elapsed = time.perf_counter() - started
    console.print(Rule("Done"))
    console.print(f"Demo finished in {elapsed:.0f} s. Outputs in [bold]{escape(str(workdir))}[/]:")
    console.print(f"  report:        [bold]{escape(str(workdir / 'report.html'))}[/]  (open it in a browser; it works offline)")
    console.print(f"  scores:        {escape(str(workdir / 'scores'))}")
    console.print(f"  rejected rows: {escape(str(workdir / 'rejects'))}")
    db = escape(str(workdir / "mlflow.db"))
    console.print(f"  MLflow store:  {db}  (mlflow ui --backend-store-uri sqlite:///{db})")
    console.print("Online API with an API key (from the demo directory):")
    console.print(f"  cd {escape(str(workdir))} && STRATA_API_KEY=demo-secret strata serve --port 3000")
    console.print("  curl -s -H 'X-API-Key: demo-secret' -H 'Content-Type: application/json' \\")
    console.print("       -d '{\"user_ids\": [\"u0000001\"]}' http://127.0.0.1:3000/predict")


if __name__ == "__main__":
    main()
