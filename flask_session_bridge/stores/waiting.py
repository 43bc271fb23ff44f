"""Threads of one process waiting for session locks, woken one per release.

Waking every waiter at each release makes all but one of them try again in
vain: with 16 sockets on one session, each event would cost 15 wasted tries.
So a release wakes one waiter of that session; a waiter that gives up passes
its wake-up on, and each waiter checks a release counter before it sleeps, so
a release that comes between its try and its sleep is not missed.
"""

from __future__ import annotations

import threading


class Queue:
    """The threads waiting for one session's lock."""

    __slots__ = ("count", "releases", "wake")

    def __init__(self, mutex: threading.Lock) -> None:
        self.count = 0
        #: Bumped at each release of the lock.
        self.releases = 0
        self.wake = threading.Condition(mutex)


class Waiters:
    """The lock waiters of one store. Every method must be called holding
    ``mutex``, the store's own.
    """

    def __init__(self, mutex: threading.Lock) -> None:
        self.mutex = mutex
        #: session id -> its waiters; an entry lives while someone waits.
        self._queues: dict[str, Queue] = {}

    def join(self, session_id: str) -> Queue:
        """Count the calling thread among the waiters of ``session_id``."""
        queue = self._queues.get(session_id)
        if queue is None:
            queue = self._queues[session_id] = Queue(self.mutex)
        queue.count += 1
        return queue

    def leave(self, session_id: str, queue: Queue, woken_in_vain: bool) -> None:
        """Stop waiting. ``woken_in_vain``: the thread gives up without the
        lock, so a wake-up it may have had goes to the next waiter.
        """
        queue.count -= 1
        if queue.count == 0:
            del self._queues[session_id]
        elif woken_in_vain:
            queue.wake.notify()

    def released(self, session_id: str) -> None:
        """The lock of ``session_id`` is free: wake one of its waiters."""
        queue = self._queues.get(session_id)
        if queue is not None:
            queue.releases += 1
            queue.wake.notify()
