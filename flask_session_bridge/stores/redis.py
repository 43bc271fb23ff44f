"""A store in Redis: several processes and hosts, native expiry, locks in
Redis. One Redis, a Sentinel-managed replica set or a Redis Cluster.

A session's own keys share a hash tag of their own (``<prefix>{<session
id>}:s``, ``:l`` for its lock, ``:q``/``:w`` for its waiters), so sessions
spread over every shard of a cluster and each step on a session is one
script on one slot that declares every key it touches. The client mapping
(``<prefix>c:{<client id>}``) lives in another slot; it is informational,
so it is written and compared in single-slot commands of its own, sent in
the same round trip as the session's script.

Two indexes, in slots of their own, are kept the same way, in the same
round trips: the user index (``<prefix>u:{<user id>}``, a sorted set of the
user's session ids scored by expiry, itself expiring with its last session)
and the expiry index (``<prefix>x:{<n>}``, :attr:`RedisStore.expiry_shards`
sorted sets of ``session id, client id, user id`` scored by expiry), which
:meth:`RedisStore.cleanup` reads to announce expired sessions without a
scan of all keys or keyspace notifications. Scores are Redis's clock.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import os
import secrets
import threading
import time
import typing as t
import weakref
import zlib

from ..exceptions import SessionLockTimeout
from ..exceptions import StoreUnavailable
from ..logging import logger
from .base import ACTIVE_EVERY
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
    return {1, now[1], now[2], redis.call('PTTL', KEYS[2]), redis.call('GET', KEYS[2])}
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
# max age ms, deadline in Redis ms or '', '1' to keep a live record's expiry.
# Past the deadline the client has given up waiting for the answer and
# reported the save as failed, so the script writes nothing (and lets the
# lock go: nobody will use it).
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
if ARGV[5] == '1' and redis.call('PTTL', KEYS[2]) > 0 then
    redis.call('SET', KEYS[2], ARGV[2], 'KEEPTTL')
else
    redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
end
redis.call('DEL', KEYS[1])
wake(KEYS[3], KEYS[4])
return 1 - existed
"""

# KEYS: lock, session, waited, wake list. ARGV: token, touch ms or '', the
# record with ``last_active`` moved or '' (written only if it still exists).
_RELEASE = _WAKE + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then
    if ARGV[3] ~= '' and redis.call('EXISTS', KEYS[2]) == 1 then
        redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
    else
        redis.call('PEXPIRE', KEYS[2], ARGV[2])
    end
end
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

# The indexes, each in its own slot, scored by expiry in Redis's clock (ms).
# KEYS: index. ARGV: ms to expiry, member, a member to replace or '', '1' to
# drop expired members and let the index expire with its last member.
_INDEX = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] ~= '' then redis.call('ZREM', KEYS[1], ARGV[3]) end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
if ARGV[4] == '1' then
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
    local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
    redis.call('PEXPIREAT', KEYS[1], last[2])
end
"""
# KEYS: index. ARGV: member, score or ''. Removes the member, or only if it
# has not been pushed past ``score`` since (a session saved again).
_UNINDEX = """
if ARGV[2] ~= '' then
    local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
    if not score or tonumber(score) > tonumber(ARGV[2]) then return 0 end
end
return redis.call('ZREM', KEYS[1], ARGV[1])
"""
# KEYS: user index. Drops expired members; returns Redis's time and the rest.
_MEMBERS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
# KEYS: expiry index. ARGV: batch. Returns Redis's time (ms) and the members
# due, with their scores.
_DUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {now, redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[1])}
"""

#: Locks of failed calls remembered at most; more are left to expire.
_MAX_UNSURE = 1000
#: Seconds between attempts to free them.
_FREE_EVERY = 0.1
#: Locks held by this store object whose fence is remembered at most.
_MAX_HELD = 10000
#: Longest single BLPOP, in seconds, when the client has no socket timeout.
_LONGEST_BLOCK = 5.0
#: Seconds a release may wait for a round trip of this process to go with.
_LINGER = 0.002
#: Seconds without releases after which the sender waits to be woken.
_PARK_AFTER = 1.0
#: A read-only touch is left out if the record's expiry was pushed back less
#: than this long ago (and less than a hundredth of its lifetime).
_TOUCH_EVERY = 1.0

