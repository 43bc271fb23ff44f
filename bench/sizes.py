"""Socket events at several session sizes, reads and writes, and several
sockets of one session, side by side with the anchor:

    python bench/sizes.py [--sizes 0,1000,10000,100000] [--rounds 5]

The anchor is Flask-SocketIO ``manage_session=False`` plus Flask-Session's
Redis backend (``pip install -e '.[bench]'``); the bridge runs on a
RedisStore against the same redis-server (started here on a free loopback
port) and on a MemoryStore against a bare event. Everything runs in this
process with Flask-SocketIO's test client (``async_mode="threading"``), so
the figures are this process's CPU per event (``time.process_time``) plus,
for wall time, the Redis round trips. Each ratio is the median over rounds
of the per-round ratio; configurations run interleaved, in an order that
rotates round by round.

The session of each size holds a user name, a counter and a list of small
dicts (a cart) filling it to about that many bytes of JSON.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import typing as t

import redis
from flask import Flask
from flask import session
from flask_socketio import SocketIO
from inprocess import check
from inprocess import redis_server
from inprocess import versions

from flask_session_bridge import MemoryStore
from flask_session_bridge import RedisStore
from flask_session_bridge import SessionBridge


def cart(size: int) -> list[dict[str, t.Any]]:
    """Items of about 80 bytes of JSON each, ``size`` bytes in all."""
    return [
        {"id": i, "name": f"item number {i}", "qty": 2, "price": 9.99, "tags": ["a", "b"]}
        for i in range(size // 80)
    ]


def add_handlers(app: Flask, socketio: SocketIO, bridge: SessionBridge | None) -> None:
    @app.post("/login/<int:size>")
    def login(size: int) -> str:
        if bridge is not None:
            bridge.regenerate()
        session["user"] = "bench"
        session["n"] = 0
        session["cart"] = cart(size)
        return "ok"

    @socketio.on("inc")
    def inc() -> int:
        session["n"] = session.get("n", 0) + 1
        return t.cast(int, session["n"])

    @socketio.on("read")
    def read() -> t.Any:
        return session.get("user")

    @socketio.on("bare")
    def bare() -> str:
        return "pong"


def bridge_app(store: t.Any) -> Flask:
    app = Flask("bench_bridge")
    app.config.update(SECRET_KEY="bench secret", TESTING=True)
    socketio = SocketIO(app, async_mode="threading")
    bridge = SessionBridge(app, socketio, store=store)
    add_handlers(app, socketio, bridge)
    return app


def anchor_app(url: str, prefix: str) -> Flask:
    from flask_session import Session

    app = Flask("bench_anchor")
    app.config.update(
        SECRET_KEY="bench secret",
        TESTING=True,
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis.from_url(url),
        SESSION_KEY_PREFIX=prefix,
    )
    Session(app)
    socketio = SocketIO(app, async_mode="threading", manage_session=False)
    add_handlers(app, socketio, None)
    return app


class Client:
    """An HTTP client logged in with a session of ``size`` bytes, and
    ``sockets`` sockets on its cookies.
    """

    def __init__(self, app: Flask, size: int, sockets: int = 1) -> None:
        self.http = app.test_client()
        check(self.http.post(f"/login/{size}").status_code == 200, f"{app.name}: login failed")
        socketio = app.extensions["socketio"]
        self.sockets = [
            socketio.test_client(app, flask_test_client=self.http) for _ in range(sockets)
        ]
        check(all(s.is_connected() for s in self.sockets), "a socket did not connect")
        self.n = 0

    def inc(self) -> None:
        self.n += 1
        got = self.sockets[0].emit("inc", callback=True)
        # A bench of a bridge that silently stopped saving would look fast.
        check(got == self.n, f"socket counter is {got!r}, expected {self.n}")

    def read(self) -> None:
        check(self.sockets[0].emit("read", callback=True) == "bench", "read event failed")

    def bare(self) -> None:
        check(self.sockets[0].emit("bare", callback=True) == "pong", "bare event failed")


def timed(op: t.Callable[[], None], count: int) -> tuple[float, float]:
    """(wall, CPU) microseconds per operation over ``count`` operations."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        op()
    return (
        (time.perf_counter() - wall) * 1e6 / count,
        (time.process_time() - cpu) * 1e6 / count,
    )


