"""Every code block of docs/*.rst and of README.rst's first screen, extracted
literally, runs: Python blocks are executed (apps are imported and
exercised), shell commands are checked for existing paths, extras and
options, JavaScript is syntax-checked by node. The deployment recipes (the
gunicorn commands, chat.py, the nginx site) are run by test_deploy.py.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import create_app
from docblocks import Block
from docblocks import code_blocks
from docblocks import doc_blocks
from docblocks import ROOT

DOCS = sorted((ROOT / "docs").glob("*.rst"))

#: The Python blocks each page has, each run by a test below: a block added
#: without a test fails test_every_python_block_has_a_test.
PYTHON_BLOCKS = {
    "quickstart": 2,
    "configuration": 1,
    "stores": 2,
    "testing": 2,
    "deployment": 1,  # chat.py, served by test_deploy.py
}


def readme_first_screen() -> list[Block]:
    """README.rst's blocks from the title to the end of "Usage"."""
    text = (ROOT / "README.rst").read_text(encoding="utf-8")
    end = text[: text.index("\nOptions\n-------")].count("\n") + 1
    return [b for b in code_blocks(ROOT / "README.rst") if b.line < end]


def all_blocks() -> list[Block]:
    return [b for path in DOCS for b in code_blocks(path)] + readme_first_screen()


def block_id(block: Block) -> str:
    return f"{block.path.name}:{block.line}"


def test_every_python_block_has_a_test():
    found = {
        path.stem: n
        for path in DOCS
        if (n := sum(b.language == "python" for b in code_blocks(path)))
    }
    assert found == PYTHON_BLOCKS
    assert [b.language for b in readme_first_screen() if b.language == "python"] == ["python"]
    languages = {b.language for b in all_blocks()}
    assert languages <= {"python", "shell", "literal", "javascript", "nginx"}


