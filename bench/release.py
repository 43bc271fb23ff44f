"""Prototype, for the lead: a read-only event whose release costs no
waited-for round trip, against today's RedisStore and the anchor.

    python bench/release.py [--rounds 5] [--count 400]

``PiggybackStore`` is RedisStore with one change: ``release`` (the end of an
event that wrote nothing) queues its script instead of running it; the
queue goes out in front of this process's next round trip, in the same
pipeline (so this process's next lock of that session comes after it), or,
if nothing else is sent for ``linger`` seconds, on its own from a sender
thread. Each event then waits for one round trip, the lock's, as the
anchor's ``GET``. A holder that dies with releases queued leaves locks that
expire with their lease (5 s), as a crash does today.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import threading
import time
import typing as t

from inprocess import redis_server
from inprocess import versions
from sizes import anchor_app
from sizes import bridge_app
from sizes import Client
from sizes import interleaved

from flask_session_bridge import RedisStore
from flask_session_bridge.stores.redis import _ms


class PiggybackStore(RedisStore):
    def __init__(self, *args: t.Any, linger: float = 0.002, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._queued: queue.SimpleQueue[tuple[t.Any, list[str], list[str | int]]] = (
            queue.SimpleQueue()
        )
        self._linger = linger
        threading.Thread(target=self._send_queued, daemon=True).start()

    def _drain(self) -> list[tuple[t.Any, list[str], list[str | int]]]:
        steps = []
        while True:
            try:
                steps.append(self._queued.get_nowait())
            except queue.Empty:
                return steps

    def _round_trip(self, steps: t.Any, wait: bool = False) -> list[t.Any]:
        queued = self._drain()
        if not queued:
            return super()._round_trip(steps, wait)
        return super()._round_trip(queued + list(steps), wait)[len(queued) :]

    def release(self, session_id: str, token: str, max_age: float | None) -> None:
        self._held.pop(token, None)
        touch = "" if max_age is None else _ms(max_age)
        # The third argument (a record with a newer last_active, at most once
        # a minute) is left out: the prototype measures the lock's release.
        self._queued.put((self._release, self._keys(session_id), [token, touch, ""]))

    def _send_queued(self) -> None:
        while True:
            first = self._queued.get()
            time.sleep(self._linger)  # a round trip of the app's may take it along
            steps = [first, *self._drain()]
            super()._round_trip(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=400)
    args = parser.parse_args()
    print("release:", versions())
    with redis_server() as url:
        for size in (0, 10_000):
            today = Client(bridge_app(RedisStore(url, prefix=f"t{size}:")), size)
            proto = Client(bridge_app(PiggybackStore(url, prefix=f"p{size}:")), size)
            anchor = Client(anchor_app(url, f"a{size}:"), size)
            results = interleaved(
                {
                    "today": today.read,
                    "piggyback": proto.read,
                    "anchor": anchor.read,
                    "today-w": today.inc,
                    "piggyback-w": proto.inc,
                },
                args.rounds,
                args.count,
            )

            def cpu(name: str, results: t.Any = results) -> float:
                return statistics.median(c for _, c in results[name])

            def vs_anchor(name: str, k: int, results: t.Any = results) -> float:
                return statistics.median(
                    a[k] / b[k] for a, b in zip(results["anchor"], results[name])
                )

            print(f"\nread-only events, {size} B session (CPU us; ratios anchor / bridge)")
            for name in ("today", "piggyback"):
                print(
                    f"  {name:<10} {cpu(name):6.0f} us  CPU {vs_anchor(name, 1):.2f}x"
                    f"  wall {vs_anchor(name, 0):.2f}x"
                )
            print(f"  {'anchor':<10} {cpu('anchor'):6.0f} us")
            print(
                f"  write events: today {cpu('today-w'):.0f} us,"
                f" piggyback {cpu('piggyback-w'):.0f} us"
            )


if __name__ == "__main__":
    main()