def interleaved(
    ops: dict[str, t.Callable[[], None]], rounds: int, count: int
) -> dict[str, list[tuple[float, float]]]:
    names = list(ops)
    for name in names:
        timed(ops[name], max(count // 10, 5))
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for i in range(rounds):
        shift = i * len(names) // rounds
        for name in names[shift:] + names[:shift]:
            results[name].append(timed(ops[name], count))
    return results


def ratio(results: dict[str, list[tuple[float, float]]], num: str, den: str, cpu: bool) -> float:
    k = 1 if cpu else 0
    return statistics.median(n[k] / d[k] for n, d in zip(results[num], results[den]))


def sizes_table(url: str, sizes: list[int], rounds: int) -> None:
    print()
    print("socket events by session size; ratios > 1 mean the bridge is faster")
    print(
        f"{'size':>7}  {'event':<6} {'bridge us':>9} {'anchor us':>9} {'CPU ratio':>9}"
        f" {'wall ratio':>10}   {'memory/bare':>11}"
    )
    for size in sizes:
        count = max(40, min(1000, 400_000 // max(size, 400)))
        memory = Client(bridge_app(MemoryStore()), size)
        bridge = Client(bridge_app(RedisStore(url, prefix=f"bench-{size}:")), size)
        anchor = Client(anchor_app(url, f"bench-anchor-{size}:"), size)
        results = interleaved(
            {
                "bare": memory.bare,
                "memory": memory.inc,
                "bridge-w": bridge.inc,
                "anchor-w": anchor.inc,
                "bridge-r": bridge.read,
                "anchor-r": anchor.read,
            },
            rounds,
            count,
        )
        for event in ("w", "r"):
            b, a = f"bridge-{event}", f"anchor-{event}"
            extra = f"{ratio(results, 'memory', 'bare', True):10.2f}x" if event == "w" else ""
            print(
                f"{size:>7}  {'write' if event == 'w' else 'read':<6}"
                f" {statistics.median(c for _, c in results[b]):9.0f}"
                f" {statistics.median(c for _, c in results[a]):9.0f}"
                f" {ratio(results, a, b, True):8.2f}x {ratio(results, a, b, False):9.2f}x"
                f"   {extra:>11}"
            )


def contention(url: str, per_session: list[int], events: int) -> None:
    print()
    print(f"sockets of one session, each sending {events} increments from its own thread")
    print(
        f"{'sockets':>7}  {'bridge CPU us/event':>19} {'anchor CPU us/event':>19}"
        f" {'bridge kept':>11} {'anchor kept':>11}"
    )
    for count in per_session:
        row = []
        for name, app in (
            ("bridge", bridge_app(RedisStore(url, prefix=f"bench-c{count}:"))),
            ("anchor", anchor_app(url, f"bench-anchor-c{count}:")),
        ):
            client = Client(app, 0, sockets=count)
            errors: list[BaseException] = []

            def send(sock: t.Any, errors: list[BaseException] = errors) -> None:
                try:
                    for _ in range(events):
                        sock.emit("inc", callback=True)
                except BaseException as e:  # reported, not lost
                    errors.append(e)

            threads = [threading.Thread(target=send, args=(s,)) for s in client.sockets]
            cpu = time.process_time()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            cpu_us = (time.process_time() - cpu) * 1e6 / (count * events)
            check(not errors, f"{name}: {errors[:1]}")
            # One more increment reads back how many were kept.
            final = client.sockets[0].emit("inc", callback=True) - 1
            row.append((cpu_us, final))
        (b_cpu, b_kept), (a_cpu, a_kept) = row
        total = count * events
        print(
            f"{count:>7}  {b_cpu:19.0f} {a_cpu:19.0f} {b_kept:>6}/{total:<4} {a_kept:>6}/{total:<4}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0,1000,10000,100000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sockets", default="1,4,16", help="sockets of one session")
    parser.add_argument("--events", type=int, default=30, help="increments per socket")
    args = parser.parse_args()
    print("sizes:", versions())
    with redis_server() as url:
        sizes_table(url, [int(s) for s in args.sizes.split(",")], args.rounds)
        contention(url, [int(s) for s in args.sockets.split(",")], args.events)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
