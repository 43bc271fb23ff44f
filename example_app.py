"""A small app showing one session shared by Flask views and Socket.IO.

Run it with ``python example_app.py`` and open http://127.0.0.1:5000/. Log in,
then press both counters: the HTTP one and the Socket.IO one count in the
same server-side session, and each shows the other's latest value. "Your
devices" lists every session of the user (log in from another browser to see
two): "End" logs that device out at once, over its socket.

Environment:

``PORT``
    Port to listen on (default 5000).
``SESSION_BRIDGE_STORE``
    Store URL (default ``sqlite:///sessions.db``, in the instance folder, so
    sessions survive a restart). ``memory://`` and ``redis://host:port/db``
    work too.
``SECRET_KEY``
    Signs the cookies. Default: a random key generated once and kept in the
    instance folder.
"""

from __future__ import annotations

import os
import secrets
import typing as t
from pathlib import Path

from flask import abort
from flask import Blueprint
from flask import Flask
from flask import redirect
from flask import render_template_string
from flask import request
from flask import send_from_directory
from flask import session
from flask import url_for
from flask_socketio import SocketIO

from flask_session_bridge import SessionBridge

if t.TYPE_CHECKING:
    from werkzeug.wrappers import Response

socketio = SocketIO()
bridge = SessionBridge()
pages = Blueprint("pages", __name__)

#: An installed copy of the browser client (``npm install socket.io-client``
#: next to this file) is served by the app; otherwise the page uses the CDN.
CLIENT_DIST = Path(__file__).resolve().parent / "node_modules" / "socket.io-client" / "dist"
CLIENT_FILE = "socket.io.min.js"
CLIENT_CDN = "https://cdn.socket.io/4.8.1/socket.io.min.js"


def create_app() -> Flask:
    """Build the app: config, Socket.IO, the session bridge, the pages."""
    app = Flask(__name__)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY") or _instance_secret(app)
    # The forms and fetch() calls below carry no CSRF token; SameSite=Lax
    # keeps other sites from posting with this app's cookies.
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    # threading needs nothing beyond Flask-SocketIO and simple-websocket;
    # eventlet and gevent work as well (install one and pass its name).
    socketio.init_app(app, async_mode="threading")
    bridge.init_app(
        app,
        socketio,
        store=os.environ.get("SESSION_BRIDGE_STORE") or "sqlite:///sessions.db",
    )
    app.register_blueprint(pages)
    return app


def _instance_secret(app: Flask) -> str:
    # Kept in a file, not made per start: a new key would void every cookie,
    # and the sessions in the store would survive the restart for nothing.
    path = os.path.join(app.instance_path, "secret_key")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    with os.fdopen(fd, "w", encoding="ascii") as f:
        key = secrets.token_hex(32)
        f.write(key)
    return key


def _counters() -> dict[str, t.Any]:
    return {
        "user": session.get("user"),
        "http_count": session.get("http_count", 0),
        "socket_count": session.get("socket_count", 0),
    }


def _tell_every_tab() -> dict[str, t.Any]:
    # Every socket of this session is in its room, so other tabs of the same
    # browser see the change as it happens. Sent while the session is still
    # locked, so two updates reach the tabs in the order they were made.
    state = _counters()
    socketio.emit("state", state, to=bridge.room(session.sid))
    return state


# -- HTTP ----------------------------------------------------------------


@pages.get("/")
def index() -> str:
    if CLIENT_DIST.joinpath(CLIENT_FILE).is_file():
        client_src = url_for("pages.socketio_client")
    else:
        client_src = CLIENT_CDN
    return render_template_string(PAGE, state=_counters(), client_src=client_src)


@pages.post("/login")
def login() -> Response | tuple[str, int]:
    name = request.form.get("name", "").strip()
    if not name or len(name) > 40:
        return "A name of 1 to 40 characters, please.", 400
    # A new session id at login, so an id planted before it is worthless.
    bridge.regenerate()
    session["user"] = name
    # The session is this user's: it shows in "Your devices" everywhere.
    bridge.identify(name)
    socketio.emit("devices_changed", to=bridge.user_room(name))
    return redirect(url_for("pages.index"), 303)


@pages.post("/count")
def count() -> dict[str, t.Any] | tuple[dict[str, t.Any], int]:
    if session.get("user") is None:
        return {"error": "not logged in"}, 401
    session["http_count"] = session.get("http_count", 0) + 1
    return _tell_every_tab()


