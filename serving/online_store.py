"""The online store: the latest features and scores of every user, in one embedded SQLite file.

Batch scoring materialises its features and scores here; the online API reads them back by user id
in milliseconds. SQLite runs in WAL mode, so readers keep reading a consistent snapshot while a writer
upserts (each :meth:`OnlineStore.write` is one transaction).

Features round-trip exactly: numeric features are stored as the raw float64 bytes of the row (NaN
included, bit for bit), string features as a JSON list, and the column names, order and dtypes as
table metadata. :meth:`OnlineStore.get_features` therefore rebuilds the same frame that
:func:`features.pipeline.build_features` produced, and scoring it reproduces the batch scores exactly.
Scores are stored as typed columns (queryable with plain SQL).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.errors import StrataError

if TYPE_CHECKING:
    from serving.fast_scorer import FeatureRows

SCHEMA_VERSION = 1

#: Score columns stored (the scorer's output columns) and their SQLite types.
SCORE_COLUMNS: dict[str, str] = {
    "user_id": "TEXT PRIMARY KEY",
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

_FLOAT_SCORES = [c for c, t in SCORE_COLUMNS.items() if t == "REAL"]
_BATCH_ROWS = 50_000
_SQL_VARS = 900


class OnlineStoreError(StrataError):
    """The online store is missing, unreadable or holds data of another shape."""


class OnlineStore:
    """Latest features and scores per user in an SQLite file (WAL mode; one writer, many readers).

    Parameters
    ----------
    path
        SQLite file (``config.serving.online_store``); created with its parent directory on first write.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._layout_cache: tuple[str, _FeatureLayout] | None = None

    # -- connections -------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._ensure_schema(conn)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @staticmethod
    def _ensure_schema(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS features ("
            "user_id TEXT PRIMARY KEY, as_of TEXT NOT NULL, numeric BLOB NOT NULL, strings TEXT NOT NULL)"
        )
        cols = ", ".join(f"{c} {t}" for c, t in SCORE_COLUMNS.items())
        conn.execute(f"CREATE TABLE IF NOT EXISTS scores ({cols})")
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
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
        """Upsert the features and scores of the given users in one transaction.

        ``features`` is a feature table (``user_id``, ``as_of``, feature columns); ``scores`` the scorer's
        output for (usually) the same users. If the feature columns or dtypes differ from what the store
        holds (a new feature set), the stored features are replaced rather than mixed.
        """
        layout = _FeatureLayout.from_frame(features)
        for col in ("user_id",):
            if col not in scores.columns:
                raise OnlineStoreError(f"online store write: scores lack column {col!r}")
        feature_rows = layout.encode(features)
        score_rows = _encode_scores(scores)
        with self._transaction() as conn:
            stored = self._meta(conn, "feature_layout")
            if stored is not None and stored != layout.to_json():
                conn.execute("DELETE FROM features")
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('feature_layout', ?)", (layout.to_json(),))
            for start in range(0, len(feature_rows), _BATCH_ROWS):
                conn.executemany(
                    "INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?)", feature_rows[start : start + _BATCH_ROWS]
                )
            placeholders = ", ".join("?" for _ in SCORE_COLUMNS)
            for start in range(0, len(score_rows), _BATCH_ROWS):
                conn.executemany(
                    f"INSERT OR REPLACE INTO scores VALUES ({placeholders})", score_rows[start : start + _BATCH_ROWS]
                )
            if len(features):
                latest = pd.to_datetime(features["as_of"], utc=True).max()
                previous = self._meta(conn, "feature_timestamp")
                if previous is None or pd.Timestamp(previous) < latest:
                    conn.execute("INSERT OR REPLACE INTO meta VALUES ('feature_timestamp', ?)", (latest.isoformat(),))

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

    def get_features(self, user_ids: Sequence[str]) -> pd.DataFrame:
        """Stored feature rows of the users found (in request order; unknown ids are left out).

        Same columns and dtypes as :func:`features.pipeline.build_features` output.
        """
        conn = self._connect()
        layout = self._layout(conn)
        if layout is None:
            return pd.DataFrame({"user_id": pd.Series(dtype=object)})
        rows = _select_by_ids(conn, "SELECT user_id, as_of, numeric, strings FROM features", user_ids)
        return layout.decode(rows)

    def get_feature_rows(self, user_ids: Sequence[str]) -> FeatureRows:
        """Stored feature rows of the users found (request order) as plain arrays, without pandas.

        The same values as :meth:`get_features` (numeric features bit for bit, string features as
        stored, ``as_of`` as the ISO text the scorer writes), for :class:`serving.fast_scorer.FastScorer`.
        """
        from serving.fast_scorer import FeatureRows

        conn = self._connect()
        layout = self._layout(conn)
        if layout is None:
            return FeatureRows([], [], [], np.empty((0, 0)), {})
        rows = _select_by_ids(conn, "SELECT user_id, as_of, numeric, strings FROM features", user_ids)
        return layout.decode_rows(rows)

    def sample_user_ids(self, n: int) -> list[str]:
        """Up to ``n`` stored user ids (the first by key order), e.g. to check a model on real rows."""
        cur = self._connect().execute("SELECT user_id FROM features ORDER BY user_id LIMIT ?", (int(n),))
        return [str(r[0]) for r in cur]

    def get_scores(self, user_ids: Sequence[str]) -> pd.DataFrame:
        """Stored score rows of the users found (request order), with the scorer's output columns."""
        conn = self._connect()
        cols = ", ".join(SCORE_COLUMNS)
        rows = _select_by_ids(conn, f"SELECT {cols} FROM scores", user_ids)
        frame = pd.DataFrame.from_records(rows, columns=list(SCORE_COLUMNS))
        for c in _FLOAT_SCORES:
            frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
        frame["control"] = frame["control"].fillna(0).astype(bool)
        frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True)
        return frame

    def feature_timestamp(self) -> pd.Timestamp | None:
        """The latest ``as_of`` of the stored features (UTC), or None if the store is empty."""
        raw = self._meta(self._connect(), "feature_timestamp")
        return None if raw is None else pd.Timestamp(raw)

    def count(self) -> int:
        """Number of users with stored features."""
        return int(self._connect().execute("SELECT COUNT(*) FROM features").fetchone()[0])


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
        n = len(features)
        if n == 0:
            return []
        num = np.ascontiguousarray(features[self.numeric].to_numpy(dtype=np.float64)).reshape(n, len(self.numeric))
        blobs = [row.tobytes() for row in num]
        if self.strings:
            str_values = features[self.strings].astype(object).where(features[self.strings].notna(), None)
            strings = [json.dumps(r, ensure_ascii=False) for r in str_values.itertuples(index=False, name=None)]
        else:
            strings = ["[]"] * n
        as_of = _isoformat_column(features["as_of"])
        ids = features["user_id"].astype(str).tolist()
        return list(zip(ids, as_of, blobs, strings, strict=True))

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
            decoded = [json.loads(r[3]) for r in rows]
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
                values = json.loads(r[3])
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


def _encode_scores(scores: pd.DataFrame) -> list[tuple]:
    frame = pd.DataFrame(index=scores.index)
    for c in SCORE_COLUMNS:
        if c in scores.columns:
            frame[c] = scores[c]
        else:
            frame[c] = None
    if "as_of" in scores.columns:
        frame["as_of"] = pd.Series(_isoformat_column(scores["as_of"]), index=scores.index, dtype=object)
    frame["control"] = frame["control"].fillna(False).astype(bool).astype(int)
    frame["user_id"] = frame["user_id"].astype(str)
    for c in ("model_version",):
        frame[c] = frame[c].astype(object).where(frame[c].notna(), None).map(lambda v: None if v is None else str(v))
    obj = frame.astype(object).where(frame.notna(), None)
    return list(obj.itertuples(index=False, name=None))
