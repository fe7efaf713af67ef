"""Reason-code text at batch speed: each row's largest contributions and the JSON text, compiled with numba.

:func:`serving.reasons.reason_codes` decides *what* a reason list says; this module does the two
per-row loops that dominate its cost on a million users: picking the ``k`` largest and smallest
contributions of each row (:func:`extreme_columns`), and concatenating the pre-rendered pieces of
every reason (feature prefix, value text, contribution text, direction suffix) into one JSON array
per row (:func:`join_reasons`). Numbers are rendered outside (pyarrow's shortest round-trip text), so
the text is byte for byte what joining the pieces in Python would give. Imported lazily: numba
takes about a second to load.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _extreme_columns(matrix, columns, k, up, down):  # noqa: ANN001, ANN202
    n = matrix.shape[0]
    m = columns.shape[0]
    up_val = np.empty(k)
    down_val = np.empty(k)
    for i in range(n):
        n_up = 0
        n_down = 0
        for p in range(m):
            v = matrix[i, columns[p]]
            if v != v:  # NaN counts as 0
                v = 0.0
            # Strict comparisons keep the lower column first among equal values.
            if n_up < k or v > up_val[n_up - 1]:
                q = n_up if n_up < k else k - 1
                while q > 0 and up_val[q - 1] < v:
                    up_val[q] = up_val[q - 1]
                    up[i, q] = up[i, q - 1]
                    q -= 1
                up_val[q] = v
                up[i, q] = p
                if n_up < k:
                    n_up += 1
            w = -v
            if n_down < k or w > down_val[n_down - 1]:
                q = n_down if n_down < k else k - 1
                while q > 0 and down_val[q - 1] < w:
                    down_val[q] = down_val[q - 1]
                    down[i, q] = down[i, q - 1]
                    q -= 1
                down_val[q] = w
                down[i, q] = p
                if n_down < k:
                    n_down += 1


def extreme_columns(matrix: np.ndarray, k: int, columns: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` columns with the largest values and the ``k`` with the smallest.

    Parameters
    ----------
    matrix
        float ``(n_rows, n_cols)``; NaN counts as 0.
    k
        How many columns each way (at most the number of columns considered).
    columns
        Column indices to consider (default: all); the result indexes into this list.

    Returns
    -------
    largest, smallest : int64 ``(n_rows, min(k, n_considered))``
        Largest values first (smallest first); among equal values the lower column comes first.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-d matrix, got shape {matrix.shape}")
    cols = np.arange(matrix.shape[1], dtype=np.int64) if columns is None else np.asarray(columns, dtype=np.int64)
    k = max(0, min(int(k), len(cols)))
    up = np.zeros((matrix.shape[0], k), dtype=np.int64)
    down = np.zeros((matrix.shape[0], k), dtype=np.int64)
    if k and matrix.shape[0]:
        _extreme_columns(matrix, cols, k, up, down)
    return up, down


@njit(cache=True, nogil=True)
def _put(out, pos, src, a, b, fill):  # noqa: ANN001, ANN202
    if fill:
        # A byte loop: numba's slice assignment costs far more than these short copies.
        for q in range(b - a):
            out[pos + q] = src[a + q]
    return pos + b - a


@njit(cache=True, nogil=True)
def _join(n, width, feature, keep, prefix_data, prefix_off, value_data, value_off, contrib_data, contrib_off,
          brackets, middle, suffix_up, suffix_down, out_off, out_data, fill):  # noqa: ANN001, ANN202
    # Pass 1 (fill=False) measures each row into out_off; pass 2 (fill=True) writes the bytes.
    # brackets holds the bytes of "[", "]" and ", ".
    half = width // 2
    pos = 0
    for i in range(n):
        pos = _put(out_data, pos, brackets, 0, 1, fill)
        first = True
        for s in range(width):
            t = i * width + s
            if not keep[t]:
                continue
            if not first:
                pos = _put(out_data, pos, brackets, 2, 4, fill)
            first = False
            j = feature[t]
            pos = _put(out_data, pos, prefix_data, prefix_off[j], prefix_off[j + 1], fill)
            pos = _put(out_data, pos, value_data, value_off[t], value_off[t + 1], fill)
            pos = _put(out_data, pos, middle, 0, len(middle), fill)
            pos = _put(out_data, pos, contrib_data, contrib_off[t], contrib_off[t + 1], fill)
            if s < half:
                pos = _put(out_data, pos, suffix_up, 0, len(suffix_up), fill)
            else:
                pos = _put(out_data, pos, suffix_down, 0, len(suffix_down), fill)
        pos = _put(out_data, pos, brackets, 1, 2, fill)
        out_off[i + 1] = pos
    return pos


def _string_buffers(arr: Any) -> tuple[np.ndarray, np.ndarray]:
    """(offsets as int64, UTF-8 bytes) of a pyarrow string array without nulls."""
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        raise ValueError("reason text pieces must not be null")
    if pa.types.is_large_string(arr.type):
        dtype: Any = np.int64
    elif pa.types.is_string(arr.type):
        dtype = np.int32
    else:
        raise TypeError(f"expected a string array, got {arr.type}")
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=dtype)[arr.offset : arr.offset + len(arr) + 1].astype(np.int64)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, dtype=np.uint8)
    return offsets, data


def _utf8(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def join_reasons(
    feature: np.ndarray,
    keep: np.ndarray,
    prefixes: list[str],
    value_text: Any,
    contribution_text: Any,
    middle: str,
    suffix_up: str,
    suffix_down: str,
    *,
    as_arrow: bool = False,
) -> Any:
    """One JSON array text per row from the rendered pieces of its reasons.

    Parameters
    ----------
    feature, keep
        ``(n_rows, width)``: feature index of each reason slot and whether it is shown; the first half
        of the slots are "up" reasons, the second half "down".
    prefixes
        Per feature, the text of a reason up to its value (``{"feature": ..., "value": ``).
    value_text, contribution_text
        pyarrow string arrays of ``n_rows * width`` items (row-major): the value and contribution text.
    middle, suffix_up, suffix_down
        Text between value and contribution, and after the contribution of an up / down reason.
    as_arrow
        Return the texts as a pyarrow string array (no Python strings are made) instead of a list.

    Returns
    -------
    list of str, or pyarrow array
        ``"[" + ", ".join(prefix + value + middle + contribution + suffix for shown slots) + "]"`` per row;
        with ``as_arrow``, a ``string`` array (``large_string`` beyond 2 GiB of text).
    """
    import pyarrow as pa

    feature = np.ascontiguousarray(feature, dtype=np.int64)
    keep = np.ascontiguousarray(keep, dtype=np.bool_)
    n, width = feature.shape
    if width % 2:
        raise ValueError("reason slots must be as many up as down")
    encoded = [p.encode("utf-8") for p in prefixes]
    prefix_off = np.zeros(len(encoded) + 1, dtype=np.int64)
    prefix_off[1:] = np.cumsum([len(p) for p in encoded])
    prefix_data = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
    value_off, value_data = _string_buffers(value_text)
    contrib_off, contrib_data = _string_buffers(contribution_text)
    if len(value_off) != n * width + 1 or len(contrib_off) != n * width + 1:
        raise ValueError("value and contribution texts must have one item per reason slot")
    out_off = np.zeros(n + 1, dtype=np.int64)
    pieces = (feature.ravel(), keep.ravel(), prefix_data, prefix_off, value_data, value_off, contrib_data,
              contrib_off, _utf8("[], "), _utf8(middle), _utf8(suffix_up), _utf8(suffix_down))
    total = _join(n, width, *pieces, out_off, np.zeros(0, dtype=np.uint8), False)
    out_data = np.empty(total, dtype=np.uint8)
    _join(n, width, *pieces, out_off, out_data, True)
    if as_arrow and total < 2**31:
        # The type pyarrow gives Python strings: a writer can use the array as it is.
        return pa.StringArray.from_buffers(n, pa.py_buffer(out_off.astype(np.int32)), pa.py_buffer(out_data))
    arr = pa.LargeStringArray.from_buffers(n, pa.py_buffer(out_off), pa.py_buffer(out_data))
    return arr if as_arrow else arr.to_pylist()


@njit(cache=True, nogil=True)
def _place(src_off, src_data, dest_rows, out_off, out_data):  # noqa: ANN001, ANN202
    # Copies text i of the source to the place of output row dest_rows[i].
    for i in range(dest_rows.shape[0]):
        a = src_off[i]
        b = src_off[i + 1]
        pos = out_off[dest_rows[i]]
        out_data[pos : pos + b - a] = src_data[a:b]  # texts of about a kilobyte: a slice copy pays


def merge_texts(pieces: list[tuple[np.ndarray, Any]], n: int, fill: str) -> Any:
    """One pyarrow string array of ``n`` rows from pieces (row numbers, pyarrow string array of those rows).

    Rows no piece covers get ``fill``; pieces must not cover a row twice. A ``string`` array, or
    ``large_string`` beyond 2 GiB of text. What ``take`` on the concatenated pieces gives, in one pass.
    """
    import pyarrow as pa

    lengths = np.full(n, len(fill.encode("utf-8")), dtype=np.int64)
    sources = []
    for rows, text in pieces:
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        off, data = _string_buffers(text)
        if len(rows) != len(off) - 1:
            raise ValueError("each piece needs one text per row number")
        lengths[rows] = np.diff(off)
        sources.append((rows, off, data))
    out_off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=out_off[1:])
    out_data = np.empty(int(out_off[-1]), dtype=np.uint8)
    covered = np.zeros(n, dtype=bool)
    for rows, off, data in sources:
        _place(off, data, rows, out_off, out_data)
        covered[rows] = True
    rest = np.flatnonzero(~covered)
    if len(rest):
        filler = _utf8(fill)
        _place(np.arange(len(rest) + 1, dtype=np.int64) * len(filler), np.tile(filler, len(rest)), rest,
               out_off, out_data)
    if out_off[-1] < 2**31:
        return pa.StringArray.from_buffers(n, pa.py_buffer(out_off.astype(np.int32)), pa.py_buffer(out_data))
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(out_off), pa.py_buffer(out_data))
