"""Misconfiguration gets a message that says how to fix it, at start-up or
at the first request, never a silent fallback.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from conftest import create_app
from flask import Flask
from flask import session
from flask.sessions import SecureCookieSessionInterface
from flask_socketio import SocketIO

from flask_session_bridge import MemoryStore
from flask_session_bridge import SessionBridge
from flask_session_bridge import SQLiteStore


def new_app(**config) -> tuple[Flask, SocketIO]:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test secret", **config)
    socketio = SocketIO(app, async_mode="threading")
    return app, socketio


def test_a_misspelt_config_key_is_named_with_the_right_one():
    app, socketio = new_app(SESSION_BRIDGE_STORAGE="sqlite:///s.db")
    with pytest.raises(RuntimeError) as info:
        SessionBridge(app, socketio)
    message = str(info.value)
    assert "SESSION_BRIDGE_STORAGE" in message
    assert "Did you mean SESSION_BRIDGE_STORE?" in message


@pytest.mark.parametrize("value", ["abc", -1, 0, True, None])
def test_a_bad_lock_timeout_names_the_option_and_its_key(value):
    app, socketio = new_app(SESSION_BRIDGE_LOCK_TIMEOUT=value)
    with pytest.raises(ValueError) as info:
        SessionBridge(app, socketio)
    assert "lock_timeout (config SESSION_BRIDGE_LOCK_TIMEOUT)" in str(info.value)


def test_a_bad_keyword_option_is_refused_too():
    app, socketio = new_app()
    with pytest.raises(ValueError, match=r"socket_missing .* 'allow' or 'reject'"):
        SessionBridge(app, socketio, socket_missing="deny")
    with pytest.raises(ValueError, match="max_sessions_per_user"):
        SessionBridge(app, socketio, max_sessions_per_user=0)


def test_options_are_named_keywords():
    app, socketio = new_app()
    with pytest.raises(TypeError):
        SessionBridge(app, socketio, lock_timout=2)  # a typo in a keyword
    with pytest.raises(TypeError):
        SessionBridge(app, socketio, MemoryStore())  # store is keyword-only


def test_a_keyword_wins_over_config_and_timedeltas_are_seconds():
    app, socketio = new_app(SESSION_BRIDGE_LOCK_TIMEOUT=3)
    bridge = SessionBridge(
        app, socketio, lock_timeout=7, client_lifetime=timedelta(days=2)
    )
    options = bridge._states[app].options
    assert options.lock_timeout == 7.0
    assert options.client_lifetime == 2 * 86400


def test_start_up_says_which_store_holds_the_sessions(caplog, tmp_path):
    app, socketio = new_app()
    with caplog.at_level(logging.INFO, logger="flask_session_bridge"):
        SessionBridge(app, socketio, store=SQLiteStore(str(tmp_path / "s.db")))
    assert any(
        "sessions in <SQLiteStore" in r.getMessage() and "s.db" in r.getMessage()
        for r in caplog.records
    )


def test_a_memory_store_behind_a_message_queue_is_warned_about(caplog, redis_server):
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "test secret"
    socketio = SocketIO(async_mode="threading")
    socketio.init_app(app, message_queue=redis_server.url)
    with caplog.at_level(logging.WARNING, logger="flask_session_bridge"):
        SessionBridge(app, socketio, store=MemoryStore())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("message queue" in w and "MemoryStore" in w for w in warnings)


def test_no_warning_for_a_memory_store_in_one_process(caplog):
    app, socketio = new_app()
    with caplog.at_level(logging.WARNING, logger="flask_session_bridge"):
        SessionBridge(app, socketio, store=MemoryStore())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_another_session_interface_installed_later_is_named_at_the_first_request(caplog):
    # What Flask-Session's Session(app) does after the bridge: the bridge's
    # locks and the socket side would silently stop working.
    app, socketio, bridge = create_app(MemoryStore())
    app.config["TESTING"] = False
    app.session_interface = SecureCookieSessionInterface()

    @app.get("/count")
    def count():
        session["n"] = 1
        return "ok"

    with caplog.at_level(logging.ERROR, logger="flask_session_bridge"):
        response = app.test_client().get("/count")
    assert response.status_code == 500
    assert any(
        "SecureCookieSessionInterface" in r.getMessage() and "Flask-Session" in r.getMessage()
        for r in caplog.records
    )


# The task's error goes on to the thread, as it did before the bridge.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_session_in_a_background_task_points_to_session_scope(caplog):
    # Flask's own error ("Working outside of request context") does not say
    # what to do; the bridge's log line does.
    app, socketio, bridge = create_app(MemoryStore())
    failures = []

    def task():
        try:
            session.get("user")
        except RuntimeError as e:
            failures.append(e)
            raise

    with caplog.at_level(logging.ERROR, logger="flask_session_bridge"):
        thread = socketio.start_background_task(task)
        thread.join(10)
    assert failures, "the task did not fail as Flask fails outside a request"
    assert any("bridge.session_scope(session_id)" in r.getMessage() for r in caplog.records)


def test_a_background_task_that_works_is_left_alone(caplog):
    app, socketio, bridge = create_app(MemoryStore())
    done = []
    thread = socketio.start_background_task(done.append, 42)
    thread.join(10)
    assert done == [42]
    assert not [r for r in caplog.records if r.name == "flask_session_bridge"]
