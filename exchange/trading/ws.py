"""The WebSocket stream ``/v1/ws``: book snapshots and diffs, public trades, your orders and fills.

Protocol (JSON text frames). The client sends operations, each with an optional
``id`` echoed in the answer::

    {"op": "subscribe", "channel": "book" | "trades", "market": "BPC-TUSD"}
    {"op": "subscribe", "channel": "orders" | "fills"}          # signed in only; every market
    {"op": "unsubscribe", "channel": ..., "market": ...}
    {"op": "auth", "token": "<bearer token from POST /v1/auth/login>"}
    {"op": "ping"}

(a field an operation does not name is refused, as in a request body)
and gets ``{"type": "subscribed" | "unsubscribed" | "authenticated" | "pong", ...}``,
or ``{"type": "error", "status", "title", "problem", "detail", ...}`` (the problem
document the HTTP API would answer, its type URI as ``problem``, with the
connection's ``request_id`` and the extension members; the connection stays open).
A connection may also authenticate at the handshake with ``Authorization: Bearer <token>``.
The data messages are described in ``exchange.trading.feed``; subscribing to the book
sends its snapshot first, then every update in order; subscribing to trades answers
the ``sequence`` the first trades update will name as its ``prev_sequence``. Subscribing again to a book
already subscribed is how a client resyncs after a gap: it sends a fresh snapshot,
and the updates that follow link to it; the subscription stays one, so no update
arrives twice. Subscribing again to trades (which have no snapshot) changes nothing.
A snapshot is the whole book, encoded once per state of the book and shared by
every subscriber that asks at that state.

Rate limits. The handshake takes a token from the client IP's bucket (the one the
HTTP trading routes take from) and every frame the client sends takes one more;
on a signed-in connection it also takes one from the account's bucket, as a
private HTTP request does. That includes pings: a free operation would be a free
flood, and a keep-alive every few seconds is far below any limit (WebSocket
protocol pings are answered by the server and cost nothing). An operation
refused is not performed: it is answered with the ``rate-limited`` error (status
429, ``retry_after_seconds``), and a connection refused more than
``MAX_REFUSALS_IN_A_ROW`` (5) times in a row is closed with code 4429. A handshake
from an IP over its limit is answered with HTTP 429, ``Retry-After`` and the
problem document, where the server can answer a handshake with an HTTP response
(the ASGI ``websocket.http.response`` extension); elsewhere it is closed before
being accepted, which servers answer with a bare 403.

Slow consumers. Each connection has an outbox of ``ws_outbox_limit`` messages
and ``ws_outbox_max_bytes`` characters waiting behind the next message to go
(which alone may be longer: a deep book's snapshot, with the answer after it).
A connection that lets it fill up gets one last error
("too-slow") and is closed with code 1013: its book would otherwise have a gap. Reconnect and subscribe
again for a fresh snapshot. A session that signs out or expires is closed with
code 4401 within ``ws_session_recheck_s``.

A market that stops. Should a market's writer stop in this process (another
process took the market, or its recovery failed), what this process holds of the
market no longer follows the journal. A connection following the market's book
or trades gets a ``trading-unavailable`` error and is closed with code 1011,
whatever else it follows (reconnect, to the process now writing the market, and
subscribe again); subscribing to them is refused from then on. A connection
that follows the market only through the private channels, which span markets
(whatever it follows of other markets), stays open: it is told once that its
orders and fills of that market no longer come here, and the other markets' go on::

    {"type": "notice", "status": 503, "title", "problem", "detail", "request_id",
     "market": "BPC-TUSD", "channels": ["orders", "fills"]}

A notice has the members of an error (``problem``: the ``trading-unavailable``
type URI; ``channels``: the private channels it followed that no longer carry the
market) but answers no operation and has no ``id``: a client pairing answers with
its operations in order is not misled by it. Subscribing to ``orders`` or
``fills`` later skips a stopped market with the same notice (``channels``: the one
subscribed), sent before the ``subscribed`` answer; unsubscribing and signing in or
out have nothing to do there. A market stays stopped until the process restarts;
its orders and fills are read from the REST API meanwhile (``GET /v1/orders``,
``GET /v1/account/trades``), which reads what the market's writer, wherever it
runs, committed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import MutableMapping
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from exchange.api.problems import error_response, problem_document
from exchange.api.request_context import REQUEST_ID_HEADER, current_request_id
from exchange.auth.service import Principal
from exchange.kit.errors import DomainError, NotFound, RateLimited, Unauthorized, ValidationFailed
from exchange.kit.logging import get_logger
from exchange.kit.ratelimit import client_host
from exchange.trading.feed import MarketFeed, encode
from exchange.trading.intents import WriterUnavailable
from exchange.trading.principals import bearer_token
from exchange.trading.service import TradingService

log = get_logger(__name__)
router = APIRouter()

PUBLIC_CHANNELS = ("book", "trades")
PRIVATE_CHANNELS = ("orders", "fills")
CLOSE_TOO_SLOW = 1013
CLOSE_FEED_ENDED = 1011  # the market's writer stopped in this process: its book here is not current
CLOSE_SESSION_ENDED = 4401
CLOSE_RATE_LIMITED = 4429
# Refused operations answered before the connection is closed: room for a client that sent a few
# operations at once before reading the first refusal, none for one that ignores them.
MAX_REFUSALS_IN_A_ROW = 5
_CLOSE = object()


class WsRefused(ValidationFailed):
    type_slug = "ws-refused"
    title = "Operation refused"


class TooSlow(DomainError):
    status = 429
    type_slug = "too-slow"
    title = "Connection too slow"


def _error(error: DomainError, op_id: Any = None, request_id: str | None = None) -> dict[str, Any]:
    """The problem document of ``error`` as a WebSocket message: ``type`` is ``"error"``, the
    problem's type URI is ``problem``, and a message has no request path (``instance``).
    ``request_id``: the connection's, for an error raised outside its handler (the feed's)."""
    document = problem_document(error, instance=None)
    if request_id is not None:
        document.setdefault("request_id", request_id)
    body: dict[str, Any] = {"type": "error", "status": document.pop("status"), "title": document.pop("title")}
    body["problem"] = document.pop("type")
    body.update({name: value for name, value in document.items() if name not in body})
    if op_id is not None:
        body["id"] = op_id
    return body


def _market_stopped(market_id: str, channels: frozenset[str], request_id: str | None) -> dict[str, Any]:
    """The notice that the private ``channels`` no longer carry ``market_id`` (its writer stopped here)."""
    followed = [channel for channel in PRIVATE_CHANNELS if channel in channels]
    error = WriterUnavailable(
        f"market {market_id} is no longer written by this process: your orders and fills in it are "
        "no longer sent on this connection (the other markets' still are); GET /v1/orders and "
        "GET /v1/account/trades show them",
        extra={"market": market_id, "channels": followed},
    )
    return {**_error(error, request_id=request_id), "type": "notice"}


def _decode(text: str | None) -> dict[str, Any] | WsRefused:
    """The operation a frame holds (``text`` None: a binary frame), or why it holds none."""
    if text is None:
        return WsRefused("send text frames holding JSON")
    try:
        request = orjson.loads(text)
    except orjson.JSONDecodeError:
        return WsRefused("the message is not JSON")
    if not isinstance(request, dict):
        return WsRefused('send a JSON object such as {"op": "subscribe", "channel": "book", ...}')
    return request


_OP_FIELDS: dict[str, frozenset[str]] = {
    "ping": frozenset(),
    "auth": frozenset({"token"}),
    "subscribe": frozenset({"channel", "market"}),
    "unsubscribe": frozenset({"channel", "market"}),
}
"""Each operation's fields besides ``op`` and ``id``: any other is refused, not ignored."""


