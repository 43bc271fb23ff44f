"""500 concurrent websocket clients on an eventlet server through a
RedisStore built from a URL: its pool waits instead of failing.
"""

from __future__ import annotations

import asyncio

import requests
import socketio as socketio_client
from conftest import LiveServer

BROWSERS, SOCKETS_EACH = 100, 5


async def _increment_all(url: str, cookie_headers: list[str]) -> list[object]:
    clients = [socketio_client.AsyncClient(reconnection=False) for _ in cookie_headers]
    try:
        await asyncio.gather(*(
            client.connect(url, transports=["websocket"], headers={"Cookie": cookie},
                           wait_timeout=60)
            for client, cookie in zip(clients, cookie_headers)
        ))
        return await asyncio.gather(*(client.call("inc", timeout=120) for client in clients))
    finally:
        await asyncio.gather(*(client.disconnect() for client in clients if client.connected))


def test_500_concurrent_sockets_through_a_redis_url_store(redis_server):
    server = LiveServer("eventlet", redis_server.url)
    try:
        sessions = []
        for i in range(BROWSERS):
            http = requests.Session()
            http.post(f"{server.url}/login/user{i}", timeout=30).raise_for_status()
            sessions.append(http)
        headers = [
            "; ".join(f"{k}={v}" for k, v in http.cookies.items())
            for http in sessions
            for _ in range(SOCKETS_EACH)
        ]
        acks = asyncio.run(_increment_all(server.url, headers))
        failed = [ack for ack in acks if not isinstance(ack, int)]
        assert failed == [], failed[:3]
        for http in sessions:
            assert http.get(f"{server.url}/me", timeout=30).json()["n"] == SOCKETS_EACH
            http.close()
    finally:
        server.stop()
