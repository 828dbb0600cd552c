"""The one place where errors become HTTP responses: RFC 9457 ``application/problem+json``.

Every error response of the service is a problem document::

    {"type": "https://errors.patent-pool.example/not-found", "title": "Not found",
     "status": 404, "detail": "no member 0xab…", "instance": "/v1/members/0xab…",
     "request_id": "5f0c…", ...extension members}

Sources, most specific first:

* ``DomainError`` (``exchange.kit.errors``): status, type and title from the
  class, ``detail`` and extension members from the instance.
* ``RequestValidationError``: 422, type ``…/validation-failed``, with an
  ``errors`` list of ``{loc, msg, type}``; the rejected input is not echoed,
  since it may hold a key or a signature.
* Starlette's ``HTTPException`` (unknown route, wrong method, FastAPI's own):
  type ``about:blank`` and the HTTP reason phrase as title, as RFC 9457 §4.2.1 says.
* Anything else: logged as ``api.unhandled_error`` with its traceback, answered
  with a 500 problem that reveals nothing but the request id.

Answers that report a domain error outside these handlers (an idempotent request's
stored answer, a refused item of a batch, a WebSocket error message or refused
handshake) take its members from :func:`problem_document`, so they say the same.

Routes document the domain errors they raise with ``responses=problem_responses(NotFound, ...)``
(with the ``Retry-After`` header of a ``RateLimited`` or of an error with a fixed
``retry_after_s``); :func:`document_problems` rewrites
FastAPI's generated OpenAPI to match what is really sent.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import requests
from asyncpg.exceptions import PostgresConnectionError
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from web3.exceptions import ProviderConnectionError

from exchange.api.request_context import current_request_id
from exchange.kit.errors import (
    ChainUnavailable,
    Conflict,
    DatabaseUnavailable,
    DomainError,
    RateLimited,
    ValidationFailed,
)
from exchange.kit.logging import get_logger

log = get_logger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
_SCHEMA_REF = "#/components/schemas/{model}"
_MAX_DETAIL_ERRORS = 3


class Problem(BaseModel):
    """An RFC 9457 problem document; extension members may follow the standard ones."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = Field(default="about:blank", description="URI identifying the kind of problem.")
    title: str = Field(description="Short summary of the kind of problem.")
    status: int = Field(description="The HTTP status code.")
    detail: str | None = Field(default=None, description="What went wrong in this occurrence.")
    instance: str | None = Field(default=None, description="The request path that failed.")
    request_id: str | None = Field(default=None, description="Quote it when reporting the problem.")


class InvalidField(BaseModel):
    loc: list[str | int] = Field(description="Where the bad value is: ['query', 'limit'], ['body', 'side'].")
    msg: str
    type: str = Field(description="Machine-readable reason, e.g. int_parsing, missing.")


class InvalidEntry(BaseModel):
    """One bad entry of a list the body carries (a device list): where it is (its ``item``,
    0-based, in a JSON list; its ``line``, 1-based, in a CSV file) and why."""

    line: int | None = None
    item: int | None = None
    input: str | None = Field(default=None, description="The entry as given (at most 200 characters).")
    reason: str


class ValidationProblem(Problem):
    """A 422: a request that did not validate lists each field in ``errors``; a well-formed
    request the service refuses (an order off the tick, a patent record it cannot take) names
    its field there only when it has one, else says why in ``detail`` and its extension members.
    A list the service refuses entries of (``invalid-device-list``) lists each bad entry
    instead, by its place in the list."""

    model_config = ConfigDict(extra="allow", title="ValidationProblem")

    errors: list[InvalidField | InvalidEntry] = Field(
        default_factory=list,
        description="Each field that did not validate, or each entry of a list refused; absent from a "
        "refusal that names neither.",
    )


def problem_document(error: DomainError, instance: str | None) -> dict[str, Any]:
    """The problem document of ``error``, as every answer that reports it carries it.

    ``instance`` is the request path that failed (None where there is none, as in a
    WebSocket message); ``request_id`` is added while a request id is bound.
    """
    return _document(
        status=error.status,
        title=error.title,
        detail=error.detail,
        type_uri=error.type_uri(),
        instance=instance,
        extra=error.extra,
    )


