"""What the session bridge costs per socket event and per HTTP request.

Run from the project root::

    python bench/bench_core.py [--rounds N] [--ops N] [--store memory|sqlite|URL]

Everything runs in this process with Flask's and Flask-SocketIO's test
clients (``async_mode="threading"``: the Socket.IO test client handles each
event synchronously), so the numbers are the bridge's own CPU cost plus the
store, without network or server noise. The configurations are interleaved
round by round (the two sides of a ratio run back to back, their order
alternating) and the median over the rounds is reported, so that drift in
machine load hits both sides of a ratio alike.

(a) vs (b): a socket event that increments a session counter, with the
bridge, against a bare event touching no session on the same app and
connection. (c) vs (d): an HTTP view doing the same increment with the
bridge, against the same view on a plain Flask app (signed cookie session).
(e) vs (f): an HTTP view that never touches the session, bridge against plain.
``--store`` runs (a) and (c) on another store (the rest never touch one).
"""

from __future__ import annotations

import argparse
import gc
import platform
import shutil
import statistics
import sys
import tempfile
import time
import typing as t
import uuid
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version

from flask import Flask
from flask import session
from flask_socketio import SocketIO

from flask_session_bridge import MemoryStore
from flask_session_bridge import SessionBridge

if t.TYPE_CHECKING:
    from flask_session_bridge import Store

DISTRIBUTIONS = (
    "flask",
    "flask-socketio",
    "python-socketio",
    "python-engineio",
    "werkzeug",
    "flask-session-bridge",
)

#: (label, description) of each configuration, in table order.
CONFIGS = {
    "a": "socket event, session['n'] += 1, bridge",
    "b": "socket event, no session, same app+connection",
    "c": "HTTP view, session['n'] += 1, bridge",
    "d": "HTTP view, session['n'] += 1, plain Flask cookie",
    "e": "HTTP view, no session, bridge",
    "f": "HTTP view, no session, plain Flask",
}

#: (numerator, denominator, goal or None, what the goal is about)
RATIOS = (
    ("a", "b", 1.15, "session cost on a socket event"),
    ("c", "d", 1.10, "bridge vs Flask's cookie session"),
    ("e", "f", None, "lazy: no store I/O, ~1.0x expected"),
)


def versions() -> str:
    found = [f"python {platform.python_version()} ({platform.python_implementation()})"]
    for name in DISTRIBUTIONS:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return " | ".join(found)


def make_store(spec: str, tmpdir: str) -> tuple[Store, str]:
    """Build the store for (a) and (c) from ``--store``; return it and a label."""
    if spec in ("memory", "memory://"):
        return MemoryStore(), "memory://"
    if spec == "sqlite" or spec.startswith("sqlite:"):
        try:
            from flask_session_bridge.stores.sqlite import SQLiteStore
        except ImportError as e:
            sys.exit(f"--store sqlite: the SQLite store does not import: {e}")
        path = spec[len("sqlite:///") :] if spec.startswith("sqlite:///") else ""
        path = path or f"{tmpdir}/bench.db"
        return SQLiteStore(path), f"sqlite:///{path}"
    if spec.startswith(("redis://", "rediss://", "unix://")):
        try:
            from flask_session_bridge.stores.redis import RedisStore
        except ImportError as e:
            sys.exit(f"--store redis: the Redis store does not import: {e}")
        # A prefix of its own, so the bench never meets other sessions.
        prefix = f"bench-{uuid.uuid4().hex[:8]}:"
        return RedisStore(spec, prefix=prefix), f"{spec} (prefix {prefix})"
    sys.exit(f"--store: expected memory, sqlite, sqlite:///path or redis://..., not {spec!r}")


def bridge_app(store: Store) -> tuple[Flask, SocketIO]:
    app = Flask("bench_bridge")
    app.config.update(SECRET_KEY="bench secret", TESTING=True)
    socketio = SocketIO(async_mode="threading")
    bridge = SessionBridge()
    socketio.init_app(app)
    bridge.init_app(app, socketio, store=store)

    @app.post("/login")
    def login() -> str:
        bridge.regenerate()
        session["user"] = "bench"
        return "ok"

    add_views(app)

    @socketio.on("inc")
    def socket_inc() -> int:
        session["n"] = session.get("n", 0) + 1
        return t.cast(int, session["n"])

    @socketio.on("bare")
    def bare() -> str:
        return "pong"

    return app, socketio


def plain_app() -> Flask:
    app = Flask("bench_plain")
    app.config.update(SECRET_KEY="bench secret", TESTING=True)

    @app.post("/login")
    def login() -> str:
        session["user"] = "bench"
        return "ok"

    add_views(app)
    return app


def add_views(app: Flask) -> None:
    @app.post("/inc")
    def inc() -> dict[str, int]:
        session["n"] = session.get("n", 0) + 1
        return {"n": session["n"]}

    @app.get("/plain")
    def plain() -> str:
        return "no session here"


