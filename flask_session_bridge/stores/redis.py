"""A store in Redis: several processes and hosts, native expiry, locks in
Redis. One Redis, a Sentinel-managed replica set or a Redis Cluster.

A session's own keys share a hash tag of their own (``<prefix>{<session
id>}:s``, ``:l`` for its lock, ``:q``/``:w`` for its waiters), so sessions
spread over every shard of a cluster and each step on a session is one
script on one slot that declares every key it touches. The client mapping
(``<prefix>c:{<client id>}``) lives in another slot; it is informational,
so it is written and compared in single-slot commands of its own, sent in
the same round trip as the session's script.
"""

from __future__ import annotations

import functools
import secrets
import threading
import time
import typing as t

from ..exceptions import SessionLockTimeout
from ..exceptions import StoreUnavailable
from .base import Record

if t.TYPE_CHECKING:
    import redis
    from redis.commands.core import Script

_T = t.TypeVar("_T")

# Waiters are woken, not polling: a waiter that finds the lock taken marks
# the session as waited on (KEYS :q, expiring when the longest waiter gives
# up) and blocks on its wake list (:w). Whatever frees the lock pushes one
# wake-up there, so one waiter tries again per release; the list keeps at
# most one, so a wake-up sent between a waiter's try and its BLPOP is not
# lost, and a stale one costs one extra try.
_WAKE = """
local function wake(waited, list)
    if redis.call('EXISTS', waited) == 1 then
        redis.call('DEL', list)
        redis.call('LPUSH', list, '1')
        redis.call('PEXPIRE', list, 5000)
    end
end
"""

# KEYS: lock, session, waited, wake list. ARGV: token, lease ms, wait ms.
# A lock already held with the caller's own token counts as taken: a script
# that a client retried after it ran once must not wait for itself. Redis's
# clock at the take is returned to fence the save (see :meth:`save`).
_LOCK = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
        or redis.call('GET', KEYS[1]) == ARGV[1] then
    local now = redis.call('TIME')
    return {1, now[1], now[2], redis.call('GET', KEYS[2])}
end
if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[3]) then
    redis.call('SET', KEYS[3], '1', 'PX', ARGV[3])
end
return {0, redis.call('PTTL', KEYS[1])}
"""

# KEYS: lock. ARGV: token, lease ms.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: lock, session, waited, wake list. ARGV: token, "<client id>\\n<data>",
# max age ms, deadline in Redis ms or ''. Past the deadline the client has
# given up waiting for the answer and reported the save as failed, so the
# script writes nothing (and lets the lock go: nobody will use it).
_SAVE = _WAKE + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if ARGV[4] ~= '' then
    local now = redis.call('TIME')
    if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(ARGV[4]) then
        redis.call('DEL', KEYS[1])
        wake(KEYS[3], KEYS[4])
        return -2
    end
end
local existed = redis.call('EXISTS', KEYS[2])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[1])
wake(KEYS[3], KEYS[4])
return 1 - existed
"""