@pages.post("/logout")
def logout() -> dict[str, t.Any]:
    # Ends the session everywhere: this browser's sockets get session_ended.
    session.clear()
    return {"ok": True}


@pages.get("/devices")
def devices() -> dict[str, t.Any]:
    user = session.get("user")
    if user is None:
        return {"devices": []}
    return {
        "devices": [
            {
                "id": info.session_id,
                # The client id names the browser; a short form is enough to
                # tell devices apart.
                "device": info.client_id[:8],
                "browser": info.user_agent or "unknown",
                "last_active": info.last_active.isoformat(timespec="seconds"),
                "current": info.current,
            }
            for info in bridge.sessions_of(user)
        ]
    }


@pages.post("/devices/<session_id>/end")
def end_device(session_id: str) -> dict[str, t.Any]:
    user = session.get("user")
    # Only a session of the user asking: ids of others' sessions do nothing.
    if user is None or session_id not in {i.session_id for i in bridge.sessions_of(user)}:
        abort(404)
    bridge.destroy_by_id(session_id)
    socketio.emit("devices_changed", to=bridge.user_room(user))
    return {"ok": True}


@pages.post("/devices/end-others")
def end_other_devices() -> dict[str, t.Any]:
    user = session.get("user")
    if user is None:
        return {"ended": 0}
    ended = bridge.destroy_by_user(user, keep=session.sid)
    socketio.emit("devices_changed", to=bridge.user_room(user))
    return {"ended": ended}


@pages.get("/socket.io-client.js")
def socketio_client() -> Response:
    return send_from_directory(CLIENT_DIST, CLIENT_FILE)


# -- Socket.IO -----------------------------------------------------------


@socketio.on("count")
def socket_count() -> dict[str, t.Any]:
    if session.get("user") is None:
        return {"error": "not logged in"}
    session["socket_count"] = session.get("socket_count", 0) + 1  # saved on return
    return _tell_every_tab()


@socketio.on("state")
def state() -> dict[str, t.Any]:
    return _counters()


