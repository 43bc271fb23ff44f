"""Keeping the locks of running work alive.

A session lock is a lease of ``lock_expire`` seconds, so a worker that
crashes while holding one blocks the session only that long. Work that is
still running (a handler that takes a minute) must keep its lock: one
watchdog thread per app renews every lock held for longer than a third of
its lease, as redis-py's ``Lock.extend`` or Redisson's watchdog do. Most
locks are held for milliseconds and are never renewed, so the watchdog costs
an event nothing but two dict operations.
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t

from .exceptions import SessionBridgeError

if t.TYPE_CHECKING:
    from .stores.base import Store

logger = logging.getLogger("flask_session_bridge")


class Leases:
    """The locks this process holds in ``store``, renewed while held.

    :param store: The store the locks are in.
    :param expire: Seconds each lease lasts; renewed every third of that.
    """

    def __init__(self, store: Store, expire: float) -> None:
        self.store = store
        self.expire = expire
        #: token -> (session id, monotonic time of the last take or renewal)
        self._held: dict[str, tuple[str, float]] = {}
        self._mutex = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, session_id: str, token: str) -> None:
        """Renew the lock ``token`` holds on ``session_id`` until :meth:`drop`."""
        self._held[token] = (session_id, time.monotonic())
        if self._thread is None:
            self._start()

    def drop(self, token: str) -> None:
        """Stop renewing the lock: it was released, saved or lost."""
        self._held.pop(token, None)

    def _start(self) -> None:
        with self._mutex:
            if self._thread is not None:
                return
            # A daemon thread (a green thread once eventlet or gevent patched
            # threading), started at the first lock so that it starts after a
            # server forks its workers.
            self._thread = threading.Thread(
                target=self._run, name="flask_session_bridge leases", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        period = self.expire / 3
        while True:
            time.sleep(period)
            try:
                self.renew_due()
            except Exception:  # the watchdog must outlive any one failure
                logger.exception("renewing session locks failed")

    def renew_due(self) -> None:
        """Renew every lock last renewed a third of its lease ago or more."""
        now = time.monotonic()
        due = [
            (token, session_id)
            for token, (session_id, since) in list(self._held.items())
            if now - since >= self.expire / 3
        ]
        for token, session_id in due:
            try:
                kept = self.store.renew(session_id, token, self.expire)
            except SessionBridgeError as e:
                # The store is down: try again next period; if it stays down
                # past the lease, the write-back finds the lock lost.
                logger.warning("could not renew the lock of session %s: %s", session_id, e)
                continue
            if not kept:
                logger.error("session %s: its lock expired while work was running", session_id)
                self._held.pop(token, None)
            elif token in self._held:
                self._held[token] = (session_id, time.monotonic())
