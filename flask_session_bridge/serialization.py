"""The stored format: Flask's tagged JSON, as Flask's own cookie sessions
write it, with a fast path for data that holds only JSON's own types.

Flask's serializer walks the data in Python on every dump (to tag bytes,
tuples, datetimes, UUIDs, Markup) and on every load (to untag them). Most
session data holds none of those, and for such data the standard library's
C encoder and decoder give the very same text and values, several times
faster at 10-100 KB. Anything else takes Flask's path, so the store always
holds what Flask's ``session_json_serializer`` would write and read.
"""

from __future__ import annotations

import json
import threading
import typing as t

from flask.sessions import session_json_serializer

#: Keys Flask's serializer reads as a tag when they are a dict's only key.
_TAG_KEYS = frozenset(session_json_serializer.tags)
#: Deeper data goes Flask's way, which reports what cannot be stored.
_MAX_PLAIN_DEPTH = 32
#: What Flask's default JSON provider writes: sorted keys, ASCII only.
_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True)
#: The C scanner: ``(value, end index)`` of the JSON value at an index
#: (``JSONDecoder`` sets it; typeshed does not declare it).
_SCAN: t.Callable[[str, int], tuple[t.Any, int]] = (
    json.JSONDecoder().scan_once  # type: ignore[attr-defined]
)
#: Every tagged value is written as ``{" <tag>":...}``; a dict whose first
#: key starts with a space is the only way this text appears outside a string.
_TAG_MARK = '{" '


def _is_plain(value: t.Any, depth: int) -> bool:
    """Whether ``value`` holds only types that JSON writes and reads back
    unchanged, with no dict that Flask would read as a tag.
    """
    kind = type(value)
    if kind is dict:
        if depth > _MAX_PLAIN_DEPTH or (len(value) == 1 and next(iter(value)) in _TAG_KEYS):
            return False
        for key, item in value.items():
            if type(key) is not str:
                return False
            item_kind = type(item)
            if item_kind is str or item_kind is int or item_kind is float or item_kind is bool:
                continue
            if item is not None and not _is_plain(item, depth + 1):
                return False
        return True
    if kind is list:
        if depth > _MAX_PLAIN_DEPTH:
            return False
        for item in value:
            item_kind = type(item)
            if item_kind is str or item_kind is int or item_kind is float or item_kind is bool:
                continue
            if item is not None and not _is_plain(item, depth + 1):
                return False
        return True
    return kind is str or kind is int or kind is float or kind is bool or value is None


def dumps(data: dict[str, t.Any]) -> str:
    """Serialize session data as Flask's tagged JSON.

    :raise TypeError, ValueError, RecursionError: as Flask's serializer does
        for data it cannot write.
    """
    if _is_plain(data, 0):
        return _ENCODER.encode(data)
    return session_json_serializer.dumps(data)


def dumps_plain(data: dict[str, t.Any]) -> str:
    """Serialize session data known to hold only JSON's own types (loaded
    from text without a tag, then given only scalars), skipping the check
    :func:`dumps` walks. Only the top-level dict is checked: a removed key
    can leave one that Flask would read as a tag.
    """
    if len(data) == 1 and next(iter(data)) in _TAG_KEYS:
        return session_json_serializer.dumps(data)
    return _ENCODER.encode(data)


def load_spans(raw: str) -> tuple[dict[str, t.Any], dict[str, tuple[int, int]]] | None:
    """Load plain text as written by :func:`dumps` (no whitespace), noting
    where each top-level ``"key":value`` lies, so that :func:`splice` can
    reuse the text of the values that did not change. ``None`` if the text
    is not in that form: load it with :func:`loads` instead.
    """
    if not raw.startswith("{") or not is_plain_text(raw):
        return None
    data: dict[str, t.Any] = {}
    spans: dict[str, tuple[int, int]] = {}
    if raw == "{}":
        return data, spans
    start = 1
    try:
        while True:
            if raw[start] != '"':
                return None
            key, colon = _SCAN(raw, start)
            if raw[colon] != ":":
                return None
            data[key], end = _SCAN(raw, colon + 1)
            spans[key] = (start, end)
            if raw[end] == ",":
                start = end + 1
            elif raw[end] == "}" and end + 1 == len(raw):
                return data, spans
            else:
                return None
    except (StopIteration, IndexError, ValueError):
        return None


