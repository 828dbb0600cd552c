"""``CurrentPrincipal``: the dependency every authenticated route takes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from exchange.auth.service import Principal, resolve_token
from exchange.db.base import utc_now
from exchange.db.session import DbSession
from exchange.kit.errors import Unauthorized

bearer = HTTPBearer(auto_error=False, description="A session token from POST /v1/auth/login.")


async def current_principal(
    session: DbSession, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("sign in first: send 'Authorization: Bearer <token>'")
    return await resolve_token(session, credentials.credentials, utc_now())


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
