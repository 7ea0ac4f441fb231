"""The Redis bus of distributed mode.

Keys (``prefix`` defaults to ``smlrec``):
- ``{prefix}:interactions``: stream, one entry per API request, field ``rows`` a
  JSON array of ``[user_id, item_id, ts, event_id(, type, weight)]`` (see
  ``store.stream_format``), or a period cut (field
  ``cut``: ``{"job": ..., "period": ...}``); consumer group ``workers``. The
  worker trims it to what is not yet acknowledged (:meth:`RedisBus.trim`).
- ``{prefix}:active``: pub/sub channel carrying "version V is active".
- ``{prefix}:lock:{name}``: leader leases (value: the owner's random token).
- ``{prefix}:event:{event_id}``: API-side de-duplication marks, kept for the
  de-duplication window (``SMLREC_DEDUP_WINDOW_SECONDS``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.exceptions import ResponseError

from store.dto import Cut, NewInteraction
from store.redis_lock import RedisLeaderLock, guard
from store.stream_format import decode_cut, decode_rows, encode_cut, encode_rows

log = logging.getLogger(__name__)

GROUP = "workers"
EVENT_TTL_S = 300.0  # the default de-duplication window
Entry = tuple[str, list[NewInteraction] | Cut]

# Append a batch as one stream entry unless one of its event ids carries a seen
# mark, then mark its ids: look-up, append and marks in one atomic step, so a
# concurrent request cannot slip in between (two copies of an event never both
# count as accepted), and a failed append leaves no mark behind (the client's
# retry is not told its own rows were duplicates). A mark that cannot be written
# once the entry is appended does not fail the call: the rows are durable, and
# the database still drops repeats.
# KEYS[1]: the stream; KEYS[2..]: the marks of the rows with an event id.
# ARGV[1]: mark TTL (s); ARGV[2]: the rows as a JSON array; ARGV[3..]: for each
# row, the KEYS index of its mark (0: no event id).
# Returns {1, marks not written} when appended, else {0, rows found marked
# (1-based positions)}: nothing was written then.
_APPEND_UNSEEN_LUA = """
local marked = {}
for i = 3, #ARGV do
  local k = tonumber(ARGV[i])
  if k > 0 and redis.call('EXISTS', KEYS[k]) == 1 then marked[#marked + 1] = i - 2 end
end
if #marked > 0 then return {0, marked} end
redis.call('XADD', KEYS[1], '*', 'rows', ARGV[2])
local unmarked = 0
for k = 2, #KEYS do
  local ok = redis.pcall('SET', KEYS[k], '1', 'EX', ARGV[1])
  if type(ok) == 'table' and ok.err then unmarked = unmarked + 1 end
end
return {1, unmarked}
"""


def _next_id(entry_id: str) -> str:
    """The stream id right after ``entry_id`` (``ms-seq`` -> ``ms-(seq+1)``)."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class RedisBus:
    """Bus over one Redis server. Nothing connects until the first command."""

    def __init__(
        self,
        url: str,
        prefix: str = "smlrec",
        socket_timeout: float = 30.0,
        client_name: str | None = None,
        event_ttl_s: float = EVENT_TTL_S,
    ) -> None:
        self.prefix = prefix
        self.event_ttl_s = max(1, int(event_ttl_s))
        self.stream = self.key("interactions")
        self.channel = self.key("active")
        self.forget_channel = self.key("forget")
        self._socket_timeout = socket_timeout
        self.client: redis.Redis = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=5.0,
            socket_timeout=socket_timeout,
            health_check_interval=30,
            protocol=2,  # the reply shapes parsed below
            client_name=client_name or prefix.replace(" ", "_"),  # shows in CLIENT LIST
        )
        self._append_unseen_script = self.client.register_script(_APPEND_UNSEEN_LUA)
        self._group_ready = False
        self._stops: list[Callable[[], None]] = []

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # ---- active version ---------------------------------------------------

    def publish_active(self, version: int) -> None:
        with guard("publish"):
            self.client.publish(self.channel, str(int(version)))

    def subscribe_active(self, callback: Callable[[int], None]) -> Callable[[], None]:
        """Call ``callback(version)`` on a listener thread for every announcement
        made after this returns. The returned function stops the listener."""
        return self._subscribe(self.channel, lambda data: callback(int(data)))

    def publish_forget(self, user_idx: int, user_id: str) -> None:
        with guard("publish"):
            self.client.publish(self.forget_channel, f"{int(user_idx)} {user_id}")

    def subscribe_forget(self, callback: Callable[[int, str], None]) -> Callable[[], None]:
        def handle(data: str) -> None:
            idx, _, user_id = data.partition(" ")
            callback(int(idx), user_id)

        return self._subscribe(self.forget_channel, handle)

    def stream_mark(self) -> str | None:
        with guard("stream mark"):
            newest = self.client.xrevrange(self.stream, count=1)
        return str(newest[0][0]) if newest else None

    def _subscribe(self, channel: str, handle: Callable[[str], None]) -> Callable[[], None]:
        pubsub = self.client.pubsub()
        with guard("subscribe"):
            pubsub.subscribe(channel)
            deadline = time.monotonic() + self._socket_timeout
            while time.monotonic() < deadline:  # wait until the server confirms
                message = pubsub.get_message(timeout=1.0)
                if message is not None and message.get("type") == "subscribe":
                    break
        stop = threading.Event()
        thread = threading.Thread(
            target=self._listen, args=(pubsub, handle, stop), name="smlrec-sub", daemon=True
        )
        thread.start()

        def unsubscribe() -> None:
            if stop.is_set():
                return
            stop.set()
            thread.join(timeout=5.0)
            try:
                pubsub.close()
            except Exception:  # closing a broken connection
                log.debug("error closing pub/sub connection", exc_info=True)

        self._stops.append(unsubscribe)
        return unsubscribe

    @staticmethod
    def _listen(pubsub: Any, handle: Callable[[str], None], stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                message = pubsub.get_message(timeout=0.5)
            except Exception as error:  # the connection dropped: redis-py resubscribes
                if stop.is_set():
                    return
                log.warning("subscription interrupted: %s", error)
                stop.wait(1.0)
                continue
            if message is None or message.get("type") != "message":
                continue
            try:
                handle(str(message["data"]))
            except (TypeError, ValueError):
                log.warning("ignoring malformed message %r", message["data"])
            except Exception:
                log.exception("subscriber failed on message %r", message["data"])

    # ---- interaction stream -----------------------------------------------

    def append(self, rows: Sequence[NewInteraction]) -> int:
        """Append one stream entry holding all ``rows``; returns how many."""
        if not rows:
            return 0
        with guard("append"):
            self.client.xadd(self.stream, {"rows": encode_rows(rows)})
        return len(rows)

    def append_unseen(self, rows: Sequence[NewInteraction]) -> int:
        """Append, as one entry, the rows whose event id is not marked seen (rows
        without one always), and mark those ids, in one atomic step (a Redis
        script); returns how many rows were appended. ``rows`` must not repeat an
        event id. Nothing is appended or marked when the call fails. When some
        ids are marked already, the script writes nothing and names them; the
        rest are sent again (each round drops at least one row)."""
        left = list(rows)
        while left:
            keys = [self.stream]
            slots: list[int] = []
            for row in left:
                if row.event_id is None:
                    slots.append(0)
                else:
                    keys.append(self.key("event", row.event_id))
                    slots.append(len(keys))
            with guard("append"):
                appended, detail = self._append_unseen_script(
                    keys=keys, args=[self.event_ttl_s, encode_rows(left), *slots])
            if appended:
                if detail:
                    log.warning("%d appended event ids left unmarked (the database still "
                                "drops repeats)", detail)
                return len(left)
            marked = {int(position) - 1 for position in detail}
            left = [row for n, row in enumerate(left) if n not in marked]
        return 0

    def append_cut(self, cut: Cut) -> str:
        """Append a period cut; returns its entry id."""
        with guard("append"):
            return str(self.client.xadd(self.stream, {"cut": encode_cut(cut)}))

    def backlog(self) -> int:
        """Entries not yet acknowledged by the worker: not delivered yet, or
        delivered and not stored yet (at least 1 when some wait and Redis cannot
        count them)."""
        with guard("backlog"):
            self._ensure_group()
            info = self._group_info()
            if info is None:
                return int(self.client.xlen(self.stream))
            pending = int(info.get("pending") or 0)
            lag = info.get("lag")
            if lag is not None:
                return pending + int(lag)
            last = self.client.xinfo_stream(self.stream).get("last-generated-id")
            return pending + int(last is not None and last != info.get("last-delivered-id"))

    def trim(self) -> int:
        """Delete the entries every consumer has acknowledged (their rows are
        committed): the stream keeps what is pending or not yet delivered.
        Returns how many were deleted."""
        with guard("trim"):
            self._ensure_group()
            info = self._group_info()
            if info is None or not info.get("last-delivered-id"):
                return 0
            keep_from = _next_id(str(info["last-delivered-id"]))
            if int(info.get("pending") or 0):
                oldest = self.client.xpending_range(self.stream, GROUP, "-", "+", 1)
                if oldest:
                    keep_from = min(keep_from, str(oldest[0]["message_id"]), key=_id_key)
            return int(self.client.xtrim(self.stream, minid=keep_from))

    def _group_info(self) -> dict[str, Any] | None:
        for group in self.client.xinfo_groups(self.stream):
            if group.get("name") == GROUP:
                return dict(group)
        return None

    def persistence_gap(self) -> str | None:
        """What would lose acknowledged entries if Redis restarted (AOF off, or
        fsync left to the OS), or None when the append-only file is on."""
        with guard("persistence check"):
            info = self.client.info("persistence")
        if not int(info.get("aof_enabled", 0)):
            return ("Redis runs without the append-only file (appendonly no): interactions "
                    "acknowledged into the stream are lost if it restarts before the worker "
                    "stores them")
        try:
            fsync = self.client.config_get("appendfsync").get("appendfsync")
        except ResponseError:  # CONFIG may be disabled on a managed Redis
            fsync = None
        if fsync == "no":
            return ("Redis leaves fsync of its append-only file to the OS (appendfsync no): "
                    "up to ~30 s of acknowledged interactions can be lost in a crash")
        return None

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True

    def _read_group(self, consumer: str, count: int, start: str, block_ms: int | None) -> Any:
        try:
            return self.client.xreadgroup(
                GROUP, consumer, {self.stream: start}, count=count, block=block_ms
            )
        except ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            self._group_ready = False  # the stream was deleted: recreate the group
            self._ensure_group()
            return self.client.xreadgroup(
                GROUP, consumer, {self.stream: start}, count=count, block=block_ms
            )

    def read(self, consumer: str, count: int = 100, block_ms: int = 1000) -> list[Entry]:
        """This consumer's unacknowledged entries first (re-delivery after a
        crash); else up to ``count`` new entries, waiting up to ``block_ms``
        (0: don't wait) for the first. Acknowledge with :meth:`ack` once stored."""
        limit_ms = int(max(self._socket_timeout - 1.0, 0.1) * 1000)
        block = min(block_ms, limit_ms) if block_ms > 0 else None
        with guard("read"):
            self._ensure_group()
            entries = self._entries(self._read_group(consumer, count, "0", None))
            if not entries:
                entries = self._entries(self._read_group(consumer, count, ">", block))
        return entries

    def _entries(self, response: Any) -> list[Entry]:
        if not response:
            return []
        found: list[Entry] = []
        gone: list[str] = []
        for _, messages in response:  # RESP2: [[stream, [(id, fields), ...]], ...]
            for entry_id, fields in messages:
                if fields and "rows" in fields:
                    found.append((entry_id, decode_rows(fields["rows"])))
                elif fields and "cut" in fields:
                    found.append((entry_id, decode_cut(fields["cut"])))
                else:
                    gone.append(entry_id)  # deleted or foreign entry: nothing to do
        if gone:
            self.client.xack(self.stream, GROUP, *gone)
        return found

    def ack(self, entry_ids: Sequence[str]) -> int:
        if not entry_ids:
            return 0
        with guard("ack"):
            return int(self.client.xack(self.stream, GROUP, *entry_ids))

    def claim_stale(self, consumer: str, min_idle_ms: int) -> list[Entry]:
        """Take over entries other consumers received at least ``min_idle_ms`` ago
        and never acknowledged (XAUTOCLAIM). They become this consumer's pending
        entries, so the next :meth:`read` delivers them too."""
        claimed: list[Entry] = []
        cursor = "0-0"
        with guard("claim"):
            self._ensure_group()
            while True:
                response = self.client.xautoclaim(
                    self.stream,
                    GROUP,
                    consumer,
                    min_idle_time=min_idle_ms,
                    start_id=cursor,
                    count=100,
                )
                cursor, messages = response[0], response[1]
                claimed.extend(self._entries([(self.stream, messages)]))
                if cursor in ("0-0", b"0-0"):
                    return claimed

    def pending_count(self) -> int:
        """Entries delivered to some consumer and not yet acknowledged."""
        with guard("pending"):
            self._ensure_group()
            summary = self.client.xpending(self.stream, GROUP)
        return int(summary.get("pending", 0)) if isinstance(summary, dict) else 0

    # ---- leader lock ------------------------------------------------------

    def leader_lock(self, name: str, ttl_s: float) -> RedisLeaderLock:
        return RedisLeaderLock(self.client, self.key("lock", name), name, ttl_s)

    # ---- lifecycle --------------------------------------------------------

    def ping(self) -> None:
        with guard("ping"):
            self.client.ping()

    def close(self) -> None:
        """Stop every subscription listener and close the connections."""
        for stop in self._stops:
            stop()
        self._stops.clear()
        self.client.close()
