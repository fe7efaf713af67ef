"""Batch scoring of the whole user base: atomic, resumable, in bounded memory.

How a run goes (``strata score``):

1. Features are built once (DuckDB) and written to ``<out>.tmp-<key>/_work/features.parquet`` in row
   groups of ``config.scoring.chunk_users`` users (uncompressed: a work file). The run scores the
   built frame chunk by chunk (slices, no copy; the Arrow copy is dropped once written) when the
   work file reads back as exactly that frame (see ``_as_read_back``), else the frame the work file
   reads back as; a resumed run reads the chunks back from the work file: the same data either way.
2. Each chunk (one row group) is scored by :class:`serving.scorer.Scorer` and written as one part file,
   atomically (temp file + rename), and recorded in ``_work/manifest.json`` (also replaced atomically).
3. With a budget, the allocation needs a global pass: every chunk's eligible (user, action, value,
   cost) candidates are kept in ``_work``, allocated greedily in one pass (small columns only), and the
   chunks are finished with the selection (again one atomic part file each).
4. With an online store, each finished chunk's features and scores (the frames in memory, not re-read)
   also go into a new store file (:meth:`serving.online_store.OnlineStore.snapshot`, one transaction per
   chunk, recorded in the manifest), which replaces the live store in one ``os.replace`` once every
   chunk is in: the store then holds exactly this run's users, and the API never sees half a run.
   A resumed run continues the same build file; chunks it lacks are read back from the part files.
5. ``_manifest.json`` (the run's arguments and summary) is written, ``_work`` is removed and the
   temporary directory is renamed to ``<out>``: the output appears only when complete.

Both cores stay busy (``config.scoring.pipeline``, on by default), with three kinds of thread:

- two helper threads make the model pass of the next two chunks (:meth:`serving.scorer.Scorer.model_pass`:
  the trees, LightGBM or numba, and the reason texts, numba and Arrow: compiled code that releases the
  GIL), each walking the trees on one core (:func:`_one_core_trees`); with a budget, the finishing pass
  reads its next chunks' work files ahead the same way, and so does the online store catch-up;
- the calling thread post-processes one chunk at a time in chunk order (layers, refinement,
  interventions, statistics) and does every piece of bookkeeping: online store writes (one writer),
  manifest marks, progress;
- one writer thread writes the work file (while the first chunks are already being scored from
  memory) and then each chunk's part file while the calling thread moves on; a chunk is recorded in the
  manifest only after its file is in place, and the work file is recorded before any chunk.

So the output, the manifest and resuming are exactly what one chunk at a time gives (the tests compare
the bytes); at most three model passes and one finished chunk waiting for its write are in memory,
besides the feature table itself; the work file is written one chunk at a time (one chunk's Arrow copy).
Measured with ``benchmarks/bench_scoring_memory.py`` (chunks of 200k, each size in a fresh process): peak
3.3 GiB at 1M users and 11.0 GiB at 10M (3.3x for 10x the users; about 0.9 KB per additional user,
mostly the feature table). Measured at 1M users on 2 cores
(``benchmarks/bench_scoring.py --compare-serial``): compiled trees 10.9 s wall for 19.4 s CPU (one
chunk at a time: 15.3 s for 18.3 s), LightGBM 17.8 s for 30.8 s (22.4 s for 29.8 s). Worker processes
were measured and dropped: starting one (imports, bundle, numba cache) costs about 3 s of CPU, too much
on a run of 10-20 s, and the online store needs one writer anyway.

``<key>`` hashes the run's arguments (data files with sizes and modification times, ``as_of``, model
name and *version*, budget, format, chunk size, configuration but ``scoring.pipeline``). Re-running with the same arguments
after a crash or ``kill -9`` skips every finished chunk; different arguments use another directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import pandas as pd

from features.errors import StrataError
from features.io import fsync_dir
from serving.interventions import select_without_budget
from serving.scorer import OUTPUT_COLUMNS, ModelPass, Scorer

if TYPE_CHECKING:
    from rich.console import Console

    from serving.online_store import OnlineStore

log = logging.getLogger(__name__)
T = TypeVar("T")

OutputFormat = Literal["parquet", "csv"]
#: Helper threads of a pipelined run, and how many chunks they work ahead of the calling thread.
_HELPERS = 2
#: Chunk sizes up to this many rows are row groups of the work file as they are (pyarrow caps a row group
#: at 64Mi rows; this bound is far below), so such chunks are scored while the work file is written.
_MAX_ROW_GROUP = 1024 * 1024
MANIFEST = "_manifest.json"
WORK = "_work"
_FLOAT_OUTPUT = ["churn_risk", "conversion_prob", "predicted_value", "value_p10", "value_p90", "action_cost",
                 "expected_incremental_value"]


class BatchError(StrataError):
    """A batch scoring run cannot proceed (output exists, inconsistent work directory...)."""


# ----------------------------------------------------------------------------- summary


@dataclass
class BatchSummary:
    """What a run produced: counts per layer, risk and value totals and the budget used.

    Risk totals are sums of probabilities (expected number of churners / converters over the horizon);
    value totals are shop currency over the horizon.
    """

    out: str
    as_of: str
    model_name: str
    model_version: str
    n_users: int = 0
    n_chunks: int = 0
    chunks_resumed: int = 0
    lifecycle: dict[str, int] = field(default_factory=dict)
    refined_layer: dict[str, int] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)
    expected_churners: float = 0.0
    buyers_scored: int = 0
    expected_converters: float = 0.0
    prospects_scored: int = 0
    predicted_value_total: float = 0.0
    expected_incremental_value_total: float = 0.0
    treated: int = 0
    control: int = 0
    budget: float | None = None
    budget_used: float = 0.0
    seconds: float = 0.0
    format: str = "parquet"
    parts: list[str] = field(default_factory=list)

    @property
    def mean_churn_risk(self) -> float:
        return self.expected_churners / self.buyers_scored if self.buyers_scored else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def chunk_stats(scores: pd.DataFrame, candidates: pd.DataFrame) -> dict[str, Any]:
    """Additive statistics of one scored chunk (merged into :class:`BatchSummary`).

    ``candidates`` are the chunk's candidates with their final ``selected`` flags: treated/control
    counts, actions and budget use count every selected pair (several per user when
    ``max_actions_per_user`` > 1).
    """
    sel = candidates[candidates["selected"].astype(bool)]
    ctl = sel["control"].astype(bool)
    treated = sel[~ctl]
    return {
        "n_users": len(scores),
        "lifecycle": {str(k): int(v) for k, v in scores["lifecycle"].value_counts().items()},
        "refined_layer": {str(k): int(v) for k, v in scores["refined_layer"].value_counts().items()},
        "actions": {str(k): int(v) for k, v in treated["action_id"].value_counts().items()},
        "expected_churners": float(np.nansum(scores["churn_risk"].to_numpy(dtype=float))),
        "buyers_scored": int(scores["churn_risk"].notna().sum()),
        "expected_converters": float(np.nansum(scores["conversion_prob"].to_numpy(dtype=float))),
        "prospects_scored": int(scores["conversion_prob"].notna().sum()),
        "predicted_value_total": float(np.nansum(scores["predicted_value"].to_numpy(dtype=float))),
        "expected_incremental_value_total": float(treated["expected_incremental_value"].sum()),
        "treated": len(treated),
        "control": int(ctl.sum()),
        "budget_used": float(treated["unit_cost"].sum()),
    }


def _merge_stats(summary: BatchSummary, stats: dict[str, Any]) -> None:
    for key, value in stats.items():
        if isinstance(value, dict):
            target = getattr(summary, key)
            for k, v in value.items():
                target[k] = target.get(k, 0) + v
        else:
            setattr(summary, key, getattr(summary, key) + value)


# ----------------------------------------------------------------------------- atomic files


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _atomic_write_json(path: Path, obj: Any) -> None:
    _atomic_write_bytes(path, json.dumps(obj, indent=1, default=str).encode("utf-8"))


#: Parquet part files: zstd level 1 writes as fast as snappy and halves the size (the reason and
#: intervention JSON text is most of each part); dictionary encoding only for the columns with few
#: distinct values (hashing a million unique JSON texts only to give up on the dictionary is waste).
PARQUET_COMPRESSION = "zstd"
PARQUET_COMPRESSION_LEVEL = 1
_NO_DICTIONARY = {"user_id", "reasons", "interventions", "churn_risk", "conversion_prob", "predicted_value",
                  "value_p10", "value_p90", "expected_incremental_value"}


def _write_parquet(table: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(
        table,
        path,
        compression=PARQUET_COMPRESSION,
        compression_level=PARQUET_COMPRESSION_LEVEL,
        use_dictionary=[c for c in table.column_names if c not in _NO_DICTIONARY],
    )


def _atomic_write_frame(frame: pd.DataFrame, path: Path, fmt: OutputFormat) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if fmt == "parquet":
        _write_parquet(_scores_to_arrow(frame), tmp)
    else:
        frame.to_csv(tmp, index=False)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- run key


def file_fingerprint(path: Path | None) -> dict[str, Any] | None:
    """Identity of an input file for the run key: absolute path, size (bytes), modification time (ns)."""
    if path is None:
        return None
    p = Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def run_key(args: dict[str, Any]) -> str:
    """Short stable hash (16 hex digits) of a run's arguments."""
    text = json.dumps(args, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# ----------------------------------------------------------------------------- progress


class _Progress:
    """A rich progress display, or nothing (tests, non-interactive use)."""

    def __init__(self, enabled: bool, console: Console | None) -> None:
        self._bar: Any = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            )

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def task(self, description: str, total: int, completed: int = 0) -> Any:
        if self._bar is None:
            return None
        return self._bar.add_task(description, total=total, completed=completed)

    def advance(self, task: Any, n: int = 1) -> None:
        if self._bar is not None and task is not None:
            self._bar.advance(task, n)