_Step = tuple["Script", list[str], list[t.Union[str, int]]]


class _Release(t.NamedTuple):
    session_id: str
    token: str
    steps: list[_Step]
    queued: float


class _Held(t.NamedTuple):
    # Redis's clock at the take (ms) and ours then: Redis's clock now is
    # estimated from these, never read in a round trip of its own.
    redis_ms: float
    taken: float
    # The record as locked: a touch refreshes its mapping and indexes in the
    # same round trip, and a save keeps its ``created`` and ``user_agent``.
    record: Record | None
    # Milliseconds the record had left to live then.
    ttl: int

    def now(self) -> float:
        """Redis's clock now, in seconds, estimated from the take."""
        return (self.redis_ms + (time.monotonic() - self.taken) * 1000) / 1000


def _flush_at_exit(ref: weakref.ref[RedisStore]) -> None:
    store = ref()
    if store is not None:
        with contextlib.suppress(StoreUnavailable):  # then the leases free them
            store._flush()


def _reset_in_child(ref: weakref.ref[RedisStore]) -> None:
    store = ref()
    if store is not None:
        store._reset_queue()


def _touched(held: _Held, max_age: float) -> bool:
    """Whether the record's expiry was pushed back to ``max_age`` so lately
    (within a second, and a hundredth of ``max_age``) that a read-only touch
    can be left out.
    """
    pushed = max_age - held.ttl / 1000 + time.monotonic() - held.taken
    return 0 <= pushed < min(_TOUCH_EVERY, max_age / 100)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _record(value: bytes | str | None) -> Record | None:
    if value is None:
        return None
    # Undecodable bytes stay (as surrogates) for the bridge to refuse as a
    # corrupt record; raising here would leave the lock just taken stuck.
    text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
    head, _, data = text.partition("\n")
    fields = head.split("\t", 4)
    if len(fields) != 5:  # written before the header had more than the client
        return Record(head, data)
    client_id, user_id, created, last_active, user_agent = fields
    try:
        times = float(created), float(last_active)
    except ValueError:
        times = 0.0, 0.0
    return Record(client_id, data, user_id or None, *times, user_agent)


def _value(record: Record) -> str:
    """The stored value: a header line (tab-separated; ids hold no tab or
    newline, the user agent is made not to), then the data. One GET reads all.
    """
    agent = " ".join(record.user_agent.split())
    head = (
        f"{record.client_id}\t{record.user_id or ''}\t{record.created:.3f}"
        f"\t{record.last_active:.3f}\t{agent}"
    )
    return f"{head}\n{record.data}"


