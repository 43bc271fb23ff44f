"""The extension's one logger, ``flask_session_bridge``: configure it as any
other. Its records name sessions by their public ids, never by cookie tokens.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("flask_session_bridge")
