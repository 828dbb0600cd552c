"""Trading API: ``/v1/markets`` (public), ``/v1/orders`` and ``/v1/account/*`` (signed-in members).

Every private route answers only about the signed-in account: another
account's order is a 404, exactly like one that does not exist. Mutating
routes accept an ``Idempotency-Key`` header (see ``exchange.trading.idempotency``):
a retry with the key gets the first answer back, marked ``Idempotent-Replayed: true``;
placing an order is also idempotent by its client order id. Each route takes a
token from the client IP's bucket, and private routes one from the account's (a
batch of orders takes one from each per order).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from exchange.api.front import Front, read_request, replaying
from exchange.api.problems import PROBLEM_MEDIA_TYPE, Problem, problem_document, problem_responses
from exchange.auth.dependencies import bearer
from exchange.auth.service import Principal
from exchange.db.session import DbSession
from exchange.kit.errors import (
    ChainUnavailable,
    DomainError,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)
from exchange.kit.ratelimit import client_host
from exchange.trading import repository
from exchange.trading.chain_cancels import AccountExiting, CancelledOnChain
from exchange.trading.idempotency import HEADER, KeyInUse, KeyReused, KeyUnfinished, request_digest
from exchange.trading.intake import (
    InvalidSignature,
    OrderExpired,
    OrderRefused,
    SignedOrderInput,
    WrongDomain,
)
from exchange.trading.intents import OrderConflict, OrderNotOpen, Placed, PostOnlyWouldTake, WriterUnavailable
from exchange.trading.principals import bearer_token
from exchange.trading.problems import FieldRefused
from exchange.trading.repository import BalancesBusy, LedgerRefused, WithdrawalRace
from exchange.trading.schemas import (
    BalanceOut,
    BalancesOut,
    CancelAllOut,
    JournalHeadOut,
    MarketId,
    MarketOut,
    OrderOut,
    OrderPage,
    OrderSide,
    OrderStatus,
    PlacedOrderResult,
    PlaceOrderIn,
    PlaceOrdersIn,
    PlaceOrdersOut,
    TradePage,
    WithdrawalIn,
    WithdrawalOut,
)
from exchange.trading.service import NotActiveMember, TradingService, UnknownMarket, batch_item
from exchange.trading.views import market_out, order_out, trade_out, withdrawal_out

ORDER_ID_MAX = 2**63 - 1
REPLAYED_HEADER = "Idempotent-Replayed"


# Dependencies are coroutines: FastAPI runs a plain ``def`` dependency in a worker thread.
async def trading(request: Request) -> TradingService:
    service: TradingService = request.app.state.trading
    return service


Trading = Annotated[TradingService, Depends(trading)]


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def known_query_only(request: Request) -> None:
    """Refuse query parameters the route does not take (a misspelt filter must not be ignored)."""
    if not request.query_params:
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = _query_names(route.dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise FieldRefused(
            f"unknown query parameter {unknown[0]!r}; this route takes {sorted(known) or 'none'}",
            location=("query", unknown[0]),
        )


async def limit_ip(request: Request, service: Trading) -> None:
    service.charge_ip(client_host(request))


def _charge_batch(request: Request, service: TradingService, principal: Principal, count: int) -> None:
    """One token per order from both buckets (the request itself took the IP's first one).

    When the account's refuse, the IP's are given back: a refused batch costs its IP one token,
    as any refused request does, not one per order, which other accounts behind it would lack.
    """
    service.charge_ip_and_account(
        client_host(request), principal.address, ip_tokens=count - 1, account_tokens=count
    )


def _token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None:
        raise Unauthorized("sign in first: send 'Authorization: Bearer <token>'")
    return bearer_token(f"{credentials.scheme} {credentials.credentials}")


async def trader(
    service: Trading, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    """The signed-in account (see ``exchange.trading.principals``), after its rate limit."""
    return await _signed_in(service, _token(credentials))


async def _signed_in(service: TradingService, token: str) -> Principal:
    principal = await service.principals.resolve(token)
    service.charge_account(principal.address)
    return principal


async def batch_trader(
    service: Trading, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    """The signed-in account, before its rate limit: a batch takes one token per order."""
    return await service.principals.resolve(_token(credentials))


Trader = Annotated[Principal, Depends(trader)]
BatchTrader = Annotated[Principal, Depends(batch_trader)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=HEADER,
        pattern=r"^[\x21-\x7e]{1,255}$",
        description="Resend the same key to retry safely: the first answer comes back, nothing runs twice.",
    ),
]
OrderIdPath = Annotated[int, Path(ge=1, le=ORDER_ID_MAX, description="The order's id.")]
Cursor = Annotated[
    str | None, Query(pattern=r"^[1-9][0-9]{0,17}$", description="next_cursor of the last page.")
]
Limit = Annotated[int, Query(ge=1, le=500)]

# What the routers' dependencies may answer on every route: the IP's limit, an unknown query parameter.
_EVERY_REQUEST = problem_responses(RateLimited, FieldRefused)
public = APIRouter(
    prefix="/v1/markets",
    tags=["markets"],
    dependencies=[Depends(limit_ip), Depends(known_query_only)],
    responses=_EVERY_REQUEST,
)
private = APIRouter(
    prefix="/v1",
    tags=["trading"],
    dependencies=[Depends(limit_ip), Depends(known_query_only)],
    responses=_EVERY_REQUEST,
)

_AUTH = (Unauthorized, RateLimited)

# --------------------------------------------------------------------------- conversions


def _parse_signature(text: str) -> bytes:
    try:
        return bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise InvalidSignature("the signature is not whole bytes of hex") from None


# --------------------------------------------------------------------------- idempotency


def _retryable_status(status_code: int) -> bool:
    """A status a retry may get past (too many requests, or the service's own trouble)."""
    return status_code == 429 or status_code >= 500


def _retryable(error: DomainError | type[DomainError]) -> bool:
    """A refusal a retry may get past: a retryable status, or a race it lost (``transient``)."""
    return error.transient or _retryable_status(error.status)


async def idempotent(
    request: Request,
    service: TradingService,
    principal: Principal,
    key: str | None,
    work: Callable[[], Awaitable[tuple[int, BaseModel]]],
    *,
    final: Callable[[BaseModel], bool] = lambda _answer: True,
    rerun_safe: bool = True,
) -> Response:
    """Run ``work`` once per ``Idempotency-Key``; a retry gets the first answer back.

    Refusals are kept as answers too, except those worth retrying (429, 5xx and transient
    ones, and a success that ``final`` says is not final): their key is released, so a retry
    runs again. ``rerun_safe`` says whether ``work`` may run again under a claim whose first
    request never answered (``exchange.trading.idempotency``).
    """
    if key is None:
        status_code, model = await work()
        return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")
    url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    digest = request_digest(request.method, url, await request.body())
    stored = await service.idempotency.claim(principal.address, key, digest, rerun_safe=rerun_safe)
    if stored is not None:
        media_type = PROBLEM_MEDIA_TYPE if stored.status_code >= 400 else "application/json"
        return JSONResponse(
            stored.body,
            status_code=stored.status_code,
            media_type=media_type,
            headers={REPLAYED_HEADER: "true"},
        )
    try:
        status_code, model = await work()
    except DomainError as error:
        if _retryable(error):
            await service.idempotency.release(principal.address, key)
        else:
            await service.idempotency.answer(
                principal.address, key, error.status, problem_document(error, request.url.path)
            )
        raise
    except BaseException:
        # An unexpected failure may come after the work committed (a commit whose answer was
        # lost, a cancellation while it was in flight). Work that may run twice releases its
        # key; other work keeps the claim, so a retry is told the first never answered.
        if rerun_safe:
            await service.idempotency.release(principal.address, key)
        raise
    body = model.model_dump(mode="json")
    if final(model):
        await service.idempotency.answer(principal.address, key, status_code, body)
    else:
        await service.idempotency.release(principal.address, key)
    return JSONResponse(body, status_code=status_code)


# Refused before an idempotent route's work runs (signing in, claiming the key): never kept.
_BEFORE_WORK = (*_AUTH, KeyInUse, KeyReused)


def _idempotent_responses(
    success: int,
    *work: type[DomainError],
    before: tuple[type[DomainError], ...] = (),
    extra: dict[int | str, dict[str, Any]] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """The responses of a route answered through :func:`idempotent` whose work raises ``work``.

    Its successes (``success``, any 2xx of ``extra``) and the refusals of its work that are kept
    (not a 429, 5xx or transient one) may come back to a retry with the same key, marked by
    ``Idempotent-Replayed``; the refusals met before the work runs (``_BEFORE_WORK``, ``before``
    and those of ``extra``) never do.
    """
    responses: dict[int | str, dict[str, Any]] = {
        success: {},
        **(extra or {}),
        **problem_responses(*_BEFORE_WORK, *before, *work),
    }
    kept = {code for code in responses if int(code) < 300} | {
        error.status for error in work if not _retryable(error)
    }
    replayed = {
        REPLAYED_HEADER: {
            "description": "true: the answer kept for an earlier request with this Idempotency-Key.",
            "schema": {"type": "string", "enum": ["true"]},
        }
    }
    for code in kept:
        responses[code] = {**responses[code], "headers": {**responses[code].get("headers", {}), **replayed}}
    return responses


# --------------------------------------------------------------------------- public: markets


@public.get("", response_model=list[MarketOut], summary="Markets: tokens, tick, lot, minimum size, fees")
async def list_markets(service: Trading) -> list[MarketOut]:
    return [market_out(market.spec) for market in service.markets.values()]


@public.get(
    "/{market_id}",
    response_model=MarketOut,
    summary="One market (by id, e.g. BPC-TUSD)",
    responses=problem_responses(UnknownMarket, RateLimited),
)
async def get_market(market_id: Annotated[str, Path(max_length=32)], service: Trading) -> MarketOut:
    return market_out(service.market(market_id).spec)


@public.get(
    "/{market_id}/journal",
    response_model=JournalHeadOut,
    summary="The market's last journaled command and the book's state hash after it",
    description=(
        "As probed at most EXCHANGE_TRADING_JOURNAL_HEAD_INTERVAL_S (default 1 s) ago: callers "
        "within that time share one probe, so the whole book is hashed at most once per interval."
    ),
    responses=problem_responses(UnknownMarket, RateLimited, WriterUnavailable),
)
async def get_journal_head(
    market_id: Annotated[str, Path(max_length=32)], service: Trading
) -> JournalHeadOut:
    head = await service.journal_head(market_id)
    return JournalHeadOut(
        market=head.market_id,
        sequence=head.sequence,
        state_hash=head.state_hash,
        open_orders=head.open_orders,
    )


# --------------------------------------------------------------------------- private: orders


_PLACE_ORDER_WORK: tuple[type[DomainError], ...] = (
    OrderRefused,
    WrongDomain,
    InvalidSignature,
    OrderExpired,
    UnknownMarket,
    NotActiveMember,
    Forbidden,
    OrderConflict,
    PostOnlyWouldTake,
    CancelledOnChain,
    LedgerRefused,
    WriterUnavailable,
    ChainUnavailable,
)
_PLACE_ORDER_RESPONSES = _idempotent_responses(
    status.HTTP_201_CREATED,
    *_PLACE_ORDER_WORK,
    extra={200: {"description": "The order was placed before under this client_order_id", "model": OrderOut}},
)


async def place_order(
    body: PlaceOrderIn,
    request: Request,
    principal: Trader,
    service: Trading,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    async def work() -> tuple[int, BaseModel]:
        return _placed(service, await service.place_order(principal.address, _signed_order(service, body)))

    return await idempotent(request, service, principal, idempotency_key, work)


def _placed(service: TradingService, placed: Placed) -> tuple[int, BaseModel]:
    """A placed order's answer: 201 when this request created it, 200 for a resend."""
    code = status.HTTP_201_CREATED if placed.created else status.HTTP_200_OK
    return code, order_out(placed.order, service.market(placed.order.market_id).spec)


def _signed_order(service: TradingService, body: PlaceOrderIn) -> SignedOrderInput:
    signed = body.order
    return SignedOrderInput(
        market_id=service.market(body.market).spec.market_id,
        client_order_id=body.client_order_id,
        time_in_force=body.time_in_force,
        chain_id=body.chain_id,
        vault=body.vault,
        maker=signed.maker,
        base_token=signed.base_token,
        quote_token=signed.quote_token,
        side=signed.side,
        price_quote=int(signed.price),
        amount_base=int(signed.amount),
        max_fee_bps=signed.max_fee_bps,
        nonce=int(signed.nonce),
        expiry_unix=signed.expiry,
        signature=_parse_signature(body.signature),
    )


async def place_orders(
    body: PlaceOrdersIn,
    request: Request,
    principal: BatchTrader,
    service: Trading,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    count = len(body.orders)
    most = min(service.account_limits.burst, service.ip_limits.burst)
    if count > most:
        raise FieldRefused(
            f"this batch has {count} orders; your rate limit allows {most} at once",
            location=("body", "orders"),
        )

    # Whether an order of the batch met a refusal a retry may get past (``_retryable``: a 429, a
    # 5xx, or a transient one such as an exit's hold): then the answer is not kept for the key,
    # as the single-order route keeps none, so that a retry under it places that order.
    retry_worthy: list[DomainError] = []

    def refused(error: DomainError, index: int) -> PlacedOrderResult:
        if _retryable(error):
            retry_worthy.append(error)
        return _refused_result(error, request, index)

    async def work() -> tuple[int, BaseModel]:
        # Only when the batch runs: a replayed answer costs what any request costs.
        _charge_batch(request, service, principal, count)
        results: dict[int, PlacedOrderResult] = {}
        signed: list[tuple[int, SignedOrderInput]] = []
        for index, item in enumerate(body.orders):
            order = batch_item(_signed_order, service, item)
            if isinstance(order, DomainError):
                results[index] = refused(order, index)
            else:
                signed.append((index, order))
        outcomes = await service.place_orders(principal.address, [order for _, order in signed])
        for (index, _), outcome in zip(signed, outcomes, strict=True):
            if isinstance(outcome, DomainError):
                results[index] = refused(outcome, index)
            else:
                placed = outcome.order
                results[index] = PlacedOrderResult(
                    status=status.HTTP_201_CREATED if outcome.created else status.HTTP_200_OK,
                    order=order_out(placed, service.market(placed.market_id).spec),
                    problem=None,
                )
        return status.HTTP_200_OK, PlaceOrdersOut(results=[results[index] for index in range(count)])

    return await idempotent(
        request, service, principal, idempotency_key, work, final=lambda _answer: not retry_worthy
    )


def _refused_result(error: DomainError, request: Request, index: int) -> PlacedOrderResult:
    """A batch item's refusal: its problem, with field locations inside ``body.orders[index]``."""
    problem = problem_document(error, request.url.path)
    if "errors" in problem:
        problem["errors"] = [
            {**entry, "loc": ["body", "orders", index, *entry["loc"][1:]]}
            if entry.get("loc", [None])[0] == "body"
            else entry
            for entry in problem["errors"]
        ]
    return PlacedOrderResult(status=error.status, order=None, problem=Problem.model_validate(problem))


_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def _plain_order_request(request: Request, body: bytes) -> tuple[PlaceOrderIn, str, str | None] | None:
    """The body, bearer token and idempotency key of a request nothing is wrong with; else None.

    Pure: no token taken, nothing looked up. Anything unusual (a query string, no or
    another authorization scheme, a body that is not a valid ``PlaceOrderIn``, a
    malformed or repeated header) gives None, and FastAPI's own handler answers it.
    """
    if request.scope["query_string"] or not body:
        return None
    headers = request.headers
    if (headers.get("content-type") or "").lower() != "application/json":
        return None
    scheme, credentials = get_authorization_scheme_param(headers.get("authorization"))
    if scheme.lower() != "bearer" or not credentials:
        return None
    keys = headers.getlist(HEADER)
    if len(keys) > 1 or (keys and not _IDEMPOTENCY_KEY.fullmatch(keys[0])):
        return None
    try:
        # orjson, not json: a document it refuses (one json takes: NaN, UTF-16), or one it reads
        # otherwise (an integer beyond 64 bits, as a float, which the model's strict integers
        # refuse), goes on to FastAPI's handler like anything else unusual.
        parsed = PlaceOrderIn.model_validate(orjson.loads(body))
    except Exception:  # whatever is wrong, FastAPI's handler says so the usual way
        return None
    return parsed, credentials, keys[0] if keys else None


async def _place_plain_order(request: Request, plain: tuple[PlaceOrderIn, str, str | None]) -> Response:
    """What the route's dependencies (in their order: the IP's token, the signed-in account and
    its token) and endpoint do for a request ``_plain_order_request`` took."""
    body, token, key = plain
    service: TradingService = request.app.state.trading
    await limit_ip(request, service)
    principal = await _signed_in(service, token)
    return await place_order(body, request, principal, service, key)


_ORDERS_PATH = "/v1/orders"


class OrderFront(Front):
    """The service's outermost middleware: well-formed order placements, ahead of routing.

    A ``POST /v1/orders`` that ``_plain_order_request`` takes is answered here, as the route
    would answer it (see ``exchange.api.front``); anything else goes on to the app with its
    body handed on, and the route or FastAPI answers it as before.
    """

    async def take(self, scope: Scope, receive: Receive) -> tuple[Any, Receive]:
        if scope["method"] != "POST" or scope["path"] != _ORDERS_PATH:
            return None, receive
        # A placement's work (its body, signature and queueing) waits one turn of the loop: what
        # the poll that brought the request made ready runs first. Under load that is the market
        # writer's next step (the database's answer came in the same poll), which would otherwise
        # wait behind the work of every request that came with it; the writer is the order path's
        # one serial part, and the requests' work fits in its next wait for the database.
        await asyncio.sleep(0)
        body, messages = await read_request(receive)
        plain = None if body is None else _plain_order_request(Request(scope), body)
        return plain, replaying(messages, receive)

    async def answer(self, scope: Scope, receive: Receive, send: Send, taken: Any) -> None:
        response = await _place_plain_order(Request(scope, receive), taken)
        await response(scope, receive, send)


private.add_api_route(
    "/orders",
    place_order,
    methods=["POST"],
    response_model=OrderOut,
    status_code=status.HTTP_201_CREATED,
    summary="Place a signed limit order",
    description=(
        "Acknowledged (201) once the order is journaled durably; it is matched at once. "
        "Resending the same client_order_id with the same signed order returns that order (200) "
        "and does nothing else, unless the Vault already refuses the order (cancelled there, a nonce "
        "below the maker's floor, or the maker exiting): then 409 cancelled-on-chain. The same id "
        "with another order is a 409."
    ),
    responses=_PLACE_ORDER_RESPONSES,
)


private.add_api_route(
    "/orders/batch",
    place_orders,
    methods=["POST"],
    response_model=PlaceOrdersOut,
    summary="Place up to 100 signed limit orders in one request",
    description=(
        "Each order is checked, journaled and matched as POST /v1/orders would, in the order given, "
        "and gets its own result: its status (201 placed, 200 placed before under its client_order_id, "
        "or the refusal's status) and the order or the problem (field locations point into "
        "body.orders[i]). One refused order does not stop the others, nor does an unexpected error "
        "in one (that order's 500, order-failed). The answer comes once every "
        "accepted order is journaled durably. The batch takes one token per order from the account's "
        "and the IP's rate limits (429 for the whole batch when they lack them; 422 for a batch larger "
        "than their burst); a non-member's batch is refused whole (403). With an Idempotency-Key, an "
        "answer in which an order met a 429 or 5xx is not kept: resending the key runs the batch again."
    ),
    responses=_idempotent_responses(status.HTTP_200_OK, NotActiveMember, ChainUnavailable),
)


@private.get(
    "/orders",
    response_model=OrderPage,
    summary="Your orders, newest first",
    responses=problem_responses(*_AUTH, UnknownMarket),
)
async def list_orders(
    principal: Trader,
    service: Trading,
    session: DbSession,
    market: Annotated[MarketId | None, Query()] = None,
    order_status: Annotated[OrderStatus | None, Query(alias="status")] = None,
    side: Annotated[OrderSide | None, Query()] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> OrderPage:
    market_id = service.market(market).spec.market_id if market is not None else None
    rows = await repository.orders_of(
        session,
        principal.address,
        market_id=market_id,
        status=order_status,
        side=side,
        before_id=int(cursor) if cursor else None,
        limit=limit,
    )
    next_cursor = str(rows[-1].id) if len(rows) == limit else None
    return OrderPage(
        items=[order_out(row, service.market(row.market_id).spec) for row in rows], next_cursor=next_cursor
    )


@private.get(
    "/orders/by-client-id/{client_order_id}",
    response_model=OrderOut,
    summary="One of your orders, by your client order id",
    responses=problem_responses(*_AUTH, NotFound),
)
async def get_order_by_client_id(
    client_order_id: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")],
    principal: Trader,
    service: Trading,
    session: DbSession,
) -> OrderOut:
    row = await repository.order_by_client_id(session, principal.address, client_order_id)
    if row is None:
        raise NotFound(f"you have no order with client order id {client_order_id!r}")
    return order_out(row, service.market(row.market_id).spec)


@private.get(
    "/orders/{order_id}",
    response_model=OrderOut,
    summary="One of your orders",
    responses=problem_responses(*_AUTH, NotFound),
)
async def get_order(
    order_id: OrderIdPath, principal: Trader, service: Trading, session: DbSession
) -> OrderOut:
    row = await repository.order_of(session, principal.address, order_id)
    if row is None:
        raise NotFound(f"you have no order {order_id}")
    return order_out(row, service.market(row.market_id).spec)


@private.delete(
    "/orders/{order_id}",
    response_model=OrderOut,
    summary="Cancel one of your orders",
    description="Returns the order afterwards; an order that already ended is returned unchanged.",
    responses=_idempotent_responses(status.HTTP_200_OK, NotFound, WriterUnavailable),
)
async def cancel_order(
    order_id: OrderIdPath,
    request: Request,
    principal: Trader,
    service: Trading,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    async def work() -> tuple[int, BaseModel]:
        row = await service.cancel_order(principal.address, order_id)
        return status.HTTP_200_OK, order_out(row, service.market(row.market_id).spec)

    return await idempotent(request, service, principal, idempotency_key, work)


@private.post(
    "/orders/{order_id}/replace",
    response_model=OrderOut,
    status_code=status.HTTP_201_CREATED,
    summary="Replace one of your open orders with a new signed order",
    description=(
        "Cancels the open order and places the new one (a body as POST /v1/orders takes, in the "
        "same market, GTC or PO) in one journal transaction, or does neither: 409 order-not-open "
        "once the order "
        "has ended (filled, cancelled or expired), or the new order's own refusal, checked with the "
        "order's reservation released (its funds count for the new order). A partly filled order's "
        "fills stand; the new order is for its whole amount. Resending the same new order under the "
        "same client_order_id returns it (200) and does nothing else."
    ),
    responses=_idempotent_responses(
        status.HTTP_201_CREATED,
        *_PLACE_ORDER_WORK,
        NotFound,
        OrderNotOpen,
        extra={
            200: {
                "description": "The replacement was placed before under this client_order_id",
                "model": OrderOut,
            },
        },
    ),
)
async def replace_order(
    order_id: OrderIdPath,
    body: PlaceOrderIn,
    request: Request,
    principal: Trader,
    service: Trading,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    async def work() -> tuple[int, BaseModel]:
        signed = _signed_order(service, body)
        return _placed(service, await service.replace_order(principal.address, order_id, signed))

    return await idempotent(request, service, principal, idempotency_key, work)


@private.delete(
    "/orders",
    response_model=CancelAllOut,
    summary="Cancel all your open orders in a market",
    responses=_idempotent_responses(status.HTTP_200_OK, UnknownMarket, WriterUnavailable),
)
async def cancel_all_orders(
    market: Annotated[MarketId, Query()],
    request: Request,
    principal: Trader,
    service: Trading,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    async def work() -> tuple[int, BaseModel]:
        market_id = service.market(market).spec.market_id
        ids = await service.cancel_all(principal.address, market_id)
        return status.HTTP_200_OK, CancelAllOut(
            market=market_id, cancelled=[str(order_id) for order_id in ids]
        )

    return await idempotent(request, service, principal, idempotency_key, work)


# --------------------------------------------------------------------------- private: account


@private.get(
    "/account/balances",
    response_model=BalancesOut,
    summary="Your balances in the Vault: total, available, reserved by open orders and withdrawals",
    responses=problem_responses(*_AUTH),
)
async def get_balances(principal: Trader, service: Trading, session: DbSession) -> BalancesOut:
    balances = await repository.balances_of(session, principal.address)
    tokens = {market.spec.base_token for market in service.markets.values()} | {
        market.spec.quote_token for market in service.markets.values()
    }
    return BalancesOut(
        account=principal.address,
        balances=[
            BalanceOut(
                token=token,
                asset=service.token_symbol(token),
                total=str(balances[token].total if token in balances else 0),
                available=str(balances[token].available if token in balances else 0),
                reserved=str(balances[token].reserved if token in balances else 0),
            )
            for token in sorted(tokens | set(balances))
        ],
    )


@private.get(
    "/account/trades",
    response_model=TradePage,
    summary="Your trades, newest first",
    responses=problem_responses(*_AUTH, UnknownMarket),
)
async def list_my_trades(
    principal: Trader,
    service: Trading,
    session: DbSession,
    market: Annotated[MarketId | None, Query()] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> TradePage:
    market_id = service.market(market).spec.market_id if market is not None else None
    fills = await repository.fills_of(
        session,
        principal.address,
        market_id=market_id,
        before_id=int(cursor) if cursor else None,
        limit=limit,
    )
    next_cursor = str(fills[-1].id) if len(fills) == limit else None
    return TradePage(
        items=[trade_out(fill, principal.address, service.market(fill.market_id).spec) for fill in fills],
        next_cursor=next_cursor,
    )


@private.post(
    "/account/withdrawals",
    response_model=WithdrawalOut,
    status_code=status.HTTP_201_CREATED,
    summary="Request a withdrawal: reserves the amount and returns the operator's co-signature",
    responses=_idempotent_responses(
        status.HTTP_201_CREATED,
        ValidationFailed,
        LedgerRefused,  # ProceedsUnsettled too, of the same type
        AccountExiting,
        WithdrawalRace,
        ChainUnavailable,
        BalancesBusy,
        before=(KeyUnfinished,),
    ),
)
async def request_withdrawal(
    body: WithdrawalIn,
    request: Request,
    principal: Trader,
    service: Trading,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    async def work() -> tuple[int, BaseModel]:
        async with service.sessionmaker() as session, session.begin():
            row = await service.request_withdrawal(session, principal.address, body.token, int(body.amount))
        return status.HTTP_201_CREATED, withdrawal_out(row, next(iter(service.markets.values())).spec)

    # A withdrawal takes the next nonce and reserves again: never run twice for one key.
    return await idempotent(request, service, principal, idempotency_key, work, rerun_safe=False)


@private.get(
    "/account/withdrawals",
    response_model=list[WithdrawalOut],
    summary="Your withdrawal authorisations, newest first",
    description="Up to limit of them; for older ones, pass the id of the last one as cursor.",
    responses=problem_responses(*_AUTH),
)
async def list_withdrawals(
    principal: Trader, service: Trading, session: DbSession, cursor: Cursor = None, limit: Limit = 100
) -> list[WithdrawalOut]:
    rows = await repository.withdrawals_of(
        session, principal.address, before_id=int(cursor) if cursor else None, limit=limit
    )
    return [withdrawal_out(row, next(iter(service.markets.values())).spec) for row in rows]
