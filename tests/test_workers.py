"""Several eventlet workers on one Redis (store and message queue) behave as
one server.
"""

from __future__ import annotations

import threading


def test_login_on_one_worker_is_entered_by_a_socket_opened_on_another(workers, browser_factory):
    a, b = workers
    browser = browser_factory(a)
    browser.get("/me")
    before = browser.socket(b)
    assert before.call("whoami", timeout=10)["user"] is None
    sid = browser.post("/login/alice").json()["sid"]
    assert before.call("whoami", timeout=10)["user"] is None  # never follows (rule 6)
    reply = browser.socket(b).call("whoami", timeout=10)
    assert reply["user"] == "alice" and reply["sid"] == sid


def test_logout_on_one_worker_ends_a_socket_on_another(workers, browser_factory):
    a, b = workers
    browser = browser_factory(a)
    browser.post("/login/alice")
    sc = browser.socket(b)
    assert sc.call("whoami", timeout=10)["user"] == "alice"
    browser.post("/logout")
    # Pushed: the socket sends nothing until it has heard.
    assert sc.ended_event.wait(10), "no session_ended pushed to the other worker"
    assert sc.ended == [{"reason": "logout"}]
    assert sc.call("whoami", timeout=10)["user"] is None


def test_destroy_on_one_worker_ends_a_socket_on_another(workers, browser_factory):
    a, b = workers
    browser = browser_factory(a)
    sid = browser.post("/login/alice").json()["sid"]
    sc = browser.socket(b)
    assert sc.call("whoami", timeout=10)["user"] == "alice"
    assert browser_factory(a).post(f"/destroy/{sid}").json() == {"destroyed": True}
    assert sc.ended_event.wait(10), "no session_ended pushed to the other worker"
    assert sc.ended == [{"reason": "destroyed"}]
    assert sc.call("whoami", timeout=10)["user"] is None


def test_regenerate_on_one_worker_is_announced_on_another(workers, browser_factory):
    a, b = workers
    browser = browser_factory(a)
    old = browser.post("/login/alice").json()["sid"]
    sc = browser.socket(b)
    assert sc.call("inc", timeout=10) == 1
    new = browser.post("/login/alice").json()["sid"]
    assert new != old
    assert sc.ended_event.wait(10), "no session_ended pushed to the other worker"
    assert sc.ended == [{"reason": "renewed"}]
    assert sc.call("whoami", timeout=10) == {"user": None, "n": None, "sid": None}
    reply = browser.socket(b).call("whoami", timeout=10)
    assert reply == {"user": "alice", "n": 1, "sid": new}


def test_increments_across_workers_lose_nothing(workers, browser_factory):
    a, b = workers
    browser = browser_factory(a)
    browser.post("/login/alice")
    sockets = [browser.socket(b) for _ in range(2)]
    cookies = browser.http.cookies.get_dict()
    errors: list[object] = []

    def http_worker():
        import requests

        with requests.Session() as http:
            http.cookies.update(cookies)
            for _ in range(100):
                response = http.post(a.url + "/inc", timeout=30)
                if response.status_code != 200:
                    errors.append(response.status_code)

    def socket_worker(sc):
        for _ in range(100):
            reply = sc.call("inc", timeout=30)
            if not isinstance(reply, int):
                errors.append(reply)

    threads = [threading.Thread(target=http_worker) for _ in range(2)]
    threads += [threading.Thread(target=socket_worker, args=(sc,)) for sc in sockets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert browser.get("/me").json()["n"] == 400
