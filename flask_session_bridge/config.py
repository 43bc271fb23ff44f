"""The bridge's options: defaults, the ``SESSION_BRIDGE_*`` config keys, and
checks that turn a misconfiguration into a message saying how to fix it.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing as t
from datetime import timedelta

from socketio import PubSubManager

from .logging import logger
from .stores.memory import MemoryStore

if t.TYPE_CHECKING:
    from flask import Flask
    from flask_socketio import SocketIO

PREFIX = "SESSION_BRIDGE_"


@dataclasses.dataclass(frozen=True)
class Options:
    """The options of one app's bridge, each also ``SESSION_BRIDGE_<NAME>``."""

    #: A store object or URL (``memory://``, ``sqlite:///path``, ``redis://...``).
    store: t.Any = "memory://"
    #: ``"allow"`` or ``"reject"`` a socket whose handshake names no session.
    socket_missing: str = "allow"
    #: Seconds to wait for a session's lock.
    lock_timeout: float = 10.0
    #: Seconds a lock lasts unless the work holding it renews it.
    lock_expire: float = 5.0
    #: Lifetime of the client cookie.
    client_lifetime: float = timedelta(days=365).total_seconds()
    #: Seconds between runs of the auto-cleanup.
    cleanup_interval: float = 300.0
    #: Seconds a socket token is good for.
    socket_token_lifetime: float = 60.0
    #: Renew the session at every Flask-Login ``login_user``.
    regenerate_on_login: bool = True
    #: End the least recently active session past this many per user.
    max_sessions_per_user: int | None = None


_NAMES = tuple(field.name for field in dataclasses.fields(Options))
_DEFAULTS = Options()


def config_key(name: str) -> str:
    return PREFIX + name.upper()


def set_defaults(app: Flask) -> None:
    """Put every option's default in ``app.config``, where it is missing."""
    for name in _NAMES:
        default = getattr(_DEFAULTS, name)
        if name == "client_lifetime":
            default = timedelta(seconds=default)
        app.config.setdefault(config_key(name), default)


def resolve(app: Flask, *given: t.Mapping[str, t.Any]) -> Options:
    """The options for ``app``: the first of ``given`` (keyword arguments)
    that sets one wins, then ``app.config``.

    :raise RuntimeError: an unknown ``SESSION_BRIDGE_*`` config key (a typo
        would otherwise silently keep the default).
    :raise ValueError: a value of the wrong kind; the message names the
        option and its config key.
    """
    unknown = [key for key in app.config if key.startswith(PREFIX) and key[len(PREFIX):].lower()
               not in _NAMES]
    if unknown:
        key = unknown[0]
        known = [config_key(name) for name in _NAMES]
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise RuntimeError(
            f"Unknown config key {key}.{hint} The session bridge reads: {', '.join(known)}."
        )
    values: dict[str, t.Any] = {}
    for name in _NAMES:
        value = next((g[name] for g in given if g.get(name) is not None), None)
        if value is None:
            value = app.config[config_key(name)]
        values[name] = _check(name, value)
    return Options(**values)


def _check(name: str, value: t.Any) -> t.Any:
    where = f"{name} (config {config_key(name)})"
    if name == "store":
        if value is None:
            raise ValueError(f"{where} must be a store object or a URL such as 'memory://'.")
        return value
    if name == "socket_missing":
        if value not in ("allow", "reject"):
            raise ValueError(f"{where} must be 'allow' or 'reject', not {value!r}.")
        return value
    if name == "regenerate_on_login":
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be True or False, not {value!r}.")
        return value
    if name == "max_sessions_per_user":
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"{where} must be a whole number of 1 or more, or None,"
                             f" not {value!r}.")
        return value
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(
            f"{where} must be a number of seconds greater than 0 (or a timedelta),"
            f" not {value!r}."
        )
    return float(seconds)


def log_start(app: Flask, store: t.Any, socketio: SocketIO | None) -> None:
    """Say which store the app's sessions are in, and warn when that store
    cannot serve the set-up: a MemoryStore is one process's, but a message
    queue means several workers.
    """
    logger.info("session bridge for app %r: sessions in %r", app.name, store)
    server = getattr(socketio, "server", None)
    manager = getattr(server, "manager", None)
    if isinstance(manager, PubSubManager) and isinstance(store, MemoryStore):
        logger.warning(
            "session bridge for app %r: Flask-SocketIO has a message queue (several"
            " workers) but sessions are in a MemoryStore, which each worker has its"
            " own of: set SESSION_BRIDGE_STORE to a redis:// or sqlite:/// URL.",
            app.name,
        )
