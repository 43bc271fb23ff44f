"""A store in Redis: several processes and hosts, native expiry, locks in
Redis. Each step the bridge takes is one round trip (a server-side script).
"""

from __future__ import annotations

import secrets
import time
import typing as t

from ..exceptions import SessionLockTimeout
from ..exceptions import StoreUnavailable
from .base import Record

if t.TYPE_CHECKING:
    import redis

_T = t.TypeVar("_T")

# A session is stored as "<client id>\n<data>", so one GET reads both. A
# lock already held with the caller's own token counts as taken: a script
# that a client retried after it ran once must not wait for itself.
_TAKE = """
local function take(key)
    return redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) or redis.call('GET', key) == ARGV[1]
end
"""

_LOCK = _TAKE + """
if take(KEYS[1]) then return {1, redis.call('GET', KEYS[2])} end
return {0}
"""

_LOCK_CLIENT = _TAKE + """
local session_id = redis.call('GET', KEYS[1])
if not session_id then return {0} end
if take(ARGV[3] .. 'l:' .. session_id) then
    return {1, session_id, redis.call('GET', ARGV[3] .. 's:' .. session_id)}
end
return {2, session_id}
"""

# Frees locks taken by calls that failed: ARGV is the prefix, then pairs of
# ("l:<session id>" or "c:<client id>", token). Returns the tokens it found.
_FREE = """
local found = {}
for i = 2, #ARGV, 2 do
    local key = ARGV[1] .. ARGV[i]
    if string.sub(ARGV[i], 1, 2) == 'c:' then
        local session_id = redis.call('GET', key)
        key = session_id and (ARGV[1] .. 'l:' .. session_id)
    end
    if key and redis.call('GET', key) == ARGV[i + 1] then
        redis.call('DEL', key)
        table.insert(found, ARGV[i + 1])
    end
end
return found
"""

#: Locks of failed calls remembered at most; more are left to expire.
_MAX_UNSURE = 1000
#: Seconds between attempts to free them.
_FREE_EVERY = 0.1

_SAVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local existed = redis.call('EXISTS', KEYS[2])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
if ARGV[4] == '1' then
    redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[3])
elseif redis.call('GET', KEYS[3]) == ARGV[5] then
    redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
redis.call('DEL', KEYS[1])
return 1 - existed
"""

# A value without a newline was not written by this store: it names no client.
_CLIENT_KEY = """
local function client_key(value)
    local cut = string.find(value, '\\n', 1, true)
    if not cut then return ARGV[3] end
    return ARGV[3] .. string.sub(value, 1, cut - 1)
end
"""

_RELEASE = _CLIENT_KEY + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then
    local value = redis.call('GET', KEYS[2])
    if value then
        redis.call('PEXPIRE', KEYS[2], ARGV[2])
        local key = client_key(value)
        if redis.call('GET', key) == ARGV[4] then redis.call('PEXPIRE', key, ARGV[2]) end
    end
end
redis.call('DEL', KEYS[1])
return 1
"""