# ----------------------------------------------------------------------------- one chunk ahead


def ahead(
    pool: ThreadPoolExecutor | None, fn: Callable[[int], T], items: Iterable[int], depth: int = 1
) -> Iterator[tuple[int, T]]:
    """``(i, fn(i))`` for each item in order, with ``fn`` of the next ``depth`` items running on ``pool``
    while the caller works on the current one (None: no pool, each computed when asked for).

    At most ``depth + 1`` results exist at a time (the one handed out and those being made), so memory
    stays bounded by that many chunks. An exception of ``fn`` is raised here, for the item it belongs
    to. A caller that stops early leaves up to ``depth`` calls queued or running; shut the pool down
    (``cancel_futures=True, wait=True``) to drop the queued ones and wait for the running ones.
    """
    todo = list(items)
    if pool is None:
        for i in todo:
            yield i, fn(i)
        return
    pending: deque[Future[T]] = deque(pool.submit(fn, i) for i in todo[:depth])
    for k, i in enumerate(todo):
        result = pending.popleft().result()
        if k + depth < len(todo):
            pending.append(pool.submit(fn, todo[k + depth]))
        yield i, result
        del result  # free the chunk the caller is done with while the next one is awaited


def _one_core_trees() -> None:
    """On a helper thread: the trees walked on this thread's core only (LightGBM's OpenMP and numba's
    parallel kernels), for this thread alone (both settings are per thread). Two helpers on two chunks
    keep both cores busy without four tree threads fighting over two cores (spinning OpenMP threads
    cost CPU)."""
    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(1)
    threadpool_limits(1, user_api="openmp")


