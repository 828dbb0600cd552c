"""``/v1/auth``: Sign-In with Ethereum. The two unauthenticated routes (nonce, login) share a
per-client-IP rate limit (``auth_rate_ip_*`` settings)."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Depends, Request, Response, status

from exchange.api.dependencies import AppSettings
from exchange.api.problems import problem_responses
from exchange.auth import service
from exchange.auth.dependencies import CurrentPrincipal, limit_sign_in
from exchange.auth.schemas import LoginIn, NonceOut, SessionOut
from exchange.chain.runtime import ChainRuntime
from exchange.db.base import utc_now
from exchange.db.session import DbSession, app_sessionmaker
from exchange.kit.errors import ChainUnavailable, RateLimited, Unauthorized

router = APIRouter(prefix="/v1/auth", tags=["auth"])


def _chain(request: Request) -> ChainRuntime:
    runtime: ChainRuntime = request.app.state.chain
    return runtime


@router.post(
    "/nonce",
    response_model=NonceOut,
    status_code=status.HTTP_201_CREATED,
    summary="Get a sign-in nonce",
    dependencies=[Depends(limit_sign_in)],
    responses=problem_responses(RateLimited),
)
async def post_nonce(request: Request, session: DbSession, settings: AppSettings) -> NonceOut:
    nonce, expires_at = await service.issue_nonce(session, utc_now(), settings.auth_nonce_ttl_s)
    return NonceOut(
        nonce=nonce,
        expires_at=expires_at,
        domain=settings.sign_in_domain,
        chain_id=_chain(request).deployment.chain_id,
    )


@router.post(
    "/login",
    response_model=SessionOut,
    summary="Exchange a signed EIP-4361 message for a session",
    dependencies=[Depends(limit_sign_in)],
    responses=problem_responses(Unauthorized, RateLimited, ChainUnavailable),
)
async def post_login(
    body: LoginIn, request: Request, session: DbSession, settings: AppSettings
) -> SessionOut:
    runtime = _chain(request)
    token, expires_at, address = await service.sign_in(
        session,
        message_text=body.message,
        signature_hex=body.signature,
        domain=settings.sign_in_domain,
        chain_id=runtime.deployment.chain_id,
        chain=runtime,
        now=utc_now(),
        session_ttl_s=settings.auth_session_ttl_s,
        nonce_open=partial(service.nonce_is_open, app_sessionmaker(request.app)),
        allow_http=settings.siwe_allow_http,
    )
    return SessionOut(access_token=token, expires_at=expires_at, address=address)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End the current session",
    responses=problem_responses(Unauthorized),
)
async def post_logout(principal: CurrentPrincipal, session: DbSession) -> Response:
    await service.sign_out(session, principal, utc_now())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", summary="Who am I", responses=problem_responses(Unauthorized))
async def get_me(principal: CurrentPrincipal) -> dict[str, object]:
    return {"address": principal.address, "chain_id": principal.chain_id}
