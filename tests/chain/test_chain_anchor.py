"""A database belongs to one chain: another chain, even at the same addresses, is refused at start;
the embedded defaults begin each start on a new database, keeping the previous one once."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from exchange.api.app import create_app
from exchange.chain.errors import ChainReplaced
from exchange.chain.lifespan import chain_startup
from exchange.chain.runtime import ChainRuntime, start_chain
from exchange.db.models import ChainAnchor
from exchange.main import set_aside_embedded_database
from exchange.settings import Settings


async def _start(settings: Settings, runtime: ChainRuntime) -> None:
    app = create_app(settings, lifespan_hooks=[chain_startup(runtime)])
    async with app.router.lifespan_context(app):
        pass


async def test_a_database_refuses_a_chain_that_replaced_its_own(
    settings: Settings, chain_runtime: ChainRuntime
) -> None:
    await _start(settings, chain_runtime)
    await _start(settings, chain_runtime)  # the same chain again: it starts

    replacement = start_chain(None)  # a new embedded chain: same id, same addresses, other blocks
    assert replacement.deployment.address("Vault") == chain_runtime.deployment.address("Vault")
    assert replacement.deployment.chain_id == chain_runtime.deployment.chain_id
    with pytest.raises(ChainReplaced, match="start on a new database"):
        await _start(settings, replacement)

    app = create_app(settings)
    async with app.router.lifespan_context(app), app.state.db_sessionmaker() as session:
        (anchor,) = (await session.scalars(select(ChainAnchor))).all()
    w3 = chain_runtime.w3
    deploy_block = chain_runtime.deployment.deploy_block
    assert anchor.block_hash == "0x" + bytes(w3.eth.get_block(deploy_block)["hash"]).hex()


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with a database left by an earlier run on the embedded defaults."""
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "CHAIN_RPC_URL"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "var").mkdir()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / "var" / f"exchange.sqlite3{suffix}").write_text(f"last run{suffix}")
    (tmp_path / "var" / "exchange.sqlite3.previous").write_text("the run before")
    return tmp_path


def test_the_embedded_defaults_set_the_last_runs_database_aside(project_dir: Path) -> None:
    var = project_dir / "var"
    moved = set_aside_embedded_database(Settings())
    assert moved == var / "exchange.sqlite3.previous"
    assert sorted(path.name for path in var.iterdir()) == [
        "exchange.sqlite3.previous",
        "exchange.sqlite3.previous-shm",
        "exchange.sqlite3.previous-wal",
    ]
    assert (var / "exchange.sqlite3.previous").read_text() == "last run"
    assert set_aside_embedded_database(Settings()) is None  # nothing left to move


@pytest.mark.parametrize(
    "configured",
    [
        {"DATABASE_URL": "sqlite:///var/exchange.sqlite3"},  # the same file, but chosen
        # a chain that outlives the process
        {"CHAIN_RPC_URL": "http://127.0.0.1:8545", "EXCHANGE_DEV_ACCOUNTS": "true"},
    ],
)
def test_a_configured_database_or_chain_keeps_the_database(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch, configured: dict[str, str]
) -> None:
    for name, value in configured.items():
        monkeypatch.setenv(name, value)
    assert set_aside_embedded_database(Settings()) is None
    assert (project_dir / "var" / "exchange.sqlite3").read_text() == "last run"