PAGE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>flask-session-bridge example</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; color: #222;
         max-width: 34rem; margin: 3rem auto; padding: 0 1rem; }
  h1 { font-size: 1.4rem; }
  section { border: 1px solid #ccc; border-radius: 6px; padding: 1rem 1.25rem; margin: 1rem 0; }
  .counter { display: flex; align-items: center; gap: 1rem; margin: .5rem 0; }
  .counter output { font-size: 1.5rem; font-variant-numeric: tabular-nums;
                    min-width: 3ch; text-align: right; }
  button { font: inherit; padding: .3rem .9rem; cursor: pointer; }
  input { font: inherit; padding: .3rem; }
  #status { color: #555; font-size: .9rem; min-height: 1.5em; }
  #status.offline { color: #a40; }
  .hint { color: #555; font-size: .9rem; }
  table { border-collapse: collapse; width: 100%; font-size: .9rem; }
  th, td { text-align: left; padding: .3rem .4rem; border-bottom: 1px solid #eee; }
  td.browser { max-width: 14rem; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .this { font-weight: bold; color: #070; }
</style>
</head>
<body>
<h1>One session, two transports</h1>
<p class="hint">Open this page in a second tab (or another browser): tabs share one
session live; log out in one and watch the other.</p>

<section id="anonymous" {% if state.user %}hidden{% endif %}>
  <form method="post" action="{{ url_for('pages.login') }}">
    <label>Name
      <input id="login-name" name="name" required maxlength="40" autocomplete="username">
    </label>
    <button id="login-submit" type="submit">Log in</button>
  </form>
</section>

<section id="live" {% if not state.user %}hidden{% endif %}>
  <p>Logged in as <strong id="user">{{ state.user or "" }}</strong></p>
  <div class="counter">
    <output id="http-count">{{ state.http_count }}</output>
    <button id="http-inc" type="button">+1 over HTTP</button>
  </div>
  <div class="counter">
    <output id="socket-count">{{ state.socket_count }}</output>
    <button id="socket-inc" type="button">+1 over Socket.IO</button>
  </div>
  <button id="logout" type="button">Log out</button>
</section>

<section id="devices-panel" {% if not state.user %}hidden{% endif %}>
  <h2>Your devices</h2>
  <table>
    <thead><tr><th>Device</th><th>Browser</th><th>Last activity (UTC)</th><th></th></tr></thead>
    <tbody id="devices"></tbody>
  </table>
  <p><button id="end-others" type="button">Log out other devices</button></p>
</section>

<p id="status" role="status"></p>

<script src="{{ client_src }}" crossorigin="anonymous"></script>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const setStatus = (text) => { $("status").textContent = text; };

function show(state) {
  if (state.error) { setStatus(state.error); return; }
  if (!state.user) { anonymous(); return; }
  $("user").textContent = state.user;
  $("http-count").textContent = state.http_count;
  $("socket-count").textContent = state.socket_count;
  $("anonymous").hidden = true;
  $("live").hidden = false;
  $("devices-panel").hidden = false;
}

function anonymous() {
  $("live").hidden = true;
  $("devices-panel").hidden = true;
  $("anonymous").hidden = false;
}

async function loadDevices() {
  const response = await fetch("{{ url_for('pages.devices') }}");
  const rows = (await response.json()).devices.map((d) => {
    const row = document.createElement("tr");
    row.dataset.id = d.id;
    for (const [text, cls] of [[d.device, "device"], [d.browser, "browser"],
                               [d.last_active.replace("T", " ").slice(0, 19), "seen"]]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      cell.className = cls;
      if (cls === "browser") { cell.title = text; }
      row.append(cell);
    }
    const last = document.createElement("td");
    if (d.current) {
      last.textContent = "this device";
      last.className = "this";
      row.classList.add("current");
    } else {
      const end = document.createElement("button");
      end.textContent = "End";
      end.className = "end";
      end.addEventListener("click", async () => {
        await fetch("/devices/" + d.id + "/end", {method: "POST"});
        loadDevices();
      });
      last.append(end);
    }
    row.append(last);
    return row;
  });
  $("devices").replaceChildren(...rows);
}

// Without the Socket.IO client (offline, blocked CDN) the page still works
// over HTTP; it says live updates are off instead of doing nothing.
const socket = typeof io === "function" ? io() : null;
if (!socket) {
  setStatus("Live updates are off: the Socket.IO client could not load."
            + " Buttons over HTTP still work.");
  $("status").classList.add("offline");
  document.body.dataset.offline = "1";
  $("socket-inc").disabled = true;
  if (!$("live").hidden) { loadDevices(); }
} else {
socket.on("connect", () => {
  // Said once the page shows the session: a reply to this "state"
  // arriving after a later change would show an old count.
  socket.emit("state", (state) => {
    show(state);
    setStatus(state.user ? "connected" : "not logged in");
    if (state.user) { loadDevices(); }
  });
});
socket.on("devices_changed", loadDevices);
socket.on("state", show);  // a change made in another tab
socket.on("disconnect", (reason) => setStatus("disconnected: " + reason));
socket.on("connect_error", (err) => setStatus("connection failed: " + err.message));
socket.on("session_ended", (payload) => {
  // A socket stays in the session it connected with: after a logout, or a
  // login elsewhere that renewed the session, reconnect so the handshake
  // presents this browser's cookies as they are now.
  setStatus("session ended: " + payload.reason);
  document.body.dataset.ended = payload.reason;
  anonymous();
  socket.disconnect().connect();
});
}

$("http-inc").addEventListener("click", async () => {
  const response = await fetch("{{ url_for('pages.count') }}", {method: "POST"});
  show(await response.json());
});

$("end-others").addEventListener("click", async () => {
  await fetch("{{ url_for('pages.end_other_devices') }}", {method: "POST"});
  loadDevices();
});

$("socket-inc").addEventListener("click", () => {
  if (!socket) { return; }
  socket.timeout(5000).emit("count", (err, state) => {
    if (err) { setStatus("no answer from the server"); return; }
    show(state);
  });
});

$("logout").addEventListener("click", async () => {
  // The socket hears session_ended, which says why; this covers a socket
  // that is not connected right now.
  const response = await fetch("{{ url_for('pages.logout') }}", {method: "POST"});
  if (response.ok) { anonymous(); }
});
</script>
</body>
</html>
"""


if __name__ == "__main__":
    socketio.run(
        create_app(),
        host="127.0.0.1",
        port=int(os.environ.get("PORT", "5000")),
        allow_unsafe_werkzeug=True,
    )
