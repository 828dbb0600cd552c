"""Every error leaves the service as an RFC 9457 problem document."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import sqlalchemy
import structlog
from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine
from web3 import Web3

from exchange.api.problems import (
    PROBLEM_MEDIA_TYPE,
    ValidationProblem,
    document_problems,
    is_unique_violation,
    problem_document,
    problem_responses,
)
from exchange.api.request_context import REQUEST_ID_HEADER
from exchange.kit.errors import (
    PROBLEM_TYPE_BASE,
    ChainRejected,
    ChainUnavailable,
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)
from exchange.licenses.uploads import InvalidDeviceList, ListError
from tests.chain.nodes import free_port
from tests.conftest import RunningApp, StartApp

SECRET_INPUT = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    """Error rendering does not depend on the database: SQLite only."""
    return sqlite_database_url


def _router() -> APIRouter:
    router = APIRouter()

    @router.get("/items", responses=problem_responses(NotFound, Conflict, ValidationFailed, RateLimited))
    async def items(
        limit: int = Query(ge=1, le=100), side: str = Query(pattern="^(buy|sell)$")
    ) -> dict[str, int]:
        return {"limit": limit}

    @router.get("/fail/{kind}")
    async def fail(kind: str) -> None:
        raise ERRORS[kind]

    @router.post("/echo")
    async def echo(body: dict[str, int]) -> dict[str, int]:
        return body

    @router.get("/http-error")
    async def http_error() -> None:
        raise HTTPException(status_code=418, detail="short and stout")

    @router.get("/outage/chain")
    async def chain_outage() -> None:  # a node that is not there, asked as a route would
        url = f"http://127.0.0.1:{free_port()}"
        Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 5})).eth.get_block_number()

    @router.get("/outage/database")
    async def database_outage() -> None:  # a PostgreSQL that is not there, asked as a route would
        await _execute(f"postgresql+asyncpg://exchange@127.0.0.1:{free_port()}/exchange", "SELECT 1")

    @router.get("/outage/mistake")
    async def own_mistake() -> None:  # a statement the database refuses: the service's bug
        await _execute("sqlite+aiosqlite:///:memory:", "SELEC 1")

    @router.get("/crash")
    async def crash() -> None:
        raise RuntimeError(f"database password is hunter2, key {SECRET_INPUT}")

    return router


ERRORS: dict[str, DomainError] = {
    "validation-failed": ValidationFailed("price must be a multiple of the tick", extra={"tick_size": 5}),
    "not-found": NotFound("no member 0xab"),
    "conflict": Conflict("client order id already used", extra={"client_order_id": "c-1"}),
    "unauthorized": Unauthorized("sign in first", challenge='Bearer realm="exchange"'),
    "forbidden": Forbidden("only the foundation may admit members"),
    "rate-limited": RateLimited("slow down", retry_after_seconds=7),
    "chain-rejected": ChainRejected(
        "the licence gate refused the lock",
        error_name="InsufficientLock",
        error_args={"needed": 2**200, "locked": 5, "holder": b"\xab\xcd", "revoked": False},
    ),
    "chain-unavailable": ChainUnavailable("the chain node did not answer within 5 s"),
}


@pytest.fixture
async def service(start_app: StartApp) -> RunningApp:
    return await start_app(routers=[_router()])


def _problem(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    assert body["request_id"] == response.headers[REQUEST_ID_HEADER]
    return body


async def test_unknown_route_is_a_404_problem(service: RunningApp) -> None:
    response = await service.client.get("/no/such/route")
    assert response.status_code == 404
    body = _problem(response)
    assert body["type"] == "about:blank"
    assert body["title"] == "Not Found"
    assert body["detail"] == "Not Found: GET /no/such/route"
    assert body["instance"] == "/no/such/route"


async def test_wrong_method_is_a_405_problem_with_allow(service: RunningApp) -> None:
    response = await service.client.delete("/items")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert _problem(response)["title"] == "Method Not Allowed"


async def test_a_json_body_of_bytes_that_are_not_utf8_is_the_documented_422(service: RunningApp) -> None:
    """FastAPI answers them a bare 400 (json.loads raises a decode error, not a JSON error)."""
    response = await service.client.post(
        "/echo", content=b'{"a\xe9": 1}', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    body = _problem(response)
    assert body["type"].endswith("/validation-failed")
    assert [(error["loc"], error["type"]) for error in body["errors"]] == [(["body"], "json_invalid")]
    assert body["errors"][0]["msg"].startswith("the body could not be read as JSON: 'utf-8' codec can't")
    malformed = await service.client.post("/echo", content=b"{", headers={"Content-Type": "application/json"})
    assert malformed.status_code == 422  # as a body that is not JSON at all
    for content, said in (
        (b'{"a": ' + b"1" * 5_000 + b"}", "Exceeds the limit"),  # more digits than int() converts
        (b"[" * 100_000 + b"]" * 100_000, "it nests too deeply"),
    ):
        refused = await service.client.post(
            "/echo", content=content, headers={"Content-Type": "application/json"}
        )
        assert refused.status_code == 422, refused.text
        assert said in _problem(refused)["errors"][0]["msg"]


async def test_http_exceptions_keep_their_status_and_detail(service: RunningApp) -> None:
    response = await service.client.get("/http-error")
    assert response.status_code == 418
    body = _problem(response)
    assert (body["title"], body["detail"]) == ("I'm a Teapot", "short and stout")


async def test_bad_query_parameters_are_a_422_problem_listing_each_field(service: RunningApp) -> None:
    response = await service.client.get("/items", params={"limit": "many", "side": SECRET_INPUT})
    assert response.status_code == 422
    body = _problem(response)
    assert body["type"] == f"{PROBLEM_TYPE_BASE}validation-failed"
    assert body["title"] == ValidationFailed.title  # one title per type, whoever refuses
    assert body["errors"] == [
        {
            "loc": ["query", "limit"],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "type": "int_parsing",
        },
        {
            "loc": ["query", "side"],
            "msg": "String should match pattern '^(buy|sell)$'",
            "type": "string_pattern_mismatch",
        },
    ]
    assert body["detail"].startswith("query.limit: Input should be a valid integer")
    # The rejected input is never echoed: it could be a key or a signature.
    assert SECRET_INPUT not in response.text


async def test_missing_query_parameter(service: RunningApp) -> None:
    response = await service.client.get("/items", params={"side": "buy"})
    assert response.status_code == 422
    assert _problem(response)["errors"] == [
        {"loc": ["query", "limit"], "msg": "Field required", "type": "missing"}
    ]


@pytest.mark.parametrize("kind", list(ERRORS))
async def test_domain_errors_map_to_their_problem(service: RunningApp, kind: str) -> None:
    error = ERRORS[kind]
    response = await service.client.get(f"/fail/{kind}")
    assert response.status_code == error.status
    body = _problem(response)
    assert body["type"] == f"{PROBLEM_TYPE_BASE}{kind}"
    assert body["title"] == error.title
    assert body["detail"] == error.detail
    assert body["instance"] == f"/fail/{kind}"
    for name, value in error.extra.items():
        assert body[name] == value


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("validation-failed", 422),
        ("not-found", 404),
        ("conflict", 409),
        ("unauthorized", 401),
        ("forbidden", 403),
        ("rate-limited", 429),
        ("chain-rejected", 409),
        ("chain-unavailable", 503),
    ],
)
def test_the_error_tree_statuses(kind: str, status: int) -> None:
    assert ERRORS[kind].status == status
    assert isinstance(ERRORS[kind], DomainError)


async def test_rate_limited_says_when_to_retry(service: RunningApp) -> None:
    response = await service.client.get("/fail/rate-limited")
    assert response.headers["retry-after"] == "7"
    assert _problem(response)["retry_after_seconds"] == 7


async def test_unauthorized_names_the_scheme(service: RunningApp) -> None:
    response = await service.client.get("/fail/unauthorized")
    assert response.headers["www-authenticate"] == 'Bearer realm="exchange"'


async def test_chain_rejections_carry_the_decoded_custom_error(service: RunningApp) -> None:
    body = _problem(await service.client.get("/fail/chain-rejected"))
    assert body["error_name"] == "InsufficientLock"
    # uint256 values as decimal strings (exact in every JSON reader), bytes as 0x-hex.
    assert body["error_args"] == {"needed": str(2**200), "locked": "5", "holder": "0xabcd", "revoked": False}


async def test_unexpected_exceptions_are_a_500_problem_that_reveals_nothing(service: RunningApp) -> None:
    with structlog.testing.capture_logs() as logs:
        response = await service.client.get("/crash")
    assert response.status_code == 500
    body = _problem(response)
    assert body["title"] == "Internal server error"
    assert set(body) == {"type", "title", "status", "detail", "instance", "request_id"}
    for leak in ("hunter2", SECRET_INPUT, "RuntimeError", "Traceback", "crash", ".py"):
        assert leak not in body["detail"]
        assert leak not in body["title"]

    [event] = [entry for entry in logs if entry["event"] == "api.unhandled_error"]
    assert event["log_level"] == "error"
    assert event["error_type"] == "RuntimeError"
    assert event["path"] == "/crash"
    assert isinstance(event["exc_info"], RuntimeError)


async def test_a_caller_supplied_request_id_is_kept(service: RunningApp) -> None:
    response = await service.client.get("/fail/not-found", headers={REQUEST_ID_HEADER: "client-42.a:b"})
    assert response.headers[REQUEST_ID_HEADER] == "client-42.a:b"
    assert _problem(response)["request_id"] == "client-42.a:b"


@pytest.mark.parametrize("unsafe", ["has space", "x" * 129, "new\tline", "ü"])
async def test_an_unsafe_request_id_is_replaced(service: RunningApp, unsafe: str) -> None:
    response = await service.client.get(
        "/v1/time", headers={REQUEST_ID_HEADER.encode(): unsafe.encode("utf-8")}
    )
    assert response.headers[REQUEST_ID_HEADER] != unsafe
    assert len(response.headers[REQUEST_ID_HEADER]) == 32


def test_extension_members_may_not_shadow_standard_ones() -> None:
    with pytest.raises(ValueError, match="status"):
        Conflict("x", extra={"status": 200})


def test_a_refusal_without_fields_is_the_422_the_schema_documents() -> None:
    """Every 422 is documented as a ValidationProblem: one the domain raises naming no field
    (no ``errors``) is one too, as a client validating answers against the schema reads it."""
    assert "errors" not in ValidationProblem.model_json_schema().get("required", [])
    refused = ValidationFailed("price must be a multiple of the tick", extra={"tick_size": 5})
    document = problem_document(refused, "/v1/orders")
    assert "errors" not in document
    assert ValidationProblem.model_validate(document).status == 422


def test_a_list_refused_by_its_entries_is_the_422_the_schema_documents() -> None:
    """A device list and a patent import list their bad entries, not fields; the schema says so
    (a client validating answers against it would reject them otherwise)."""
    devices = InvalidDeviceList(
        [ListError("an IMEI has 15 digits, not 1", "imei:1", item=4), ListError("no scheme", "x", line=3)], 2
    )
    patents = ValidationFailed(
        "2 invalid records", extra={"errors": [{"line": 2, "column": 7, "reason": "no title"}]}
    )
    for refused in (devices, patents):
        document = problem_document(refused, "/v1/devices/batches")
        assert ValidationProblem.model_validate(document).errors
    schema = json.dumps(ValidationProblem.model_json_schema())
    assert '"reason"' in schema
    assert '"item"' in schema


def test_retry_after_cannot_be_negative() -> None:
    with pytest.raises(ValueError, match="retry_after_seconds"):
        RateLimited("x", retry_after_seconds=-1)


async def test_openapi_documents_problem_responses(service: RunningApp) -> None:
    schema = (await service.client.get("/openapi.json")).json()
    responses = schema["paths"]["/items"]["get"]["responses"]
    problem_ref = {"$ref": "#/components/schemas/Problem"}

    assert responses["422"]["content"] == {
        PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ValidationProblem"}}
    }
    assert responses["404"]["content"] == {PROBLEM_MEDIA_TYPE: {"schema": problem_ref}}
    assert f"{PROBLEM_TYPE_BASE}conflict" in responses["409"]["description"]
    assert responses["500"]["content"] == {PROBLEM_MEDIA_TYPE: {"schema": problem_ref}}
    assert set(responses["429"]["headers"]) == {"Retry-After"}
    assert "headers" not in responses["404"]
    # Every operation documents the 500 problem and the database's outage (with when to retry);
    # FastAPI's JSON validation schema is gone.
    for path_item in schema["paths"].values():
        for operation in path_item.values():
            assert "500" in operation["responses"]
            outage = operation["responses"]["503"]
            assert f"{PROBLEM_TYPE_BASE}database-unavailable" in outage["description"]
            assert "Retry-After" in outage["headers"]
    components = schema["components"]["schemas"]
    assert {"Problem", "ValidationProblem", "InvalidField"} <= set(components)
    assert "HTTPValidationError" not in components


def test_the_database_outage_joins_a_documented_503() -> None:
    chain = {"description": "Chain unavailable (https://example.test/chain-unavailable)"}
    operation = {"responses": {"503": dict(chain)}}
    schema = document_problems({"paths": {"/orders": {"post": operation}}})
    outage = schema["paths"]["/orders"]["post"]["responses"]["503"]
    kinds = outage["description"].split("; ")
    assert kinds[0] == chain["description"]
    assert kinds[1].startswith("Database unavailable (")
    assert "Retry-After" in outage["headers"]
    again = document_problems(schema)["paths"]["/orders"]["post"]["responses"]["503"]
    assert again["description"] == outage["description"]  # documented once


def test_the_rewrite_of_a_422_keeps_its_documented_headers() -> None:
    headers = {"Idempotent-Replayed": {"schema": {"type": "string"}}}
    operation = {"responses": {"422": {"description": "Refused", "headers": headers}}}
    schema = document_problems({"paths": {"/orders": {"post": operation}}})
    refused = schema["paths"]["/orders"]["post"]["responses"]["422"]
    assert refused["headers"] == headers
    assert refused["content"] == {
        PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ValidationProblem"}}
    }


class _RaceLost(Conflict):
    type_slug = "race-lost"
    title = "Lost a race"
    transient = True
    retry_after_s = 2


def test_an_error_with_a_fixed_retry_after_sends_and_documents_it() -> None:
    assert _RaceLost("again").response_headers() == {"Retry-After": "2"}
    assert Conflict("as it is").response_headers() == {}
    documented = problem_responses(_RaceLost)
    assert set(documented[409]["headers"]) == {"Retry-After"}
    assert "headers" not in problem_responses(Conflict)[409]


def test_only_a_unique_violation_counts_as_a_concurrent_write() -> None:
    engine = sqlalchemy.create_engine("sqlite://")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT UNIQUE, v TEXT NOT NULL)")
        connection.exec_driver_sql("INSERT INTO t (k, v) VALUES ('a', 'x')")
    verdicts = []
    for statement in (
        "INSERT INTO t (k, v) VALUES ('a', 'y')",  # the same key
        "INSERT INTO t (id, k, v) VALUES (1, 'b', 'y')",  # the same primary key
        "INSERT INTO t (k, v) VALUES ('c', NULL)",  # a NOT NULL column left empty
    ):
        with pytest.raises(IntegrityError) as refused, engine.begin() as connection:
            connection.exec_driver_sql(statement)
        verdicts.append(is_unique_violation(refused.value))
    assert verdicts == [True, True, False]


async def _execute(url: str, statement: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def test_a_statement_the_database_refuses_stays_a_500(service: RunningApp) -> None:
    """SQLite says OperationalError for a syntax error too: only its outages are 503s."""
    response = await service.client.get("/outage/mistake")
    assert response.status_code == 500
    assert _problem(response)["title"] == "Internal server error"


@pytest.mark.parametrize(
    ("kind", "slug"), [("chain", "chain-unavailable"), ("database", "database-unavailable")]
)
async def test_a_dependency_that_is_down_is_a_503_to_retry_not_a_500(
    service: RunningApp, kind: str, slug: str
) -> None:
    response = await service.client.get(f"/outage/{kind}")
    assert response.status_code == 503
    body = _problem(response)
    assert body["type"].endswith("/" + slug)
    assert "Traceback" not in response.text
    if kind == "database":
        assert response.headers["retry-after"] == "5"
