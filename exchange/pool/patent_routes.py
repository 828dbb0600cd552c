"""Patents over HTTP: registration, assessment, admission, retirement, expiry, mints.

=======================================================  ===================
route                                                    role
=======================================================  ===================
POST /v1/admin/pool/patents                              registrar
GET  /v1/admin/pool/patents/{id}                         any foundation role
POST /v1/admin/pool/patents/{id}/start-assessment        registrar
POST /v1/admin/pool/patents/{id}/assessments             assessor
POST /v1/admin/pool/patents/{id}/decision                registrar
POST /v1/admin/pool/patents/{id}/retire                  registrar
POST /v1/admin/pool/expiry-sweep                         registrar
GET  /v1/admin/pool/mints                                council, registrar
POST /v1/admin/pool/mints/{id}/process                   registrar
=======================================================  ===================

An admission that owes a mint answers with the mint ``pending`` and sends it
right after the response (and the background loop retries it if that fails);
``GET …/patents/{id}`` shows where it stands.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query, Response, status

from exchange.api.dependencies import RowId
from exchange.api.problems import problem_responses
from exchange.chain.pool import MemberStatus
from exchange.db.base import utc_now
from exchange.db.session import DbSession
from exchange.kit.errors import ChainRejected, ChainUnavailable, Conflict, NotFound, ValidationFailed
from exchange.kit.logging import get_logger
from exchange.pool import patent_service as service
from exchange.pool import repository
from exchange.pool.access_routes import (
    ADMIN_PROBLEMS,
    COUNCIL,
    REGISTRAR,
    AnyFoundationRole,
    Assessor,
    CouncilOrRegistrar,
    Pool,
    Registrar,
    RegistrarAlone,
)
from exchange.pool.assessments import format_fraction
from exchange.pool.contribution_service import process_mint
from exchange.pool.models import MintStatus
from exchange.pool.patents import PatentAction, PatentStatus
from exchange.pool.schemas import (
    AssessmentIn,
    AssessmentOut,
    DecisionOut,
    ExpirySweepOut,
    MintOut,
    MoveIn,
    Page,
    PatentDetailOut,
    PatentEventOut,
    PatentIn,
    PatentOut,
    RetireIn,
    decode_cursor,
    encode_cursor,
)
from exchange.pool.service import PoolContext

log = get_logger(__name__)
router = APIRouter(tags=["pool administration: patents"])
MOVE_PROBLEMS = {**ADMIN_PROBLEMS, **problem_responses(NotFound, Conflict, ValidationFailed)}


async def patent_detail(
    session: DbSession, patent_id: str, *, with_assessments: bool, only_expert: str | None = None
) -> PatentDetailOut:
    """A patent with its history; with its assessments (only ``only_expert``'s, if given)."""
    row = await service.load(session, patent_id)
    events = await repository.patent_events(session, row.patent_id)
    assessments = await repository.assessments(session, row.patent_id) if with_assessments else None
    if assessments is not None and only_expert is not None:
        assessments = [a for a in assessments if a.expert == only_expert]
    mint = await repository.mint_for_patent(session, row.patent_id)
    return PatentDetailOut(
        patent=PatentOut.of(row),
        events=[PatentEventOut.of(event) for event in events],
        assessments=None if assessments is None else [AssessmentOut.model_validate(a) for a in assessments],
        mint=MintOut.maybe(mint),
    )


@router.post(
    "/v1/admin/pool/patents",
    response_model=PatentOut,
    status_code=status.HTTP_201_CREATED,
    summary="Register a patent as proposed (registrar)",
    responses={
        **ADMIN_PROBLEMS,
        **problem_responses(Conflict, ValidationFailed),
        200: {"description": "This patent was already registered with the same data."},
    },
)
async def post_patent(
    body: PatentIn, principal: Registrar, session: DbSession, response: Response
) -> PatentOut:
    row, created = await service.register_patent(
        session, data=service.PatentData(**body.model_dump()), actor=principal.address, at=utc_now()
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return PatentOut.of(row)


@router.get(
    "/v1/admin/pool/patents/{patent_id}",
    response_model=PatentDetailOut,
    summary="A patent with its history, assessments and mint",
    description=(
        "While the patent is under assessment, each expert assesses it independently: only the "
        "council and the registrar see every assessment; any other role sees only its own. Once "
        "the patent is decided, its assessments are shown to every foundation role."
    ),
    responses={**ADMIN_PROBLEMS, **problem_responses(NotFound)},
)
async def get_patent_admin(
    patent_id: str, principal: AnyFoundationRole, session: DbSession
) -> PatentDetailOut:
    only_expert = None
    if not await repository.active_roles(session, principal.address) & {COUNCIL, REGISTRAR}:
        row = await service.load(session, patent_id)
        if row.status == PatentStatus.UNDER_ASSESSMENT:
            only_expert = principal.address
    return await patent_detail(session, patent_id, with_assessments=True, only_expert=only_expert)


@router.post(
    "/v1/admin/pool/patents/{patent_id}/start-assessment",
    response_model=PatentOut,
    summary="Send a proposed patent to the experts (registrar)",
    responses=MOVE_PROBLEMS,
)
async def post_start_assessment(
    patent_id: str, body: MoveIn, principal: Registrar, session: DbSession
) -> PatentOut:
    row = await service.start_assessment(
        session, patent_id=patent_id, actor=principal.address, note=body.note, at=utc_now()
    )
    return PatentOut.of(row)


@router.post(
    "/v1/admin/pool/patents/{patent_id}/assessments",
    response_model=AssessmentOut,
    status_code=status.HTTP_201_CREATED,
    summary="Assess a patent under assessment (assessor)",
    responses={**MOVE_PROBLEMS, 200: {"description": "This assessment was already recorded."}},
)
async def post_assessment(
    patent_id: str, body: AssessmentIn, principal: Assessor, session: DbSession, response: Response
) -> AssessmentOut:
    record, created = await service.assess(
        session,
        patent_id=patent_id,
        expert=principal.address,
        score=body.score,
        core=body.core,
        notes=body.notes,
        at=utc_now(),
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return AssessmentOut.model_validate(record)


async def _send_mint(context: PoolContext, mint_id: int) -> None:
    try:
        await process_mint(context, mint_id)
    except (ChainUnavailable, ChainRejected) as exc:  # the background loop tries again
        log.warning("pool.mint_deferred", mint_id=mint_id, detail=exc.detail)


@router.post(
    "/v1/admin/pool/patents/{patent_id}/decision",
    response_model=DecisionOut,
    summary="Apply the admission policy to the assessments (registrar)",
    description=(
        "Admits or rejects the patent as the published admission policy says. A contributed patent "
        "is admitted, and its BPC mint owed, only while its contributor is an active member (on the "
        "register as indexed): while the contributor is suspended a decision that would admit it is "
        "refused (409) and changes nothing, to be asked again once the contributor is reinstated; a "
        "contributor expelled since the registration, or on no register at all, neither indexed nor "
        "the chain's (a contribution registered before registration required a member), has the "
        "patent rejected, the reason saying so; one the chain has and the index not yet is a 409 to "
        "ask again. A patent the rules reject anyway (lapsed during its assessment, say) is rejected "
        "whatever its contributor's standing. A decision is final: while the patent has fewer "
        "assessments than the policy needs it is refused (409, naming how many are missing), unless "
        "`close=true` asks to decide on the assessments there are, which rejects it (a patent found "
        "invalid or withdrawn, a contributor expelled, too few experts to assess it)."
    ),
    responses=MOVE_PROBLEMS,
)
async def post_decision(
    patent_id: str,
    principal: Registrar,
    session: DbSession,
    pool: Pool,
    background: BackgroundTasks,
    close: Annotated[
        bool,
        Query(description="Decide on the assessments there are, fewer than the policy needs: a rejection."),
    ] = False,
) -> DecisionOut:
    chain = pool.chain

    async def on_register(address: str) -> bool:
        member = await chain.run(lambda: chain.pool.member(address))
        return member.status is not MemberStatus.NONE

    outcome = await service.decide(
        session,
        patent_id=patent_id,
        policies=pool.policies,
        actor=principal.address,
        at=utc_now(),
        on_register=on_register,
        close=close,
    )
    row, decision, mint = outcome.patent, outcome.decision, outcome.mint
    if mint is not None and mint.status == MintStatus.PENDING:
        # Runs after the response, hence after this request's transaction has committed the mint.
        background.add_task(_send_mint, pool, mint.id)
    admitted = row.status in (PatentStatus.IN_POOL, PatentStatus.RETIRED) and row.score is not None
    mean = outcome.mean_score
    mean_text = format_fraction(mean) if mean is not None else None
    if decision is not None and decision.admitted == admitted:
        reasons = list(decision.reasons)
    else:  # decided earlier, or rejected although the policy admits it: the recorded decision says why
        decided = [
            event
            for event in await repository.patent_events(session, row.patent_id)
            if event.action in (PatentAction.ADMITTED, PatentAction.REJECTED)
        ]
        reasons = decided[-1].reason.split("; ") if decided else []
    return DecisionOut(
        patent=PatentOut.of(row),
        admitted=admitted,
        reasons=reasons,
        score=row.score,
        mean_score=mean_text,
        mint=MintOut.maybe(mint),
    )


@router.post(
    "/v1/admin/pool/patents/{patent_id}/retire",
    response_model=PatentOut,
    summary="Take a patent out of the pool (registrar)",
    responses=MOVE_PROBLEMS,
)
async def post_retire(patent_id: str, body: RetireIn, principal: Registrar, session: DbSession) -> PatentOut:
    row = await service.retire(
        session,
        patent_id=patent_id,
        reason=body.reason,
        note=body.note,
        actor=principal.address,
        at=utc_now(),
    )
    return PatentOut.of(row)


@router.post(
    "/v1/admin/pool/expiry-sweep",
    response_model=ExpirySweepOut,
    summary="Retire every patent that has expired, now (registrar)",
    responses=ADMIN_PROBLEMS,
)
async def post_expiry_sweep(principal: Registrar, session: DbSession) -> ExpirySweepOut:
    today = utc_now().date()
    retired = await service.expire_due(session, today=today, actor=principal.address)
    return ExpirySweepOut(today=today, retired=retired)


@router.get(
    "/v1/admin/pool/mints",
    response_model=Page[MintOut],
    summary="BPC owed and minted for contributions",
    responses=ADMIN_PROBLEMS,
)
async def get_mints(
    _: CouncilOrRegistrar,
    session: DbSession,
    status_filter: Annotated[MintStatus | None, Query(alias="status")] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[MintOut]:
    after = decode_cursor(cursor, int) if cursor else None
    rows = await repository.mints_page(
        session, status=status_filter.value if status_filter else None, after_id=after, limit=limit + 1
    )
    more = len(rows) > limit
    rows = rows[:limit]
    items = [MintOut.of(row) for row in rows]
    return Page[MintOut](items=items, next_cursor=encode_cursor(rows[-1].id) if more else None)


@router.post(
    "/v1/admin/pool/mints/{mint_id}/process",
    response_model=MintOut,
    summary="Send, reconcile or retry one contribution mint now (registrar)",
    responses={**ADMIN_PROBLEMS, **problem_responses(NotFound, ChainUnavailable)},
)
async def post_process_mint(mint_id: RowId, _: RegistrarAlone, pool: Pool) -> MintOut:
    mint = await process_mint(pool, mint_id, retry_failed=True)
    return MintOut.of(mint)
