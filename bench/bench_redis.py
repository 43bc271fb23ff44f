"""A socket event on Redis: the bridge against the setup users pick today.

    python bench/bench_redis.py [--rounds 7] [--events 1000]

Starts its own redis-server on a free loopback port. In-process (Flask-SocketIO
test client), one run, configurations interleaved round by round, medians:

- bare:   an event that never touches the session (the floor);
- bridge: ``session["n"] = session.get("n", 0) + 1`` with ``RedisStore``
          (locks, follows the client, detects nested changes);
- anchor: the same event on Flask-SocketIO ``manage_session=False`` plus
          Flask-Session's Redis backend (``pip install flask-session``).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import time
from importlib.metadata import version

import redis
from flask import Flask
from flask import session
from flask_socketio import SocketIO

from flask_session_bridge import RedisStore
from flask_session_bridge import SessionBridge


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def add_handlers(app: Flask, socketio: SocketIO) -> None:
    @app.post("/login")
    def login():
        session["user"] = "alice"
        return "ok"

    @socketio.on("inc")
    def inc():
        session["n"] = session.get("n", 0) + 1
        return session["n"]

    @socketio.on("bare")
    def bare():
        return "pong"


def bridge_app(url: str):
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "bench"
    socketio = SocketIO(app, async_mode="threading")
    SessionBridge(app, socketio, store=RedisStore(url, prefix="bench-bridge:"))
    add_handlers(app, socketio)
    return app, socketio


def anchor_app(url: str):
    from flask_session import Session

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="bench",
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis.from_url(url),
        SESSION_KEY_PREFIX="bench-anchor:",
    )
    Session(app)
    socketio = SocketIO(app, async_mode="threading", manage_session=False)
    add_handlers(app, socketio)
    return app, socketio


def connect(app: Flask, socketio: SocketIO):
    client = app.test_client()
    client.post("/login")
    return socketio.test_client(app, flask_test_client=client)


def per_event(sc, event: str, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        sc.emit(event, callback=True)
    return (time.perf_counter() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--events", type=int, default=1000)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port),
         "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        for _ in range(100):
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        run(url, args.rounds, args.events)
    finally:
        server.terminate()
        server.wait(10)


def run(url: str, rounds: int, events: int) -> None:
    packages = ("flask", "flask-socketio", "python-socketio", "flask-session", "redis")
    print("versions:", ", ".join(f"{p} {version(p)}" for p in packages))
    bridge_sc = connect(*bridge_app(url))
    anchor_sc = connect(*anchor_app(url))
    cases = {
        "bare event (floor)": (bridge_sc, "bare"),
        "bridge, RedisStore": (bridge_sc, "inc"),
        "anchor: Flask-Session redis": (anchor_sc, "inc"),
    }
    for sc, event in cases.values():  # warm up
        per_event(sc, event, 50)
    timings: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (sc, event) in cases.items():
            timings[name].append(per_event(sc, event, events))
    medians = {name: statistics.median(values) for name, values in timings.items()}
    floor = medians["bare event (floor)"]
    anchor = medians["anchor: Flask-Session redis"]
    print(f"{rounds} rounds x {events} events, medians")
    print(f"{'configuration':<30} {'us/event':>9} {'events/s':>9} {'x floor':>8}")
    for name, us in medians.items():
        print(f"{name:<30} {us:>9.1f} {1e6 / us:>9.0f} {us / floor:>8.2f}")
    ratio = anchor / medians["bridge, RedisStore"]
    print(f"bridge throughput / anchor throughput: {ratio:.2f}x (goal >= 1.5x)")


if __name__ == "__main__":
    main()
