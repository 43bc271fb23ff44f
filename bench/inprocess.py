"""Per socket event and per HTTP request: the bridge on each store against a
bare event, Flask's cookie session and the setup users pick today.

    python bench/inprocess.py [--rounds 7] [--ops 1000]

Everything runs in this process with Flask's and Flask-SocketIO's test
clients (``async_mode="threading"``), so the numbers are CPU cost plus store
round trips, without a network or a server. Starts its own redis-server on a
free loopback port. One run: every configuration runs ``--ops`` operations
per round, in an order that rotates round by round; each ratio is the median
over rounds of the per-round ratio.

The anchor is Flask-SocketIO ``manage_session=False`` plus Flask-Session's
Redis backend (``pip install -e '.[bench]'``).

Two more rows time what a session event cannot skip, for the floors printed
under the table: a tagged JSON load and dump of the session's data, and one
Redis round trip.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import typing as t
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version
from pathlib import Path

import redis
from flask import Flask
from flask import session
from flask_socketio import SocketIO

from flask_session_bridge import MemoryStore
from flask_session_bridge import RedisStore
from flask_session_bridge import SessionBridge
from flask_session_bridge import SQLiteStore
from flask_session_bridge.session import deserialize
from flask_session_bridge.session import serialize

DISTRIBUTIONS = (
    "flask",
    "werkzeug",
    "flask-socketio",
    "python-socketio",
    "python-engineio",
    "eventlet",
    "redis",
    "hiredis",
    "msgspec",
    "flask-session",
    "flask-session-bridge",
)

#: Configuration name -> what it does; table order.
SOCKET = {
    "bare": "socket event, never touches the session (floor)",
    "memory": "socket event, n += 1, bridge, MemoryStore",
    "sqlite": "socket event, n += 1, bridge, SQLiteStore",
    "redis": "socket event, n += 1, bridge, RedisStore",
    "anchor": "socket event, n += 1, Flask-Session redis",
}
HTTP = {
    "http-memory": "HTTP view, n += 1, bridge, MemoryStore",
    "http-sqlite": "HTTP view, n += 1, bridge, SQLiteStore",
    "http-redis": "HTTP view, n += 1, bridge, RedisStore",
    "http-cookie": "HTTP view, n += 1, Flask's cookie session",
    "http-anchor": "HTTP view, n += 1, Flask-Session redis",
    "http-untouched": "HTTP view, never touches the session, bridge",
    "http-none": "HTTP view, plain Flask, request with no cookie",
}
#: What a session event cannot do without: where the time goes.
PARTS = {
    "json": "tagged JSON load + dump of the session's data",
    "ping": "one redis-py round trip (PING)",
}

#: (meaning, numerator, denominator, goal): each ratio is time / time, so
#: "anchor / redis" reads as the bridge's throughput over the anchor's. The
#: socket goals are issue 13's (the write event on a 0 B session).
RATIOS = (
    ("socket event on memory / bare event", "memory", "bare", "<= 1.25"),
    ("socket event on Redis / bare event", "redis", "bare", ""),
    ("anchor socket event / bare event", "anchor", "bare", ""),
    ("bridge-on-Redis socket throughput / anchor's", "anchor", "redis", ">= 1.0"),
    ("HTTP on memory / Flask's cookie session", "http-memory", "http-cookie", "<= 1.1"),
    ("bridge-on-Redis HTTP throughput / anchor's", "http-anchor", "http-redis", ""),
    ("untouched request / no-session request", "http-untouched", "http-none", "<= 1.02"),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_process(*options: str) -> t.Iterator[tuple[str, int]]:
    """A redis-server of the benchmark's own on a free loopback port, with
    ``options`` added to its command line; yields its URL and pid once it
    answers, and stops it by pid.
    """
    port = free_port()
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (apt-get install -y redis-server)")
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    server = subprocess.Popen([*command, "--appendonly", "no", *options], stdout=subprocess.DEVNULL)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        for _ in range(100):
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield url, server.pid
    finally:
        server.terminate()
        server.wait(10)


@contextlib.contextmanager
def redis_server() -> t.Iterator[str]:
    """:func:`redis_process` for those who need only its URL."""
    with redis_process() as (url, _pid):
        yield url


def versions() -> str:
    """Python, the distributions both sides run on (redis-py parses replies
    in C only with hiredis), where the bridge was imported from, and the
    redis-server.
    """
    import flask_session_bridge

    found = [f"python {platform.python_version()}"]
    for name in DISTRIBUTIONS:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    # The installed metadata may belong to another tree than PYTHONPATH's.
    found.append(f"bridge imported from {Path(flask_session_bridge.__file__).parent}")
    binary = shutil.which("redis-server")
    if binary is not None:
        server = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        found.append(server.split(" sha=")[0].strip())  # "Redis server v=7.0.15"
    return ", ".join(found)


def part_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every part of bench/run.py takes."""
    parser.add_argument(
        "--json", metavar="PATH", help="also write the key figures to PATH (bench/run.py reads it)"
    )
    parser.add_argument(
        "--no-versions", action="store_true", help="do not print the versions (run.py did)"
    )


