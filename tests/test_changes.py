"""Change detection: a nested change through any accessor is saved, and a
session that cannot have changed is written back without serializing it.
"""

from __future__ import annotations

from datetime import datetime
from datetime import timezone

import pytest
from flask import Flask
from flask import session
from flask.sessions import session_json_serializer
from flask_socketio import SocketIO
from markupsafe import Markup

from flask_session_bridge import MemoryStore
from flask_session_bridge import serialization
from flask_session_bridge import session as session_module
from flask_session_bridge import SessionBridge
from flask_session_bridge.session import deserialize

#: Each mutates the session's nested containers in place, through one way of
#: reading it, and never writes through the session itself.
MUTATIONS = {
    "getitem": lambda s: s["cart"].append(3),
    "getitem nested dict": lambda s: s["prefs"]["theme"].update(dark=True),
    "get": lambda s: s.get("cart").append(3),
    "setdefault": lambda s: s.setdefault("cart", []).append(3),
    "values": lambda s: [v.append(3) for v in s.values() if isinstance(v, list)],
    "items": lambda s: [v.append(3) for k, v in s.items() if k == "cart"],
    "copy": lambda s: s.copy()["cart"].append(3),
    "dict()": lambda s: dict(s)["cart"].append(3),
    "unpacking": lambda s: {**s}["cart"].append(3),
    "tuple holding a list": lambda s: s["pair"][1].append(3),
    "iteration then getitem": lambda s: [s[k].append(3) for k in s if k == "cart"],
}


def make_app(store: MemoryStore) -> tuple[Flask, SocketIO]:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "test"
    socketio = SocketIO(app, async_mode="threading")
    SessionBridge(app, socketio, store=store)

    @app.post("/login")
    def login() -> dict[str, object]:
        session["user"] = "alice"
        session["cart"] = [1, 2]
        session["prefs"] = {"theme": {"dark": False}}
        session["pair"] = ("x", [1, 2])
        return {"sid": session.sid}

    @socketio.on("mutate")
    def mutate(name: str) -> None:
        MUTATIONS[name](session)

    @socketio.on("read")
    def read() -> object:
        return session.get("user")

    @socketio.on("write")
    def write() -> None:
        session["n"] = session.get("n", 0) + 1

    return app, socketio


@pytest.fixture
def connected() -> tuple[MemoryStore, str, object]:
    store = MemoryStore()
    app, socketio = make_app(store)
    http = app.test_client()
    sid = http.post("/login").json["sid"]
    return store, sid, socketio.test_client(app, flask_test_client=http)


def stored(store: MemoryStore, sid: str) -> dict[str, object]:
    record = store.get(sid)
    assert record is not None
    return deserialize(record.data)


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_nested_change_through_any_accessor_is_saved(connected, name):
    store, sid, sc = connected
    sc.emit("mutate", name, callback=True)
    data = stored(store, sid)
    if name == "getitem nested dict":
        assert data["prefs"] == {"theme": {"dark": True}}
    elif name == "tuple holding a list":
        assert data["pair"] == ("x", [1, 2, 3])
    else:
        assert data["cart"] == [1, 2, 3]


def test_unchanged_session_is_not_serialized(connected, monkeypatch):
    store, sid, sc = connected
    dumps = []
    real = session_module.serialize
    monkeypatch.setattr(session_module, "serialize", lambda d: dumps.append(1) or real(d))
    before = store.get(sid)
    assert sc.emit("read", callback=True) == "alice"
    # Read a scalar only: nothing to dump, the stored record is the same.
    assert dumps == [] and store.get(sid) == before
    sc.emit("write", callback=True)
    assert dumps == [1] and stored(store, sid)["n"] == 1


#: Each writes through the session in a way that a dump without a check of
#: every value could get wrong; the stored text must be what Flask writes.
WRITES = {
    "scalar": lambda s: s.__setitem__("n", 5),
    "bytes": lambda s: s.__setitem__("raw", b"\x00\xff"),
    "markup": lambda s: s.__setitem__("html", Markup("<b>hi</b>")),
    "tuple": lambda s: s.__setitem__("pair", (1, 2)),
    "tag-like nested key": lambda s: s.__setitem__("tagged", {" t": [1]}),
    "tag-like key after delete": lambda s: [
        s.__setitem__(" b", 1), [s.__delitem__(k) for k in list(s) if k != " b"]
    ],
    "setdefault list": lambda s: s.setdefault("new", [1]),
    "update": lambda s: s.update({"when": datetime(2024, 1, 2, tzinfo=timezone.utc)}),
}


@pytest.mark.parametrize("name", sorted(WRITES))
def test_write_back_stores_what_flask_would(name):
    store = MemoryStore()
    app, socketio = make_app(store)
    expected: list[str] = []

    @app.post("/login-plain")
    def login_plain() -> dict[str, object]:
        # Plain data: the write-back may skip the check of every value until
        # a write brings a type or a key that JSON alone would get wrong.
        session.update(user="alice", n=1)
        return {"sid": session.sid}

    @socketio.on("apply")
    def apply() -> None:
        WRITES[name](session)
        # Lends no container: the session holds scalars and what was set.
        expected.append(session_json_serializer.dumps(dict(session)))

    http = app.test_client()
    sid = http.post("/login-plain").json["sid"]
    sc = socketio.test_client(app, flask_test_client=http)
    sc.emit("apply", callback=True)
    record = store.get(sid)
    assert record is not None and record.data == expected[0]
    assert deserialize(record.data) == session_json_serializer.loads(expected[0])


def test_splice_is_the_encoders_text():
    # A write to one top-level key of a large plain session reuses the
    # stored text of the others; the result must be what a full dump gives
    # (Flask's, in an app context: its provider sorts keys).
    with Flask(__name__).app_context():
        check_splice()


def check_splice() -> None:
    data = {
        "user": "é\u2028", "n": 1, "big": 2**80, "f": 1.5e300, "none": None,
        "cart": [{"id": i, "tags": ["a"], "p": 9.99} for i in range(200)],
    }
    raw = serialization.dumps(data)
    assert raw == session_json_serializer.dumps(data)
    loaded = serialization.load_spans(raw)
    assert loaded is not None and loaded[0] == data
    changed, spans = loaded
    changed.update(n=2, new="x")
    del changed["none"]
    out = serialization.splice(raw, spans, changed, {"n", "new", "none"})
    assert out == session_json_serializer.dumps(changed)
    # Text not in the encoder's own form is loaded the ordinary way.
    assert serialization.load_spans('{"a": 1}') is None
    assert serialization.load_spans('{"a":1}x') is None
    assert serialization.load_spans('{" t":[1]}') is None


def test_large_session_write_keeps_the_rest(connected):
    store, sid, sc = connected
    before = stored(store, sid)
    sc.emit("write", callback=True)
    sc.emit("write", callback=True)
    assert stored(store, sid) == {**before, "n": 2}
