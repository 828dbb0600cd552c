"""The ``exchange`` command's own behaviour, without a chain or a running service: what
``serve`` hands uvicorn, and when a command refuses to start."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from alembic import command as alembic_command
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from exchange import main as service
from exchange.chain import deployment as deployment_module
from exchange.chain import provider
from exchange.chain.deployment import POOL_CONTRACTS, ContractRecord, Deployment
from exchange.chain.provider import make_web3  # the real one: a fixture stands in for the module's
from exchange.cli import build_parser, default_manifest, main
from exchange.db.deployments import recorded_chain_anchor
from exchange.db.engine import sqlite_file
from exchange.db.migrate import alembic_config, head_revision
from exchange.kit import logging as logging_setup
from exchange.pool.cli_service import expire, import_file
from exchange.settings import Settings
from exchange.trading import settlement_service
from exchange.trading.market_claim import MarketOwned
from tests.chain.nodes import free_port

ZERO_ADDRESS = "0x" + "00" * 20


@pytest.fixture(autouse=True)
def _suite_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process's logging stays as the suite configured it: ``main`` would send it to this
    test's captured stderr, which later tests' records would then be written to, closed."""
    monkeypatch.setattr(logging_setup, "configure_logging", lambda **_: None)


@pytest.fixture
def logging_levels(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The levels ``main`` configures logging with, each taken by the standard library's check of
    a level (which raises ``ValueError: Unknown level``) without configuring the process."""
    levels: list[str] = []

    def configure(*, log_level: str, **_: Any) -> None:
        logging.Logger("probe").setLevel(log_level.upper())  # as configure_logging sets the root's
        levels.append(log_level)

    monkeypatch.setattr(logging_setup, "configure_logging", configure)
    return levels


@pytest.mark.parametrize("level", ["verbose", "", "warn"])
@pytest.mark.parametrize(
    "command",
    [["chain", "status"], ["pool", "expire"], ["licence", "threshold"], ["audit"]],
    ids=" ".join,
)
def test_an_invalid_log_level_is_refused_as_serve_refuses_it(
    command: list[str],
    level: str,
    logging_levels: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As the settings refuse it: not only a level the standard library does not know, but also
    one it knows and the settings do not take (``warn``)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EXCHANGE_LOG_LEVEL", level)
    assert main(command) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: invalid configuration: EXCHANGE_LOG_LEVEL is none of DEBUG, INFO, WARNING, ERROR, CRITICAL"
    ]
    assert logging_levels == []  # refused before anything ran


def test_a_commands_log_level_is_the_configured_one_in_any_case(
    tmp_path: Path, logging_levels: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = str(tmp_path / "manifest.json")
    assert main(["chain", "status", "--manifest", missing]) == 2  # no manifest: nothing else runs
    monkeypatch.setenv("EXCHANGE_LOG_LEVEL", "debug")
    assert main(["chain", "status", "--manifest", missing]) == 2
    assert logging_levels == ["WARNING", "DEBUG"]


class _Uvicorn:
    """Stands in for ``uvicorn.run``: records what the service would have run."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, dict[str, Any]]] = []

    def __call__(self, app: Any, **options: Any) -> None:
        self.calls.append((app, options))


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Uvicorn]:
    """``exchange serve`` in an empty working directory, up to the point it would run uvicorn."""
    monkeypatch.chdir(tmp_path)
    run = _Uvicorn()
    monkeypatch.setattr(uvicorn, "run", run)
    # The process's logging stays as the suite configured it.
    monkeypatch.setattr(service, "configure_logging", lambda **_: None)
    yield run
    while service._HELD_LOCKS:  # the run lock a start took is let go with the test
        service._HELD_LOCKS.pop().close()