class _WriteBehind:
    """Each chunk's files written on a writer thread while the caller computes the next chunk; what must
    follow the write (online store, manifest) runs on the calling thread once the write is done, in chunk
    order, so the manifest never records a chunk whose file is not in place. Without a pool, at once."""

    def __init__(self, pool: ThreadPoolExecutor | None) -> None:
        self._pool = pool
        self._pending: tuple[Future[None], Callable[[], None]] | None = None

    def submit(self, write: Callable[[], None], then: Callable[[], None]) -> None:
        self.wait()
        if self._pool is None:
            write()
            then()
        else:
            self._pending = (self._pool.submit(write), then)

    def wait(self) -> None:
        """Finish the chunk in flight (its write, then its bookkeeping); also called when a later chunk
        failed, so what was finished is recorded as before."""
        if self._pending is not None:
            future, then = self._pending
            self._pending = None
            future.result()
            then()


# ----------------------------------------------------------------------------- the run


class _Manifest:
    """Work state of one run (which chunks are finished), persisted atomically after each change."""

    def __init__(self, path: Path, key: str, args: dict[str, Any]) -> None:
        self.path = path
        if path.exists():
            state = json.loads(path.read_text(encoding="utf-8"))
            if state.get("key") != key:
                raise BatchError(f"{path}: belongs to another run (key {state.get('key')} != {key}); remove it")
        else:
            state = {"key": key, "args": args, "n_users": None, "n_chunks": None, "stage": {}, "final": {},
                     "allocation": None, "online_store": False, "stored": []}
        self.state: dict[str, Any] = state

    def save(self) -> None:
        _atomic_write_json(self.path, self.state)

    def done(self, phase: str, i: int, part: Path) -> bool:
        return str(i) in self.state[phase] and part.exists()

    def mark(self, phase: str, i: int, info: dict[str, Any]) -> None:
        self.state[phase][str(i)] = info
        self.save()


