"""Request dependencies shared by every area's routes.

``DbSession`` (the request's one transaction) lives in ``exchange.db.session``;
this module adds what comes from the app itself: its settings, and the per-IP rate
limit of the public routes that read the chain (``limit_chain_reads``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from exchange.kit.ratelimit import charge_client_ip
from exchange.settings import Settings


def app_settings(request: Request) -> Settings:
    """The settings the app was created with (``create_app(settings)``)."""
    settings: Settings = request.app.state.settings
    return settings


AppSettings = Annotated[Settings, Depends(app_settings)]


async def limit_chain_reads(request: Request) -> None:
    """Take a token from the client IP's chain-read bucket, or refuse with 429 and ``Retry-After``.

    For the public routes that read the chain on every request, which would otherwise send the
    RPC node a call or more for every request any client makes. Give it as the route's
    ``dependencies=[Depends(limit_chain_reads)]``: FastAPI solves those before the endpoint's own
    dependencies (the chain, a database session), so a refused request reads nothing. One bucket
    per IP (the socket peer: forwarded headers are not trusted) serves all these routes; the
    limiter is the app's own (``app.state.chain_read_limits``, built by ``create_app``).
    """
    charge_client_ip(request, "chain_read_limits", "chain-reading requests")


ROW_ID_MAX = 2**31 - 1
"""The largest id of an ``INTEGER`` primary key (PostgreSQL's int4, SQLAlchemy's default)."""

RowId = Annotated[int, Path(ge=1, le=ROW_ID_MAX, description="The row's id (1 to 2^31 - 1).")]
"""A path parameter naming a row of a table with an ``INTEGER`` key: out of that range is a 422,
not a database error."""