def start_part(name: str, args: argparse.Namespace) -> None:
    if not args.no_versions:
        print(f"{name}:", versions(), flush=True)


def write_figures(args: argparse.Namespace, figures: dict[str, t.Any]) -> None:
    """Write a part's key figures as JSON where ``--json`` says, if it does."""
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


def add_handlers(app: Flask, socketio: SocketIO, bridge: SessionBridge | None) -> None:
    @app.post("/login")
    def login() -> str:
        if bridge is not None:
            bridge.regenerate()
        session["user"] = "bench"
        return "ok"

    @app.post("/inc")
    def inc() -> dict[str, int]:
        session["n"] = session.get("n", 0) + 1
        return {"n": session["n"]}

    @app.get("/untouched")
    def untouched() -> str:
        return "no session here"

    @socketio.on("inc")
    def socket_inc() -> int:
        session["n"] = session.get("n", 0) + 1
        return t.cast(int, session["n"])

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


def anchor_app(url: str) -> Flask:
    from flask_session import Session

    app = Flask("bench_anchor")
    app.config.update(
        SECRET_KEY="bench secret",
        TESTING=True,
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis.from_url(url),
        SESSION_KEY_PREFIX="bench-anchor:",
    )
    Session(app)
    socketio = SocketIO(app, async_mode="threading", manage_session=False)
    add_handlers(app, socketio, None)
    return app


def plain_app() -> Flask:
    app = Flask("bench_plain")
    app.config.update(SECRET_KEY="bench secret", TESTING=True)
    add_handlers(app, SocketIO(app, async_mode="threading"), None)
    return app


class Client:
    """An HTTP client logged in to one app, with a socket on the same cookies."""

    def __init__(self, app: Flask, login: bool = True) -> None:
        self.http = app.test_client()
        if login:
            check(self.http.post("/login").status_code == 200, f"{app.name}: login failed")
        self.sock = app.extensions["socketio"].test_client(app, flask_test_client=self.http)
        check(self.sock.is_connected(), f"{app.name}: the socket did not connect")
        #: The session's counter, as it must be after the next operation.
        self.n = 0

    def emit_inc(self) -> None:
        self.n += 1
        got = self.sock.emit("inc", callback=True)
        # A bench of a bridge that silently stopped saving would look fast.
        check(got == self.n, f"socket counter is {got!r}, expected {self.n}")

    def post_inc(self) -> None:
        self.n += 1
        got = self.http.post("/inc").get_json()
        check(got == {"n": self.n}, f"HTTP counter is {got!r}, expected {self.n}")

    def emit_bare(self) -> None:
        check(self.sock.emit("bare", callback=True) == "pong", "bare event failed")

    def get_untouched(self) -> None:
        check(self.http.get("/untouched").status_code == 200, "untouched view failed")


Operations = dict[str, t.Callable[[], None]]


