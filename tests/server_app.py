"""Serve the tests' app on a real server, for tests that need real sockets:

    python tests/server_app.py --mode threading|eventlet|gevent --port N
        [--store URL] [--message-queue URL] [--socket-missing allow|reject]
"""

import argparse
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--mode", choices=["threading", "eventlet", "gevent"], required=True)
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--store", default="memory://")
parser.add_argument("--message-queue", default=None)
parser.add_argument("--socket-missing", default="allow")
args = parser.parse_args()

if args.mode == "eventlet":
    import eventlet

    eventlet.monkey_patch()
elif args.mode == "gevent":
    from gevent import monkey

    monkey.patch_all()

import warnings  # noqa: E402

warnings.simplefilter("ignore", DeprecationWarning)  # eventlet's own notice

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from conftest import create_app  # noqa: E402

app, socketio, bridge = create_app(
    args.store,
    async_mode=args.mode,
    message_queue=args.message_queue,
    socket_missing=args.socket_missing,
)
app.config["TESTING"] = False
socketio.run(app, host="127.0.0.1", port=args.port, allow_unsafe_werkzeug=True, log_output=False)
