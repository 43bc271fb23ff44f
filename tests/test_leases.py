"""The lease watchdog: it renews the locks of running work, only those held
long enough to need it, and gives up on locks that are lost.
"""

from __future__ import annotations

import logging
import threading

from flask_session_bridge import StoreUnavailable
from flask_session_bridge.leases import Leases


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RenewingStore:
    """Records the renewals asked of it; ``answers`` decides what each token
    gets: ``True``, ``False`` or an exception to raise.
    """

    def __init__(self) -> None:
        self.renewed: list[tuple[str, str, float]] = []
        self.answers: dict[str, object] = {}
        self.called = threading.Event()

    def renew(self, session_id: str, token: str, expire: float) -> bool:
        self.renewed.append((session_id, token, expire))
        self.called.set()
        answer = self.answers.get(token, True)
        if isinstance(answer, BaseException):
            raise answer
        return bool(answer)


def test_only_locks_held_for_a_third_of_the_lease_are_renewed():
    store, clock = RenewingStore(), FakeClock()
    leases = Leases(store, 3.0, clock=clock)
    leases.hold("s1", "t1")
    clock.advance(0.9)
    leases.renew_due()
    assert store.renewed == []  # most locks live milliseconds: no renewal
    clock.advance(0.1)
    leases.hold("s2", "t2")
    leases.renew_due()
    assert store.renewed == [("s1", "t1", 3.0)]
    clock.advance(0.5)
    leases.renew_due()
    assert store.renewed == [("s1", "t1", 3.0)]  # renewed 0.5 s ago; t2 held 0.5 s
    clock.advance(0.5)
    leases.renew_due()
    assert store.renewed[1:] == [("s1", "t1", 3.0), ("s2", "t2", 3.0)]


def test_a_dropped_lock_is_never_renewed():
    store, clock = RenewingStore(), FakeClock()
    leases = Leases(store, 3.0, clock=clock)
    leases.hold("s1", "t1")
    leases.drop("t1")
    leases.drop("never held")  # dropping twice or unknown is harmless
    clock.advance(10)
    leases.renew_due()
    assert store.renewed == []


def test_a_drop_during_the_renewal_is_not_undone():
    # The work finished while its renewal was on the wire: the watchdog must
    # not take the lock back into its care.
    store, clock = RenewingStore(), FakeClock()
    leases = Leases(store, 3.0, clock=clock)
    leases.hold("s1", "t1")
    real_renew = store.renew

    def renew_then_drop(session_id, token, expire):
        leases.drop(token)
        return real_renew(session_id, token, expire)

    store.renew = renew_then_drop
    clock.advance(1.5)
    leases.renew_due()
    clock.advance(10)
    store.renew = real_renew
    leases.renew_due()
    assert store.renewed == [("s1", "t1", 3.0)]


def test_a_lost_lock_is_given_up_and_logged(caplog):
    store, clock = RenewingStore(), FakeClock()
    leases = Leases(store, 3.0, clock=clock)
    store.answers["lost"] = False
    leases.hold("s1", "lost")
    leases.hold("s2", "kept")
    clock.advance(1.5)
    with caplog.at_level(logging.ERROR, "flask_session_bridge"):
        leases.renew_due()
    assert "s1" in caplog.text and "expired" in caplog.text
    clock.advance(1.5)
    leases.renew_due()
    assert [token for _, token, _ in store.renewed] == ["lost", "kept", "kept"]


def test_a_store_error_skips_one_round_and_spares_the_other_locks(caplog):
    store, clock = RenewingStore(), FakeClock()
    leases = Leases(store, 3.0, clock=clock)
    store.answers["down"] = StoreUnavailable("store is down")
    store.answers["buggy"] = RuntimeError("a store's bug")
    for token in ("down", "buggy", "fine"):
        leases.hold("s-" + token, token)
    clock.advance(1.5)
    with caplog.at_level(logging.WARNING, "flask_session_bridge"):
        leases.renew_due()
    assert [token for _, token, _ in store.renewed] == ["down", "buggy", "fine"]
    assert "store is down" in caplog.text and "a store's bug" in caplog.text
    # The store is back: the locks that failed are renewed at the next look,
    # the one just renewed is not due yet.
    store.answers.clear()
    clock.advance(0.5)
    leases.renew_due()
    assert [token for _, token, _ in store.renewed[3:]] == ["down", "buggy"]


def test_the_watchdog_thread_renews_and_outlives_a_failure():
    # On the real clock: a 0.3 s lease is looked at every 0.05 s.
    store = RenewingStore()
    store.answers["t1"] = RuntimeError("first renewal fails")
    leases = Leases(store, 0.3)
    leases.hold("s1", "t1")
    assert store.called.wait(5)
    store.called.clear()
    store.answers.clear()
    assert store.called.wait(5)  # it kept running after the failure
    leases.drop("t1")
    assert store.renewed[-1] == ("s1", "t1", 0.3)
