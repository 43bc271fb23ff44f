"""The load benchmark's server: one eventlet worker (bench/load.py runs it).

    python bench/load_server.py --kind bridge|anchor --port N --redis URL
        [--message-queue URL] [--prefix P]

``bridge``: the session bridge on ``RedisStore(URL)``. ``anchor``: the setup
users pick today, Flask-SocketIO ``manage_session=False`` plus Flask-Session
on Redis, given a pool that waits (redis-py's default pool is capped at 100
connections and fails under this load). Both pools hold 50 connections.
"""

import warnings

# eventlet's notice that it is deprecated (an EventletDeprecationWarning)
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()

import argparse  # noqa: E402
import gc  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

import redis  # noqa: E402
from flask import Flask  # noqa: E402
from flask import session  # noqa: E402
from flask_socketio import SocketIO  # noqa: E402

from flask_session_bridge import RedisStore  # noqa: E402
from flask_session_bridge import SessionBridge  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--kind", choices=["bridge", "anchor"], required=True)
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--redis", required=True)
parser.add_argument("--message-queue", default=None)
parser.add_argument("--prefix", default="bench:")
args = parser.parse_args()

_soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

app = Flask(__name__)
app.config["SECRET_KEY"] = "bench secret"
bridge = None
if args.kind == "bridge":
    socketio = SocketIO(async_mode="eventlet")
    socketio.init_app(app, message_queue=args.message_queue)
    bridge = SessionBridge(app, socketio, store=RedisStore(args.redis, prefix=args.prefix))
else:
    from flask_session import Session

    pool = redis.BlockingConnectionPool.from_url(args.redis, max_connections=50, timeout=20)
    app.config.update(
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis(connection_pool=pool),
        SESSION_KEY_PREFIX=args.prefix,
    )
    Session(app)
    socketio = SocketIO(async_mode="eventlet", manage_session=False)
    socketio.init_app(app, message_queue=args.message_queue)


@app.post("/login")
def login():
    if bridge is not None:
        bridge.regenerate()
    session["user"] = "u"
    return "ok"


@app.get("/rss")
def rss():
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return str(pages * os.sysconf("SC_PAGE_SIZE"))


#: CPU seconds spent in the cyclic garbage collector, and when the running
#: collection began.
_gc_cpu = [0.0, 0.0]


def _time_gc(phase, info):
    if phase == "start":
        _gc_cpu[1] = time.process_time()
    else:
        _gc_cpu[0] += time.process_time() - _gc_cpu[1]


gc.callbacks.append(_time_gc)


@app.get("/gc")
def gc_seconds():
    return repr(_gc_cpu[0])


@socketio.on("inc")
def inc():
    session["n"] = session.get("n", 0) + 1
    return session["n"]


# max_size: eventlet's WSGI server serves at most 1,024 connections at once
# by default, and every open websocket holds one.
socketio.run(app, host="127.0.0.1", port=args.port, log_output=False, max_size=5000)
