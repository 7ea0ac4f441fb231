"""The leader lease of distributed mode on Redis, and the mapping of a lost Redis
connection to :class:`BusUnavailable` that every Redis call of the bus goes through."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from store.errors import BusUnavailable

log = logging.getLogger(__name__)

_REFRESH_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


@contextmanager
def guard(what: str) -> Iterator[None]:
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as error:
        log.warning("redis unavailable during %s: %s", what, error)
        raise BusUnavailable(f"redis unavailable during {what}: {error}") from error


class RedisLeaderLock:
    """A lease on ``{prefix}:lock:{name}`` owned through a random token; only the
    owner can refresh or release it, and it lapses ``ttl_s`` after the last
    acquire or refresh (a dead leader is replaced within ``ttl_s``)."""

    def __init__(self, client: redis.Redis, key: str, name: str, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self.name = name
        self.ttl_s = ttl_s
        self._client = client
        self._key = key
        self._token = uuid.uuid4().hex
        self._refresh = client.register_script(_REFRESH_LUA)
        self._release = client.register_script(_RELEASE_LUA)

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    def acquire(self, blocking: bool = False, timeout: float | None = None) -> bool:
        """Take the lease; with ``blocking``, wait (up to ``timeout`` s) for it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with guard("lock acquire"):
                if self._client.set(self._key, self._token, nx=True, px=self._ttl_ms):
                    return True
            if not blocking or (deadline is not None and time.monotonic() >= deadline):
                return False
            time.sleep(min(0.1, self.ttl_s / 4))

    def refresh(self) -> bool:
        """Extend the lease by ``ttl_s`` if it is still ours (atomic check-and-set)."""
        with guard("lock refresh"):
            extended = self._refresh(keys=[self._key], args=[self._token, self._ttl_ms])
        return bool(extended)

    def release(self) -> None:
        """Give the lease up if it is still ours; a Redis outage is only logged."""
        try:
            with guard("lock release"):
                self._release(keys=[self._key], args=[self._token])
        except BusUnavailable:
            log.warning("could not release lock %s; it lapses in %.1f s", self.name, self.ttl_s)
