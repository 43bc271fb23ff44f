"""Every touch of Flask-SocketIO's and python-socketio's internals, in one
place, each with the reason: neither offers a public hook for these. CI runs
the whole suite on the oldest versions ``setup.py`` admits (Flask-SocketIO
5.3.7, python-socketio 5.11.2) and on the newest, so a change upstream fails
a test here, not an app.
"""

from __future__ import annotations

import contextlib
import typing as t

if t.TYPE_CHECKING:
    from flask_socketio import SocketIO

Dispatch = t.Callable[..., t.Any]


def wrap_dispatch(socketio: SocketIO, wrap: t.Callable[[Dispatch], Dispatch]) -> None:
    """Put ``wrap(dispatch)`` around Flask-SocketIO's event dispatch, once.

    Flask-SocketIO has no public hook around a handler; every handler it
    registers (decorated, class-based, catch-all, before or after
    ``init_app``) calls ``_handle_event`` on the instance, so this is the one
    place where the bridge sees every event.
    """
    dispatch = socketio._handle_event
    if getattr(dispatch, "session_bridge", False):
        return
    wrapped = wrap(dispatch)
    wrapped.session_bridge = True  # type: ignore[attr-defined]
    socketio._handle_event = wrapped


def on_background_task_error(
    socketio: SocketIO, handle: t.Callable[[BaseException], None]
) -> None:
    """Call ``handle(error)`` when a task started with
    ``socketio.start_background_task`` raises, before the error goes on as
    before. Flask-SocketIO has no hook for it; the method is wrapped on the
    instance, once.
    """
    start = socketio.start_background_task
    if getattr(start, "session_bridge", False):
        return

    def start_background_task(
        target: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any
    ) -> t.Any:
        def run(*args: t.Any, **kwargs: t.Any) -> t.Any:
            try:
                return target(*args, **kwargs)
            except BaseException as e:
                handle(e)
                raise

        return start(run, *args, **kwargs)

    start_background_task.session_bridge = True  # type: ignore[attr-defined]
    socketio.start_background_task = start_background_task


def stop_managing_sessions(socketio: SocketIO) -> None:
    """Keep Flask-SocketIO from handling sessions itself. With
    ``manage_session`` it copies the session at connect and never saves it;
    it reads the attribute at each event, after the session is opened, so
    setting it here works whenever the app was configured.
    """
    socketio.manage_session = False


def has_catch_all_connect(socketio: SocketIO) -> bool:
    """Whether a ``connect`` handler for every namespace (``"*"``) is
    registered, on the server or still pending in Flask-SocketIO's list of
    handlers registered before ``init_app``.
    """
    server = socketio.server
    registered = server.handlers if server is not None else {}
    return "connect" in registered.get("*", {}) or any(
        h[0] == "connect" and h[2] == "*" for h in socketio.handlers
    )


def namespace_handler(socketio: SocketIO, namespace: str) -> t.Any:
    """The class-based namespace handling ``namespace``, if any: a function
    connect handler for ``"*"`` hides its ``on_connect`` from python-socketio.
    """
    handlers = socketio.server.namespace_handlers
    return handlers.get(namespace) or handlers.get("*")


def namespaces(server: t.Any) -> set[str]:
    """The namespaces sockets can be in: ``/`` and every one with handlers;
    python-socketio lists them nowhere else.
    """
    found = {"/"}
    found.update(server.handlers)
    found.update(server.namespace_handlers)
    found.discard("*")
    return found


def is_socket_environ(socketio: SocketIO, environ: dict[str, t.Any]) -> bool:
    """Whether ``environ`` is a socket's (a request context Flask-SocketIO
    made for an event) rather than an HTTP request's.
    """
    server = socketio.server
    return server is not None and any(e is environ for e in server.environ.values())


def on_room_close(manager: t.Any, callback: t.Callable[[str, str], None]) -> None:
    """Call ``callback(room, namespace)`` on this worker just before a room
    of this worker closes, whichever worker closed it.

    python-socketio has no "room closed" hook. Every manager (5.11.2 to now)
    closes a room in ``basic_close_room``: for a local ``close_room`` and,
    under a message queue, for one published by another worker, which
    cannot list this worker's sockets.
    """
    close = manager.basic_close_room
    if getattr(close, "session_bridge", False):
        return

    def basic_close_room(room: t.Any, namespace: str) -> t.Any:
        if isinstance(room, str):
            with contextlib.suppress(KeyError):  # no such room here
                callback(room, namespace)
        return close(room, namespace)

    basic_close_room.session_bridge = True  # type: ignore[attr-defined]
    manager.basic_close_room = basic_close_room


def participants(manager: t.Any, room: str, namespace: str) -> list[str]:
    """The socket ids of this worker in ``room``."""
    return [sid for sid, _ in list(manager.get_participants(namespace, room))]


def leave_rooms(manager: t.Any, sid: str, namespace: str, prefix: str) -> None:
    """Take a socket of this worker out of every room named ``prefix...``,
    without publishing to other workers (the socket is here).
    """
    for room in manager.get_rooms(sid, namespace):
        if isinstance(room, str) and room.startswith(prefix):
            manager.basic_leave_room(sid, namespace, room)
