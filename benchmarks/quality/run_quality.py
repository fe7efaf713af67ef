"""Model-quality benchmark: the Strata models next to BG/NBD + Gamma-Gamma and the rule baseline.

For every evaluation cutoff ``c`` of a data set, the production training code is run exactly as
``strata train --as-of c+H`` would run it (:func:`training.train.prepare_training_data` with
``as_of = c + horizon``, then :func:`training.train.fit_bundle`): the stacked training set ends at
``c + H``, so its latest cutoff is ``c``; trees learn on the cutoffs whose label window ends by ``c``,
and the users at ``c`` are split into a holdout half (early stopping, calibration, model choice) and
an evaluation half that nothing is fitted on. On the buyers of that evaluation half, with labels from
``(c, c + H]``, the run measures

* the model (:func:`training.train.evaluate_bundle`),
* BG/NBD + Gamma-Gamma fitted on the orders up to ``c`` (:func:`training.baselines.bgnbd_baseline`),
* the rule baseline, recency rank for churn and last-90-day spend for value
  (:func:`training.baselines.rule_baseline`),

all on the same rows: churn AUC, PR-AUC, Brier, ECE and lift of the top decile; value MAE, RMSE,
Spearman, normalized Gini and the total predicted vs actual spend. It prints each cutoff, the mean
over cutoffs, and PASS/FAIL of the targets of the quality issue on the mean (with the number of
cutoffs that pass each one):

* churn AUC at least 0.01 above BG/NBD;
* value normalized Gini and Spearman at or above BG/NBD;
* total predicted spend within 10% of the actual.

Cutoffs: for CDNOW, non-overlapping ``H``-day windows tiling the classic 39-week holdout from
1997-10-01 (the end of the 39-week calibration period of Fader, Hardie and Lee); for other data,
``--n-cutoffs`` windows stepping back by ``H`` days from the end of the data. ``--cutoffs`` overrides
both. A cutoff the training code cannot serve (e.g. the classic split with ``--horizon-days 273``: no
training cutoff lies a full horizon before 1997-10-01) is reported as skipped with the reason.

Usage::

    python benchmarks/quality/run_quality.py                       # CDNOW and the 20k-user demo data
    python benchmarks/quality/run_quality.py --data cdnow --horizon-days 90
    python benchmarks/quality/run_quality.py --data path/to/dir    # orders.csv (+ events, users)
    python benchmarks/quality/run_quality.py --data path/to/CDNOW_sample.txt --cutoffs 1998-04-01

Cutoffs run in parallel worker processes (``--jobs``, default 2); LightGBM trains single-threaded on
sets of this size, so two workers use two cores.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import queue
import resource
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from features.config import StrataConfig
from features.dataset import Dataset
from features.errors import StrataError

CDNOW_MASTER = Path(os.environ.get("STRATA_CDNOW_MASTER", "/work/shared/data/cdnow/CDNOW_master.txt"))
#: End of the classic 39-week calibration period of the CDNOW studies (cutoff at 00:00 UTC).
CDNOW_CLASSIC_CUTOFF = pd.Timestamp("1997-10-01", tz="UTC")
CDNOW_CLASSIC_HOLDOUT_DAYS = 39 * 7
DEMO_END = pd.Timestamp("2024-12-31", tz="UTC")

MODELS: tuple[str, ...] = ("model", "bgnbd", "rule")
MODEL_TITLES = {"model": "model", "bgnbd": "BG/NBD+GG", "rule": "rule"}


@dataclass(frozen=True)
class MetricRow:
    """A row of the result tables: metric key (``churn_auc``...), label, and which way is better."""

    key: str
    label: str
    better: Literal["higher", "lower", "zero"]
    fmt: str = "{:.4f}"


METRIC_ROWS: tuple[MetricRow, ...] = (
    MetricRow("churn_auc", "churn AUC", "higher"),
    MetricRow("churn_pr_auc", "churn PR-AUC", "higher"),
    MetricRow("churn_brier", "churn Brier", "lower"),
    MetricRow("churn_ece", "churn ECE", "lower"),
    MetricRow("churn_lift_top_decile", "churn lift top decile", "higher", "{:.3f}"),
    MetricRow("value_mae", "value MAE", "lower", "{:.2f}"),
    MetricRow("value_rmse", "value RMSE", "lower", "{:.2f}"),
    MetricRow("value_spearman", "value Spearman", "higher"),
    MetricRow("value_normalized_gini", "value normalized Gini", "higher"),
    MetricRow("value_total_predicted", "value total predicted", "zero", "{:,.0f}"),
    MetricRow("value_total_spend_error_pct", "value total error %", "zero", "{:+.1f}"),
    MetricRow("value_abs_total_spend_error_pct", "value |total error| %", "lower", "{:.1f}"),
)
#: Context rows (the same for every model): evaluation rows and what happened in the horizon.
CONTEXT_ROWS: tuple[MetricRow, ...] = (
    MetricRow("n_eval_buyers", "evaluation buyers", "zero", "{:,.0f}"),
    MetricRow("churn_rate", "actual churn rate", "zero", "{:.3f}"),
    MetricRow("value_total_actual", "actual total spend", "zero", "{:,.0f}"),
)


@dataclass(frozen=True)
class Target:
    """A quality target of the issue, checked on the model's and BG/NBD's figures."""

    label: str
    metric: str
    rule: Literal["above_bgnbd_by", "at_least_bgnbd", "abs_at_most"]
    threshold: float

    def check(self, model: float, bgnbd: float) -> bool:
        """Whether ``model`` (and ``bgnbd`` where compared) meet the target; False on NaN."""
        if not math.isfinite(model):
            return False
        if self.rule == "abs_at_most":
            return abs(model) <= self.threshold
        if not math.isfinite(bgnbd):
            return False
        if self.rule == "above_bgnbd_by":
            return model >= bgnbd + self.threshold
        return model >= bgnbd


TARGETS: tuple[Target, ...] = (
    Target("churn AUC >= BG/NBD + 0.01", "churn_auc", "above_bgnbd_by", 0.01),
    Target("value normalized Gini >= BG/NBD", "value_normalized_gini", "at_least_bgnbd", 0.0),
    Target("value Spearman >= BG/NBD", "value_spearman", "at_least_bgnbd", 0.0),
    # on the absolute error, so that errors of opposite sign at two cutoffs cannot cancel in the mean
    Target("|total spend error| <= 10%", "value_abs_total_spend_error_pct", "abs_at_most", 10.0),
)


@dataclass
class CutoffResult:
    """Figures of one evaluation cutoff: ``metrics[model][key]`` plus context, or why it was skipped."""

    cutoff: str
    horizon_days: int
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    context: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    def get(self, model: str, key: str) -> float:
        """``metrics[model][key]``, NaN when absent."""
        return self.metrics.get(model, {}).get(key, float("nan"))

    def get_context(self, key: str) -> float:
        """``context[key]``, NaN when absent."""
        return self.context.get(key, float("nan"))


@dataclass
class DatasetResult:
    """All cutoffs of one data set, with the mean over the evaluated ones."""

    name: str
    description: str
    horizon_days: int
    cutoffs: list[CutoffResult]
    seconds: float = 0.0

    @property
    def evaluated(self) -> list[CutoffResult]:
        return [c for c in self.cutoffs if c.skipped is None]

    def mean(self, model: str, key: str) -> float:
        """Mean of ``key`` for ``model`` over the evaluated cutoffs (NaN if none has it)."""
        values = [c.metrics.get(model, {}).get(key, float("nan")) for c in self.evaluated]
        finite = [v for v in values if math.isfinite(v)]
        return float(np.mean(finite)) if finite and len(finite) == len(values) else float("nan")

    def mean_context(self, key: str) -> float:
        values = [c.context.get(key, float("nan")) for c in self.evaluated]
        return float(np.mean(values)) if values else float("nan")


# ----------------------------------------------------------------------------- data


@dataclass
class LoadedData:
    """A data set to benchmark: short name, one-line description, the tables, and whether it is a CDNOW file."""

    name: str
    description: str
    dataset: Dataset
    cdnow: bool


def load_data(spec: str, config: StrataConfig, demo_users: int, seed: int) -> LoadedData:
    """The data set of ``--data``: ``cdnow`` (the master file), ``demo`` (generated), a CDNOW text file,
    or a directory with ``orders.csv|parquet`` (and optional ``events``/``users``), validated like ``strata``.
    """
    from features.cdnow import cdnow_orders

    if spec in ("cdnow", "demo"):
        path = CDNOW_MASTER
    else:
        path = Path(spec)
    if spec == "demo":
        from features.demo_data import generate_dataset

        ds = generate_dataset(n_users=demo_users, end=DEMO_END, seed=seed)
        return LoadedData("demo", f"generated demo data, {demo_users:,} users (seed {seed}, end {DEMO_END.date()})", ds, False)
    if spec == "cdnow" or path.is_file():
        orders = cdnow_orders(path)
        name = "cdnow" if spec == "cdnow" else path.stem
        desc = f"CDNOW file {path.name}, {orders['user_id'].nunique():,} customers, orders only"
        return LoadedData(name, desc, Dataset(orders=orders), True)
    if path.is_dir():
        from features.validation import load_dataset

        ds, report = load_dataset(path, config=config)
        desc = f"directory {path}, {ds.orders['user_id'].nunique():,} buyers, {len(ds.orders):,} orders"
        if report.rows_rejected:
            desc += f" ({report.rows_rejected:,} input rows rejected by validation)"
        return LoadedData(path.name or str(path), desc, ds, False)
    raise StrataError(f"--data: value {spec!r} is not 'cdnow', 'demo', a CDNOW text file or a data directory")


def default_cutoffs(data: LoadedData, horizon_days: int, n_cutoffs: int) -> list[pd.Timestamp]:
    """Evaluation cutoffs, oldest first (see the module docstring)."""
    from training.train import resolve_end

    end, _ = resolve_end(data.dataset, None)
    horizon = pd.Timedelta(days=horizon_days)
    if data.cdnow:
        # Tile the classic 39-week holdout (1997-10-01 ..) with non-overlapping H-day label windows;
        # always keep the classic cutoff itself so that its fate (evaluated or skipped) is reported.
        holdout_end = min(end, CDNOW_CLASSIC_CUTOFF + pd.Timedelta(days=CDNOW_CLASSIC_HOLDOUT_DAYS))
        out = [CDNOW_CLASSIC_CUTOFF]
        while out[-1] + 2 * horizon <= holdout_end:
            out.append(out[-1] + horizon)
        return out
    if n_cutoffs < 1:
        raise StrataError(f"--n-cutoffs: value {n_cutoffs} must be at least 1")
    return [end - horizon * k for k in range(n_cutoffs, 0, -1)]


# ----------------------------------------------------------------------------- one cutoff

Progress = Callable[[str], None]


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all its threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def evaluate_cutoff(
    dataset: Dataset, config: StrataConfig, cutoff: pd.Timestamp, horizon_days: int, progress: Progress | None = None
) -> CutoffResult:
    """Train the production bundle for evaluation cutoff ``cutoff`` and measure it next to the baselines."""
    from training.models import PROSPECT_COLUMN
    from training.train import baseline_metrics, baseline_scores, fit_bundle, prepare_training_data

    step = progress or (lambda _m: None)
    result = CutoffResult(cutoff=str(cutoff.date()), horizon_days=horizon_days)
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    try:
        data = prepare_training_data(dataset, config, as_of=cutoff + pd.Timedelta(days=horizon_days),
                                     horizon_days=horizon_days, progress=step)
        if data.split.latest_cutoff != cutoff:
            raise StrataError(f"training set's latest cutoff {data.split.latest_cutoff} is not {cutoff}")
        fit = fit_bundle(data, progress=step)
    except StrataError as err:
        result.skipped = str(err)
        return result
    eval_rows = fit.eval_rows
    buyers = eval_rows[PROSPECT_COLUMN].to_numpy(dtype=float) < 0.5
    eval_buyers = eval_rows.loc[buyers].reset_index(drop=True)
    step("baselines")
    baselines = baseline_scores(dataset, eval_buyers, cutoff, horizon_days)
    flat = {**fit.metrics, **baseline_metrics(eval_buyers, baselines)}
    actual_total = float(eval_buyers["label_value"].sum())
    for model in MODELS:
        prefix = "" if model == "model" else f"{model}_"
        m = {row.key: float(flat.get(prefix + row.key, float("nan"))) for row in METRIC_ROWS}
        m["value_total_predicted"] = actual_total * (1.0 + m["value_total_spend_error_pct"] / 100.0)
        m["value_abs_total_spend_error_pct"] = abs(m["value_total_spend_error_pct"])
        if model == "model" or f"{prefix}churn_auc" in flat:  # a baseline that could not be fitted is absent
            result.metrics[model] = m
    if "conversion_auc" in flat:
        result.metrics["model"]["conversion_auc"] = float(flat["conversion_auc"])
    result.context = {
        "n_eval_buyers": float(len(eval_buyers)),
        "churn_rate": float(eval_buyers["label_churn"].mean()),
        "value_total_actual": actual_total,
    }
    split = data.split
    result.info = {
        "train_cutoffs": [str(c.date()) for c in split.train_cutoffs],
        "n_train_rows": int(split.train.sum()),
        "n_holdout_rows": int(split.holdout.sum()),
        "n_eval_rows": int(split.evaluation.sum()),
        "value_model_kind": fit.params.get("value_model_kind"),
        "churn_best_iteration": fit.params.get("churn_best_iteration"),
        "conversion_model": fit.params.get("conversion_model"),
        "notes": [*fit.notes, *baselines.notes],
        "seconds": round(time.perf_counter() - t0, 1),
        "cpu_seconds": round(_cpu_seconds() - cpu0, 1),
    }
    return result


# ----------------------------------------------------------------------------- worker processes

_WORKER: dict[str, Any] = {}


def _init_worker(dataset: Dataset, config: StrataConfig, messages: Any) -> None:
    _WORKER.update(dataset=dataset, config=config, messages=messages)


def _run_in_worker(index: int, cutoff: pd.Timestamp, horizon_days: int) -> CutoffResult:
    messages = _WORKER["messages"]
    return evaluate_cutoff(_WORKER["dataset"], _WORKER["config"], cutoff, horizon_days,
                           progress=lambda msg: messages.put((index, msg)))


def run_dataset(
    name: str,
    description: str,
    dataset: Dataset,
    config: StrataConfig,
    cutoffs: Sequence[pd.Timestamp],
    horizon_days: int,
    jobs: int,
    console: Any,
) -> DatasetResult:
    """Evaluate every cutoff (in ``jobs`` worker processes when > 1) with a progress display."""
    import multiprocessing as mp

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    t0 = time.perf_counter()
    results: list[CutoffResult | None] = [None] * len(cutoffs)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        overall = bar.add_task(f"{name}: {len(cutoffs)} cutoff(s)", total=len(cutoffs))
        tasks = [bar.add_task(f"  {c.date()}: waiting", total=None) for c in cutoffs]

        def show(i: int, msg: str) -> None:
            bar.update(tasks[i], description=f"  {cutoffs[i].date()}: {msg}")

        if jobs <= 1 or len(cutoffs) == 1:
            for i, c in enumerate(cutoffs):
                res = evaluate_cutoff(dataset, config, c, horizon_days, progress=functools.partial(show, i))
                results[i] = res
                show(i, "done" if res.skipped is None else "skipped")
                bar.advance(overall)
        else:
            ctx = mp.get_context("spawn")  # no fork of a process that may hold OpenMP or DuckDB threads
            with ctx.Manager() as manager:
                messages = manager.Queue()
                with ProcessPoolExecutor(max_workers=min(jobs, len(cutoffs)), mp_context=ctx,
                                         initializer=_init_worker, initargs=(dataset, config, messages)) as pool:
                    futures: dict[Future[CutoffResult], int] = {
                        pool.submit(_run_in_worker, i, c, horizon_days): i for i, c in enumerate(cutoffs)
                    }
                    pending = set(futures)
                    while pending:
                        try:
                            i, msg = messages.get(timeout=0.2)
                            show(i, msg)
                        except queue.Empty:
                            pass
                        for fut in [f for f in pending if f.done()]:
                            pending.discard(fut)
                            i = futures[fut]
                            results[i] = fut.result()
                            show(i, "done" if results[i].skipped is None else "skipped")  # type: ignore[union-attr]
                            bar.advance(overall)
    done = [r for r in results if r is not None]
    return DatasetResult(name=name, description=description, horizon_days=horizon_days, cutoffs=done,
                         seconds=time.perf_counter() - t0)


# ----------------------------------------------------------------------------- report


def _fmt(row: MetricRow, value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else row.fmt.format(value)


def _metric_table_rows(get: Callable[[str, str], float], context: Callable[[str], float]) -> list[list[str]]:
    rows = []
    for row in CONTEXT_ROWS:
        rows.append([row.label, _fmt(row, context(row.key)), "", ""])
    for row in METRIC_ROWS:
        rows.append([row.label, *(_fmt(row, get(m, row.key)) for m in MODELS)])
    conv = get("model", "conversion_auc")
    if math.isfinite(conv):
        rows.append(["conversion AUC (prospects)", f"{conv:.4f}", "-", "-"])
    return rows


@dataclass(frozen=True)
class TargetOutcome:
    """A target checked on one data set: means over the evaluated cutoffs, and per cutoff."""

    target: Target
    model: float
    bgnbd: float
    per_cutoff: list[tuple[float, bool]]
    """(model - BG/NBD, or the model's value for ``abs_at_most`` targets; passed) per evaluated cutoff."""
    passed: bool

    def cells(self) -> tuple[str, str, str, str, str, str]:
        """(target, model, BG/NBD, model - BG/NBD, per cutoff, verdict) as text."""
        t = self.target
        absolute = t.rule == "abs_at_most"
        fmt = "{:.2f}%" if absolute else "{:.4f}"
        diff_fmt = "{:.1f}%" if absolute else "{:+.4f}"

        def text(v: float, f: str = fmt) -> str:
            return f.format(v) if math.isfinite(v) else "-"

        per = ", ".join(text(v, diff_fmt) for v, _ in self.per_cutoff)
        n_pass = sum(ok for _, ok in self.per_cutoff)
        return (
            t.label,
            text(self.model),
            "-" if absolute else text(self.bgnbd),
            "-" if absolute else text(self.model - self.bgnbd, "{:+.4f}"),
            f"{n_pass}/{len(self.per_cutoff)} ({per})",
            "PASS" if self.passed else "FAIL",
        )


def check_targets(result: DatasetResult) -> list[TargetOutcome]:
    """Every target of :data:`TARGETS` on ``result``: PASS/FAIL on the mean, and per cutoff."""
    out = []
    for t in TARGETS:
        m, b = result.mean("model", t.metric), result.mean("bgnbd", t.metric)
        per = []
        for c in result.evaluated:
            cm = c.metrics["model"].get(t.metric, float("nan"))
            cb = c.metrics.get("bgnbd", {}).get(t.metric, float("nan"))
            per.append((cm if t.rule == "abs_at_most" else cm - cb, t.check(cm, cb)))
        out.append(TargetOutcome(t, m, b, per, bool(result.evaluated) and t.check(m, b)))
    return out


TARGET_COLUMNS = ("target", "model", "BG/NBD", "model - BG/NBD", "cutoffs passing", "verdict")


def print_report(result: DatasetResult, console: Any) -> None:
    """Per-cutoff tables, the mean over cutoffs and the targets, as rich tables."""
    from rich import box
    from rich.table import Table

    console.print()
    console.rule(f"[bold]{result.name}[/]: {result.description}; horizon {result.horizon_days} days")
    for c in result.cutoffs:
        if c.skipped is not None:
            console.print(f"[yellow]cutoff {c.cutoff} skipped:[/] {c.skipped}")
            continue
        console.print(f"[bold]{result.name}, cutoff {c.cutoff}[/]: labels from ({c.cutoff}, +{c.horizon_days} days]")
        table = Table(box=box.SIMPLE_HEAD)
        table.add_column("metric")
        for m in MODELS:
            table.add_column(MODEL_TITLES[m], justify="right")

        for r in _metric_table_rows(c.get, c.get_context):
            table.add_row(*r)
        console.print(table)
        info = c.info
        console.print(
            f"  trained on cutoffs {', '.join(info['train_cutoffs'])} ({info['n_train_rows']:,} rows), "
            f"holdout {info['n_holdout_rows']:,} rows, evaluation {info['n_eval_rows']:,} rows; "
            f"value model {info['value_model_kind']}, churn trees {info['churn_best_iteration']}, "
            f"conversion model {info['conversion_model']}; {info['seconds']} s wall, {info['cpu_seconds']} CPU s"
        )
    ev = result.evaluated
    if not ev:
        console.print(f"[red]{result.name}: no cutoff could be evaluated[/]")
        return
    console.print(f"[bold]{result.name}: mean over {len(ev)} cutoff(s)[/] ({', '.join(c.cutoff for c in ev)})")
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("metric")
    for m in MODELS:
        table.add_column(MODEL_TITLES[m], justify="right")
    for r in _metric_table_rows(result.mean, result.mean_context):
        table.add_row(*r)
    console.print(table)
    console.print("  rule churn score is a rank, not a probability: only its AUC, PR-AUC and lift are comparable.")
    targets = Table(title=f"{result.name}: targets, verdict on the mean over cutoffs", box=box.SIMPLE_HEAD,
                    title_justify="left")
    for col in TARGET_COLUMNS:
        targets.add_column(col, justify="right" if col in ("model", "BG/NBD", "model - BG/NBD") else "left")
    for outcome in check_targets(result):
        *cells, verdict = outcome.cells()
        colour = "green" if outcome.passed else "red"
        targets.add_row(*cells, f"[bold {colour}]{verdict}[/]")
    console.print(targets)
    cpu = sum(c.info.get("cpu_seconds", 0.0) for c in result.evaluated)
    console.print(f"  {result.name}: {result.seconds:.0f} s wall, {cpu:.0f} CPU s in the cutoff workers")


def _md(text: str) -> str:
    """A Markdown table cell: pipes escaped (``|total error|`` would split the cell)."""
    return text.replace("|", "\\|")


def markdown_report(results: Sequence[DatasetResult]) -> str:
    """The mean tables and targets of every data set as Markdown (for the README)."""
    lines: list[str] = []
    for r in results:
        ev = r.evaluated
        lines += [f"### {r.name}: {r.description}", "",
                  f"Horizon {r.horizon_days} days; cutoffs evaluated: {', '.join(c.cutoff for c in ev) or 'none'}."]
        for c in r.cutoffs:
            if c.skipped is not None:
                lines.append(f"Skipped {c.cutoff}: {c.skipped}")
        lines.append("")
        if not ev:
            continue
        header = "| metric | " + " | ".join(f"{c.cutoff} model / BG/NBD / rule" for c in ev) + " | mean model | mean BG/NBD | mean rule |"
        lines += [header, "|" + "---|" * (2 + len(ev) + 2)]
        for row in (*CONTEXT_ROWS, *METRIC_ROWS):
            if row in CONTEXT_ROWS:
                cells = [_fmt(row, c.context.get(row.key, float("nan"))) for c in ev]
                means = [_fmt(row, r.mean_context(row.key)), "", ""]
            else:
                cells = [" / ".join(_fmt(row, c.metrics.get(m, {}).get(row.key, float("nan"))) for m in MODELS) for c in ev]
                means = [_fmt(row, r.mean(m, row.key)) for m in MODELS]
            lines.append(f"| {_md(row.label)} | " + " | ".join(cells) + " | " + " | ".join(means) + " |")
        lines += ["", "| " + " | ".join(TARGET_COLUMNS) + " |", "|" + "---|" * len(TARGET_COLUMNS)]
        for outcome in check_targets(r):
            *cells, verdict = outcome.cells()
            lines.append("| " + " | ".join(_md(c) for c in cells) + f" | **{verdict}** |")
        cpu = sum(c.info.get("cpu_seconds", 0.0) for c in ev)
        lines += ["", f"Wall time {r.seconds:.0f} s ({cpu:.0f} CPU s in the cutoff workers).", ""]
    return "\n".join(lines)


def _parse_cutoffs(text: str | None) -> list[pd.Timestamp] | None:
    from features.cutoffs import parse_as_of

    if not text:
        return None
    out = []
    for part in text.split(","):
        try:
            out.append(parse_as_of(part.strip()))
        except (ValueError, StrataError) as err:
            raise StrataError(f"--cutoffs: value {part.strip()!r} is not a date ({err})") from None
    return sorted(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit code (0 also when a target fails: the verdict is printed)."""
    from rich.console import Console

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", default=None,
                        help="cdnow, demo, a CDNOW text file or a data directory; repeat for several (default: cdnow and demo)")
    parser.add_argument("--horizon-days", type=int, default=None, help="prediction horizon H in days (default: config labels.horizon_days, 90)")
    parser.add_argument("--cutoffs", default=None, help="comma-separated evaluation cutoffs (dates, UTC midnight); overrides the defaults")
    parser.add_argument("--n-cutoffs", type=int, default=3, help="evaluation cutoffs for non-CDNOW data, H days apart, ending at the data end - H (default 3)")
    parser.add_argument("--demo-users", type=int, default=20_000, help="users of the generated demo data (default 20000)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the generated demo data (default 42)")
    parser.add_argument("--config", type=Path, default=None, help="a strata TOML configuration (default: built-in defaults)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes, one cutoff each (default 2)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables as Markdown to this file")
    args = parser.parse_args(argv)

    console = Console(width=None if sys.stdout.isatty() else 160)
    err_console = Console(stderr=True)
    try:
        from features.config import load_config

        config = load_config(args.config) if args.config is not None else StrataConfig()
        horizon = int(args.horizon_days if args.horizon_days is not None else config.labels.horizon_days)
        if horizon < 1:
            raise StrataError(f"--horizon-days: value {horizon} must be a positive number of days")
        explicit = _parse_cutoffs(args.cutoffs)
        results = []
        for spec in args.data or ["cdnow", "demo"]:
            with err_console.status(f"loading {spec}"):
                data = load_data(spec, config, args.demo_users, args.seed)
            cutoffs = explicit or default_cutoffs(data, horizon, args.n_cutoffs)
            result = run_dataset(data.name, data.description, data.dataset, config, cutoffs, horizon, args.jobs,
                                 err_console)
            print_report(result, console)
            results.append(result)
    except StrataError as err:
        err_console.print(f"[red]error:[/] {err}")
        return 2
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2, default=str))
    if args.markdown is not None:
        args.markdown.write_text(markdown_report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
