"""``exchange serve`` refuses in one line, exit 2, when its database or chain cannot be reached,
before the app starts (which would report either as a whole traceback and exit 3)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from exchange import main as service
from exchange.cli import main
from exchange.kit import logging as logging_setup


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """``exchange serve`` in an empty directory; the apps it would have run, instead of running them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(logging_setup, "configure_logging", lambda **_: None)
    monkeypatch.setattr(service, "configure_logging", lambda **_: None)
    apps: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **_: apps.append(app))
    yield apps
    while service._HELD_LOCKS:
        service._HELD_LOCKS.pop().close()


def _refused(capsys: pytest.CaptureFixture[str], apps: list[Any]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--port", "8765"])
    assert exit_.value.code == 2
    assert apps == []  # no app was started
    (line,) = capsys.readouterr().err.splitlines()
    assert "Traceback" not in line
    return line


def test_an_unreachable_database_is_one_line_and_exit_2(
    started: list[Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _closed_port()
    monkeypatch.setenv("DATABASE_URL", f"postgresql://exchange:secret@127.0.0.1:{port}/exchange")
    line = _refused(capsys, started)
    assert line.startswith(f"cannot reach the database postgresql+asyncpg://exchange:***@127.0.0.1:{port}/")
    assert "secret" not in line


def test_an_unreachable_chain_is_one_line_and_exit_2(
    started: list[Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'exchange.sqlite3'}")
    monkeypatch.setenv("CHAIN_RPC_URL", url)
    monkeypatch.setenv("EXCHANGE_DEV_ACCOUNTS", "true")
    assert _refused(capsys, started) == f"error: no chain answers at {url} (CHAIN_RPC_URL)"


def test_the_embedded_defaults_start(started: list[Any]) -> None:
    main(["serve", "--port", "8765"])
    assert len(started) == 1
