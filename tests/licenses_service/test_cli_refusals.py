"""``exchange licence …`` when the check cannot be made at all, without a chain: a file missing or
malformed, a service or a database that does not answer. Each is one ``error:`` line and exit 2,
never a traceback and never exit 1, which says "invalid" or "not licensed"."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import requests
from sqlalchemy.exc import OperationalError, ProgrammingError

from exchange.cli import main
from exchange.kit import logging as logging_setup
from exchange.licenses.cli import _guarded

RESOLVER_BASE = "https://id.example.org"
NO_SERVICE = "http://127.0.0.1:9"  # nothing listens on port 9


@pytest.fixture(autouse=True)
def _suite_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process's logging stays as the suite configured it (``main`` would configure it)."""
    monkeypatch.setattr(logging_setup, "configure_logging", lambda **_: None)


def refusal(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> str:
    """The one line ``exchange licence …`` refuses with, once it has exited with status 2."""
    assert main(["licence", *(str(part) for part in argv)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    return line


@pytest.mark.parametrize(
    "command",
    [
        ["verify-cert", "{missing}", "--rpc", NO_SERVICE],
        ["scan", "{missing}", "--service", NO_SERVICE, "--rpc", NO_SERVICE],
        ["devices", "export", "{out}", "--ids", "{missing}", "--resolver-base", RESOLVER_BASE],
    ],
    ids=["verify-cert", "scan", "devices export --ids"],
)
def test_a_missing_file_is_one_line_naming_it(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.csv"
    argv = [word.format(missing=missing, out=tmp_path / "labels") for word in command]
    assert refusal(capsys, *argv) == f"error: {missing}: No such file or directory"


def test_a_certificate_of_malformed_json_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certificate = tmp_path / "certificate.json"
    certificate.write_text('{"certificate": ', encoding="utf-8")
    line = refusal(capsys, "verify-cert", certificate, "--rpc", NO_SERVICE)
    assert line.startswith(f"error: {certificate} is not a certificate: its JSON is malformed: ")


def test_a_device_list_of_malformed_json_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = tmp_path / "ids.json"
    ids.write_text("[", encoding="utf-8")
    out = tmp_path / "labels"
    line = refusal(capsys, "devices", "export", out, "--ids", ids, "--resolver-base", RESOLVER_BASE)
    assert line.startswith("error: Expecting value")
    assert not out.exists()


def test_a_service_that_does_not_answer_is_one_line_naming_the_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service = ["--service", NO_SERVICE, "--upload-id", "7", "--token", "t"]
    line = refusal(capsys, "devices", "export", tmp_path, *service, "--resolver-base", RESOLVER_BASE)
    assert line.startswith(f"error: the request to {NO_SERVICE}/v1/devices/batches/7 failed: ")


def test_the_resolver_on_an_unreachable_database_is_one_line_hiding_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://exchange:s3cret@127.0.0.1:9/exchange")
    line = refusal(capsys, "resolver", "--port", "18899")
    shown = "postgresql+asyncpg://exchange:***@127.0.0.1:9/exchange"
    assert line.startswith(f"error: cannot reach the database {shown}: ")
    assert "s3cret" not in line


def test_the_resolver_makes_no_sqlite_database_where_there_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It only reads what ``exchange serve`` wrote: a mistyped path is said, and left unmade."""
    mistyped = tmp_path / "vra" / "exchange.sqlite3"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{mistyped}")
    line = refusal(capsys, "resolver", "--port", "18899")
    assert line == (
        f"error: no SQLite database at {mistyped}: check DATABASE_URL, or start `exchange serve` on it first"
    )
    assert not mistyped.parent.exists()


@pytest.mark.parametrize(
    ("failure", "line"),
    [
        (
            OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly")),
            "error: the database failed: server closed the connection unexpectedly",
        ),
        (
            requests.ConnectionError("HTTPConnectionPool(host='127.0.0.1', port=8545): Max retries"),
            "error: HTTPConnectionPool(host='127.0.0.1', port=8545): Max retries",
        ),
    ],
    ids=["database", "node"],
)
def test_a_connection_lost_midway_is_one_line(
    failure: Exception, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(_args: argparse.Namespace) -> int:
        raise failure

    assert _guarded(handler)(argparse.Namespace()) == 2
    assert capsys.readouterr().err.splitlines() == [line]


@pytest.mark.parametrize(
    "bug",
    [
        KeyError("device_id"),
        TypeError("bad operand"),
        AttributeError("x"),
        ValueError("not enough values to unpack"),
        ProgrammingError("SELECT nope", {}, Exception('relation "nope" does not exist')),
    ],
)
def test_a_programming_error_keeps_its_traceback(bug: Exception) -> None:
    def handler(_args: argparse.Namespace) -> int:
        raise bug

    with pytest.raises(type(bug)):
        _guarded(handler)(argparse.Namespace())


_EXPORT = ["devices", "export", "out", "--ids", "ids.csv", "--resolver-base", RESOLVER_BASE]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["resolver", "--port", "99999"], "argument --port: 99999 is not from 1 to 65535"),
        (["resolver", "--port", "-1"], "argument --port: -1 is not from 1 to 65535"),
        ([*_EXPORT, "--module-px", "0"], "argument --module-px: 0 is not from 1 to 40"),
        ([*_EXPORT, "--module-px", "x"], "argument --module-px: 'x' is not a whole number"),
    ],
)
def test_a_number_out_of_its_range_is_refused_before_anything_runs(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A port the server would not listen on (it took another), a module size the encoder fails on."""
    with pytest.raises(SystemExit) as exited:
        main(["licence", *argv])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: {said}")


def test_an_export_into_a_directory_holding_files_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another batch's labels would be left beside this one's manifest, and printed as its own."""
    ids = tmp_path / "ids.csv"
    ids.write_text("device_id\nserial:acme:1\n", encoding="utf-8")
    out = tmp_path / "labels"
    out.mkdir()
    (out / "000005.qr.png").write_bytes(b"an earlier batch's label")
    line = refusal(capsys, "devices", "export", out, "--ids", ids, "--resolver-base", RESOLVER_BASE)
    assert line == f"error: {out} is not an empty directory: export each batch into a new one"
    assert [path.name for path in out.iterdir()] == ["000005.qr.png"]
    assert (
        main(
            [
                "licence",
                "devices",
                "export",
                str(tmp_path / "new"),
                "--ids",
                str(ids),
                "--resolver-base",
                RESOLVER_BASE,
            ]
        )
        == 0
    )
