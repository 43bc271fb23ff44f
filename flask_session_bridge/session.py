"""The session object: a dict that loads itself on first touch and knows
whether it changed, nested mutation included.
"""

from __future__ import annotations

import typing as t

from flask.sessions import SessionMixin

from . import serialization
from .exceptions import SessionMissing
from .exceptions import SessionValueError

if t.TYPE_CHECKING:
    from .serialization import LoadCache
    from .serialization import Loaded
    from .stores.base import Record


#: Values that always serialize, checked without serializing them.
_SCALARS = frozenset({str, int, float, bool})
#: The loaded types whose contents can change in place: handing one out
#: means the session may change without a write through it. (Tagged JSON
#: loads nothing else mutable; a tuple may hold lists.)
_CONTAINERS = frozenset({dict, list, tuple})


def serialize(data: dict[str, t.Any]) -> str:
    """Serialize session data as Flask's tagged JSON.

    :raise SessionValueError: a value cannot be serialized; names its key.
    """
    try:
        return serialization.dumps(data)
    except (TypeError, ValueError, RecursionError) as e:
        for key, value in data.items():
            _check_value(key, value)
        raise SessionValueError(f"session data cannot be serialized: {e}") from e


def serialize_plain(data: dict[str, t.Any]) -> str:
    """Serialize data known to hold only JSON's own types (see
    :attr:`BridgeSession.plain`): nothing in it can fail.
    """
    return serialization.dumps_plain(data)


def deserialize(raw: str) -> dict[str, t.Any]:
    """Load session data written by :func:`serialize`.

    :raise ValueError: the data cannot be decoded, whatever the reason.
    """
    try:
        if not raw.isascii():
            raw.encode()  # a store's undecodable bytes fail here
        data = serialization.loads(raw)
    except Exception as e:
        # A bad tag payload fails with TypeError, KeyError or worse deep in
        # the tagger; every way of failing means the same: a corrupt record.
        raise ValueError(f"stored session data cannot be decoded: {e!r}") from e
    if not isinstance(data, dict):
        raise ValueError("stored session data is not an object")
    return data


def _load_record(raw: str) -> tuple[dict[str, t.Any], dict[str, tuple[int, int]] | None]:
    """Load a stored record, with the spans of its top-level values when it
    is plain (see :func:`serialization.load_spans`).

    :raise ValueError: the data cannot be decoded.
    """
    if not raw.isascii():
        try:
            raw.encode()  # a store's undecodable bytes fail here
        except UnicodeEncodeError as e:
            raise ValueError(f"stored session data cannot be decoded: {e!r}") from e
    loaded = serialization.load_spans(raw)
    if loaded is not None:
        return loaded
    return deserialize(raw), None


def _check_value(key: str, value: t.Any) -> None:
    if not isinstance(key, str):
        raise SessionValueError(f"session keys must be strings, not {key!r}")
    if value is None or type(value) in _SCALARS:
        return
    try:
        serialization.dumps({key: value})
    except RecursionError as e:
        raise SessionValueError(
            f"session[{key!r}] cannot be stored: it is cyclic or nested too deep"
        ) from e
    except (TypeError, ValueError) as e:
        raise SessionValueError(
            f"session[{key!r}] cannot be stored: {type(value).__name__} is not"
            f" serializable ({e})"
        ) from e


