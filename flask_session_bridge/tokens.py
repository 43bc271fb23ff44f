"""Cookie tokens: random secrets, their signatures, and the public ids derived
from them.

A cookie carries ``token.signature``. The store and the logs only ever see the
public id, a SHA-256 of the token, so a leaked store or log opens no session.
"""

from __future__ import annotations

import hashlib
import secrets
import typing as t

from itsdangerous import BadData
from itsdangerous import BadSignature
from itsdangerous import Signer
from itsdangerous import TimestampSigner
from itsdangerous import URLSafeTimedSerializer

from .logging import logger

if t.TYPE_CHECKING:
    from flask import Flask

#: Longer cookie values are refused before any signature check.
MAX_COOKIE_VALUE = 200

_SESSION_SALT = "flask-session-bridge.session"
_CLIENT_SALT = "flask-session-bridge.client"
_SOCKET_SALT = "flask-session-bridge.socket-token"


def new_token() -> str:
    """Return a fresh random token of 256 bits, URL-safe."""
    return secrets.token_urlsafe(32)


def public_id(token: str) -> str:
    """Derive the public id of a token: one-way, so it cannot be turned back
    into a cookie.
    """
    return hashlib.sha256(token.encode()).hexdigest()


def is_public_id(value: object) -> bool:
    """Whether ``value`` has the shape of a public id (64 lowercase hex)."""
    return (
        isinstance(value, str)
        and len(value) == 64
        and all(c in "0123456789abcdef" for c in value)
    )


def _secret_keys(app: Flask) -> list[str]:
    # itsdangerous takes the newest key last and tries all when verifying.
    keys = list(app.config.get("SECRET_KEY_FALLBACKS") or ())
    keys.append(app.secret_key)
    return t.cast("list[str]", keys)


def session_signer(app: Flask) -> Signer:
    """The signer of session cookies for ``app``."""
    return Signer(_secret_keys(app), salt=_SESSION_SALT, digest_method=hashlib.sha256)


def client_signer(app: Flask) -> TimestampSigner:
    """The signer of client cookies for ``app``; the timestamp lets the
    cookie be rolled and expire.
    """
    return TimestampSigner(
        _secret_keys(app), salt=_CLIENT_SALT, digest_method=hashlib.sha256
    )


def unsign(
    signer: Signer, value: str | None, what: str, max_age: int | None = None
) -> tuple[str | None, bool]:
    """Return the token inside a signed cookie value (``None`` if it is
    missing, oversized, malformed or tampered with), and whether it was
    signed with a fallback key, so must be signed again (rule 10).

    :param what: The cookie's name, for the log.
    """
    if not value:
        return None, False
    if len(value) > MAX_COOKIE_VALUE:
        logger.warning("refused an oversized %s cookie", what)
        return None, False
    try:
        if isinstance(signer, TimestampSigner):
            token = signer.unsign(value, max_age=max_age)
        else:
            token = signer.unsign(value)
    except BadSignature:
        # Expired client cookies land here too; all are security-relevant.
        logger.warning("refused a %s cookie with a bad or expired signature", what)
        return None, False
    return token.decode("ascii", "replace"), signed_with_fallback(signer, value)


def signed_with_fallback(signer: Signer, value: str) -> bool:
    """Whether a value that verifies was signed with a fallback key."""
    if len(signer.secret_keys) == 1:
        return False  # no fallbacks: nothing to check
    current = type(signer)(
        signer.secret_keys[-1], salt=signer.salt, digest_method=signer.digest_method
    )
    # Without max_age a TimestampSigner checks only the signature: the
    # caller has checked the age.
    return not current.validate(value.encode())


def new_nonce() -> str:
    """A short random id naming one socket token."""
    return secrets.token_urlsafe(12)


def dump_socket_token(app: Flask, client_id: str, session_id: str, nonce: str) -> str:
    """A signed, timestamped token naming a session (and its client) by their
    public ids, with the nonce that makes it single-use, for a socket that
    cannot send cookies.
    """
    serializer = URLSafeTimedSerializer(_secret_keys(app), salt=_SOCKET_SALT)
    return serializer.dumps([client_id, session_id, nonce])


def load_socket_token(
    app: Flask, value: object, max_age: int
) -> tuple[str, str, str] | None:
    """The ``(client_id, session_id, nonce)`` in a socket token, or ``None``
    if it is malformed, tampered with or older than ``max_age`` seconds.
    """
    if not isinstance(value, str) or len(value) > 2 * MAX_COOKIE_VALUE:
        return None
    serializer = URLSafeTimedSerializer(_secret_keys(app), salt=_SOCKET_SALT)
    try:
        ids = serializer.loads(value, max_age=max_age)
    except BadData:
        logger.warning("refused a socket token with a bad signature or too old")
        return None
    if (
        isinstance(ids, list)
        and len(ids) == 3
        and is_public_id(ids[0])
        and is_public_id(ids[1])
        and isinstance(ids[2], str)
    ):
        return ids[0], ids[1], ids[2]
    return None
