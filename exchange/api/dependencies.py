"""Request dependencies shared by every area's routes.

``DbSession`` (the request's one transaction) lives in ``exchange.db.session``;
this module adds what comes from the app itself.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from exchange.settings import Settings


def app_settings(request: Request) -> Settings:
    """The settings the app was created with (``create_app(settings)``)."""
    settings: Settings = request.app.state.settings
    return settings


AppSettings = Annotated[Settings, Depends(app_settings)]
