"""Session stores, and building one from a ``SESSION_BRIDGE_STORE`` URL."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from .base import Record as Record
from .base import Store as Store
from .memory import MemoryStore as MemoryStore
from .redis import RedisStore as RedisStore
from .sqlite import SQLiteStore as SQLiteStore

_URL_HELP = (
    "Use 'memory://', 'sqlite:///relative/or/absolute.db' or"
    " 'redis://host:port/db' (or pass store= a store object)."
)


def store_from_url(url: str, instance_path: str) -> Store:
    """Build a store from a URL. A relative SQLite path is relative to the
    app's ``instance_path``.

    :raise ValueError: the URL names no known store; the message says what works.
    """
    scheme = urlsplit(url).scheme if isinstance(url, str) else ""
    if scheme == "memory":
        return MemoryStore()
    if scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not path:
            raise ValueError(f"SQLite store URL {url!r} has no path. {_URL_HELP}")
        return SQLiteStore(os.path.join(instance_path, path))
    if scheme in ("redis", "rediss", "unix"):
        return RedisStore(url)
    raise ValueError(f"Unknown session store URL {url!r}. {_URL_HELP}")