def splice(
    raw: str, spans: dict[str, tuple[int, int]], data: dict[str, t.Any], written: t.Container[str]
) -> tuple[str, dict[str, tuple[int, int]] | None]:
    """What :func:`dumps_plain` writes for ``data``, loaded from ``raw`` by
    :func:`load_spans` and since changed only in the top-level keys
    ``written`` (set to JSON's own scalars, or deleted): the other values'
    text is reused, not encoded again. A write event on a 100 KB session
    then encodes a few bytes. Returns the text and its spans (``None`` if
    the text is Flask's, not plain).
    """
    if len(data) == 1 and next(iter(data)) in _TAG_KEYS:
        return session_json_serializer.dumps(data), None
    parts = []
    new_spans = {}
    start = 1
    for key in sorted(data):
        span = spans.get(key)
        if span is None or key in written:
            part = f"{_ENCODER.encode(key)}:{_ENCODER.encode(data[key])}"
        else:
            part = raw[span[0]:span[1]]
        parts.append(part)
        new_spans[key] = (start, start + len(part))
        start += len(part) + 1
    return "{" + ",".join(parts) + "}", new_spans


def value_at(raw: str, span: tuple[int, int]) -> t.Any:
    """Decode again the value of one ``"key":value`` span of plain text: a
    fresh copy, sharing nothing with any other load.
    """
    colon = _SCAN(raw, span[0])[1]
    return _SCAN(raw, colon + 1)[0]


class Loaded(t.NamedTuple):
    """A decoded plain record. Nobody may change ``data`` or anything in
    it: sessions take a shallow copy, and replace a container with a fresh
    decode of its span (:func:`value_at`) before handing it out.
    """

    text: str
    data: dict[str, t.Any]
    spans: dict[str, tuple[int, int]]


class LoadCache:
    """The decoded records of the large sessions this process read or wrote
    last, so that an event on a session that did not change since skips
    the decode: the C decoder takes about 1.2 ms on 100 KB, comparing the
    whole text a few microseconds. An entry is used only if the store still
    holds exactly its text, so it is never stale.

    :param limit: Most characters of text kept, least recently used first
        out (the decoded values take a few times that).
    :param smallest: Shorter records are not kept: decoding them costs
        about what keeping them saves.
    """

    def __init__(self, limit: int = 8_000_000, smallest: int = 2048) -> None:
        self.limit = limit
        self.smallest = smallest
        self._entries: dict[str, Loaded] = {}
        self._size = 0
        self._lock = threading.Lock()

    def keeps(self, raw: str) -> bool:
        """Whether a record of this text is large enough to keep."""
        return self.smallest <= len(raw) <= self.limit

    def get(self, session_id: str, raw: str) -> Loaded | None:
        """The entry of a session if its text is ``raw``."""
        with self._lock:
            entry = self._entries.pop(session_id, None)
            if entry is not None:
                self._entries[session_id] = entry  # most recently used last
        if entry is None or entry.text != raw:
            return None
        return entry

    def put(self, session_id: str, entry: Loaded) -> None:
        """Keep an entry, if its record is large enough."""
        if not self.keeps(entry.text):
            return
        with self._lock:
            old = self._entries.pop(session_id, None)
            if old is not None:
                self._size -= len(old.text)
            self._entries[session_id] = entry
            self._size += len(entry.text)
            while self._size > self.limit:
                oldest = next(iter(self._entries))
                self._size -= len(self._entries.pop(oldest).text)

    def drop(self, session_id: str) -> None:
        """Forget a session (it ended)."""
        with self._lock:
            old = self._entries.pop(session_id, None)
            if old is not None:
                self._size -= len(old.text)


def is_plain_text(raw: str) -> bool:
    """Whether stored text holds no tagged value, so it loads as JSON's own
    types only.
    """
    return _TAG_MARK not in raw


def loads(raw: str) -> t.Any:
    """Load what :func:`dumps` (or Flask's serializer) wrote.

    :raise ValueError: the text is not JSON.
    """
    if not is_plain_text(raw):
        return session_json_serializer.loads(raw)
    return json.loads(raw)
