"""``serving.api_models.simple_user_ids``: the hot path's cheap parse accepts only what the pydantic model accepts.

The fast route of ``POST /predict`` answers a body without building :class:`PredictRequest`; it must never
accept a body the model would refuse (the error would then be lost) nor read other ids than the model
would. Bodies it declines take the full path, so declining is always safe.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from serving.api_models import PredictRequest, simple_user_ids

LIMIT = 1000


def _model_ids(body: bytes) -> list[str] | None:
    """The ids :class:`PredictRequest` reads from ``body`` when it holds only ids; None if refused."""
    try:
        req = PredictRequest.model_validate_json(body)
    except ValidationError:
        return None
    return list(req.user_ids)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"user_ids": ["u1"]}', ["u1"]),
        (b' {"user_ids" : ["u1", "u2", "u1"]} ', ["u1", "u2", "u1"]),
        (b'{"user_ids": ["\\u0000"]}', ["\x00"]),
        (b'{"user_ids": ["a"], "user_ids": ["b"]}', ["b"]),  # the last duplicate key wins, as in pydantic
    ],
)
def test_simple_bodies_are_read_as_the_model_reads_them(body: bytes, expected: list[str]) -> None:
    assert simple_user_ids(body, LIMIT) == expected
    assert _model_ids(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{}",
        b"[]",
        b"null",
        b'{"user_ids": []}',
        b'{"user_ids": [""]}',
        b'{"user_ids": [1]}',
        b'{"user_ids": [null]}',
        b'{"user_ids": "u1"}',
        b'{"user_ids": ["u1"]} trailing',
        b'{"user_ids": ["u1"], "as_of": null}',  # valid, but not the simple shape: the full path answers
        b'{"user_ids": ["u1"], "extra": 1}',
        b'{"user_ids": ["' + b"x" * 257 + b'"]}',
        '{"user_ids": ["ü"]}'.encode(),  # non-ASCII: left to the full path
        b'{"user_ids": ["\\ud800"]}',  # a lone surrogate: left to the full path
        b'{"user_ids": ["u1"], NaN: 1}',
    ],
)
def test_other_bodies_are_declined(body: bytes) -> None:
    assert simple_user_ids(body, LIMIT) is None


def test_more_ids_than_the_limit_are_declined() -> None:
    body = json.dumps({"user_ids": [f"u{i}" for i in range(11)]}).encode()
    assert simple_user_ids(body, 10) is None
    assert simple_user_ids(body, 11) == [f"u{i}" for i in range(11)]


_id = st.one_of(st.text(max_size=300), st.integers(), st.none(), st.floats(allow_nan=True))
_body = st.one_of(
    st.fixed_dictionaries({"user_ids": st.lists(_id, max_size=5)}),
    st.fixed_dictionaries({"user_ids": st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=5)}),
    st.dictionaries(st.sampled_from(["user_ids", "as_of", "orders", "x"]),
                    st.one_of(st.lists(st.text(max_size=5), max_size=3), st.none(), st.integers()), max_size=3),
)


@settings(max_examples=400, deadline=None)
@given(_body, st.booleans())
def test_whatever_the_fast_parse_accepts_the_model_accepts_identically(data: dict[str, Any], ascii_only: bool) -> None:
    body = json.dumps(data, ensure_ascii=ascii_only, allow_nan=True).encode("utf-8", "surrogatepass")
    fast = simple_user_ids(body, LIMIT)
    if fast is not None:
        assert _model_ids(body) == fast
        assert set(data) == {"user_ids"}
