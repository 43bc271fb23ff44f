from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import closing
from pathlib import Path

import pytest
import requests
import socketio as socketio_client
from flask import Flask
from flask import session
from flask_socketio import SocketIO

from flask_session_bridge import MemoryStore
from flask_session_bridge import SessionBridge

pytest_plugins = ["redis_servers"]


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
        self._scratch = ""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # Its own folder even without persistence: a replica writes the
        # snapshot it syncs from there, not into the working directory.
        self._scratch = tempfile.mkdtemp(prefix="redis-")
        persistence = ["--dir", self._scratch, "--save", "", "--appendonly", "no"]
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
            shutil.rmtree(self._scratch, ignore_errors=True)


class LiveServer:
    """tests/server_app.py in a subprocess on a free loopback port, stopped
    by pid.
    """

    def __init__(self, mode: str, store: str = "memory://", **options: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, str(Path(__file__).with_name("server_app.py")),
                   "--mode", mode, "--port", str(self.port), "--store", store]
        for name, value in options.items():
            command += [f"--{name.replace('_', '-')}", value]
        self.process = subprocess.Popen(command)
        try:
            wait_for_port(self.port, timeout=30)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


class Browser:
    """One browser: a requests session for HTTP, and sockets that send its
    cookies, as a page's socket would.
    """

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.http = requests.Session()
        self.sockets: list[socketio_client.Client] = []

    def get(self, path: str) -> requests.Response:
        return self.http.get(self.server.url + path, timeout=30)

    def post(self, path: str) -> requests.Response:
        return self.http.post(self.server.url + path, timeout=30)

    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())

    def socket(self, server: LiveServer | None = None, **connect) -> socketio_client.Client:
        """A websocket to ``server`` (default: this browser's), recording the
        ``session_ended`` events it receives.
        """
        sc = socketio_client.Client(reconnection=False)
        sc.ended = []
        ended = threading.Event()
        sc.ended_event = ended

        @sc.on("session_ended")
        def on_ended(data):
            sc.ended.append(data)
            ended.set()

        connect.setdefault("headers", {"Cookie": self.cookie_header()})
        sc.connect((server or self.server).url, transports=["websocket"],
                   wait_timeout=10, **connect)
        self.sockets.append(sc)
        return sc

    def close(self) -> None:
        for sc in self.sockets:
            sc.disconnect()
        self.http.close()


@pytest.fixture
def browser_factory():
    browsers: list[Browser] = []

    def make(server: LiveServer) -> Browser:
        browser = Browser(server)
        browsers.append(browser)
        return browser

    yield make
    for browser in browsers:
        browser.close()


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def workers(redis_server):
    """Two eventlet workers on Redis (store and message queue), started once
    per module: every test uses browsers of its own.
    """
    started = [
        LiveServer("eventlet", redis_server.url, message_queue=redis_server.url)
        for _ in range(2)
    ]
    yield started
    for server in started:
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


def row_count(store) -> int:
    """Everything a store holds: sessions, client mappings and locks."""
    kind = type(store).__name__
    if kind == "MemoryStore":
        return len(store._sessions) + len(store._clients) + len(store._locks)
    if kind == "SQLiteStore":
        tables = ("bridge_sessions", "bridge_clients", "bridge_locks")
        with closing(sqlite3.connect(store.path)) as db:
            return sum(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables)
    store._flush()  # the releases queued for the next round trip go first
    return sum(1 for _ in store.client.scan_iter(match=f"{store.prefix}*"))


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


def create_app(
    store=None, *, async_mode="threading", message_queue=None, **options
) -> tuple[Flask, SocketIO, SessionBridge]:
    """The app factory the tests share (and tests/server_app.py serves): a
    few views and socket handlers.
    """
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test secret", TESTING=True)
    socketio = SocketIO(async_mode=async_mode)
    bridge = SessionBridge()
    # message_queue goes to init_app, not the constructor (see DESIGN.md).
    socketio.init_app(app, message_queue=message_queue)
    bridge.init_app(app, socketio, store=store if store is not None else MemoryStore(), **options)

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

    @app.post("/destroy/<sid>")
    def destroy(sid):
        return {"destroyed": bridge.destroy_by_id(sid)}

    @app.post("/identify/<name>")
    def identify(name):
        bridge.identify(name)
        return {"sid": session.sid}

    @app.post("/destroy-user/<name>")
    def destroy_user(name):
        return {"ended": bridge.destroy_by_user(name)}

    @app.post("/emit-user/<name>")
    def emit_user(name):
        socketio.emit("note", {"to": name}, to=bridge.user_room(name))
        return "sent"

    @app.get("/ids")
    def ids():
        return {"sid": session.sid, "client_id": session.client_id}

    @app.get("/static-ish")
    def untouched():
        return "no session here"

    @socketio.on("whoami")
    def whoami():
        return {"user": session.get("user"), "n": session.get("n"), "sid": session.sid}

    @socketio.on("ids")
    def socket_ids():
        return {"sid": session.sid, "client_id": session.client_id}

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
