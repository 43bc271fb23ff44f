"""Flask-Login in views and socket handlers; tokens for cookie-less sockets."""

from __future__ import annotations

import time

import pytest
from conftest import create_app
from flask import session
from flask_login import current_user
from flask_login import login_user
from flask_login import LoginManager
from flask_login import logout_user
from flask_login import UserMixin

from flask_session_bridge import socket_login_required


class User(UserMixin):
    def __init__(self, name):
        self.id = name


@pytest.fixture
def parts(store):
    app, socketio, bridge = create_app(store)
    manager = LoginManager(app)
    manager.user_loader(User)

    @app.post("/flask-login/<name>")
    def flask_login(name):
        session["cart"] = ["book"] if name == "ada" else session.get("cart")
        login_user(User(name), remember=True)
        return {"sid": session.sid, "cart": session.get("cart")}

    @app.post("/flask-logout")
    def flask_logout():
        logout_user()
        return "bye"

    @app.get("/token")
    def token():
        return {"token": bridge.socket_token()}

    @socketio.on("current")
    def current():
        return {"user": current_user.get_id() if current_user.is_authenticated else None}

    @socketio.on("secret")
    @socket_login_required
    def secret():
        return f"for {current_user.get_id()}"

    return app, socketio, bridge


def events(sc, name="session_ended"):
    return [e["args"][0] for e in sc.get_received() if e["name"] == name]


def test_current_user_across_login_and_logout(parts):
    app, socketio, bridge = parts
    client = app.test_client()
    client.get("/me")
    sc = socketio.test_client(app, flask_test_client=client)
    assert sc.emit("current", callback=True) == {"user": None}
    client.post("/flask-login/ada")
    # This socket presented no session: a login never lets it in (rule 6).
    assert sc.emit("current", callback=True) == {"user": None}
    sc.disconnect()
    # A socket opened now carries the remember cookie in its handshake; it
    # must not log the socket back in after an HTTP logout.
    assert client.get_cookie("remember_token") is not None
    sc = socketio.test_client(app, flask_test_client=client)
    assert sc.emit("current", callback=True) == {"user": "ada"}
    client.post("/flask-logout")
    # logout_user ends the session everywhere (issue 14).
    assert events(sc) == [{"reason": "logout"}]
    assert sc.emit("current", callback=True) == {"user": None}
    client.post("/flask-login/bob")
    assert events(sc) == []
    assert sc.emit("current", callback=True) == {"user": None}
    sc = socketio.test_client(app, flask_test_client=client)
    assert sc.emit("current", callback=True) == {"user": "bob"}


def test_remember_cookie_without_session_connects_anonymous(parts):
    app, socketio, bridge = parts
    client = app.test_client()
    client.post("/flask-login/ada")
    client.delete_cookie("session")  # the browser closed; remember_token stays
    seen = []

    @socketio.on("connect")
    def on_connect(auth):
        seen.append(current_user.is_authenticated)

    sc = socketio.test_client(app, flask_test_client=client)
    assert sc.is_connected() and seen == [False]
    assert sc.emit("current", callback=True) == {"user": None}
    assert client.get("/me").json["sid"] is None  # the socket created nothing


def test_login_required_refuses_the_event_not_the_connection(parts):
    app, socketio, bridge = parts
    client = app.test_client()
    client.get("/me")
    sc = socketio.test_client(app, flask_test_client=client)
    refused = {"error": "Unauthorized", "message": "login required"}
    assert sc.emit("secret", callback=True) == refused
    assert sc.is_connected()
    client.post("/flask-login/ada")
    sc = socketio.test_client(app, flask_test_client=client)
    assert sc.emit("secret", callback=True) == "for ada"


def test_login_user_renews_the_session_id(parts):
    app, socketio, bridge = parts
    client = app.test_client()
    client.post("/inc")
    before = client.get("/me").json["sid"]
    after = client.post("/flask-login/ada").json["sid"]
    assert after != before
    with app.app_context():
        assert bridge.get_by_id(before) is None
        assert bridge.get_by_id(after)["n"] == 1  # the data moved with it


def test_login_as_another_user_starts_clean(parts):
    app, socketio, bridge = parts
    client = app.test_client()
    assert client.post("/flask-login/ada").json["cart"] == ["book"]
    reply = client.post("/flask-login/bob").json
    assert reply["cart"] is None
    assert client.get("/me").json["n"] is None


def test_renewal_at_login_can_be_turned_off(store):
    app, socketio, bridge = create_app(store, regenerate_on_login=False)
    LoginManager(app).user_loader(User)

    @app.post("/flask-login")
    def flask_login():
        login_user(User("ada"))
        return {"sid": session.sid}

    client = app.test_client()
    client.post("/inc")
    before = client.get("/me").json["sid"]
    assert client.post("/flask-login").json["sid"] == before


def test_socket_token_gives_the_session_without_cookies(parts):
    app, socketio, bridge = parts
    client = app.test_client()
    client.post("/login/alice")
    token = client.get("/token").json["token"]
    sc = socketio.test_client(app, auth={"session_token": token})  # no cookies
    assert sc.is_connected()
    assert sc.emit("whoami", callback=True)["user"] == "alice"
    assert sc.emit("inc", callback=True) == 1
    assert client.get("/me").json["n"] == 1
    sc.get_received()
    client.post("/login/bob")  # renewal: the token's socket is told, and left
    assert events(sc) == [{"reason": "renewed"}]
    assert sc.emit("whoami", callback=True)["user"] is None


def test_socket_token_is_single_use_and_dies_with_its_session(parts):
    app, socketio, bridge = parts
    client = app.test_client()
    client.post("/login/alice")

    def connects(token):
        sc = socketio.test_client(app, auth={"session_token": token})
        if not sc.is_connected():
            return False
        user = sc.emit("whoami", callback=True)["user"]
        sc.disconnect()
        return user

    used = client.get("/token").json["token"]
    unused = client.get("/token").json["token"]
    assert connects(used) == "alice"
    assert connects(used) is False  # replay after use
    renewed = client.get("/token").json["token"]
    client.post("/login/alice")  # renewal kills the tokens of the old id
    assert connects(renewed) is False
    after_logout = client.get("/token").json["token"]
    client.post("/logout")
    assert connects(after_logout) is False  # replay after logout
    client.post("/login/alice")  # a later login is not entered either
    assert connects(after_logout) is False
    assert connects(unused) is False


def test_socket_token_for_anonymous_visitor_binds_a_new_session(parts):
    app, socketio, bridge = parts
    client = app.test_client()
    token = client.get("/token").json["token"]
    sc = socketio.test_client(app, auth={"session_token": token})
    assert sc.emit("whoami", callback=True)["sid"] == client.get("/me").json["sid"]
    assert sc.emit("inc", callback=True) == 1
    sc.get_received()
    client.post("/login/alice")
    assert events(sc) == [{"reason": "renewed"}]
    assert sc.emit("whoami", callback=True)["user"] is None


@pytest.mark.parametrize("mangle", ["tampered", "garbage", "expired", "not-a-string"])
def test_bad_socket_tokens_are_refused(parts, monkeypatch, mangle):
    app, socketio, bridge = parts
    client = app.test_client()
    client.post("/login/alice")
    token = client.get("/token").json["token"]
    if mangle == "tampered":
        token = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    elif mangle == "garbage":
        token = "x" * 50
    elif mangle == "expired":
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 3600)
    else:
        token = {"nested": token}
    sc = socketio.test_client(app, auth={"session_token": token})
    assert not sc.is_connected()
