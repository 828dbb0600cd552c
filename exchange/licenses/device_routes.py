"""``/v1/devices`` (batches, resolver) and the Digital Link paths (``/01/…``, ``/imei/…``, ``/serial/…``).

Resolver answers are built as plain dicts and serialised once (no response-model validation on
the hot path); their shape is ``DeviceAnswer``, which the OpenAPI document names.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncConnection

from exchange.api.problems import problem_responses
from exchange.auth.dependencies import CurrentPrincipal
from exchange.db.session import DbSession
from exchange.kit.errors import (
    ChainRejected,
    ChainUnavailable,
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
    ValidationFailed,
)
from exchange.licenses import batches, repository, resolver
from exchange.licenses.device_ids import DeviceId, parse_device_id, parse_digital_link
from exchange.licenses.indexer import registry_of
from exchange.licenses.lifespan import Licensing, licensing
from exchange.licenses.models import DeviceBatch
from exchange.licenses.pages import device_page, wants_html
from exchange.licenses.resolver import MAX_BULK_DEVICES, TooManyDevices
from exchange.licenses.routes import transaction_out
from exchange.licenses.schemas import (
    BatchDevicesOut,
    BatchOut,
    BatchUploadOut,
    DeviceAnswer,
    DeviceQueryIn,
    DeviceQueryOut,
    TransactionOut,
)
from exchange.licenses.uploads import parse_csv, parse_json_list, parse_references

router = APIRouter(prefix="/v1/devices", tags=["devices"])
link_router = APIRouter(tags=["devices"])
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
        return await asyncio.to_thread(parse_csv, text, scheme=scheme_query), _amount(bpc_query)
    if media != "application/json":
        raise ValidationFailed("send the device list as application/json or text/csv")
    try:
        body = await asyncio.to_thread(json.loads, raw)
    except ValueError:
        raise ValidationFailed("the body is not JSON") from None
    if not isinstance(body, dict) or "devices" not in body:
        raise ValidationFailed('the body is {"bpc_per_device_wei": "...", "devices": [...]}')
    scheme = body.get("scheme", scheme_query)
    amount = body.get("bpc_per_device_wei", bpc_query)
    devices = await asyncio.to_thread(
        parse_json_list, body["devices"], scheme=scheme if isinstance(scheme, str) else None
    )
    return devices, _amount(amount)


@router.post(
    "/batches",
    status_code=status.HTTP_201_CREATED,
    response_model=BatchUploadOut,
    response_model_by_alias=True,
    summary="Upload a batch of device ids",
    openapi_extra=_UPLOAD_BODY,
    responses=problem_responses(
        Unauthorized, Forbidden, ValidationFailed, Conflict, TooManyDevices, ChainRejected, ChainUnavailable
    ),
)
async def post_batch(
    request: Request,
    principal: CurrentPrincipal,
    session: DbSession,
    state: LicensingDep,
    bpc_per_device_wei: Annotated[str | None, Query(pattern=r"^[0-9]{1,39}$")] = None,
    scheme: Annotated[str | None, Query()] = None,
) -> BatchUploadOut:
    """A licensed manufacturer's device ids (JSON list or CSV), all valid and new or none stored.
    Device ``i`` is the ``i``-th id. Answers the pending batch with its Merkle root and the
    unsigned ``approve`` (if needed) and ``registerBatch`` transactions to sign; the batch
    resolves once the chain has registered it."""
    devices, amount = await _read_upload(request, bpc_per_device_wei, scheme)
    batch, steps = await batches.upload(session, state.runtime, principal.address, devices, amount)
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
    upload_id: int, principal: CurrentPrincipal, session: DbSession, state: LicensingDep
) -> BatchOut:
    return batch_out(await batches.owned_batch(session, state.runtime, upload_id, principal.address))


@router.delete(
    "/batches/{upload_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Withdraw a pending batch",
    responses=problem_responses(Unauthorized, NotFound, Conflict),
)
async def delete_batch(
    upload_id: int, principal: CurrentPrincipal, session: DbSession, state: LicensingDep
) -> Response:
    """Delete a batch the chain has not registered, freeing its device ids."""
    await batches.withdraw(session, state.runtime, upload_id, principal.address)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/batches/{upload_id}/transactions",
    response_model=list[TransactionOut],
    response_model_by_alias=True,
    summary="The registration transactions of a pending batch",
    responses=problem_responses(Unauthorized, NotFound, Conflict, ChainRejected, ChainUnavailable),
)
async def post_batch_transactions(
    upload_id: int, principal: CurrentPrincipal, session: DbSession, state: LicensingDep
) -> list[TransactionOut]:
    steps = await batches.register_transactions(session, state.runtime, upload_id, principal.address)
    return [transaction_out(step) for step in steps]


@router.get(
    "/batches/{upload_id}/devices",
    response_model=BatchDevicesOut,
    summary="Device ids of one of my batches, in index order",
    responses=problem_responses(Unauthorized, NotFound),
)
async def get_batch_devices(
    upload_id: int,
    principal: CurrentPrincipal,
    session: DbSession,
    state: LicensingDep,
    offset: Annotated[int, Query(ge=0)] = 0,
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
    upload_id: int, principal: CurrentPrincipal, session: DbSession, state: LicensingDep
) -> Response:
    """``MerkleTree.to_bytes`` form (see ``exchange.licenses.merkle``): every proof of the batch, offline."""
    batch = await batches.owned_batch(session, state.runtime, upload_id, principal.address)
    data = await repository.tree_bytes(session, batch.id)
    return Response(content=data or b"", media_type="application/octet-stream")


# --- resolver -----------------------------------------------------------------------------------------


async def _resolve(
    request: Request, state: Licensing, devices: list[DeviceId]
) -> tuple[int | None, list[dict[str, Any]]]:
    connection: AsyncConnection
    async with state.read_engine.connect() as connection:
        return await resolver.resolve(connection, registry_of(state.runtime), state.trees, devices)


def _device_response(request: Request, answer: dict[str, Any]) -> Response:
    if wants_html(request.headers.get("accept")):
        response: Response = Response(device_page(answer), media_type="text/html; charset=utf-8")
    else:
        response = _json(answer)
    response.headers["Vary"] = "Accept"
    return response


_ANSWER_DOC = {
    200: {
        "description": "The device's licence; HTML when the client prefers it (browsers).",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/DeviceAnswer"}},
            "text/html": {"schema": {"type": "string"}},
        },
    },
    **problem_responses(ValidationFailed),
}


@router.post(
    "/query",
    response_model=DeviceQueryOut,
    summary="Licences of many devices",
    responses=problem_responses(ValidationFailed, TooManyDevices),
)
async def post_query(body: DeviceQueryIn, request: Request, state: LicensingDep) -> Response:
    """Up to 10,000 devices (scheme-prefixed ids or Digital Link URIs) in one answer, in the
    order asked; each answer equals the single-device answer."""
    if len(body.devices) > MAX_BULK_DEVICES:
        raise TooManyDevices(
            f"{len(body.devices)} devices in one query; at most {MAX_BULK_DEVICES}",
            extra={"limit": MAX_BULK_DEVICES},
        )
    devices = parse_references(body.devices)
    registry = registry_of(state.runtime)
    block, answers = await _resolve(request, state, devices)
    return _json(
        {"chain_id": registry.chain_id, "registry": registry.address, "block": block, "devices": answers}
    )


@router.get(
    "/{scheme}/{device_id:path}",
    summary="One device's licence",
    response_model=DeviceAnswer,
    responses=_ANSWER_DOC,
)
async def get_device(scheme: str, device_id: str, request: Request, state: LicensingDep) -> Response:
    """Status (licensed, revoked, suspended, unknown), manufacturer, batch, BPC per device and
    the Merkle proof with root, registry, chain id and block, to check on chain."""
    device = parse_device_id(scheme, device_id)
    _, answers = await _resolve(request, state, [device])
    return _device_response(request, answers[0])


async def _digital_link(request: Request, state: Licensing) -> Response:
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    device = parse_digital_link(str(request.base_url).rstrip("/") + raw_path.decode("latin-1"))
    _, answers = await _resolve(request, state, [device])
    return _device_response(request, answers[0])


@link_router.get("/01/{rest:path}", summary="Resolve a GS1 Digital Link", responses=_ANSWER_DOC)
async def get_gs1_link(rest: str, request: Request, state: LicensingDep) -> Response:
    """``/01/{gtin}/21/{serial}`` (with optional ``/22/…`` and ``/10/…`` qualifiers)."""
    return await _digital_link(request, state)


@link_router.get("/imei/{imei}", summary="Resolve an IMEI link", responses=_ANSWER_DOC)
async def get_imei_link(imei: str, request: Request, state: LicensingDep) -> Response:
    return await _digital_link(request, state)


@link_router.get(
    "/serial/{namespace}/{serial}", summary="Resolve a manufacturer serial link", responses=_ANSWER_DOC
)
async def get_serial_link(namespace: str, serial: str, request: Request, state: LicensingDep) -> Response:
    return await _digital_link(request, state)
