"""Royalties over HTTP: the council computes and pays runs; contributors read their statements.

=======================================================  ===================
route                                                    role
=======================================================  ===================
POST /v1/admin/royalties/runs                            council
GET  /v1/admin/royalties/runs[/{id}]                     council
POST /v1/admin/royalties/runs/{id}/pay                   council
GET  /v1/admin/royalties/runs/{id}/statements            council
GET  /v1/admin/royalties/runs/{id}/statements/{address}  council
GET  /v1/royalties/runs/{id}/statement                   the signed-in contributor
=======================================================  ===================

Statements come as JSON (default) or CSV (``?format=csv``), from the pure
``royalties.statements_json`` and ``statements_csv``. They name the token the run
distributes (amounts are in its base units) and, for each contributor paid anything,
the tag of the Fund payout that pays it, which its ``FundPayout`` event carries, and
how that payout stands: ``payout_status`` (``pending``, ``paid``, ``held``, ``claimed``)
and ``held_wei``, what the Fund holds for the contributor from it until it is claimed.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.api.dependencies import RowId
from exchange.api.problems import problem_responses
from exchange.auth.dependencies import CurrentPrincipal
from exchange.db.base import utc_now
from exchange.db.session import DbSession
from exchange.kit.errors import (
    ChainUnavailable,
    Conflict,
    NotFound,
    Unauthorized,
    ValidationFailed,
)
from exchange.pool import repository
from exchange.pool import royalty_service as service
from exchange.pool.access_routes import ADMIN_PROBLEMS, Council, CouncilAlone, Pool
from exchange.pool.models import PayoutStatus, RoyaltyPayout, RoyaltyRun
from exchange.pool.royalties import (
    Distribution,
    PayoutState,
    batch_payout_tag,
    statements_csv,
    statements_json,
)
from exchange.pool.schemas import RunIn, RunOut, checksummed

router = APIRouter(tags=["pool administration: royalties"])


def _file_name(run: RoyaltyRun) -> str:
    """A download's name: the period and the token (runs of two tokens may share a period)."""
    return f"royalties-{run.period_id}-{run.token}"


StatementFormat = Annotated[Literal["json", "csv"], Query(alias="format")]


async def _run_out(session: AsyncSession, run: RoyaltyRun) -> RunOut:
    batches = [
        (batch, list(await repository.payouts_of_batch(session, batch.id)))
        for batch in await repository.payout_batches(session, run.id)
    ]
    claim_ids = [p.claim_id for _, payouts in batches for p in payouts if p.claim_id is not None]
    return RunOut.of(run, batches, await repository.claims_by_id(session, claim_ids))


async def _payout_states(session: AsyncSession, payouts: list[RoyaltyPayout]) -> dict[str, PayoutState]:
    """How each contributor's payout stands on chain, for its statement."""
    claims = await repository.claims_by_id(session, [p.claim_id for p in payouts if p.claim_id is not None])
    return {
        p.contributor: PayoutState(
            status=p.status,
            held_wei=p.amount_wei if p.status == PayoutStatus.HELD else 0,
            tx_hash=p.tx_hash,
            claim_tx_hash=claims[p.claim_id].tx_hash if p.claim_id in claims else None,
        )
        for p in payouts
    }


