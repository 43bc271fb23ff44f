"""Real servers (threading, eventlet and gevent, each in a subprocess) and real
python-socketio clients that send the browser's cookies.
"""

from __future__ import annotations

import threading

import pytest
import socketio as socketio_client
from conftest import LiveServer


@pytest.fixture(scope="module", params=["threading", "eventlet", "gevent"])
def server(request):
    live = LiveServer(request.param)
    yield live
    live.stop()


def test_http_and_socket_share_one_session(server, browser_factory):
    browser = browser_factory(server)
    browser.post("/login/alice")
    sc = browser.socket()
    assert sc.call("whoami", timeout=10)["user"] == "alice"
    assert sc.call("inc", timeout=10) == 1
    assert browser.get("/me").json()["n"] == 1
    assert sc.call("append", "a", timeout=10) == ["a"]
    assert sc.call("append", "b", timeout=10) == ["a", "b"]
    assert browser.get("/me").json()["items"] == ["a", "b"]


def test_polling_transport_shares_the_session_too(server, browser_factory):
    browser = browser_factory(server)
    browser.post("/login/alice")
    sc = socketio_client.Client(reconnection=False)
    sc.connect(
        server.url, transports=["polling"], headers={"Cookie": browser.cookie_header()},
        wait_timeout=10,
    )
    try:
        assert sc.call("inc", timeout=10) == 1
        assert browser.get("/me").json()["n"] == 1
    finally:
        sc.disconnect()


def test_socket_is_told_at_login_and_reconnects_into_the_new_session(server, browser_factory):
    browser = browser_factory(server)
    browser.post("/inc")  # a session before login
    sc = browser.socket()
    assert sc.call("whoami", timeout=10)["n"] == 1
    browser.post("/login/alice")
    assert sc.ended_event.wait(5)
    assert sc.ended == [{"reason": "renewed"}]
    assert sc.call("whoami", timeout=10) == {"user": None, "n": None, "sid": None}
    again = browser.socket()  # what the page does on session_ended
    assert again.call("whoami", timeout=10)["user"] == "alice"
    browser.post("/logout")
    assert again.ended_event.wait(5)
    assert again.ended == [{"reason": "logout"}]
    assert again.call("whoami", timeout=10)["user"] is None


def test_session_fixation_through_a_planted_client_cookie(server, browser_factory):
    # The attacker plants its client cookie in the victim's browser (a
    # sibling subdomain, plain HTTP) and keeps a websocket open with it.
    attacker = browser_factory(server)
    attacker.get("/me")
    victim = browser_factory(server)
    victim.http.cookies.set("session.cid", attacker.http.cookies["session.cid"])
    sc = attacker.socket()
    assert sc.call("whoami", timeout=10) == {"user": None, "n": None, "sid": None}
    sid = victim.post("/login/victim").json()["sid"]
    victim.post("/inc")
    assert sc.call("whoami", timeout=10) == {"user": None, "n": None, "sid": None}
    assert sc.call("set", ("planted", "by attacker"), timeout=10)["error"] == "SessionMissing"
    assert victim.get("/me").json() == {
        "user": "victim", "n": 1, "items": None, "sid": sid,
    }
    assert attacker.socket().call("whoami", timeout=10)["sid"] is None


def test_cookieless_socket_creates_no_session(server, browser_factory):
    browser = browser_factory(server)
    sc = browser.socket(headers={})
    ack = sc.call("inc", timeout=10)
    assert ack["error"] == "SessionMissing"
    assert sc.call("whoami", timeout=10) == {"user": None, "n": None, "sid": None}
    assert browser.http.cookies.get_dict() == {}


def test_four_sockets_and_four_http_threads_lose_no_increment(server, browser_factory):
    browser = browser_factory(server)
    browser.post("/login/alice")
    sockets = [browser.socket() for _ in range(4)]
    errors: list[object] = []

    def http_worker():
        http = browser_factory(server)
        http.http.cookies.update(browser.http.cookies.get_dict())
        for _ in range(100):
            response = http.post("/inc")
            if response.status_code != 200:
                errors.append(response.status_code)

    def socket_worker(sc):
        for _ in range(100):
            reply = sc.call("inc", timeout=30)
            if not isinstance(reply, int):
                errors.append(reply)

    threads = [threading.Thread(target=http_worker) for _ in range(4)]
    threads += [threading.Thread(target=socket_worker, args=(sc,)) for sc in sockets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert errors == []
    assert browser.get("/me").json()["n"] == 800