def run_batch(
    scorer: Scorer,
    build_features: Callable[[], pd.DataFrame],
    out: str | Path,
    *,
    run_args: dict[str, Any],
    budget: float | None = None,
    fmt: OutputFormat = "parquet",
    chunk_users: int | None = None,
    last_contacted: pd.DataFrame | None = None,
    online_store: OnlineStore | None = None,
    overwrite: bool = False,
    show_progress: bool = False,
    console: Console | None = None,
) -> BatchSummary:
    """Score every user into part files under ``out``; resumable and atomic (see the module docstring).

    Parameters
    ----------
    scorer
        The scorer (model bundle, configuration, model identity).
    build_features
        Called once (unless a previous interrupted run already saved the features) to build the
        feature table of every user.
    out
        Output directory; must not exist unless ``overwrite``.
    run_args
        Identity of the inputs for the run key (data files, ``as_of``...); model identity, budget,
        format, chunk size, configuration (except ``scoring.pipeline``) and the contact history are added
        here.
    budget
        Total cost (shop currency) of the treated actions; None: no budget.
    fmt
        ``parquet`` or ``csv`` part files.
    chunk_users
        Users per chunk (default ``config.scoring.chunk_users``).
    last_contacted
        Optional contact history for frequency caps (:func:`serving.outcomes.last_contacted`).
    online_store
        Store to replace with this run's features and scores (None: skip); see step 4 of the module
        docstring.
    overwrite
        Replace ``out`` if it already exists (``strata score --overwrite``).
    show_progress, console
        Show a progress bar (on ``console``; None: Rich's global console).

    Raises
    ------
    BatchError
        When the feature table has no user (e.g. an ``as_of`` before all data): nothing is written, ``out``
        is not created and the online store keeps its users (a run of no user would empty it). When
        ``build_features`` fails, the temporary directory this call created is removed again.
    """
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    out = Path(out)
    config = scorer.config
    chunk = int(chunk_users or config.scoring.chunk_users)
    if chunk < 1:
        raise BatchError(f"scoring.chunk_users must be >= 1 (got {chunk})")
    if fmt not in ("parquet", "csv"):
        raise BatchError(f"--format: expected parquet or csv (got {fmt!r})")
    if out.exists() and not overwrite:
        raise BatchError(f"{out}: output directory already exists (choose another --out or pass --overwrite)")
    history = None if last_contacted is None else pd.util.hash_pandas_object(last_contacted, index=False).sum()
    args = {
        **run_args,
        "model_name": scorer.model_name,
        "model_version": scorer.model_version,
        "budget": budget,
        "format": fmt,
        "chunk_users": chunk,
        # How many threads score does not change a byte of the output: not part of the run's identity.
        "config": config.model_dump(mode="json", exclude={"scoring": {"pipeline"}}),
        "contact_history": None if history is None else int(history),
    }
    key = run_key(args)
    tmp = out.with_name(f"{out.name}.tmp-{key}")
    work = tmp / WORK
    fresh = not tmp.exists()  # made by this call: removed again if the features cannot be built
    work.mkdir(parents=True, exist_ok=True)
    manifest = _Manifest(work / "manifest.json", key, args)
    ext = "parquet" if fmt == "parquet" else "csv"
    summary = BatchSummary(
        out=str(out), as_of=str(run_args.get("as_of", "")), model_name=scorer.model_name,
        model_version=scorer.model_version, budget=budget, format=fmt,
    )
    features_path = work / "features.parquet"

    with _Progress(show_progress, console) as progress, ExitStack() as cleanup:
        pool = writer = None
        if config.scoring.pipeline:
            pool = ThreadPoolExecutor(_HELPERS, thread_name_prefix="strata-batch", initializer=_one_core_trees)
            writer = ThreadPoolExecutor(1, thread_name_prefix="strata-batch-writer")
            # Also on failure: drop what was queued and wait for the chunks in flight.
            cleanup.callback(pool.shutdown, wait=True, cancel_futures=True)
            cleanup.callback(writer.shutdown, wait=True, cancel_futures=True)
        behind = _WriteBehind(writer)
        # 1. features, once
        # ``frame`` (the features just built, in the pandas form the work file reads back as) is scored
        # from memory; a resumed run reads the work file.
        frame = None
        # The work file being written on the writer thread while the first chunks are scored, and the
        # number of chunks it will hold; recorded in the manifest (``settle_work_file``) before any chunk.
        work_file: Future[None] | None = None
        planned_chunks = 0

        def write_work_file(tables: Iterable[Any], schema: Any) -> None:
            tmp_path = features_path.with_name(".features.parquet.tmp")
            # A work file read once at most: no compression, no dictionaries (fastest to write and read).
            with pq.ParquetWriter(tmp_path, schema, compression="none", use_dictionary=False) as out_file:
                for table in tables:
                    out_file.write_table(table, row_group_size=chunk)
            os.replace(tmp_path, features_path)

        def write_frame_work_file(features: pd.DataFrame) -> None:
            # Chunk by chunk: one chunk's Arrow copy at a time instead of the whole table's (0.75 GB per
            # million users at 91 features), with one schema for every row group.
            import pyarrow as pa

            schema = pa.Schema.from_pandas(features, preserve_index=False)
            write_work_file((_to_arrow(features.iloc[start : start + chunk], schema)
                             for start in range(0, len(features), chunk)), schema)

        def record_work_file(n_chunks: int) -> None:
            manifest.state["n_chunks"] = n_chunks
            manifest.save()
            progress.advance(step)

        def settle_work_file() -> None:
            nonlocal work_file
            if work_file is not None:
                work_file.result()
                work_file = None
                written = pq.ParquetFile(features_path).num_row_groups if n_users else 0
                if written != planned_chunks:
                    raise BatchError(f"internal: {features_path} has {written} row groups, expected {planned_chunks}")
                record_work_file(written)

        def no_user() -> BatchError:
            # Nothing to resume in a run of no user: its directory (and any build file of its key) goes.
            shutil.rmtree(tmp, ignore_errors=True)
            if online_store is not None:
                online_store.snapshot(key).discard()
            return BatchError(f"no user to score as of {run_args.get('as_of', '?')}: the feature table is empty; "
                              f"nothing was written (the online store is left as it is)")

        if manifest.state["n_users"] is None or not features_path.exists():
            step = progress.task("building features", total=1)
            try:
                features = build_features()
                _check_features(features)
            except BaseException:
                if fresh:  # nothing of this run was saved yet: leave no empty directory behind
                    shutil.rmtree(tmp, ignore_errors=True)
                raise
            n_users = len(features)
            if n_users == 0:  # a run of no user must not replace the online store (nor make an empty output)
                raise no_user()
            manifest.state["n_users"] = n_users
            manifest.state["stage"], manifest.state["final"] = {}, {}
            manifest.state["stored"] = []
            if writer is not None and chunk <= _MAX_ROW_GROUP and _reads_back_unchanged(features):
                # The chunks are slices of ``features`` as they are: score them while the copy is written.
                frame = features
                planned_chunks = -(-n_users // chunk)
                work_file = writer.submit(write_frame_work_file, features)
            else:
                table = _to_arrow(features)
                frame = _as_read_back(features, table)
                del features
                write_work_file([table], table.schema)
                del table
                record_work_file(pq.ParquetFile(features_path).num_row_groups if n_users else 0)
        n_users = int(manifest.state["n_users"])
        if n_users == 0:  # the saved state of an earlier attempt of no user
            raise no_user()
        n_chunks = planned_chunks if work_file is not None else int(manifest.state["n_chunks"])
        if frame is not None and n_chunks != -(-n_users // chunk):
            frame = None  # row groups are not whole chunks: read them from the file
        summary.n_chunks = n_chunks
        pfile = None
        pfile_lock = threading.Lock()

        def read_chunk(i: int) -> pd.DataFrame:
            # The same data either way (the work file holds ``frame`` in row groups of ``chunk``).
            nonlocal pfile
            if frame is not None:
                part = frame.iloc[i * chunk : (i + 1) * chunk]  # a view: the scorer never writes to it
                part.index = pd.RangeIndex(len(part))  # as a row group reads back
                return part
            # Helper threads read chunks ahead: one reader is not safe to share (pyarrow's read-range cache
            # failed with "did not find matching cache entry" under concurrent reads), so reads take turns.
            with pfile_lock:
                if pfile is None:
                    pfile = pq.ParquetFile(features_path)
                table = pfile.read_row_group(i)
            return table.to_pandas()

        def part_path(i: int) -> Path:
            return tmp / f"part-{i:05d}.{ext}"

        # The new online store file, filled as chunks finish (each write is one committed transaction).
        snapshot = None
        stored: set[int] = set()
        if online_store is not None and not manifest.state["online_store"]:
            snapshot = online_store.snapshot(key)
            cleanup.callback(snapshot.close)  # also when a chunk fails: the build file stays resumable
            if snapshot.resumed and manifest.state.get("stored"):
                stored = {int(i) for i in manifest.state["stored"]}
            else:
                snapshot.discard()  # a build of an unrecorded attempt: start it again
            manifest.state["stored"] = sorted(stored)

        def store_chunk(i: int, features: pd.DataFrame, scores: pd.DataFrame) -> None:
            # Recorded by the caller's next manifest save, after the chunk's transaction committed.
            if snapshot is not None:
                snapshot.write(features, scores)
                stored.add(i)
                manifest.state["stored"] = sorted(stored)

        def model_chunk(i: int, arrow_text: bool) -> tuple[pd.DataFrame, ModelPass]:
            # The model pass, on a helper thread when pipelined (see the module docstring).
            features = read_chunk(i)
            return features, scorer.model_pass(features, arrow_text=arrow_text)

        def finish_part(
            i: int, features: pd.DataFrame | None, scores: pd.DataFrame, stats: dict[str, Any], task: Any
        ) -> None:
            # After the part file is in: the store (this thread: one writer), then the manifest.
            settle_work_file()
            if features is not None:
                store_chunk(i, features, scores)
            manifest.mark("final", i, {"part": part_path(i).name, "rows": len(scores), "stats": stats})
            progress.advance(task)

        # 2. score chunks
        # Reason and intervention texts stay Arrow (no Python strings) when only Parquet writers read them.
        arrow_text = fmt == "parquet" and snapshot is None
        if budget is None:
            todo = [i for i in range(n_chunks) if not manifest.done("final", i, part_path(i))]
            summary.chunks_resumed = resumed = n_chunks - len(todo)
            task = progress.task("scoring", total=n_chunks, completed=resumed)
            try:
                for i, (features, model) in ahead(pool, partial(model_chunk, arrow_text=arrow_text), todo, _HELPERS):
                    core = scorer.score_core(
                        features, last_contacted=last_contacted, arrow_text=arrow_text, model_pass=model
                    )
                    del model
                    selected = select_without_budget(core.candidates, config.interventions.max_actions_per_user)
                    scores = scorer.finish(core.scores, selected, arrow_text=arrow_text)
                    # Statistics first: the writer thread has the frame to itself until it is written.
                    stats = chunk_stats(scores, selected)
                    behind.submit(partial(_atomic_write_frame, scores, part_path(i), fmt),
                                  partial(finish_part, i, features if snapshot is not None else None, scores, stats, task))
            finally:
                behind.wait()
        else:
            def stage_paths(i: int) -> tuple[Path, Path]:
                return work / f"core-{i:05d}.parquet", work / f"cand-{i:05d}.parquet"

            def staged(i: int) -> bool:
                core_p, cand_p = stage_paths(i)
                return (manifest.done("stage", i, cand_p) and core_p.exists()) or manifest.done("final", i, part_path(i))

            resumed_stage = sum(manifest.done("stage", i, stage_paths(i)[1]) for i in range(n_chunks))
            task = progress.task("scoring", total=n_chunks, completed=resumed_stage)
            todo = [i for i in range(n_chunks) if not staged(i)]

            def write_stage(i: int, core: Any) -> None:
                core_p, cand_p = stage_paths(i)
                _atomic_write_frame(core.scores, core_p, "parquet")
                _atomic_write_frame(core.candidates, cand_p, "parquet")

            def mark_stage(i: int, info: dict[str, Any]) -> None:
                settle_work_file()
                manifest.mark("stage", i, info)
                progress.advance(task)

            try:
                # The core scores go to a Parquet work file: Arrow text is fine whatever the output format.
                for i, (features, model) in ahead(pool, partial(model_chunk, arrow_text=True), todo, _HELPERS):
                    core = scorer.score_core(features, last_contacted=last_contacted, arrow_text=True, model_pass=model)
                    del model
                    info = {"rows": len(core.scores), "candidates": len(core.candidates)}
                    behind.submit(partial(write_stage, i, core), partial(mark_stage, i, info))
            finally:
                behind.wait()
            settle_work_file()
            # 3. global allocation (small columns of the positive candidates only)
            selection_path = work / "selection.parquet"
            if manifest.state["allocation"] is None or not selection_path.exists():
                step = progress.task("allocating budget", total=1)
                cols = ["user_id", "action_id", "rank", "unit_cost", "expected_incremental_value", "control", "selected"]
                parts = [
                    pd.read_parquet(stage_paths(i)[1], columns=cols, filters=[("expected_incremental_value", ">", 0.0)])
                    for i in range(n_chunks)
                ]
                cands = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
                alloc = scorer.allocate(cands, budget)
                sel = alloc.candidates.loc[alloc.candidates["selected"], ["user_id", "action_id"]]
                _atomic_write_frame(sel.reset_index(drop=True), selection_path, "parquet")
                manifest.state["allocation"] = {"spent": alloc.spent, "treated": alloc.treated, "control": alloc.control}
                manifest.save()
                del cands, parts, alloc
                progress.advance(step)
            selection = pd.read_parquet(selection_path)
            sel_keys = pd.MultiIndex.from_frame(selection[["user_id", "action_id"]])

            def read_stage(i: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
                core_p, cand_p = stage_paths(i)
                return pd.read_parquet(core_p), pd.read_parquet(cand_p), None if snapshot is None else read_chunk(i)

            todo = [i for i in range(n_chunks) if not manifest.done("final", i, part_path(i))]
            summary.chunks_resumed = resumed = n_chunks - len(todo)
            task = progress.task("applying selection", total=n_chunks, completed=resumed)
            try:
                for i, (core_scores, cands, stored_features) in ahead(pool, read_stage, todo, _HELPERS):
                    keys = pd.MultiIndex.from_frame(cands[["user_id", "action_id"]])
                    cands["selected"] = keys.isin(sel_keys)
                    scores = scorer.finish(core_scores, cands, arrow_text=arrow_text)
                    stats = chunk_stats(scores, cands)
                    behind.submit(partial(_atomic_write_frame, scores, part_path(i), fmt),
                                  partial(finish_part, i, stored_features, scores, stats, task))
            finally:
                behind.wait()

        settle_work_file()
        # 4. online store: chunks a resumed run lacks (from the part files), then the swap
        if snapshot is not None:
            missing = [i for i in range(n_chunks) if i not in stored]
            task = progress.task("online store", total=len(missing) + 1)

            def read_done(i: int) -> tuple[pd.DataFrame, pd.DataFrame]:
                return read_chunk(i), read_scores_part(part_path(i), fmt)

            for i, (features, scores) in ahead(pool, read_done, missing):
                store_chunk(i, features, scores)
                manifest.save()
                progress.advance(task)
            snapshot.publish()
            manifest.state["online_store"] = True
            manifest.save()
            progress.advance(task)
        frame = None  # nothing reads the features again

    # 5. publish
    for i in range(n_chunks):
        info = manifest.state["final"][str(i)]
        _merge_stats(summary, info["stats"])
        summary.parts.append(info["part"])
    if budget is not None and manifest.state["allocation"] is not None:
        alloc_spent = float(manifest.state["allocation"]["spent"])
        if not np.isclose(alloc_spent, summary.budget_used, rtol=1e-9, atol=1e-6):
            raise BatchError(f"internal: allocated {alloc_spent} but parts use {summary.budget_used}")
    written = sum(int(manifest.state["final"][str(i)]["rows"]) for i in range(n_chunks))
    if written != n_users:
        raise BatchError(f"internal: {written} rows written for {n_users} users")
    summary.seconds = time.perf_counter() - t0
    _atomic_write_json(tmp / MANIFEST, {"key": key, "args": args, "summary": summary.to_dict()})
    shutil.rmtree(work)
    if out.exists() and overwrite:
        old = out.with_name(f"{out.name}.old-{key}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    fsync_dir(out.parent)
    return summary


def _check_features(features: pd.DataFrame) -> None:
    """Refuse a feature table that cannot be scored as it is: without ``user_id`` or ``as_of``, with missing or
    repeated user ids, or with infinite feature values (a model would score them as the largest value seen)."""
    for col in ("user_id", "as_of"):
        if col not in features.columns:
            raise BatchError(f"feature table: missing column {col!r}")
    ids = features["user_id"]
    missing = ids.isna().to_numpy()
    if missing.any():
        raise BatchError(f"feature table: {int(missing.sum()):,} row(s) have no user_id (the first is row "
                         f"{int(np.flatnonzero(missing)[0]) + 1}); every row must name its user")
    if not ids.is_unique:
        repeated = ids[ids.duplicated(keep=False)]
        shown = ", ".join(repr(str(u)) for u in pd.unique(repeated)[:3])
        raise BatchError(f"feature table: {repeated.nunique():,} user_id value(s) appear more than once "
                         f"(e.g. {shown}); one row per user")
    for name in features.columns:
        values = features[name]
        if values.dtype.kind != "f":
            continue
        inf = np.isinf(values.to_numpy())
        if inf.any():
            first = int(np.flatnonzero(inf)[0])
            raise BatchError(f"feature table: column {name!r} is infinite in {int(inf.sum()):,} row(s) (first: user "
                             f"{str(ids.iloc[first])!r}, value {values.iloc[first]}); features are finite or missing")


def _reads_back_unchanged(features: pd.DataFrame) -> bool:
    """Whether ``features`` is exactly what the work file (``pa.Table.from_pandas(features)``) reads back
    as, so it can be scored without the Arrow -> pandas conversion: a plain RangeIndex and columns whose
    dtypes Arrow gives back as they are (float, int, bool, tz-aware ``datetime64[ns]`` and string-only
    object columns). Anything else (categoricals, other datetimes, mixed objects...) must be converted,
    so a fresh run scores exactly what a resumed run reads from the work file."""
    index = features.index
    plain = isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1
    if not plain or features.columns.has_duplicates or not all(isinstance(c, str) for c in features.columns):
        return False
    for name, dtype in features.dtypes.items():
        col = features[name]
        if dtype.kind in "fiub" and isinstance(dtype, np.dtype):
            continue
        if isinstance(dtype, pd.DatetimeTZDtype) and dtype.unit == "ns" and str(dtype.tz) == "UTC":
            continue
        if pd.api.types.is_object_dtype(dtype) and pd.api.types.infer_dtype(col, skipna=False) == "string":
            continue
        return False
    return True


def _as_read_back(features: pd.DataFrame, table: Any) -> pd.DataFrame:
    """``features`` as the work file (``table``) reads back: ``features`` itself when nothing would
    change (:func:`_reads_back_unchanged`), else ``table`` converted to pandas."""
    return features if _reads_back_unchanged(features) else table.to_pandas()


def _to_arrow(features: pd.DataFrame, schema: Any = None) -> Any:
    import pyarrow as pa

    # preserve_index=False drops the index: no need to copy the frame to reset it first.
    return pa.Table.from_pandas(features, schema=schema, preserve_index=False)


def _scores_to_arrow(frame: pd.DataFrame) -> Any:
    """Scores (or candidates) as an Arrow table, exactly as ``pa.Table.from_pandas(frame)`` makes it of the same frame
    with Python strings: pyarrow-backed string columns (the scorer's ``arrow_text``) go in as they are
    (no Python strings made and encoded again), typed ``string`` and described as object columns in
    the pandas metadata, so the Parquet bytes do not depend on how the text was held."""
    import pyarrow as pa

    arrow = [c for c, dtype in frame.dtypes.items() if isinstance(dtype, pd.ArrowDtype)]
    if not arrow:
        # preserve_index=False drops the index: no need to copy the frame to reset it first.
        return pa.Table.from_pandas(frame, preserve_index=False)
    arrays = {c: pa.array(frame[c].array) for c in arrow}  # the column's own Arrow data, no copy
    # Text without nulls and within 32-bit offsets goes in as is; anything else as Python objects.
    text = [
        c for c in arrow
        if pa.types.is_string(arrays[c].type) or pa.types.is_large_string(arrays[c].type)
        if not arrays[c].null_count and arrays[c].nbytes < 2**31
    ]
    plain = frame.copy(deep=False)
    for c in arrow:
        # Stand-in object columns give the same schema and pandas metadata at the cost of one short string.
        plain[c] = np.full(len(frame), "", dtype=object) if c in text else frame[c].to_numpy(dtype=object)
    # preserve_index=False drops the index: no need to copy the frame to reset it first.
    table = pa.Table.from_pandas(plain, preserve_index=False)
    for c in text:
        i = table.schema.get_field_index(c)
        table = table.set_column(i, table.schema.field(i), arrays[c].cast(table.schema.field(i).type))
    return table


# ----------------------------------------------------------------------------- reading outputs


def read_scores_part(path: Path, fmt: OutputFormat | None = None) -> pd.DataFrame:
    """One part file of a batch output, with the scorer's dtypes (CSV parts are re-typed)."""
    fmt = fmt or ("csv" if path.suffix == ".csv" else "parquet")
    if fmt == "parquet":
        return pd.read_parquet(path)
    frame = pd.read_csv(path, dtype={"user_id": str, "model_version": str, "action_id": str}, keep_default_na=True)
    frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True)
    for col in _FLOAT_OUTPUT:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    frame["control"] = frame["control"].astype(str).str.lower().isin(["true", "1"])
    frame["action_id"] = frame["action_id"].astype(object).where(frame["action_id"].notna(), None)
    frame["action_name"] = frame["action_name"].astype(object).where(frame["action_name"].notna(), None)
    return frame[OUTPUT_COLUMNS]


def _check_output_dir(d: Path) -> None:
    """Raise :class:`BatchError` when ``d`` (a scoring output to read) does not exist or is not a directory."""
    if not d.exists():
        raise BatchError(f"{d}: scoring output not found; give the directory of a `strata score --out` run")
    if not d.is_dir():
        raise BatchError(f"{d}: is a file, not a scoring output; give the directory of a `strata score --out` run")


def read_scores(out: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """All rows of a finished batch output directory (``strata score --out``), parts in order."""
    d = Path(out)
    manifest = d / MANIFEST
    _check_output_dir(d)
    if not manifest.exists():
        raise BatchError(f"{d}: not a finished scoring output (no {MANIFEST}); run `strata score` first")
    info = json.loads(manifest.read_text(encoding="utf-8"))
    parts = [d / p for p in info["summary"]["parts"]]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in OUTPUT_COLUMNS})
    frames = [read_scores_part(p) for p in parts]
    frame = pd.concat(frames, ignore_index=True)
    return frame if columns is None else frame[columns]


def read_summary(out: str | Path) -> dict[str, Any]:
    """The run summary saved with a finished batch output."""
    d = Path(out)
    manifest = d / MANIFEST
    _check_output_dir(d)
    if not manifest.exists():
        raise BatchError(f"{d}: not a finished scoring output (no {MANIFEST})")
    return dict(json.loads(manifest.read_text(encoding="utf-8"))["summary"])
