"""How many users moved between layers from one scoring (cutoff) to the next.

A migration matrix counts users by (layer at the previous cutoff, layer at the current one). Users that
appear only at the current cutoff are counted in the row ``(new)``; users known only at the previous
cutoff in the column ``(gone)``. So every row sum (without ``(new)``) is the previous population of that
layer, every column sum (without ``(gone)``) the current population, and nobody is lost.
"""

from __future__ import annotations

import pandas as pd

from features.contract import ENTITY_KEY
from features.errors import StrataError
from features.layer_names import LAYER_DIMENSIONS, require_columns

NEW_ROW = "(new)"
GONE_COLUMN = "(gone)"


def _ordered(values: set[str], column: str) -> list[str]:
    known = LAYER_DIMENSIONS.get(column, ())
    return [v for v in known if v in values] + sorted(values - set(known))


def _checked(frame: pd.DataFrame, column: str, which: str) -> pd.Series:
    require_columns(frame, [ENTITY_KEY, column], f"the migration matrix ({which} cutoff)")
    ids = frame[ENTITY_KEY].astype(str).reset_index(drop=True)
    dup = ids[ids.duplicated()]
    if not dup.empty:
        raise StrataError(
            f"{which} layers: column {ENTITY_KEY} has {len(dup):,} duplicate value(s), e.g. {dup.iloc[0]!r} "
            f"at row {int(dup.index[0]) + 1}"
        )
    return pd.Series(frame[column].astype(str).to_numpy(), index=ids.to_numpy(), name=column)


def migration_matrix(prev: pd.DataFrame, curr: pd.DataFrame, column: str) -> pd.DataFrame:
    """Count users by layer at the previous cutoff (rows) and at the current cutoff (columns).

    Parameters
    ----------
    prev, curr
        Layer tables (``user_id`` and ``column``, e.g. from :func:`features.layers.assign_layers`) at the
        previous and the current cutoff.
    column
        The layer dimension to compare (``lifecycle``, ``rfm_segment``, ``value_tier``, ``activity_tier``).

    Returns
    -------
    DataFrame of int64 user counts: index ``previous`` = the previous layers (known order first) plus
    ``(new)``; columns ``current`` = the current layers plus ``(gone)``. The cell ``((new), (gone))`` is 0.
    Every layer seen at either cutoff has both a row and a column.
    """
    p = _checked(prev, column, "previous")
    c = _checked(curr, column, "current")
    joined = pd.concat([p.rename("previous"), c.rename("current")], axis=1, join="outer")
    joined["previous"] = joined["previous"].fillna(NEW_ROW)
    joined["current"] = joined["current"].fillna(GONE_COLUMN)
    layers = _ordered(set(p.unique()) | set(c.unique()), column)
    counts = pd.crosstab(joined["previous"], joined["current"])
    matrix = counts.reindex(index=[*layers, NEW_ROW], columns=[*layers, GONE_COLUMN], fill_value=0).astype(
        "int64"
    )
    matrix.index.name = "previous"
    matrix.columns.name = "current"
    return matrix


def migration_shares(matrix: pd.DataFrame) -> pd.DataFrame:
    """Row-normalised migration matrix: the share (0..1) of each previous layer that went to each current
    layer (or ``(gone)``). The ``(new)`` row is normalised over the newcomers; empty rows are NaN."""
    totals = matrix.sum(axis=1).replace(0, float("nan"))
    return matrix.div(totals, axis=0)


def migration_summary(matrix: pd.DataFrame) -> dict[str, int]:
    """Counts of users who ``stayed`` in their layer, ``moved`` to another layer, are ``new``, are ``gone``."""
    cols = list(matrix.columns)
    values = matrix.to_numpy()
    stayed = int(sum(values[i, cols.index(layer)] for i, layer in enumerate(matrix.index) if layer in cols))
    known = matrix.drop(index=NEW_ROW, errors="ignore").drop(columns=GONE_COLUMN, errors="ignore")
    return {
        "stayed": stayed,
        "moved": int(known.to_numpy().sum()) - stayed,
        "new": int(matrix.loc[[NEW_ROW]].to_numpy().sum()) if NEW_ROW in matrix.index else 0,
        "gone": int(matrix[GONE_COLUMN].sum()) if GONE_COLUMN in matrix.columns else 0,
    }