# KEYS: lock, session, waited, wake list. ARGV: token, touch ms or ''.
_RELEASE = _WAKE + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
redis.call('DEL', KEYS[1])
wake(KEYS[3], KEYS[4])
return 1
"""

# KEYS: lock, session, waited, wake list. ARGV: token. Returns the record.
_DELETE = _WAKE + """
local value = redis.call('GET', KEYS[2])
redis.call('DEL', KEYS[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
wake(KEYS[3], KEYS[4])
return value
"""

# KEYS: waited, wake list. Passes on a wake-up a waiter took but did not use.
_PASS_ON = _WAKE + "wake(KEYS[1], KEYS[2])"

# The client mapping, in its own slot. KEYS: mapping. ARGV: session id, ms.
_TOUCH_CLIENT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
"""
# Returns the session the mapping named before, so that a save Redis
# refused can put it back.
_LINK_CLIENT = """
local before = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return before
"""
# KEYS: mapping. ARGV: session id, the session named before or '', ms.
_UNDO_LINK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return end
if ARGV[2] == '' then redis.call('DEL', KEYS[1])
else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
"""
_UNLINK_CLIENT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
"""

#: Locks of failed calls remembered at most; more are left to expire.
_MAX_UNSURE = 1000
#: Seconds between attempts to free them.
_FREE_EVERY = 0.1
#: Locks held by this store object whose fence is remembered at most.
_MAX_HELD = 10000
#: Longest single BLPOP, in seconds, when the client has no socket timeout.
_LONGEST_BLOCK = 5.0


class _Held(t.NamedTuple):
    # Redis's clock at the take (ms) and ours then: Redis's clock now is
    # estimated from these, never read in a round trip of its own.
    redis_ms: float
    taken: float
    # The client the record names, so a touch can refresh its mapping in
    # the same round trip.
    client_id: str | None


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


def _socket_timeout(client: t.Any) -> float | None:
    """The socket timeout a redis-py client reads replies with, if it says."""
    for owner in (getattr(client, "connection_pool", None), getattr(client, "nodes_manager", None)):
        kwargs = getattr(owner, "connection_kwargs", None)
        if isinstance(kwargs, dict) and kwargs.get("socket_timeout") is not None:
            return float(kwargs["socket_timeout"])
    return None


class RedisStore:
    """Sessions in Redis, under ``prefix``, with native expiry.

    Built from a URL, the store's connection pool waits for a free
    connection (up to 20 s) instead of failing under load, and a call to a
    Redis that stops answering fails after 5 s, without retries (a script
    run twice could report a lost lock). Options in the URL's query
    (``?max_connections=10&socket_timeout=2``) win over these defaults. Pass
    your own :class:`redis.Redis`, :class:`redis.cluster.RedisCluster` or
    Sentinel master (``Sentinel(...).master_for(name)``) for other set-ups;
    it is used as it is.

    Saves are fenced: a save that reaches Redis after the client stopped
    waiting for its answer (a paused or stalled Redis) writes nothing, so a
    save reported as failed is never applied later. The fence is the
    client's socket timeout (5 s when it has none).

    A call that fails may still run in Redis (a timeout after the request
    was sent), and a release that fails leaves its lock behind. The store
    remembers such locks (up to 1,000) and frees them once Redis answers
    again, at its next locking call, so a healthy Redis does not refuse a
    session for a lock nobody holds. Other processes never learn of them:
    for them the lock's lease (``lock_expire``, 5 s) bounds the wait.

    Redis expires keys itself, so :meth:`cleanup` finds nothing to remove and
    returns an empty list; a session's end by expiry is noticed when it is
    next read.

    :param client_or_url: A ``redis://``, ``rediss://`` or ``unix://`` URL,
        or a redis-py client.
    :param prefix: Prefix of every key the store writes; without ``{`` or
        ``}``, which would change the keys' hash slots.
    :param max_connections: Pool size when built from a URL.
    :param wait_replicas: Under Sentinel or any replicated Redis, each lock
        and each write waits (``WAIT``, in the same round trip) until this
        many replicas have it; fewer in ``wait_timeout`` is a failure, so a
        failover loses no acknowledged write. Not with Redis Cluster.
    :param wait_timeout: Seconds ``WAIT`` waits for the replicas.
    :raise ImportError: redis-py is not installed.
    :raise ValueError: ``prefix`` holds a brace, or ``wait_replicas`` with a
        cluster client.
    """

    def __init__(
        self,
        client_or_url: redis.Redis | redis.RedisCluster | str,
        prefix: str = "flask_session_bridge:",
        max_connections: int = 50,
        *,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
    ) -> None:
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as e:
            raise ImportError(
                "RedisStore needs redis-py: pip install 'flask_session_bridge[redis]'"
            ) from e
        if "{" in prefix or "}" in prefix:
            raise ValueError(
                f"RedisStore prefix {prefix!r} holds a brace: the store tags each"
                " session's keys with a hash tag of its own, so sessions spread over"
                " a cluster's shards. Use a prefix without '{' and '}'."
            )
        if wait_replicas and isinstance(client_or_url, redis.RedisCluster):
            raise ValueError("wait_replicas is for one replicated Redis, not Redis Cluster")
        # Cluster errors (slot not covered, no node reachable) are not
        # RedisError: both mean the store is unavailable.
        self._errors = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException)
        self._no_script = redis.exceptions.NoScriptError
        if isinstance(client_or_url, str):
            pool = redis.BlockingConnectionPool.from_url(
                client_or_url,
                max_connections=max_connections,
                timeout=20,
                socket_timeout=5,
                socket_connect_timeout=5,
                retry=Retry(NoBackoff(), 0),
            )
            self.client: redis.Redis | redis.RedisCluster = redis.Redis(connection_pool=pool)
        else:
            self.client = client_or_url
        self.prefix = prefix
        self.wait_replicas = wait_replicas
        self.wait_timeout = wait_timeout
        timeout = _socket_timeout(self.client)
        # The client gives up on an answer no sooner than ``timeout`` after
        # sending; a margin covers the two clocks running at slightly
        # different rates.
        self._fence = (timeout if timeout is not None else 5.0) * 0.95
        if wait_replicas and timeout is not None and wait_timeout >= timeout * 0.8:
            raise ValueError(
                f"wait_timeout ({wait_timeout:g}s) must be well under the client's"
                f" socket timeout ({timeout:g}s): the WAIT reply is read with it"
            )
        self._longest_block = (timeout * 0.8) if timeout is not None else _LONGEST_BLOCK
        # A BLPOP holds a pool connection while it waits: at most half the
        # pool waits that way, so holders always find one to release with;
        # the other waiters sleep between tries.
        pool_size = getattr(getattr(self.client, "connection_pool", None), "max_connections", 50)
        self._blockers = threading.BoundedSemaphore(max(1, min(int(pool_size), 10**6) // 2))
        self._lock = self.client.register_script(_LOCK)
        self._renew = self.client.register_script(_RENEW)
        self._save = self.client.register_script(_SAVE)
        self._release = self.client.register_script(_RELEASE)
        self._delete = self.client.register_script(_DELETE)
        self._pass_on = self.client.register_script(_PASS_ON)
        self._touch_client = self.client.register_script(_TOUCH_CLIENT)
        self._link_client = self.client.register_script(_LINK_CLIENT)
        self._undo_link = self.client.register_script(_UNDO_LINK)
        self._unlink_client = self.client.register_script(_UNLINK_CLIENT)
        self._scripts = (
            self._lock, self._renew, self._save, self._release, self._delete,
            self._pass_on, self._touch_client, self._link_client, self._undo_link,
            self._unlink_client,
        )
        #: token -> what this store knows of a lock it holds.
        self._held: dict[str, _Held] = {}
        #: token -> session id, of calls that failed and may have left a
        #: lock behind.
        self._unsure: dict[str, str] = {}
        self._next_free = 0.0

    # -- keys --------------------------------------------------------------

    def _keys(self, session_id: str) -> list[str]:
        """Lock, record, waited marker and wake list of a session: one slot."""
        tag = f"{self.prefix}{{{session_id}}}"
        return [f"{tag}:l", f"{tag}:s", f"{tag}:q", f"{tag}:w"]

    def _client_key(self, client_id: str) -> str:
        return f"{self.prefix}c:{{{client_id}}}"

    # -- calling Redis -----------------------------------------------------

    def _call(self, work: t.Callable[[], _T]) -> _T:
        try:
            return work()
        except self._errors as e:
            raise StoreUnavailable(f"Redis store: {e}", original_error=e) from e

    def _round_trip(
        self, steps: list[tuple[Script, list[str], list[str | int]]], wait: bool = False
    ) -> list[t.Any]:
        """Run scripts in one round trip (a pipeline), then ``WAIT`` for the
        replicas if asked. Returns the scripts' replies.

        :raise StoreUnavailable: Redis failed, or fewer replicas than
            ``wait_replicas`` confirmed the writes.
        """

        def work() -> list[t.Any]:
            for _attempt in range(2):
                pipe = self.client.pipeline(transaction=False)
                for script, keys, args in steps:
                    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                if wait:
                    pipe.wait(self.wait_replicas, _ms(self.wait_timeout))
                replies = pipe.execute(raise_on_error=False)
                if not any(isinstance(r, self._no_script) for r in replies):
                    break
                # Redis restarted or flushed its scripts: none of ours ran.
                for script in self._scripts:
                    script.sha = _text(self.client.script_load(script.script))
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return list(replies)

        replies = self._call(work)
        if wait and replies[-1] < self.wait_replicas:
            # The master has the write; a failover may lose it or keep it.
            raise StoreUnavailable(
                f"Redis store: {replies[-1]} of {self.wait_replicas} replicas"
                f" confirmed the write within {self.wait_timeout:g}s (outcome unknown)"
            )
        return replies[: len(steps)]

    def _remember_unsure(self, session_id: str, token: str) -> None:
        self._held.pop(token, None)
        if len(self._unsure) < _MAX_UNSURE:
            self._unsure[token] = session_id

    def _free_unsure(self) -> None:
        """Free the locks failed calls may have left, now Redis may answer."""
        now = time.monotonic()
        if now < self._next_free:
            return
        self._next_free = now + _FREE_EVERY
        unsure = list(self._unsure.items())
        # Releasing is idempotent, and a call Redis still had queued when it
        # came back ran before this one, which Redis received later.
        self._round_trip([
            (self._release, self._keys(session_id), [token, ""]) for token, session_id in unsure
        ])
        for token, _session_id in unsure:
            self._unsure.pop(token, None)

    # -- the store protocol ------------------------------------------------

    def get(self, session_id: str) -> Record | None:
        return _record(self._call(lambda: self.client.get(self._keys(session_id)[1])))

    def get_session_id(self, client_id: str) -> str | None:
        value = self._call(lambda: self.client.get(self._client_key(client_id)))
        return _text(value) if value is not None else None

    def lock(self, session_id: str, expire: float, timeout: float) -> tuple[str, Record | None]:
        if self._unsure:
            self._free_unsure()
        token = secrets.token_hex(16)
        keys = self._keys(session_id)
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            wait_ms = _ms(max(0.0, deadline - time.monotonic()) + 1)
            try:
                (reply,) = self._round_trip(
                    [(self._lock, keys, [token, _ms(expire), wait_ms])], self.wait_replicas > 0
                )
            except StoreUnavailable:
                self._remember_unsure(session_id, token)
                raise
            if reply[0] == 1:
                seconds, micros = int(reply[1]), int(reply[2])
                record = _record(reply[3] if len(reply) > 3 else None)
                if len(self._held) >= _MAX_HELD:  # locks given up without a word
                    self._held.clear()  # they lose their fence: their saves are unfenced
                self._held[token] = _Held(
                    seconds * 1000 + micros / 1000, time.monotonic(),
                    record.client_id if record is not None else None,
                )
                return token, record
            left = deadline - time.monotonic()
            if left <= 0:
                # A wake-up this waiter took and cannot use goes to the next.
                self._call(lambda: self._pass_on(keys=keys[2:]))
                raise SessionLockTimeout(f"session lock not free after {timeout:g}s", session_id)
            pttl = int(reply[1])
            if pttl == -2:  # freed since the try
                continue
            # The holder's lease bounds the wait: if it crashed, nobody wakes us.
            lease = pttl / 1000 + 0.001 if pttl > 0 else self._longest_block
            block = min(left, lease, self._longest_block)
            if self._blockers.acquire(blocking=False):
                try:
                    self._call(functools.partial(self.client.blpop, [keys[3]], timeout=block))
                finally:
                    self._blockers.release()
            else:
                time.sleep(min(delay, block))
                delay = min(delay * 2, 0.02)

    def renew(self, session_id: str, token: str, expire: float) -> bool:
        keys = self._keys(session_id)[:1]
        return bool(self._call(lambda: self._renew(keys=keys, args=[token, _ms(expire)])))

    def save(self, session_id: str, record: Record, max_age: float, token: str, link: bool) -> bool:
        held = self._held.pop(token, None)
        deadline = ""
        if held is not None:
            # Redis's clock now, as estimated from the take, plus the fence:
            # the script runs by then, or the client has not yet given up.
            elapsed = time.monotonic() - held.taken
            deadline = str(int(held.redis_ms + (elapsed + self._fence) * 1000))
        value = f"{record.client_id}\n{record.data}"
        age = _ms(max_age)
        steps: list[tuple[Script, list[str], list[str | int]]] = [
            (self._save, self._keys(session_id), [token, value, age, deadline])
        ]
        # The mapping is in another slot: it goes in the same round trip, and
        # is put back if Redis refused the save.
        mapping = [self._client_key(record.client_id)]
        step = self._link_client if link else self._touch_client
        steps.append((step, mapping, [session_id, age]))
        try:
            reply, before = self._round_trip(steps, self.wait_replicas > 0)
        except StoreUnavailable:
            self._remember_unsure(session_id, token)
            raise
        if reply < 0 and link:
            undo: list[str | int] = [session_id, "" if before is None else _text(before), age]
            self._call(lambda: self._undo_link(keys=mapping, args=undo))
        if reply == -1:
            raise SessionLockTimeout("session lock expired before write-back", session_id)
        if reply == -2:
            raise StoreUnavailable(
                "Redis store: the save reached Redis too late and was not written", session_id
            )
        return bool(reply)

    def release(self, session_id: str, token: str, max_age: float | None) -> None:
        held = self._held.pop(token, None)
        touch = "" if max_age is None else _ms(max_age)
        steps: list[tuple[Script, list[str], list[str | int]]] = [
            (self._release, self._keys(session_id), [token, touch])
        ]
        if max_age is not None and held is not None and held.client_id is not None:
            steps.append(
                (self._touch_client, [self._client_key(held.client_id)], [session_id, touch])
            )
        try:
            self._round_trip(steps)
        except StoreUnavailable:
            self._remember_unsure(session_id, token)
            raise

    def delete(self, session_id: str, token: str) -> Record | None:
        self._held.pop(token, None)
        try:
            # Replicated like a save: a logout a failover undid would let the
            # session back in.
            (value,) = self._round_trip(
                [(self._delete, self._keys(session_id), [token])], self.wait_replicas > 0
            )
        except StoreUnavailable:
            self._remember_unsure(session_id, token)
            raise
        record = _record(value)
        if record is not None:
            mapping = [self._client_key(record.client_id)]
            self._call(lambda: self._unlink_client(keys=mapping, args=[session_id]))
        return record

    def cleanup(self) -> list[tuple[str, str]]:
        return []
