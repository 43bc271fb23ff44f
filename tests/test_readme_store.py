"""The custom store shown in README.rst works as a store."""

from __future__ import annotations

import pathlib

from conftest import create_app


def readme_store():
    text = (pathlib.Path(__file__).parent.parent / "README.rst").read_text()
    end = text.index("    bridge.init_app(app, socketio, store=DictStore())")
    start = text.rindex(".. code-block:: python", 0, end)
    lines = text[start:end].splitlines()[1:]
    source = "\n".join(line[4:] for line in lines)
    namespace: dict[str, object] = {}
    exec(compile(source, "README.rst", "exec"), namespace)
    return namespace["DictStore"]()


def test_readme_store_shares_a_session_between_http_and_sockets():
    app, socketio, _ = create_app(readme_store())
    client = app.test_client()
    client.post("/login/alice")
    sc = socketio.test_client(app, flask_test_client=client)
    assert sc.emit("inc", callback=True) == 1
    assert client.post("/inc").json["n"] == 2
    sc.get_received()
    client.post("/logout")
    assert [e["name"] for e in sc.get_received()] == ["session_ended"]
    assert sc.emit("whoami", callback=True)["user"] is None
