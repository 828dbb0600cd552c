"""``CurrentPrincipal``: the dependency every authenticated route takes (``CurrentPrincipalAlone``
for a route without a request transaction); ``limit_sign_in``: the per-IP rate limit of the
unauthenticated sign-in routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from exchange.auth.service import Principal, resolve_token
from exchange.db.base import utc_now
from exchange.db.session import DbSession, app_sessionmaker
from exchange.kit.errors import Unauthorized
from exchange.kit.ratelimit import charge_client_ip

bearer = HTTPBearer(auto_error=False, description="A session token from POST /v1/auth/login.")


async def current_principal(
    session: DbSession, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("sign in first: send 'Authorization: Bearer <token>'")
    return await resolve_token(session, credentials.credentials, utc_now())


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def current_principal_alone(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    """``current_principal`` in a short transaction of its own, for routes that keep none open:
    those that read the chain between transactions (on SQLite every transaction holds the write
    lock from its start, and a request transaction would hold it through the chain's answers)."""
    async with app_sessionmaker(request.app)() as session:
        return await current_principal(session, credentials)


CurrentPrincipalAlone = Annotated[Principal, Depends(current_principal_alone)]


async def limit_sign_in(request: Request) -> None:
    """Take a token from the client IP's sign-in bucket, or refuse with 429 and ``Retry-After``.

    The IP is the socket peer: the server does not trust forwarded headers. One bucket per
    IP serves both routes, before any database or chain work is done. The limiter is the
    app's own, built with it (``exchange.api.app.create_app``).
    """
    charge_client_ip(request, "sign_in_limits", "sign-in")
