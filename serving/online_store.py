"""The online store: the latest features and scores of every user, in one embedded SQLite file.

Batch scoring materialises its features and scores here; the online API reads them back by user id
in well under a millisecond. Two ways to write:

* :meth:`OnlineStore.snapshot` (what batch scoring uses): a full rescoring builds a *new* store file
  next to the live one (``<store>.build-<tag>``, rows in ``user_id`` order, 64 KiB pages, no fsync
  until the end), and :meth:`Snapshot.publish` swaps it in with one ``os.replace``. The store then
  holds exactly the users of that run (users absent from the run are gone; a snapshot of no user is
  refused, never published over the live store). Readers never see half a run: a connection keeps reading the file it opened (the old inode) until it reconnects, and
  :class:`OnlineStore` reconnects as soon as the path names another file (checked on every call).
  The first thread to reconnect also closes the other threads' idle connections to the old file, so
  its disk space is freed even if those threads serve nothing more (a connection in use is closed by
  its own thread, on its next call).
* :meth:`OnlineStore.write`: an in-place upsert of some users, one transaction.

The file uses SQLite's rollback journal (not WAL): a WAL file's ``-wal``/``-shm`` companions are found by
*name*, so a file swapped in under live WAL readers would be opened with the old file's log. With the
rollback journal a reader reads a consistent state: the one before or after a commit (during the commit
of an in-place write it waits, ``busy_timeout``), and the batch never writes the live file at all.

Features round-trip exactly: numeric features are stored as the raw float64 bytes of the row (NaN
included, bit for bit), string features as a JSON list, and the column names, order and dtypes as
table metadata. :meth:`OnlineStore.get_features` therefore rebuilds the same frame that
:func:`features.pipeline.build_features` produced, and scoring it reproduces the batch scores exactly.

Scores are one row per user: ``user_id``, ``score`` (a compact JSON array of the scalar output
columns, :data:`SCORE_FIELDS`, floats in shortest round-trip form, NaN as ``null``, infinities as
``±1e999``), and the ``reasons`` and ``interventions`` JSON texts as the scorer made them. Query them
with plain SQL through the view ``scores_view`` (one typed column per output column, via
``json_extract``), e.g. ``SELECT user_id, churn_risk FROM scores_view WHERE refined_layer = 'at_risk'``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pandas as pd

from features.errors import StrataError
from features.io import fsync_dir

if TYPE_CHECKING:
    from serving.fast_scorer import FeatureRows

#: Version of the file layout; a store of another version is refused with a clear message (a batch run
#: replaces it). 2: 64 KiB pages, rollback journal, scores as one compact JSON column.
SCHEMA_VERSION = 2
#: Page size of new store files (bytes): a user's row (~3 KB) fits in a page, no overflow chains.
PAGE_SIZE = 65536

#: Output columns stored per user, with their SQL types in ``scores_view`` (the scorer's OUTPUT_COLUMNS).
SCORE_COLUMNS: dict[str, str] = {
    "user_id": "TEXT",
    "as_of": "TEXT",
    "model_name": "TEXT",
    "model_version": "TEXT",
    "churn_risk": "REAL",
    "conversion_prob": "REAL",
    "predicted_value": "REAL",
    "value_p10": "REAL",
    "value_p90": "REAL",
    "lifecycle": "TEXT",
    "rfm_segment": "TEXT",
    "value_tier": "TEXT",
    "activity_tier": "TEXT",
    "refined_layer": "TEXT",
    "reasons": "TEXT",
    "action_id": "TEXT",
    "action_name": "TEXT",
    "action_cost": "REAL",
    "expected_incremental_value": "REAL",
    "control": "INTEGER",
    "interventions": "TEXT",
}
#: Columns of their own in the ``scores`` table (the JSON texts are stored as given, never re-encoded).
_TEXT_COLUMNS = ("reasons", "interventions")
#: The scalar output columns, in the order of the ``score`` JSON array.
SCORE_FIELDS: list[str] = [c for c in SCORE_COLUMNS if c != "user_id" and c not in _TEXT_COLUMNS]

_FLOAT_SCORES = [c for c, t in SCORE_COLUMNS.items() if t == "REAL"]
_BATCH_ROWS = 50_000
_SQL_VARS = 900
_WRITE_CACHE_KIB = 65_536
_MMAP_BYTES = 1 << 34


class OnlineStoreError(StrataError):
    """The online store is missing, unreadable or holds data of another shape."""


def _create_schema(conn: sqlite3.Connection) -> None:
    """Tables, view and schema version of an empty store file (the caller set the page size first)."""
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS features ("
        "user_id TEXT PRIMARY KEY, as_of TEXT NOT NULL, numeric BLOB NOT NULL, strings TEXT NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS scores (user_id TEXT PRIMARY KEY, score TEXT NOT NULL, reasons TEXT, "
        "interventions TEXT)"
    )
    cols = []
    for c in SCORE_COLUMNS:
        if c == "user_id" or c in _TEXT_COLUMNS:
            cols.append(c)
        else:
            cols.append(f"json_extract(score, '$[{SCORE_FIELDS.index(c)}]') AS {c}")
    conn.execute(f"CREATE VIEW IF NOT EXISTS scores_view AS SELECT {', '.join(cols)} FROM scores")
    conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))


def _schema_version(conn: sqlite3.Connection) -> str | None:
    """The stored schema version; None for an empty file (no tables yet)."""
    has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if has_meta is None:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return "?" if row is None else str(row[0])


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


class _Handle:
    """One thread's connection, the inode of the file it opened, and a lock held while it is in use."""

    def __init__(self, conn: sqlite3.Connection, inode: int | None) -> None:
        self.conn = conn
        self.inode = inode
        self.lock = threading.RLock()  # re-entrant: a reader may nest calls on its own thread
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.close()


