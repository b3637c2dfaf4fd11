"""What a request may carry before anything parses or stores it: no NUL character anywhere
(PostgreSQL text cannot hold one, and no field has a use for it) and JSON nested at most
MAX_JSON_DEPTH levels (deeper documents exhaust the parser's recursion). Pure functions over
bytes, used by app/middleware.BodyLimitMiddleware; each answers None or the field errors of a
422 `validation_error` (never the submitted value)."""

from __future__ import annotations

import json
from typing import Any

MAX_JSON_DEPTH = 32

FieldErrors = list[dict[str, str]]

_NUL_ESCAPE = b"\\u0000"
_AS_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def nul_in(field: str) -> FieldErrors:
    return [{"field": field, "message": "must not contain NUL characters",
             "type": "nul_character"}]


def url_errors(path: str, query_string: bytes) -> FieldErrors | None:
    """A NUL in the (decoded) path or in the query string, raw or percent-encoded."""
    if "\x00" in path:
        return nul_in("path")
    if b"%00" in query_string or b"\x00" in query_string:
        return nul_in("query")
    return None


def form_errors(body: bytes) -> FieldErrors | None:
    """A NUL in an urlencoded form body."""
    if b"\x00" in body or b"%00" in body:
        return nul_in("body")
    return None


def json_errors(body: bytes) -> FieldErrors | None:
    """Too deep, or a NUL in a string or a key. Costs two byte counts and a substring search
    for an ordinary body; only a body with many brackets or a `\\u0000` escape is looked at
    closer. A body that is not JSON at all passes: the route's parser answers it."""
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and _too_deep(body):
        return [{"field": "body", "message": f"nested deeper than {MAX_JSON_DEPTH} levels",
                 "type": "too_deep"}]
    if b"\x00" in body:
        return nul_in("body")
    if _NUL_ESCAPE in body:
        try:
            document = json.loads(body)
        except ValueError:
            return None
        if _holds_nul(document):
            return nul_in("body")
    return None


def chunk_has_nul(tail: bytes, chunk: bytes) -> bool:
    """For a body read in chunks (an import file): a NUL, raw or escaped, in `chunk` or across
    its boundary with the end of the previous one (`tail`: its last 5 bytes)."""
    return b"\x00" in chunk or _NUL_ESCAPE in tail + chunk


def _too_deep(body: bytes) -> bool:
    """Whether the brackets outside strings nest deeper than MAX_JSON_DEPTH. Byte operations
    only (each runs in C): escaped backslashes and quotes go, so every quote left opens or
    closes a string; the text between strings keeps its brackets (braces counted as brackets);
    then each round removes the innermost pairs, so a document takes as many rounds as it is
    deep."""
    text = body.replace(b"\\\\", b"").replace(b'\\"', b"") if b"\\" in body else body
    brackets = b"".join(text.split(b'"')[::2]).translate(_AS_BRACKETS, _NOT_BRACKETS)
    for _ in range(MAX_JSON_DEPTH + 1):
        if not brackets:
            return False
        shorter = brackets.replace(b"[]", b"")
        if shorter == brackets:
            return False  # unbalanced: not JSON, the route's parser refuses it
        brackets = shorter
    return True


def _holds_nul(document: Any) -> bool:
    stack = [document]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return True
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False
