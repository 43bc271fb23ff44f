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
    out, out_spans = serialization.splice(raw, spans, changed, {"n", "new", "none"})
    assert out == session_json_serializer.dumps(changed)
    # The spans of the new text are where a fresh scan puts them.
    assert out_spans == serialization.load_spans(out)[1]
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


# -- the cache of decoded large sessions --------------------------------------

#: Plain data large enough to be kept decoded between events.
FILLER = [{"id": i, "name": "item"} for i in range(200)]
#: The mutations that apply to plain data (no tuple in JSON's own types).
PLAIN_MUTATIONS = [name for name in MUTATIONS if "tuple" not in name]


def make_large_app(store: MemoryStore) -> tuple[Flask, SocketIO, SessionBridge]:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "test"
    socketio = SocketIO(app, async_mode="threading")
    bridge = SessionBridge(app, socketio, store=store)
    kept: list[object] = []

    @app.post("/login")
    def login() -> dict[str, object]:
        session.update(user="alice", cart=[1, 2], prefs={"theme": {"dark": False}})
        session["filler"] = FILLER
        return {"sid": session.sid}

    @socketio.on("mutate_then_fail")
    def mutate_then_fail(name: str) -> None:
        MUTATIONS[name](session)
        raise RuntimeError("handler failed")

    @socketio.on("mutate")
    def mutate(name: str) -> None:
        MUTATIONS[name](session)

    @socketio.on("keep_cart")
    def keep_cart() -> None:
        kept.append(session["cart"])

    @socketio.on("change_kept_cart")
    def change_kept_cart() -> None:
        kept[0].append(99)  # type: ignore[attr-defined]

    @socketio.on("write")
    def write() -> None:
        session["n"] = session.get("n", 0) + 1

    @socketio.on("data")
    def data() -> object:
        return dict(session)

    socketio.on_error_default(lambda e: {"error": str(e)})
    return app, socketio, bridge


@pytest.fixture
def large() -> tuple[MemoryStore, str, object, SessionBridge]:
    store = MemoryStore()
    app, socketio, bridge = make_large_app(store)
    http = app.test_client()
    sid = http.post("/login").json["sid"]
    assert len(store.get(sid).data) >= serialization.LoadCache().smallest  # type: ignore[union-attr]
    return store, sid, socketio.test_client(app, flask_test_client=http), bridge


@pytest.mark.parametrize("name", PLAIN_MUTATIONS)
def test_unsaved_mutation_of_a_cached_session_does_not_leak(large, name):
    # A handler that changes a container in place and then fails saves
    # nothing; the next event must see the stored data, not the decoded
    # copy the failed handler changed.
    store, sid, sc, _ = large
    sc.emit("write", callback=True)  # the session is now decoded and kept
    before = stored(store, sid)
    assert sc.emit("mutate_then_fail", name, callback=True) == {"error": "handler failed"}
    assert stored(store, sid) == before
    assert sc.emit("data", callback=True) == before


@pytest.mark.parametrize("name", PLAIN_MUTATIONS)
def test_saved_mutation_of_a_cached_session_is_seen_next(large, name):
    store, sid, sc, _ = large
    sc.emit("write", callback=True)
    sc.emit("mutate", name, callback=True)
    after = stored(store, sid)
    assert after != {}
    assert sc.emit("data", callback=True) == after
    sc.emit("write", callback=True)
    assert stored(store, sid) == {**after, "n": 2}


def test_a_container_kept_past_its_event_changes_nothing_later(large):
    store, sid, sc, _ = large
    sc.emit("write", callback=True)
    sc.emit("keep_cart", callback=True)
    sc.emit("change_kept_cart", callback=True)
    assert stored(store, sid)["cart"] == [1, 2]
    assert sc.emit("data", callback=True)["cart"] == [1, 2]


def test_a_write_by_another_worker_is_seen_through_the_cache():
    # Two apps on one store stand for two workers: each keeps its own
    # decoded copy, and a write by one must not be hidden from the other.
    store = MemoryStore()
    app1, socketio1, _ = make_large_app(store)
    app2, socketio2, _ = make_large_app(store)
    http = app1.test_client()
    sid = http.post("/login").json["sid"]
    cookies = {c.key: c.value for c in http._cookies.values()}
    http2 = app2.test_client()
    for key, value in cookies.items():
        http2.set_cookie(key, value)
    sc1 = socketio1.test_client(app1, flask_test_client=http)
    sc2 = socketio2.test_client(app2, flask_test_client=http2)
    sc1.emit("write", callback=True)
    sc2.emit("write", callback=True)
    sc2.emit("mutate", "getitem", callback=True)
    seen = sc1.emit("data", callback=True)
    assert seen["n"] == 2 and seen["cart"] == [1, 2, 3]
    sc1.emit("write", callback=True)
    assert stored(store, sid)["n"] == 3 and stored(store, sid)["cart"] == [1, 2, 3]


def test_load_cache_keeps_the_most_recent_within_its_limit():
    cache = serialization.LoadCache(limit=10_000, smallest=3_000)
    texts = {}
    for n in range(4):
        text = texts[n] = serialization.dumps({"pad": "x" * 3_000, "n": n})
        data, spans = serialization.load_spans(text)  # type: ignore[misc]
        cache.put(f"s{n}", serialization.Loaded(text, data, spans))
        cache.get("s0", texts[0])  # s0 is used each time: it stays
    assert cache.get("s0", texts[0]) is not None
    assert cache.get("s1", texts[1]) is None  # least recently used: out
    assert cache.get("s3", texts[3]) is not None
    assert cache.get("s3", texts[3] + " ") is None  # other text: not used
    small = serialization.dumps({"n": 1})
    cache.put("small", serialization.Loaded(small, {"n": 1}, {}))
    assert cache.get("small", small) is None


def test_a_change_after_the_save_does_not_come_back_through_the_cache():
    # A save that makes a session large enough to keep decoded hands the
    # cache the session's own containers; code running after the save
    # (teardown, a signal receiver) changes a copy, which is never saved.
    from datetime import datetime

    from flask import request

    app = Flask(__name__)
    app.config["SECRET_KEY"] = "test"
    SessionBridge(app, None, store=MemoryStore())

    @app.post("/make")
    def make() -> str:
        session.update(cart=[1, 2], pad="x" * 1000)  # under 2 KB: not kept
        return "ok"

    @app.post("/grow")
    def grow() -> str:
        session["pad"] = "y" * 3000  # a scalar write: spliced, now kept
        return "ok"

    @app.teardown_request
    def after_save(exc: BaseException | None) -> None:
        if request.path == "/grow":
            session["cart"].append(99)  # after save_session: dropped

    @app.post("/stamp")
    def stamp() -> str:
        session["when"] = datetime(2020, 1, 1, tzinfo=timezone.utc)  # a full dump
        return "ok"

    @app.get("/cart")
    def cart() -> dict[str, object]:
        return {"cart": session["cart"]}

    client = app.test_client()
    client.post("/make")
    client.post("/grow")
    client.post("/stamp")
    assert client.get("/cart").json["cart"] == [1, 2]
