"""Signals sent by the bridge. Each is sent with the Flask app as sender."""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: Sent after a session was written to the store. Keyword arguments:
#: ``session_id``, ``client_id``, and ``is_new``: whether this save created
#: the record.
session_saved = _signals.signal("session-saved")

#: Sent after a session ended. Keyword arguments: ``session_id``,
#: ``client_id`` and ``reason``: ``"logout"`` (cleared), ``"destroyed"``
#: (``bridge.destroy_by_*``), ``"renewed"`` (a login or ``regenerate()``
#: moved it to a new id), ``"expired"`` (removed by cleanup) or
#: ``"invalid"`` (a validator refused it, or its record is corrupt).
session_ended = _signals.signal("session-ended")

#: Sent after :meth:`~flask_session_bridge.SessionBridge.cleanup` removed
#: expired sessions. Keyword argument: ``count``.
sessions_cleaned = _signals.signal("sessions-cleaned")