class Bench:
    """The clients, and one operation per configuration."""

    def __init__(self, store: Store) -> None:
        app, socketio = bridge_app(store)
        self.http = app.test_client()
        response = self.http.post("/login")
        check(response.status_code == 200, f"bridge login answered {response.status}")
        self.sock = socketio.test_client(app, flask_test_client=self.http)
        check(self.sock.is_connected(), "the socket test client did not connect")
        self.plain = plain_app().test_client()
        check(self.plain.post("/login").status_code == 200, "plain login failed")
        #: Expected value of the bridge session's counter: (a) and (c)
        #: increment the same session, one over Socket.IO, one over HTTP.
        self.n = 0
        self.plain_n = 0
        self.ops: dict[str, t.Callable[[], t.Any]] = {
            "a": lambda: self.sock.emit("inc", callback=True),
            "b": lambda: self.sock.emit("bare", callback=True),
            "c": lambda: self.http.post("/inc"),
            "d": lambda: self.plain.post("/inc"),
            "e": lambda: self.http.get("/plain"),
            "f": lambda: self.plain.get("/plain"),
        }

    def run(self, config: str, count: int) -> float:
        """Run ``count`` operations of one configuration; return µs per op,
        after checking that the last one did what it should.
        """
        op = self.ops[config]
        gc.collect()
        start = time.perf_counter()
        for _ in range(count - 1):
            op()
        last = op()
        elapsed = time.perf_counter() - start
        self.verify(config, count, last)
        return elapsed * 1e6 / count

    def verify(self, config: str, count: int, last: t.Any) -> None:
        # A bench of a bridge that silently stopped saving would look fast.
        if config == "a":
            self.n += count
            check(last == self.n, f"(a) socket counter is {last!r}, expected {self.n}")
        elif config == "b":
            check(last == "pong", f"(b) bare event answered {last!r}")
        elif config == "c":
            self.n += count
            got = last.get_json()
            check(got == {"n": self.n}, f"(c) HTTP counter is {got!r}, expected {self.n}")
        elif config == "d":
            self.plain_n += count
            got = last.get_json()
            check(got == {"n": self.plain_n}, f"(d) counter is {got!r}, expected {self.plain_n}")
        else:
            check(last.status_code == 200, f"({config}) answered {last.status_code}")

    def close(self) -> None:
        if self.sock.is_connected():
            self.sock.disconnect()


def check(condition: bool, message: str) -> None:
    if not condition:
        sys.exit(f"bench aborted: {message}")


def measure(bench: Bench, rounds: int, ops: int, budget: float) -> dict[str, list[float]]:
    """Per configuration, µs per op in each round. The two sides of a ratio
    run back to back, in alternating order; the pairs rotate. Past 3 rounds,
    no round starts that would end after ``budget`` seconds.
    """
    pairs = [(num, den) for num, den, _, _ in RATIOS]
    started = time.perf_counter()
    for config in CONFIGS:  # warm up: imports, caches, first-call paths
        bench.run(config, max(ops // 10, 50))
    results: dict[str, list[float]] = {config: [] for config in CONFIGS}
    for i in range(rounds):
        elapsed = time.perf_counter() - started
        if i >= 3 and elapsed * (i + 1) / i > budget:
            print(f"stopping after {i} rounds: the time budget is {budget:g}s")
            break
        for pair in pairs[i % len(pairs) :] + pairs[: i % len(pairs)]:
            for config in pair if i % 2 == 0 else reversed(pair):
                results[config].append(bench.run(config, ops))
    return results


def report(results: dict[str, list[float]], ops: int, store: str) -> None:
    rounds = len(results["a"])
    print()
    print(f"store for (a), (c): {store}")
    print(f"{rounds} rounds x {ops} ops per configuration, interleaved; median of rounds")
    print()
    print(f"    {'configuration':<50} {'µs/op':>8} {'min':>8} {'max':>8}")
    for config, label in CONFIGS.items():
        times = results[config]
        print(
            f"({config}) {label:<50} {statistics.median(times):8.1f}"
            f" {min(times):8.1f} {max(times):8.1f}"
        )
    print()
    print(f"     {'ratio':>8} {'goal':>9}  {'':<4}  measures")
    for num, den, goal, about in RATIOS:
        # Median of per-round ratios: each pair ran back to back.
        ratio = statistics.median(x / y for x, y in zip(results[num], results[den]))
        if goal is None:
            goal_text, verdict = "-", ""
        else:
            goal_text, verdict = f"<= {goal:.2f}x", "ok" if ratio <= goal else "OVER"
        print(f"{num}/{den}  {ratio:7.2f}x {goal_text:>9}  {verdict:<4}  {about}")
    print("(ratio = median over rounds of the per-round ratio)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds (default 7)")
    parser.add_argument(
        "--ops", type=int, default=2000, help="operations per configuration per round"
    )
    parser.add_argument(
        "--store",
        default="memory",
        help="store for (a) and (c): memory (default), sqlite, sqlite:///path, redis://...",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=45.0,
        help="seconds; past 3 rounds, stop before exceeding it (default 45)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.ops < 1:
        parser.error("--rounds and --ops must be at least 1")

    print("flask-session-bridge core benchmark")
    print(versions())
    tmpdir = tempfile.mkdtemp(prefix="bench-core-")
    started = time.perf_counter()
    try:
        store, label = make_store(args.store, tmpdir)
        bench = Bench(store)
        try:
            results = measure(bench, args.rounds, args.ops, args.budget)
        finally:
            bench.close()
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    report(results, args.ops, label)
    print(f"\ntotal {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