class BridgeSession(SessionMixin):
    """The session seen as ``flask.session`` in views and socket handlers.

    Nothing is read until the session is first touched; then ``opener`` locks
    and loads it (see :meth:`attach`). ``session["cart"].append(x)`` counts
    without ``session.modified = True``: once a container (dict, list,
    tuple) of the session was handed out, through any accessor, changes are
    found by comparing the serialized data with what was loaded. A session
    that was neither written nor handed a container cannot have changed, and
    is not serialized at all.

    :param opener: Called with this session on first touch.
    """

    def __init__(self, opener: t.Callable[[BridgeSession], None]) -> None:
        self._opener = opener
        self._data: dict[str, t.Any] | None = None
        self._sid: str | None = None
        self._client_id: str | None = None
        #: The payload as loaded from the store; ``None`` if not stored.
        self.stored: str | None = None
        #: Token of the lock this session holds in the store, if any.
        self.lock_token: str | None = None
        #: ``False`` for a socket or task without a session: writes raise.
        self.writable = True
        #: Set by ``session.modified = True``; a rewrite happens only if the
        #: data differ, but the session is then created if new.
        self.modified = False
        self.accessed = False
        #: A container of the data was handed out: it may have changed in
        #: place, so only a comparison tells.
        self._lent = False
        #: The data hold only JSON's own types: loaded without a tag and
        #: given only scalars since, so a dump needs no check of every value.
        self._plain = True
        #: Where each top-level value lies in :attr:`stored`, and the keys
        #: written since: a dump reuses the text of the others.
        self._spans: dict[str, tuple[int, int]] | None = None
        self._written: set[str] | None = None
        #: The cached load whose containers :attr:`_data` still shares;
        #: each is swapped for a fresh decode before it is handed out.
        self._shared: Loaded | None = None
        #: What the cache may keep once :attr:`stored` is saved.
        self.cacheable: Loaded | None = None
        #: Why the session ended in this request or event, if it did.
        self.ended: str | None = None
        #: ``clear()`` was called on the stored session: it ends at write-back
        #: even if new writes followed (rule 7).
        self.cleared = False
        #: ``session.permanent`` as loaded, to re-send the cookie on a change.
        self.loaded_permanent = False
        #: Seconds to keep the session at the next save, if not the app's.
        self.max_age: float | None = None
        #: ``(session_id, lock_token)`` of the session this one renews.
        self.replaces: tuple[str, str | None] | None = None
        #: Cookie token, for sessions opened over HTTP.
        self.token: str | None = None
        #: The cookie was accepted through a fallback key: sign it again.
        self.resign = False
        #: Whether this request gave the session a new token (new, renewed).
        self.token_issued = False
        #: The browser's client token, and whether to send its cookie again.
        self.client_token: str | None = None
        self.client_roll = False
        #: Gives a new session its id at the first write (HTTP only).
        self.allocate: t.Callable[[BridgeSession], None] | None = None
        self.is_socket = False

    # -- loading ---------------------------------------------------------

    @property
    def loaded(self) -> bool:
        """Whether the session was touched (and so opened) in this scope."""
        return self._data is not None

    def _load(self) -> dict[str, t.Any]:
        if self._data is None:
            self.accessed = True
            self._opener(self)
            if self._data is None:
                self._data = {}
        return self._data

    def attach(
        self,
        session_id: str | None,
        record: Record | None,
        lock_token: str | None,
        cache: LoadCache | None = None,
    ) -> None:
        """Fill the session from a store record (or make it empty); a
        ``cache`` saves decoding a large record again.
        """
        self._sid = session_id
        self.lock_token = lock_token
        self._lent = False
        self._written = None
        self._shared = self.cacheable = None
        if record is None:
            self.stored = None
            self._data = {}
            self._plain = True
            self._spans = None
        else:
            self._data = data = self._decode(session_id, record.data, cache)
            self._client_id = record.client_id
            self.stored = record.data
            self.loaded_permanent = bool(data.get("_permanent", False))

    def _decode(
        self, session_id: str | None, raw: str, cache: LoadCache | None
    ) -> dict[str, t.Any]:
        """Decode a stored record; a large plain one through ``cache``."""
        if session_id is None or cache is None or not cache.keeps(raw):
            data, self._spans = _load_record(raw)
            self._plain = serialization.is_plain_text(raw)
            return data
        entry = cache.get(session_id, raw)
        if entry is None:
            data, spans = _load_record(raw)
            if spans is None:
                self._spans, self._plain = None, serialization.is_plain_text(raw)
                return data
            entry = serialization.Loaded(raw, data, spans)
            cache.put(session_id, entry)
        self._spans, self._plain, self._shared = entry.spans, True, entry
        return dict(entry.data)

    def share(self, entry: Loaded) -> None:
        """The containers of the data are ``entry``'s from now on: each is
        decoded afresh before it is handed out.
        """
        self._shared = entry

    def detach(self) -> None:
        """Forget the stored session: it ended, the data are gone. Over HTTP
        later writes start a new session; a socket cannot start one.
        """
        self._sid = None
        self.stored = None
        self.lock_token = None
        self.cleared = False
        self._data = {}
        self._plain = True
        self._spans = None
        self._shared = None
        self.writable = self.allocate is not None

    def replace(self, data: dict[str, t.Any], max_age: float | None) -> None:
        """Replace the data of this loaded session; saved at write-back."""
        self._write()
        self._data = data
        self._plain = False
        self._spans = None
        self._shared = None
        self.max_age = max_age
        self.modified = True

    @property
    def sid(self) -> str | None:
        """The public session id, or ``None`` while there is no session."""
        self._load()
        return self._sid

    @sid.setter
    def sid(self, value: str | None) -> None:
        self._sid = value

    @property
    def client_id(self) -> str | None:
        """The public id of the client (browser), or ``None`` for a socket
        whose handshake carried no client cookie.
        """
        self._load()
        return self._client_id

    @client_id.setter
    def client_id(self, value: str | None) -> None:
        self._client_id = value

    @property
    def new(self) -> bool:  # type: ignore[override]
        """Whether the session is not in the store (yet)."""
        self._load()
        return self.stored is None

    def changed_payload(self) -> str | None:
        """The serialized data if they differ from the stored ones."""
        data = self._load()
        if self.stored is not None and not self.modified and not self._lent:
            return None
        if not self._plain or self._lent:
            raw = serialize(data)
        elif self._spans is not None and self.stored is not None:
            # Only top-level keys were written: the rest is the stored text.
            raw, spans = serialization.splice(self.stored, self._spans, data, self._written or ())
            if spans is not None and raw != self.stored:
                # No container was handed out: nothing outside holds one.
                self.cacheable = serialization.Loaded(raw, dict(data), spans)
        else:
            # Plain data that lent no container need no check of every value.
            raw = serialize_plain(data)
        if raw == self.stored:
            return None
        self._spans = None  # about to be stored: the spans are of the old text
        return raw

    # -- the mapping -----------------------------------------------------

    def _write(self) -> dict[str, t.Any]:
        data = self._load()
        if not self.writable or (self.cleared and self.allocate is None):
            raise SessionMissing(
                "this socket has no session (or it was just cleared); sessions"
                " are created by HTTP responses, which can set the cookie"
            )
        if self._sid is None and self.allocate is not None:
            self.allocate(self)
        return data

    def __getitem__(self, key: str) -> t.Any:
        # Every read of a value goes through here or :meth:`get`, the
        # mapping mixins' ``setdefault``, ``pop``, ``values`` and ``items``
        # included.
        value = self._load()[key]
        if type(value) in _CONTAINERS:
            return self._lend(key, value)
        return value

    def _lend(self, key: str, value: t.Any) -> t.Any:
        """Hand out a container of the data: a fresh one if the cached load
        holds this very one, which nobody may change.
        """
        shared = self._shared
        if shared is not None and shared.data.get(key) is value:
            assert self._data is not None
            value = self._data[key] = serialization.value_at(shared.text, shared.spans[key])
        self._lent = True
        return value

    def __setitem__(self, key: str, value: t.Any) -> None:
        data = self._write()
        _check_value(key, value)
        if value is not None and type(value) not in _SCALARS:
            self._plain = False
        elif self._spans is not None:
            self._wrote(key)
        data[key] = value
        self.modified = True

    def _wrote(self, key: str) -> None:
        if self._written is None:
            self._written = set()
        self._written.add(key)

    def __delitem__(self, key: str) -> None:
        del self._write()[key]
        if self._spans is not None:
            self._wrote(key)
        self.modified = True

    def __iter__(self) -> t.Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def __contains__(self, key: object) -> bool:
        return key in self._load()

    def get(self, key: str, default: t.Any = None) -> t.Any:
        value = self._load().get(key, default)
        if type(value) in _CONTAINERS:
            return self._lend(key, value)
        return value

    def clear(self) -> None:
        data = self._load()
        if self.stored is not None:
            # Remembered, not inferred from emptiness at write-back: in
            # ``session.clear(); flash("bye")`` the old session still ends.
            data.clear()
            self.cleared = True
            self.modified = True
        elif data:
            self._write().clear()
            self.modified = True

    def copy(self) -> dict[str, t.Any]:
        """A plain dict copy of the data (a shallow one: it shares the
        containers).
        """
        data = self._load()  # first: loading resets the flag
        for key, value in data.items():
            if type(value) in _CONTAINERS:
                self._lend(key, value)
        self._lent = True
        return dict(data)

    def __repr__(self) -> str:
        if self._data is None:
            return f"<{type(self).__name__} (not loaded)>"
        return f"<{type(self).__name__} {self._sid!r} {self._data!r}>"