_DELETE = _CLIENT_KEY + """
local value = redis.call('GET', KEYS[2])
if value then
    redis.call('DEL', KEYS[2])
    local key = client_key(value)
    if redis.call('GET', key) == ARGV[4] then redis.call('DEL', key) end
end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return value
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _record(value: bytes | str | None) -> Record | None:
    if value is None:
        return None
    # Undecodable bytes stay (as surrogates) for the bridge to refuse as a
    # corrupt record; raising here would leave the lock just taken stuck.
    text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
    client_id, _, data = text.partition("\n")
    return Record(client_id, data)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisStore:
    """Sessions in Redis, under ``prefix``, with native expiry.

    Built from a URL, the store's connection pool waits for a free
    connection (up to 20 s) instead of failing under load, and a call to a
    Redis that stops answering fails after 5 s, without retries (a script
    run twice could report a lost lock). Options in the URL's query
    (``?max_connections=10&socket_timeout=2``) win over these defaults. Pass
    your own :class:`redis.Redis` for Sentinel, TLS or other settings; it is
    used as it is. With Redis Cluster use a prefix with a hash tag
    (``"{sessions}:"``): the scripts touch a session's keys and its client's
    mapping together, so they must share a slot.

    A locking call that fails may still run in Redis (a timeout after the
    request was sent), leaving a lock nobody holds. The store remembers such
    locks (up to 1,000) and frees them at its next locking calls, so the
    session is not blocked until the lock expires. This is best effort: only
    this store object knows them, and a lock asked for by client id is found
    through the client's current session.

    Redis expires keys itself, so :meth:`cleanup` finds nothing to remove and
    returns an empty list; a session's end by expiry is noticed when it is
    next read.

    :param client_or_url: A ``redis://``, ``rediss://`` or ``unix://`` URL,
        or a :class:`redis.Redis`.
    :param prefix: Prefix of every key the store writes.
    :param max_connections: Pool size when built from a URL.
    :raise ImportError: redis-py is not installed.
    """

    def __init__(
        self,
        client_or_url: redis.Redis | str,
        prefix: str = "flask_session_bridge:",
        max_connections: int = 50,
    ) -> None:
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as e:
            raise ImportError(
                "RedisStore needs redis-py: pip install 'flask_session_bridge[redis]'"
            ) from e
        self._errors = redis.exceptions.RedisError
        if isinstance(client_or_url, str):
            pool = redis.BlockingConnectionPool.from_url(
                client_or_url,
                max_connections=max_connections,
                timeout=20,
                socket_timeout=5,
                socket_connect_timeout=5,
                retry=Retry(NoBackoff(), 0),
            )
            self.client: redis.Redis = redis.Redis(connection_pool=pool)
        else:
            self.client = client_or_url
        self.prefix = prefix
        self._lock = self.client.register_script(_LOCK)
        self._lock_client = self.client.register_script(_LOCK_CLIENT)
        self._save = self.client.register_script(_SAVE)
        self._release = self.client.register_script(_RELEASE)
        self._delete = self.client.register_script(_DELETE)
        self._free = self.client.register_script(_FREE)
        #: token -> (lock name, lock expiry in seconds, monotonic time the
        #: lock expires once Redis answered again) of locking calls that
        #: failed and may still run.
        self._unsure: dict[str, tuple[str, float, float | None]] = {}
        self._next_free = 0.0

    def _session_key(self, session_id: str) -> str:
        return f"{self.prefix}s:{session_id}"

    def _client_key(self, client_id: str) -> str:
        return f"{self.prefix}c:{client_id}"

    def _lock_key(self, session_id: str) -> str:
        return f"{self.prefix}l:{session_id}"

    def _call(self, work: t.Callable[[], _T]) -> _T:
        try:
            return work()
        except self._errors as e:
            raise StoreUnavailable(f"Redis store: {e}", original_error=e) from e

    def _call_locking(
        self, name: str, token: str, expire: float, work: t.Callable[[], _T]
    ) -> _T:
        """Run a locking script; if it fails, remember its lock as unsure."""
        if self._unsure:
            self._free_unsure()
        try:
            return self._call(work)
        except StoreUnavailable:
            if len(self._unsure) < _MAX_UNSURE:
                self._unsure[token] = (name, expire, None)
            raise

    def _free_unsure(self) -> None:
        now = time.monotonic()
        if now < self._next_free:
            return
        self._next_free = now + _FREE_EVERY
        args = [self.prefix]
        for token, (name, _expire, until) in list(self._unsure.items()):
            if until is not None and until <= now:
                self._unsure.pop(token, None)  # its lock, if taken, has expired
            else:
                args += [name, token]
        if len(args) == 1:
            return
        # keys: routes the script to the prefix's slot under Redis Cluster.
        found = self._call(lambda: self._free(keys=[self.prefix], args=args))
        for token in found:
            self._unsure.pop(_text(token), None)
        # Redis answers again, so a failed call still queued there runs about
        # now: the lock it may take expires at the latest ``expire`` from now.
        for token, (name, expire, until) in list(self._unsure.items()):
            if until is None:
                self._unsure[token] = (name, expire, now + expire)

    def get(self, session_id: str) -> Record | None:
        return _record(self._call(lambda: self.client.get(self._session_key(session_id))))

    def get_session_id(self, client_id: str) -> str | None:
        value = self._call(lambda: self.client.get(self._client_key(client_id)))
        return _text(value) if value is not None else None

    def lock(self, session_id: str, expire: float, timeout: float) -> tuple[str, Record | None]:
        token = secrets.token_hex(16)
        keys = [self._lock_key(session_id), self._session_key(session_id)]
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            reply = self._call_locking(
                f"l:{session_id}", token, expire,
                lambda: self._lock(keys=keys, args=[token, _ms(expire)]),
            )
            if reply[0] == 1:
                return token, _record(reply[1] if len(reply) > 1 else None)
            if time.monotonic() >= deadline:
                raise SessionLockTimeout(f"session lock not free after {timeout:g}s", session_id)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.02)

    def lock_client(
        self, client_id: str, expire: float, timeout: float
    ) -> tuple[str | None, str | None, Record | None]:
        """Find the client's session, lock and read it: one round trip when
        the lock is free (see :func:`~flask_session_bridge.stores.base.lock_client`).
        """
        token = secrets.token_hex(16)
        keys = [self._client_key(client_id)]
        args: list[str | int] = [token, _ms(expire), self.prefix]
        reply = self._call_locking(
            f"c:{client_id}", token, expire, lambda: self._lock_client(keys=keys, args=args)
        )
        if reply[0] == 0:
            return None, None, None
        session_id = _text(reply[1])
        if reply[0] == 1:
            return session_id, token, _record(reply[2] if len(reply) > 2 else None)
        token, record = self.lock(session_id, expire, timeout)
        return session_id, token, record

    def save(self, session_id: str, record: Record, max_age: float, token: str, link: bool) -> bool:
        keys = [
            self._lock_key(session_id),
            self._session_key(session_id),
            self._client_key(record.client_id),
        ]
        value = f"{record.client_id}\n{record.data}"
        args: list[str | int] = [token, value, _ms(max_age), int(link), session_id]
        reply = self._call(lambda: self._save(keys=keys, args=args))
        if reply == -1:
            raise SessionLockTimeout("session lock expired before write-back", session_id)
        return bool(reply)

    def release(self, session_id: str, token: str, max_age: float | None) -> None:
        keys = [self._lock_key(session_id), self._session_key(session_id)]
        touch = "" if max_age is None else str(_ms(max_age))
        args = [token, touch, f"{self.prefix}c:", session_id]
        self._call(lambda: self._release(keys=keys, args=args))

    def delete(self, session_id: str, token: str) -> Record | None:
        keys = [self._lock_key(session_id), self._session_key(session_id)]
        args = [token, "", f"{self.prefix}c:", session_id]
        return _record(self._call(lambda: self._delete(keys=keys, args=args)))

    def cleanup(self) -> list[tuple[str, str]]:
        return []