def _document(
    *,
    status: int,
    title: str,
    detail: str | None,
    type_uri: str,
    instance: str | None,
    extra: Mapping[str, object] | None,
) -> dict[str, Any]:
    """The one builder of problem documents: standard members, then the extension members
    that do not shadow them, encoded for JSON."""
    body: dict[str, object] = {"type": type_uri, "title": title, "status": status}
    optional = {"detail": detail, "instance": instance, "request_id": current_request_id()}
    body.update({name: value for name, value in optional.items() if value is not None})
    for name, value in (extra or {}).items():
        body.setdefault(name, value)
    encoded: dict[str, Any] = jsonable_encoder(body)
    return encoded


class ProblemJSONResponse(JSONResponse):
    """A problem document as JSON. A refusal may quote the request, and JSON in a request can
    carry a lone surrogate, which UTF-8 cannot: such a document is sent with every non-ASCII
    character escaped (``\\ud800``), still the same JSON, instead of failing to render."""

    media_type = PROBLEM_MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode(
                "ascii"
            )


def _problem_json(
    document: Mapping[str, object], status: int, headers: Mapping[str, str] | None
) -> JSONResponse:
    return ProblemJSONResponse(document, status_code=status, headers=dict(headers or {}))


def error_response(
    error: DomainError, instance: str, extra_headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The problem+json answer of ``error`` at ``instance``, with the headers it must carry."""
    headers = {**error.response_headers(), **(extra_headers or {})}
    return _problem_json(problem_document(error, instance), error.status, headers)


def problem_response(
    request: Request,
    *,
    status: int,
    title: str,
    detail: str | None,
    type_uri: str = "about:blank",
    extra: Mapping[str, object] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    document = _document(
        status=status, title=title, detail=detail, type_uri=type_uri, instance=request.url.path, extra=extra
    )
    return _problem_json(document, status, headers)


async def _domain_error_response(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, DomainError):
        return await _unexpected_error_response(request, exc)
    fields = {"status": exc.status, "problem": exc.type_slug, "detail": exc.detail, "path": request.url.path}
    if exc.status >= 500:
        log.warning("api.request_failed", **fields)
    else:
        log.info("api.request_rejected", **fields)
    return error_response(exc, request.url.path)


def is_unique_violation(exc: IntegrityError) -> bool:
    """True when `exc` is a unique constraint refusing a row (PostgreSQL SQLSTATE 23505, SQLite's
    UNIQUE or PRIMARY KEY constraint), not a foreign key, check or NOT NULL constraint."""
    original = exc.orig
    if getattr(original, "sqlstate", None) == "23505" or getattr(original, "pgcode", None) == "23505":
        return True
    text = str(original)
    return text.startswith("UNIQUE constraint failed") or "duplicate key value" in text


async def _integrity_error_response(request: Request, exc: Exception) -> Response:
    """A unique violation the route did not expect: another request wrote the same record between
    this one's check and its insert. A retry finds that record and answers as a retry does."""
    if not isinstance(exc, IntegrityError) or not is_unique_violation(exc):
        return await _unexpected_error_response(request, exc)
    # With its traceback: a unique violation that is no race but a defect repeats on every retry.
    log.warning("api.concurrent_write", path=request.url.path, error=str(exc.orig)[:300], exc_info=exc)
    conflict = Conflict("another request wrote the same record at the same moment: retry this request")
    return error_response(conflict, request.url.path)


def _invalid_fields(exc: RequestValidationError) -> list[InvalidField]:
    return [
        InvalidField(
            loc=[part if isinstance(part, int) else str(part) for part in error.get("loc", ())],
            msg=str(error.get("msg", "")),
            type=str(error.get("type", "")),
        )
        for error in exc.errors()
    ]


async def _request_validation_response(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, RequestValidationError):
        return await _unexpected_error_response(request, exc)
    fields = _invalid_fields(exc)
    summary = "; ".join(
        f"{'.'.join(str(part) for part in field.loc)}: {field.msg}" for field in fields[:_MAX_DETAIL_ERRORS]
    )
    more = len(fields) - _MAX_DETAIL_ERRORS
    if more > 0:
        summary += f"; and {more} more"
    return problem_response(
        request,
        status=ValidationFailed.status,
        title=ValidationFailed.title,  # one title per type (RFC 9457), as the service's own refusals
        detail=summary or "the request is invalid",
        type_uri=ValidationFailed.type_uri(),
        extra={"errors": [field.model_dump() for field in fields]},
    )


_UNPARSED_BODY = "There was an error parsing the body"  # FastAPI's 400 for a body json.loads cannot decode


async def _http_exception_response(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, StarletteHTTPException):
        return await _unexpected_error_response(request, exc)
    cause = exc.__cause__
    if (
        exc.status_code == 400
        and exc.detail == _UNPARSED_BODY
        and isinstance(cause, ValueError | RecursionError)
    ):
        # What json.loads raises besides a JSON error (bytes that are no UTF-8, an integer of
        # more digits than Python converts, nesting deeper than it recurses): a malformed body
        # as any other, the 422 the routes document, not a bare 400.
        why = "it nests too deeply" if isinstance(cause, RecursionError) else str(cause)
        return await _request_validation_response(
            request,
            RequestValidationError(
                [
                    {
                        "type": "json_invalid",
                        "loc": ("body",),
                        "msg": f"the body could not be read as JSON: {why}",
                    }
                ]
            ),
        )
    phrase = _reason_phrase(exc.status_code)
    # FastAPI's HTTPException allows any JSON value as detail; a problem's detail is a string.
    raw_detail: object = exc.detail
    detail = raw_detail if isinstance(raw_detail, str) else None
    if detail is None or detail == phrase:
        # Starlette's own 404/405 repeat the title; say what was asked for instead.
        detail = f"{phrase}: {request.method} {request.url.path}"
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request, headers))}
    return problem_response(
        request,
        status=exc.status_code,
        title=phrase,
        detail=detail,
        headers=headers,
    )


