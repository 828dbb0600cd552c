"""``/v1/devices``: manufacturers' batches here, and the resolver's routes from ``resolver_routes``
(with its Digital Link paths, ``link_router``), so that the service mounts all of them as one.

The routes that read the chain (an upload, a withdrawal, a pending upload's transactions) keep
no request transaction: their caller is known from a short one of its own
(``CurrentPrincipalAlone``), and ``batches`` reads the chain between short ones, so a slow node
holds neither SQLite's write lock nor a pooled PostgreSQL connection. When what they read the
chain for keeps changing, they answer the transient 409 ``batch-changed-meanwhile`` with
``Retry-After``: the same request sent again works.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response, status

from exchange.api.dependencies import AppSettings, RowId
from exchange.api.problems import problem_responses
from exchange.auth.dependencies import CurrentPrincipal, CurrentPrincipalAlone
from exchange.db.session import DbSession, app_sessionmaker
from exchange.kit.errors import (
    ChainRejected,
    ChainUnavailable,
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
    ValidationFailed,
)
from exchange.licenses import batches, pending_uploads, repository, resolver_routes
from exchange.licenses.device_ids import DeviceId
from exchange.licenses.indexer import registry_of
from exchange.licenses.lifespan import Licensing, licensing
from exchange.licenses.models import DeviceBatch
from exchange.licenses.routes import transaction_out
from exchange.licenses.schemas import (
    BatchDevicesOut,
    BatchOut,
    BatchUploadOut,
    TransactionOut,
)
from exchange.licenses.uploads import TooManyDevices, parse_csv, parse_json_list

router = APIRouter(prefix="/v1/devices", tags=["devices"])
link_router = resolver_routes.link_router
LicensingDep = Annotated[Licensing, Depends(licensing)]
MAX_DEVICE_PAGE = 100_000


def batch_out(batch: DeviceBatch) -> BatchOut:
    return BatchOut(
        upload_id=batch.id,
        status=batch.status,  # type: ignore[arg-type]  # the table's check constraint keeps it to the two
        batch_id=batch.batch_id,
        manufacturer=batch.manufacturer,
        root=batch.root,
        device_count=batch.device_count,
        bpc_per_device_wei=batch.bpc_per_device_wei,
        registered_block=batch.registered_block,
        suspended=batch.suspended,
        chain_id=batch.chain_id,
        registry=batch.registry_address,
        created_at=batch.created_at,
    )


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


# --- batches ----------------------------------------------------------------------------------------

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["bpc_per_device_wei", "devices"],
                    "properties": {
                        "bpc_per_device_wei": {"type": "string", "pattern": "^[0-9]{1,39}$"},
                        "scheme": {"type": "string", "enum": ["gs1", "imei", "serial"]},
                        "devices": {
                            "type": "array",
                            "items": {
                                "oneOf": [
                                    {"type": "string"},
                                    {
                                        "type": "object",
                                        "properties": {
                                            "scheme": {"type": "string"},
                                            "id": {"type": "string"},
                                        },
                                    },
                                ]
                            },
                        },
                    },
                }
            },
            "text/csv": {
                "schema": {"type": "string", "description": "Header row with device_id [, scheme]."}
            },
        },
    }
}


def _amount(text: object) -> int:
    if isinstance(text, str) and text.isascii() and text.isdigit() and len(text) <= 39:
        return int(text)
    raise ValidationFailed("bpc_per_device_wei is a decimal string of base units")


def _decoding(request: Request) -> asyncio.Semaphore:
    """The app's one permit to decode a JSON upload: what json.loads builds can be twenty times
    the body, so uploads sent at once are decoded one after another, not side by side."""
    state = request.app.state
    permit: asyncio.Semaphore | None = getattr(state, "device_upload_decoding", None)
    if permit is None:
        permit = state.device_upload_decoding = asyncio.Semaphore(1)
    return permit


async def _read_upload(
    request: Request, bpc_query: str | None, scheme_query: str | None
) -> tuple[list[DeviceId], int]:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    if media == "text/csv":
        if bpc_query is None:
            raise ValidationFailed("a CSV upload names bpc_per_device_wei in the query")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValidationFailed("the CSV is not UTF-8") from None
        # Off the event loop: a million ids take seconds to check, and other requests go on meanwhile.
        devices = await asyncio.to_thread(
            parse_csv, text, scheme=scheme_query, max_devices=batches.MAX_BATCH_DEVICES
        )
        return devices, _amount(bpc_query)
    if media != "application/json":
        raise ValidationFailed("send the device list as application/json or text/csv")
    async with _decoding(request):
        try:
            body = await asyncio.to_thread(json.loads, raw)
        except (ValueError, RecursionError):
            raise ValidationFailed("the body is not JSON, or nests too deeply") from None
        if not isinstance(body, dict) or "devices" not in body:
            raise ValidationFailed('the body is {"bpc_per_device_wei": "...", "devices": [...]}')
        scheme = body.get("scheme", scheme_query)
        amount = body.get("bpc_per_device_wei", bpc_query)
        devices = await asyncio.to_thread(
            parse_json_list,
            body["devices"],
            scheme=scheme if isinstance(scheme, str) else None,
            max_devices=batches.MAX_BATCH_DEVICES,
        )
        del body  # the decoded list goes before the next upload is decoded
    return devices, _amount(amount)


@router.post(
    "/batches",
    status_code=status.HTTP_201_CREATED,
    response_model=BatchUploadOut,
    response_model_by_alias=True,
    summary="Upload a batch of device ids",
    openapi_extra=_UPLOAD_BODY,
    responses=problem_responses(
        Unauthorized,
        Forbidden,
        ValidationFailed,
        Conflict,
        batches.BatchChangedMeanwhile,
        TooManyDevices,
        ChainRejected,
        ChainUnavailable,
    ),
)
async def post_batch(
    request: Request,
    principal: CurrentPrincipalAlone,
    state: LicensingDep,
    bpc_per_device_wei: Annotated[str | None, Query(pattern=r"^[0-9]{1,39}$")] = None,
    scheme: Annotated[str | None, Query()] = None,
) -> BatchUploadOut:
    """A licensed manufacturer's device ids (JSON list or CSV), all valid and new or none stored.
    Device ``i`` is the ``i``-th id. Answers the pending batch with its Merkle root and the
    unsigned ``approve`` (if needed) and ``registerBatch`` transactions to sign; the batch
    resolves once the chain has registered it. A caller without a licence, or a suspended or
    expelled pool member, is refused before the body is read, and a list longer than a batch is
    refused at its first device too many."""
    await batches.require_licensee(state.runtime, principal.address)
    devices, amount = await _read_upload(request, bpc_per_device_wei, scheme)
    rules = batches.PendingRules.of(request.app.state.settings)
    sessions = app_sessionmaker(request.app)
    batch, steps = await batches.upload(sessions, state.runtime, principal.address, devices, amount, rules)
    return BatchUploadOut(batch=batch_out(batch), transactions=[transaction_out(step) for step in steps])


@router.get(
    "/batches",
    response_model=list[BatchOut],
    summary="My device batches",
    responses=problem_responses(Unauthorized),
)
async def get_batches(principal: CurrentPrincipal, session: DbSession, state: LicensingDep) -> list[BatchOut]:
    rows = await repository.batches_of(session, registry_of(state.runtime), principal.address)
    return [batch_out(batch) for batch in rows]


@router.get(
    "/batches/{upload_id}",
    response_model=BatchOut,
    summary="One of my device batches",
    responses=problem_responses(Unauthorized, NotFound),
)
async def get_batch(
    upload_id: RowId, principal: CurrentPrincipal, session: DbSession, state: LicensingDep
) -> BatchOut:
    return batch_out(await batches.owned_batch(session, state.runtime, upload_id, principal.address))


@router.delete(
    "/batches/{upload_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Withdraw a pending batch",
    responses=problem_responses(
        Unauthorized, NotFound, Conflict, batches.BatchChangedMeanwhile, ChainRejected, ChainUnavailable
    ),
)
async def delete_batch(
    upload_id: RowId,
    request: Request,
    principal: CurrentPrincipalAlone,
    state: LicensingDep,
    settings: AppSettings,
) -> Response:
    """Delete a batch the chain has not registered, freeing its device ids; 409 once its
    registration is on chain, even before the indexer has confirmed it."""
    await pending_uploads.withdraw(
        app_sessionmaker(request.app),
        state.runtime,
        upload_id,
        principal.address,
        range_blocks=settings.licence_indexer_max_blocks,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/batches/{upload_id}/transactions",
    response_model=list[TransactionOut],
    response_model_by_alias=True,
    summary="The registration transactions of a pending batch",
    responses=problem_responses(
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        batches.BatchChangedMeanwhile,
        ChainRejected,
        ChainUnavailable,
    ),
)
async def post_batch_transactions(
    upload_id: RowId,
    request: Request,
    principal: CurrentPrincipalAlone,
    state: LicensingDep,
    settings: AppSettings,
) -> list[TransactionOut]:
    steps = await pending_uploads.register_transactions(
        app_sessionmaker(request.app),
        state.runtime,
        upload_id,
        principal.address,
        range_blocks=settings.licence_indexer_max_blocks,
    )
    return [transaction_out(step) for step in steps]


@router.get(
    "/batches/{upload_id}/devices",
    response_model=BatchDevicesOut,
    summary="Device ids of one of my batches, in index order",
    responses=problem_responses(Unauthorized, NotFound),
)
async def get_batch_devices(
    upload_id: RowId,
    principal: CurrentPrincipal,
    session: DbSession,
    state: LicensingDep,
    offset: Annotated[int, Query(ge=0, le=batches.MAX_BATCH_DEVICES)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_DEVICE_PAGE)] = MAX_DEVICE_PAGE,
) -> BatchDevicesOut:
    batch = await batches.owned_batch(session, state.runtime, upload_id, principal.address)
    return BatchDevicesOut(
        upload_id=batch.id,
        offset=offset,
        device_ids=await repository.device_ids_of(session, batch.id, offset, limit),
    )


@router.get(
    "/batches/{upload_id}/tree",
    summary="The batch's serialised Merkle tree",
    responses={
        200: {"content": {"application/octet-stream": {}}},
        **problem_responses(Unauthorized, NotFound),
    },
)
async def get_batch_tree(
    upload_id: RowId, principal: CurrentPrincipal, session: DbSession, state: LicensingDep
) -> Response:
    """``MerkleTree.to_bytes`` form (see ``exchange.licenses.merkle``): every proof of the batch, offline."""
    batch = await batches.owned_batch(session, state.runtime, upload_id, principal.address)
    data = await repository.tree_bytes(session, batch.id)
    return Response(content=data or b"", media_type="application/octet-stream")


# --- resolver: its own module, served by the resolver-only app too; after the batch routes, whose
# paths its /{scheme}/{device_id} would otherwise match --------------------------------------------

router.include_router(resolver_routes.query_router)