def load_module(block: Block, folder: Path, name: str):
    """Write ``block`` to ``folder/name.py`` and import it, as a user would."""
    path = folder / f"{name}.py"
    path.write_text(block.source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_block(block: Block, namespace: dict) -> dict:
    exec(compile(block.source, block_id(block), "exec"), namespace)
    return namespace


@pytest.fixture(params=["quickstart", "README"])
def quickstart(request, tmp_path, monkeypatch):
    """docs/quickstart.rst's app.py, or README's Usage, imported from a
    folder of its own.
    """
    monkeypatch.chdir(tmp_path)
    name = f"app_{tmp_path.name}"
    if request.param == "README":
        block = next(b for b in readme_first_screen() if b.language == "python")
    else:
        block = doc_blocks("quickstart", "python")[0]
    module = load_module(block, tmp_path, name)
    yield module
    sys.modules.pop(name, None)


def test_quickstart_app_shares_one_session(quickstart):
    app = quickstart.create_app()
    assert app.instance_path.startswith(str(Path.cwd()))
    http = app.test_client()
    assert http.get("/").json == {"user": None, "sent": 0}
    assert http.post("/login", data={"name": "ada"}).status_code == 302
    socket = quickstart.socketio.test_client(app, flask_test_client=http)
    assert socket.emit("chat", "hi", callback=True) == {"user": "ada", "sent": 1}
    assert http.get("/").json == {"user": "ada", "sent": 1}
    socket.disconnect()


def test_quickstart_background_task_writes_the_session(quickstart):
    app = quickstart.create_app()
    from flask import session

    @app.get("/sid")
    def sid():
        return {"sid": session.sid}

    http = app.test_client()
    http.post("/login", data={"name": "ada"})
    session_id = http.get("/sid").json["sid"]
    namespace = run_block(doc_blocks("quickstart", "python")[1], vars(quickstart))
    namespace["reward"](app, session_id)
    namespace["reward"](app, session_id)
    with app.app_context():
        assert quickstart.bridge.get_by_id(session_id)["points"] == 20


def documented_defaults() -> dict[str, object]:
    """The Key / Default columns of docs/configuration.rst's table."""
    text = (ROOT / "docs" / "configuration.rst").read_text(encoding="utf-8")
    rows = re.findall(r"\* - ``(SESSION_BRIDGE_\w+)`` / ``\w+``\n\s+- ``(.+?)``", text)
    return {key: eval(default, {"timedelta": timedelta}) for key, default in rows}


def test_configuration_table_is_what_init_app_sets():
    documented = documented_defaults()
    assert len(documented) == 9
    app, _, _ = create_app()
    # Flask-SocketIO and the tests' factory set nothing under this prefix.
    actual = {k: v for k, v in app.config.items() if k.startswith("SESSION_BRIDGE_")}
    assert set(actual) == set(documented)
    assert actual == documented


def test_configuration_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = run_block(doc_blocks("configuration", "python")[0], {"__name__": "config_doc"})
    app, socketio = namespace["app"], namespace["socketio"]
    assert app.extensions["session_bridge"] is namespace["bridge"]
    assert app.permanent_session_lifetime == timedelta(hours=8)
    # socket_missing="reject" from config is in effect: no session, no socket.
    assert not socketio.test_client(app).is_connected()


def test_store_urls_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = run_block(doc_blocks("stores", "python")[0], {"__name__": "stores_doc"})
    assert "session_bridge" in namespace["app"].extensions
    # The relative SQLite path is in the app's instance folder.
    assert (tmp_path / "instance" / "sessions.db").exists()


@pytest.fixture
def dict_store_class():
    namespace = run_block(doc_blocks("stores", "python")[1], {"__name__": "dict_store"})
    return namespace["DictStore"]


def test_dict_store_shares_a_session_between_http_and_sockets(dict_store_class):
    app, socketio, _ = create_app(dict_store_class())
    client = app.test_client()
    client.post("/login/alice")
    sc = socketio.test_client(app, flask_test_client=client)
    assert sc.emit("inc", callback=True) == 1
    assert client.post("/inc").json["n"] == 2
    assert sc.emit("whoami", callback=True)["user"] == "alice"
    sc.get_received()
    client.post("/logout")
    assert [e["name"] for e in sc.get_received()] == ["session_ended"]
    assert sc.emit("whoami", callback=True)["user"] is None


def test_dict_store_locks_are_leases(dict_store_class):
    now = [1000.0]
    store = dict_store_class(clock=lambda: now[0])
    from flask_session_bridge import SessionLockTimeout

    token, record = store.lock("s", 5, 1)
    assert record is None
    with pytest.raises(SessionLockTimeout):
        store.lock("s", 5, 0.05)
    now[0] += 4
    assert store.renew("s", token, 5)  # the holder still works
    now[0] += 4
    with pytest.raises(SessionLockTimeout):
        store.lock("s", 5, 0.05)  # 8 s after taking, 4 s after renewing
    now[0] += 2  # the holder crashed: its lease ran out
    other, _ = store.lock("s", 5, 1)
    assert not store.renew("s", token, 5)
    with pytest.raises(SessionLockTimeout):
        store.save("s", store_record("c"), 60, token, True)
    assert store.save("s", store_record("c"), 60, other, True) is True
    assert store.get_session_id("c") == "s"
    now[0] += 61
    assert store.get("s") is None
    assert store.cleanup() == [("s", "c")]


def store_record(client_id: str):
    from flask_session_bridge import Record

    return Record(client_id, "{}")


def test_testing_page_first_example_passes(quickstart):
    namespace = run_block(doc_blocks("testing", "python")[0], vars(quickstart))
    namespace["test_chat_sees_the_login"]()


def test_testing_page_second_example_passes(quickstart):
    namespace = run_block(doc_blocks("testing", "python")[1], vars(quickstart))
    namespace["test_login_ends_the_old_sockets_session"]()


def setup_extras() -> set[str]:
    text = (ROOT / "setup.py").read_text(encoding="utf-8")
    body = text[text.index("extras_require") :]
    return set(re.findall(r'^\s{8}"([\w-]+)": \[', body, re.M))


def check_command(words: list[str]) -> None:
    """Fail unless the command names what exists: files, extras, options."""
    program, args = words[0], words[1:]
    if program == "pip":
        assert args[0] == "install"
        for arg in args[1:]:
            match = re.fullmatch(r"(\.|flask_session_bridge)\[([\w,]+)\]", arg)
            if match:
                assert set(match.group(2).split(",")) <= setup_extras(), arg
            elif arg == "-e":
                continue
            else:
                assert re.fullmatch(r"[a-z][\w-]*", arg), arg  # a package name
    elif program in ("bash", "python"):
        assert (ROOT / args[0]).is_file(), args[0]
    elif program == "gunicorn":
        # The options exist in the pinned gunicorn (test_deploy runs them).
        usage = subprocess.run(
            [sys.executable, "-m", "gunicorn", "--help"], capture_output=True, text=True
        ).stdout
        for arg in args:
            if arg.startswith("--"):
                assert arg in usage, arg
    else:
        pytest.fail(f"no check for the command {program!r}: add one")


SHELL = [b for b in all_blocks() if b.language in ("shell", "literal")]


@pytest.mark.parametrize("block", SHELL, ids=block_id)
def test_shell_block_names_what_exists(block):
    for line in block.source.splitlines():
        words = shlex.split(line, comments=True)
        for command in " ".join(words).split(" && "):
            parts = command.split()
            if parts and parts[-1] == "&":
                parts.pop()
            if parts and parts[0] == "export":
                assert all("=" in w for w in parts[1:]), line
                continue
            while parts and re.fullmatch(r"[A-Z_]+=\S*", parts[0]):
                parts.pop(0)
            if parts:
                check_command(parts)


JAVASCRIPT = [b for b in all_blocks() if b.language == "javascript"]


@pytest.mark.parametrize("block", JAVASCRIPT, ids=block_id)
def test_javascript_block_parses(block, tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (apt-get install -y nodejs)")
    path = tmp_path / "block.mjs"
    path.write_text(block.source, encoding="utf-8")
    result = subprocess.run([node, "--check", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
