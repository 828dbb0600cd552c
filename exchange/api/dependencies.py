"""Request dependencies shared by every area's routes.

``DbSession`` (the request's one transaction) lives in ``exchange.db.session``;
this module adds what comes from the app itself.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from exchange.settings import Settings


def app_settings(request: Request) -> Settings:
    """The settings the app was created with (``create_app(settings)``)."""
    settings: Settings = request.app.state.settings
    return settings


AppSettings = Annotated[Settings, Depends(app_settings)]


ROW_ID_MAX = 2**31 - 1
"""The largest id of an ``INTEGER`` primary key (PostgreSQL's int4, SQLAlchemy's default)."""

RowId = Annotated[int, Path(ge=1, le=ROW_ID_MAX, description="The row's id (1 to 2^31 - 1).")]
"""A path parameter naming a row of a table with an ``INTEGER`` key: out of that range is a 422,
not a database error."""
