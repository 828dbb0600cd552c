"""The domain error tree: what went wrong, in the service's terms.

Services and repositories raise these; they never build HTTP responses. The one
mapping to RFC 9457 ``application/problem+json`` lives in
``exchange.api.problems``, which reads the class attributes below::

    DomainError                  (base: never raised directly)
    ├── ValidationFailed     422   the request is well-formed but breaks a domain rule
    ├── NotFound             404   the named resource does not exist (or is not visible)
    ├── Conflict             409   the request clashes with current state (duplicate id, stale nonce)
    ├── Unauthorized         401   no valid credentials were presented
    ├── Forbidden            403   the caller is known but not allowed to do this
    ├── RateLimited          429   too many requests; carries ``retry_after_seconds``
    ├── ChainRejected        409   a contract reverted because of what the caller asked;
    │                              carries the custom error's ``error_name`` and ``error_args``
    ├── ChainUnavailable     503   the chain node cannot be reached or did not answer in time
    └── DatabaseUnavailable  503   the database cannot be reached, or dropped the connection

``ChainRejected`` is a 409 rather than a 422: a revert is the chain's current
state refusing the request (balance too low, licence already held, nonce used),
which is what 409 Conflict means; input that is wrong in itself is caught and
reported as ``ValidationFailed`` before any transaction is sent.

Problem ``type`` URIs are absolute, ``{PROBLEM_TYPE_BASE}{type_slug}``, as RFC 9457
recommends; they identify the kind of error and are not meant to be dereferenced.
Each error carries a human-readable ``detail`` and optional ``extra`` members,
rendered as problem extension members (so their names must not shadow the
standard members ``type``, ``title``, ``status``, ``detail`` and ``instance``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

PROBLEM_TYPE_BASE = "https://errors.patent-pool.example/"


def error_line(error: BaseException) -> str:
    """The first line of ``error``'s message (a driver's may run to several), else its type's name."""
    return next(iter(str(error).splitlines()), "") or type(error).__name__


STANDARD_PROBLEM_MEMBERS = frozenset({"type", "title", "status", "detail", "instance"})


class DomainError(Exception):
    """Base of every error the service reports to a client as a problem document."""

    status: ClassVar[int] = 500
    type_slug: ClassVar[str] = "domain-error"
    title: ClassVar[str] = "Domain error"
    # A refusal that the same request, sent again, may get past (a race it lost): an
    # idempotency key is released for it rather than kept with it, as for 429 and 5xx.
    transient: ClassVar[bool] = False
    # Seconds a client should wait before sending it again, sent as ``Retry-After`` (and
    # documented so); ``RateLimited`` computes its own per refusal.
    retry_after_s: ClassVar[int | None] = None

    def __init__(self, detail: str, *, extra: Mapping[str, object] | None = None) -> None:
        super().__init__(detail)
        clashing = STANDARD_PROBLEM_MEMBERS.intersection(extra or {})
        if clashing:
            raise ValueError(f"extra members {sorted(clashing)} would shadow standard problem members")
        self.detail = detail
        self.extra: dict[str, object] = dict(extra or {})

    @classmethod
    def type_uri(cls) -> str:
        return f"{PROBLEM_TYPE_BASE}{cls.type_slug}"

    def response_headers(self) -> dict[str, str]:
        """HTTP headers the response must carry (``Retry-After``, ``WWW-Authenticate``)."""
        return {} if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(detail={self.detail!r}, extra={self.extra!r})"


class ValidationFailed(DomainError):
    status = 422
    type_slug = "validation-failed"
    title = "Validation failed"


class NotFound(DomainError):
    status = 404
    type_slug = "not-found"
    title = "Not found"


class Conflict(DomainError):
    status = 409
    type_slug = "conflict"
    title = "Conflict"


class Unauthorized(DomainError):
    status = 401
    type_slug = "unauthorized"
    title = "Unauthorized"

    def __init__(
        self,
        detail: str,
        *,
        challenge: str = "Bearer",
        extra: Mapping[str, object] | None = None,
    ) -> None:
        """``challenge`` is the ``WWW-Authenticate`` value naming the scheme the caller must use:
        every 401 carries one (RFC 9110, 15.5.2), the service's bearer sessions unless told."""
        super().__init__(detail, extra=extra)
        self.challenge = challenge

    def response_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": self.challenge}


class Forbidden(DomainError):
    status = 403
    type_slug = "forbidden"
    title = "Forbidden"


class RateLimited(DomainError):
    status = 429
    type_slug = "rate-limited"
    title = "Too many requests"

    def __init__(
        self,
        detail: str,
        *,
        retry_after_seconds: int,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        if retry_after_seconds < 0:
            raise ValueError("retry_after_seconds must not be negative")
        super().__init__(detail, extra={**(extra or {}), "retry_after_seconds": retry_after_seconds})
        self.retry_after_seconds = retry_after_seconds

    def response_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


class ChainRejected(DomainError):
    """A contract call reverted with a custom error the caller caused.

    ``error_args`` maps the error's ABI parameter names to values. Integers are
    rendered as decimal strings (uint256 values do not fit a JSON number that
    JavaScript clients read exactly) and bytes as ``0x``-hex.
    """

    status = 409
    type_slug = "chain-rejected"
    title = "Rejected by the contract"

    def __init__(
        self,
        detail: str,
        *,
        error_name: str,
        error_args: Mapping[str, object] | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        self.error_name = error_name
        self.error_args: dict[str, object] = dict(error_args or {})
        super().__init__(
            detail,
            extra={
                **(extra or {}),
                "error_name": error_name,
                "error_args": {name: _json_safe(value) for name, value in self.error_args.items()},
            },
        )


class ChainUnavailable(DomainError):
    status = 503
    type_slug = "chain-unavailable"
    title = "Chain unavailable"


class DatabaseUnavailable(DomainError):
    """The database could not be reached, or dropped the connection: nothing the caller did."""

    status = 503
    type_slug = "database-unavailable"
    title = "Database unavailable"
    retry_after_s = 5


def _json_safe(value: object) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value
