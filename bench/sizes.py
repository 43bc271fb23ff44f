"""Socket events at several session sizes, reads and writes, and several
sockets of one session, side by side with the anchor:

    python bench/sizes.py [--sizes 0,1000,10000,100000] [--rounds 5]
        [--sockets 1,4,16] [--events 480] [--json PATH]

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

Sockets of one session: ``--events`` increments per fresh session, shared by
its sockets, each socket sending from its own thread; CPU per event, its
ratio to the 1-socket figure, and how many increments the session kept (the
bridge must keep every one: the worst round is shown).
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
from inprocess import part_arguments
from inprocess import redis_server
from inprocess import start_part
from inprocess import write_figures

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


def sizes_table(url: str, sizes: list[int], rounds: int) -> dict[str, dict[str, float]]:
    """Print the table; return its figures by size for ``--json``."""
    print()
    print("socket events by session size; ratios > 1 mean the bridge is faster")
    print(
        f"{'size':>7}  {'event':<6} {'bridge us':>9} {'anchor us':>9} {'CPU ratio':>9}"
        f" {'wall ratio':>10}   {'memory/bare':>11}"
    )
    figures = {}
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
        row = figures[str(size)] = {"memory_bare": ratio(results, "memory", "bare", True)}
        for event, word in (("w", "write"), ("r", "read")):
            b, a = f"bridge-{event}", f"anchor-{event}"
            row[f"bridge_{word}_us"] = statistics.median(c for _, c in results[b])
            row[f"anchor_{word}_us"] = statistics.median(c for _, c in results[a])
            row[f"{word}_cpu_ratio"] = ratio(results, a, b, True)
            row[f"{word}_wall_ratio"] = ratio(results, a, b, False)
            extra = f"{row['memory_bare']:10.2f}x" if event == "w" else ""
            print(
                f"{size:>7}  {word:<6} {row[f'bridge_{word}_us']:9.0f}"
                f" {row[f'anchor_{word}_us']:9.0f} {row[f'{word}_cpu_ratio']:8.2f}x"
                f" {row[f'{word}_wall_ratio']:9.2f}x   {extra:>11}"
            )
    return figures


def burst(app: Flask, sockets: int, total: int) -> tuple[float, int]:
    """A fresh session with ``sockets`` sockets, each sending its share of
    ``total`` increments from its own thread: (CPU us per event, increments
    the session kept).
    """
    client = Client(app, 0, sockets=sockets)
    each = total // sockets
    errors: list[BaseException] = []

    def send(sock: t.Any) -> None:
        try:
            for _ in range(each):
                sock.emit("inc", callback=True)
        except BaseException as e:  # reported, not lost
            errors.append(e)

    threads = [threading.Thread(target=send, args=(s,)) for s in client.sockets]
    cpu = time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu_us = (time.process_time() - cpu) * 1e6 / (each * sockets)
    check(not errors, f"{app.name}: {errors[:1]}")
    # One more increment reads back how many were kept.
    return cpu_us, client.sockets[0].emit("inc", callback=True) - 1


def contention(url: str, per_session: list[int], total: int, rounds: int) -> dict[str, t.Any]:
    """Print the table; return its figures by socket count for ``--json``."""
    print()
    print(
        f"sockets of one session sharing {total} increments, each socket from its own thread;"
        f" medians of {rounds} rounds"
    )
    print(
        f"{'sockets':>7}  {'bridge CPU us/event':>19} {'anchor CPU us/event':>19}"
        f" {'bridge kept (worst)':>19} {'anchor kept':>11}"
    )
    apps = {
        "bridge": bridge_app(RedisStore(url, prefix="bench-sockets:")),
        "anchor": anchor_app(url, "bench-anchor-sockets:"),
    }
    runs = [(count, side) for count in per_session for side in apps]
    results: dict[tuple[int, str], list[tuple[float, int]]] = {run: [] for run in runs}
    for i in range(rounds):
        shift = i * len(runs) // rounds
        for count, side in runs[shift:] + runs[:shift]:
            results[count, side].append(burst(apps[side], count, total))
    figures: dict[str, t.Any] = {}
    for count in per_session:
        sent = total // count * count
        row = figures[str(count)] = {
            "sent": sent,
            "bridge_us": statistics.median(c for c, _ in results[count, "bridge"]),
            "anchor_us": statistics.median(c for c, _ in results[count, "anchor"]),
            "bridge_kept_worst": min(k for _, k in results[count, "bridge"]),
            "anchor_kept": statistics.median(k for _, k in results[count, "anchor"]),
        }
        for side in apps:  # CPU per event against 1 socket, median of per-round ratios
            if 1 in per_session:
                row[f"{side}_vs_1"] = statistics.median(
                    c / one for (c, _), (one, _) in zip(results[count, side], results[1, side])
                )
        print(
            f"{count:>7}  {row['bridge_us']:19.0f} {row['anchor_us']:19.0f}"
            f" {row['bridge_kept_worst']:>11}/{sent:<7} {row['anchor_kept']:>5.0f}/{sent:<5}"
        )
    if 1 in per_session:
        for count in (c for c in per_session if c != 1):
            row = figures[str(count)]
            print(
                f"CPU per event, {count} sockets / 1 socket: bridge {row['bridge_vs_1']:.2f}x,"
                f" anchor {row['anchor_vs_1']:.2f}x"
            )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0,1000,10000,100000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--sockets", default="1,4,16", help="sockets of one session (with 1 for the ratios)"
    )
    parser.add_argument(
        "--events", type=int, default=480, help="increments per session, shared by its sockets"
    )
    part_arguments(parser)
    args = parser.parse_args()
    start_part("sizes", args)
    with redis_server() as url:
        figures = {
            "sizes": sizes_table(url, [int(s) for s in args.sizes.split(",")], args.rounds),
            "sockets": contention(
                url, [int(s) for s in args.sockets.split(",")], args.events, args.rounds
            ),
        }
    write_figures(args, figures)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
