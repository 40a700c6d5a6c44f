"""The request body of `POST /v1/recommend`: parse and validate it, naming the problem when it is wrong.

`{"session": [item ids, oldest first], "k": 21}`; `k` is optional (default 21, or the catalog size if that is
smaller); unknown fields are ignored. Ids must be JSON integers (not booleans, not floats) in [0, C); `k` an
integer in [1, C]. Sessions longer than the model's maximum keep their most recent items. Pure functions, no I/O.
"""

from __future__ import annotations

import json
from typing import Any

from etude.commands import DEFAULT_K
from etude.serving.errors import InvalidRequest
from etude.serving.model import Query


def parse_query(body: bytes, *, catalog_size: int, max_session_length: int) -> Query:
    """A validated `Query` from a raw request body, or `InvalidRequest` saying what is wrong."""
    if not body:
        raise InvalidRequest('empty body; expected a JSON object like {"session": [1, 2, 3], "k": 21}')
    try:
        text = body.decode()  # JSON is UTF-8 (RFC 8259); json.loads(bytes) would also guess UTF-16/32
    except UnicodeDecodeError as err:
        raise InvalidRequest(f"body is not valid UTF-8: {err.reason} at byte {err.start}") from None
    try:
        doc: Any = json.loads(text)
    except ValueError as err:  # JSONDecodeError, or an integer literal too long to convert
        raise InvalidRequest(f"body is not valid JSON: {err}") from None
    except RecursionError:
        raise InvalidRequest("body is JSON nested too deeply") from None
    if type(doc) is not dict:
        raise InvalidRequest(f"body must be a JSON object, got {_json_type(doc)}")
    session = doc.get("session")
    if session is None:
        raise InvalidRequest("missing field 'session' (a list of item ids, oldest first)")
    if type(session) is not list:
        raise InvalidRequest(f"'session' must be a list of item ids, got {_json_type(session)}")
    if not session:
        raise InvalidRequest("'session' is empty; it needs at least one item id")
    for i, item in enumerate(session):
        if type(item) is not int or not 0 <= item < catalog_size:
            raise InvalidRequest(_bad_item(i, item, catalog_size))
    k = doc.get("k", None)
    if k is None and "k" not in doc:
        k = min(DEFAULT_K, catalog_size)
    elif type(k) is not int:
        raise InvalidRequest(f"'k' must be an integer in [1, {catalog_size}], got {_json_type(k)}")
    elif not 1 <= k <= catalog_size:
        raise InvalidRequest(f"'k' must be in [1, {catalog_size}] (the catalog size), got {k}")
    if len(session) > max_session_length:
        session = session[-max_session_length:]  # keep the most recent items
    return Query(session, k)


def _bad_item(index: int, item: Any, catalog_size: int) -> str:
    if type(item) is int:
        return f"'session'[{index}] = {_clip(item)} is outside the catalog [0, {catalog_size})"
    return f"'session'[{index}] must be an integer item id, got {_json_type(item)} {_clip(item)}"


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _clip(value: Any, limit: int = 40) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
