"""Logging configuration: one stream, JSON or console, structlog and stdlib records alike."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from exchange.kit.logging import configure_logging, get_logger, resolve_format


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back for the other tests."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_structlog = structlog.get_config()
    yield
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    structlog.configure(**saved_structlog)


def _json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_structlog_events_are_json_lines_with_context() -> None:
    stream = io.StringIO()
    configure_logging(log_format="json", log_level="INFO", stream=stream)
    log = get_logger("exchange.test")
    with structlog.contextvars.bound_contextvars(request_id="r-1"):
        log.info("order.accepted", order_id=7, market="BPC-USD")
    log.debug("order.ignored")  # below the level

    [line] = _json_lines(stream)
    assert line["event"] == "order.accepted"
    assert (line["order_id"], line["market"], line["request_id"]) == (7, "BPC-USD", "r-1")
    assert (line["level"], line["logger"]) == ("info", "exchange.test")
    assert line["timestamp"].endswith("Z")


def test_stdlib_records_share_the_format() -> None:
    stream = io.StringIO()
    configure_logging(log_format="json", stream=stream)
    logging.getLogger("alembic.runtime.migration").warning("Running upgrade %s -> %s", "a", "b")
    [line] = _json_lines(stream)
    assert line == {
        "event": "Running upgrade a -> b",
        "logger": "alembic.runtime.migration",
        "level": "warning",
        "timestamp": line["timestamp"],
    }


def test_uvicorn_access_records_become_http_request_events() -> None:
    stream = io.StringIO()
    configure_logging(log_format="json", stream=stream)
    access = logging.getLogger("uvicorn.access")
    access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/v1/time", "1.1", 200)
    [line] = _json_lines(stream)
    assert line["event"] == "http.request"
    assert (line["client"], line["method"], line["path"], line["http_version"], line["status"]) == (
        "127.0.0.1:5000",
        "GET",
        "/v1/time",
        "1.1",
        200,
    )


def _log_a_failure_holding_a_key(stream: io.StringIO, log_format: Any) -> str:
    configure_logging(log_format=log_format, stream=stream)
    operator_key = "0x" + hashlib.sha256(b"operator").hexdigest()  # no source line shows it
    try:
        raise ValueError(f"bad key length {len(operator_key)}")
    except ValueError:
        get_logger("exchange.test").exception("chain.start_failed")
    return operator_key


def test_tracebacks_are_structured_and_leave_out_local_variables() -> None:
    stream = io.StringIO()
    operator_key = _log_a_failure_holding_a_key(stream, "json")
    [line] = _json_lines(stream)
    [exception] = line["exception"]
    assert exception["exc_type"] == "ValueError"
    assert exception["frames"]
    assert operator_key not in stream.getvalue()


def test_console_tracebacks_leave_out_local_variables() -> None:
    """Locals can hold keys, and rendering them (the app, web3, a book) took seconds per error."""
    stream = io.StringIO()
    operator_key = _log_a_failure_holding_a_key(stream, "console")
    output = stream.getvalue()
    assert "chain.start_failed" in output
    assert "ValueError" in output
    assert "bad key length 66" in output
    assert operator_key[:24] not in output


def test_console_format_and_reconfiguring_without_duplicates() -> None:
    stream = io.StringIO()
    configure_logging(log_format="json", stream=io.StringIO())
    configure_logging(log_format="console", stream=stream)
    get_logger("exchange.test").warning("fund.payout_delayed", payout_id=3)
    output = stream.getvalue()
    assert output.count("fund.payout_delayed") == 1
    assert "payout_id=3" in output
    assert len(logging.getLogger().handlers) == 1


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_format_is_console_on_a_terminal_and_json_elsewhere() -> None:
    assert resolve_format("auto", _Terminal()) == "console"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("json", _Terminal()) == "json"
