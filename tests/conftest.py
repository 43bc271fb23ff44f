from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid

import pytest
from flask import Flask
from flask import session
from flask_socketio import SocketIO

from flask_session_bridge import MemoryStore
from flask_session_bridge import SessionBridge


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class RedisServer:
    """A real redis-server on a free loopback port, stopped by pid."""

    def __init__(self, data_dir: str | None = None) -> None:
        #: With a folder, Redis keeps its data there across restarts.
        self.data_dir = data_dir
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (apt-get install -y redis-server)")
        self.binary = binary
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        persistence = ["--save", "", "--appendonly", "no"]
        if self.data_dir is not None:
            persistence = ["--dir", self.data_dir, "--save", "",
                           "--appendonly", "yes", "--appendfsync", "always"]
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--protected-mode", "no", *persistence],
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request, tmp_path):
    """Each store kind, empty, for one test."""
    if request.param == "memory":
        return MemoryStore()
    if request.param == "sqlite":
        from flask_session_bridge.stores.sqlite import SQLiteStore

        return SQLiteStore(str(tmp_path / "sessions.db"))
    from flask_session_bridge.stores.redis import RedisStore

    server = request.getfixturevalue("redis_server")
    if server.process is None:  # a test stopped it
        server.start()
    return RedisStore(server.url, prefix=f"test-{uuid.uuid4().hex[:8]}:")


@pytest.fixture
def store_calls(store, monkeypatch):
    """The names of the store methods called, in order, from now on."""
    calls: list[str] = []
    for name in ("get", "get_session_id", "lock", "save", "release", "delete", "cleanup"):
        method = getattr(store, name)

        def spy(*args, _method=method, _name=name, **kwargs):
            calls.append(_name)
            return _method(*args, **kwargs)

        monkeypatch.setattr(store, name, spy)
    return calls


def create_app(store=None, **options) -> tuple[Flask, SocketIO, SessionBridge]:
    """The app factory the tests share: a few views and socket handlers."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test secret", TESTING=True)
    socketio = SocketIO(async_mode="threading")
    bridge = SessionBridge()
    socketio.init_app(app)
    bridge.init_app(app, socketio, store=store or MemoryStore(), **options)

    @app.post("/login/<name>")
    def login(name):
        bridge.regenerate()
        session["user"] = name
        return {"sid": session.sid}

    @app.post("/logout")
    def logout():
        session.clear()
        return "bye"

    @app.get("/me")
    def me():
        return {"user": session.get("user"), "n": session.get("n"),
                "items": session.get("items"), "sid": session.sid}

    @app.post("/inc")
    def inc():
        session["n"] = session.get("n", 0) + 1
        return {"n": session["n"]}

    @app.get("/static-ish")
    def untouched():
        return "no session here"

    @socketio.on("whoami")
    def whoami():
        return {"user": session.get("user"), "n": session.get("n"), "sid": session.sid}

    @socketio.on("inc")
    def socket_inc():
        session["n"] = session.get("n", 0) + 1
        return session["n"]

    @socketio.on("append")
    def append(item):
        session.setdefault("items", [])
        session["items"].append(item)
        return list(session["items"])

    @socketio.on("set")
    def set_value(key, value):
        session[key] = value
        return True

    @socketio.on("bare")
    def bare():
        return "pong"

    return app, socketio, bridge


@pytest.fixture
def app_parts(store):
    return create_app(store)


@pytest.fixture
def app(app_parts):
    return app_parts[0]


@pytest.fixture
def socketio(app_parts):
    return app_parts[1]


@pytest.fixture
def bridge(app_parts):
    return app_parts[2]


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def raw_client(app):
    """An HTTP client that sends the Cookie header it is given, as is."""
    return app.test_client(use_cookies=False)


@pytest.fixture
def socket_client(app, socketio, client):
    """A Socket.IO test client sharing the HTTP client's cookies."""
    clients = []

    def connect(**kwargs):
        sc = socketio.test_client(app, flask_test_client=client, **kwargs)
        clients.append(sc)
        return sc

    yield connect
    for sc in clients:
        if sc.is_connected():
            sc.disconnect()
