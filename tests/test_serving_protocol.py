"""etude.serving.protocol.parse_query as a pure function: any body at all is either a valid Query or an
InvalidRequest."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etude.serving.errors import InvalidRequest
from etude.serving.protocol import parse_query

C, MAX_LEN = 1000, 50

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5),
    max_leaves=20,
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"session": st.one_of(json_values, st.lists(st.integers(-5, C + 5), max_size=80))},
        optional={"k": st.one_of(json_values, st.integers(-2, C + 2))},
    ).map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=400, deadline=None)
@given(bodies)
def test_any_body_is_a_valid_query_or_a_named_400(body: bytes) -> None:
    try:
        q = parse_query(body, catalog_size=C, max_session_length=MAX_LEN)
    except InvalidRequest as err:
        assert err.status == 400 and err.message
        return
    assert 1 <= len(q.session) <= MAX_LEN and all(type(i) is int and 0 <= i < C for i in q.session)
    assert type(q.k) is int and 1 <= q.k <= C


def test_long_sessions_keep_their_most_recent_items_and_k_defaults_to_21() -> None:
    q = parse_query(json.dumps({"session": list(range(120))}).encode(), catalog_size=C, max_session_length=MAX_LEN)
    assert q.session == list(range(70, 120)) and q.k == 21
    small = parse_query(b'{"session": [1]}', catalog_size=5, max_session_length=MAX_LEN)
    assert small.k == 5  # the default never exceeds the catalog


def test_the_error_names_the_offending_position() -> None:
    with pytest.raises(InvalidRequest, match=r"'session'\[2\] = 1000 is outside the catalog \[0, 1000\)"):
        parse_query(b'{"session": [1, 2, 1000]}', catalog_size=C, max_session_length=MAX_LEN)
