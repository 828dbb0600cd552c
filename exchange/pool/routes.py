"""Pool administration over HTTP: the public pool index, the audit log, and every admin router.

Public (no sign-in)::

    GET /v1/pool/patents            patents, filtered by field, country (office) and status
    GET /v1/pool/patents/{id}       one patent and its lifecycle
    GET /v1/pool/stats              live patents by field and country, contributors, BPC supply
                                    (read from the chain: limited per client IP), and the price
                                    of the last BPC trade (the BPC market's ticker)
    GET /v1/pool/policies           the published admission and mint policies

Foundation roles::

    GET /v1/admin/audit             the audit log, newest first, cursor-paginated (council,
                                    registrar: it holds applicants' contact details)
    GET /v1/admin/audit/export      the whole log (or a filtered part) as CSV or JSON lines

``router`` includes the membership, patent, royalty and role routers too; the
service adds just this one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.api.dependencies import limit_chain_reads
from exchange.api.problems import problem_responses
from exchange.db.session import DbSession
from exchange.kit.addresses import ADDRESS_FORM
from exchange.kit.errors import ChainUnavailable, NotFound, RateLimited, ValidationFailed
from exchange.kit.text import Label
from exchange.pool import repository
from exchange.pool.access_routes import ADMIN_PROBLEMS, CouncilOrRegistrar, Pool
from exchange.pool.access_routes import router as access_router
from exchange.pool.membership_routes import router as membership_router
from exchange.pool.models import AuditEntry
from exchange.pool.patent_numbers import InvalidPatentNumber, parse_patent_number
from exchange.pool.patent_routes import patent_detail
from exchange.pool.patent_routes import router as patent_router
from exchange.pool.patents import FieldOfTechnology, PatentStatus
from exchange.pool.royalty_routes import router as royalty_router
from exchange.pool.schemas import (
    AuditEntryOut,
    Page,
    PatentDetailOut,
    PatentOut,
    PoliciesOut,
    PoolStatsOut,
    checksummed,
    decode_cursor,
    encode_cursor,
)

if TYPE_CHECKING:
    from exchange.trading.service import TradingService

public_router = APIRouter(tags=["pool"])
audit_router = APIRouter(tags=["pool administration: audit"])
AUDIT_CSV_COLUMNS = (
    "id",
    "occurred_at",
    "actor",
    "action",
    "subject_type",
    "subject_id",
    "reason",
    "tx_hashes",
    "request_id",
    "before",
    "after",
)


@public_router.get(
    "/v1/pool/patents",
    response_model=Page[PatentOut],
    summary="Patents of the pool",
    responses=problem_responses(ValidationFailed),
)
async def get_patents(
    session: DbSession,
    field: FieldOfTechnology | None = None,
    country: Annotated[
        str | None, Query(pattern=r"^[A-Za-z]{2}$", description="Patent office, e.g. US, EP")
    ] = None,
    status: Annotated[
        PatentStatus | None, Query(description="Default: in_pool. Any status may be asked for.")
    ] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[PatentOut]:
    after = decode_cursor(cursor, str) if cursor else None
    rows = await repository.patents_page(
        session,
        field=field.value if field else None,
        country=country.upper() if country else None,
        status=(status or PatentStatus.IN_POOL).value,
        after=after,
        limit=limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return Page[PatentOut](
        items=[PatentOut.of(row) for row in rows],
        next_cursor=encode_cursor(rows[-1].patent_id) if more else None,
    )


@public_router.get(
    "/v1/pool/patents/{patent_id}",
    response_model=PatentDetailOut,
    summary="One patent and its lifecycle",
    responses=problem_responses(NotFound),
)
async def get_patent(patent_id: str, session: DbSession) -> PatentDetailOut:
    return await patent_detail(session, patent_id, with_assessments=False)


async def last_traded_price(request: Request, session: AsyncSession, bpc_token: str) -> str | None:
    """The price of the last trade of the market whose base token is ``bpc_token``: its ticker's ``last``.

    The ticker is the market data's (``exchange.trading.market_data.TickerCache``): a trade
    whose settlement failed for good is not the last, and its window is reused while no trade,
    void or minute has passed, so the stats cost no more than the ticker's own route. None when
    the trading service is not running (or runs no BPC market) and before the first trade.
    """
    trading: TradingService | None = getattr(request.app.state, "trading", None)
    if trading is None:
        return None
    for market in trading.markets.values():
        if market.spec.base_token.lower() == bpc_token.lower():
            return (await trading.tickers.ticker(session, market.feed)).last
    return None


@public_router.get(
    "/v1/pool/stats",
    response_model=PoolStatsOut,
    summary="The pool index: live patents, contributors, BPC supply, last traded BPC price",
    responses=problem_responses(RateLimited, ChainUnavailable),
    # It reads the BPC supply from the chain: the client IP's chain-read bucket first.
    dependencies=[Depends(limit_chain_reads)],
)
async def get_stats(request: Request, session: DbSession, pool: Pool) -> PoolStatsOut:
    # The chain first, before the first query begins the request's transaction: on SQLite it
    # holds the write lock from its start, and would hold it while the node answers.
    bpc = pool.chain.pool
    supply = await pool.chain.run(bpc.bpc_supply)
    by_field = await repository.live_patent_counts(session, "field")
    by_country = await repository.live_patent_counts(session, "country")
    return PoolStatsOut(
        live_patents=sum(by_field.values()),
        live_patents_by_field=by_field,
        live_patents_by_country=by_country,
        contributors=await repository.live_contributor_count(session),
        bpc_supply_wei=str(supply),
        last_traded_price=await last_traded_price(request, session, bpc.bpc.address),
    )


@public_router.get("/v1/pool/policies", response_model=PoliciesOut, summary="The published pool policies")
async def get_policies(pool: Pool) -> PoliciesOut:
    admission, mint = pool.policies.admission, pool.policies.mint
    return PoliciesOut(
        admission={
            "min_assessments": admission.min_assessments,
            "min_mean_score": admission.min_mean_score,
            "require_core_majority": admission.require_core_majority,
            "description": admission.describe(),
        },
        mint={
            "version": mint.version,
            "base_amount_wei": str(mint.base_amount_wei),
            "description": mint.describe(),
        },
    )


# --------------------------------------------------------------------------- audit log

AuditFilter = Annotated[Label | None, Query()]


def _audit_key(value: str | None) -> str | None:
    """An ``actor`` or ``subject_id`` filter as the log spells what it names: an address (alone,
    or after a role as in ``registrar:0x…``) checksummed, refused if its mixed case is no
    checksum; a patent number in its id form (``ep 3123456 b1``: ``EP3123456B1``). Anything
    else (an application's id, ``cli:…``) is matched as it is."""
    if value is None:
        return None
    prefix, _, last = value.rpartition(":")
    if ADDRESS_FORM.fullmatch(last):
        return f"{prefix}:{checksummed(last)}" if prefix else checksummed(last)
    try:
        return parse_patent_number(value).compact()
    except InvalidPatentNumber:
        return value


@audit_router.get(
    "/v1/admin/audit",
    response_model=Page[AuditEntryOut],
    summary="The audit log, newest first",
    responses={**ADMIN_PROBLEMS, **problem_responses(ValidationFailed)},
)
async def get_audit(
    _: CouncilOrRegistrar,
    session: DbSession,
    action: AuditFilter = None,
    actor: AuditFilter = None,
    subject_id: AuditFilter = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Page[AuditEntryOut]:
    before_id = decode_cursor(cursor, int) if cursor else None
    entries = await repository.audit_page(
        session,
        before_id=before_id,
        limit=limit + 1,
        action=action,
        actor=_audit_key(actor),
        subject_id=_audit_key(subject_id),
    )
    more = len(entries) > limit
    entries = entries[:limit]
    return Page[AuditEntryOut](
        items=[AuditEntryOut.of(entry) for entry in entries],
        next_cursor=encode_cursor(entries[-1].id) if more else None,
    )


# A cell a spreadsheet would run as a formula (OWASP's CSV injection): text an admin wrote (a
# reason, an importer's name) is written with a leading apostrophe, which shows it as text.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_line(values: list[object]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(
        "'" + value if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value
        for value in values
    )
    return buffer.getvalue()


def _audit_csv_row(entry: AuditEntry) -> str:
    out = AuditEntryOut.of(entry)
    return _csv_line(
        [
            out.id,
            out.occurred_at.isoformat(),
            out.actor,
            out.action,
            out.subject_type,
            out.subject_id,
            out.reason or "",
            ";".join(out.tx_hashes),
            out.request_id or "",
            json.dumps(out.before, sort_keys=True) if out.before is not None else "",
            json.dumps(out.after, sort_keys=True) if out.after is not None else "",
        ]
    )


@audit_router.get(
    "/v1/admin/audit/export",
    summary="Export the audit log, oldest first, as CSV or JSON lines",
    response_class=StreamingResponse,
    responses=ADMIN_PROBLEMS,
)
async def export_audit(
    _: CouncilOrRegistrar,
    pool: Pool,
    file_format: Annotated[Literal["csv", "jsonl"], Query(alias="format")] = "csv",
    action: AuditFilter = None,
    actor: AuditFilter = None,
    subject_id: AuditFilter = None,
) -> StreamingResponse:
    actor, subject_id = _audit_key(actor), _audit_key(subject_id)  # refused before the stream starts

    async def lines() -> AsyncIterator[str]:
        # Its own session: the response streams after the request's transaction has ended.
        async with pool.sessionmaker() as session:
            if file_format == "csv":
                yield _csv_line(list(AUDIT_CSV_COLUMNS))
            async for entry in repository.audit_stream(
                session, action=action, actor=actor, subject_id=subject_id
            ):
                if file_format == "csv":
                    yield _audit_csv_row(entry)
                else:
                    yield AuditEntryOut.of(entry).model_dump_json() + "\n"

    media_type = "text/csv; charset=utf-8" if file_format == "csv" else "application/jsonl"
    return StreamingResponse(
        lines(),
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="audit.{file_format}"'},
    )


router = APIRouter()
for _router in (public_router, audit_router, access_router, membership_router, patent_router, royalty_router):
    router.include_router(_router)
