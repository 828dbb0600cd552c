"""Token-bucket rate limits per account and per client IP, answered with 429 and ``Retry-After``.

Each key (``account:0xAb…`` or ``ip:127.0.0.1``) has a bucket of ``burst``
tokens refilled at ``rate_per_s``; a request takes one token (a batch of orders,
one per order) or is refused with the seconds until they are back. A request
charged to two buckets gives back what the first gave if the second refuses
(``refund``): one key's refused work does not spend another key's tokens. Buckets
live in this process: with several API processes each would allow the full
rate, and the buckets would move to PostgreSQL (one row per key, updated with
the same arithmetic in one UPDATE).
Idle full buckets are dropped, so memory follows the active keys only.

An IP's bucket is keyed by :func:`client_host`, the socket peer (an IPv6 peer
by its /64): forwarded headers are not trusted. :func:`charge_client_ip` takes a
request's token from one of the app's own per-IP limiters (``app.state``).
"""

from __future__ import annotations

import functools
import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.types import Scope

from exchange.kit.errors import RateLimited

_PRUNE_EVERY = 10_000


def client_host(connection: HTTPConnection | Scope) -> str:
    """Who the peer of a request, a WebSocket or their ASGI scope is, for its IP's bucket: an
    IPv4 address (also when written as IPv4-mapped IPv6), or an IPv6 address's /64 network,
    since a host is given a whole /64 and can rotate through its 2^64 addresses. "unknown"
    when the server does not say; a peer that is not an IP address (a Unix socket) as given."""
    scope = connection.scope if isinstance(connection, HTTPConnection) else connection
    client = scope.get("client")
    if client is None:
        return "unknown"
    return _ip_bucket(str(client[0]))


@functools.lru_cache(maxsize=4096)  # parsed once per peer, not once per request
def _ip_bucket(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return host


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Buckets of one kind (per account, or per IP)."""

    def __init__(self, rate_per_s: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least one")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._calls = 0

    def retry_after(self, key: str, tokens: int = 1) -> float:
        """Take ``tokens`` (1 to ``burst``) for ``key``: 0 if allowed, else the seconds until they are in."""
        if not 1 <= tokens <= self.burst:
            raise ValueError(f"a request takes between 1 and {self.burst} tokens, not {tokens}")
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate_per_s)
            bucket.updated = now
        self._calls += 1
        if self._calls % _PRUNE_EVERY == 0:
            self._prune(now)
        if bucket.tokens >= tokens:
            bucket.tokens -= tokens
            return 0.0
        return (tokens - bucket.tokens) / self.rate_per_s

    def check(self, key: str, what: str, tokens: int = 1) -> None:
        """Raise ``RateLimited`` (429, ``Retry-After`` in whole seconds) when ``key`` lacks ``tokens``."""
        wait_s = self.retry_after(key, tokens)
        if wait_s > 0:
            raise RateLimited(
                f"too many requests for {what}: at most {self.rate_per_s:g} per second "
                f"(bursts of {self.burst}); retry in {wait_s:.2f} s",
                retry_after_seconds=max(1, math.ceil(wait_s)),
            )

    def refund(self, key: str, tokens: int) -> None:
        """Give back ``tokens`` just taken for ``key`` by a request another bucket then refused."""
        bucket = self._buckets.get(key)
        if bucket is not None:  # a dropped bucket was full: nothing to give back
            bucket.tokens = min(float(self.burst), bucket.tokens + tokens)

    def _prune(self, now: float) -> None:
        full_after = self.burst / self.rate_per_s
        for key in [key for key, bucket in self._buckets.items() if now - bucket.updated >= full_after]:
            del self._buckets[key]


def charge_client_ip(connection: HTTPConnection, limiter_name: str, what: str) -> None:
    """Take a token for the client IP of `connection` from the app's limiter ``app.state.<limiter_name>``
    (built with the app, ``exchange.api.app.create_app``), or raise ``RateLimited`` naming `what`."""
    limiter: RateLimiter | None = getattr(connection.app.state, limiter_name, None)
    if limiter is None:
        raise RuntimeError(f"the app has no rate limiter app.state.{limiter_name}: build it with create_app")
    host = client_host(connection)
    limiter.check(f"ip:{host}", f"{what} from {host}")