def _allowed_methods(request: Request, headers: Mapping[str, str] | None) -> list[str]:
    """Every method some route serves at the request's path. Starlette's 405 names only the first
    route whose path matched (``PUT /v1/orders`` said ``POST``, not ``GET, POST``): the others are
    found in the app's OpenAPI paths, whose templates match as the routes' own paths do."""
    allowed = {method.strip() for method in (headers or {}).get("Allow", "").split(",") if method.strip()}
    app = request.scope.get("app")
    if isinstance(app, FastAPI):
        path = request.scope.get("path", "")
        for pattern, methods in _openapi_paths(app):
            if pattern.fullmatch(path):
                allowed |= methods
    return sorted(allowed)


def _openapi_paths(app: FastAPI) -> list[tuple[re.Pattern[str], frozenset[str]]]:
    """The app's OpenAPI path templates as patterns, with their methods (built once per app)."""
    cached: list[tuple[re.Pattern[str], frozenset[str]]] | None = getattr(app.state, "openapi_paths", None)
    if cached is None:
        cached = [
            (
                compile_path(template)[0],
                frozenset(method.upper() for method in operations if method in _METHODS),
            )
            for template, operations in app.openapi().get("paths", {}).items()
        ]
        app.state.openapi_paths = cached
    return cached


_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def _internal_error(request: Request) -> JSONResponse:
    return problem_response(
        request,
        status=500,
        title="Internal server error",
        detail="The service failed to handle this request. Quote the request id when reporting it.",
    )


def outage(exc: BaseException) -> DomainError | None:
    """The 503 problem for ``exc`` when it says a dependency is down (the chain node, the
    database) rather than that the service failed; else None, and it stays a 500. A route that
    meets an outage where it did not expect one still answers a problem the caller can retry.
    Narrowly: a mistake of the service's own (a statement PostgreSQL or SQLite refuses, a
    revert of its own transaction) must stay a logged 500, not pass for an outage."""
    from exchange.chain import errors as chain_errors

    if isinstance(exc, chain_errors.ChainUnavailable | chain_errors.DeploymentMismatch):
        return ChainUnavailable(f"the chain could not serve the request: {exc}")
    if isinstance(
        exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout | ProviderConnectionError
    ):
        return ChainUnavailable(f"the chain node could not be reached: {type(exc).__name__}")
    if _database_down(exc):
        return DatabaseUnavailable("the database could not be reached, or dropped the connection")
    return None


# PostgreSQL's SQLSTATE classes of a connection lost or refused, of resources exhausted (too
# many connections), and of a server shutting down (57P01-57P03).
_PG_DOWN = ("08", "53", "57P0")
_SQLITE_DOWN = ("database is locked", "unable to open database file", "disk i/o error")