def test_serve_refuses_in_one_line_while_another_process_serves_the_embedded_database(
    served: _Uvicorn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "var").mkdir()
    with (tmp_path / "var" / "exchange.sqlite3.lock").open("a") as running:
        fcntl.flock(running, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a serving process holds it
        with pytest.raises(SystemExit) as exit_:
            main(["serve", "--port", "8765"])
    assert exit_.value.code == 1
    assert served.calls == []  # no app was started
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: another process is already serving from ")
    assert str(tmp_path / "var" / "exchange.sqlite3") in line
    assert "Traceback" not in line


def test_serve_refuses_in_one_line_a_database_directory_it_cannot_write(
    served: _Uvicorn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "var").write_text("a file where the database's directory belongs\n")
    line = _refused_start(served, capsys)
    assert line.startswith(f"error: cannot take the run lock {tmp_path / 'var' / 'exchange.sqlite3.lock'}: ")
    assert f"({tmp_path / 'var'})" in line  # what was in the way
    assert "DATABASE_URL" in line

    (tmp_path / "var").unlink()
    (tmp_path / "var" / "exchange.sqlite3.lock").mkdir(parents=True)  # not a file either
    line = _refused_start(served, capsys)
    assert line.startswith("error: cannot take the run lock ")
    assert not service._HELD_LOCKS


def test_serve_takes_the_embedded_database_when_no_other_process_serves_it(
    served: _Uvicorn, tmp_path: Path
) -> None:
    main(["serve", "--port", "8765"])
    assert len(served.calls) == 1
    (lock,) = service._HELD_LOCKS
    assert Path(lock.name) == tmp_path / "var" / "exchange.sqlite3.lock"


def _refused_start(served: _Uvicorn, capsys: pytest.CaptureFixture[str]) -> str:
    """The one line ``exchange serve`` refuses with, exit 2, before any app starts."""
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--port", "8765"])
    assert exit_.value.code == 2
    assert served.calls == []  # no app was started
    (line,) = capsys.readouterr().err.splitlines()
    assert "Traceback" not in line
    return line


def test_serve_refuses_an_unreachable_database_in_one_line_before_the_app_starts(
    served: _Uvicorn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    monkeypatch.setenv("DATABASE_URL", f"postgresql://exchange:secret@127.0.0.1:{port}/exchange")
    line = _refused_start(served, capsys)
    assert line.startswith(
        f"error: cannot reach the database postgresql+asyncpg://exchange:***@127.0.0.1:{port}/"
    )
    assert "secret" not in line


def test_serve_refuses_an_unreachable_chain_in_one_line_before_the_app_starts(
    served: _Uvicorn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'exchange.sqlite3'}")
    monkeypatch.setenv("CHAIN_RPC_URL", url)
    monkeypatch.setenv("EXCHANGE_DEV_ACCOUNTS", "true")
    assert _refused_start(served, capsys) == f"error: no chain answers at {url} (CHAIN_RPC_URL)"


async def _start_through_refusals(failure: Exception, sent: list[dict[str, Any]]) -> service.StartRefusals:
    """Run, as uvicorn does, the lifespan of an app whose start raises ``failure`` through
    ``StartRefusals``; ``sent`` gets what it sent uvicorn. An exception it lets through is raised."""

    @contextlib.asynccontextmanager
    async def failing(_app: FastAPI) -> AsyncIterator[None]:
        raise failure
        yield

    app = service.StartRefusals(FastAPI(lifespan=failing))

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    return app


async def test_a_start_refused_for_a_known_reason_is_one_line_and_any_other_keeps_its_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sent: list[dict[str, Any]] = []
    app = await _start_through_refusals(MarketOwned("market BPC-TUSD is written by another process"), sent)
    assert sent == [{"type": "lifespan.startup.failed", "message": ""}]  # uvicorn logs no traceback
    assert isinstance(app.refused, MarketOwned)
    assert capsys.readouterr().err == "error: market BPC-TUSD is written by another process\n"

    sent.clear()
    with pytest.raises(RuntimeError, match="a bug"):
        await _start_through_refusals(RuntimeError("a bug"), sent)
    # Starlette's message, held back until the failure was known, reaches uvicorn as it was.
    (failed,) = sent
    assert failed["type"] == "lifespan.startup.failed"
    assert "Traceback" in failed["message"]
    assert "RuntimeError: a bug" in failed["message"]
    assert capsys.readouterr().err == ""


async def test_a_known_refusal_raised_at_the_stop_is_not_reported_as_a_refused_start() -> None:
    @contextlib.asynccontextmanager
    async def stops_badly(_app: FastAPI) -> AsyncIterator[None]:
        yield
        raise MarketOwned("taken while stopping")

    app = service.StartRefusals(FastAPI(lifespan=stops_badly))
    events = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return next(events)

    async def send(message: Any) -> None:
        sent.append(message["type"])

    with pytest.raises(MarketOwned):
        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.failed"]
    assert app.refused is None


def _served_settings(served: _Uvicorn) -> Settings:
    ((app, _),) = served.calls
    settings: Settings = app.state.settings
    return settings


def test_serve_builds_the_app_for_the_port_and_host_it_is_given(served: _Uvicorn) -> None:
    main(["serve", "--host", "127.0.0.2", "--port", "8765"])
    ((_, options),) = served.calls
    assert (options["host"], options["port"]) == ("127.0.0.2", 8765)
    settings = _served_settings(served)
    assert (settings.host, settings.port) == ("127.0.0.2", 8765)
    # POST /v1/auth/nonce answers this domain, and sign-in messages must name it.
    assert settings.sign_in_domain == "127.0.0.2:8765"


def test_serve_without_an_address_uses_the_configured_one(
    served: _Uvicorn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXCHANGE_PORT", "9100")
    main(["serve"])
    ((_, options),) = served.calls
    assert (options["host"], options["port"]) == ("127.0.0.1", 9100)
    assert _served_settings(served).sign_in_domain == "127.0.0.1:9100"


def test_a_given_port_replaces_the_configured_one(served: _Uvicorn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXCHANGE_PORT", "9100")
    main(["serve", "--port", "8765"])
    ((_, options),) = served.calls
    assert options["port"] == 8765
    assert _served_settings(served).sign_in_domain == "127.0.0.1:8765"


def test_a_configured_sign_in_domain_stays_whatever_the_port(
    served: _Uvicorn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXCHANGE_SIWE_DOMAIN", "exchange.example.org")
    main(["serve", "--port", "8765"])
    assert _served_settings(served).sign_in_domain == "exchange.example.org"


def test_an_invalid_port_is_a_configuration_error(
    served: _Uvicorn, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--port", "70000"])
    assert exit_.value.code == 2
    assert served.calls == []
    assert capsys.readouterr().err.startswith("error: invalid configuration:\n")


MANIFEST_COMMANDS = [
    ["licence", "threshold"],
    ["licence", "status", "0x0000000000000000000000000000000000000001"],
    ["licence", "verify-cert", "certificate.json"],
    ["licence", "scan", "label.png", "--service", "http://127.0.0.1:8000"],
    ["chain", "status"],
    ["deploy", "--rpc", "http://127.0.0.1:8545", "--with-test-quote-token"],
]


@pytest.mark.parametrize(
    "command",
    MANIFEST_COMMANDS,
    ids=lambda command: " ".join(word for word in command[:2] if not word.startswith("-")),
)
def test_the_manifest_defaults_to_the_configured_one(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configured = tmp_path / "configured.json"
    monkeypatch.setenv("EXCHANGE_DEPLOYMENT_MANIFEST", str(configured))
    assert build_parser().parse_args(command).manifest == configured
    given = tmp_path / "given.json"
    assert build_parser().parse_args([*command, "--manifest", str(given)]).manifest == given


@pytest.mark.parametrize(
    "command",
    MANIFEST_COMMANDS,
    ids=lambda command: " ".join(word for word in command[:2] if not word.startswith("-")),
)
def test_without_a_configured_manifest_the_default_is_deployments_manifest_json(command: list[str]) -> None:
    assert build_parser().parse_args(command).manifest == Path("deployments/manifest.json")


def test_the_default_manifest_is_the_one_the_service_settings_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXCHANGE_DEPLOYMENT_MANIFEST", str(tmp_path / "manifest.json"))
    assert default_manifest() == Settings().deployment_manifest


@pytest.mark.parametrize(
    ("command", "refusal"),
    [
        (["licence", "threshold"], "error: no deployment manifest at {manifest} (give --manifest PATH)"),
        (["chain", "status"], "error: no manifest at {manifest}"),
    ],
    ids=["licence threshold", "chain status"],
)
def test_a_chain_command_reads_the_configured_manifest(
    command: list[str],
    refusal: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # As an operator runs them: the service's variables set, the operator key not needed here.
    manifest = tmp_path / "deployments" / "pool.json"
    monkeypatch.setenv("CHAIN_RPC_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("EXCHANGE_DEPLOYMENT_MANIFEST", str(manifest))
    assert main(command) == 2
    assert capsys.readouterr().err.splitlines() == [refusal.format(manifest=manifest)]


def test_chain_status_with_no_chain_answering_checked_nothing_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "manifest.json"
    deployment = Deployment(chain_id=31337, deploy_block=1, contracts={}, deployer="0x" + "11" * 20)
    manifest.write_text(json.dumps(deployment.to_json()), encoding="utf-8")
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["chain", "status", "--rpc", url, "--manifest", str(manifest)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: no chain answers at {url}"]


@pytest.mark.parametrize(
    "command", [["licence", "threshold"], ["chain", "status"]], ids=["licence threshold", "chain status"]
)
@pytest.mark.parametrize("content", ["{}", "not json", '{"version": 1}', "[]"])
def test_a_manifest_this_version_cannot_read_is_one_line_naming_it(
    command: list[str],
    content: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(content, encoding="utf-8")
    monkeypatch.setenv("CHAIN_RPC_URL", "http://127.0.0.1:9")
    assert main([*command, "--manifest", str(manifest)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert f"{manifest} is not a deployment manifest this version reads" in line


SETTLEMENT_COMMANDS = [
    pytest.param(["audit"], "error: audit impossible: ", id="audit"),
    pytest.param(["settle", "--once"], "error: ", id="settle --once"),
    pytest.param(["settle"], "error: ", id="settle"),
]


@pytest.fixture
def settlement_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What ``exchange settle`` and ``exchange audit`` read, with no node at ``CHAIN_RPC_URL``;
    the deployment manifest's path."""
    monkeypatch.chdir(tmp_path)
    manifest = tmp_path / "deployments" / "pool.json"
    contracts = {
        name: ContractRecord(address=f"0x{number:040x}", abi_sha256="00" * 32, deploy_tx="0x")
        for number, name in enumerate(POOL_CONTRACTS, start=1)
    }
    Deployment(chain_id=31337, deploy_block=0, deployer=ZERO_ADDRESS, contracts=contracts).write(manifest)
    monkeypatch.setenv("CHAIN_RPC_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("EXCHANGE_DEV_ACCOUNTS", "true")
    monkeypatch.setenv("EXCHANGE_DEPLOYMENT_MANIFEST", str(manifest))
    return manifest


@pytest.mark.parametrize(("command", "refusal"), SETTLEMENT_COMMANDS)
def test_settle_and_audit_on_an_unreachable_chain_refuse_in_one_line_with_status_2(
    command: list[str], refusal: str, settlement_environment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # For the audit, status 1 would say that the ledger and the Vault differ.
    assert main(command) == 2
    assert capsys.readouterr().err.splitlines() == [f"{refusal}no chain answers at http://127.0.0.1:9"]


@pytest.mark.parametrize(("command", "refusal"), SETTLEMENT_COMMANDS)
def test_settle_and_audit_without_a_chain_refuse_in_one_line_with_status_2(
    command: list[str],
    refusal: str,
    settlement_environment: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("CHAIN_RPC_URL")
    monkeypatch.delenv("EXCHANGE_DEV_ACCOUNTS")
    assert main(command) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{refusal}set CHAIN_RPC_URL: the embedded chain lives only inside `exchange serve`"
    ]


@pytest.mark.parametrize(("command", "refusal"), SETTLEMENT_COMMANDS)
@pytest.mark.parametrize("configured", [True, False])
def test_settle_and_audit_without_the_manifest_refuse_naming_it_with_status_2(
    command: list[str],
    refusal: str,
    configured: bool,
    settlement_environment: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The manifest is the service's: the configured one, else deployments/manifest.json."""
    settlement_environment.unlink()
    if not configured:
        monkeypatch.delenv("EXCHANGE_DEPLOYMENT_MANIFEST")
    expected = settlement_environment if configured else Path("deployments/manifest.json")
    assert main(command) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"{refusal}no deployment manifest at {expected}: set EXCHANGE_DEPLOYMENT_MANIFEST")


def test_settle_reads_the_services_default_manifest(
    settlement_environment: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the variable, deployments/manifest.json (as `exchange serve` keeps it) is read."""
    monkeypatch.delenv("EXCHANGE_DEPLOYMENT_MANIFEST")
    settlement_environment.rename(settlement_environment.with_name("manifest.json"))
    assert main(["settle", "--once"]) == 2
    assert capsys.readouterr().err.splitlines() == ["error: no chain answers at http://127.0.0.1:9"]


@pytest.mark.parametrize(("command", "refusal"), SETTLEMENT_COMMANDS)
def test_settle_and_audit_refuse_a_manifest_without_a_pool_contract_in_one_line_with_status_2(
    command: list[str], refusal: str, settlement_environment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = json.loads(settlement_environment.read_text(encoding="utf-8"))
    del written["contracts"]["Vault"]
    settlement_environment.write_text(json.dumps(written), encoding="utf-8")
    assert main(command) == 2  # was a KeyError's traceback, exit 1 (for the audit: "they differ")
    assert capsys.readouterr().err.splitlines() == [
        f"{refusal}the manifest {settlement_environment} names no Vault"
    ]


@pytest.mark.parametrize(("command", "refusal"), SETTLEMENT_COMMANDS)
@pytest.mark.parametrize("content", ["{}", "not json"])
def test_settle_and_audit_refuse_a_manifest_this_version_cannot_read_in_one_line_with_status_2(
    command: list[str],
    refusal: str,
    content: str,
    settlement_environment: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settlement_environment.write_text(content, encoding="utf-8")
    assert main(command) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(
        f"{refusal}{settlement_environment} is not a deployment manifest this version reads"
    )


@pytest.mark.parametrize(
    "variables",
    [
        {"EXCHANGE_SETTLEMENT_BATCHSIZE": "10"},  # misspelt
        {"EXCHANGE_SETTLEMENT_BATCH_SIZE": "0"},
        {"CHAIN_RPC_URL": "http://127.0.0.1:9"},  # and no operator key
    ],
    ids=["misspelt", "out of range", "no operator key"],
)
@pytest.mark.parametrize("command", [["audit"], ["settle", "--once"], ["settle"]], ids=" ".join)
def test_settle_and_audit_refuse_an_invalid_configuration_as_serve_does(
    command: list[str],
    variables: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert main(command) == 2
    refusal = capsys.readouterr().err
    assert refusal.startswith("error: invalid configuration:\n1 validation error for Settings\n")
    assert "Traceback" not in refusal


UNREACHABLE_DATABASE = "postgresql://exchange:s3cret@127.0.0.1:9/exchange"  # nothing listens on port 9
UNREACHABLE_REFUSAL = (
    "error: cannot reach the database postgresql+asyncpg://exchange:***@127.0.0.1:9/exchange: "
)


def _one_refusal(err: str) -> str:
    (line,) = err.splitlines()
    assert "s3cret" not in line
    return line


@pytest.mark.parametrize("migrate", ["true", "false"], ids=["migrating", "not migrating"])
def test_the_pool_commands_on_an_unreachable_database_refuse_in_one_line_with_status_2(
    migrate: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE_DATABASE)
    monkeypatch.setenv("EXCHANGE_MIGRATE_ON_START", migrate)
    patents = tmp_path / "patents.csv"
    patents.write_text("publication_number\n", encoding="utf-8")
    err = io.StringIO()
    assert expire(None, out=io.StringIO(), err=err) == 2
    assert _one_refusal(err.getvalue()).startswith(UNREACHABLE_REFUSAL)
    err = io.StringIO()
    assert import_file(patents, actor="tester", out=io.StringIO(), err=err) == 2
    assert _one_refusal(err.getvalue()).startswith(UNREACHABLE_REFUSAL)


@pytest.fixture
def settlement_database_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """``exchange settle`` and ``exchange audit`` with the chain left out, for tests of what they
    do with the database: the chain anchor's check makes only its query of the database."""

    async def chain_anchor_check(session: AsyncSession, _runtime: object, *, record: bool) -> None:
        await recorded_chain_anchor(session)

    monkeypatch.setattr(settlement_service, "_command_runtime", lambda _settings: SimpleNamespace())
    monkeypatch.setattr(settlement_service, "check_chain_anchor", chain_anchor_check)


@pytest.mark.usefixtures("settlement_environment", "settlement_database_only")
@pytest.mark.parametrize("command", [["audit"], ["settle", "--once"], ["settle"]], ids=" ".join)
def test_settle_and_audit_on_an_unreachable_database_refuse_in_one_line_with_status_2(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE_DATABASE)
    assert main(command) == 2
    assert _one_refusal(capsys.readouterr().err).startswith(UNREACHABLE_REFUSAL)


@pytest.mark.usefixtures("settlement_database_only")
@pytest.mark.parametrize("command", [["audit"], ["settle", "--once"], ["settle"]], ids=" ".join)
def test_settle_and_audit_on_a_database_with_no_schema_refuse_in_one_line_with_status_2(
    command: list[str],
    empty_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # For the audit, status 1 would say that the ledger and the Vault differ.
    database_file = sqlite_file(empty_database_url)
    if database_file is not None:
        database_file.touch()  # an empty SQLite file
    monkeypatch.setenv("DATABASE_URL", empty_database_url)
    assert main(command) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: the database has no schema yet: start `exchange serve` on it first"
    ]


@pytest.mark.usefixtures("settlement_database_only")
@pytest.mark.parametrize("command", [["audit"], ["settle", "--once"], ["settle"]], ids=" ".join)
def test_settle_and_audit_make_no_sqlite_database_where_there_is_none(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mistyped = tmp_path / "vra" / "exchange.sqlite3"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{mistyped}")
    assert main(command) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: no SQLite database at {mistyped}: check DATABASE_URL, or start `exchange serve` on it first"
    ]
    assert not mistyped.parent.exists()


def test_deploy_to_an_unreachable_chain_refuses_in_one_line_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "deployments" / "manifest.json"
    command = [
        "deploy",
        "--rpc",
        "http://127.0.0.1:9",
        "--with-test-quote-token",
        "--manifest",
        str(manifest),
    ]
    assert main(command) == 2
    assert capsys.readouterr().err.splitlines() == ["error: no chain answers at http://127.0.0.1:9"]
    assert not manifest.parent.exists()  # nothing made for a deployment that never began


DEPLOYED = Deployment(chain_id=31337, deploy_block=7, deployer=ZERO_ADDRESS, contracts={})


@pytest.fixture
def deployments(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """``make_web3`` and ``deploy_pool`` stood in for, as a node that answers and a deployment that
    succeeds (``DEPLOYED``); the ids of the chains deployed to."""
    deployed_to: list[int] = []

    def reach(rpc_url: str, *, operator_key: str | None = None) -> Any:
        return SimpleNamespace(eth=SimpleNamespace(chain_id=31337, default_account=ZERO_ADDRESS))

    def deploy(w3: Any, **_: Any) -> Deployment:
        deployed_to.append(w3.eth.chain_id)
        return DEPLOYED

    monkeypatch.setattr(provider, "make_web3", reach)
    monkeypatch.setattr(deployment_module, "deploy_pool", deploy)
    return deployed_to


def test_deploy_refuses_a_manifest_it_cannot_write_before_deploying_anything(
    tmp_path: Path, deployments: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "not-a-folder").write_text("", encoding="utf-8")
    manifest = tmp_path / "not-a-folder" / "deployments" / "manifest.json"
    command = ["deploy", "--rpc", "http://127.0.0.1:8545", "--with-test-quote-token"]
    assert main([*command, "--manifest", str(manifest)]) == 2
    line = capsys.readouterr().err.splitlines()[-1]
    assert line.startswith(f"error: cannot write the manifest to {manifest}: ")
    assert deployments == []  # nothing deployed, nothing paid for


def test_deploy_prints_the_deployment_before_writing_the_manifest(
    tmp_path: Path,
    deployments: list[int],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A manifest that cannot be written after all (a full disk, say) leaves the addresses on stdout."""

    def write_fails(_deployment: Deployment, path: Path) -> None:
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(Deployment, "write", write_fails)
    manifest = tmp_path / "deployments" / "manifest.json"
    command = ["deploy", "--rpc", "http://127.0.0.1:8545", "--with-test-quote-token"]
    assert main([*command, "--manifest", str(manifest)]) == 1
    assert deployments == [31337]
    out, err = capsys.readouterr()
    assert json.loads(out) == DEPLOYED.to_json()
    assert err.splitlines()[-1].startswith(
        f"error: the pool is deployed (its manifest is on stdout), but writing {manifest} failed: "
    )
    assert list(manifest.parent.iterdir()) == []  # the check before deploying left nothing behind


@pytest.mark.parametrize("key", ["0x1234", "not a key", "0x" + "zz" * 32])
def test_deploy_refuses_an_operator_key_that_is_no_key_without_echoing_it(
    key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EXCHANGE_OPERATOR_PRIVATE_KEY", key)
    assert main(["deploy", "--rpc", "http://127.0.0.1:9", "--with-test-quote-token"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "error: EXCHANGE_OPERATOR_PRIVATE_KEY is not a secp256k1 private key (64 hex digits)"
    ]
    assert key not in err


def test_deploy_takes_an_operator_key_with_surrounding_spaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As the service's settings do: the key is read, and the unreachable chain is what stops it."""
    monkeypatch.setenv("EXCHANGE_OPERATOR_PRIVATE_KEY", "  0x" + "11" * 32 + "\n")
    assert main(["deploy", "--rpc", "http://127.0.0.1:9", "--with-test-quote-token"]) == 2
    assert capsys.readouterr().err.splitlines() == ["error: no chain answers at http://127.0.0.1:9"]


# --------------------------------------------------------------------------- exchange licence resolver


@pytest.fixture
def resolver_served(monkeypatch: pytest.MonkeyPatch) -> _Uvicorn:
    """``uvicorn.run`` stood in for: a resolver that would serve returns at once instead."""
    run = _Uvicorn()
    monkeypatch.setattr(uvicorn, "run", run)
    return run


@pytest.fixture
def resolver_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A pool's manifest for ``--manifest``: the command names it to its workers through
    ``EXCHANGE_DEPLOYMENT_MANIFEST``, set here first so that the test's end removes it again."""
    manifest = tmp_path / "deployments" / "pool.json"
    registry = ContractRecord(address="0x" + "11" * 20, abi_sha256="00" * 32, deploy_tx="0x")
    Deployment(
        chain_id=31337, deploy_block=1, deployer=ZERO_ADDRESS, contracts={"DeviceLicenses": registry}
    ).write(manifest)
    monkeypatch.setenv("EXCHANGE_DEPLOYMENT_MANIFEST", str(manifest))
    return manifest


@pytest.fixture(params=[False, True], ids=["indexed registry", "--manifest"])
def resolver_refusal(
    request: pytest.FixtureRequest,
    resolver_served: _Uvicorn,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Callable[[str], str]:
    """``exchange licence resolver`` on a database, without and with ``--manifest`` in turn: the
    one line it refuses to start with (status 2, nothing served)."""
    manifest = ["--manifest", str(request.getfixturevalue("resolver_manifest"))] if request.param else []

    def refusal(database_url: str) -> str:
        monkeypatch.setenv("DATABASE_URL", database_url)
        assert main(["licence", "resolver", "--port", "18899", *manifest]) == 2
        assert resolver_served.calls == []
        (line,) = capsys.readouterr().err.splitlines()
        return line

    return refusal


def test_resolver_on_a_database_no_service_started_on_refuses_with_exit_2(
    empty_database_url: str, resolver_refusal: Callable[[str], str]
) -> None:
    database_file = sqlite_file(empty_database_url)
    if database_file is not None:
        database_file.touch()  # an empty SQLite file (none at all is refused before it is opened)
    assert resolver_refusal(empty_database_url) == (
        "error: the database has no schema yet: start `exchange serve` on it first"
    )


def test_resolver_on_a_database_of_another_version_refuses_with_exit_2(
    empty_database_url: str, resolver_refusal: Callable[[str], str]
) -> None:
    head = head_revision()
    assert head is not None
    config = alembic_config(empty_database_url)
    previous = ScriptDirectory.from_config(config).get_revision(head).down_revision
    assert isinstance(previous, str)
    alembic_command.upgrade(config, previous)  # as the version before this one left it
    assert resolver_refusal(empty_database_url).startswith(
        f"error: the database's schema is at revision {previous}, this version's is {head}: "
    )


def test_resolver_with_a_manifest_serves_a_database_at_this_versions_schema(
    sqlite_database_url: str,
    resolver_served: _Uvicorn,
    resolver_manifest: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_database_url)
    assert main(["licence", "resolver", "--port", "18899", "--manifest", str(resolver_manifest)]) == 0
    assert len(resolver_served.calls) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"resolving devices of registry {'0x' + '11' * 20} on chain 31337"
    ]


@pytest.mark.parametrize("option", ["--quote-token", "--registrar", "--minter", "--treasurer"])
def test_deploy_refuses_an_address_that_is_none_before_sending_anything(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = [] if option == "--quote-token" else ["--with-test-quote-token"]
    with pytest.raises(SystemExit) as exit_:
        main(["deploy", "--rpc", "http://127.0.0.1:9", option, "0x1234", *extra])
    assert exit_.value.code == 2
    assert "'0x1234' is not an address" in capsys.readouterr().err


def test_deploy_refuses_a_quote_token_that_is_no_token_before_deploying_anything(
    tmp_path: Path,
    deployments: list[int],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The Vault cannot be pointed at another token once deployed: an address without code, or a
    contract that does not answer the ERC-20 reads, is refused first (the service failed at start)."""
    embedded = make_web3(None)  # a real chain, with a contract that is no ERC-20 on it
    stop_only = "0x6001600c60003960016000f300"  # deploys one byte of code: STOP, which answers nothing
    not_a_token = embedded.eth.wait_for_transaction_receipt(
        embedded.eth.send_transaction({"data": stop_only})
    )["contractAddress"]
    monkeypatch.setattr(provider, "make_web3", lambda rpc_url, *, operator_key=None: embedded)
    command = ["deploy", "--rpc", "http://127.0.0.1:8545", "--manifest", str(tmp_path / "m.json")]
    for token, why in (
        ("0x" + "ab" * 20, "has no contract code on this chain"),  # in lower case, as one may write it
        (not_a_token, "answers nothing to"),
    ):
        assert main([*command, "--quote-token", token]) == 2
        assert why in capsys.readouterr().err.splitlines()[-1]
    assert deployments == []
