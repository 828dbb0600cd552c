"""Membership over HTTP: applicants apply; the registrar reviews and keeps the register; the council decides.

=====================================================  =====================
route                                                  role
=====================================================  =====================
POST /v1/membership/applications                       any signed-in wallet
GET  /v1/membership/applications/mine                  any signed-in wallet
GET  /v1/admin/membership/applications[/{id}]          council, registrar
POST /v1/admin/membership/applications/{id}/review     registrar
POST /v1/admin/membership/applications/{id}/approve    council
POST /v1/admin/membership/applications/{id}/reject     council
GET  /v1/admin/members[/{address}]                     council, registrar
POST /v1/admin/members/{address}/tier                  registrar
POST /v1/admin/members/{address}/suspend               registrar
POST /v1/admin/members/{address}/reinstate             registrar
POST /v1/admin/members/{address}/expel                 council
=====================================================  =====================
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from exchange.api.dependencies import RowId
from exchange.api.problems import problem_responses
from exchange.auth.dependencies import CurrentPrincipal
from exchange.db.base import utc_now
from exchange.db.session import DbSession
from exchange.kit.errors import (
    ChainRejected,
    ChainUnavailable,
    Conflict,
    NotFound,
    Unauthorized,
    ValidationFailed,
)
from exchange.pool import membership_service as service
from exchange.pool import repository
from exchange.pool.access_routes import ADMIN_PROBLEMS, Council, CouncilOrRegistrar, Pool, Registrar, SignedIn
from exchange.pool.membership_service import MemberChange
from exchange.pool.models import ApplicationStatus, MemberState
from exchange.pool.schemas import (
    ApplicationIn,
    ApplicationOut,
    ApprovalOut,
    ApproveIn,
    MemberChangeOut,
    MemberOut,
    Page,
    ReasonIn,
    ReviewIn,
    TierIn,
    checksummed,
    decode_cursor,
    encode_cursor,
)

router = APIRouter(tags=["pool administration: membership"])
CHAIN_PROBLEMS = problem_responses(NotFound, Conflict, ValidationFailed, ChainRejected, ChainUnavailable)
Limit = Annotated[int, Query(ge=1, le=200)]


@router.post(
    "/v1/membership/applications",
    response_model=ApplicationOut,
    status_code=status.HTTP_201_CREATED,
    summary="Apply to join the pool, for the signed-in wallet",
    responses={
        **problem_responses(Unauthorized, Conflict),
        200: {"description": "This application was already submitted; it is returned unchanged."},
    },
)
async def post_application(
    body: ApplicationIn, principal: SignedIn, session: DbSession, response: Response
) -> ApplicationOut:
    row, created = await service.submit_application(
        session,
        wallet=principal.address,
        data=service.ApplicationData(**body.model_dump()),
        at=utc_now(),
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return ApplicationOut.of(row)


@router.get(
    "/v1/membership/applications/mine",
    response_model=list[ApplicationOut],
    summary="My applications, newest first",
    responses=problem_responses(Unauthorized),
)
async def get_my_applications(principal: CurrentPrincipal, session: DbSession) -> list[ApplicationOut]:
    return [ApplicationOut.of(row) for row in await repository.applications_of(session, principal.address)]


@router.get(
    "/v1/admin/membership/applications",
    response_model=Page[ApplicationOut],
    summary="Membership applications",
    responses=ADMIN_PROBLEMS,
)
async def get_applications(
    _: CouncilOrRegistrar,
    session: DbSession,
    status_filter: Annotated[ApplicationStatus | None, Query(alias="status")] = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> Page[ApplicationOut]:
    after = decode_cursor(cursor, int) if cursor else None
    rows = await repository.applications_page(
        session, status=status_filter.value if status_filter else None, after_id=after, limit=limit + 1
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return Page[ApplicationOut](
        items=[ApplicationOut.of(row) for row in rows],
        next_cursor=encode_cursor(rows[-1].id) if more else None,
    )


@router.get(
    "/v1/admin/membership/applications/{application_id}",
    response_model=ApplicationOut,
    summary="One membership application",
    responses={**ADMIN_PROBLEMS, **problem_responses(NotFound)},
)
async def get_application(application_id: RowId, _: CouncilOrRegistrar, session: DbSession) -> ApplicationOut:
    row = await repository.application(session, application_id)
    if row is None:
        raise NotFound(f"no membership application {application_id}")
    return ApplicationOut.of(row)


@router.post(
    "/v1/admin/membership/applications/{application_id}/review",
    response_model=ApplicationOut,
    summary="Pass a checked application to the council (registrar)",
    responses={**ADMIN_PROBLEMS, **problem_responses(NotFound, Conflict)},
)
async def post_review(
    application_id: RowId, body: ReviewIn, principal: Registrar, session: DbSession
) -> ApplicationOut:
    row = await service.review_application(
        session, application_id=application_id, actor=principal.address, note=body.note, at=utc_now()
    )
    return ApplicationOut.of(row)


@router.post(
    "/v1/admin/membership/applications/{application_id}/approve",
    response_model=ApprovalOut,
    summary="Approve with a tier and admit on the PoolRegistry (council)",
    responses={**ADMIN_PROBLEMS, **CHAIN_PROBLEMS},
)
async def post_approve(
    application_id: RowId, body: ApproveIn, principal: Council, session: DbSession, pool: Pool
) -> ApprovalOut:
    row, member = await service.approve_application(
        session,
        pool,
        application_id=application_id,
        tier=body.tier,
        actor=principal.address,
        note=body.note,
        at=utc_now(),
    )
    return ApprovalOut(application=ApplicationOut.of(row), member=MemberOut.of(member))


@router.post(
    "/v1/admin/membership/applications/{application_id}/reject",
    response_model=ApplicationOut,
    summary="Reject an application (council)",
    responses={**ADMIN_PROBLEMS, **CHAIN_PROBLEMS, **problem_responses(NotFound, Conflict)},
)
async def post_reject(
    application_id: RowId, body: ReasonIn, principal: Council, session: DbSession, pool: Pool
) -> ApplicationOut:
    row = await service.reject_application(
        session,
        pool,
        application_id=application_id,
        actor=principal.address,
        reason=body.reason,
        at=utc_now(),
    )
    return ApplicationOut.of(row)


@router.get(
    "/v1/admin/members",
    response_model=Page[MemberOut],
    summary="The register, as indexed from the PoolRegistry",
    responses=ADMIN_PROBLEMS,
)
async def get_members(
    _: CouncilOrRegistrar,
    session: DbSession,
    status_filter: Annotated[MemberState | None, Query(alias="status")] = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> Page[MemberOut]:
    after = decode_cursor(cursor, str) if cursor else None
    rows = await repository.members_page(
        session, status=status_filter.value if status_filter else None, after=after, limit=limit + 1
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return Page[MemberOut](
        items=[MemberOut.model_validate(row) for row in rows],
        next_cursor=encode_cursor(rows[-1].address) if more else None,
    )


@router.get(
    "/v1/admin/members/{address}",
    response_model=MemberOut,
    summary="One member",
    responses={**ADMIN_PROBLEMS, **problem_responses(NotFound, ValidationFailed)},
)
async def get_member(address: str, _: CouncilOrRegistrar, session: DbSession) -> MemberOut:
    row = await repository.member(session, checksummed(address))
    if row is None:
        raise NotFound(f"{address} is not a member")
    return MemberOut.model_validate(row)


def _change_out(change: MemberChange) -> MemberChangeOut:
    return MemberChangeOut(
        member=MemberOut.of(change.member), changed=change.changed, tx_hashes=list(change.tx_hashes)
    )


@router.post(
    "/v1/admin/members/{address}/tier",
    response_model=MemberChangeOut,
    summary="Move a member to another tier (registrar)",
    responses={**ADMIN_PROBLEMS, **CHAIN_PROBLEMS},
)
async def post_tier(
    address: str, body: TierIn, principal: Registrar, session: DbSession, pool: Pool
) -> MemberChangeOut:
    change = await service.change_tier(
        session,
        pool,
        address=checksummed(address),
        tier=body.tier,
        actor=principal.address,
        reason=body.reason,
        at=utc_now(),
    )
    return _change_out(change)


@router.post(
    "/v1/admin/members/{address}/suspend",
    response_model=MemberChangeOut,
    summary="Suspend a member (registrar)",
    responses={**ADMIN_PROBLEMS, **CHAIN_PROBLEMS},
)
async def post_suspend(
    address: str, body: ReasonIn, principal: Registrar, session: DbSession, pool: Pool
) -> MemberChangeOut:
    change = await service.suspend(
        session, pool, address=checksummed(address), actor=principal.address, reason=body.reason, at=utc_now()
    )
    return _change_out(change)


@router.post(
    "/v1/admin/members/{address}/reinstate",
    response_model=MemberChangeOut,
    summary="Reinstate a suspended member (registrar)",
    responses={**ADMIN_PROBLEMS, **CHAIN_PROBLEMS},
)
async def post_reinstate(
    address: str, body: ReasonIn, principal: Registrar, session: DbSession, pool: Pool
) -> MemberChangeOut:
    change = await service.reinstate(
        session, pool, address=checksummed(address), actor=principal.address, reason=body.reason, at=utc_now()
    )
    return _change_out(change)


@router.post(
    "/v1/admin/members/{address}/expel",
    response_model=MemberChangeOut,
    summary="Expel a member and revoke its licence (council)",
    responses={**ADMIN_PROBLEMS, **CHAIN_PROBLEMS},
)
async def post_expel(
    address: str, body: ReasonIn, principal: Council, session: DbSession, pool: Pool
) -> MemberChangeOut:
    change = await service.expel(
        session, pool, address=checksummed(address), actor=principal.address, reason=body.reason, at=utc_now()
    )
    return _change_out(change)