def _database_down(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        sqlstate = getattr(orig, "sqlstate", None) or getattr(
            getattr(orig, "__cause__", None), "sqlstate", None
        )
        if isinstance(sqlstate, str) and sqlstate.startswith(_PG_DOWN):
            return True
        return isinstance(exc, OperationalError) and str(orig).lower().startswith(_SQLITE_DOWN)
    # asyncpg's own, raised while a connection opens (SQLAlchemy wraps what comes after)
    return isinstance(exc, PostgresConnectionError | ConnectionRefusedError | socket.gaierror)


async def _unexpected_error_response(request: Request, exc: Exception) -> Response:
    unavailable = outage(exc)
    (log.error if unavailable is None else log.warning)(
        "api.unhandled_error" if unavailable is None else "api.dependency_unavailable",
        method=request.method,
        path=request.url.path,
        error_type=type(exc).__qualname__,
        exc_info=exc,
    )
    if unavailable is not None:
        return await _domain_error_response(request, unavailable)
    return _internal_error(request)


def _reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class UnhandledErrorMiddleware:
    """Turns an unexpected exception into a logged 500 problem.

    Starlette's ``ServerErrorMiddleware`` would also answer, but then re-raise for
    the server to log the same traceback a second time; here the error is logged
    once, by us, with the request id bound.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if response_started:
                raise  # too late for a problem document; the server closes the connection
            response = await _unexpected_error_response(Request(scope), exc)
            await response(scope, receive, send)


def install_problem_handlers(app: FastAPI) -> None:
    """Register the handlers and the middleware that render every error as a problem."""
    app.add_exception_handler(DomainError, _domain_error_response)
    app.add_exception_handler(RequestValidationError, _request_validation_response)
    app.add_exception_handler(StarletteHTTPException, _http_exception_response)
    app.add_exception_handler(IntegrityError, _integrity_error_response)
    # Last resort for exceptions raised outside UnhandledErrorMiddleware (in outer middleware).
    app.add_exception_handler(Exception, _unexpected_error_response)
    app.add_middleware(UnhandledErrorMiddleware)


def _problem_content(model: str) -> dict[str, Any]:
    return {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": _SCHEMA_REF.format(model=model)}}}


def _retry_after_header() -> dict[str, Any]:
    return {
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "schema": {"type": "integer", "minimum": 0},
        }
    }


def problem_responses(*errors: type[DomainError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the domain errors a route raises, for its decorator."""
    responses: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        entry = responses.setdefault(
            error.status, {"description": "", "content": _problem_content("Problem")}
        )
        kinds = [kind for kind in entry["description"].split("; ") if kind]
        kinds.append(f"{error.title} ({error.type_uri()})")
        entry["description"] = "; ".join(kinds)
        if issubclass(error, RateLimited) or error.retry_after_s is not None:
            entry.setdefault("headers", {}).update(_retry_after_header())
    return responses


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Make a generated OpenAPI schema say what the problem handlers really send.

    FastAPI documents its default ``HTTPValidationError`` as ``application/json``;
    this replaces it with ``ValidationProblem`` as ``application/problem+json``,
    adds the problem schemas, and documents the 500 problem and the database's outage (503)
    on every operation.
    """
    components: dict[str, Any] = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (Problem, ValidationProblem):
        model_schema = model.model_json_schema(ref_template=_SCHEMA_REF)
        components.update(model_schema.pop("$defs", {}))
        components[model.__name__] = model_schema

    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses: dict[str, Any] = operation["responses"]
            if "422" in responses:  # its headers, if documented, stay
                responses["422"] = {
                    **responses["422"],
                    "description": "Invalid request",
                    "content": _problem_content("ValidationProblem"),
                }
            responses.setdefault(
                "500", {"description": "Internal server error", "content": _problem_content("Problem")}
            )
            # Any route that reads or writes the database answers its outage so (``outage``).
            outage = problem_responses(DatabaseUnavailable)[DatabaseUnavailable.status]
            documented = responses.setdefault(str(DatabaseUnavailable.status), outage)
            if documented is not outage and outage["description"] not in documented.get("description", ""):
                documented["description"] = "; ".join(
                    kind for kind in (documented.get("description"), outage["description"]) if kind
                )
                documented.setdefault("headers", {}).update(outage["headers"])

    still_used = json.dumps(schema.get("paths", {}))
    for unused in ("HTTPValidationError", "ValidationError"):
        if _SCHEMA_REF.format(model=unused) not in still_used:
            components.pop(unused, None)
    return schema