class OnlineStore:
    """Latest features and scores per user in an SQLite file (one writer, many readers).

    Parameters
    ----------
    path
        SQLite file (``config.serving.online_store``); created with its parent directory on first use.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._layout_cache: tuple[str, _FeatureLayout] | None = None
        # Every thread's connection, so that a thread that sees a new file can close the idle connections
        # other threads still hold on the replaced one (weak: a finished thread's connection goes with it).
        self._handles: weakref.WeakSet[_Handle] = weakref.WeakSet()
        self._handles_lock = threading.Lock()
        self._stale = False  # some connection may still be on a replaced file

    # -- connections -------------------------------------------------------------------------------
    @contextmanager
    def _use(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection to the current file, held (not closable by other threads) while in use."""
        while True:
            handle = self._handle()
            with handle.lock:
                if not handle.closed:  # not swept by another thread between the two lines
                    yield handle.conn
                    break
        if self._stale:
            self._sweep()

    def _handle(self) -> _Handle:
        handle: _Handle | None = getattr(self._local, "handle", None)
        # Stat before (re)connecting: a file swapped in after the stat is noticed on the next call.
        inode = _inode(self.path)
        if handle is not None and not handle.closed and inode == handle.inode:
            return handle
        self.close()
        handle = _Handle(self._open(), _inode(self.path) if inode is None else inode)
        self._local.handle = handle
        with self._handles_lock:
            self._handles.add(handle)
            self._stale = True
        self._sweep()
        return handle

    def _sweep(self) -> None:
        """Close the connections of other threads that are idle and on a replaced file.

        Without this, a thread that serves no request after a swap would keep the old file (gigabytes at a
        million users) open, so its disk space would not be freed. A connection in use is left to its own
        thread, which reconnects on its next call; later calls sweep again until none is left.
        """
        inode = _inode(self.path)
        with self._handles_lock:
            handles = list(self._handles)
        left = False
        for h in handles:
            if h.closed or h.inode == inode:
                continue
            if h.lock.acquire(blocking=False):
                try:
                    h.close()
                finally:
                    h.lock.release()
            else:
                left = True
        with self._handles_lock:
            self._handles = weakref.WeakSet(h for h in self._handles if not h.closed)
            self._stale = left

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            # Takes effect only when this connection creates the file (outside any transaction).
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            # Reads map the file instead of copying 64 KiB pages into the page cache (a single-user
            # lookup: 13 -> 8 us measured on 200k users). Address space only; the file is never truncated.
            conn.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
            version = _schema_version(conn)
            if version is None:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    _create_schema(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            elif version != str(SCHEMA_VERSION):
                raise OnlineStoreError(
                    f"online store {self.path}: schema version {version} (written by another version of "
                    f"Strata), this version reads version {SCHEMA_VERSION}; run `strata score` to rebuild it "
                    "(it replaces the file), or delete the file"
                )
        except sqlite3.DatabaseError as err:
            conn.close()
            raise OnlineStoreError(f"online store {self.path}: not a readable SQLite store ({err})") from None
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends, or are swept once idle
        on a replaced file)."""
        handle: _Handle | None = getattr(self._local, "handle", None)
        if handle is not None:
            with handle.lock:
                handle.close()
        self._local.handle = None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._use() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _meta(self, conn: sqlite3.Connection, key: str) -> str | None:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # -- writing ------------------------------------------------------------------------------------
    def write(self, features: pd.DataFrame, scores: pd.DataFrame) -> None:
        """Upsert the features and scores of the given users in one transaction, in place.

        ``features`` is a feature table (``user_id``, ``as_of``, feature columns); ``scores`` the scorer's
        output for (usually) the same users. If the feature columns or dtypes differ from what the store
        holds (a new feature set), the stored features are replaced rather than mixed. For a full
        rescoring use :meth:`snapshot` (cheaper, and readers see the whole run switch at once).
        """
        layout = _FeatureLayout.from_frame(features)
        feature_rows = layout.encode(features)
        score_rows = _encode_scores(scores)
        with self._transaction() as conn:
            conn.execute(f"PRAGMA cache_size=-{_WRITE_CACHE_KIB}")  # fewer spills: readers wait less
            try:
                _insert(conn, layout, features, feature_rows, score_rows, replace_layout=True)
            finally:
                conn.execute("PRAGMA cache_size=-2000")

    def snapshot(self, tag: str) -> Snapshot:
        """A new store file to fill chunk by chunk and swap in whole (see :class:`Snapshot`).

        ``tag`` names the build file (``<store>.build-<tag>``); opening the same tag again continues an
        interrupted build (every finished :meth:`Snapshot.write` is committed).
        """
        return Snapshot(self.path, tag)

    # -- reading ------------------------------------------------------------------------------------
    def _layout(self, conn: sqlite3.Connection) -> _FeatureLayout | None:
        raw = self._meta(conn, "feature_layout")
        if raw is None:
            return None
        cached = self._layout_cache
        if cached is not None and cached[0] == raw:
            return cached[1]
        layout = _FeatureLayout.from_json(raw)
        self._layout_cache = (raw, layout)
        return layout

    def _feature_rows(self, user_ids: Sequence[str]) -> tuple[_FeatureLayout | None, list[tuple]]:
        with self._use() as conn:
            # One read transaction: the layout and the rows come from the same committed state.
            conn.execute("BEGIN")
            try:
                layout = self._layout(conn)
                rows = [] if layout is None else _select_by_ids(
                    conn, "SELECT user_id, as_of, numeric, strings FROM features", user_ids
                )
            finally:
                conn.execute("COMMIT")
        return layout, rows

    def get_features(self, user_ids: Sequence[str]) -> pd.DataFrame:
        """Stored feature rows of the users found (in request order; unknown ids are left out).

        Same columns and dtypes as :func:`features.pipeline.build_features` output.
        """
        layout, rows = self._feature_rows(user_ids)
        if layout is None:
            return pd.DataFrame({"user_id": pd.Series(dtype=object)})
        return layout.decode(rows)

    def get_feature_rows(self, user_ids: Sequence[str]) -> FeatureRows:
        """Stored feature rows of the users found (request order) as plain arrays, without pandas.

        The same values as :meth:`get_features` (numeric features bit for bit, string features as
        stored, ``as_of`` as the ISO text the scorer writes), for :class:`serving.fast_scorer.FastScorer`.
        """
        from serving.fast_scorer import FeatureRows

        layout, rows = self._feature_rows(user_ids)
        if layout is None:
            return FeatureRows([], [], [], np.empty((0, 0)), {})
        return layout.decode_rows(rows)

    def sample_user_ids(self, n: int) -> list[str]:
        """Up to ``n`` stored user ids (the first by key order), e.g. to check a model on real rows."""
        with self._use() as conn:
            cur = conn.execute("SELECT user_id FROM features ORDER BY user_id LIMIT ?", (int(n),))
            return [str(r[0]) for r in cur]

    def get_scores(self, user_ids: Sequence[str]) -> pd.DataFrame:
        """Stored score rows of the users found (request order), with the scorer's output columns."""
        with self._use() as conn:
            rows = _select_by_ids(conn, "SELECT user_id, score, reasons, interventions FROM scores", user_ids)
        return _decode_scores(rows)

    def feature_timestamp(self) -> pd.Timestamp | None:
        """The latest ``as_of`` of the stored features (UTC), or None if the store is empty."""
        with self._use() as conn:
            raw = self._meta(conn, "feature_timestamp")
        return None if raw is None else pd.Timestamp(raw)

    def count(self) -> int:
        """Number of users with stored features."""
        with self._use() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM features").fetchone()[0])