def check(condition: bool, message: str) -> None:
    if not condition:
        sys.exit(f"bench aborted: {message}")


def operations(url: str, client: redis.Redis, folder: str) -> Operations:
    # Rules 3 and 4 of the design: each event loads the session fresh and
    # serializes it to find changes, nested ones included.
    data = {"user": "bench", "n": 12345}
    memory = Client(bridge_app(MemoryStore()))
    sqlite = Client(bridge_app(SQLiteStore(f"{folder}/bench.db")))
    on_redis = Client(bridge_app(RedisStore(url, prefix="bench-bridge:")))
    anchor = Client(anchor_app(url))
    plain = Client(plain_app())
    no_session = Client(plain_app(), login=False)
    return {
        "bare": memory.emit_bare,
        "memory": memory.emit_inc,
        "sqlite": sqlite.emit_inc,
        "redis": on_redis.emit_inc,
        "anchor": anchor.emit_inc,
        "http-memory": memory.post_inc,
        "http-sqlite": sqlite.post_inc,
        "http-redis": on_redis.post_inc,
        "http-cookie": plain.post_inc,
        "http-anchor": anchor.post_inc,
        "http-untouched": memory.get_untouched,
        "http-none": no_session.get_untouched,
        "json": lambda: deserialize(serialize(data)),
        "ping": lambda: check(client.ping(), "redis PING failed"),
    }


def timed(op: t.Callable[[], None], count: int) -> float:
    """Microseconds per operation over ``count`` operations."""
    gc.collect()
    start = time.perf_counter()
    for _ in range(count):
        op()
    return (time.perf_counter() - start) * 1e6 / count


def measure(ops: Operations, rounds: int, count: int) -> dict[str, list[float]]:
    names = list(ops)
    for name in names:  # warm up: first-call paths, caches
        timed(ops[name], max(count // 10, 20))
    results: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        shift = i * len(names) // rounds
        for name in names[shift:] + names[:shift]:
            results[name].append(timed(ops[name], count))
    return results


def report(results: dict[str, list[float]], count: int) -> dict[str, t.Any]:
    """Print the tables; return the medians and ratios for ``--json``."""
    rounds = len(next(iter(results.values())))
    print(f"{rounds} rounds x {count} operations per configuration; medians")
    print()
    print(f"{'configuration':<52} {'us/op':>8} {'ops/s':>8}")
    for name, label in {**SOCKET, **HTTP, **PARTS}.items():
        us = statistics.median(results[name])
        print(f"{label:<52} {us:8.1f} {1e6 / us:8.0f}")
    bare, json_, ping = (statistics.median(results[n]) for n in ("bare", "json", "ping"))
    print()
    print(f"floor of a memory event, bare + JSON: {(bare + json_) / bare:.2f}x the bare event")
    print(f"floor of a Redis event, bare + JSON + 2 round trips: {bare + json_ + 2 * ping:.0f} us")
    print()
    print(f"{'ratio':<48} {'value':>6}  goal")
    ratios = {}
    for meaning, numerator, denominator, goal in RATIOS:
        pairs = zip(results[numerator], results[denominator])
        ratio = ratios[meaning] = statistics.median(n / d for n, d in pairs)
        verdict = ""
        if goal:
            op, limit = goal.split()
            met = ratio <= float(limit) if op == "<=" else ratio >= float(limit)
            verdict = f"{goal}  {'ok' if met else 'MISSED'}"
        print(f"{meaning:<48} {ratio:5.2f}x  {verdict}")
    return {"us_per_op": {n: statistics.median(v) for n, v in results.items()}, "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", type=int, default=1000, help="operations per round")
    part_arguments(parser)
    args = parser.parse_args()
    start_part("in-process", args)
    folder = tempfile.mkdtemp(prefix="bench-")
    try:
        with redis_server() as url:
            client = redis.Redis.from_url(url)
            results = measure(operations(url, client, folder), args.rounds, args.ops)
            write_figures(args, report(results, args.ops))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
