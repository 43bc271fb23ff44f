"""The stored format is Flask's tagged JSON: the fast path writes the very
same text as Flask's serializer and reads back the very same values.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from datetime import timezone

import pytest
from flask import Flask
from flask.sessions import session_json_serializer
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from markupsafe import Markup

from flask_session_bridge import serialization

TAG_KEYS = sorted(session_json_serializer.tags)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False),
    st.text(),
    st.sampled_from(['{" t":[1]}', '{" ', "\\u0000", "\x00", "\u2603"]),
)
tagged = st.one_of(
    st.binary(max_size=20),
    st.uuids(),
    st.datetimes(timezones=st.just(timezone.utc)).map(lambda d: d.replace(microsecond=0)),
    st.text(max_size=10).map(Markup),
)
keys = st.one_of(st.text(max_size=8), st.sampled_from([*TAG_KEYS, " x", "a", "__"]))


def values(leaves):
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=5),
            st.dictionaries(keys, inner, max_size=5),
            st.lists(inner, max_size=3).map(tuple),
        ),
        max_leaves=25,
    )


@pytest.fixture(scope="module")
def app_context():
    # Flask's serializer writes sorted keys through the app's JSON provider,
    # as it does when a session is saved in a request.
    with Flask(__name__).app_context():
        yield


def same(a, b):
    """Equal, and of the same types all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(keys, values(st.one_of(scalars, tagged)), max_size=6))
def test_dumps_writes_what_flask_writes_and_loads_reads_what_flask_reads(app_context, data):
    raw = serialization.dumps(data)
    assert raw == session_json_serializer.dumps(data)
    assert same(serialization.loads(raw), session_json_serializer.loads(raw))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(keys, values(scalars), max_size=6))
def test_plain_data_round_trips_with_its_types(app_context, data):
    raw = serialization.dumps(data)
    assert raw == session_json_serializer.dumps(data)
    assert same(serialization.loads(raw), session_json_serializer.loads(raw))


def test_each_tagged_type_round_trips(app_context):
    data = {
        "bytes": b"\x00\xff",
        "tuple": (1, "a"),
        "uuid": uuid.UUID(int=7),
        "when": datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc),
        "markup": Markup("<b>hi</b>"),
        "tag-like": {" t": [1, 2]},
        "nested": [{"x": (b"y",)}],
    }
    assert same(serialization.loads(serialization.dumps(data)), data)


def test_what_cannot_be_written_fails_as_flask_fails(app_context):
    with pytest.raises(TypeError):
        serialization.dumps({"x": object()})
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises((ValueError, RecursionError)):
        serialization.dumps({"x": cyclic})