def _member(session_id: str, record: Record) -> str:
    """A session's entry in the expiry index: what its end is announced with."""
    return f"{session_id}\t{record.client_id}\t{record.user_id or ''}"


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

    Redis expires keys itself; :meth:`cleanup` reads the expiry index to
    report (and unindex) the sessions that expired since it last ran, so
    their end is announced on time.

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

    #: Sorted sets the expiry index is spread over (each its own slot, so on
    #: a cluster they spread over the shards). Changing it orphans entries.
    expiry_shards = 16
    #: Expired sessions :meth:`cleanup` handles per round trip and shard.
    cleanup_batch = 500

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
        # redis-py's cluster client forgets each start-up node a connection
        # to failed; with every node down once, it has none left and never
        # reconnects. The store gives them back after each failure.
        nodes = getattr(getattr(self.client, "nodes_manager", None), "startup_nodes", None)
        self._startup_nodes = dict(nodes) if nodes else {}
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
        self._index = self.client.register_script(_INDEX)
        self._unindex = self.client.register_script(_UNINDEX)
        self._members = self.client.register_script(_MEMBERS)
        self._due = self.client.register_script(_DUE)
        self._scripts = (
            self._lock, self._renew, self._save, self._release, self._delete,
            self._pass_on, self._touch_client, self._link_client, self._undo_link,
            self._unlink_client, self._index, self._unindex, self._members, self._due,
        )
        self._sender_pid = 0
        self._reset_queue()
        # A child forked while a round trip carried releases must not wait
        # for it, nor inherit a mutex some thread of the parent held.
        os.register_at_fork(after_in_child=functools.partial(_reset_in_child, weakref.ref(self)))
        #: token -> what this store knows of a lock it holds.
        self._held: dict[str, _Held] = {}
        #: token -> session id, of calls that failed and may have left a
        #: lock behind.
        self._unsure: dict[str, str] = {}
        self._next_free = 0.0

    # -- keys --------------------------------------------------------------

    def __repr__(self) -> str:
        # Where, and nothing more: older redis-py print the password in their
        # own repr.
        kwargs = getattr(getattr(self.client, "connection_pool", None), "connection_kwargs", {})
        if "path" in kwargs:
            where = f"unix:{kwargs['path']}"
        elif "host" in kwargs:
            where = f"{kwargs['host']}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
        else:
            where = type(self.client).__name__  # a cluster, or a client of another kind
        return f"<{type(self).__name__} {where} prefix={self.prefix!r}>"

    def _keys(self, session_id: str) -> list[str]:
        """Lock, record, waited marker and wake list of a session: one slot."""
        tag = f"{self.prefix}{{{session_id}}}"
        return [f"{tag}:l", f"{tag}:s", f"{tag}:q", f"{tag}:w"]

    def _client_key(self, client_id: str) -> str:
        return f"{self.prefix}c:{{{client_id}}}"

    def _user_key(self, user_id: str) -> str:
        return f"{self.prefix}u:{{{user_id}}}"

    def _expiry_key(self, session_id: str) -> str:
        shard = zlib.crc32(session_id.encode()) % self.expiry_shards
        return f"{self.prefix}x:{{{shard}}}"

    def _index_steps(
        self, session_id: str, record: Record, old: Record | None, age: int
    ) -> list[_Step]:
        """Put the session in its user's index and the expiry index, expiring
        ``age`` ms from now; out of its former user's, if that changed.
        """
        steps: list[_Step] = []
        if old is not None and old.user_id and old.user_id != record.user_id:
            steps.append((self._unindex, [self._user_key(old.user_id)], [session_id, ""]))
        if record.user_id:
            steps.append((self._index, [self._user_key(record.user_id)], [age, session_id, "", 1]))
        member = _member(session_id, record)
        before = _member(session_id, old) if old is not None else member
        steps.append((
            self._index, [self._expiry_key(session_id)],
            [age, member, "" if before == member else before, 0],
        ))
        return steps

    # -- calling Redis -----------------------------------------------------

    def _call(self, work: t.Callable[[], _T]) -> _T:
        try:
            return work()
        except self._errors as e:
            if self._startup_nodes:
                self.client.nodes_manager.startup_nodes.update(self._startup_nodes)  # type: ignore[union-attr]
            raise StoreUnavailable(f"Redis store: {e}", original_error=e) from e

    def _round_trip(self, steps: list[_Step], wait: bool = False) -> list[t.Any]:
        """Run scripts in one round trip (a pipeline), then ``WAIT`` for the
        replicas if asked. Returns the scripts' replies. Queued releases go
        first in the same round trip (see :meth:`release`).

        :raise StoreUnavailable: Redis failed, or fewer replicas than
            ``wait_replicas`` confirmed the writes.
        """
        queued = self._take_queued()
        sent = [step for release in queued for step in release.steps] + steps
        if not sent:
            return []

        def work() -> list[t.Any]:
            if len(sent) == 1 and not wait:
                # One script: redis-py's command path costs about a sixth
                # less CPU than a pipeline of one.
                script, keys, args = sent[0]
                try:
                    return [
                        self.client.execute_command(  # type: ignore[no-untyped-call]
                            "EVALSHA", script.sha, len(keys), *keys, *args
                        )
                    ]
                except self._no_script:
                    self._load_scripts()
            replies: list[t.Any] = [None] * len(sent)
            todo = list(range(len(sent)))
            confirmed = self.wait_replicas
            for _attempt in range(2):
                pipe = self.client.pipeline(transaction=False)
                for i in todo:
                    script, keys, args = sent[i]
                    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                if wait:
                    pipe.wait(self.wait_replicas, _ms(self.wait_timeout))
                answers = pipe.execute(raise_on_error=False)
                for i, answer in zip(todo, answers):
                    replies[i] = answer
                if wait:
                    confirmed = min(confirmed, answers[-1])
                # A server that restarted or flushed its scripts ran none of
                # them; the others ran (on a cluster, other shards did): only
                # the refused ones go again, or a save would run twice.
                todo = [i for i in todo if isinstance(replies[i], self._no_script)]
                if not todo:
                    break
                self._load_scripts()
            for reply in replies[len(sent) - len(steps):]:
                if isinstance(reply, Exception):
                    raise reply
            return [*replies, confirmed] if wait else replies

        try:
            replies = self._call(work)
        except StoreUnavailable:
            self._unsure_of(queued)
            raise
        finally:
            if queued:
                self._landed(queued)
        if any(isinstance(r, Exception) for r in replies[: len(sent) - len(steps)]):
            self._unsure_of(queued)
        replies = replies[len(sent) - len(steps):]
        if wait and replies[-1] < self.wait_replicas:
            # The master has the write; a failover may lose it or keep it.
            raise StoreUnavailable(
                f"Redis store: {replies[-1]} of {self.wait_replicas} replicas"
                f" confirmed the write within {self.wait_timeout:g}s",
                outcome_unknown=True,
            )
        return replies[: len(steps)]

    def _load_scripts(self) -> None:
        """Load the scripts again: Redis restarted or flushed them."""
        for script in self._scripts:
            script.sha = _text(self.client.script_load(script.script))

    # -- releases: queued for this process's next round trip ----------------

    def _queue(self, release: _Release) -> None:
        with self._queue_ready:
            self._queued.append(release)
            if self._sender_pid != os.getpid():
                # A daemon thread (a green thread once eventlet or gevent
                # patched threading), started in each process; what it has
                # not sent when the process exits goes then.
                self._sender_pid = os.getpid()
                threading.Thread(
                    target=self._send_queued, name="flask_session_bridge releases", daemon=True
                ).start()
                atexit.register(_flush_at_exit, weakref.ref(self))
            if len(self._queued) == 1:
                self._queue_ready.notify()

    def _reset_queue(self) -> None:
        #: Releases waiting to go with this process's next round trip.
        self._queued: list[_Release] = []
        #: Sessions whose release a round trip is carrying now: a lock of
        #: one of them from this process waits for that round trip.
        self._in_flight: list[str] = []
        mutex = threading.Lock()
        self._queue_ready = threading.Condition(mutex)  # wakes the sender
        self._landed_any = threading.Condition(mutex)  # wakes locks after a release

    def _flush(self) -> None:
        """Send the queued releases now: a read sees what this process did
        (round trips of the store's own take them along).
        """
        if self._queued:
            self._round_trip([])

    def _take_queued(self) -> list[_Release]:
        if not self._queued:
            return []
        with self._queue_ready:
            queued, self._queued = self._queued, []
            self._in_flight.extend(release.session_id for release in queued)
        return queued

    def _landed(self, queued: list[_Release]) -> None:
        with self._queue_ready:
            for release in queued:
                self._in_flight.remove(release.session_id)
            self._landed_any.notify_all()

    def _after_release(self, session_id: str, deadline: float) -> None:
        """Wait while another round trip carries this session's release:
        on another connection, a lock could overtake it and wait for it.
        Past ``deadline`` the lock tries anyway (and waits as any waiter).
        """
        if session_id in self._in_flight:
            with self._landed_any:
                while session_id in self._in_flight:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._landed_any.wait(left):
                        return

    def _send_queued(self) -> None:
        """Send the releases no round trip took along within ``_LINGER``.
        While round trips keep taking them, it looks every ``_LINGER``
        without being woken at each release; after a second with none, it
        waits to be woken by the next.
        """
        last_seen = time.monotonic()
        while True:
            with self._queue_ready:
                if not self._queued and time.monotonic() - last_seen > _PARK_AFTER:
                    while not self._queued:
                        self._queue_ready.wait()
                oldest = self._queued[0].queued if self._queued else None
            now = time.monotonic()
            if oldest is None:
                time.sleep(_LINGER)
                continue
            last_seen = now
            if oldest + _LINGER > now:
                time.sleep(oldest + _LINGER - now)
                continue
            try:
                self._flush()
            except StoreUnavailable as e:
                logger.warning("could not release session locks (freed later): %s", e)
            except Exception:  # the sender must outlive any one failure
                logger.exception("releasing session locks failed")

    def _unsure_of(self, releases: list[_Release]) -> None:
        for release in releases:
            self._remember_unsure(release.session_id, release.token)

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
            (self._release, self._keys(session_id), [token, "", ""])
            for token, session_id in unsure
        ])
        for token, _session_id in unsure:
            self._unsure.pop(token, None)

    # -- the store protocol ------------------------------------------------

    def get(self, session_id: str) -> Record | None:
        self._flush()
        return _record(self._call(lambda: self.client.get(self._keys(session_id)[1])))

    def get_session_id(self, client_id: str) -> str | None:
        self._flush()
        value = self._call(lambda: self.client.get(self._client_key(client_id)))
        return _text(value) if value is not None else None

    def lock(self, session_id: str, expire: float, timeout: float) -> tuple[str, Record | None]:
        if self._unsure:
            self._free_unsure()
        token = secrets.token_hex(16)
        keys = self._keys(session_id)
        deadline = time.monotonic() + timeout
        delay = 0.001
        self._after_release(session_id, deadline)
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
                record = _record(reply[4] if len(reply) > 4 else None)
                if len(self._held) >= _MAX_HELD:  # locks given up without a word
                    self._held.clear()  # they lose their fence: their saves are unfenced
                self._held[token] = _Held(
                    seconds * 1000 + micros / 1000, time.monotonic(), record, int(reply[3])
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
        (renewed,) = self._round_trip([(self._renew, keys, [token, _ms(expire)])])
        return bool(renewed)

    def save(self, session_id: str, record: Record, max_age: float, token: str, link: bool) -> bool:
        held = self._held.pop(token, None)
        deadline = ""
        if held is not None:
            # Redis's clock now, as estimated from the take, plus the fence:
            # the script runs by then, or the client has not yet given up.
            elapsed = time.monotonic() - held.taken
            deadline = str(int(held.redis_ms + (elapsed + self._fence) * 1000))
        old = held.record if held is not None else None
        now = held.now() if held is not None else time.time()
        if old is not None:
            record = dataclasses.replace(
                record,
                created=old.created, user_agent=old.user_agent, last_active=now
            )
        else:
            record = dataclasses.replace(record, created=now, last_active=now)
        age = _ms(max_age)
        # A socket's write soon after the last push of the expiry keeps it,
        # as a read-only touch would (see :func:`_touched`), and leaves the
        # mapping and the indexes, which are as they were, alone.
        keep = (
            not link and held is not None and old is not None
            and _member(session_id, record) == _member(session_id, old)
            and _touched(held, max_age)
        )
        steps: list[_Step] = [(
            self._save, self._keys(session_id),
            [token, _value(record), age, deadline, "1" if keep else ""],
        )]
        # The mapping and the indexes are in other slots: they go in the same
        # round trip, and are put back if Redis refused the save.
        mapping = [self._client_key(record.client_id)]
        if not keep:
            step = self._link_client if link else self._touch_client
            steps.append((step, mapping, [session_id, age]))
            steps.extend(self._index_steps(session_id, record, old, age))
        try:
            reply, *others = self._round_trip(steps, self.wait_replicas > 0)
        except StoreUnavailable as e:
            self._remember_unsure(session_id, token)
            # The fence keeps Redis from applying the save later, but it may
            # have run before the reply was lost.
            e.outcome_unknown = True
            raise
        if reply < 0 and link:
            before = others[0]  # what the mapping named before
            undo: list[str | int] = [session_id, "" if before is None else _text(before), age]
            self._call(lambda: self._undo_link(keys=mapping, args=undo))
        if reply < 0 and old is None:
            self._forget(session_id, record)
        if reply == -1:
            raise SessionLockTimeout("session lock expired before write-back", session_id)
        if reply == -2:
            raise StoreUnavailable(
                "Redis store: the save reached Redis too late and was not written", session_id
            )
        return bool(reply)

    def release(self, session_id: str, token: str, max_age: float | None) -> None:
        """Queue the release for this process's next round trip (or, within
        2 ms, one of its own): an event that wrote nothing waits for
        one round trip, its lock's, as a plain ``GET`` would. This process's
        next lock of the session comes after it in the same round trip. A
        process that dies with releases queued leaves locks their lease frees.
        """
        held = self._held.pop(token, None)
        record = held.record if held is not None else None
        keys = self._keys(session_id)
        steps: list[_Step] = [(self._release, keys, [token, "", ""])]
        if max_age is not None and held is not None and record is not None:
            now = held.now()
            # Read-only work rewrites the record at most once a minute, and
            # pushes its expiry back at most once a second.
            moved = now - record.last_active >= ACTIVE_EVERY
            if moved or not _touched(held, max_age):
                touch = _ms(max_age)
                value = _value(dataclasses.replace(record, last_active=now)) if moved else ""
                steps = [
                    (self._release, keys, [token, touch, value]),
                    (self._touch_client, [self._client_key(record.client_id)], [session_id, touch]),
                    *self._index_steps(session_id, record, record, touch),
                ]
        self._queue(_Release(session_id, token, steps, time.monotonic()))

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
            self._forget(session_id, record)
        return record

    def _forget(self, session_id: str, record: Record) -> None:
        """Take a session that is gone out of its mapping and indexes."""
        steps: list[_Step] = [
            (self._unlink_client, [self._client_key(record.client_id)], [session_id]),
            (self._unindex, [self._expiry_key(session_id)], [_member(session_id, record), ""]),
        ]
        if record.user_id:
            steps.append((self._unindex, [self._user_key(record.user_id)], [session_id, ""]))
        self._round_trip(steps)

    def sessions_of(self, user_id: str) -> list[tuple[str, Record]]:
        self._flush()
        key = self._user_key(user_id)
        members = [_text(m) for m in self._call(lambda: self._members(keys=[key]))]
        if not members:
            return []

        def read() -> list[t.Any]:
            pipe = self.client.pipeline(transaction=False)
            for session_id in members:
                pipe.get(self._keys(session_id)[1])
            return list(pipe.execute())

        found = []
        stale: list[_Step] = []
        for session_id, value in zip(members, self._call(read)):
            record = _record(value)
            if record is not None and record.user_id == user_id:
                found.append((session_id, record))
            else:  # gone, or another user's since: verified on read
                stale.append((self._unindex, [key], [session_id, ""]))
        if stale:
            self._round_trip(stale)
        return found

    def cleanup(self) -> list[tuple[str, str]]:
        self._flush()
        removed: list[tuple[str, str]] = []
        shards = [f"{self.prefix}x:{{{n}}}" for n in range(self.expiry_shards)]
        while shards:
            replies = self._round_trip([(self._due, [key], [self.cleanup_batch]) for key in shards])
            due = [
                (key, int(now), _text(member))
                for key, (now, members) in zip(shards, replies)
                for member in members
            ]
            # A full batch may have more behind it.
            shards = [
                key for key, (_, members) in zip(shards, replies)
                if len(members) >= self.cleanup_batch
            ]
            if due:
                removed.extend(self._sweep(due))
        return removed

    def _sweep(self, due: list[tuple[str, int, str]]) -> list[tuple[str, str]]:
        """Unindex the sessions of the expiry index entries ``due`` that are
        gone; return them.
        """
        ids = [member.split("\t", 1)[0] for _, _, member in due]

        def ttls() -> list[t.Any]:
            pipe = self.client.pipeline(transaction=False)
            for session_id in ids:
                pipe.pttl(self._keys(session_id)[1])
            return list(pipe.execute())

        steps: list[_Step] = []
        gone: list[tuple[int, str, str]] = []
        for (key, now, member), ttl in zip(due, self._call(ttls)):
            if int(ttl) >= 0:
                # Still there (a touch whose index step failed): its entry
                # moves to its real expiry.
                steps.append((self._index, [key], [max(1, int(ttl)), member, "", 0]))
                continue
            session_id, client_id, user_id = [*member.split("\t", 2), "", ""][:3]
            # Each only if not pushed back since this read (saved again).
            gone.append((len(steps), session_id, client_id))
            steps.append((self._unindex, [key], [member, now]))
            if user_id:
                steps.append((self._unindex, [self._user_key(user_id)], [session_id, now]))
        replies = self._round_trip(steps) if steps else []
        return [(session_id, client_id) for at, session_id, client_id in gone if replies[at]]
