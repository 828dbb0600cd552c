"""Who may call the admin routes: ``require_role``, and the council's management of roles.

Every ``/v1/admin`` route takes ``require_role(...)``: no bearer token is a 401,
a signed-in address without one of the named roles a 403 problem naming the
roles it needs. Roles live in ``foundation_roles``; the settings grant the
initial ones at start-up (``EXCHANGE_COUNCIL_ADDRESSES`` …), the council the rest.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials

from exchange.api.problems import problem_responses
from exchange.auth.dependencies import CurrentPrincipal, bearer, current_principal
from exchange.auth.service import Principal
from exchange.db.base import utc_now
from exchange.db.session import DbSession, app_sessionmaker
from exchange.kit.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from exchange.kit.text import Note
from exchange.pool import repository
from exchange.pool.models import FoundationRole
from exchange.pool.schemas import RoleGrantIn, RoleGrantOut, checksummed, role_grant_out
from exchange.pool.service import PoolContext, grant_role, require_roles, revoke_role

COUNCIL = FoundationRole.COUNCIL
REGISTRAR = FoundationRole.REGISTRAR
ASSESSOR = FoundationRole.ASSESSOR
ANY_ROLE = (COUNCIL, REGISTRAR, ASSESSOR)
ADMIN_PROBLEMS = problem_responses(Unauthorized, Forbidden)


def require_role(*roles: FoundationRole) -> Any:
    """A dependency: the signed-in principal, if it holds one of ``roles`` (any signed-in one if none).

    Checked in the request's transaction (``DbSession``), which the route then uses.
    """

    async def signed_in_with_role(principal: CurrentPrincipal, session: DbSession) -> Principal:
        if roles:
            await require_roles(session, principal.address, roles)
        return principal

    return Depends(signed_in_with_role)


def require_role_alone(*roles: FoundationRole) -> Any:
    """``require_role`` in a short transaction of its own, for routes without a request transaction.

    Mints and payouts commit each step in a transaction of its own, and on SQLite,
    where every transaction holds the write lock from its start, a request
    transaction kept open around them would make them wait for it.
    """

    async def signed_in_with_role_alone(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> Principal:
        async with app_sessionmaker(request.app)() as session, session.begin():
            principal = await current_principal(session, credentials)
            await require_roles(session, principal.address, roles)
        return principal

    return Depends(signed_in_with_role_alone)


SignedIn = Annotated[Principal, require_role()]
CouncilAlone = Annotated[Principal, require_role_alone(COUNCIL)]
RegistrarAlone = Annotated[Principal, require_role_alone(REGISTRAR)]
Council = Annotated[Principal, require_role(COUNCIL)]
Registrar = Annotated[Principal, require_role(REGISTRAR)]
Assessor = Annotated[Principal, require_role(ASSESSOR)]
CouncilOrRegistrar = Annotated[Principal, require_role(COUNCIL, REGISTRAR)]
AnyFoundationRole = Annotated[Principal, require_role(*ANY_ROLE)]


def pool_context(request: Request) -> PoolContext:
    context: PoolContext | None = getattr(request.app.state, "pool", None)
    if context is None:
        raise RuntimeError("pool administration is not started: is its lifespan hook installed?")
    return context


Pool = Annotated[PoolContext, Depends(pool_context)]

router = APIRouter(tags=["pool administration: roles"])


@router.get("/v1/pool/roles/mine", summary="My foundation roles", responses=problem_responses(Unauthorized))
async def get_my_roles(principal: CurrentPrincipal, session: DbSession) -> dict[str, object]:
    roles = await repository.active_roles(session, principal.address)
    return {"address": principal.address, "roles": sorted(role.value for role in roles)}


@router.get(
    "/v1/admin/roles", response_model=list[RoleGrantOut], summary="Foundation roles", responses=ADMIN_PROBLEMS
)
async def get_roles(
    _: Council, session: DbSession, include_revoked: Annotated[bool, Query()] = False
) -> list[RoleGrantOut]:
    return [
        role_grant_out(grant)
        for grant in await repository.role_grants(session, include_revoked=include_revoked)
    ]


@router.post(
    "/v1/admin/roles",
    response_model=RoleGrantOut,
    status_code=status.HTTP_201_CREATED,
    summary="Grant a foundation role (council)",
    responses={**ADMIN_PROBLEMS, 200: {"description": "The address already held the role."}},
)
async def post_role(
    body: RoleGrantIn, principal: Council, session: DbSession, response: Response
) -> RoleGrantOut:
    grant, created = await grant_role(
        session,
        address=body.address,
        role=body.role,
        actor=principal.address,
        at=utc_now(),
        reason=body.reason,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return role_grant_out(grant)


@router.delete(
    "/v1/admin/roles/{role}/{address}",
    response_model=RoleGrantOut,
    summary="Revoke a foundation role (council)",
    responses={**ADMIN_PROBLEMS, **problem_responses(NotFound, Conflict, ValidationFailed)},
)
async def delete_role(
    role: FoundationRole,
    address: str,
    principal: Council,
    session: DbSession,
    reason: Annotated[Note | None, Query()] = None,
) -> RoleGrantOut:
    grant = await revoke_role(
        session, address=checksummed(address), role=role, actor=principal.address, at=utc_now(), reason=reason
    )
    return role_grant_out(grant)