async def _statement_response(
    session: AsyncSession, run: RoyaltyRun, distribution: Distribution, file_format: str, name: str
) -> Response:
    """The statements in ``file_format``, with the run's token and each contributor's payout tag
    and state."""
    batch_tags: dict[str, str] = {}
    payouts: list[RoyaltyPayout] = []
    for batch in await repository.payout_batches(session, run.id):
        for payout in await repository.payouts_of_batch(session, batch.id):
            batch_tags[payout.contributor] = batch_payout_tag(run.payout_tag, run.token, batch.batch_index)
            payouts.append(payout)
    states = await _payout_states(session, payouts)
    if file_format == "csv":
        return Response(
            statements_csv(distribution, token=run.token, batch_tags=batch_tags, payout_states=states),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    return Response(
        statements_json(distribution, token=run.token, batch_tags=batch_tags, payout_states=states),
        media_type="application/json",
    )


@router.post(
    "/v1/admin/royalties/runs",
    response_model=RunOut,
    status_code=status.HTTP_201_CREATED,
    summary="Compute the distribution of a period (council)",
    responses={
        **ADMIN_PROBLEMS,
        **problem_responses(Conflict, service.DepositsChangedMeanwhile, ValidationFailed, ChainUnavailable),
        200: {"description": "This period was already computed; the run is returned unchanged."},
    },
)
async def post_run(body: RunIn, principal: CouncilAlone, pool: Pool, response: Response) -> RunOut:
    run, created = await service.create_run(
        pool,
        period_id=body.period_id,
        starts_on=body.starts_on,
        ends_on=body.ends_on,
        token=body.token or pool.chain.pool.bpc.address,
        actor=principal.address,
        at=utc_now(),
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    # The run was stored in a transaction of its own (none is open while the chain is read).
    async with pool.sessionmaker() as session:
        return await _run_out(session, run)


@router.get(
    "/v1/admin/royalties/runs", response_model=list[RunOut], summary="Royalty runs", responses=ADMIN_PROBLEMS
)
async def get_runs(_: Council, session: DbSession) -> list[RunOut]:
    return [RunOut.of(run) for run in await service.runs(session)]


@router.get(
    "/v1/admin/royalties/runs/{run_id}",
    response_model=RunOut,
    summary="One royalty run with its payout batches",
    responses={**ADMIN_PROBLEMS, **problem_responses(NotFound)},
)
async def get_run(run_id: RowId, _: Council, session: DbSession) -> RunOut:
    return await _run_out(session, await service.load_run(session, run_id))


@router.post(
    "/v1/admin/royalties/runs/{run_id}/pay",
    response_model=RunOut,
    summary="Pay a run on chain in batches; repeating it pays nobody twice (council)",
    description=(
        "Sends every unpaid batch of the run, each as one `Fund.payout`. A recipient the token refuses "
        "(one it blacklists, a pause for that account) does not stop its batch: the Fund holds that "
        "payout for it (the payout's `status` is `held`, with the batch's `tx_hash`) and pays the "
        "others; the recipient claims it later with `Fund.claim(token, to)`, to itself or another "
        "address, and the payout becomes `claimed` once the claim is indexed. A batch the Fund refuses "
        "(its payout reverts: a Fund short of the token, a tag already paid otherwise) does not stop "
        "the others: it stays `pending` with the revert in its `last_error`, and the answer is still "
        "200, with the run `paying` until every batch is mined. "
        "Asking again tries the refused batches again. The answer is 503 when the node cannot be "
        "reached; what was paid before stays paid, and the next request goes on from there."
    ),
    responses={**ADMIN_PROBLEMS, **problem_responses(NotFound, ChainUnavailable)},
)
async def post_pay(run_id: RowId, principal: CouncilAlone, pool: Pool) -> RunOut:
    await service.pay_run(pool, run_id, actor=principal.address)
    # The payment committed in transactions of its own, which this request's snapshot may predate.
    async with pool.sessionmaker() as fresh:
        return await _run_out(fresh, await service.load_run(fresh, run_id))


@router.get(
    "/v1/admin/royalties/runs/{run_id}/statements",
    summary="Every contributor's statement for a run (council)",
    response_class=Response,
    responses={**ADMIN_PROBLEMS, **problem_responses(NotFound)},
)
async def get_statements(
    run_id: RowId, _: Council, session: DbSession, file_format: StatementFormat = "json"
) -> Response:
    run = await service.load_run(session, run_id)
    distribution = await service.distribution_of(session, run)
    return await _statement_response(session, run, distribution, file_format, _file_name(run))


@router.get(
    "/v1/admin/royalties/runs/{run_id}/statements/{contributor}",
    summary="One contributor's statement for a run (council)",
    response_class=Response,
    responses={**ADMIN_PROBLEMS, **problem_responses(NotFound, ValidationFailed)},
)
async def get_contributor_statement(
    run_id: RowId, contributor: str, _: Council, session: DbSession, file_format: StatementFormat = "json"
) -> Response:
    run = await service.load_run(session, run_id)
    address = checksummed(contributor)
    distribution = service.for_contributor(await service.distribution_of(session, run), address)
    return await _statement_response(session, run, distribution, file_format, f"{_file_name(run)}-{address}")


@router.get(
    "/v1/royalties/runs/{run_id}/statement",
    summary="My statement for a run",
    response_class=Response,
    responses=problem_responses(Unauthorized, NotFound),
)
async def get_my_statement(
    run_id: RowId, principal: CurrentPrincipal, session: DbSession, file_format: StatementFormat = "json"
) -> Response:
    run = await service.load_run(session, run_id)
    distribution = service.for_contributor(await service.distribution_of(session, run), principal.address)
    return await _statement_response(session, run, distribution, file_format, _file_name(run))
