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


# ----------------------------------------------------------------------------- result encoding

def _json_list_reference(text: str) -> Any:
    """What ``_json_list`` computed before orjson: the json module, non-finite numbers read as None."""
    import math

    def finite(token: str) -> float | None:
        f = float(token)
        return f if math.isfinite(f) else None

    parsed = json.loads(text, parse_constant=lambda _token: None, parse_float=finite)
    return parsed if isinstance(parsed, list) else None


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(min_value=-(2**70), max_value=2**70) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=st.lists(_JSON_VALUES, max_size=6), specials=st.lists(
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "123456789012345678901234567890"]), max_size=2))
def test_reason_lists_parse_as_the_json_module_parses_them(value: list[Any], specials: list[str]) -> None:
    """orjson reads what it can (finite numbers, 64-bit integers); NaN tokens, overflowing literals and
    huge integers fall back to the json module: the parsed value is the same either way."""
    from serving.api_models import _json_list

    text = json.dumps(value, ensure_ascii=False)
    if specials:
        text = text[:-1] + (", " if value else "") + ", ".join(specials) + "]"
    expected = _json_list_reference(text)
    got = _json_list(text)
    assert json.dumps(got) == json.dumps(expected)  # NaN-free, so equal text means equal values and types
    assert [type(v) for v in got] == [type(v) for v in expected]


def test_encoded_results_are_compact_utf8_json_and_never_fail_on_nan() -> None:
    """The encoder writes what ``json.loads`` reads back to the same dict; NumPy scalars are plain values;
    a stray NaN is written as null (never an error, which would be a 5xx)."""
    import math

    import numpy as np

    from serving.api_models import encode_result

    result = {"user_id": "é/\u2028", "churn_risk": 0.1, "predicted_value": 1e-06, "value_p90": 1e20,
              "as_of": "2024-01-01T00:00:00+00:00", "reasons": [{"value": None, "contribution": -0.5}],
              "control": True, "n": np.int64(3), "x": np.float64(2.5)}
    encoded = encode_result(result)
    assert b" " not in encoded and "é".encode() in encoded
    back = json.loads(encoded)
    assert back == {**result, "n": 3, "x": 2.5}
    assert json.loads(encode_result({"churn_risk": math.nan})) == {"churn_risk": None}