class Snapshot:
    """A new store file, filled chunk by chunk, then swapped in place of the live store at once.

    Built at ``<store>.build-<tag>`` with a rollback journal but no fsync per chunk (a killed build
    rolls back its unfinished chunk when reopened; :meth:`publish` fsyncs once), in 64 KiB pages.
    Every :meth:`write` is one transaction (an upsert: writing a chunk again is harmless).
    :meth:`publish` replaces the live file with ``os.replace``; readers that have the old file open keep
    reading it until they reconnect (:class:`OnlineStore` does so on its next call).
    """

    def __init__(self, path: Path, tag: str) -> None:
        self.path = Path(path)
        self.build_path = self.path.with_name(f"{self.path.name}.build-{tag}")
        #: True when an earlier build of the same tag was found and is being continued.
        self.resumed = self.build_path.exists()
        self._conn: sqlite3.Connection | None = None
        self._layout: _FeatureLayout | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.build_path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.build_path), timeout=30.0, isolation_level=None)
            try:
                # A build file has one user: no fsync per chunk, an exclusive lock. (The default 2 MB page
                # cache appends faster than a large one: measured 0.78 vs 0.97 CPU-s for 200k users.)
                conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
                conn.execute("PRAGMA synchronous=OFF")
                conn.execute("PRAGMA locking_mode=EXCLUSIVE")
                version = _schema_version(conn)
                if version is None:
                    conn.execute("BEGIN")
                    _create_schema(conn)
                    conn.execute("COMMIT")
                elif version != str(SCHEMA_VERSION):
                    raise OnlineStoreError(f"{self.build_path}: a build of another Strata version; delete it")
                raw = conn.execute("SELECT value FROM meta WHERE key = 'feature_layout'").fetchone()
                self._layout = None if raw is None else _FeatureLayout.from_json(str(raw[0]))
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def write(self, features: pd.DataFrame, scores: pd.DataFrame) -> None:
        """Add (upsert) the features and scores of some users, in one transaction.

        Every write of one snapshot must have the same feature columns and dtypes.
        """
        layout = _FeatureLayout.from_frame(features)
        conn = self._connection()
        if self._layout is not None and self._layout.to_json() != layout.to_json():
            raise OnlineStoreError(
                f"online store snapshot {self.build_path}: feature columns differ between chunks "
                f"({len(self._layout.columns)} vs {len(layout.columns)} columns)"
            )
        feature_rows = layout.encode(features)
        score_rows = _encode_scores(scores)
        conn.execute("BEGIN")
        try:
            _insert(conn, layout, features, feature_rows, score_rows, replace_layout=False)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        self._layout = layout

    def publish(self) -> None:
        """Make the snapshot the live store: fsync it, then ``os.replace`` it over the store file.

        Raises
        ------
        OnlineStoreError
            When the snapshot holds no user (publishing it would empty the live store, and the API would
            answer ``unknown_user`` for everyone: the build file is discarded, the live store kept), when
            the live file is an older WAL-mode store still opened by another process (its log would be
            picked up by the new file), or is not an SQLite file.
        """
        conn = self._connection()
        if conn.execute("SELECT COUNT(*) FROM (SELECT 1 FROM features LIMIT 1)").fetchone()[0] == 0:
            self.discard()
            raise OnlineStoreError(f"online store {self.path}: the new snapshot holds no user; it would empty the "
                                   f"store, so the store is left as it is")
        self.close()
        fd = os.open(self.build_path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if not self.path.exists():
            os.replace(self.build_path, self.path)
        else:
            live = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
            try:
                try:
                    mode = str(live.execute("PRAGMA journal_mode").fetchone()[0]).lower()
                    if mode == "wal":
                        live.execute("PRAGMA busy_timeout=2000")
                        mode = str(live.execute("PRAGMA journal_mode=DELETE").fetchone()[0]).lower()
                        if mode == "wal":
                            raise sqlite3.OperationalError("database is locked")
                    live.execute("PRAGMA busy_timeout=30000")
                    # Waits for an in-place writer, and rolls back a crashed writer's journal, whose
                    # name the new file would otherwise inherit.
                    live.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as err:
                    raise OnlineStoreError(
                        f"online store {self.path}: cannot replace it ({err}); an older Strata (WAL mode) "
                        "may still have it open: stop it and run again"
                    ) from None
                except sqlite3.DatabaseError as err:
                    raise OnlineStoreError(
                        f"online store {self.path}: exists but is not an SQLite store ({err}); move it away"
                    ) from None
                os.replace(self.build_path, self.path)
                live.execute("ROLLBACK")
            finally:
                live.close()
        for stale in (f"{self.build_path}-journal",):
            Path(stale).unlink(missing_ok=True)
        fsync_dir(self.path.parent)

    def discard(self) -> None:
        """Close and delete the build file (the live store is untouched)."""
        self.close()
        for p in (self.build_path, Path(f"{self.build_path}-journal")):
            p.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the build connection (a later :meth:`write` reopens it)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _insert(
    conn: sqlite3.Connection,
    layout: _FeatureLayout,
    features: pd.DataFrame,
    feature_rows: list[tuple[str, str, bytes, str]],
    score_rows: list[tuple[str, str, str | None, str | None]],
    *,
    replace_layout: bool,
) -> None:
    """Upsert encoded rows and the metadata inside the caller's transaction."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'feature_layout'").fetchone()
    if row is not None and str(row[0]) != layout.to_json():
        if not replace_layout:
            raise OnlineStoreError("online store: feature columns differ from the stored ones")
        conn.execute("DELETE FROM features")
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('feature_layout', ?)", (layout.to_json(),))
    for start in range(0, len(feature_rows), _BATCH_ROWS):
        conn.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?)", feature_rows[start : start + _BATCH_ROWS])
    for start in range(0, len(score_rows), _BATCH_ROWS):
        conn.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?)", score_rows[start : start + _BATCH_ROWS])
    if len(features):
        latest = pd.to_datetime(features["as_of"], utc=True).max()
        previous = conn.execute("SELECT value FROM meta WHERE key = 'feature_timestamp'").fetchone()
        if previous is None or pd.Timestamp(str(previous[0])) < latest:
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('feature_timestamp', ?)", (latest.isoformat(),))


def _select_by_ids(conn: sqlite3.Connection, select: str, user_ids: Sequence[str]) -> list[tuple]:
    ids = [str(u) for u in user_ids]
    found: dict[str, tuple] = {}
    for start in range(0, len(ids), _SQL_VARS):
        chunk = ids[start : start + _SQL_VARS]
        marks = ", ".join("?" for _ in chunk)
        for row in conn.execute(f"{select} WHERE user_id IN ({marks})", chunk):
            found[row[0]] = row
    seen: set[str] = set()
    out = []
    for u in ids:
        if u in found and u not in seen:
            out.append(found[u])
            seen.add(u)
    return out


def _sorted_by_first(rows: list[Any]) -> list[Any]:
    """Rows in key order (SQLite appends sorted keys to the end of its B-tree: fewer pages touched)."""
    keys = [r[0] for r in rows]
    if all(a <= b for a, b in zip(keys, keys[1:], strict=False)):
        return rows
    return sorted(rows, key=lambda r: r[0])


class _FeatureLayout:
    """Column order and dtypes of a feature table, and the (de)serialisation of its rows."""

    def __init__(self, columns: list[str], dtypes: dict[str, str]) -> None:
        self.columns = columns
        self.dtypes = dtypes
        self.numeric = [c for c in columns if c not in ("user_id", "as_of") and dtypes[c] == "float64"]
        self.strings = [c for c in columns if c not in ("user_id", "as_of") and dtypes[c] != "float64"]

    @classmethod
    def from_frame(cls, features: pd.DataFrame) -> _FeatureLayout:
        for col in ("user_id", "as_of"):
            if col not in features.columns:
                raise OnlineStoreError(f"online store write: feature table lacks column {col!r}")
        if not features["user_id"].is_unique:
            dup = features.loc[features["user_id"].duplicated(), "user_id"].iloc[0]
            raise OnlineStoreError(f"online store write: duplicate user_id {dup!r} in the feature table")
        dtypes: dict[str, str] = {}
        for c in features.columns:
            dt = features[c].dtype
            if c in ("user_id", "as_of"):
                dtypes[c] = str(dt)
            elif pd.api.types.is_float_dtype(dt) and dt == np.float64:
                dtypes[c] = "float64"
            elif pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt):
                raise OnlineStoreError(
                    f"online store write: feature column {c!r} has dtype {dt}; numeric features must be float64"
                )
            else:
                dtypes[c] = str(dt)
        return cls(list(features.columns), dtypes)

    def to_json(self) -> str:
        return json.dumps({"columns": self.columns, "dtypes": self.dtypes})

    @classmethod
    def from_json(cls, raw: str) -> _FeatureLayout:
        data = json.loads(raw)
        return cls(list(data["columns"]), dict(data["dtypes"]))

    def encode(self, features: pd.DataFrame) -> list[tuple[str, str, bytes, str]]:
        """``(user_id, as_of ISO text, numeric bytes, string JSON list)`` per row, in ``user_id`` order."""
        n = len(features)
        if n == 0:
            return []
        # Column by column into a row-major matrix (20x cheaper than transposing ``to_numpy``'s result),
        # then one tobytes over the chunk and a slice (bytes) per row.
        num = np.empty((n, len(self.numeric)), dtype=np.float64)
        for j, c in enumerate(self.numeric):
            num[:, j] = features[c].to_numpy(dtype=np.float64)
        width = num.shape[1] * 8
        buf = num.tobytes()
        blobs = [buf[i : i + width] for i in range(0, n * width, width)] if width else [b""] * n
        strings = _json_lists([features[c] for c in self.strings], n)
        as_of = _isoformat_column(features["as_of"])
        ids = features["user_id"].astype(str).tolist()
        return _sorted_by_first(list(zip(ids, as_of, blobs, strings, strict=True)))

    def decode(self, rows: list[tuple]) -> pd.DataFrame:
        n = len(rows)
        k = len(self.numeric)
        data: dict[str, object] = {}
        data["user_id"] = pd.Series([r[0] for r in rows], dtype=self.dtypes.get("user_id", "object"))
        data["as_of"] = pd.to_datetime(pd.Series([r[1] for r in rows], dtype=object), utc=True).astype(
            self.dtypes.get("as_of", "datetime64[ns, UTC]")  # type: ignore[call-overload]
        )
        num = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float64).reshape(n, k) if n else np.empty((0, k))
        for j, c in enumerate(self.numeric):
            data[c] = pd.Series(num[:, j].copy(), dtype="float64")
        if self.strings:
            decoded = [orjson.loads(r[3]) for r in rows]
            for j, c in enumerate(self.strings):
                data[c] = pd.Series([d[j] for d in decoded], dtype=object).astype(
                    self.dtypes[c]  # type: ignore[call-overload]
                )
        return pd.DataFrame({c: data[c] for c in self.columns})

    def decode_rows(self, rows: list[tuple]) -> FeatureRows:
        """Like :meth:`decode`, as :class:`serving.fast_scorer.FeatureRows` (no pandas)."""
        from serving.fast_scorer import FeatureRows

        n = len(rows)
        k = len(self.numeric)
        num = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float64).reshape(n, k) if n else np.empty((0, k))
        strings: dict[str, list[object]] = {c: [] for c in self.strings}
        if self.strings:
            for r in rows:
                values = orjson.loads(r[3])
                for j, c in enumerate(self.strings):
                    strings[c].append(values[j])
        return FeatureRows(
            user_ids=[str(r[0]) for r in rows],
            as_of=[_iso_utc(r[1]) for r in rows],
            numeric_names=list(self.numeric),
            numeric=num,
            strings=strings,
        )


_ISO_UTC: dict[str, str] = {}


def _iso_utc(text: str) -> str:
    """``Timestamp.isoformat()`` in UTC of a stored ``as_of`` text (memoised: a store holds few cutoffs)."""
    out = _ISO_UTC.get(text)
    if out is None:
        ts = pd.Timestamp(text)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        out = ts.as_unit("ns").isoformat()
        if len(_ISO_UTC) < 10_000:
            _ISO_UTC[text] = out
    return out


def _isoformat_column(values: pd.Series) -> list[str]:
    """``Timestamp.isoformat()`` (UTC) of every value, formatted once per distinct value (a scored batch
    usually has a single ``as_of``; formatting 200k timestamps one by one costs about 0.4 CPU-s)."""
    codes, uniques = pd.factorize(pd.to_datetime(values, utc=True), use_na_sentinel=False)
    text = np.array([u.isoformat() for u in uniques], dtype=object)
    return text[codes].tolist()


# ----------------------------------------------------------------------------- JSON pieces, vectorised


def _json_values(values: pd.Series | None, n: int, text: bool = False) -> Any:
    """A pyarrow string array: the JSON text of each value (``null`` for missing), encoded once per
    distinct value. ``text``: values other than None/NaN are written as JSON strings of ``str(value)``."""
    import pyarrow as pa

    if values is None:
        return pa.array(["null"] * n, type=pa.string())
    codes, uniques = pd.factorize(values.to_numpy(dtype=object), use_na_sentinel=True)
    if text:
        texts = [json.dumps(str(u), ensure_ascii=False) for u in uniques]
    else:
        texts = [json.dumps(u, ensure_ascii=False) for u in uniques]
    texts.append("null")
    codes = np.where(codes < 0, len(texts) - 1, codes).astype(np.int32)
    return pa.array(texts, type=pa.string()).take(pa.array(codes))


def _json_numbers(values: pd.Series | None, n: int) -> Any:
    """JSON numbers in shortest round-trip form; NaN as ``null``, infinities as ``±1e999`` (which parse
    back to infinity in Python and SQLite)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if values is None:
        return pa.array(["null"] * n, type=pa.string())
    arr = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    out = pc.cast(pa.array(arr), pa.string())
    finite = np.isfinite(arr)
    if not finite.all():
        special = np.where(np.isnan(arr), "null", np.where(arr > 0, "1e999", "-1e999"))
        out = pc.if_else(pa.array(finite), out, pa.array(special, type=pa.string()))
    return out


def _json_lists(columns: list[pd.Series], n: int) -> list[str]:
    """Per row, ``json.dumps([v1, v2, ...], ensure_ascii=False)`` of the given columns (None for NaN)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not columns:
        return ["[]"] * n
    pieces = [_json_values(c.astype(object).where(c.notna(), None), n) for c in columns]
    joined = pc.binary_join_element_wise(pa.scalar("["), pc.binary_join_element_wise(*pieces, ", "), pa.scalar("]"), "")
    return list(joined.to_pylist())


def _encode_scores(scores: pd.DataFrame) -> list[tuple[str, str, str | None, str | None]]:
    """``(user_id, score JSON array, reasons, interventions)`` per row, in ``user_id`` order."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if "user_id" not in scores.columns:
        raise OnlineStoreError("online store write: scores lack column 'user_id'")
    n = len(scores)
    if n == 0:
        return []
    pieces = []
    for c in SCORE_FIELDS:
        col = scores[c] if c in scores.columns else None
        if c == "as_of":
            if col is None:
                pieces.append(_json_values(None, n))
            else:
                iso = pd.Series(_isoformat_column(col), dtype=object)
                pieces.append(_json_values(iso.where(col.notna().to_numpy(), None), n))
        elif c == "control":
            flags = np.zeros(n, dtype=bool) if col is None else col.fillna(False).astype(bool).to_numpy()
            pieces.append(pa.array(["false", "true"]).take(pa.array(flags.view(np.int8))))
        elif SCORE_COLUMNS[c] == "REAL":
            pieces.append(_json_numbers(col, n))
        else:
            pieces.append(_json_values(col, n, text=True))
    score = pc.binary_join_element_wise(pa.scalar("["), pc.binary_join_element_wise(*pieces, ","), pa.scalar("]"), "")
    texts: list[list[str | None]] = []
    for c in _TEXT_COLUMNS:
        if c not in scores.columns:
            texts.append([None] * n)
            continue
        values = scores[c].to_numpy(dtype=object)
        missing = pd.isna(values)
        if missing.any():
            values = values.copy()
            values[missing] = None
        texts.append(values.tolist())
    ids = scores["user_id"].astype(str).tolist()
    return _sorted_by_first(list(zip(ids, score.to_pylist(), texts[0], texts[1], strict=True)))


def _decode_scores(rows: list[tuple]) -> pd.DataFrame:
    """Score rows ``(user_id, score, reasons, interventions)`` as a frame of the scorer's output columns."""
    # parse_int=float: "-0" (how -0.0 is written) must come back as -0.0, not the integer 0.
    fields = [json.loads(r[1], parse_int=float) for r in rows]
    by_field = list(zip(*fields, strict=True)) if fields else [()] * len(SCORE_FIELDS)
    data: dict[str, Any] = {"user_id": np.array([r[0] for r in rows], dtype=object)}
    for c, values in zip(SCORE_FIELDS, by_field, strict=True):
        if c == "as_of":
            ns = np.array([_as_of_ns(v) for v in values], dtype=np.int64).view("datetime64[ns]")
            data[c] = pd.DatetimeIndex(ns).tz_localize("UTC")
        elif c == "control":
            data[c] = np.array([bool(v) for v in values], dtype=bool)
        elif c in _FLOAT_SCORES:
            data[c] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        else:
            data[c] = np.array(values, dtype=object)
    data["reasons"] = np.array([r[2] for r in rows], dtype=object)
    data["interventions"] = np.array([r[3] for r in rows], dtype=object)
    return pd.DataFrame({c: data[c] for c in SCORE_COLUMNS})


_AS_OF_NS: dict[str | None, int] = {}


def _as_of_ns(text: str | None) -> int:
    """Nanoseconds since the epoch (UTC) of a stored ``as_of`` text; NaT for None (memoised)."""
    out = _AS_OF_NS.get(text)
    if out is None:
        parsed = pd.to_datetime(pd.Series([text], dtype=object), utc=True).astype("datetime64[ns, UTC]")
        out = int(parsed.dt.tz_convert(None).to_numpy().view(np.int64)[0])  # NaT: the int64 minimum
        if len(_AS_OF_NS) < 10_000:
            _AS_OF_NS[text] = out
    return out
