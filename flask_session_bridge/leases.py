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

import os
import threading
import time
import typing as t

from .exceptions import SessionBridgeError
from .logging import logger

if t.TYPE_CHECKING:
    from .stores.base import Store


class Leases:
    """The locks this process holds in ``store``, renewed while held.

    :param store: The store the locks are in.
    :param expire: Seconds each lease lasts. A lease is renewed once a third
        of it has passed, at the latest when half of it has: the watchdog
        looks every sixth, so a slow renewal still lands in time.
    :param clock: Seconds, to tell how long a lock has been held (tests pass
        a clock they move).
    """

    def __init__(
        self, store: Store, expire: float, *, clock: t.Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.expire = expire
        self._clock = clock
        #: token -> (session id, time of the last take or renewal)
        self._held: dict[str, tuple[str, float]] = {}
        self._mutex = threading.Lock()
        #: The process whose watchdog runs; a forked child has none.
        self._pid: int | None = None

    def hold(self, session_id: str, token: str) -> None:
        """Renew the lock ``token`` holds on ``session_id`` until :meth:`drop`."""
        if self._pid != os.getpid():
            self._start()
        with self._mutex:
            self._held[token] = (session_id, self._clock())

    def drop(self, token: str) -> None:
        """Stop renewing the lock: it was released, saved or lost."""
        with self._mutex:
            self._held.pop(token, None)

    def _start(self) -> None:
        with self._mutex:
            if self._pid == os.getpid():
                return
            # A fork copies the parent's locks but not its threads: the
            # locks are the parent's to renew.
            self._held.clear()
            self._pid = os.getpid()
            # A daemon thread (a green thread once eventlet or gevent patched
            # threading), started at the first lock of each process.
            threading.Thread(
                target=self._run, name="flask_session_bridge leases", daemon=True
            ).start()

    def _run(self) -> None:
        period = self.expire / 6
        while True:
            time.sleep(period)
            try:
                self.renew_due()
            except Exception:  # the watchdog must outlive any one failure
                logger.exception("renewing session locks failed")

    def renew_due(self) -> None:
        """Renew every lock last renewed a third of its lease ago or more."""
        now = self._clock()
        with self._mutex:
            due = [
                (token, session_id)
                for token, (session_id, since) in self._held.items()
                if now - since >= self.expire / 3
            ]
        for token, session_id in due:
            renewed = self._clock()
            try:
                kept = self.store.renew(session_id, token, self.expire)
            except SessionBridgeError as e:
                # The store is down: try again next period; if it stays down
                # past the lease, the write-back finds the lock lost.
                logger.warning("could not renew the lock of session %s: %s", session_id, e)
                continue
            except Exception:
                # A store's bug must not cost the other locks their renewal.
                logger.exception("renewing the lock of session %s failed", session_id)
                continue
            with self._mutex:
                if token not in self._held:
                    continue  # dropped meanwhile: the work is done
                if kept:
                    # Timed from before the call: the lease runs from when
                    # the store got it, not from when its answer came back.
                    self._held[token] = (session_id, renewed)
                else:
                    del self._held[token]
            if not kept:
                logger.error("session %s: its lock expired while work was running", session_id)
