"""RedisStore on a real 3-master Redis Cluster (tests/redis_servers.py)."""

from __future__ import annotations

import threading
import uuid

import pytest
from conftest import create_app
from redis_servers import cli
from redis_servers import Cluster

from flask_session_bridge import RedisStore
from flask_session_bridge import StoreUnavailable
from flask_session_bridge.stores.base import Record


def cluster_store(cluster: Cluster, **options) -> RedisStore:
    return RedisStore(cluster.client(**options), prefix=f"t{uuid.uuid4().hex[:8]}:")


def cookie_header(client) -> str:
    names = ("session", "session.cid")
    return "; ".join(f"{n}={client.get_cookie(n).value}" for n in names if client.get_cookie(n))


def test_shared_session_flows_on_a_cluster(redis_cluster):
    store = cluster_store(redis_cluster)
    app, socketio, bridge = create_app(store)
    client = app.test_client()
    sid = client.post("/login/alice").json["sid"]
    sc = socketio.test_client(app, flask_test_client=client)
    assert sc.emit("whoami", callback=True) == {"user": "alice", "n": None, "sid": sid}
    assert sc.emit("inc", callback=True) == 1
    assert client.post("/inc").json == {"n": 2}
    assert sc.emit("append", "x", callback=True) == ["x"]
    assert client.get("/me").json["items"] == ["x"]
    with app.app_context():
        client_id = client.get("/ids").json["client_id"]
        assert bridge.get_session_id(client_id) == sid
        assert bridge.get_by_id(sid)["n"] == 2
    client.post("/logout")
    assert sc.emit("whoami", callback=True)["user"] is None
    with app.app_context():
        assert bridge.get_by_id(sid) is None
        assert bridge.get_session_id(client_id) is None  # the mapping went with it


def test_concurrent_increments_are_exact(redis_cluster):
    app, socketio, _bridge = create_app(cluster_store(redis_cluster))
    login = app.test_client()
    login.post("/login/alice")
    header = cookie_header(login)
    acknowledged = []

    def http_worker():
        client = app.test_client(use_cookies=False)
        for _ in range(40):
            response = client.post("/inc", headers={"Cookie": header})
            if response.status_code == 200:
                acknowledged.append(1)

    def socket_worker():
        sc = socketio.test_client(app, flask_test_client=login)
        for _ in range(40):
            if isinstance(sc.emit("inc", callback=True), int):
                acknowledged.append(1)
        sc.disconnect()

    threads = [threading.Thread(target=http_worker) for _ in range(6)]
    threads += [threading.Thread(target=socket_worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(acknowledged) == 320
    assert login.get("/me").json["n"] == len(acknowledged)


def test_sessions_spread_over_every_master(redis_cluster):
    import redis

    store = cluster_store(redis_cluster)
    for i in range(100):
        session_id = f"session-{i}"
        token, _ = store.lock(session_id, 5, 1)
        store.save(session_id, Record(f"client-{i}", "{}"), 60, token, link=True)
    per_master = []
    for port in redis_cluster.ports:
        node = redis.Redis(port=port)
        per_master.append(sum(1 for _ in node.scan_iter(match=f"{store.prefix}{{*}}:s")))
        node.close()
    assert sum(per_master) == 100
    # Slots are split evenly, so each master holds about a third.
    assert min(per_master) >= 15, per_master


def test_prefix_with_a_hash_tag_is_refused(redis_cluster):
    with pytest.raises(ValueError, match="brace"):
        RedisStore(redis_cluster.client(), prefix="{sessions}:")


def test_cluster_down_is_503_and_service_resumes(tmp_path):
    cluster = Cluster(tmp_path)
    cluster.start()
    try:
        app, socketio, _bridge = create_app(cluster_store(cluster))
        client = app.test_client()
        client.post("/login/alice")
        assert client.post("/inc").json == {"n": 1}
        for node in cluster.nodes:
            node.stop()
        assert client.post("/inc").status_code == 503
        assert client.get("/me").status_code == 503
        assert not socketio.test_client(app, flask_test_client=client).is_connected()
        with pytest.raises(StoreUnavailable):
            app.extensions["session_bridge"]._states[app].store.get("x")
    finally:
        for node in cluster.nodes:
            node.stop()
    # Back with the same slot map (nodes.conf) and no data: the app, not
    # restarted, answers again.
    for node in cluster.nodes:
        node.start()
    try:
        from redis_servers import cli
        from redis_servers import wait_until

        for port in cluster.ports:
            wait_until(lambda port=port: "cluster_state:ok" in cli(port, "CLUSTER", "INFO"),
                       30, "cluster state ok")
        response = client.post("/inc")
        assert response.status_code == 200
    finally:
        cluster.stop()


def test_a_save_is_not_run_twice_when_one_shard_lost_its_scripts(redis_cluster, monkeypatch):
    # Another session's release, queued, goes in front of this save to
    # another shard, which alone forgot the scripts (a restart, a failover
    # to a replica without them). Only what that shard refused goes again:
    # sent twice, the save would find its lock gone and report "not saved"
    # although it was written (rule 9).
    from flask_session_bridge.stores import redis as redis_store

    monkeypatch.setattr(redis_store, "_LINGER", 5.0)  # the release waits for the save
    store = cluster_store(redis_cluster)
    client = store.client
    port_of = lambda sid: client.get_node_from_key(store._keys(sid)[0]).port  # noqa: E731
    a = uuid.uuid4().hex
    b = next(s for s in (uuid.uuid4().hex for _ in range(100)) if port_of(s) != port_of(a))
    for sid in (a, b):
        token, _ = store.lock(sid, 5.0, 5.0)
        store.save(sid, Record("client", '{"n":1}'), 3600, token, link=True)
    token_a, _ = store.lock(a, 5.0, 5.0)
    token_b, _ = store.lock(b, 5.0, 5.0)
    cli(port_of(b), "SCRIPT", "FLUSH")
    store.release(b, token_b, None)
    assert store.save(a, Record("client", '{"n":2}'), 3600, token_a, link=False) is False
    assert store.get(a) == Record("client", '{"n":2}')
    token_b, _ = store.lock(b, 5.0, 0)  # b's release ran once its scripts were back
    store.release(b, token_b, None)