class Outbox:
    """What waits for one connection's sender: a deque and, while the sender waits, its future.

    The feed puts one message into every book subscriber's outbox each cycle; an
    ``asyncio.Queue`` does the same work with several times the bookkeeping per message
    (its getter and putter queues, a future per get). The limit is the connection's.
    """

    __slots__ = ("_items", "_waiter", "size")

    def __init__(self) -> None:
        self._items: deque[str | object] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.size = 0  # characters of the messages waiting

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: str | object) -> None:
        self._items.append(item)
        if isinstance(item, str):
            self.size += len(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def head_size(self) -> int:
        """Characters of the next message to go (0 when none waits)."""
        head = self._items[0] if self._items else None
        return len(head) if isinstance(head, str) else 0

    def clear(self) -> None:
        self._items.clear()
        self.size = 0

    async def get(self) -> str | object:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._items.popleft()
        if isinstance(item, str):
            self.size -= len(item)
        return item


class Connection:
    """One WebSocket: its outbox, its subscriptions and, once signed in, its account."""

    def __init__(
        self,
        websocket: WebSocket,
        service: TradingService,
        outbox_limit: int,
        outbox_max_size: int,
        host: str,
    ) -> None:
        self.websocket = websocket
        self.service = service
        self.host = host
        self.refusals_in_a_row = 0
        self.outbox = Outbox()
        self.outbox_limit = outbox_limit
        self.outbox_max_size = outbox_max_size
        self.principal: Principal | None = None
        self.token: str | None = None
        self.close_code: int | None = None
        self.closed = asyncio.Event()  # set by close(): the receive loop stops waiting for the peer
        self.feeds: set[MarketFeed] = set()
        # Errors the feed closes the connection with (too slow, the market stopped) are raised in
        # the writer's context, where no request is bound: they carry the connection's id.
        self.request_id = current_request_id()

    # ------------------------------------------------------------------ outbox (Subscriber)

    def offer(self, message: str) -> None:
        if self.close_code is not None:
            return
        # The size budget is for what waits behind the next message to go: that one alone
        # (a deep book's snapshot) may exceed it, and the answer after it still gets through.
        outbox = self.outbox
        waiting = len(outbox)
        if waiting >= self.outbox_limit or (
            waiting and outbox.size - outbox.head_size() + len(message) > self.outbox_max_size
        ):
            self.close(
                CLOSE_TOO_SLOW,
                TooSlow(
                    f"more than {self.outbox_limit} messages or {self.outbox_max_size} characters were "
                    "waiting; reconnect and subscribe again"
                ),
            )
            return
        self.outbox.put(message)

    def end(self, feed: MarketFeed, channels: frozenset[str], error: DomainError) -> None:
        """``feed`` ended (its market's writer stopped) and dropped this connection from ``channels``.
        Following the market's book or trades: ``error``, then 1011 (what it holds of the market is
        not current). Following only private channels: a notice, and the other markets go on."""
        self.feeds.discard(feed)
        if channels.isdisjoint(PUBLIC_CHANNELS):
            self.offer(encode(_market_stopped(feed.spec.market_id, channels, self.request_id)))
        else:
            self.close(CLOSE_FEED_ENDED, error)

    def close(self, code: int, error: DomainError | None = None) -> None:
        """Send ``error`` (if any) after dropping what is queued, then close with ``code``."""
        if self.close_code is not None:
            return
        self.close_code = code
        self.closed.set()
        self.leave_all()
        self.outbox.clear()
        if error is not None:
            self.outbox.put(encode(_error(error, request_id=self.request_id)))
        self.outbox.put(_CLOSE)

    async def send_loop(self) -> None:
        while True:
            message = await self.outbox.get()
            if message is _CLOSE:
                with contextlib.suppress(Exception):
                    await self.websocket.close(self.close_code or 1000)
                return
            try:
                await self.websocket.send_text(message)  # type: ignore[arg-type]
            except Exception:  # the peer went away: the receive loop notices and cleans up
                self.leave_all()
                return

    def leave_all(self) -> None:
        for feed in self.feeds:
            feed.remove(self)
        self.feeds.clear()

    # ------------------------------------------------------------------ operations

    async def handle(self, text: str | None) -> None:
        """Answer one frame of the client's, once its tokens are taken (see the module docstring)."""
        request = _decode(text)
        op_id = request.get("id") if isinstance(request, dict) else None
        if op_id is not None and not isinstance(op_id, str | int):
            op_id = None
        try:
            self._charge()
        except RateLimited as error:
            self.refusals_in_a_row += 1
            if self.refusals_in_a_row > MAX_REFUSALS_IN_A_ROW:
                log.info("ws.closed_rate_limited", client=self.host, refusals=self.refusals_in_a_row)
                self.close(CLOSE_RATE_LIMITED, error)
            else:
                self.offer(encode(_error(error, op_id)))
            return
        self.refusals_in_a_row = 0
        try:
            if isinstance(request, WsRefused):
                raise request
            answer = await self._operate(request)
        except DomainError as error:
            answer = _error(error)
        if op_id is not None:
            answer["id"] = op_id
        self.offer(encode(answer))

    def _charge(self) -> None:
        """Take one token from the IP's bucket and, once signed in, one from the account's; a frame
        the account's bucket refuses gives the IP's token back (other clients behind it pay for
        no work that was not done)."""
        if self.principal is None:
            self.service.charge_ip(self.host)
        else:
            self.service.charge_ip_and_account(
                self.host, self.principal.address, ip_tokens=1, account_tokens=1
            )

    async def _operate(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        fields = _OP_FIELDS.get(op) if isinstance(op, str) else None
        if fields is not None and (unknown := request.keys() - {"op", "id"} - fields):
            # As a request body's field it does not name (422).
            takes = ", ".join(["op", "id", *sorted(fields)])
            raise WsRefused(f"{op} takes no field {sorted(map(str, unknown))[0]!r}; its fields: {takes}")
        if op == "ping":
            return {"type": "pong"}
        if op == "auth":
            token = request.get("token")
            if not isinstance(token, str):
                raise WsRefused('auth takes {"op": "auth", "token": "<bearer token>"}')
            principal = await self.authenticate(token)
            return {"type": "authenticated", "account": principal.address}
        if op in ("subscribe", "unsubscribe"):
            channel = request.get("channel")
            if channel in PUBLIC_CHANNELS:
                return self._public(op, channel, request.get("market"))
            if channel in PRIVATE_CHANNELS:
                return self._private(op, channel)
            raise WsRefused(f"unknown channel {channel!r}; channels: {[*PUBLIC_CHANNELS, *PRIVATE_CHANNELS]}")
        raise WsRefused(f"unknown op {op!r}; ops: subscribe, unsubscribe, auth, ping")

    async def authenticate(self, token: str) -> Principal:
        """Sign the connection in as ``token``'s session. A token refused signs it out: its private
        subscriptions end at once (a session signed out elsewhere must not wait for the watcher);
        a later ``auth`` does not bring them back: the client subscribes again."""
        try:
            token = bearer_token(f"Bearer {token}")  # as sent over HTTP, and as the watcher asks again
            principal = await self.service.principals.resolve(token, fresh=True)
        except Unauthorized:
            if self.principal is not None:
                self._leave_private()
                self.principal, self.token = None, None
            raise
        if self.principal is not None and self.principal.address != principal.address:
            self._leave_private()  # another account now: the first one's orders and fills stop here
        self.principal, self.token = principal, token
        return principal

    def _leave_private(self) -> None:
        for feed in self.feeds:
            for table in (feed.order_subscribers, feed.fill_subscribers):
                for account in list(table):
                    feed.remove_private(table, account, self)

    def _feed(self, market: Any) -> MarketFeed:
        if not isinstance(market, str):
            raise WsRefused('name the market: {..., "market": "BPC-TUSD"}')
        try:
            return self.service.market(market).feed
        except NotFound as error:
            raise WsRefused(error.detail) from None

    def _public(self, op: str, channel: str, market: Any) -> dict[str, Any]:
        feed = self._feed(market)
        subscribers = feed.book_subscribers if channel == "book" else feed.trade_subscribers
        if op == "subscribe":
            feed.check_live()
            if channel == "book":  # every subscribe a snapshot (a client's resync), then every update
                self.offer(feed.encoded_snapshot())  # no await between it and joining the subscribers
            if self.close_code is None:  # the snapshot may have been one message too many
                subscribers.add(self)  # a set: subscribing again never delivers an update twice
                self.feeds.add(feed)
        else:
            subscribers.discard(self)
        answer: dict[str, Any] = {"type": f"{op}d", "channel": channel, "market": feed.spec.market_id}
        if op == "subscribe" and channel == "trades":
            answer["sequence"] = feed.trades_sequence  # the next update's prev_sequence
        return answer

    def _private(self, op: str, channel: str) -> dict[str, Any]:
        if self.principal is None:
            raise Unauthorized(
                f'the {channel} channel needs a signed-in connection: send {{"op": "auth", ...}}'
            )
        account = self.principal.address
        for market in self.service.markets.values():
            feed = market.feed
            table = feed.order_subscribers if channel == "orders" else feed.fill_subscribers
            if op == "subscribe":
                if feed.stopped_by is not None:  # nothing comes from it any more: say so, before the answer
                    notice = _market_stopped(feed.spec.market_id, frozenset((channel,)), self.request_id)
                    self.offer(encode(notice))
                    continue
                feed.add_private(table, account, self)
                self.feeds.add(feed)
            else:
                feed.remove_private(table, account, self)
        return {"type": f"{op}d", "channel": channel, "account": account}

    async def watch_session(self, every_s: float) -> None:
        """Close the connection once its session no longer resolves (signed out, expired)."""
        while self.close_code is None:
            await asyncio.sleep(every_s)
            if self.token is None:
                continue
            try:
                await self.service.principals.resolve(self.token, fresh=True)
            except Unauthorized as error:
                self.close(CLOSE_SESSION_ENDED, error)
            except Exception:  # the check could not be made (database): try again next time
                log.exception("ws.session_check_failed")


async def _receive_unless_closed(
    websocket: WebSocket, connection: Connection
) -> MutableMapping[str, Any] | None:
    """The peer's next message, or None once the connection is closing (a peer that neither reads
    nor writes must not hold the handler)."""
    receive = asyncio.ensure_future(websocket.receive())
    closing = asyncio.ensure_future(connection.closed.wait())
    try:
        await asyncio.wait((receive, closing), return_when=asyncio.FIRST_COMPLETED)
    finally:
        closing.cancel()
    if receive.done():
        message: MutableMapping[str, Any] = receive.result()
        return message
    receive.cancel()
    return None


async def _deny(websocket: WebSocket, error: RateLimited) -> None:
    """Refuse the handshake: HTTP 429 with ``Retry-After`` and the problem document where the
    server supports denial responses, else a close before accepting (a bare 403)."""
    if "websocket.http.response" not in (websocket.scope.get("extensions") or {}):
        await websocket.close(CLOSE_RATE_LIMITED, error.detail[:120])
        return
    request_id = current_request_id()  # no middleware adds it to a handshake's HTTP answer
    headers = {} if request_id is None else {REQUEST_ID_HEADER: request_id}
    await websocket.send_denial_response(error_response(error, websocket.url.path, headers))


@router.websocket("/v1/ws")
async def stream(websocket: WebSocket) -> None:
    service: TradingService = websocket.app.state.trading
    host = client_host(websocket)
    try:
        service.charge_ip(host)
        service.open_ws_connection(host)
    except RateLimited as error:
        await _deny(websocket, error)
        return
    try:
        await _serve(websocket, service, host)
    finally:
        service.close_ws_connection(host)


async def _serve(websocket: WebSocket, service: TradingService, host: str) -> None:
    settings = service.settings
    await websocket.accept()
    connection = Connection(
        websocket, service, settings.trading_ws_outbox_limit, settings.trading_ws_outbox_max_bytes, host
    )
    sender = asyncio.create_task(connection.send_loop(), name="ws-send")
    watcher = asyncio.create_task(
        connection.watch_session(settings.trading_ws_session_recheck_s), name="ws-watch"
    )
    try:
        authorization = websocket.headers.get("authorization")
        if authorization:
            try:
                principal = await connection.authenticate(bearer_token(authorization))
                connection.offer(encode({"type": "authenticated", "account": principal.address}))
            except Unauthorized as error:
                connection.close(CLOSE_SESSION_ENDED, error)
        while connection.close_code is None:
            message = await _receive_unless_closed(websocket, connection)
            if message is None or message["type"] == "websocket.disconnect":
                break
            await connection.handle(message.get("text"))
    except WebSocketDisconnect:
        pass
    finally:
        watcher.cancel()
        connection.close(1000)  # no-op when already closing; stops the sender either way
        connection.leave_all()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sender, timeout=5)
