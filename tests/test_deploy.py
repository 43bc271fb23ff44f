"""The recipes of docs/deployment.rst, run as written: the app module and
the gunicorn commands are taken from the page, only ports and the Redis URL
are changed to this test's. Real gunicorn, real Redis, real nginx, real
Socket.IO clients.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import socketio as socketio_client
from conftest import free_port
from conftest import wait_for_port
from docblocks import doc_blocks
from docblocks import ROOT


def recipes() -> dict[str, str]:
    """The gunicorn shell blocks of the page, by the async mode they name."""
    found = {}
    for block in doc_blocks("deployment", "shell"):
        if "gunicorn" in block.source:
            mode = re.search(r"ASYNC_MODE=(\w+)", block.source).group(1)
            key = "workers" if block.source.count("gunicorn ") > 1 else mode
            found[key] = block.source
    return found


def commands(recipe: str, env: dict[str, str]) -> list[list[str]]:
    """Run the shell ``recipe``'s lines as the shell would: ``export`` and
    ``VAR=value`` prefixes set ``env``; each other line is one command.
    """
    argvs = []
    for line in recipe.splitlines():
        words = shlex.split(line)
        if words and words[-1] == "&":
            words.pop()
        if words and words[0] == "export":
            env.update(word.split("=", 1) for word in words[1:])
            continue
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            name, value = words.pop(0).split("=", 1)
            env[name] = value
        if words:
            argvs.append(words)
    return argvs


class Gunicorn:
    """One gunicorn (master + 1 worker) serving docs' chat.py, stopped by pid."""

    def __init__(self, argv: list[str], env: dict[str, str], folder: Path, port: int) -> None:
        assert argv[0] == "gunicorn"
        argv = [re.sub(r"127\.0\.0\.1:80\d\d", f"127.0.0.1:{port}", a) for a in argv]
        self.url = f"http://127.0.0.1:{port}"
        # The project's gunicorn (the one the test extra pins), serving this
        # checkout's package.
        env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *argv[1:]], cwd=folder, env=env
        )
        wait_for_port(port, timeout=30)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture(scope="module")
def app_folder(tmp_path_factory) -> Path:
    """A folder holding ``chat.py`` exactly as the page shows it."""
    folder = tmp_path_factory.mktemp("deploy")
    (module,) = doc_blocks("deployment", "python")
    (folder / "chat.py").write_text(module.source)
    return folder


def open_socket(url: str, http: requests.Session, transport: str = "websocket"):
    """A Socket.IO client sending ``http``'s cookies with its handshake, as a
    browser's page would, recording the ``session_ended`` events it hears.
    """
    sc = socketio_client.Client(reconnection=False)
    sc.ended = []

    @sc.on("session_ended")
    def ended(data):
        sc.ended.append(data)

    cookies = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
    sc.connect(url, transports=[transport], headers={"Cookie": cookies}, wait_timeout=10)
    return sc


def wait_until(predicate, timeout: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def shares_the_session(http_url: str, socket_url: str, transport: str = "websocket") -> None:
    """Log in over HTTP at ``http_url``; a socket at ``socket_url`` sees the
    user and counts in the same session; a logout over HTTP ends the socket's
    session.
    """
    http = requests.Session()
    assert http.post(f"{http_url}/login/ada", timeout=30).json() == {"user": "ada"}
    sc = open_socket(socket_url, http, transport)
    try:
        assert sc.call("whoami", timeout=10) == {"user": "ada"}
        assert sc.call("count", timeout=10) == 1
        assert sc.call("count", timeout=10) == 2
        assert http.post(f"{http_url}/logout", timeout=30).json() == {"user": None}
        assert wait_until(lambda: sc.ended), "no session_ended reached the socket"
        assert sc.ended == [{"reason": "logout"}]
        assert sc.call("whoami", timeout=10)["user"] is None
    finally:
        sc.disconnect()
        http.close()


def test_the_page_has_every_recipe():
    assert set(recipes()) == {"threading", "eventlet", "gevent", "workers"}


@pytest.mark.parametrize("mode", ["threading", "eventlet", "gevent"])
def test_one_worker_recipe_shares_the_session(mode, app_folder):
    env: dict[str, str] = {}
    (argv,) = commands(recipes()[mode], env)
    assert env["ASYNC_MODE"] == mode
    server = Gunicorn(argv, env, app_folder, free_port())
    try:
        shares_the_session(server.url, server.url)
    finally:
        server.stop()


NGINX_MAIN = """
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
{site}
}}
"""


def nginx_binary() -> str:
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if binary is None:
        pytest.fail("nginx is not installed (apt-get install -y nginx)")
    return binary


@pytest.fixture(scope="module")
def two_workers(redis_server, app_folder, tmp_path_factory):
    """The "Several workers" recipe: two gunicorns on one Redis, and nginx in
    front with the page's config. Yields ``(worker urls, nginx url, nginx
    url of the same site with $host instead of $http_host)``.
    """
    env: dict[str, str] = {}
    argvs = commands(recipes()["workers"], env)
    env = {k: v.replace("redis://127.0.0.1:6379/0", redis_server.url) for k, v in env.items()}
    assert env["SESSION_STORE"] == env["MESSAGE_QUEUE"] == redis_server.url
    ports = [free_port() for _ in argvs]
    workers = []
    nginx = None
    try:
        for argv, port in zip(argvs, ports):
            workers.append(Gunicorn(argv, env, app_folder, port))
        (site,) = doc_blocks("deployment", "nginx")
        site = site.source.replace("127.0.0.1:8001", f"127.0.0.1:{ports[0]}")
        site = site.replace("127.0.0.1:8002", f"127.0.0.1:{ports[1]}")
        front, trap = free_port(), free_port()
        good = site.replace("listen 8080;", f"listen 127.0.0.1:{front};")
        # The trap the page warns of: the same site, Host without its port.
        bad = site.replace("listen 8080;", f"listen 127.0.0.1:{trap};")
        bad = bad.replace("upstream chat", "upstream chat_trap")
        bad = bad.replace("http://chat;", "http://chat_trap;")
        bad = bad.replace("Host $http_host", "Host $host")
        assert good != site and "Host $host;" in bad
        folder = tmp_path_factory.mktemp("nginx")
        conf = folder / "nginx.conf"
        conf.write_text(NGINX_MAIN.format(folder=folder, site=good + bad))
        nginx = subprocess.Popen([nginx_binary(), "-c", str(conf), "-p", str(folder)])
        wait_for_port(front)
        wait_for_port(trap)
        yield ([w.url for w in workers], f"http://127.0.0.1:{front}",
               f"http://127.0.0.1:{trap}")
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        for worker in workers:
            worker.stop()


def test_http_on_one_worker_and_a_socket_on_the_other_share_the_session(two_workers):
    (first, second), _, _ = two_workers
    shares_the_session(first, second)
    shares_the_session(second, first)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_through_nginx_http_and_sockets_share_the_session(two_workers, transport):
    _, front, _ = two_workers
    shares_the_session(front, front, transport)


def test_nginx_with_host_instead_of_http_host_refuses_websockets(two_workers):
    # Why the page insists on $http_host: the browser's Origin carries the
    # port, $host does not, and Socket.IO refuses the mismatch.
    _, _, trap = two_workers
    http = requests.Session()
    http.post(f"{trap}/login/ada", timeout=30)
    with pytest.raises(socketio_client.exceptions.ConnectionError):
        open_socket(trap, http)
